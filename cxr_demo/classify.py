"""Classify an `XRay` with a zoo classifier and explain it with a class activation map."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cxr_demo import zoo
from cxr_demo.cam import class_activation_map
from cxr_demo.gate import capture_pre_logits
from cxr_demo.io import XRay
from cxr_demo.preprocess import model_input


UNFAMILIAR = (
    "**This image does not look like the chest X-rays this model was trained on** (a frontal adult or child CXR). "
    "It may be another body part, a lateral view, a photo or an unusual scanner: the probabilities below mean little here."
)


@dataclass(frozen=True)
class ClassifyResult:
    model: str
    probabilities: dict[str, float]  # temperature-scaled
    top_label: str
    target_label: str  # the class the heatmap explains
    heatmap: np.ndarray | None  # float [0, 1] at the network's input resolution
    method: str | None
    latency_ms: float
    warnings: tuple[str, ...] = ()
    unfamiliar: bool = False  # far from the training images (see cxr_demo.gate)


def prepare(xray: XRay, loaded: zoo.Loaded) -> torch.Tensor:
    spec = loaded.spec
    in_chans = int(loaded.config.get("in_channels") or loaded.config.get("model_args", {}).get("in_chans", 3))
    return model_input(
        xray.pixels, (spec.input_size, spec.input_size), spec.mean, spec.std,
        steps=loaded.options.get("preprocess", "none"), in_chans=in_chans,
    )


def predict(
    xray: XRay,
    model: str | None = None,
    method: str | None = "GradCAM",
    target: str | None = None,
) -> ClassifyResult:
    """Probabilities, and a heatmap for `target` (the top class when None); `method=None` skips the heatmap."""
    loaded = zoo.load(model or zoo.default("classify").name)
    labels = list(loaded.config.get("label_names") or loaded.spec.labels)
    if target is not None and target not in labels:
        raise ValueError(f"Target class {target!r} is not one of this model's classes: {', '.join(labels)}.")
    start = time.perf_counter()
    x = prepare(xray, loaded)
    with loaded.lock, capture_pre_logits(loaded.module) as features:
        if method:
            heatmap, logits = class_activation_map(loaded.module, x, method, None if target is None else labels.index(target))
        else:
            with torch.inference_mode():
                heatmap, logits = None, loaded.module(x)
    unfamiliar = loaded.gate is not None and loaded.gate.is_unfamiliar(features[0])
    probs = (logits[0].float() / float(loaded.options.get("temperature", 1.0))).softmax(0).tolist()
    latency = (time.perf_counter() - start) * 1000
    probabilities = dict(zip(labels, probs))
    top = max(probabilities, key=probabilities.get)
    return ClassifyResult(
        model=loaded.spec.name,
        probabilities=probabilities,
        top_label=top,
        target_label=target or top,
        heatmap=heatmap,
        method=method,
        latency_ms=latency,
        warnings=xray.warnings + ((UNFAMILIAR,) if unfamiliar else ()),
        unfamiliar=unfamiliar,
    )
