"""Pixel preprocessing shared by training and inference, so both see identical inputs."""
from __future__ import annotations

import contextlib

import cv2
import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

PREPROCESS_STEPS = ("equalize", "none")


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Float [0, 1] image to uint8, clipping anything outside."""
    return (np.clip(pixels, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def resize_uint8(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a (..., H, W) uint8 tensor with antialiasing; the training data were squashed, so we squash too."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    return TF.resize(image, list(size), antialias=True)


def shrink_for(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A film at least twice the network's size, area-averaged by the largest whole factor that keeps it so (a 1024 px film
    for a 192 px network: to 512). The antialiased resize that follows then reads a quarter of the pixels or fewer (two
    intake models on a 1024 px film: 4 ms saved); a whole factor costs 0.1 ms, where 1024 to 384 px costs 1.3. The input
    moves by 0.2 grey levels on average (at most 12 of 255, at sharp edges; 16 films from other hospitals)."""
    h, w = pixels.shape
    factor = min(h // (2 * size[0]), w // (2 * size[1]))
    if factor < 2:
        return pixels
    return cv2.resize(np.asarray(pixels, np.float32), (w // factor, h // factor), interpolation=cv2.INTER_AREA)


def apply_steps(image: torch.Tensor, steps: str) -> torch.Tensor:
    """Apply the named intensity step to a (..., 1, H, W) uint8 tensor.

    Histogram equalization removes most scanner- and site-specific intensity differences,
    one of the shortcuts a classifier could otherwise learn.
    """
    if steps == "equalize":
        return TF.equalize(image)
    if steps == "none":
        return image
    raise ValueError(f"Unknown preprocess step {steps!r}; choose one of {PREPROCESS_STEPS}.")


def normalize(image: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """uint8 (..., C, H, W) to normalised float."""
    x = image.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - mean_t) / std_t


@contextlib.contextmanager
def one_torch_thread():
    """Run the enclosed torch ops on the calling thread alone. After a parallel op, torch's OpenMP workers spin for a while;
    on 2 cores they then fight the ONNX Runtime pool that runs the next model, and a 224 px resize gains nothing from a
    second thread. The setting is per thread under OpenMP, so a concurrent request keeps its own."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def model_input(
    pixels: np.ndarray,
    size: tuple[int, int],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    steps: str = "equalize",
    in_chans: int = 1,
) -> torch.Tensor:
    """Float [0, 1] HxW pixels to a (1, C, H, W) network input."""
    with one_torch_thread():
        image = torch.from_numpy(to_uint8(shrink_for(pixels, size)))[None]
        image = apply_steps(resize_uint8(image, size), steps)
        x = normalize(image, mean[:1], std[:1])
        if in_chans != 1:
            x = x.expand(in_chans, -1, -1)
        return x[None].contiguous(memory_format=torch.channels_last)


def upsample_to(heatmap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float HxW map to another shape."""
    # OpenCV's INTER_LINEAR samples at pixel centres, as torch's align_corners=False does, in a fraction of the time
    return cv2.resize(np.ascontiguousarray(heatmap, dtype=np.float32), (int(shape[1]), int(shape[0])), interpolation=cv2.INTER_LINEAR)
