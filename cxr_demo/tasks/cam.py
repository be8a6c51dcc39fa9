"""Class activation maps through pytorch-grad-cam, for timm CNNs and ViT/Swin alike."""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, EigenGradCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxr_demo.zoo.runtime import release_memory

METHODS = {
    "GradCAM": GradCAM,
    "GradCAM++": GradCAMPlusPlus,
    "XGradCAM": XGradCAM,
    "HiResCAM": HiResCAM,
    "LayerCAM": LayerCAM,
    "EigenCAM": EigenCAM,
    "EigenGradCAM": EigenGradCAM,
    "ScoreCAM": ScoreCAM,
}
SLOW_METHODS = {"ScoreCAM"}  # one forward pass per feature channel: seconds, not milliseconds


def target_layer(model: torch.nn.Module) -> torch.nn.Module:
    """The last spatial feature layer, by timm family."""
    blocks = getattr(model, "blocks", None)
    if blocks is not None and len(blocks) and hasattr(blocks[-1], "attn"):  # ViT, DeiT, BEiT, DINOv2
        return blocks[-1].norm1
    layers = getattr(model, "layers", None)
    if layers is not None and len(layers) and hasattr(layers[-1], "blocks"):  # Swin
        return layers[-1].blocks[-1].norm1
    for name in ("bn2", "stages", "layer4"):  # EfficientNet/MobileNet, ConvNeXt, ResNet
        if hasattr(model, name):
            module = getattr(model, name)
            return module[-1] if name == "stages" else module
    return model.get_submodule(model.feature_info[-1]["module"])


def score_layer(model: torch.nn.Module) -> torch.nn.Module:
    """ScoreCAM's layer: one forward pass per channel, so an EfficientNet/MobileNet uses its last block (320 channels on
    the same 7x7 grid) instead of the 1x1 head convolution's 1280: a quarter of the passes, the same resolution."""
    blocks = getattr(model, "blocks", None)
    if hasattr(model, "conv_head") and blocks is not None and len(blocks) and not hasattr(blocks[-1], "attn"):
        return blocks[-1]
    return target_layer(model)


def reshape_transform(model: torch.nn.Module):
    """Tokens (B, N, C) or channels-last maps (B, H, W, C) to (B, C, H, W), using the model's own patch grid."""
    patch_embed = getattr(model, "patch_embed", None)
    grid = tuple(getattr(patch_embed, "grid_size", ()) or ())
    prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
    channels = int(getattr(model, "num_features", 0) or 0)

    def to_map(t: torch.Tensor) -> torch.Tensor:
        if t.ndim == 3:
            tokens = t[:, prefix:, :]
            h, w = grid if len(grid) == 2 and grid[0] * grid[1] == tokens.shape[1] else _square(tokens.shape[1])
            return tokens.reshape(t.shape[0], h, w, t.shape[2]).permute(0, 3, 1, 2)
        if t.ndim == 4 and t.shape[-1] == channels and t.shape[1] != channels:
            return t.permute(0, 3, 1, 2)
        return t

    return to_map


def _square(n: int) -> tuple[int, int]:
    side = int(round(n ** 0.5))
    if side * side != n:
        raise ValueError(f"Cannot lay {n} tokens out on a square grid; give the model a patch_embed.grid_size.")
    return side, side


@contextmanager
def _gradients_from(layer: torch.nn.Module):
    """Track gradients from `layer` onwards only: the backward pass then skips the whole backbone,
    which is most of the cost of a gradient-based CAM."""
    def start_graph(module, args, output):
        return output.detach().requires_grad_(True)

    handle = layer.register_forward_hook(start_graph)
    try:
        yield
    finally:
        handle.remove()


def class_activation_map(
    model: torch.nn.Module, x: torch.Tensor, method: str = "GradCAM", class_index: int | None = None
) -> tuple[np.ndarray, torch.Tensor]:
    """Heatmap (H x W of the input, [0, 1]) for `class_index` (top class if None), and the logits of the same pass."""
    if method not in METHODS:
        raise ValueError(f"Unknown heatmap method {method!r}; choose one of {', '.join(METHODS)}.")
    layer = score_layer(model) if method in SLOW_METHODS else target_layer(model)
    targets = None if class_index is None else [ClassifierOutputTarget(class_index)]
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    try:
        with _gradients_from(layer), METHODS[method](model, [layer], reshape_transform=reshape_transform(model)) as cam:
            if method in SLOW_METHODS:
                cam.batch_size = 16  # measured on 2 cores: 33 ms per masked image at 16, 46 ms at 64 (cache-bound)
            heatmap = cam(input_tensor=x, targets=targets)[0]
            logits = cam.outputs.detach()
    finally:
        for p in frozen:
            p.requires_grad_(True)
        if method in SLOW_METHODS:
            release_memory()
    return np.nan_to_num(heatmap.astype(np.float32)), logits
