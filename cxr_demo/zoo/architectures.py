"""The zoo's own timm architectures, registered with timm so that `timm.create_model(name)` builds them like any other.

- `cxr_simple_cnn`: the seeds' "simple CNN" baseline (seed 004): five stages of two conv-BN-ReLU and a max pool (16 to 256
  channels), global average pooling and a linear head, about 1.2 M parameters.
- `cxr_swin_atto`: a Swin Transformer small enough to train from scratch on two CPU cores (embed 48, depths 2-2-4-2,
  windows of 8 on a 128 px input), about 3.6 M parameters.
- `cxr_vit_hybrid_lite0`: the ViT paper's hybrid (its R50+ViT, in miniature): EfficientNet-Lite0's first five stages (stride 16,
  ImageNet-initialisable) embed the patches, then four ViT-Tiny blocks (width 192, 3 heads) and a class token; about 2.5 M parameters.
  A ViT-Tiny from scratch or from our own MAE reaches macro-F1 0.57 to 0.66 on our 4,300 films on two CPU cores; this one
  reaches 0.96 (results/classify_table.md) and keeps the ViT's token grid, so its heatmap is read from the patch grid.

Importing `cxr_demo.zoo` imports this module, so the app, `train.classify` and `train.evaluate` all know these names.
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import timm
import torch
from timm.layers import HybridEmbed, SelectAdaptivePool2d
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn
from timm.models.vision_transformer import VisionTransformer
from torch import nn


def _cfg(**kwargs) -> dict:
    return {"num_classes": 3, "input_size": (1, 128, 128), "mean": (0.5,), "std": (0.5,), "interpolation": "bilinear",
            "crop_pct": 1.0, "first_conv": "stem.0", "classifier": "head", **kwargs}


class SimpleCNN(nn.Module):
    """Conv-BN-ReLU x2 and a 2x2 max pool per stage; timm's classifier interface, so GradCAM, the feature gate and
    `train.classify` treat it like any timm CNN."""

    def __init__(self, num_classes: int = 3, in_chans: int = 1, widths=(16, 32, 64, 128, 256), drop_rate: float = 0.0, **_):
        super().__init__()
        layers, previous = [], in_chans
        for width in widths:
            layers += [nn.Conv2d(previous, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                       nn.MaxPool2d(2)]
            previous = width
        self.stem = nn.Sequential(*layers[:3])
        self.stages = nn.Sequential(*layers[3:])
        self.num_features = previous
        self.feature_info = [{"num_chs": previous, "reduction": 2 ** len(widths), "module": "stages"}]
        self.global_pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.drop = nn.Dropout(drop_rate)
        self.num_classes = num_classes
        self.head = nn.Linear(previous, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes)

    def group_matcher(self, coarse: bool = False) -> dict:
        return {"stem": r"^stem", "blocks": r"^stages\.(\d+)"}

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(self.global_pool(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


HYBRID_STEM_STAGES = 5  # EfficientNet-Lite0's blocks 0-4 end at stride 16 with 112 channels


def lite0_stem(in_chans: int = 3) -> nn.Sequential:
    """EfficientNet-Lite0 up to stride 16, under the same module names, so its ImageNet file loads by prefix."""
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, in_chans=in_chans, num_classes=0)
    return nn.Sequential(OrderedDict(conv_stem=net.conv_stem, bn1=net.bn1, blocks=net.blocks[:HYBRID_STEM_STAGES]))


def lite0_into_hybrid(state: dict, model: nn.Module) -> dict:
    """An EfficientNet-Lite0 checkpoint (timm names) to the hybrid's stem; its later stages and head have no place here."""
    kept = ("conv_stem.", "bn1.", *(f"blocks.{i}." for i in range(HYBRID_STEM_STAGES)))
    return {f"patch_embed.backbone.{k}": v for k, v in state.items() if k.startswith(kept)}


default_cfgs = generate_default_cfgs({
    "cxr_simple_cnn.untrained": _cfg(),
    "cxr_swin_atto.untrained": _cfg(first_conv="patch_embed.proj"),
    # the ImageNet file it starts from is 3-channel; timm sums its stem to our one channel
    "cxr_vit_hybrid_lite0.untrained": _cfg(input_size=(3, 128, 128), mean=(0.5,) * 3, std=(0.5,) * 3,
                                           first_conv="patch_embed.backbone.conv_stem"),
})


@register_model
def cxr_simple_cnn(pretrained: bool = False, **kwargs) -> SimpleCNN:
    return build_model_with_cfg(SimpleCNN, "cxr_simple_cnn", pretrained, **kwargs)


@register_model
def cxr_swin_atto(pretrained: bool = False, **kwargs) -> SwinTransformer:
    args = dict(img_size=128, patch_size=4, window_size=8, embed_dim=48, depths=(2, 2, 4, 2), num_heads=(2, 4, 8, 16))
    return build_model_with_cfg(SwinTransformer, "cxr_swin_atto", pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(flatten_sequential=True, out_indices=(0, 1, 2, 3)), **{**args, **kwargs})


@register_model
def cxr_vit_hybrid_lite0(pretrained: bool = False, **kwargs) -> VisionTransformer:
    embed = partial(HybridEmbed, backbone=lite0_stem(kwargs.get("in_chans", 3)))
    args = dict(img_size=128, patch_size=1, embed_dim=192, depth=4, num_heads=3, drop_path_rate=0.1, embed_layer=embed)
    # strict=False: only the stem comes from the ImageNet file; the transformer blocks start fresh
    return build_model_with_cfg(VisionTransformer, "cxr_vit_hybrid_lite0", pretrained, pretrained_filter_fn=lite0_into_hybrid,
                                pretrained_strict=False, **{**args, **kwargs})
