"""The input check and the shared intake stage: verdicts, messages, refusal, and one computation per image."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_demo.intake import check
from cxr_demo.intake import stage as intake
from cxr_demo.intake.lungs import Lungs
from cxr_demo.io import SafeMeta, XRay
from cxr_demo.io.recent import Recent


def fake_lungs(area: float) -> Lungs:
    mask = np.zeros((100, 100), bool)
    mask[: int(area * 100)] = True
    return Lungs(mask, (0.0, 0.0, 1.0, 1.0), float(mask.mean()), 2, "fake", 0.0)


def probabilities(upright: float, other: str = "not a chest X-ray") -> dict[str, float]:
    rest = {label: 0.0 for label in check.MESSAGES}
    rest[other] = 1.0 - upright
    return {check.UPRIGHT: upright, **rest}


@pytest.mark.parametrize("other, words", [("upside down", "upside down"), ("mirrored", "mirrored"), ("inverted", "inverted"),
                                          ("rotated 90° clockwise", "rotated"), ("not a chest X-ray", "does not look like a chest X-ray")])
def test_a_flag_names_the_problem(other, words):
    flagged, reason, label = check.judge(probabilities(0.1, other), fake_lungs(0.3), threshold=0.5)
    assert flagged and words in reason and label == other


def test_an_upright_film_with_lungs_passes():
    assert check.judge(probabilities(0.9), fake_lungs(0.3), threshold=0.5) == (False, "", check.UPRIGHT)


def test_no_lungs_is_flagged_even_when_the_model_is_sure():
    flagged, reason, _ = check.judge(probabilities(0.99), fake_lungs(0.0), threshold=0.5)
    assert flagged and reason == check.NO_LUNGS


def test_without_a_check_model_only_the_anatomy_decides():
    assert check.judge({}, fake_lungs(0.3), 0.5)[0] is False
    assert check.judge({}, fake_lungs(0.01), 0.5)[0] is True


def test_admit_refuses_a_flagged_image_unless_asked_and_then_says_unreliable():
    seen = intake.Intake(check.Verdict(True, "This looks upside down. Upload the film upright.", "upside down"), fake_lungs(0.3))
    with pytest.raises(check.InputRefused, match="upside down.*Analyse anyway"):
        intake.admit(seen)
    (note,) = intake.admit(seen, analyse_anyway=True)
    assert "unreliable" in note and "upside down" in note
    passed = intake.Intake(check.Verdict(False, "", check.UPRIGHT), fake_lungs(0.3))
    assert intake.admit(passed) == ()


def test_intake_runs_once_per_image_and_the_cache_is_bounded(monkeypatch):
    calls = []
    monkeypatch.setattr(intake, "find_lungs", lambda xray, model=None: calls.append(1) or fake_lungs(0.3))
    monkeypatch.setattr(intake, "check", lambda xray, lungs, model=None: check.Verdict(False, "", check.UPRIGHT))
    monkeypatch.setattr(intake, "_RECENT", Recent(3))
    meta = SafeMeta("png", 64, 64)
    image = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    first = intake.intake(XRay(image, meta))
    again = intake.intake(XRay(image.copy(), meta))  # a second tab reads the same upload into a new array
    assert again is first and len(calls) == 1
    for i in range(5):
        intake.intake(XRay(image + i + 1, meta))
    assert len(intake._RECENT.items) == 3
    intake.intake(XRay(image, meta))
    assert len(calls) == 7  # the first image was evicted, so it was computed again
