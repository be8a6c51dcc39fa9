"""The shared lung stage: anatomy cleanup, the lung box, the crop, the counterfactual and the heatmap share."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_demo.intake import lungs


def two_lungs_and_a_bubble(size: int = 100) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[20:70, 15:45] = True  # right lung (image left)
    mask[20:65, 55:85] = True  # left lung
    mask[80:86, 60:66] = True  # a stomach gas bubble below the diaphragm
    return mask


def test_a_large_bubble_below_the_diaphragm_is_not_the_second_lung():
    mask = np.zeros((100, 100), bool)
    mask[15:75, 10:45] = True  # the one lung the segmenter found
    mask[70:90, 55:85] = True  # a gastric bubble bigger than 15% of it, starting below the lung's middle
    kept, _ = lungs.two_largest(mask)
    assert kept[:, 50:].sum() == 0 and kept[15:75, 10:45].all()
    mask[10:60, 58:88] = True  # now the other lung is there too: it starts as high as the first
    kept, _ = lungs.two_largest(mask)
    assert kept[10:60, 58:88].all() and not kept[80:90, 55:85].any()


def test_two_largest_drops_a_stomach_bubble_and_counts_components():
    cleaned, large = lungs.two_largest(two_lungs_and_a_bubble())
    assert not cleaned[80:86, 60:66].any()
    assert cleaned[20:70, 15:45].all() and cleaned[20:65, 55:85].all()
    assert large == 2  # the bubble is under 1% of the image


def test_two_largest_keeps_one_lung_when_the_other_is_missing():
    mask = np.zeros((100, 100), bool)
    mask[20:70, 15:45] = True
    mask[5:7, 90:92] = True  # a speck far smaller than a seventh of the lung
    cleaned, _ = lungs.two_largest(mask)
    assert cleaned.sum() == 50 * 30


def test_lung_box_adds_the_margin_and_stays_inside_the_image():
    mask = np.zeros((100, 200), bool)
    mask[10:60, 20:180] = True
    top, left, bottom, right = lungs.lung_box(mask, margin=0.05)
    assert top == pytest.approx(0.05) and bottom == pytest.approx(0.65)
    assert left == pytest.approx(0.05) and right == pytest.approx(0.95)
    edge = np.zeros((100, 100), bool)
    edge[0:50, 0:100] = True
    assert lungs.lung_box(edge) == (0.0, 0.0, pytest.approx(0.55), 1.0)


def test_no_lung_means_the_full_film():
    assert lungs.lung_box(np.zeros((64, 64), bool)) == lungs.FULL_FILM


def test_crop_to_box_uses_fractions_of_any_resolution():
    pixels = np.arange(400 * 300, dtype=np.float32).reshape(400, 300)
    crop = lungs.crop_to_box(pixels, (0.25, 0.5, 0.75, 1.0))
    assert crop.shape == (200, 150)
    assert crop[0, 0] == pixels[100, 150]


def test_blank_lungs_fills_the_dilated_lungs_with_the_median_and_keeps_the_rest():
    rng = np.random.default_rng(0)
    pixels = rng.random((200, 200)).astype(np.float32)
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:20] = True
    blanked = lungs.blank_lungs(pixels, mask, dilation=0.02)
    median = np.median(pixels)
    assert np.all(blanked[40:160, 40:80] == median)  # the lung itself, at the film's resolution
    assert np.all(blanked[36:40, 60] == median)  # its border, dilated by 4 px
    assert np.array_equal(blanked[:, 120:], pixels[:, 120:])  # everything else is untouched


def test_heatmap_share_in_the_lungs():
    heatmap = np.zeros((10, 10), np.float32)
    heatmap[:, :5] = 1.0
    heatmap[:, 5:] = 3.0
    mask = np.zeros((40, 40), bool)
    mask[:, :20] = True
    assert lungs.heatmap_share_in(heatmap, mask) == pytest.approx(0.25)
    assert lungs.heatmap_share_in(np.zeros((10, 10), np.float32), mask) == 0.0


@pytest.mark.parametrize("fill", ["dark", "bright", "noise"])
def test_blanks_the_penalty_never_saw_fill_only_the_lungs_and_differ_from_the_median(fill):
    rng = np.random.default_rng(1)
    pixels = rng.random((200, 200)).astype(np.float32)
    mask = np.zeros((50, 50), bool)
    mask[10:40, 10:20] = True
    blanked = lungs.blank_lungs(pixels, mask, dilation=0.02, fill=fill)
    inside = blanked[40:160, 40:80]
    assert np.array_equal(blanked[:, 120:], pixels[:, 120:])
    assert np.array_equal(blanked, lungs.blank_lungs(pixels, mask, dilation=0.02, fill=fill))  # the same film, the same blank
    if fill == "dark":
        assert np.all(inside == np.percentile(pixels, 5)) and inside.max() < np.median(pixels) - 0.3
    elif fill == "bright":
        assert np.all(inside == np.percentile(pixels, 95)) and inside.min() > np.median(pixels) + 0.3
    else:
        assert inside.std() > 0.1 and abs(float(inside.mean()) - float(np.median(pixels))) < 0.02
    with pytest.raises(ValueError, match="'median', 'dark', 'bright', 'noise'"):
        lungs.blank_lungs(pixels, mask, fill="checkerboard")
