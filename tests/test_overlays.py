"""The renderers: pictures a user reads, so their geometry is checked, not just their shape."""
import numpy as np
import pytest

from cxr_demo.render.overlays import BOX_COLOUR, display_pixels, outline_box, with_colour_scale


@pytest.mark.parametrize("shape", [(1024, 1024), (2048, 1500), (3000, 2500), (700, 900), (100, 300)])
def test_the_display_copy_keeps_the_aspect_and_lands_between_the_display_sides(shape):
    pixels = np.random.default_rng(0).random(shape, dtype=np.float32)
    shown = display_pixels(pixels)
    assert 512 <= max(shown.shape) <= 768
    assert shown.shape[0] / shown.shape[1] == pytest.approx(shape[0] / shape[1], rel=0.01)


def test_a_big_film_shrinks_without_aliasing_its_finest_pattern_into_stripes():
    # one-pixel stripes are above what 768 px can show: averaged, they must come out flat grey, not as a moiré
    stripes = np.tile(np.array([0.0, 1.0], np.float32), (2048, 1024))
    shown = display_pixels(stripes)
    assert np.abs(shown - 0.5).max() < 0.05


def test_the_box_is_drawn_dashed_on_its_edges_and_nowhere_else():
    picture = outline_box(np.zeros((500, 400, 3), np.uint8), (0.1, 0.25, 0.9, 0.75))
    drawn = (picture == BOX_COLOUR).all(2)
    top, left, bottom, right = round(0.1 * 499), round(0.25 * 399), round(0.9 * 499), round(0.75 * 399)
    assert drawn[top, left:right + 1].mean() == pytest.approx(0.5, abs=0.1)  # dashes and gaps of equal length
    assert drawn[top:bottom + 1, right].mean() == pytest.approx(0.5, abs=0.1)
    assert not drawn[top + 10:bottom - 10, left + 10:right - 10].any()
    assert not drawn[:top - 5].any() and not drawn[bottom + 5:].any()


def test_a_box_on_the_image_border_is_drawn_inside_it():
    picture = outline_box(np.zeros((300, 300, 3), np.uint8), (0.0, 0.0, 1.0, 1.0))
    drawn = (picture == BOX_COLOUR).all(2)
    assert drawn[0].any() and drawn[-1].any() and drawn[:, 0].any() and drawn[:, -1].any()


def test_the_colour_scale_is_shared_but_no_caller_can_paint_on_it():
    first = with_colour_scale(np.zeros((100, 320, 3), np.uint8), title="GradCAM")
    first[-1] = 0  # the caller's own copy
    second = with_colour_scale(np.zeros((100, 320, 3), np.uint8), title="GradCAM")
    assert second.shape[0] > 100 and second[-1].any()
    low, high = second[-1, 2], second[-1, -3]  # jet: blue at the low end, red at the high end
    assert low[2] > low[0] and high[0] > high[2]
