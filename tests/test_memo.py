"""The result memo: identical requests are answered once, anything that differs is computed, and the cache stays bounded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from cxr_demo.intake import forget
from cxr_demo.io import XRay, read_xray
from cxr_demo.io.xray import SafeMeta
from cxr_demo.tasks import memo


@dataclass(frozen=True)
class Answer:
    value: float
    latency_ms: float = 5.0
    warnings: tuple[str, ...] = ()


def xray(seed: int) -> XRay:
    pixels = np.random.default_rng(seed).random((64, 64), dtype=np.float32)
    return XRay(pixels, SafeMeta("png", 64, 64))


@pytest.fixture
def counted():
    calls = []

    @memo.remembered
    def predict(image: XRay, model: str | None = None, threshold: float = 0.5, reference=None) -> Answer:
        calls.append((model, threshold))
        return Answer(float(image.pixels.mean()) + threshold)

    return predict, calls


def test_a_repeated_request_is_the_stored_answer_and_says_so(counted):
    predict, calls = counted
    first, again = predict(xray(0), "m"), predict(xray(0), "m")
    assert len(calls) == 1
    assert again.value == first.value
    assert not first.warnings and again.warnings == (memo.REUSED.format(ms=5.0),)


def test_another_image_or_setting_is_computed(counted):
    predict, calls = counted
    predict(xray(0), "m")
    predict(xray(1), "m")
    predict(xray(0), "m", threshold=0.3)
    predict(xray(0), "other")
    assert len(calls) == 4


def test_unhashable_arguments_are_always_computed(counted):
    predict, calls = counted
    reference = np.ones((64, 64), bool)
    predict(xray(0), "m", reference=reference)
    predict(xray(0), "m", reference=reference)
    assert len(calls) == 2


def test_the_cache_is_bounded_and_forget_empties_it(counted):
    predict, calls = counted
    for seed in range(memo.CACHE_SIZE + 1):
        predict(xray(seed), "m")
    predict(xray(0), "m")  # the oldest was dropped
    assert len(calls) == memo.CACHE_SIZE + 2
    forget()
    predict(xray(1), "m")
    assert len(calls) == memo.CACHE_SIZE + 3


def test_a_real_classification_is_reused_until_forgotten(example_png):
    from cxr_demo.tasks import classify

    image = read_xray(example_png)
    first = classify.predict(image)
    again = classify.predict(read_xray(example_png))  # a second upload of the same file: a new XRay, the same pixels
    assert again.probabilities == first.probabilities and again.heatmap is first.heatmap
    assert again.warnings[-1].startswith("Same image and settings")
    forget()
    assert not any(w.startswith("Same image") for w in classify.predict(image).warnings)
