"""Train a segmentation-models-pytorch model on image/mask pairs and export it to `weights/<name>/`.

    python -m train.segment --data ../shared/data/lung-masks/shenzhen --data train/splits/covid-qu-ex-sample-train.csv \
        --arch unet --encoder mobilenet_v2 --init ../shared/weights-init/mobilenet_v2_imagenet.safetensors \
        --name lung-unet-mobilenetv2 --external train/splits/covid-qu-ex-sample-holdout.csv

`--data` (repeatable) is a folder with images/ + masks/, a pairs.csv, or `RLE.csv::DICOM_DIR` (SIIM-ACR).
`--external` (repeatable, same forms; `DIR::MASKS` names the mask folder) is scored but never trained or selected on:
images from other hospitals, to measure generalisation.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import ModelCardData
from safetensors.torch import load_file
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from cxr_demo.io.preprocess import apply_steps, normalize
from cxr_demo.zoo.loaders import smp_shape
from train.engine import Export, TrainConfig, Trainer, main, progress
from train.seg_data import Pair, load_pair, read_image_mask_folder, read_pairs_csv, read_siim_rle

ARCHITECTURES = ("unet", "unetplusplus", "manet", "fpn", "pspnet", "pan", "deeplabv3", "deeplabv3plus")
MEAN, STD = (0.5,), (0.5,)


@dataclass(kw_only=True)
class SegmentConfig(TrainConfig):
    """`init` is the encoder's: a .safetensors file, "hub" (smp's imagenet download) or None."""
    data: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    arch: str = "unet"
    encoder: str = "mobilenet_v2"
    label: str = "lung"
    batch_size: int = 8
    epochs: int = 60
    img_size: int = 256
    decoder_channels: list[int] = field(default_factory=list)  # empty: smp's (256, 128, 64, 32, 16), most of a U-Net's CPU time; halved: 46 vs 70 ms at 256 px
    # 4 stops the encoder at stride 16: MobileNetV2's 1280-channel last stage and the decoder block it feeds were 5 of the slim U-Net's 23 ms
    encoder_depth: int = 5

    @property
    def run_name(self) -> str:
        return self.name or f"{self.label}-{self.arch}-{self.encoder}"


def read_source(spec: str) -> list[Pair]:
    path, _, extra = spec.partition("::")
    path = Path(path)
    if path.suffix == ".csv":
        return read_siim_rle(path, extra) if extra else read_pairs_csv(path)
    return read_image_mask_folder(path, masks=extra or "masks")


def build_model(cfg: SegmentConfig, classes: int = 1, aux_classes: int | None = None) -> torch.nn.Module:
    if cfg.arch not in ARCHITECTURES:
        raise SystemExit(f"--arch must be one of {', '.join(ARCHITECTURES)}; got {cfg.arch!r}")
    aux = dict(classes=aux_classes, dropout=0.2) if aux_classes else None
    if len(cfg.decoder_channels) not in (0, cfg.encoder_depth):
        raise SystemExit(f"--decoder-channels needs one width per encoder stage: {cfg.encoder_depth} (--encoder-depth), got {len(cfg.decoder_channels)}")
    model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights="imagenet" if cfg.init == "hub" else None,
                             in_channels=1, classes=classes, aux_params=aux, **smp_shape(cfg.decoder_channels, cfg.encoder_depth))
    if cfg.init not in (None, "none", "hub"):
        load_encoder_init(model.encoder, Path(cfg.init))
    return model


def load_encoder_init(encoder: torch.nn.Module, path: Path) -> None:
    """ImageNet weights into an smp encoder: drop the classifier, fold RGB into the single gray input channel."""
    state = {k.removeprefix("model."): v for k, v in load_file(path).items() if not k.startswith(("classifier", "fc."))}
    own = encoder.state_dict()
    for key, value in state.items():
        if key in own and value.ndim == 4 and own[key].shape[1] == 1 and value.shape[1] == 3:
            state[key] = value.sum(1, keepdim=True)
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if len(missing) > len(own) // 2:  # timm-universal encoders prefix their keys with "model."
        state = {f"model.{k}": v for k, v in state.items()}
    result = encoder.load_state_dict(state, strict=False)
    if result is not None and len(result.missing_keys) > len(own) // 2:
        raise SystemExit(f"--init {path} does not fit encoder {type(encoder).__name__}: {len(result.missing_keys)} keys missing")


def joint_augment(size: int, steps: str):
    """Geometry moves image and mask together; intensity changes touch the image only."""
    geometric = v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True),
                            v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1))])
    photometric = v2.Compose([v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
                              v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.3)], p=0.5)])

    def augment(image: torch.Tensor, mask: torch.Tensor):
        image, mask = geometric(tv_tensors.Image(image), tv_tensors.Mask(mask))
        return photometric(apply_steps(image.as_subclass(torch.Tensor), steps)), mask.as_subclass(torch.Tensor)

    return augment


def as_tensors(pairs: list[Pair], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    loaded = [load_pair(p, size) for p in tqdm(pairs, desc="load", leave=False)]
    images = torch.from_numpy(np.stack([im for im, _ in loaded]))[:, None]
    masks = torch.from_numpy(np.stack([m for _, m in loaded]))[:, None]
    return images, masks


def batches(images, masks, index, batch_size, transform, shuffle, rng):
    order = rng.permutation(index) if shuffle else index
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        pairs = [transform(images[i], masks[i]) for i in chunk]
        x = normalize(torch.stack([p[0] for p in pairs]), MEAN, STD).contiguous(memory_format=torch.channels_last)
        yield x, torch.stack([p[1] for p in pairs]).float()


def dice_iou(logits: torch.Tensor, target: torch.Tensor) -> dict:
    """Mean over images (each image weighs the same, as a user sees them)."""
    tp, fp, fn, tn = smp.metrics.get_stats(logits.sigmoid(), target.long(), mode="binary", threshold=0.5)
    return {"dice": float(smp.metrics.f1_score(tp, fp, fn, tn, reduction="micro-imagewise")),
            "iou": float(smp.metrics.iou_score(tp, fp, fn, tn, reduction="micro-imagewise")), "n": int(target.shape[0])}


def score_masks(model, images: torch.Tensor, masks: torch.Tensor, steps: str) -> dict:
    return dice_iou(predict_logits(model, images, steps), masks)


@torch.inference_mode()
def predict_logits(model, images, steps: str, batch_size: int = 8) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mask logits; (mask logits, class logits) from a model with a classification head."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(apply_steps(images[start:start + batch_size], steps), MEAN, STD).contiguous(memory_format=torch.channels_last)
        out.append(model(x))
    if isinstance(out[0], tuple):
        return tuple(torch.cat([o[i].float() for o in out]) for i in range(len(out[0])))
    return torch.cat([o.float() for o in out])


def split_index(n: int, seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = n_val = max(1, round(n * 0.1))
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]), "train": np.sort(order[n_test + n_val:])}


class SegmentTrainer(Trainer):
    """Dice + BCE on a seeded 80/10/10 split of the pairs; best.pt on validation Dice."""

    def __init__(self, cfg: SegmentConfig):
        self.cfg = cfg
        self.pairs = [p for spec in cfg.data for p in read_source(spec)]
        self.images, self.masks = as_tensors(self.pairs, cfg.img_size)
        self.splits = split_index(len(self.pairs), cfg.seed)
        self.model = self.build_model(cfg.init)
        self.dice_loss, self.bce = smp.losses.DiceLoss("binary"), smp.losses.SoftBCEWithLogitsLoss()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = min(-(-len(self.splits["train"]) // cfg.batch_size), cfg.max_steps or 10**9)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
                                                             pct_start=0.1)
        self.augment, self.rng = joint_augment(cfg.img_size, cfg.preprocess), np.random.default_rng(cfg.seed)

    def build_model(self, init: str | None) -> torch.nn.Module:
        return build_model(replace(self.cfg, init=init)).to(memory_format=torch.channels_last)

    def batches(self, epoch: int):
        return batches(self.images, self.masks, self.splits["train"], self.cfg.batch_size, self.augment, True, self.rng)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        logits = self.model(x)
        return self.dice_loss(logits, y) + self.bce(logits, y)

    def score(self, model, part: str) -> dict:
        index = self.splits[part]
        return score_masks(model, self.images[index], self.masks[index], self.cfg.preprocess)

    def validate(self) -> tuple[dict, float]:
        dice = self.score(self.model, "val")["dice"]
        return {"val_dice": dice}, dice

    def export(self, model, state) -> Export:
        cfg = self.cfg
        metrics = {
            "task": "segment",
            "test": self.score(model, "test"),
            "val": self.score(model, "val"),
            "external": {spec: score_masks(model, *as_tensors(read_source(spec), cfg.img_size), cfg.preprocess) for spec in cfg.external},
            **progress(state),
            "data": {"sources": cfg.data, "split": "seeded random 80/10/10", "seed": cfg.seed,
                     "sizes": {k: int(len(v)) for k, v in self.splits.items()}},
            "train_config": asdict(cfg),
        }
        config = {
            "architecture": cfg.arch, "encoder_name": cfg.encoder, "in_channels": 1, "classes": 1, "label_names": [cfg.label],
            **smp_shape(cfg.decoder_channels, cfg.encoder_depth),
            "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "mean": list(MEAN), "std": list(STD)},
            "cxr_demo": {"task": "segment", "preprocess": cfg.preprocess, "threshold": 0.5},
        }
        card_data = ModelCardData(license="cc-by-nc-sa-4.0", library_name="segmentation-models-pytorch",
                                  pipeline_tag="image-segmentation", tags=["chest-x-ray", "cxr-demo", "not-a-medical-device"])
        return Export(config, metrics, model_card(cfg, cfg.run_name, metrics), card_data,
                      summary={"test": metrics["test"], "external": metrics["external"]})


def model_card(cfg: SegmentConfig, name: str, metrics: dict) -> str:
    external = "\n".join(f"| {spec} | {m['dice']:.4f} | {m['iou']:.4f} | {m['n']} |" for spec, m in metrics["external"].items())
    return f"""
# {name}

A `{cfg.arch}` ({cfg.encoder} encoder) {cfg.label} segmenter for frontal chest X-rays, trained by cxr-demo's
`train/segment.py` on {", ".join(cfg.data)}. **A teaching demo, not a medical device.**

## Training
Encoder init: {cfg.init or "random"}.{f" Decoder channels {tuple(cfg.decoder_channels)}." if cfg.decoder_channels else ""}{f" Encoder depth {cfg.encoder_depth} (the deepest features are at stride {2 ** cfg.encoder_depth})." if cfg.encoder_depth != 5 else ""} AdamW lr {cfg.lr} (one-cycle), weight decay {cfg.weight_decay}, {cfg.epochs} epochs,
batch {cfg.batch_size}, {cfg.img_size} px, preprocessing `{cfg.preprocess}`; loss Dice + BCE (smp); augmentation moves image and
mask together (random resized crop, rotation, shift, scale) and jitters blur and contrast on the image only.
Split: seeded random 80/10/10 over {sum(metrics["data"]["sizes"].values())} pairs; checkpoint chosen on validation Dice.
Minutes per epoch (2-core CPU): {metrics["minutes_per_epoch"]:.2f}.

## Results (Dice and IoU, mean over images, threshold 0.5)
| set | Dice | IoU | n |
|---|---|---|---|
| test split (same sources) | {metrics["test"]["dice"]:.4f} | {metrics["test"]["iou"]:.4f} | {metrics["test"]["n"]} |
{external}

Rows after the first are images never trained or selected on (`--external`), from other hospitals or from held-out halves of them.

## Intended use and limits
Teaching and demonstration: lung area and left/right split on a frontal CXR. Trained on {metrics["data"]["sizes"]["train"]} image/mask pairs
from {len(cfg.data)} source(s) ({", ".join(cfg.data)}); expect failures on children, lateral views, severe consolidation that hides the lung
border, and images with unusual framing. Not for clinical measurement.
"""


train = SegmentTrainer.train

if __name__ == "__main__":
    main(SegmentConfig, SegmentTrainer, __doc__, required=("data",))
