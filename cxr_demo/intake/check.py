"""Is this an upright frontal chest X-ray? The input check that runs before any tab shows an answer.

Two views that fail differently are combined:
- a small CNN (zoo task `check`, trained by `train.check`) that names what the image is: a frontal CXR, one rotated,
  upside down, mirrored or inverted, or not a chest X-ray at all (photos, documents, noise, CT, MR);
- the lung segmenter's anatomy: a chest film has lungs. No lung where the segmenter looks means no chest film.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch

from cxr_demo import zoo
from cxr_demo.intake.lungs import Lungs
from cxr_demo.io import XRay
from cxr_demo.io.preprocess import model_input

UPRIGHT = "frontal chest X-ray"
MESSAGES = {
    "rotated 90° clockwise": "This looks rotated by 90° (clockwise). Upload the film upright.",
    "upside down": "This looks upside down. Upload the film upright.",
    "rotated 90° anticlockwise": "This looks rotated by 90° (anticlockwise). Upload the film upright.",
    "mirrored": "This looks mirrored (left and right swapped). Upload the film as acquired.",
    "inverted": "This looks inverted (bones dark, air bright). Upload it with the usual greyscale.",
    "not a chest X-ray": "This does not look like a chest X-ray.",
}
NO_LUNGS = "No lungs were found in this image: it does not look like a frontal chest X-ray."
UNRELIABLE = "⚠️ The input check flagged this image; you chose to analyse it anyway. The output below is unreliable."


class InputRefused(ValueError):
    """The input check flagged the image and the user did not ask to analyse it anyway; the message says why."""


@dataclass(frozen=True)
class Verdict:
    flagged: bool
    reason: str  # one sentence for the user; empty when the image passed
    label: str  # the check model's top category
    probabilities: dict[str, float] = field(default_factory=dict)
    lung_area: float = 0.0
    latency_ms: float = 0.0

    @property
    def summary(self) -> str:
        if not self.flagged:
            model = f"{self.probabilities[UPRIGHT]:.0%} upright frontal chest X-ray; " if UPRIGHT in self.probabilities else ""
            return f"Passed: looks like an upright frontal chest X-ray ({model}lungs cover {self.lung_area:.0%} of the image)."
        return f"Flagged: {self.reason}"


def check_model_name() -> str | None:
    """The zoo's input-check model, or None when the zoo has none (then only the anatomy check runs)."""
    specs = zoo.registry().specs("check")
    return zoo.default("check").name if specs else None


@torch.inference_mode()
def classify_view(xray: XRay, model: str | None = None) -> dict[str, float]:
    loaded = zoo.load(model or zoo.default("check").name)
    spec = loaded.spec
    x = model_input(xray.pixels, (spec.input_size, spec.input_size), spec.mean, spec.std, loaded.options.get("preprocess", "none"))
    with loaded.lock:
        logits = loaded.module(x)[0].float()
    return dict(zip(loaded.config["label_names"], logits.softmax(0).tolist()))


def judge(probabilities: dict[str, float], lungs: Lungs, threshold: float) -> tuple[bool, str, str]:
    """(flagged, reason, top label) from the check model's probabilities and the lung anatomy."""
    label = max(probabilities, key=probabilities.get) if probabilities else UPRIGHT
    if probabilities and probabilities.get(UPRIGHT, 0.0) < threshold:
        worst = max((k for k in probabilities if k != UPRIGHT), key=probabilities.get)
        return True, MESSAGES.get(worst, MESSAGES["not a chest X-ray"]), worst
    if not lungs.found:
        return True, NO_LUNGS, label
    return False, "", label


def check(xray: XRay, lungs: Lungs, model: str | None = None) -> Verdict:
    start = time.perf_counter()
    name = model or check_model_name()
    probabilities, threshold = {}, 0.5
    if name is not None:
        probabilities = classify_view(xray, name)
        threshold = float(zoo.load(name).options.get("threshold", 0.5))
    flagged, reason, label = judge(probabilities, lungs, threshold)
    return Verdict(flagged, reason, label, probabilities, lungs.area_fraction, (time.perf_counter() - start) * 1000)
