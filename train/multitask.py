"""Train one U-Net for lung masks and COVID / Normal / Viral Pneumonia at once (the seeds' multi-task U-Net).

    python -m train.multitask --seg-data ../shared/data/lung-masks/shenzhen --cls-data ../shared/data/cxr-3class \
        --init ../shared/weights-init/mobilenet_v2_imagenet.safetensors --name multitask-unet-mobilenetv2

The encoder is shared by smp's mask decoder and its classification head (`aux_params`). Labels are partial: lung-mask
images have no class, class images have no mask, so each loss is masked to the samples that carry its label, and the
decoder only runs on samples with a mask.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData

from cxr_demo.io.preprocess import normalize
from cxr_demo.tasks.metrics import classification_report
from train import data as datasets
from train.classify import train_augment
from train.engine import Export, TrainConfig, Trainer, main, progress
from train.segment import (MEAN, STD, SegmentConfig, as_tensors, build_model, dice_iou, joint_augment, predict_logits, read_source,
                           split_index)

NO_CLASS = -1


@dataclass(kw_only=True)
class MultitaskConfig(TrainConfig):
    seg_data: list[str] = field(default_factory=list)
    cls_data: str = ""
    external: list[str] = field(default_factory=list)
    encoder: str = "mobilenet_v2"
    name: str = "multitask-unet"
    epochs: int = 6
    cls_batch: int = 16
    seg_batch: int = 4


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


class MultitaskTrainer(Trainer):
    """Each step: `cls_batch` class images and `seg_batch` mask images; best.pt on validation macro-F1 + Dice."""

    def __init__(self, cfg: MultitaskConfig):
        self.cfg = cfg
        self.cls = datasets.read_class_folders(cfg.cls_data)
        self.cls_splits = datasets.split_80_10_10(self.cls, seed=cfg.seed)
        self.cls_pixels = torch.from_numpy(np.asarray(datasets.cached_pixels(self.cls.paths, cfg.img_size)))[:, None]
        self.seg_images, self.seg_masks = as_tensors([p for s in cfg.seg_data for p in read_source(s)], cfg.img_size)
        self.seg_splits = split_index(len(self.seg_images), cfg.seed)
        self.model = self.build_model(cfg.init)
        self.losses = (smp.losses.DiceLoss("binary"), smp.losses.SoftBCEWithLogitsLoss())
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.steps_per_epoch = min(len(self.cls_splits["train"]) // cfg.cls_batch, cfg.max_steps or 10**9)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
                                                             pct_start=0.1)
        self.cls_aug, self.seg_aug = train_augment(cfg.img_size, cfg.preprocess), joint_augment(cfg.img_size, cfg.preprocess)
        self.rng = np.random.default_rng(cfg.seed)

    def build_model(self, init: str | None) -> torch.nn.Module:
        model = build_model(SegmentConfig(arch="unet", encoder=self.cfg.encoder, init=init), aux_classes=len(self.cls.classes))
        return model.to(memory_format=torch.channels_last)

    def batches(self, epoch: int):
        cfg, size = self.cfg, self.cfg.img_size
        order = self.rng.permutation(self.cls_splits["train"])
        for step in range(self.steps_per_epoch):
            ci = order[step * cfg.cls_batch:(step + 1) * cfg.cls_batch]
            si = self.rng.choice(self.seg_splits["train"], cfg.seg_batch)
            seg_pairs = [self.seg_aug(self.seg_images[i], self.seg_masks[i]) for i in si]
            images = torch.stack([self.cls_aug(self.cls_pixels[i]) for i in ci] + [p[0] for p in seg_pairs])
            x = normalize(images, MEAN, STD).contiguous(memory_format=torch.channels_last)
            labels = torch.cat([torch.from_numpy(self.cls.labels[ci]), torch.full((len(si),), NO_CLASS)])
            masks = torch.cat([torch.zeros(len(ci), 1, size, size), torch.stack([p[1] for p in seg_pairs]).float()])
            yield x, labels, masks, torch.arange(len(labels)) >= len(ci)

    def loss(self, batch) -> torch.Tensor:
        return multitask_loss(self.model, *batch, self.losses)

    def score(self, model, part: str) -> dict:
        _, class_logits = predict_logits(model, self.cls_pixels[self.cls_splits[part]], self.cfg.preprocess, 32)
        mask_logits, _ = predict_logits(model, self.seg_images[self.seg_splits[part]], self.cfg.preprocess, 32)
        report = classification_report(class_logits, torch.from_numpy(self.cls.labels[self.cls_splits[part]]), self.cls.classes)
        dice = dice_iou(mask_logits, self.seg_masks[self.seg_splits[part]])
        return {**report, "dice": dice["dice"], "iou": dice["iou"]}

    def validate(self) -> tuple[dict, float]:
        val = self.score(self.model, "val")
        return {"val_macro_f1": val["macro_f1"], "val_dice": val["dice"]}, val["macro_f1"] + val["dice"]

    def export(self, model, state) -> Export:
        cfg, classes = self.cfg, self.cls.classes
        test = self.score(model, "test")
        external = {}
        for spec in cfg.external:
            images, masks = as_tensors(read_source(spec), cfg.img_size)
            external[spec] = dice_iou(predict_logits(model, images, cfg.preprocess, 32)[0], masks)
        metrics = {"task": "multitask", "test": test, "external": external, **progress(state), "train_config": asdict(cfg)}
        config = {"architecture": "unet", "encoder_name": cfg.encoder, "in_channels": 1, "classes": 1, "aux_classes": len(classes),
                  "label_names": classes, "mask_label": "lung",
                  "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "mean": list(MEAN), "std": list(STD)},
                  "cxr_demo": {"task": "multitask", "preprocess": cfg.preprocess, "threshold": 0.5}}
        card_data = ModelCardData(license="cc-by-nc-sa-4.0", library_name="segmentation-models-pytorch", tags=["chest-x-ray", "cxr-demo"])
        return Export(config, metrics, model_card(cfg, test, external, metrics["minutes_per_epoch"]), card_data,
                      summary={"macro_f1": test["macro_f1"], "dice": test["dice"], "external": external})


def model_card(cfg: MultitaskConfig, test: dict, external: dict, minutes_per_epoch: float) -> str:
    return f"""
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
of young children from one hospital). Minutes per epoch (2-core CPU): {minutes_per_epoch:.2f}.
"""


train = MultitaskTrainer.train

if __name__ == "__main__":
    main(MultitaskConfig, MultitaskTrainer, __doc__, required=("seg_data", "cls_data"))
