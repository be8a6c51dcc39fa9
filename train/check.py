"""Train the input check: a small CNN that tells an upright frontal chest X-ray from a rotated, mirrored or inverted one,
and from things that are not chest X-rays at all (photos, documents, screenshots, noise, CT, MR).

    python -m train.check --data ../shared/data/cxr-3class \
        --init ../shared/weights-init/tf_efficientnet_lite0_imagenet.safetensors --name cxr-input-check

Positives are the training split of `--data` only; mis-oriented films are made from them on the fly, and the non-CXR
images come from `train.negatives`' training sources. The measurement suite (`python -m train.negatives --out DIR`)
uses other sources, and every external hospital in ../shared/data stays out of training, so both can measure it.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from PIL import Image
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from torchvision.transforms import v2
from tqdm import tqdm

from cxr_demo.intake.check import UPRIGHT
from cxr_demo.io.preprocess import apply_steps, normalize
from train import data as datasets
from train import negatives
from train.classify import ClassifyConfig, build_model, gaussian_grain, random_gamma
from train.engine import Export, TrainConfig, Trainer, main, predict

LABELS = [UPRIGHT, negatives.ROT_CW, negatives.UPSIDE_DOWN, negatives.ROT_CCW, negatives.MIRRORED, negatives.INVERTED,
          "not a chest X-ray"]
NOT_CXR = len(LABELS) - 1


@dataclass(kw_only=True)
class CheckConfig(TrainConfig):
    data: str
    arch: str = "tf_efficientnet_lite0"
    name: str = "cxr-input-check"
    epochs: int = 3
    weight_decay: float = 1e-5
    batch_size: int = 48
    img_size: int = 128
    per_epoch: int = 2000  # upright films, mis-oriented films and non-CXR images, each, per epoch
    negatives: int = 3000  # non-CXR training images generated once
    flag_rate: float = 0.01  # the threshold flags this share of validation chest X-rays


def augment(size: int):
    """Any scanner, crop and exposure a real upload may have; applied before a film is mis-oriented."""
    return v2.Compose([v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.7, 1.4), antialias=True),
                       v2.RandomAffine(degrees=8, translate=(0.06, 0.06)), v2.RandomApply([random_gamma(0.5, 1.8)], p=0.5),
                       v2.RandomApply([v2.ColorJitter(brightness=0.3, contrast=0.4)], p=0.5),
                       v2.RandomApply([v2.GaussianBlur(5, sigma=(0.3, 1.5))], p=0.3), v2.RandomApply([gaussian_grain(0.05)], p=0.3)])


class Mixture:
    """Each epoch: upright films, the same number mis-oriented (one random way each) and non-CXR images, shuffled."""

    def __init__(self, cxr: np.ndarray, other: np.ndarray, cfg: CheckConfig, train: bool, seed: int):
        self.cxr, self.other, self.cfg, self.train = cxr, other, cfg, train
        self.rng = np.random.default_rng(seed)
        self.augment = augment(cfg.img_size) if train else v2.Resize((cfg.img_size, cfg.img_size), antialias=True)
        self.per_kind = min(cfg.per_epoch, len(cxr)) if train else len(cxr)

    def items(self) -> list[tuple[np.ndarray, int]]:
        upright = self.rng.choice(len(self.cxr), self.per_kind, replace=False)
        turned = self.rng.choice(len(self.cxr), self.per_kind, replace=len(self.cxr) < self.per_kind)
        others = self.rng.choice(len(self.other), min(self.per_kind, len(self.other)), replace=False)
        items = [(self.cxr[i], -1) for i in turned] + [(self.cxr[i], 0) for i in upright] + [(self.other[i], NOT_CXR) for i in others]
        return [items[i] for i in self.rng.permutation(len(items))]

    def __iter__(self):
        items = self.items()
        for start in range(0, len(items), self.cfg.batch_size):
            images, labels = [], []
            for pixels, label in items[start:start + self.cfg.batch_size]:
                image = self.augment(torch.from_numpy(np.ascontiguousarray(pixels))[None])[0].numpy()
                if label == -1:  # one of the six mis-oriented versions, at random
                    image, name = negatives.misoriented(image)[self.rng.integers(0, 6)]
                    label = LABELS.index(name)
                images.append(torch.from_numpy(np.ascontiguousarray(image))[None])
                labels.append(label)
            x = normalize(apply_steps(torch.stack(images), self.cfg.preprocess), (0.5,), (0.5,))
            yield x.contiguous(memory_format=torch.channels_last), torch.tensor(labels)

    def __len__(self) -> int:
        return (3 * self.per_kind + self.cfg.batch_size - 1) // self.cfg.batch_size


def non_cxr(split: str, n: int, size: int, seed: int) -> np.ndarray:
    """`n` of `train.negatives`' images, squashed to the films' cached size (`size` x 1.25, room for the crop)."""
    images = tqdm(negatives.non_cxr_images(split, n, seed), desc=f"{split} negatives")
    return np.stack([np.asarray(Image.fromarray(image).resize((int(size * 1.25),) * 2, Image.BILINEAR)) for image, _ in images])


def probabilities(model, batches) -> tuple[torch.Tensor, torch.Tensor]:
    return predict(model, batches, lambda model, x: model(x).float().softmax(1))


def flag_report(probs: torch.Tensor, labels: torch.Tensor, threshold: float) -> dict:
    flagged = probs[:, 0] < threshold
    upright = labels == 0
    return {"threshold": threshold,
            "cxr_flagged": float(flagged[upright].float().mean()), "n_cxr": int(upright.sum()),
            "others_flagged": float(flagged[~upright].float().mean()), "n_others": int((~upright).sum()),
            "per_label_flagged": {LABELS[k]: float(flagged[labels == k].float().mean()) for k in range(len(LABELS)) if (labels == k).any()},
            "accuracy": float((probs.argmax(1) == labels).float().mean())}


def choose_threshold(probs: torch.Tensor, labels: torch.Tensor, flag_rate: float) -> float:
    """The upright probability below which an image is flagged: set so `flag_rate` of validation CXRs are flagged."""
    return float(np.clip(np.quantile(probs[labels == 0, 0].numpy(), flag_rate), 0.05, 0.5))


class CheckTrainer(Trainer):
    """Label-smoothed cross-entropy over the seven labels. The last epoch is kept, and the flag threshold is chosen on
    its validation mixture (which differs each epoch: the films are mis-oriented at random)."""

    def __init__(self, cfg: CheckConfig):
        self.cfg = cfg
        data = datasets.read_class_folders(cfg.data)
        self.splits = splits = datasets.split_80_10_10(data, seed=cfg.seed)
        pixels = np.asarray(datasets.cached_pixels(data.paths, int(cfg.img_size * 1.25)))
        other_train = non_cxr("train", cfg.negatives, cfg.img_size, cfg.seed)
        other_val = non_cxr("train", max(200, cfg.negatives // 10), cfg.img_size, cfg.seed + 1000)
        self.model = self.build_model(cfg.init)
        self.train_batches = Mixture(pixels[splits["train"]], other_train, cfg, True, cfg.seed)
        self.val_batches = Mixture(pixels[splits["val"]], other_val, cfg, False, cfg.seed + 1)
        self.steps_per_epoch = min(len(self.train_batches), cfg.max_steps or len(self.train_batches))
        self.optimizer = create_optimizer_v2(self.model, opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler, _ = create_scheduler_v2(self.optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=0,
                                                step_on_epochs=False, updates_per_epoch=self.steps_per_epoch, min_lr=cfg.lr * 0.01)
        self.last_validation: tuple[torch.Tensor, torch.Tensor] | None = None

    def build_model(self, init: str | None) -> torch.nn.Module:
        classifier = ClassifyConfig(data=self.cfg.data, arch=self.cfg.arch, init=init, drop_rate=0.2)
        return build_model(classifier, len(LABELS)).to(memory_format=torch.channels_last)

    def loss(self, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.model(x), y, label_smoothing=0.05)

    def validate(self) -> tuple[dict, float]:
        self.last_validation = probabilities(self.model, self.val_batches)
        return flag_report(*self.last_validation, 0.5), 0.0  # a constant score: best.pt is always the latest epoch

    def export(self, model, state) -> Export:
        cfg, sizes = self.cfg, {k: int(len(v)) for k, v in self.splits.items()}
        probs, labels = self.last_validation or probabilities(model, self.val_batches)  # a finished run, resumed: validate again
        threshold = choose_threshold(probs, labels, cfg.flag_rate)
        val = flag_report(probs, labels, threshold)
        metrics = {"task": "check", "val": val, "history": state["history"], "train_config": asdict(cfg),
                   "data": {"path": Path(cfg.data).name, "sizes": sizes, "negatives": "train.negatives (training sources)"}}
        config = {"architecture": cfg.arch, "num_classes": len(LABELS), "label_names": LABELS, "model_args": {"in_chans": 1},
                  "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "mean": [0.5], "std": [0.5], "crop_pct": 1.0},
                  "cxr_demo": {"task": "check", "preprocess": cfg.preprocess, "threshold": threshold}}
        body = CARD.format(name=cfg.name, arch=cfg.arch, size=cfg.img_size, labels=", ".join(LABELS), data=Path(cfg.data).name,
                           train=sizes["train"], epochs=cfg.epochs, threshold=threshold, val=json.dumps(val, indent=1))
        card = ModelCardData(license="apache-2.0", library_name="timm", tags=["chest-x-ray", "cxr-demo", "input-check"])
        return Export(config, metrics, body, card, summary=val)


CARD = """
# {name}

The input check of cxr-demo: is this an upright frontal chest X-ray? A `{arch}` at {size} px (grayscale, histogram-equalized)
with seven outputs: {labels}. An image is flagged when the upright probability is below {threshold:.3f}, chosen on
validation films; the app also flags an image in which the lung segmenter finds no lung.

## Data
Upright films: the {train} training images of `{data}`. Mis-oriented films: the same films rotated by 90°, 180° or 270°,
flipped, mirrored or inverted, made on the fly. Not chest X-rays: `train.negatives`' training sources (scikit-image and
scikit-learn sample photos, pydicom's CT and MR test files, rendered documents and screenshots, noise). Augmentation:
crops, small rotations, gamma, contrast, blur and grain. {epochs} epochs, AdamW.

## Validation (same sources as training)
```
{val}
```
The held-out suite (other photos, documents, noise and scans; mis-oriented films from other hospitals) and every
frontal chest X-ray from other hospitals in ../shared/data are measured by `python -m train.evaluate --task check`;
their figures are in metrics.json and the README.

## Limits
Lateral views were not in training (none are available offline): a lateral DICOM is flagged from its header instead.
It was trained on 224 px downscaled films; unusual films (children's, portable, heavy devices) are the likeliest false flags.
"""


train = CheckTrainer.train

if __name__ == "__main__":
    main(CheckConfig, CheckTrainer, __doc__)
