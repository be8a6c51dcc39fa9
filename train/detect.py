"""Train a torchvision Faster R-CNN on chest X-ray boxes and export it to `weights/<name>/`.

    python -m train.detect --data ../shared/data/rsna-opacity-boxes --arch fasterrcnn_mobilenet_v2_fpn \
        --init ../shared/weights-init/mobilenet_v2_imagenet.safetensors --name opacity-frcnn-mobilenetv2

    # the full RSNA Pneumonia set (Kaggle layout), same command:
    python -m train.detect --data rsna/stage_2_train_labels.csv::rsna/stage_2_train_images --init hub --fold 0 --val-fold 1

`--data` (repeatable): a folder with boxes.csv + images/, a COCO .json, `stage_2_train_labels.csv::IMAGES` (RSNA
Pneumonia) or `train_image_level.csv::IMAGES` (SIIM-FISABIO-RSNA); see `train.det_data.read_source`.
The split is a patient-grouped k-fold (`--folds`): fold `--fold` is held out and scored once at the end; with
`--val-fold` another fold picks the checkpoint (mAP@0.5), otherwise the last epoch is kept. `--folds 1` trains on all.
Preprocessing is the seed's (`cxr_demo.io.detector_input.prepare`): lung crop from the row/column profiles, then equalization.
Interrupted runs resume from `runs/<name>/last.pt`. `--init`: a torchvision ImageNet .safetensors of the backbone
(offline), `hub` (torchvision's download) or none.
"""
from __future__ import annotations

import json
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from huggingface_hub import ModelCardData
from torchmetrics.detection import MeanAveragePrecision
from torchvision import models, tv_tensors
from torchvision.transforms import v2
from tqdm import tqdm

from cxr_demo.io.detector_input import DetectPreprocess, prepare
from cxr_demo.tasks.detect import demo_warning, run_detector
from cxr_demo.zoo.detector import ARCHITECTURES, BACKBONES, DetectorSpec, backbone_network, build_detector
from train.det_data import Sample, grouped_folds, load_sample, read_source
from train.engine import Export, TrainConfig, Trainer, load_imagenet, main, progress

DEMO_TRAIN_IMAGES = 200  # below this many training images the model card and the app carry cxr_demo.tasks.detect.demo_warning
EVAL_SCORE_THRESHOLD = 0.01  # mAP ranks every candidate; torchvision's 0.05 default would cut the recall tail


@dataclass(kw_only=True)
class DetectConfig(TrainConfig):
    """`init`: backbone weights, a .safetensors file, "hub" or None. `preprocess`: "equalize" or "none"."""
    data: list[str] = field(default_factory=list)
    external: list[str] = field(default_factory=list)
    arch: str = "fasterrcnn_mobilenet_v2_fpn"
    labels: list[str] = field(default_factory=list)  # default: every label in the data, sorted
    epochs: int = 30
    lr: float = 3e-4
    batch_size: int = 4
    img_size: int = 512
    crop_max_cut: float = 0.25  # lung crop limit per side; 0 = no crop
    representation_size: int = 512  # box-head MLP width (torchvision: 1024); halves the checkpoint, speeds the CPU
    trainable_layers: int = 3  # backbone stages trained (torchvision's default for an initialised MobileNet)
    rpn_top_n_test: int = 300  # proposals kept at inference (torchvision: 1000); the box head's cost scales with it
    rpn_top_n_train: int = 500  # proposals kept in training (torchvision: 2000)
    rois_per_image: int = 128  # RoIs sampled per image for the box head's loss (torchvision: 512; 25% positive)
    folds: int = 5
    fold: int = 0
    val_fold: int = -1
    cv_metrics: list[str] = field(default_factory=list)  # metrics.json of the other folds' runs: report the k-fold mean
    workers: int = 0
    cache: int = 1  # keep prepared training images in memory (1) or prepare them each epoch (0, for big data sets)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.arch}-fold{self.fold}"


def detector_spec(cfg: DetectConfig, labels: list[str]) -> DetectorSpec:
    return DetectorSpec(arch=cfg.arch, label_names=tuple(labels), input_size=cfg.img_size,
                        representation_size=cfg.representation_size, trainable_layers=cfg.trainable_layers,
                        frozen_bn=cfg.init not in (None, "none"), rpn_pre_nms_top_n_test=cfg.rpn_top_n_test,
                        rpn_post_nms_top_n_test=cfg.rpn_top_n_test, rpn_pre_nms_top_n_train=2 * cfg.rpn_top_n_train,
                        rpn_post_nms_top_n_train=cfg.rpn_top_n_train, box_batch_size_per_image=cfg.rois_per_image)


def build_model(cfg: DetectConfig, labels: list[str]) -> torch.nn.Module:
    if cfg.arch not in ARCHITECTURES:
        raise SystemExit(f"--arch must be one of {', '.join(ARCHITECTURES)}; got {cfg.arch!r}")
    spec = detector_spec(cfg, labels)
    network = backbone_network(spec)
    if cfg.init == "hub":
        network.load_state_dict(models.get_model_weights(BACKBONES[cfg.arch]).DEFAULT.get_state_dict(progress=False))
    elif cfg.init not in (None, "none"):
        load_imagenet(network, cfg.init)
    return build_detector(spec, network)


def augmentation() -> v2.Transform:
    """Box-aware: torchvision moves the BoundingBoxes with the image and drops boxes squeezed out of it."""
    return v2.Compose([v2.RandomHorizontalFlip(0.5), v2.RandomAffine(degrees=5, translate=(0.05, 0.05), scale=(0.9, 1.1)),
                       v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5), v2.SanitizeBoundingBoxes(min_size=4)])


class BoxDataset(torch.utils.data.Dataset):
    """Samples prepared exactly as the app prepares an upload, as (image, target) pairs for torchvision's detector."""

    def __init__(self, samples: list[Sample], options: DetectPreprocess, labels: list[str], transform=None, cache: bool = True):
        self.samples, self.options, self.transform = samples, options, transform
        self.index = {name: i + 1 for i, name in enumerate(labels)}  # 0 is torchvision's background
        self.cache: dict[int, tuple] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def prepared(self, i: int) -> tuple[tv_tensors.Image, dict]:
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        sample = self.samples[i]
        pixels, boxes = load_sample(sample)
        prepared = prepare(pixels, self.options, boxes)
        item = (tv_tensors.Image(prepared.image),
                {"boxes": prepared.boxes, "labels": torch.tensor([self.index[n] for n in sample.labels], dtype=torch.int64)})
        if self.cache is not None:
            self.cache[i] = item
        return item

    def __getitem__(self, i: int):
        image, target = self.prepared(i)
        if self.transform is not None:
            image, target = self.transform(image, target)
        x = image.as_subclass(torch.Tensor).float().div(255.0).expand(3, -1, -1)
        return x, {"boxes": target["boxes"].as_subclass(torch.Tensor).reshape(-1, 4), "labels": target["labels"]}


def collate(batch):
    return tuple(zip(*batch))


def score(module, samples: list[Sample], options: DetectPreprocess, labels: list[str]) -> dict:
    """mAP@0.5 and mAP@[.5:.95] (torchmetrics, COCO definitions) with predictions moved back to each image's own
    pixels, so whatever the crop cut off counts against the model."""
    index = {name: i + 1 for i, name in enumerate(labels)}
    metric = MeanAveragePrecision(iou_type="bbox")
    for sample in tqdm(samples, desc="score", unit="img", leave=False, file=sys.stderr):
        pixels, boxes = load_sample(sample)
        output = run_detector(module, [prepare(pixels, options)], EVAL_SCORE_THRESHOLD, 0.5)[0]
        metric.update([{k: output[k] for k in ("boxes", "scores", "labels")}],
                      [{"boxes": boxes, "labels": torch.tensor([index.get(n, 0) for n in sample.labels], dtype=torch.int64)}])
    result = metric.compute()
    return {"map50": float(result["map_50"]), "map": float(result["map"]), "n": len(samples),
            "n_boxes": sum(len(s.boxes) for s in samples)}


def split(samples: list[Sample], cfg: DetectConfig) -> dict[str, np.ndarray]:
    if cfg.folds <= 1:
        return {"train": np.arange(len(samples)), "val": np.array([], int), "test": np.array([], int)}
    folds = grouped_folds(samples, cfg.folds, cfg.seed)
    return {"train": np.flatnonzero(~np.isin(folds, [cfg.fold, cfg.val_fold])),
            "val": np.flatnonzero(folds == cfg.val_fold), "test": np.flatnonzero(folds == cfg.fold)}


class DetectTrainer(Trainer):
    """torchvision's summed detection losses, gradients clipped at norm 10; best.pt on validation mAP@0.5 when there is
    a validation fold, else the last epoch."""

    max_grad_norm = 10.0

    def __init__(self, cfg: DetectConfig):
        self.cfg = cfg
        self.samples = [s for spec in cfg.data for s in read_source(spec)]
        self.labels = cfg.labels or sorted({label for s in self.samples for label in s.labels})
        self.parts = split(self.samples, cfg)
        self.options = DetectPreprocess(cfg.img_size, cfg.preprocess == "equalize", cfg.crop_max_cut)
        self.generator = torch.Generator()
        dataset = BoxDataset(self.subset("train"), self.options, self.labels, augmentation(), bool(cfg.cache))
        self.train_batches = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, collate_fn=collate,
                                                  num_workers=cfg.workers, generator=self.generator)
        self.model = self.build_model(cfg.init)
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=cfg.lr,
                                           weight_decay=cfg.weight_decay)
        self.steps_per_epoch = min(len(self.train_batches), cfg.max_steps or len(self.train_batches))
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, cfg.lr, total_steps=cfg.epochs * self.steps_per_epoch,
                                                             pct_start=0.1)

    def subset(self, part: str) -> list[Sample]:
        return [self.samples[i] for i in self.parts[part]]

    def build_model(self, init: str | None) -> torch.nn.Module:
        return build_model(replace(self.cfg, init=init), self.labels)

    def start_epoch(self, epoch: int) -> None:
        # a resumed run draws the same order and augmentations as an uninterrupted one
        torch.manual_seed(self.cfg.seed + epoch)
        self.generator.manual_seed(self.cfg.seed + epoch)
        self.model.train()

    def loss(self, batch) -> torch.Tensor:
        images, targets = batch
        return sum(self.model(list(images), list(targets)).values())

    def score(self, model, part: str) -> dict | None:
        return score(model, self.subset(part), self.options, self.labels) if len(self.parts[part]) else None

    def validate(self) -> tuple[dict, float]:
        val = self.score(self.model, "val")
        return ({"val": val}, val["map50"]) if val else ({}, -1.0)

    def export(self, model, state) -> Export:
        cfg, samples, parts = self.cfg, self.samples, self.parts
        n_train = len(parts["train"])
        test = self.score(model, "test")
        metrics = {
            "task": "detect",
            "test": test,
            "val": self.score(model, "val"),
            "external": {spec: score(model, read_source(spec), self.options, self.labels) for spec in cfg.external},
            "cross_validation": cross_validation(test, cfg.cv_metrics) if cfg.cv_metrics else None,
            **progress(state),
            "data": {"sources": cfg.data, "split": f"GroupKFold({cfg.folds}) by patient, seed {cfg.seed}: fold {cfg.fold} held out"
                     + (f", fold {cfg.val_fold} validation" if len(parts["val"]) else ", no validation (last epoch kept)"),
                     "sizes": {k: int(len(v)) for k, v in parts.items()},
                     "boxes": {k: sum(len(samples[i].boxes) for i in v) for k, v in parts.items()},
                     "held_out": [samples[i].image.name for i in parts["test"]]},
            "train_config": asdict(cfg),
        }
        config = {
            "architecture": cfg.arch, "label_names": self.labels, "detector": detector_spec(cfg, self.labels).to_dict(),
            "pretrained_cfg": {"input_size": [3, cfg.img_size, cfg.img_size], "mean": list(model.transform.image_mean),
                               "std": list(model.transform.image_std)},
            "cxr_demo": {"task": "detect", "preprocess": cfg.preprocess, "crop_max_cut": cfg.crop_max_cut,
                         "demo": n_train < DEMO_TRAIN_IMAGES, "train_images": n_train},
        }
        card_data = ModelCardData(license="other", library_name="torchvision", pipeline_tag="object-detection",
                                  tags=["chest-x-ray", "cxr-demo", "not-a-medical-device", "faster-rcnn"])
        return Export(config, metrics, model_card(cfg, cfg.run_name, metrics, self.labels), card_data,
                      summary={"test": metrics["test"], "val": metrics["val"], "external": metrics["external"]})


def cross_validation(own: dict | None, others: list[str]) -> dict:
    """This fold's held-out figures with those of the other folds' runs: every image is held out exactly once."""
    folds = ([own] if own else []) + [json.loads(Path(p).read_text())["test"] for p in others]
    summary = {"folds": folds, "k": len(folds), "n": sum(f["n"] for f in folds), "n_boxes": sum(f["n_boxes"] for f in folds)}
    for key in ("map50", "map"):
        values = [f[key] for f in folds]
        summary |= {f"mean_{key}": float(np.mean(values)), f"std_{key}": float(np.std(values))}
    return summary


def model_card(cfg: DetectConfig, name: str, metrics: dict, labels: list[str]) -> str:
    sizes, boxes = metrics["data"]["sizes"], metrics["data"]["boxes"]
    rows = [(label, metrics[key]) for label, key in (("held-out fold (test)", "test"), ("validation fold", "val")) if metrics[key]]
    rows += [(spec, m) for spec, m in metrics["external"].items()]
    table = "\n".join(f"| {label} | {m['map50']:.3f} | {m['map']:.3f} | {m['n']} | {m['n_boxes']} |" for label, m in rows)
    cv = metrics["cross_validation"]
    if cv:
        table += (f"\n| {cv['k']}-fold mean ± sd (each image held out once, one model per fold) | {cv['mean_map50']:.3f} ± {cv['std_map50']:.3f} "
                  f"| {cv['mean_map']:.3f} ± {cv['std_map']:.3f} | {cv['n']} | {cv['n_boxes']} |")
    demo = f"\n> **{demo_warning(sizes['train'])}**\n" if sizes["train"] < DEMO_TRAIN_IMAGES else ""
    return f"""
# {name}

A torchvision Faster R-CNN (`{cfg.arch}`, box head {cfg.representation_size}) that draws boxes on frontal chest
X-rays, trained by cxr-demo's `train/detect.py` on {", ".join(cfg.data)}. **A teaching demo, not a medical device.**
{demo}
## Training
{sizes["train"]} training images ({boxes["train"]} boxes). Split: {metrics["data"]["split"]}; held-out images:
{", ".join(metrics["data"]["held_out"]) or "none"}. Backbone init: {cfg.init or "random"} ({cfg.trainable_layers} trainable
stages, frozen batch-norm statistics when initialised). AdamW lr {cfg.lr} (one-cycle), weight decay {cfg.weight_decay},
{cfg.epochs} epochs, batch {cfg.batch_size}, longest side {cfg.img_size} px. Preprocessing (shared with the app,
`cxr_demo.io.detector_input.prepare`): lung crop from the row/column mean profiles (at most {cfg.crop_max_cut:.0%} off each side),
then `{cfg.preprocess}`. Box-aware augmentation: horizontal flip, rotation ±5°, shift, scale, brightness/contrast.
Minutes per epoch (2-core CPU, shared): {metrics["minutes_per_epoch"]:.2f}.

## Results (torchmetrics mean average precision, COCO definitions; predictions in the original image's pixels)
| set | mAP@0.5 | mAP@[.5:.95] | images | boxes |
|---|---|---|---|---|
{table}

With a handful of held-out images these figures move a lot with one box; they show the pipeline works, not how well
a detector trained on the full data set would do. The same command trains one on all 26,684 RSNA images.

## Intended use and limits
Teaching and demonstration of box detection on chest X-rays. Labels: {", ".join(labels)}.
Not validated on any population; expect missed findings and false boxes. Not for clinical use.
"""


def evaluate_detector(model_name: str, data_dir: Path, only_held_out: bool = False) -> dict:
    """mAP of a zoo detector on a detection folder (any `--data` form), through the app's own predictor.
    `only_held_out` keeps the images the model's metrics.json lists as held out (its training data is the rest)."""
    from cxr_demo import zoo
    from cxr_demo.io import read_xray
    from cxr_demo.tasks import detect

    samples = read_source(str(data_dir))
    if only_held_out:
        held = set((zoo.metrics(model_name) or {}).get("data", {}).get("held_out", []))
        samples = [s for s in samples if s.image.name in held]
    labels = list(DetectorSpec.from_dict(zoo.load(model_name).config["detector"]).label_names)
    metric = MeanAveragePrecision(iou_type="bbox")
    for sample in tqdm(samples, desc="evaluate", unit="img", file=sys.stderr):
        xray = read_xray(sample.image)
        result = detect.predict(xray, model_name, score_threshold=EVAL_SCORE_THRESHOLD)
        width, height = sample.label_size or (xray.meta.width, xray.meta.height)
        to_label_grid = torch.tensor([width / xray.meta.width, height / xray.meta.height] * 2)
        metric.update([{"boxes": torch.tensor([b.xyxy for b in result.boxes]).reshape(-1, 4) * to_label_grid,
                        "scores": torch.tensor([b.score for b in result.boxes]),
                        "labels": torch.tensor([labels.index(b.label) + 1 for b in result.boxes], dtype=torch.int64)}],
                      [{"boxes": torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor([labels.index(n) + 1 if n in labels else 0 for n in sample.labels], dtype=torch.int64)}])
    result = metric.compute()
    return {"model": model_name, "task": "detect", "data": str(data_dir), "n": len(samples),
            "map50": float(result["map_50"]), "map": float(result["map"])}


train = DetectTrainer.train

if __name__ == "__main__":
    main(DetectConfig, DetectTrainer, __doc__, required=("data",))
