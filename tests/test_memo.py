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


def test_a_zero_shot_request_with_a_preset_is_remembered(example_png):
    from cxr_demo.tasks import zeroshot

    image = read_xray(example_png)
    first = zeroshot.predict(image, prompt_set=zeroshot.PRESETS["clinical"])
    again = zeroshot.predict(image, prompt_set=zeroshot.PRESETS["clinical"])
    other = zeroshot.predict(image, prompt_set=zeroshot.PRESETS["naive"])
    assert again.probabilities == first.probabilities and again.warnings[-1].startswith("Same image and settings")
    assert not any(w.startswith("Same image") for w in other.warnings)


def test_callers_of_a_key_being_computed_wait_for_that_answer_instead_of_computing_it_again():
    import threading
    import time

    from cxr_demo.io.recent import Recent

    cache, calls, answers = Recent(4), [], []

    def slow():
        calls.append(1)
        time.sleep(0.3)
        return "answer"

    threads = [threading.Thread(target=lambda: answers.append(cache.remember("k", slow))) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert sorted(answers, key=lambda a: a[1]) == [("answer", False)] * 4 + [("answer", True)]


def test_when_the_first_caller_fails_a_waiting_caller_computes_for_itself():
    import threading
    import time

    from cxr_demo.io.recent import Recent

    cache, outcomes = Recent(4), []

    def failing():
        time.sleep(0.2)
        raise ValueError("bad file")

    first = threading.Thread(target=lambda: outcomes.append(_outcome(cache, failing)))
    first.start()
    time.sleep(0.05)
    outcomes.append(_outcome(cache, lambda: "second"))
    first.join()
    assert sorted(outcomes) == ["ValueError", "second"]


def _outcome(cache, compute):
    try:
        return cache.remember("k", compute)[0]
    except ValueError:
        return "ValueError"
