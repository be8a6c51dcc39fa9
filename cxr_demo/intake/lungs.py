"""One lung mask per image, and what is derived from it: the anatomy cleanup, the lung box, the crop and the counterfactual.

    lungs = find_lungs(xray)            # the default segmenter, once per image
    crop = crop_to_box(xray.pixels, lungs.box)

Every tab and `train/` take the crop from here, so the classifier sees at inference exactly what it was trained on.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage, special

from cxr_demo import zoo
from cxr_demo.io import XRay
from cxr_demo.io.preprocess import model_input, upsample_to

Box = tuple[float, float, float, float]  # top, left, bottom, right as fractions of the image's height and width
FULL_FILM: Box = (0.0, 0.0, 1.0, 1.0)
BOX_MARGIN = 0.05  # of the image side, around the two lungs: the costophrenic angles and apices stay in the crop
MIN_LUNG_AREA = 0.03  # of the image; below it there is no lung to crop and the full film is used
BLANK_DILATION = 0.03  # of the image side: the lung border goes too, so its outline does not survive the blanking
# what fills the blanked lungs: the film's median grey (what the classifiers' counterfactual penalty trains on), its 5th
# percentile (dark, like air-filled lungs), its 95th (white, like a lung gone opaque) or grain around the median; the others
# test whether a model learned one blank rather than that the lungs are gone
BLANK_FILLS = ("median", "dark", "bright", "noise")


@dataclass(frozen=True)
class Lungs:
    mask: np.ndarray  # bool, on the segmenter's grid, the two largest components only
    box: Box
    area_fraction: float  # of the image, after cleanup
    components: int  # large connected components before cleanup (two for a normal frontal film)
    model: str
    latency_ms: float

    @property
    def found(self) -> bool:
        return self.area_fraction >= MIN_LUNG_AREA


def run_segmenter(pixels: np.ndarray, loaded: zoo.Loaded) -> tuple[np.ndarray, torch.Tensor | None]:
    """The mask probability on the segmenter's grid, and a multi-task model's class logits (None for a plain segmenter)."""
    spec = loaded.spec
    x = model_input(pixels, (spec.input_size, spec.input_size), spec.mean, spec.std, loaded.options.get("preprocess", "none"))
    with loaded.lock, torch.inference_mode():
        output = loaded.module(x)
    logits, class_logits = output if isinstance(output, tuple) else (output, None)
    # scipy's sigmoid: a torch one on 224x224 would wake torch's OpenMP pool just before the input check runs in ORT
    return special.expit(logits[0, 0].float().numpy()), None if class_logits is None else class_logits[0].float()


def two_largest(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Keep the two lungs: the biggest component, and the next biggest if it is lung-sized and starts as high as a lung.
    A stomach bubble or a speck outside the chest is dropped. Also returns how many components hold at least 1% of the image."""
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask, 0
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    keep = np.argsort(sizes)[::-1][:2]
    keep = keep[sizes[keep] >= 0.15 * sizes[keep[0]]]  # a second "lung" a seventh the size of the first is not one
    if len(keep) == 2 and not _starts_above_middle_of(labels == keep[1] + 1, labels == keep[0] + 1):
        keep = keep[:1]  # both apices lie near the top of the chest; the gastric bubble sits under the diaphragm
    large = int((sizes >= 0.01 * mask.size).sum())
    return np.isin(labels, keep + 1), large


def _starts_above_middle_of(candidate: np.ndarray, lung: np.ndarray) -> bool:
    """Whether `candidate`'s top row lies above the vertical centre of `lung`, as the other lung's apex does."""
    top = np.flatnonzero(candidate.any(1))[0]
    rows = np.flatnonzero(lung.any(1))
    return top < (rows[0] + rows[-1]) / 2


def lung_box(mask: np.ndarray, margin: float = BOX_MARGIN) -> Box:
    """The lungs' bounding box, widened by `margin` on every side; the full film when there is no lung."""
    if mask.mean() < MIN_LUNG_AREA:
        return FULL_FILM
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    h, w = mask.shape
    return (max(0.0, rows[0] / h - margin), max(0.0, cols[0] / w - margin),
            min(1.0, (rows[-1] + 1) / h + margin), min(1.0, (cols[-1] + 1) / w + margin))


def box_in_pixels(box: Box, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    h, w = shape
    top, left = int(np.floor(box[0] * h)), int(np.floor(box[1] * w))
    bottom, right = max(top + 1, int(np.ceil(box[2] * h))), max(left + 1, int(np.ceil(box[3] * w)))
    return top, left, bottom, right


def crop_to_box(pixels: np.ndarray, box: Box) -> np.ndarray:
    top, left, bottom, right = box_in_pixels(box, pixels.shape[:2])
    return pixels[top:bottom, left:right]


def blank_lungs(pixels: np.ndarray, mask: np.ndarray, dilation: float = BLANK_DILATION, fill: str = "median") -> np.ndarray:
    """The film with the (slightly dilated) lungs filled (`BLANK_FILLS`; the median grey by default): what is left is
    everything but the lungs."""
    full = upsample_to(mask.astype(np.float32), pixels.shape) >= 0.5
    radius = max(1, round(dilation * max(pixels.shape)))
    full = ndimage.binary_dilation(full, structure=np.ones((3, 3), bool), iterations=radius) if full.any() else full
    blanked = pixels.copy()
    blanked[full] = blank_values(pixels, int(full.sum()), fill)
    return blanked


def blank_values(pixels: np.ndarray, n: int, fill: str) -> np.ndarray | float:
    if fill == "median":
        return np.median(pixels)
    if fill == "dark":
        return np.percentile(pixels, 5)
    if fill == "bright":
        return np.percentile(pixels, 95)
    if fill == "noise":  # seeded: the same film is blanked the same way every time
        grain = np.random.default_rng(0).normal(0.0, float(pixels.std()) / 2, n)
        top = np.iinfo(pixels.dtype).max if np.issubdtype(pixels.dtype, np.integer) else 1.0  # training blanks uint8 films
        return np.clip(np.median(pixels) + grain, 0, top).astype(pixels.dtype)
    raise ValueError(f"Unknown blank fill {fill!r}; choose one of {BLANK_FILLS}.")


def heatmap_share_in(heatmap: np.ndarray, mask: np.ndarray) -> float:
    """Share of the heatmap's mass that falls inside `mask` (both resized to the heatmap's grid)."""
    inside = upsample_to(mask.astype(np.float32), heatmap.shape) >= 0.5
    total = float(heatmap.sum())
    return float(heatmap[inside].sum()) / total if total > 0 else 0.0


def find_lungs(xray: XRay | np.ndarray, model: str | None = None) -> Lungs:
    pixels = xray.pixels if isinstance(xray, XRay) else xray
    start = time.perf_counter()
    loaded = zoo.load(model or zoo.default("segment").name)
    probability, _ = run_segmenter(pixels, loaded)
    mask, components = two_largest(probability > float(loaded.options.get("threshold", 0.5)))
    latency = (time.perf_counter() - start) * 1000
    return Lungs(mask, lung_box(mask), float(mask.mean()), components, loaded.spec.name, latency)
