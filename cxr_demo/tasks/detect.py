"""Detect findings as boxes with a zoo Faster R-CNN: the predictor, its plausibility filter, and ground-truth box checks.

    from cxr_demo.tasks import detect
    result = detect.predict(read_xray("cxr.dcm"), score_threshold=0.3, nms_iou=0.5)
    result.boxes  # Box(x0, y0, x1, y1, label, score) in the uploaded image's pixels

The seeds' preprocessing lives in `cxr_demo.io.detector_input` (shared with training), the networks in
`cxr_demo.zoo.detector`, the overlay in `cxr_demo.render.boxes`.
"""
from __future__ import annotations

import csv
import io
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torchvision.ops import box_iou

from cxr_demo import zoo
from cxr_demo.io import XRay
from cxr_demo.io.detector_input import DetectPreprocess, Prepared, prepare
from cxr_demo.tasks.memo import remembered
from cxr_demo.zoo.detector import DetectorSpec


def demo_warning(train_images: int = 16) -> str:
    """What the app and the model card say about a detector trained on a handful of images."""
    return (f"Demo detector: trained on only {train_images} chest X-rays with boxes and scored on a handful of held-out ones. "
            "It misses findings and boxes normal anatomy; treat every box as an illustration, not a finding.")




MIN_BOX_SIDE_PX = 8  # of the uploaded image
MIN_BOX_SIDE_SHARE = 0.02  # of the image's shorter side: 5 px of a 256 px film, 20 px of a 1024 px one
MAX_BOX_ASPECT = 6.0


@dataclass(frozen=True)
class Box:
    x0: float
    y0: float
    x1: float
    y1: float
    label: str
    score: float = 1.0

    @property
    def xyxy(self) -> tuple[float, float, float, float]:
        return self.x0, self.y0, self.x1, self.y1


@dataclass(frozen=True)
class DetectResult:
    model: str
    boxes: tuple[Box, ...]  # the uploaded image's pixels, best score first
    latency_ms: float
    warnings: tuple[str, ...] = ()
    crop: tuple[float, float, float, float] | None = None  # the lung crop, in the uploaded image's pixels
    preprocessed: np.ndarray | None = field(default=None, repr=False)  # uint8 HxW: what the network saw


def network_input(prepared: Prepared) -> torch.Tensor:
    """uint8 (1, H, W) to the float (3, H, W) the detector normalises itself."""
    return prepared.image.float().div_(255.0).expand(3, -1, -1)


def run_detector(module: torch.nn.Module, prepared: list[Prepared], score_threshold: float, nms_iou: float) -> list[dict]:
    """Raw torchvision outputs with boxes moved back to each source image's pixels. torchvision applies the score
    threshold and the per-class NMS; they are module attributes, so callers hold the model's lock."""
    module.roi_heads.score_thresh, module.roi_heads.nms_thresh = float(score_threshold), float(nms_iou)
    with torch.inference_mode():
        outputs = module.eval()([network_input(p) for p in prepared])
    return [{**out, "boxes": p.to_source(out["boxes"])} for out, p in zip(outputs, prepared)]


@remembered
def predict(xray: XRay, model: str | None = None, score_threshold: float = 0.3, nms_iou: float = 0.5,
            keep_preprocessed: bool = False) -> DetectResult:
    if not 0 <= score_threshold <= 1 or not 0 < nms_iou <= 1:
        raise ValueError(f"The score threshold must be in [0, 1] and the NMS IoU in (0, 1]; got {score_threshold} and {nms_iou}.")
    loaded = zoo.load(model or zoo.default("detect").name)
    detector = DetectorSpec.from_dict(loaded.config["detector"])
    start = time.perf_counter()
    prepared = prepare(xray.pixels, DetectPreprocess.from_options(loaded.options, detector.input_size))
    with loaded.lock:
        output = run_detector(loaded.module, [prepared], score_threshold, nms_iou)[0]
    latency = (time.perf_counter() - start) * 1000
    # the working pixels may be a downsampled copy of a very large upload: report in the upload's own pixels
    to_original = torch.tensor([xray.meta.width / xray.shape[1], xray.meta.height / xray.shape[0]] * 2)
    boxes = tuple(
        Box(*(round(v, 1) for v in (xyxy * to_original).tolist()), detector.label_names[int(label) - 1], round(float(score), 4))
        for xyxy, label, score in zip(output["boxes"], output["labels"], output["scores"])
    )
    crop = tuple(round(v, 1) for v in (torch.tensor(prepared.crop, dtype=torch.float32) * to_original).tolist())
    boxes, slivers = plausible_boxes(boxes, (xray.meta.width, xray.meta.height))
    notes = list(xray.warnings)
    if slivers:
        notes.append(f"{slivers} degenerate box{'es' if slivers > 1 else ''} (thinner than {MIN_BOX_SIDE_SHARE:.0%} of the image or "
                     f"{MIN_BOX_SIDE_PX} px, or longer than {MAX_BOX_ASPECT:g}:1: the clipped remains of proposals along the crop edge) not shown.")
    if loaded.options.get("demo"):
        notes.append(demo_warning(int(loaded.options.get("train_images", 16))))
    if not boxes:
        notes.append(f"No box scored {score_threshold:.2f} or more. Lower the score threshold to see weaker candidates.")
    preprocessed = prepared.image[0].numpy() if keep_preprocessed else None
    return DetectResult(loaded.spec.name, boxes, latency, tuple(notes), crop, preprocessed)


def plausible_boxes(boxes: tuple[Box, ...], image_size: tuple[int, int]) -> tuple[tuple[Box, ...], int]:
    """Drop slivers: Faster R-CNN clips proposals that overhang the lung crop to its edge, and what is left of them is
    a line of a few pixels along the border. No finding is that thin. Returns the kept boxes and how many were dropped."""
    min_side = max(MIN_BOX_SIDE_PX, MIN_BOX_SIDE_SHARE * min(image_size))
    kept = tuple(b for b in boxes if min(b.x1 - b.x0, b.y1 - b.y0) >= min_side
                 and max(b.x1 - b.x0, b.y1 - b.y0) <= MAX_BOX_ASPECT * min(b.x1 - b.x0, b.y1 - b.y0))
    return kept, len(boxes) - len(kept)


def read_reference_boxes(source: str | Path | bytes, image_size: tuple[int, int]) -> list[Box]:
    """Ground-truth boxes from a CSV with x, y, width, height (pixels of the uploaded image, top-left origin) and an
    optional label column. Raises ValueError with a plain message."""
    raw = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        rows = list(csv.DictReader(io.StringIO(raw.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error):
        raise ValueError("The boxes file is not a text CSV. Upload a CSV with columns x, y, width, height.") from None
    columns = {c.strip().lower() for c in (rows[0].keys() if rows else []) if c}
    if not rows or not {"x", "y", "width", "height"} <= columns:
        raise ValueError("The boxes CSV needs a header with x, y, width, height (pixels of the image) and at least one row.")
    width, height = image_size
    boxes = []
    for number, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            x, y, w, h = (float(row[k]) for k in ("x", "y", "width", "height"))
        except ValueError:
            raise ValueError(f"Line {number} of the boxes CSV has a value that is not a number.") from None
        if not (w > 0 and h > 0 and np.isfinite([x, y, w, h]).all()):
            raise ValueError(f"Line {number} of the boxes CSV has a box with no area (width and height must be positive).")
        if x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1:
            raise ValueError(f"Line {number}: the box {x:g},{y:g} {w:g}x{h:g} lies outside the {width}x{height} image. "
                             "Give boxes in the uploaded image's pixels.")
        boxes.append(Box(x, y, x + w, y + h, row.get("label") or "ground truth"))
    return boxes


def best_ious(boxes: list[Box] | tuple[Box, ...], others: list[Box] | tuple[Box, ...]) -> list[float]:
    """For each box, its highest IoU with any of `others` (0 when there are none)."""
    if not boxes or not others:
        return [0.0] * len(boxes)
    ious = box_iou(torch.tensor([b.xyxy for b in boxes]), torch.tensor([b.xyxy for b in others]))
    return ious.max(dim=1).values.tolist()
