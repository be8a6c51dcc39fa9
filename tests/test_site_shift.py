"""The simulated other hospitals of `train.evaluate --shift` (train/site_shift.py)."""
from __future__ import annotations

import numpy as np
import pytest

from train.site_shift import SHIFTS, wide_field


def film(side: int = 1024) -> np.ndarray:
    """Broad shapes plus fine detail (ribs and vessel edges, one or two pixels wide), which blur and low resolution take away."""
    y, x = np.mgrid[0:side, 0:side] / side
    fine = 0.1 * np.sign(np.sin(np.pi * side / 3 * x))
    return (0.5 + 0.25 * np.sin(12 * x) * np.cos(9 * y) + 0.05 * (y - 0.5) + fine).astype(np.float32)


@pytest.mark.parametrize("name", SHIFTS)
def test_each_simulated_hospital_changes_the_film_and_does_it_the_same_way_every_run(name):
    original = film()
    once, again = SHIFTS[name](original), SHIFTS[name](original.copy())
    assert once.dtype == np.float32 and once.ndim == 2
    assert 0.0 <= once.min() and once.max() <= 1.0
    np.testing.assert_array_equal(once, again)
    assert once.shape != original.shape or np.abs(once - original).mean() > 0.004


def test_a_wide_field_keeps_the_whole_film_inside_a_black_border():
    original = film(200)
    framed = wide_field(original, margin=0.15)
    assert framed.shape == (260, 260)
    np.testing.assert_array_equal(framed[30:230, 30:230], original)
    assert framed[:30].max() == 0.0 and framed[:, -30:].max() == 0.0
