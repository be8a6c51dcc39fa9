"""Another hospital, simulated: what a different scanner, protocol or positioning does to a whole film.

`python -m train.evaluate --shift NAME` (or `--shift all`) applies one of these to each film *before* the intake, so the
input check, the lung mask and the crop see the change too, as they would see a film from elsewhere. The accuracy that
holds under each is a repeatable proxy for the external sets that `../shared/data` is too small to give (n=9). Each
shift is deterministic: the same film is changed the same way every run. Pixels are float [0, 1], HxW, as in `XRay`.
"""
from __future__ import annotations

import io
from collections.abc import Callable
from functools import partial

import cv2
import numpy as np
from PIL import Image


def gamma(power: float, pixels: np.ndarray) -> np.ndarray:
    """A darker (power > 1) or lighter (< 1) film: another detector's response curve or exposure."""
    return np.power(pixels, power, dtype=np.float32)


def low_contrast(pixels: np.ndarray) -> np.ndarray:
    """Half the contrast around mid-grey: the veiled look of a scattered, under-penetrated portable film."""
    return (0.25 + 0.5 * pixels).astype(np.float32)


def blur(pixels: np.ndarray) -> np.ndarray:
    """A softer film (sigma 0.2% of the side, 2 px at 1024): a coarser detector or patient motion."""
    sigma = 0.002 * max(pixels.shape)
    return cv2.GaussianBlur(pixels.astype(np.float32), (0, 0), sigmaX=sigma)


def grain(pixels: np.ndarray) -> np.ndarray:
    """Quantum noise of a low-dose exposure (sigma 4% of the range), seeded so that every run sees the same grain."""
    noise = np.random.default_rng(0).normal(0.0, 0.04, pixels.shape)
    return np.clip(pixels + noise, 0.0, 1.0).astype(np.float32)


def jpeg(pixels: np.ndarray, quality: int = 20) -> np.ndarray:
    """A film that went through a teleradiology or PACS export at JPEG quality 20."""
    buffer = io.BytesIO()
    Image.fromarray((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
    return np.asarray(Image.open(buffer), dtype=np.float32) / 255.0


def wide_field(pixels: np.ndarray, margin: float = 0.15) -> np.ndarray:
    """A black border of 15% of each side: a wider collimation, or a smaller patient in the same field."""
    h, w = pixels.shape
    return np.pad(pixels, ((round(margin * h),) * 2, (round(margin * w),) * 2)).astype(np.float32)


def tilted(pixels: np.ndarray, degrees: float = 7.0) -> np.ndarray:
    """The patient turned 7 degrees in the frame (corners filled black)."""
    h, w = pixels.shape
    turn = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(pixels.astype(np.float32), turn, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)


def low_resolution(pixels: np.ndarray, side: int = 256) -> np.ndarray:
    """A film saved at 256 px on its long side and enlarged again: a thumbnail or a screenshot."""
    h, w = pixels.shape
    scale = side / max(h, w)
    small = cv2.resize(pixels.astype(np.float32), (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


SHIFTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "darker": partial(gamma, 1.6),
    "lighter": partial(gamma, 0.6),
    "low-contrast": low_contrast,
    "blur": blur,
    "grain": grain,
    "jpeg": jpeg,
    "wide-field": wide_field,
    "tilted": tilted,
    "low-resolution": low_resolution,
}
