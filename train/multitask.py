"""Train one U-Net for lung masks and COVID / Normal / Viral Pneumonia at once (the seeds' multi-task U-Net).

    python -m train.multitask --seg-data ../shared/data/lung-masks/shenzhen --cls-data ../shared/data/cxr-3class \
        --init ../shared/weights-init/mobilenet_v2_imagenet.safetensors --name multitask-unet-mobilenetv2

The encoder is shared by smp's mask decoder and its classification head (`aux_params`). Labels are partial: lung-mask
images have no class, class images have no mask, so each loss is masked to the samples that carry its label, and the
decoder only runs on samples with a mask.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from tqdm import tqdm

from cxr_demo.io.preprocess import apply_steps, normalize
from train import data as datasets
from train.classify import train_augment
from train.cli import parse_config, start_run
from train.export import export_checkpoint
from cxr_demo.tasks.metrics import classification_report
from train.segment import MEAN, STD, SegmentConfig, as_tensors, build_model, dice_iou, joint_augment, read_source, split_index

NO_CLASS = -1


@dataclass
class MultitaskConfig:
    seg_data: list[str] = field(default_factory=list)
    cls_data: str = ""
    external: list[str] = field(default_factory=list)
    encoder: str = "mobilenet_v2"
    init: str | None = None
    name: str = "multitask-unet"
    epochs: int = 6
    lr: float = 1e-3
    weight_decay: float = 1e-4
    cls_batch: int = 16
    seg_batch: int = 4
    img_size: int = 224
    preprocess: str = "equalize"
    seed: int = 0
    out: str = "weights"
    runs: str = "runs"
    max_steps: int | None = None
    threads: int | None = None


def multitask_loss(model, x, labels, masks, has_mask, losses) -> torch.Tensor:
    """Cross-entropy where a class label exists, Dice + BCE where a mask exists."""
    features = model.encoder(x)
    class_logits = model.classification_head(features[-1])
    loss = torch.zeros(())
    if (labels != NO_CLASS).any():
        loss = loss + F.cross_entropy(class_logits, labels, ignore_index=NO_CLASS)
    if has_mask.any():
        mask_logits = model.segmentation_head(model.decoder([f[has_mask] for f in features]))
        dice, bce = losses
        loss = loss + dice(mask_logits, masks[has_mask]) + bce(mask_logits, masks[has_mask])
    return loss


@torch.inference_mode()
def evaluate(model, images, steps, batch=32):
    model.eval()
    masks, labels = [], []
    for start in range(0, len(images), batch):
        x = normalize(apply_steps(images[start:start + batch], steps), MEAN, STD).contiguous(memory_format=torch.channels_last)
        m, c = model(x)
        masks.append(m.float())
        labels.append(c.float())
    return torch.cat(masks), torch.cat(labels)


def train(cfg: MultitaskConfig) -> Path:
    run_dir = start_run(cfg.runs, cfg.name, cfg.seed, cfg.threads)
    cls = datasets.read_class_folders(cfg.cls_data)
    cls_splits = datasets.split_80_10_10(cls, seed=cfg.seed)
    cls_pixels = torch.from_numpy(np.asarray(datasets.cached_pixels(cls.paths, cfg.img_size)))[:, None]
    seg_images, seg_masks = as_tensors([p for s in cfg.seg_data for p in read_source(s)], cfg.img_size)
    seg_splits = split_index(len(seg_images), cfg.seed)
    seg_cfg = SegmentConfig(arch="unet", encoder=cfg.encoder, init=cfg.init)
    model = build_model(seg_cfg, aux_classes=len(cls.classes)).to(memory_format=torch.channels_last)
    losses = (smp.losses.DiceLoss("binary"), smp.losses.SoftBCEWithLogitsLoss())
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = min(len(cls_splits["train"]) // cfg.cls_batch, cfg.max_steps or 10**9)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, cfg.lr, total_steps=cfg.epochs * steps, pct_start=0.1)
    cls_aug, seg_aug = train_augment(cfg.img_size, cfg.preprocess), joint_augment(cfg.img_size, cfg.preprocess)
    rng = np.random.default_rng(cfg.seed)
    state = {"epoch": 0, "best": -1.0, "history": []}
    last = run_dir / "last.pt"
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=True)
        for obj, key in ((model, "model"), (optimizer, "optimizer"), (scheduler, "scheduler")):
            obj.load_state_dict(saved[key])
        state = saved["state"]
    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        start, running = time.perf_counter(), []
        order = rng.permutation(cls_splits["train"])
        for step in tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}"):
            ci = order[step * cfg.cls_batch:(step + 1) * cfg.cls_batch]
            si = rng.choice(seg_splits["train"], cfg.seg_batch)
            seg_pairs = [seg_aug(seg_images[i], seg_masks[i]) for i in si]
            images = torch.stack([cls_aug(cls_pixels[i]) for i in ci] + [p[0] for p in seg_pairs])
            x = normalize(images, MEAN, STD).contiguous(memory_format=torch.channels_last)
            labels = torch.cat([torch.from_numpy(cls.labels[ci]), torch.full((len(si),), NO_CLASS)])
            masks = torch.cat([torch.zeros(len(ci), 1, cfg.img_size, cfg.img_size), torch.stack([p[1] for p in seg_pairs]).float()])
            has_mask = torch.arange(len(labels)) >= len(ci)
            loss = multitask_loss(model, x, labels, masks, has_mask, losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running.append(loss.item())
        minutes = (time.perf_counter() - start) / 60
        val = score(model, cls, cls_pixels, cls_splits["val"], seg_images, seg_masks, seg_splits["val"], cfg.preprocess)
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(running)), "val_macro_f1": val["macro_f1"],
                                 "val_dice": val["dice"], "minutes": minutes})
        print(json.dumps(state["history"][-1]), flush=True)
        if val["macro_f1"] + val["dice"] >= state["best"]:
            state["best"] = val["macro_f1"] + val["dice"]
            torch.save(model.state_dict(), run_dir / "best.pt")
        state["epoch"] = epoch + 1
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "state": state}, last)
    return finish(cfg, run_dir, cls, cls_pixels, cls_splits, seg_images, seg_masks, seg_splits, state)


def score(model, cls, cls_pixels, cls_index, seg_images, seg_masks, seg_index, steps) -> dict:
    _, class_logits = evaluate(model, cls_pixels[cls_index], steps)
    mask_logits, _ = evaluate(model, seg_images[seg_index], steps)
    report = classification_report(class_logits, torch.from_numpy(cls.labels[cls_index]), cls.classes)
    return {**report, **{k: v for k, v in dice_iou(mask_logits, seg_masks[seg_index]).items() if k != "n"}}


def finish(cfg, run_dir, cls, cls_pixels, cls_splits, seg_images, seg_masks, seg_splits, state) -> Path:
    model = build_model(SegmentConfig(arch="unet", encoder=cfg.encoder), aux_classes=len(cls.classes))
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    model = model.to(memory_format=torch.channels_last)
    test = score(model, cls, cls_pixels, cls_splits["test"], seg_images, seg_masks, seg_splits["test"], cfg.preprocess)
    external = {}
    for spec in cfg.external:
        images, masks = as_tensors(read_source(spec), cfg.img_size)
        external[spec] = dice_iou(evaluate(model, images, cfg.preprocess)[0], masks)
    metrics = {"task": "multitask", "test": test, "external": external, "epochs": state["epoch"], "history": state["history"],
               "minutes_per_epoch": float(np.median([h["minutes"] for h in state["history"]])) if state["history"] else 0.0,
               "train_config": asdict(cfg)}
    config = {"architecture": "unet", "encoder_name": cfg.encoder, "in_channels": 1, "classes": 1, "aux_classes": len(cls.classes),
              "label_names": cls.classes, "mask_label": "lung",
              "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "mean": list(MEAN), "std": list(STD)},
              "cxr_demo": {"task": "multitask", "preprocess": cfg.preprocess, "threshold": 0.5}}
    card = f"""
# {cfg.name}

One U-Net ({cfg.encoder} encoder) that returns a lung mask and COVID / Normal / Viral Pneumonia probabilities in one pass.
Trained by cxr-demo's `train/multitask.py` with partial labels: masks from {", ".join(cfg.seg_data)}, classes from {cfg.cls_data}.
**A teaching demo, not a medical device.**

| test figure | value |
|---|---|
| macro F1 | {test["macro_f1"]:.4f} |
| accuracy | {test["accuracy"]:.4f} |
| lung Dice (same hospital) | {test["dice"]:.4f} |
{chr(10).join(f"| lung Dice, {k} | {v['dice']:.4f} |" for k, v in external.items())}

The classification labels carry the same pediatric/adult shortcut as the single-task classifier (all Viral Pneumonia images are
of young children from one hospital). Minutes per epoch (2-core CPU): {metrics["minutes_per_epoch"]:.2f}.
"""
    out = export_checkpoint(Path(cfg.out) / cfg.name, model.state_dict(), config, metrics, card,
                            ModelCardData(license="cc-by-nc-sa-4.0", library_name="segmentation-models-pytorch", tags=["chest-x-ray", "cxr-demo"]))
    print(json.dumps({"macro_f1": test["macro_f1"], "dice": test["dice"], "external": external}))
    return out


def parse_args(argv=None) -> MultitaskConfig:
    return parse_config(MultitaskConfig, argv, __doc__, required=("seg_data", "cls_data"))

if __name__ == "__main__":
    train(parse_args())
