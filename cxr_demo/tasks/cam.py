"""Class activation maps through pytorch-grad-cam, for timm CNNs and ViT/Swin alike."""
from __future__ import annotations

import logging
import weakref
from contextlib import contextmanager

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, EigenGradCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.image import scale_cam_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

from cxr_demo.zoo.runtime import release_memory, with_onnxruntime

log = logging.getLogger("cxr_demo")

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


class _LogitsPooledFeatures(torch.nn.Module):
    """One forward pass that keeps what GradCAM and the feature gate need: logits, pooled features, last feature map."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor):
        features = self.model.forward_features(x)
        pooled = self.model.forward_head(features, pre_logits=True)
        return self.model.get_classifier()(pooled), pooled, features


class ForwardOnlyGradCAM:
    """GradCAM without autograd, for a network whose head is global average pooling and one linear layer (timm's
    EfficientNet and MobileNet, the simple CNN). There d(logit_c)/dA_k(i,j) = W_ck / HW at every position, so GradCAM's
    channel weights are W_c / HW and its map is ReLU(W_c . A), Zhou et al.'s CAM: one forward pass gives the map, and that
    pass runs in ONNX Runtime (EfficientNet-Lite0 at 224 px on 2 cores: 11 ms, against 30 for the autograd GradCAM).
    `forward_only_gradcam` builds it only where it reproduces pytorch-grad-cam's GradCAM on probe images."""

    def __init__(self, model: torch.nn.Module, example: torch.Tensor, name: str):
        self.weight = model.get_classifier().weight.detach().float().numpy()
        run = with_onnxruntime(_LogitsPooledFeatures(model).eval(), example, f"{name} (forward-only GradCAM)")
        # the eager fallback holds `model`, which is this object's key in _FORWARD_ONLY: a strong reference would keep both forever
        self.run = _through_weak_reference(model) if isinstance(run, _LogitsPooledFeatures) else run

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits, pooled features and the last feature map."""
        with torch.inference_mode():
            return self.run(x)

    def heatmap(self, features: torch.Tensor, class_index: int, size: tuple[int, int]) -> np.ndarray:
        cam = np.maximum(np.einsum("c,chw->hw", self.weight[class_index], features[0].float().numpy()), 0)
        # the same two scalings pytorch-grad-cam applies (per layer to the input size, then after the layer mean)
        return np.nan_to_num(scale_cam_image(np.maximum(scale_cam_image(cam[None], size[::-1]), 0))[0])


def _through_weak_reference(model: torch.nn.Module):
    model_ref = weakref.ref(model)
    return lambda x: _LogitsPooledFeatures(model_ref())(x)


_FORWARD_ONLY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def forward_only_gradcam(model: torch.nn.Module, example: torch.Tensor, name: str = "model") -> ForwardOnlyGradCAM | None:
    """The forward-only GradCAM of `model`, built once (call it under the model's lock), or None where it does not apply."""
    if model not in _FORWARD_ONLY:
        _FORWARD_ONLY[model] = _build_forward_only(model, example, name)
    return _FORWARD_ONLY[model]


def _build_forward_only(model: torch.nn.Module, example: torch.Tensor, name: str) -> ForwardOnlyGradCAM | None:
    pool = getattr(getattr(model, "global_pool", None), "pool_type", None)
    if pool != "avg" or not isinstance(model.get_classifier(), torch.nn.Linear) or not hasattr(model, "forward_head"):
        return None
    fast = ForwardOnlyGradCAM(model, example, name)
    probe = torch.rand(example.shape, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=torch.channels_last)
    _, _, features = fast(probe)
    for index in range(fast.weight.shape[0]):
        expected, _ = class_activation_map(model, probe, "GradCAM", index)
        if not np.allclose(fast.heatmap(features, index, tuple(probe.shape[-2:])), expected, atol=1e-3):
            log.warning("model %s: the forward-only GradCAM differs from pytorch-grad-cam's; using the autograd path", name)
            return None
    return fast
