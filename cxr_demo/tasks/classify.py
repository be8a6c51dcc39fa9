"""Classify an `XRay` with a zoo classifier and explain it with a class activation map."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from cxr_demo import zoo
from cxr_demo.intake.lungs import FULL_FILM, Box, Lungs, box_in_pixels, crop_to_box, find_lungs, heatmap_share_in
from cxr_demo.io import XRay
from cxr_demo.io.preprocess import model_input, upsample_to
from cxr_demo.tasks.cam import class_activation_map, forward_only_gradcam
from cxr_demo.tasks.memo import remembered
from cxr_demo.zoo.gate import capture_pre_logits

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
    unfamiliar: bool = False  # far from the training images (see cxr_demo.zoo.gate)
    crop_box: Box = FULL_FILM  # the part of the film the model read (the lung box for lung-crop models)
    heatmap_in_lungs: float | None = None  # share of the heatmap's mass inside the lung mask

    def heatmap_on_film(self, shape: tuple[int, int]) -> np.ndarray | None:
        """The heatmap placed back on the whole film: zero outside the crop the model read."""
        if self.heatmap is None:
            return None
        full = np.zeros(shape, np.float32)
        top, left, bottom, right = box_in_pixels(self.crop_box, shape)
        full[top:bottom, left:right] = upsample_to(self.heatmap, (bottom - top, right - left))
        return full


def reads_lung_crop(loaded: zoo.Loaded) -> bool:
    return loaded.options.get("crop", "none") == "lungs"


def prepare(pixels: np.ndarray, loaded: zoo.Loaded) -> torch.Tensor:
    spec = loaded.spec
    in_chans = int(loaded.config.get("in_channels") or loaded.config.get("model_args", {}).get("in_chans", 3))
    return model_input(
        pixels, (spec.input_size, spec.input_size), spec.mean, spec.std,
        steps=loaded.options.get("preprocess", "none"), in_chans=in_chans,
    )


def explain(loaded: zoo.Loaded, x: torch.Tensor, method: str | None, class_index: int | None):
    """(heatmap or None, logits, pooled features) of one forward pass. GradCAM, and no heatmap at all, take the
    forward-only path where the network allows it; every other method runs through pytorch-grad-cam."""
    fast = forward_only_gradcam(loaded.module, x, loaded.spec.name) if method in (None, "GradCAM") else None
    if fast is not None:
        logits, pooled, features = fast(x)
        index = int(logits[0].argmax()) if class_index is None else class_index
        return (fast.heatmap(features, index, tuple(x.shape[-2:])) if method else None), logits, pooled
    with capture_pre_logits(loaded.module) as captured:
        if method:
            heatmap, logits = class_activation_map(loaded.module, x, method, class_index)
        else:
            with torch.inference_mode():
                heatmap, logits = None, loaded.module(x)
    return heatmap, logits, captured[0]


@remembered
def predict(
    xray: XRay,
    model: str | None = None,
    method: str | None = "GradCAM",
    target: str | None = None,
    lungs: Lungs | None = None,
) -> ClassifyResult:
    """Probabilities, and a heatmap for `target` (the top class when None); `method=None` skips the heatmap.
    `lungs` is the image's lung mask from the shared intake stage; it is computed here when not given."""
    loaded = zoo.load(model or zoo.default("classify").name)
    labels = list(loaded.config.get("label_names") or loaded.spec.labels)
    if target is not None and target not in labels:
        raise ValueError(f"Target class {target!r} is not one of this model's classes: {', '.join(labels)}.")
    start = time.perf_counter()
    if lungs is None and (reads_lung_crop(loaded) or zoo.registry().specs("segment")):
        lungs = find_lungs(xray)  # a full-film model in a zoo without a segmenter simply gets no heatmap-in-lungs figure
    box = lungs.box if lungs is not None and reads_lung_crop(loaded) else FULL_FILM
    x = prepare(crop_to_box(xray.pixels, box), loaded)
    with loaded.lock:
        heatmap, logits, pooled = explain(loaded, x, method, None if target is None else labels.index(target))
    unfamiliar = loaded.gate is not None and loaded.gate.is_unfamiliar(pooled)
    probs = (logits[0].float() / float(loaded.options.get("temperature", 1.0))).softmax(0).tolist()
    latency = (time.perf_counter() - start) * 1000
    probabilities = dict(zip(labels, probs))
    top = max(probabilities, key=probabilities.get)
    in_lungs = None if heatmap is None or lungs is None else heatmap_share_in(heatmap, crop_to_box(lungs.mask, box))
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
        crop_box=box,
        heatmap_in_lungs=in_lungs,
    )
