"""Train a segmentation-models-pytorch model on image/mask pairs and export it to `weights/<name>/`.

    python -m train.segment --data ../shared/data/lung-masks/shenzhen --data train/splits/covid-qu-ex-sample-train.csv \
        --arch unet --encoder mobilenet_v2 --init ../shared/weights-init/mobilenet_v2_imagenet.safetensors \
        --name lung-unet-mobilenetv2 --external train/splits/covid-qu-ex-sample-holdout.csv

`--data` (repeatable) is a folder with images/ + masks/, a pairs.csv, or `RLE.csv::DICOM_DIR` (SIIM-ACR).
`--external` (repeatable, same forms; `DIR::MASKS` names the mask folder) is scored but never trained or selected on:
images from other hospitals, to measure generalisation.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
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
from train.cli import parse_config, start_run
from train.export import export_checkpoint, push_to_hub
from train.seg_data import Pair, load_pair, read_image_mask_folder, read_pairs_csv, read_siim_rle

ARCHITECTURES = ("unet", "unetplusplus", "manet", "fpn", "pspnet", "pan", "deeplabv3", "deeplabv3plus")
MEAN, STD = (0.5,), (0.5,)


@dataclass
class SegmentConfig:
    data: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    arch: str = "unet"
    encoder: str = "mobilenet_v2"
    init: str | None = None  # encoder weights: a .safetensors file, "hub" (smp's imagenet download) or None
    name: str | None = None
    label: str = "lung"
    epochs: int = 60
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8
    img_size: int = 256
    preprocess: str = "equalize"
    seed: int = 0
    out: str = "weights"
    runs: str = "runs"
    max_steps: int | None = None
    threads: int | None = None
    push_to_hub: str | None = None


def read_source(spec: str) -> list[Pair]:
    path, _, extra = spec.partition("::")
    path = Path(path)
    if path.suffix == ".csv" and extra:
        return read_siim_rle(path, extra)
    if path.suffix == ".csv":
        return read_pairs_csv(path)
    return read_image_mask_folder(path, masks=extra or "masks")


def build_model(cfg: SegmentConfig, classes: int = 1, aux_classes: int | None = None) -> torch.nn.Module:
    if cfg.arch not in ARCHITECTURES:
        raise SystemExit(f"--arch must be one of {', '.join(ARCHITECTURES)}; got {cfg.arch!r}")
    aux = dict(classes=aux_classes, dropout=0.2) if aux_classes else None
    model = smp.create_model(cfg.arch, encoder_name=cfg.encoder, encoder_weights="imagenet" if cfg.init == "hub" else None,
                             in_channels=1, classes=classes, aux_params=aux)
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
    geometric = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25), antialias=True),
        v2.RandomAffine(degrees=10, translate=(0.05, 0.05), scale=(0.9, 1.1)),
    ])
    photometric = v2.Compose([
        v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
        v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.3)], p=0.5),
    ])

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


@torch.inference_mode()
def predict_logits(model, images, steps: str, batch_size: int = 8) -> torch.Tensor:
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        x = normalize(apply_steps(images[start:start + batch_size], steps), MEAN, STD).contiguous(memory_format=torch.channels_last)
        out.append(model(x).float())
    return torch.cat(out)


def split_index(n: int, seed: int) -> dict[str, np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    n_test = n_val = max(1, round(n * 0.1))
    return {"test": np.sort(order[:n_test]), "val": np.sort(order[n_test:n_test + n_val]), "train": np.sort(order[n_test + n_val:])}


def train(cfg: SegmentConfig) -> Path:
    name = cfg.name or f"{cfg.label}-{cfg.arch}-{cfg.encoder}"
    run_dir = start_run(cfg.runs, name, cfg.seed, cfg.threads)
    pairs = [p for spec in cfg.data for p in read_source(spec)]
    images, masks = as_tensors(pairs, cfg.img_size)
    splits = split_index(len(pairs), cfg.seed)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    dice_loss, bce = smp.losses.DiceLoss("binary"), smp.losses.SoftBCEWithLogitsLoss()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = min(-(-len(splits["train"]) // cfg.batch_size), cfg.max_steps or 10**9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps_per_epoch, pct_start=0.1)
    augment, rng = joint_augment(cfg.img_size, cfg.preprocess), np.random.default_rng(cfg.seed)
    state = {"epoch": 0, "best_dice": -1.0, "history": []}
    last = run_dir / "last.pt"
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        print(f"resuming {name} after epoch {state['epoch']}")
    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        start, losses = time.perf_counter(), []
        for step, (x, y) in enumerate(batches(images, masks, splits["train"], cfg.batch_size, augment, True, rng)):
            if step >= steps_per_epoch:
                break
            logits = model(x)
            loss = dice_loss(logits, y) + bce(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        minutes = (time.perf_counter() - start) / 60
        val = dice_iou(predict_logits(model, images[splits["val"]], cfg.preprocess), masks[splits["val"]])
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_dice": val["dice"], "minutes": minutes})
        print(json.dumps(state["history"][-1]), flush=True)
        if val["dice"] >= state["best_dice"]:
            state["best_dice"] = val["dice"]
            torch.save(model.state_dict(), run_dir / "best.pt")
        state["epoch"] = epoch + 1
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "state": state}, last)
    return finish(cfg, name, run_dir, images, masks, splits, state)


def finish(cfg, name, run_dir, images, masks, splits, state) -> Path:
    model = build_model(SegmentConfig(**{**asdict(cfg), "init": None}))
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model = model.to(memory_format=torch.channels_last)
    score = lambda ims, ms: dice_iou(predict_logits(model, ims, cfg.preprocess), ms)  # noqa: E731
    metrics = {
        "task": "segment",
        "test": score(images[splits["test"]], masks[splits["test"]]),
        "val": score(images[splits["val"]], masks[splits["val"]]),
        "external": {spec: score(*as_tensors(read_source(spec), cfg.img_size)) for spec in cfg.external},
        "minutes_per_epoch": float(np.median([h["minutes"] for h in state["history"]])) if state["history"] else 0.0,
        "epochs": state["epoch"],
        "history": state["history"],
        "data": {"sources": cfg.data, "split": "seeded random 80/10/10", "seed": cfg.seed, "sizes": {k: int(len(v)) for k, v in splits.items()}},
        "train_config": asdict(cfg),
    }
    config = {
        "architecture": cfg.arch, "encoder_name": cfg.encoder, "in_channels": 1, "classes": 1, "label_names": [cfg.label],
        "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "mean": list(MEAN), "std": list(STD)},
        "cxr_demo": {"task": "segment", "preprocess": cfg.preprocess, "threshold": 0.5},
    }
    out = export_checkpoint(Path(cfg.out) / name, model.state_dict(), config, metrics, model_card(cfg, name, metrics),
                            ModelCardData(license="cc-by-nc-sa-4.0", library_name="segmentation-models-pytorch",
                                          pipeline_tag="image-segmentation", tags=["chest-x-ray", "cxr-demo", "not-a-medical-device"]))
    print(json.dumps({"test": metrics["test"], "external": metrics["external"]}))
    if cfg.push_to_hub:
        print(push_to_hub(out, cfg.push_to_hub))
    return out


def model_card(cfg: SegmentConfig, name: str, metrics: dict) -> str:
    external = "\n".join(f"| {spec} | {m['dice']:.4f} | {m['iou']:.4f} | {m['n']} |" for spec, m in metrics["external"].items())
    return f"""
# {name}

A `{cfg.arch}` ({cfg.encoder} encoder) {cfg.label} segmenter for frontal chest X-rays, trained by cxr-demo's
`train/segment.py` on {", ".join(cfg.data)}. **A teaching demo, not a medical device.**

## Training
Encoder init: {cfg.init or "random"}. AdamW lr {cfg.lr} (one-cycle), weight decay {cfg.weight_decay}, {cfg.epochs} epochs,
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


def parse_args(argv=None) -> SegmentConfig:
    return parse_config(SegmentConfig, argv, __doc__, required=("data",))

if __name__ == "__main__":
    train(parse_args())
