"""The checkpoints committed in weights/: they load, they are not random, and the gate knows a photo from a CXR.

These check behaviour of the real models (cheap, a few images). Quality figures are benchmarks: see train.evaluate.
The feature gate is not asked to reject photographs: measured, it does not (see the README's limitations).
"""
from __future__ import annotations

import numpy as np
import pytest

from cxr_demo import classify, zoo
from cxr_demo.io import read_xray
from tests.conftest import EXAMPLES, REPO


@pytest.fixture(autouse=True)
def shipped_zoo(use_zoo):
    use_zoo(zoo.Zoo.from_toml(REPO / "weights" / "zoo.toml"))


@pytest.mark.parametrize("image, label", [
    ("covid-1000.png", "COVID"), ("normal-1062.png", "Normal"), ("viral-pneumonia-person1007.png", "Viral Pneumonia"),
])
def test_default_classifier_gets_the_held_out_examples_right(image, label):
    result = classify.predict(read_xray(EXAMPLES / image), method=None)
    assert result.top_label == label
    assert not result.unfamiliar


def test_default_classifier_accepts_a_real_cxr_from_another_hospital(example_dicom):
    assert not classify.predict(read_xray(example_dicom), method=None).unfamiliar


def test_heatmap_of_the_default_classifier_is_not_flat(example_png):
    result = classify.predict(read_xray(example_png), method="GradCAM")
    assert np.ptp(result.heatmap) > 0.5
