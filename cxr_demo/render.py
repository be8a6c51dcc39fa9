"""Everything that turns plain results into pictures. No model code, no Gradio."""
from __future__ import annotations

import numpy as np
from PIL import Image
from pytorch_grad_cam.utils.image import show_cam_on_image

from cxr_demo.preprocess import upsample_to

DISPLAY_MAX_SIDE = 768


def display_pixels(pixels: np.ndarray, max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Downsample float [0, 1] pixels for the browser; the models never see this copy."""
    h, w = pixels.shape
    if max(h, w) <= max_side:
        return pixels
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(pixels.astype(np.float32), mode="F").resize(size, Image.BILINEAR))


def gray_to_rgb_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.repeat((np.clip(pixels, 0, 1) * 255 + 0.5).astype(np.uint8)[..., None], 3, axis=2)


def heatmap_overlay(pixels: np.ndarray, heatmap: np.ndarray, opacity: float = 0.45) -> np.ndarray:
    """Jet-coloured heatmap blended over the X-ray, at display resolution, as uint8 RGB."""
    base = display_pixels(pixels)
    cam = np.clip(upsample_to(heatmap, base.shape), 0.0, 1.0)
    rgb = np.repeat(np.clip(base, 0, 1)[..., None], 3, axis=2).astype(np.float32)
    opacity = float(np.clip(opacity, 0.0, 1.0))
    return show_cam_on_image(rgb, cam, use_rgb=True, image_weight=1.0 - opacity)
