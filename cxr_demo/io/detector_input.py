"""The seeds' detection preprocessing, shared by `train.detect` and the Detect tab so both see the same pixels.

In this order: the stored range to 0-255 and MONOCHROME1 inversion (both done by `read_xray`), a crop to the lung field
found from the row and column mean profiles, histogram equalization of the crop, and a resize so the longest side is the
model's input size. `prepare` applies the same geometry to boxes, so training and inference agree.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as TF

from cxr_demo.io.preprocess import to_uint8


@dataclass(frozen=True)
class DetectPreprocess:
    """The seed's preprocessing as options; stored in the checkpoint's config so inference repeats training."""

    input_size: int = 512  # longest side fed to the network
    equalize: bool = True
    crop_max_cut: float = 0.25  # lung crop: the most it may cut from each side (a share of the side); 0 = no crop

    @classmethod
    def from_options(cls, options: dict, input_size: int) -> "DetectPreprocess":
        return cls(input_size, options.get("preprocess", "equalize") == "equalize", float(options.get("crop_max_cut", 0.25)))


@dataclass(frozen=True)
class Prepared:
    image: torch.Tensor  # uint8 (1, H, W): what the network sees
    crop: tuple[int, int, int, int]  # x0, y0, x1, y1 of the crop in the source pixels
    boxes: tv_tensors.BoundingBoxes | None = None  # the given boxes, moved with the image

    @property
    def scale(self) -> tuple[float, float]:
        """Network pixels per source pixel, along x and y."""
        x0, y0, x1, y1 = self.crop
        return self.image.shape[-1] / (x1 - x0), self.image.shape[-2] / (y1 - y0)

    def to_source(self, boxes: torch.Tensor) -> torch.Tensor:
        """Boxes (N, 4) xyxy from the network's pixels back to the source image's pixels."""
        sx, sy = self.scale
        return boxes / torch.tensor([sx, sy, sx, sy]) + torch.tensor([self.crop[0], self.crop[1]] * 2, dtype=boxes.dtype)


def lung_crop_box(pixels: np.ndarray, max_cut: float = 0.25, margin: float = 0.02) -> tuple[int, int, int, int]:
    """The seed's lung crop from the row and column mean profiles: (x0, y0, x1, y1).

    Rows and columns at the edges whose mean is far darker than the image's median profile (black borders, air
    beside the body) or near white (collimator shutters, burnt-in labels) are trimmed. No side loses more than
    `max_cut` of the image: a crop that ate into a lung would silently remove the findings the detector is for.
    """
    h, w = pixels.shape
    if max_cut <= 0:
        return 0, 0, w, h
    y0, y1 = _content_range(pixels.mean(axis=1), max_cut, margin)
    x0, x1 = _content_range(pixels.mean(axis=0), max_cut, margin)
    return x0, y0, x1, y1


def _content_range(profile: np.ndarray, max_cut: float, margin: float) -> tuple[int, int]:
    n = len(profile)
    smooth = ndimage.uniform_filter1d(profile.astype(np.float32), size=max(3, n // 50), mode="nearest")
    content = np.flatnonzero((smooth > 0.35 * np.median(smooth)) & (smooth < 0.95))
    first, last = (content[0], content[-1] + 1) if len(content) else (0, n)
    pad, limit = round(margin * n), round(max_cut * n)
    return int(min(max(first - pad, 0), limit)), int(max(min(last + pad, n), n - limit))


def prepare(pixels: np.ndarray, options: DetectPreprocess, boxes: torch.Tensor | None = None) -> Prepared:
    """Float [0, 1] HxW pixels (and optional xyxy boxes in the same pixels) to the network's uint8 image (and boxes).

    The crop and resize go through torchvision's box-aware functional ops, so boxes follow the image exactly;
    equalization runs after the crop so black borders do not shape the histogram.
    """
    x0, y0, x1, y1 = lung_crop_box(pixels, options.crop_max_cut)
    image = tv_tensors.Image(torch.from_numpy(to_uint8(pixels))[None])
    bounding = None if boxes is None else tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=pixels.shape)
    image, bounding = _geometry(image, bounding, (x0, y0, x1, y1), options.input_size)
    plain = image.as_subclass(torch.Tensor)
    if options.equalize:
        plain = TF.equalize(plain)
    return Prepared(plain.contiguous(), (x0, y0, x1, y1), bounding)


def _geometry(image, boxes, crop: tuple[int, int, int, int], size: int):
    x0, y0, x1, y1 = crop
    items = [image] if boxes is None else [image, boxes]
    items = [TF.crop(item, y0, x0, y1 - y0, x1 - x0) for item in items]
    items = [TF.resize(item, None, max_size=size, antialias=True) for item in items]
    if boxes is None:
        return items[0], None
    return items[0], TF.clamp_bounding_boxes(items[1])
