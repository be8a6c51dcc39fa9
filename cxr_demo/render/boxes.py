"""Boxes over the film: predictions numbered as in the table, ground truth, and the lung crop."""
from __future__ import annotations

import numpy as np
import torch
from torchvision.utils import draw_bounding_boxes

from cxr_demo.render.overlays import display_pixels, font_file, gray_to_rgb_uint8
from cxr_demo.tasks.detect import Box

BOX_COLOUR = (255, 80, 40)
REFERENCE_COLOUR = (255, 210, 0)
CROP_COLOUR = (0, 190, 255)


def draw_boxes(pixels: np.ndarray, boxes: tuple[Box, ...] | list[Box], reference: list[Box] | None = None,
               crop: tuple[float, ...] | None = None, original_size: tuple[int, int] | None = None) -> np.ndarray:
    """Predicted boxes (the table's box number and score), ground truth and the lung crop over the X-ray, at display resolution, uint8 RGB.
    Coordinates are in the original image's pixels (`original_size` = its width, height)."""
    base = display_pixels(pixels)
    width, height = original_size or (pixels.shape[1], pixels.shape[0])
    scale = torch.tensor([base.shape[1] / width, base.shape[0] / height] * 2)
    canvas = torch.from_numpy(gray_to_rgb_uint8(base)).permute(2, 0, 1)
    line = max(2, round(max(base.shape) / 250))
    font = font_file()
    layers = [([crop] if crop else [], CROP_COLOUR, None, 1),
              ([b.xyxy for b in reference or []], REFERENCE_COLOUR, None, line),
              ([b.xyxy for b in boxes], BOX_COLOUR, [f"{i} · {b.score:.2f}" for i, b in enumerate(boxes, start=1)], line)]
    for coords, colour, labels, width_px in layers:
        if coords:
            canvas = draw_bounding_boxes(canvas, torch.tensor(coords, dtype=torch.float32) * scale, labels=labels,
                                         colors=colour, width=width_px, font=font, font_size=max(14, round(max(base.shape) / 28)) if font else None,
                                         label_colors="white", fill_labels=True)
    return canvas.permute(1, 2, 0).numpy().copy()
