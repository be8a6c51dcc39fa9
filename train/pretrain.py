"""Self-supervised pretraining of a ViT on our own unlabelled chest X-rays: a masked autoencoder (MAE, He et al. 2021).

    python -m train.pretrain --arch vit_tiny_patch16_224 --img-size 128 --epochs 12 --name cxr-mae-vit-tiny
    python -m train.classify --data ../shared/data/cxr-3class --arch vit_tiny_patch16_224 --img-size 128 --crop lungs \
        --init runs/pretrain/cxr-mae-vit-tiny --train-last 4 --name cxr-vit-tiny-mae

Seed 000's DINOv2/BEiT recipe in miniature: learn features from images alone, then fine-tune the last blocks on labels.
Three quarters of each image's patches are hidden; the encoder sees the rest, a small decoder paints the hidden patches
back, and the loss is the error on the hidden ones (per-patch normalised pixels). The images are lung crops, as the
classifiers read them, pooled from every CXR folder in ../shared/data that no classifier is scored on, less the
cxr-3class test split: cxr-3class train and val, Shenzhen and RSNA. The other hospitals' films that score the classifiers
(COVID-QU-Ex, TBX11K, the DICOMs) stay out, so that pretraining cannot have seen them.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from timm.layers import trunc_normal_
from timm.models.vision_transformer import Block
from torch import nn
from torchvision.transforms import v2

from cxr_demo.io.preprocess import apply_steps
from train import data as datasets
from train.data import SHARED, Batches
from train.engine import Export, TrainConfig, Trainer, main, progress

UNLABELLED = ("lung-masks/shenzhen/images", "rsna-opacity-boxes/images")


@dataclass(kw_only=True)
class PretrainConfig(TrainConfig):
    arch: str = "vit_tiny_patch16_224"
    img_size: int = 128
    data: str = str(SHARED)
    mask_ratio: float = 0.75
    decoder_dim: int = 128
    decoder_depth: int = 2
    lr: float = 1.5e-3
    weight_decay: float = 0.05
    batch_size: int = 64
    epochs: int = 12
    runs: str = "runs/pretrain"
    out: str = "runs/pretrain"
    folders: list[str] = field(default_factory=lambda: list(UNLABELLED))

    @property
    def run_name(self) -> str:
        return self.name or f"cxr-mae-{self.arch}"


class MaskedAutoencoder(nn.Module):
    """A timm ViT as the encoder (its weights keep timm's names under `encoder.`), and a light decoder."""

    def __init__(self, encoder: nn.Module, decoder_dim: int, decoder_depth: int, mask_ratio: float):
        super().__init__()
        self.encoder, self.mask_ratio = encoder, mask_ratio
        self.patch = encoder.patch_embed.patch_size[0]
        patches, channels = encoder.patch_embed.num_patches, encoder.patch_embed.proj.in_channels
        self.decoder_embed = nn.Linear(encoder.embed_dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        self.decoder_pos = nn.Parameter(trunc_normal_(torch.zeros(1, patches, decoder_dim), std=0.02))
        self.decoder = nn.Sequential(*[Block(decoder_dim, num_heads=4) for _ in range(decoder_depth)])
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.decoder_pred = nn.Linear(decoder_dim, self.patch ** 2 * channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction loss on the hidden patches."""
        encoder = self.encoder
        tokens = encoder.patch_embed(x) + encoder.pos_embed[:, encoder.num_prefix_tokens:]
        batch, patches, width = tokens.shape
        keep = int(patches * (1 - self.mask_ratio))
        order = torch.rand(batch, patches, device=x.device).argsort(1)
        restore = order.argsort(1)
        visible = torch.gather(tokens, 1, order[:, :keep, None].expand(-1, -1, width))
        cls = (encoder.cls_token + encoder.pos_embed[:, :1]).expand(batch, -1, -1)
        encoded = encoder.norm(encoder.blocks(torch.cat([cls, visible], 1)))[:, 1:]
        decoded = self.decoder_embed(encoded)
        decoded = torch.cat([decoded, self.mask_token.expand(batch, patches - keep, -1)], 1)
        decoded = torch.gather(decoded, 1, restore[:, :, None].expand(-1, -1, decoded.shape[2])) + self.decoder_pos
        predicted = self.decoder_pred(self.decoder_norm(self.decoder(decoded)))
        target = F.unfold(x, self.patch, stride=self.patch).transpose(1, 2)
        target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6).sqrt()
        hidden = (restore >= keep).float()
        return (((predicted - target) ** 2).mean(-1) * hidden).sum() / hidden.sum()


def pretraining_images(cfg: PretrainConfig) -> np.ndarray:
    """Lung crops of every pooled film: cxr-3class without its test split, and the extra folders."""
    root = Path(cfg.data)
    cxr3 = datasets.read_class_folders(root / "cxr-3class")
    splits = datasets.split_80_10_10(cxr3, seed=0)
    # the whole cxr-3class list, as the classifiers cache it, so that its crops are shared with them
    crops = [datasets.training_pixels(cxr3.paths, cfg.img_size, "lungs")[np.sort(np.concatenate([splits["train"], splits["val"]]))]]
    for folder in cfg.folders:
        paths = sorted(p for p in (root / folder).iterdir() if p.suffix.lower() in datasets.IMAGE_SUFFIXES)
        crops.append(datasets.training_pixels(paths, cfg.img_size, "lungs"))
    return np.concatenate(crops)


class PretrainTrainer(Trainer):
    """AdamW with a cosine schedule; 5% of the pooled images are held out and best.pt is the lowest loss on them."""

    def __init__(self, cfg: PretrainConfig):
        self.cfg = cfg
        self.pixels = pixels = pretraining_images(cfg)
        order = np.random.default_rng(cfg.seed).permutation(len(pixels))
        self.held_out, train = np.sort(order[: len(order) // 20]), order[len(order) // 20:]
        self.model = self.build_model(None)
        geometric = v2.RandomResizedCrop(cfg.img_size, scale=(0.6, 1.0), ratio=(0.85, 1.18), antialias=True)
        labels = np.zeros(len(pixels), np.int64)
        self.train_batches = Batches(pixels, labels, train, cfg.batch_size, lambda im: apply_steps(geometric(im), cfg.preprocess),
                                     (0.5,), (0.5,), shuffle=True, seed=cfg.seed)
        self.val_batches = datasets.evaluation_batches(pixels, labels, self.held_out, cfg.preprocess, (0.5,), (0.5,))
        self.steps_per_epoch = min(len(self.train_batches), cfg.max_steps or len(self.train_batches))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.95))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
                                                             pct_start=0.1)

    def build_model(self, init: str | None) -> nn.Module:
        cfg = self.cfg
        encoder = timm.create_model(cfg.arch, pretrained=False, num_classes=0, in_chans=1, img_size=cfg.img_size)
        return MaskedAutoencoder(encoder, cfg.decoder_dim, cfg.decoder_depth, cfg.mask_ratio)

    def loss(self, batch) -> torch.Tensor:
        x, _ = batch
        return self.model(x.contiguous())

    @torch.inference_mode()
    def validate(self) -> tuple[dict, float]:
        self.model.eval()
        torch.manual_seed(0)  # the same hidden patches every epoch, so the losses compare
        loss = float(np.mean([self.model(x.contiguous()).item() for x, _ in self.val_batches]))
        return {"val_loss": loss}, -loss

    def export(self, model: nn.Module, state: dict) -> Export:
        cfg = self.cfg
        metrics = {"task": "pretrain", "images": len(self.pixels), "held_out": len(self.held_out),
                   "val_loss": min(h["val_loss"] for h in state["history"]), **progress(state), "train_config": asdict(cfg)}
        config = {"architecture": cfg.arch, "num_classes": 0, "model_args": {"in_chans": 1, "img_size": cfg.img_size},
                  "cxr_demo": {"task": "pretrain", "method": "mae", "mask_ratio": cfg.mask_ratio, "preprocess": cfg.preprocess}}
        card = f"""# {cfg.run_name}

A `{cfg.arch}` encoder ({cfg.img_size} px, one channel) pretrained as a masked autoencoder on {len(self.pixels)} unlabelled
chest X-ray lung crops (cxr-3class train and val splits, {", ".join(cfg.folders)}); {cfg.epochs} epochs, {cfg.mask_ratio:.0%} of
the patches hidden. Held-out reconstruction loss: {metrics["val_loss"]:.4f}. Not a classifier: fine-tune it with
`python -m train.classify --init <this folder>`. The weights keep timm's names under `encoder.`; the decoder is kept too.
"""
        return Export(config, metrics, card, ModelCardData(license="apache-2.0", library_name="timm", tags=["chest-x-ray", "mae"]),
                      {"val_loss": metrics["val_loss"], "images": len(self.pixels)})


train = PretrainTrainer.train

if __name__ == "__main__":
    main(PretrainConfig, PretrainTrainer, __doc__)
