"""Several zoo models of one task on the same image: their outputs, their latency, and how much they agree."""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np

from cxr_demo import zoo
from cxr_demo.intake.lungs import FULL_FILM, Lungs
from cxr_demo.io import XRay

# which kinds of model can stand side by side for each task (a multi-task U-Net both classifies and segments)
KINDS = {name: task.compare_kinds for name, task in zoo.TASKS.items() if task.compared}
MAX_MODELS = 4


@dataclass(frozen=True)
class ModelOutput:
    model: str
    kind: str
    latency_ms: float
    probabilities: dict[str, float] | None = None
    heatmap: np.ndarray | None = field(default=None, repr=False)
    mask: np.ndarray | None = field(default=None, repr=False)
    boxes: tuple = ()
    error: str | None = None  # e.g. a Hub model that cannot be reached: the others still run
    heatmap_in_lungs: float | None = None  # share of the heatmap's mass inside the lung mask
    reads: str = ""  # "lung crop" or "full film" for classifiers

    @property
    def top_label(self) -> str | None:
        return max(self.probabilities, key=self.probabilities.get) if self.probabilities else None


@dataclass(frozen=True)
class Comparison:
    task: str
    outputs: tuple[ModelOutput, ...]
    pairwise: dict[tuple[str, str], float]  # top-class agreement (0/1), mask Dice or box agreement per pair

    @property
    def agreement(self) -> float:
        return float(np.mean(list(self.pairwise.values()))) if self.pairwise else 1.0


def candidates(task: str) -> list[str]:
    """Models that can be compared for a task, each task's default first."""
    if task not in KINDS:
        raise ValueError(f"Compare works on {', '.join(KINDS)}; got {task!r}.")
    names = [name for kind in KINDS[task] for name in zoo.names(kind)]
    default = next((s.name for s in zoo.registry().specs(task) if s.default), None)
    # the task's default first, then models on this machine, then Hub models that may need the internet
    return sorted(names, key=lambda n: (n != default, zoo.get(n).is_hub and not (zoo.REPO_ROOT / "weights" / n).is_dir()))


def on_this_machine(task: str) -> list[str]:
    """Candidates whose files are here (no download needed): the sensible default selection."""
    return [n for n in candidates(task) if not zoo.get(n).is_hub or (zoo.REPO_ROOT / "weights" / n).is_dir()]


def run(xray: XRay, task: str, models: list[str], preset: str = "clinical", method: str | None = "GradCAM",
        lungs: Lungs | None = None) -> Comparison:
    allowed = candidates(task)
    models = list(dict.fromkeys(models))
    fewest = min(2, len(allowed))  # a zoo with one detector can still show it here, alone
    if not fewest <= len(models) <= MAX_MODELS:
        raise ValueError(f"Pick between {fewest} and {MAX_MODELS} different models to compare.")
    wrong = [m for m in models if m not in allowed]
    if wrong:
        raise ValueError(f"{', '.join(wrong)} cannot be compared on {task}; choose from {', '.join(allowed)}.")
    outputs = tuple(_one_or_reason(xray, task, name, preset, method, lungs) for name in models)
    return Comparison(task, outputs, _pairwise(task, tuple(o for o in outputs if o.error is None)))


def _one_or_reason(xray: XRay, task: str, name: str, preset: str, method: str | None, lungs: Lungs | None) -> ModelOutput:
    try:
        return _one(xray, task, name, preset, method, lungs)
    except zoo.ModelUnavailable as error:
        return ModelOutput(name, zoo.get(name).task, 0.0, error=str(error))


def _one(xray: XRay, task: str, name: str, preset: str, method: str | None, lungs: Lungs | None) -> ModelOutput:
    # each model's own compute time, which a remembered answer keeps (cxr_demo.tasks.memo): the wall time of a reused
    # answer is ~0 ms and would make a slow model look fast
    kind = zoo.get(name).task
    if task == "classify" and kind == "classify":
        from cxr_demo.tasks import classify
        result = classify.predict(xray, name, method, lungs=lungs)
        reads = "lung crop" if result.crop_box != FULL_FILM else "full film"
        return ModelOutput(name, kind, result.latency_ms, result.probabilities, heatmap=result.heatmap_on_film(xray.shape),
                           heatmap_in_lungs=result.heatmap_in_lungs, reads=reads)
    if task == "classify" and kind == "zeroshot":
        from cxr_demo.tasks import zeroshot
        if preset not in zeroshot.PRESETS:
            raise ValueError(f"Unknown prompt preset {preset!r}; choose one of {', '.join(zeroshot.PRESETS)}.")
        result = zeroshot.predict(xray, name, zeroshot.PRESETS[preset], lungs=lungs)
        return ModelOutput(name, kind, result.latency_ms, result.probabilities)
    if task in ("classify", "segment") and kind in ("segment", "multitask"):
        from cxr_demo.tasks import segment
        result = segment.predict(xray, name)
        return ModelOutput(name, kind, result.latency_ms, result.probabilities, mask=result.mask)
    from cxr_demo.tasks import detect
    result = detect.predict(xray, name)
    return ModelOutput(name, kind, result.latency_ms, boxes=tuple(result.boxes))


def _pairwise(task: str, outputs: tuple[ModelOutput, ...]) -> dict[tuple[str, str], float]:
    scores = {}
    for a, b in itertools.combinations(outputs, 2):
        if task == "classify":
            scores[(a.model, b.model)] = float(a.top_label == b.top_label)
        elif task == "segment":
            from cxr_demo.tasks.segment import overlap
            scores[(a.model, b.model)] = overlap(a.mask, b.mask)[0]
        else:
            scores[(a.model, b.model)] = box_agreement(a.boxes, b.boxes)
    return scores


def box_agreement(a, b, iou: float = 0.5) -> float:
    """Share of all boxes that have a partner in the other set at IoU >= `iou` (1.0 when both found nothing)."""
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    import torch
    from torchvision.ops import box_iou

    as_tensor = lambda boxes: torch.tensor([[x.x0, x.y0, x.x1, x.y1] for x in boxes], dtype=torch.float32)  # noqa: E731
    overlaps = box_iou(as_tensor(a), as_tensor(b))
    matched = int((overlaps.max(1).values >= iou).sum()) + int((overlaps.max(0).values >= iou).sum())
    return matched / (len(a) + len(b))
