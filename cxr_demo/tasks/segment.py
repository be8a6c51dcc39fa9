"""Segment an `XRay` with a zoo segmenter: a mask at the image's resolution, measurements, and Dice against a reference."""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from cxr_demo import zoo
from cxr_demo.intake.lungs import Lungs, run_segmenter, two_largest
from cxr_demo.io import InvalidImage, XRay
from cxr_demo.io.preprocess import upsample_to
from cxr_demo.tasks.memo import remembered

MID_GRAY_LIMIT = 0.05  # share of pixels between 10% and 90% grey beyond which a "mask" is really a picture
CHEST_FILM_CM = (20.0, 55.0)  # the longer side of a chest film: a child's cassette to the largest adult detector


@dataclass(frozen=True)
class LungMeasures:
    area_px: int
    right_px: int  # the patient's right lung: the image's left half on a standard frontal film
    left_px: int
    area_cm2: float | None
    right_cm2: float | None
    left_cm2: float | None

    @property
    def right_share(self) -> float:
        return self.right_px / self.area_px if self.area_px else 0.0


@dataclass(frozen=True)
class SegmentResult:
    model: str
    label: str
    mask: np.ndarray  # bool, the XRay's working resolution
    measures: LungMeasures
    latency_ms: float
    dice: float | None = None
    iou: float | None = None
    warnings: tuple[str, ...] = ()
    probabilities: dict[str, float] | None = None  # multi-task models also classify


@remembered
def predict(xray: XRay, model: str | None = None, reference: np.ndarray | None = None, lungs: Lungs | None = None) -> SegmentResult:
    """`lungs` is the shared intake's lung mask: reused (not recomputed) when it came from this model."""
    loaded = zoo.load(model or zoo.default("segment").name)
    start = time.perf_counter()
    probabilities, reused_ms = None, 0.0
    if lungs is not None and lungs.model == loaded.spec.name and not loaded.config.get("aux_classes"):
        grid_mask, reused_ms = lungs.mask, lungs.latency_ms  # the mask's cost was paid once, in the intake stage
    else:
        probability, probabilities = _run(xray, loaded)
        grid_mask = probability > float(loaded.options.get("threshold", 0.5))
        if loaded.config.get("mask_label", "lung") == "lung":
            grid_mask = two_largest(grid_mask)[0]  # anatomy: a stomach bubble or a speck is not a third lung
    mask = upsample_to(grid_mask.astype(np.float32), xray.shape) >= 0.5
    latency = (time.perf_counter() - start) * 1000 + reused_ms
    notes = list(xray.warnings)
    if mask.mean() < 0.02:
        notes.append("Almost no lung was found: is this a frontal chest X-ray?")
    dice = iou = None
    if reference is not None:
        dice, iou = overlap(mask, reference)
    label = loaded.config.get("mask_label") or (loaded.config.get("label_names") or ["lung"])[0]
    spacing = xray.meta.pixel_spacing_mm
    doubt = implausible_spacing(spacing, (xray.meta.height, xray.meta.width))
    if doubt:
        notes.append(doubt)
        spacing = None
    # measured on the model's own grid, scaled to the original pixels: the same areas, at a tenth of the cost of a full-size mask
    measures = measure(grid_mask, spacing, (xray.meta.height, xray.meta.width))
    return SegmentResult(loaded.spec.name, label, mask, measures, latency, dice, iou, tuple(notes), probabilities)


def _run(xray: XRay, loaded: zoo.Loaded) -> tuple[np.ndarray, dict[str, float] | None]:
    probability, class_logits = run_segmenter(xray.pixels, loaded)
    if class_logits is None:
        return probability, None
    return probability, dict(zip(loaded.config["label_names"], class_logits.softmax(0).tolist()))


def measure(mask: np.ndarray, spacing_mm: tuple[float, float] | None, original_shape: tuple[int, int] | None = None) -> LungMeasures:
    """Areas in the original image's pixels (and cm² when the DICOM gives pixel spacing), split at the midline
    between the two lungs. `original_shape` is the uploaded image's (height, width) when `mask` is a smaller working copy."""
    labels, count = ndimage.label(mask)
    right = left = 0
    if count:
        # bincount over the label image is ~20x faster than ndimage.sum/center_of_mass with many tiny specks
        sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
        column_sums = np.bincount(labels.ravel(), weights=np.broadcast_to(np.arange(mask.shape[1]), mask.shape).ravel(),
                                  minlength=count + 1)[1:]
        centre_columns = column_sums / np.maximum(sizes, 1)
        biggest = np.argsort(sizes)[::-1][:2]
        midline = centre_columns[biggest].mean() if len(biggest) == 2 else mask.shape[1] / 2
        right = int(sizes[centre_columns < midline].sum())
        left = int(sizes[centre_columns >= midline].sum())
    oh, ow = original_shape or mask.shape
    px_scale = (oh / mask.shape[0]) * (ow / mask.shape[1])
    right, left = round(right * px_scale), round(left * px_scale)
    total = right + left
    cm2 = None if spacing_mm is None else spacing_mm[0] * spacing_mm[1] / 100.0
    in_cm2 = lambda px: None if cm2 is None else round(px * cm2, 1)  # noqa: E731
    return LungMeasures(total, right, left, in_cm2(total), in_cm2(right), in_cm2(left))


def implausible_spacing(spacing_mm: tuple[float, float] | None, shape: tuple[int, int]) -> str | None:
    """Why the file's pixel spacing cannot be right for a chest film (a film resized without updating PixelSpacing is
    common in public datasets), or None when it is plausible or absent."""
    if spacing_mm is None:
        return None
    height_cm, width_cm = shape[0] * spacing_mm[0] / 10, shape[1] * spacing_mm[1] / 10
    low, high = CHEST_FILM_CM
    if low <= max(height_cm, width_cm) <= high:
        return None
    return (f"The file's pixel spacing ({spacing_mm[0]:.3g} × {spacing_mm[1]:.3g} mm) makes this film {width_cm:.0f} × {height_cm:.0f} cm, "
            f"but a chest film measures {low:.0f} to {high:.0f} cm: the image was probably resized without updating its spacing. "
            "Areas are given in pixels only.")


def overlap(mask: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(mask, reference).sum())
    total = float(mask.sum() + reference.sum())
    union = float(np.logical_or(mask, reference).sum())
    return (2 * inter / total if total else 1.0), (inter / union if union else 1.0)


def reference_mask(pixels: np.ndarray, shape: tuple[int, int], original_size: tuple[int, int],
                   mask_size: tuple[int, int] | None = None) -> tuple[np.ndarray, str | None]:
    """Validate an uploaded ground-truth mask (float [0, 1], as read by read_xray) and bring it onto the image's grid.
    `mask_size` is the mask file's own (width, height). Returns the mask and a note when it had to be resized."""
    h, w = pixels.shape
    ow, oh = original_size
    mw, mh = mask_size or (w, h)
    if abs(h / w - oh / ow) > 0.02:
        raise InvalidImage(f"The mask is {mw}x{mh} pixels but the image is {ow}x{oh}: their shapes differ, so the mask cannot "
                           "belong to this image. Upload the mask made for this image.")
    mid_gray = float(((pixels > 0.1) & (pixels < 0.9)).mean())
    if mid_gray > MID_GRAY_LIMIT:
        raise InvalidImage(f"The mask is not binary: {mid_gray:.0%} of its pixels are grey. Upload a black-and-white mask (0 = background).")
    binary = pixels >= 0.5
    if not binary.any():
        raise InvalidImage("The mask is empty (all black): there is nothing to compare with.")
    if binary.all():
        raise InvalidImage("The mask is all white: it marks no boundary to compare with.")
    resized = None if (mw, mh) == (ow, oh) else (
        f"Your mask is {mw}x{mh} pixels and the image {ow}x{oh}: the mask was resized to the image (same aspect ratio). "
        "Dice is only meaningful if the mask was drawn on this very image.")
    return upsample_to(binary.astype(np.float32), shape) >= 0.5, resized
