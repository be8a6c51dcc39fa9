"""Train a LiT-style CLIP (locked pretrained text tower, ImageNet-initialised image tower) on a class-folder dataset.

    python -m train.clip --data ../shared/data/cxr-3class \
        --init ../shared/weights-init/tf_efficientnet_lite0_imagenet.safetensors --name cxr-lit-effnet-minilm

Captions are sampled per image from many report-like phrasings of its class (train/captions.py). The text transformer
is frozen (LiT), so its pooled features are computed once; the image tower, both projections and the logit scale train.
Several images in a batch share a class, so the contrastive loss treats every caption of the same class as a positive.
"""
from __future__ import annotations

import json
import random
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2

from cxr_demo.tasks.metrics import classification_report
from cxr_demo.zoo import clip_model
from train import data as datasets
from train.captions import caption_bank, sample_captions
from train.classify import (AUGMENT_NOTES, between_class_spread, counterfactual_batches, lungs_removed_accuracy, no_class_loss,
                            selection_score, train_augment, validation_blanks)
from train.data import Batches, endless
from train.engine import Export, TrainConfig, Trainer, load_imagenet, main, predict

MEAN, STD = (0.5,), (0.5,)  # EfficientNet-Lite's normalisation


@dataclass(kw_only=True)
class ClipConfig(TrainConfig):
    """`init`: ImageNet .safetensors for the image tower, or a zoo LiT folder (weights/<name>) to fine-tune."""
    data: str
    image_arch: str = "tf_efficientnet_lite0"
    text_tower: str = clip_model.MINILM
    name: str = "cxr-lit-effnet-minilm"
    embed_dim: int = 256
    epochs: int = 5
    lr: float = 3e-4
    head_lr: float = 1e-3
    batch_size: int = 32
    crop: str = "none"  # "lungs": the image tower reads the lung box from the zoo's segmenter, as the classifier does
    counterfactual: float = 0.0  # share of each batch added as lungs-blanked crops taught to match no class (train.classify's penalty)
    counterfactual_weight: float = 1.0
    blind_weight: float = 0.0  # of the between-class spread of the blanked crops' class scores (train.classify's --blind-weight)
    shortcut_bar: float | None = None  # best.pt on val macro-F1 less how far val lungs-removed accuracy exceeds this
    blank_fills: str = "median"  # train.classify's --blank-fills
    augment: str = "standard"  # train.classify's --augment: "site" adds gamma, grain and JPEG, which a film from elsewhere brings


@torch.no_grad()
def pooled_text_features(model, tokenizer, captions: list[str]) -> torch.Tensor:
    """The locked text tower's pooled output for every caption, before the trainable projection."""
    model.text.eval()
    tokens = tokenizer(captions)
    mask = (tokens != model.text.config.pad_token_id).long()
    return model.text.pooler(model.text.transformer(input_ids=tokens, attention_mask=mask), mask)


def multi_positive_clip_loss(image_features, text_features, labels, logit_scale) -> torch.Tensor:
    """Symmetric InfoNCE where every pair of the same class is a positive (soft targets), not only the diagonal."""
    logits = logit_scale * image_features @ text_features.T
    same = (labels[:, None] == labels[None, :]).float()
    targets = same / same.sum(1, keepdim=True)
    return (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2


def encode_images(model, x: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.encode_image(x.expand(-1, 3, -1, -1)), dim=-1)


class ClipTrainer(Trainer):
    """Multi-positive InfoNCE against sampled captions; best.pt on validation macro-F1 with the captions' class means.
    The export is open_clip's local-dir layout, scored per prompt preset through the app's own zero-shot path."""

    def __init__(self, cfg: ClipConfig):
        self.cfg = cfg
        self.data = data = datasets.read_class_folders(cfg.data)
        self.splits = datasets.split_80_10_10(data, seed=cfg.seed)
        pixels = datasets.training_pixels(data.paths, cfg.img_size, cfg.crop)
        self.model = model = self.build_model(cfg.init)
        captions, self.caption_labels = caption_bank(data.classes)
        self.pooled = pooled_text_features(model, open_clip_tokenizer(cfg), captions)
        print(f"{len(captions)} captions for {len(data.classes)} classes; {len(self.splits['train'])} training images")
        heads = [*model.text.proj.parameters(), model.logit_scale, *model.visual.head.parameters()]
        self.optimizer = create_optimizer_v2([{"params": list(model.visual.trunk.parameters()), "lr": cfg.lr},
                                              {"params": heads, "lr": cfg.head_lr}], opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.train_batches = Batches(pixels, data.labels, self.splits["train"], cfg.batch_size, train_augment(cfg.img_size, cfg.preprocess, cfg.augment),
                                     MEAN, STD, shuffle=True, seed=cfg.seed)
        self.steps_per_epoch = min(len(self.train_batches), cfg.max_steps or len(self.train_batches))
        self.scheduler, _ = create_scheduler_v2(self.optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=1,
                                                step_on_epochs=False, updates_per_epoch=self.steps_per_epoch, min_lr=cfg.lr * 0.01,
                                                warmup_lr=cfg.lr * 0.1)
        self.val_batches = datasets.evaluation_batches(pixels, data.labels, self.splits["val"], cfg.preprocess, MEAN, STD)
        self.blanked = validation_blanks(cfg, data)
        self.val_blanked = None if self.blanked is None else datasets.evaluation_batches(
            self.blanked, data.labels, self.splits["val"], cfg.preprocess, MEAN, STD)
        self.counterfactuals = counterfactual_batches(cfg, data, self.splits, self.train_batches, self.blanked)
        self.rng: random.Random | None = None  # caption sampling, seeded by the epoch a run starts (or resumes) at

    def build_model(self, init: str | None) -> torch.nn.Module:
        cfg = self.cfg
        model = clip_model.build(clip_model.lit_model_cfg(cfg.image_arch, cfg.img_size, cfg.embed_dim, cfg.text_tower),
                                 text_pretrained=True)
        if init and (Path(init) / "model.safetensors").is_file():
            model.load_state_dict({k: v.float() for k, v in load_file(Path(init) / "model.safetensors").items()})
        elif init:
            load_imagenet(model.visual.trunk, init)
        model.text.transformer.requires_grad_(False)  # LiT: the pretrained text tower is locked
        return model.to(memory_format=torch.channels_last)

    def start_epoch(self, epoch: int) -> None:
        self.model.train()
        self.model.text.eval()

    def batches(self, epoch: int):
        self.rng = self.rng or random.Random(self.cfg.seed + epoch)
        return zip(self.train_batches, endless(self.counterfactuals, with_labels=True))

    def loss(self, batch) -> torch.Tensor:
        (x, y), blanked = batch
        blanked, blanked_labels = blanked or (None, None)
        chosen = torch.tensor(sample_captions(self.caption_labels, y.tolist(), self.rng))
        scale = self.model.logit_scale.exp().clamp(max=100)
        if blanked is None:
            text = F.normalize(self.model.text.proj(self.pooled[chosen]), dim=-1)
            return multi_positive_clip_loss(encode_images(self.model, x), text, y, scale)
        captions = self.caption_embeddings()  # projected once: the chosen captions and the class means both come from it
        images = encode_images(self.model, torch.cat([x, blanked]))
        films, counterfactual = images[: len(x)], images[len(x):]
        scores = scale * counterfactual @ self.class_embeddings(captions).T
        return (multi_positive_clip_loss(films, captions[chosen], y, scale) + self.cfg.counterfactual_weight * no_class_loss(scores)
                + self.cfg.blind_weight * between_class_spread(scores, blanked_labels))

    def caption_embeddings(self) -> torch.Tensor:
        """Every training caption through the trainable projection, normalised."""
        return F.normalize(self.model.text.proj(self.pooled), dim=-1)

    def class_embeddings(self, captions: torch.Tensor | None = None) -> torch.Tensor:
        """Each class: the mean of its captions' embeddings."""
        text = self.caption_embeddings() if captions is None else captions
        of_class = torch.tensor(self.caption_labels)
        return F.normalize(torch.stack([text[of_class == c].mean(0) for c in range(len(self.data.classes))]), dim=-1)

    def validate(self) -> tuple[dict, float]:
        with torch.no_grad():
            classes = self.class_embeddings()
        def class_scores(model, x):
            return model.logit_scale.exp() * encode_images(model, x) @ classes.T

        logits, labels = predict(self.model, self.val_batches, class_scores)
        fields = {"val_macro_f1": classification_report(logits, labels, self.data.classes)["macro_f1"]}
        if self.val_blanked is not None:
            removed, labels = predict(self.model, self.val_blanked, class_scores)
            fields["val_lungs_removed_accuracy"] = lungs_removed_accuracy(removed, labels, self.data.classes)
        return fields, selection_score(fields["val_macro_f1"], fields.get("val_lungs_removed_accuracy"), self.cfg.shortcut_bar)

    def export(self, model, state) -> Export:
        cfg, history = self.cfg, state["history"]
        config = {"architecture": "open_clip", "label_names": self.data.classes, "image_arch": cfg.image_arch, "text_tower": cfg.text_tower,
                  "cxr_demo": {"task": "zeroshot", "preprocess": cfg.preprocess, "crop": cfg.crop, "input_size": cfg.img_size,
                               "mean": list(MEAN), "std": list(STD)}}
        metrics = {"task": "zeroshot", "test": {}, "epochs": state["epoch"], "history": history,
                   "minutes_per_epoch": float(np.mean([h["minutes"] for h in history])) if history else None,
                   "train_config": asdict(cfg)}
        return Export(config, metrics, *model_card(cfg, self.data.classes))

    def after_export(self, out: Path, export: Export) -> None:
        """open_clip's files beside the weights, then every prompt preset scored on the test split."""
        from cxr_demo import zoo
        from train.evaluate import evaluate_zeroshot  # scores through the app's own zero-shot path

        cfg, data = self.cfg, self.data
        write_open_clip_files(cfg, out)
        spec = zoo.ModelSpec(cfg.name, "zeroshot", "open_clip", f"local:{out.resolve()}", tuple(data.classes), cfg.img_size, MEAN, STD)
        test = self.splits["test"]
        export.metrics["test"] = evaluate_zeroshot(zoo.Zoo([spec]).load(cfg.name), [data.paths[i] for i in test],
                                                   [data.classes[data.labels[i]] for i in test])
        (out / "metrics.json").write_text(json.dumps(export.metrics, indent=2) + "\n")
        export.summary = {name: {k: r[k] for k in ("macro_f1", "accuracy")} for name, r in export.metrics["test"].items()}


def open_clip_tokenizer(cfg: ClipConfig):
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(clip_model.text_tower_source(cfg.text_tower), context_length=64)


def write_open_clip_files(cfg: ClipConfig, out: Path) -> None:
    text_source = Path(clip_model.text_tower_source(cfg.text_tower))
    open_clip_config = {"model_cfg": clip_model.lit_model_cfg(cfg.image_arch, cfg.img_size, cfg.embed_dim, cfg.text_tower),
                        "preprocess_cfg": {"mean": list(MEAN) * 3, "std": list(STD) * 3}}
    (out / "open_clip_config.json").write_text(json.dumps(open_clip_config, indent=2) + "\n")
    (out / "text").mkdir(exist_ok=True)
    shutil.copy(text_source / "config.json", out / "text" / "config.json")
    for name in clip_model.TOKENIZER_FILES:
        shutil.copy(text_source / name, out / name)


def counterfactual_flags(cfg: ClipConfig) -> str:
    bar = f" --shortcut-bar {cfg.shortcut_bar:g}" if cfg.shortcut_bar is not None else ""
    if cfg.counterfactual <= 0:
        return bar
    return (f" --counterfactual {cfg.counterfactual:g} --counterfactual-weight {cfg.counterfactual_weight:g}"
            + (f" --blind-weight {cfg.blind_weight:g}" if cfg.blind_weight else "")
            + (f" --blank-fills {cfg.blank_fills}" if cfg.blank_fills != "median" else "") + bar + f" --lr {cfg.lr:g} --head-lr {cfg.head_lr:g}")


def augment_flag(cfg: ClipConfig) -> str:
    return f" --augment {cfg.augment}" if cfg.augment != "standard" else ""


def penalty_notes(cfg: ClipConfig) -> str:
    blind = (f" Plus {cfg.blind_weight:g} x the between-class variance of those crops' centred class scores (`--blind-weight`): on "
             "average their answer may not depend on their class." if cfg.blind_weight and cfg.counterfactual > 0 else "")
    bar = (f" The checkpoint is chosen on validation macro-F1 less whatever the validation accuracy with the lungs removed exceeds "
           f"{cfg.shortcut_bar:g} (`--shortcut-bar`)." if cfg.shortcut_bar is not None else "")
    return blind + bar


def model_card(cfg: ClipConfig, classes: list[str]) -> tuple[str, ModelCardData]:
    crop_flag = "" if cfg.crop == "none" else f" --crop {cfg.crop}"  # the lung crop is part of the model: say it
    body = f"""
# {cfg.name}

A LiT-style CLIP for the cxr-demo prompt playground: an {cfg.image_arch} image tower (ImageNet init) trained
contrastively against a **locked** `{cfg.text_tower}` text tower on `cxr-3class` ({", ".join(classes)}).
**A teaching demo, not a medical device.**

## What "zero-shot" means here
This model **has seen these three concepts in training**, described in many report-like phrasings (train/captions.py).
For it, zero-shot means *free-text prompts on unseen images*, not unseen diseases. Ask it about pneumothorax or
cardiomegaly and it will answer with confidence and without knowledge.

## Training
`python -m train.clip --data {cfg.data} --init {cfg.init} --name {cfg.name} --epochs {cfg.epochs}{crop_flag}{counterfactual_flags(cfg)}{augment_flag(cfg)}`: AdamW, image tower lr {cfg.lr},
projections and logit scale lr {cfg.head_lr}, cosine schedule, batch {cfg.batch_size}, {cfg.img_size} px, preprocessing `{cfg.preprocess}`,
the classifier's augmentation{AUGMENT_NOTES.get(cfg.augment, "")}, seeded 80/10/10 split (the classifier's split), checkpoint chosen on validation macro-F1 with the
training captions' class means. Loss: symmetric InfoNCE with every same-class caption a positive.{f" Plus, weighted {cfg.counterfactual_weight:g}, cross-entropy against the uniform distribution for lungs-blanked crops (a share of {cfg.counterfactual:g} of each batch) scored against the class embeddings: with the lungs gone, no class may fit." if cfg.counterfactual > 0 else ""}{penalty_notes(cfg)}

Results per prompt preset (test split, never trained on) are in `metrics.json`; reproduce them with
`python -m train.evaluate --task zeroshot --model {cfg.name} --data {cfg.data} --split test --prompts clinical --json`.

## Load it
`open_clip.create_model_and_transforms("local-dir:weights/{cfg.name}")` (fetches the text tower's config from the Hub by name), or offline
`cxr_demo.zoo.clip_model.build_from_folder(...)`, which builds the text tower from `text/config.json`.

## Limits
Three classes, one dataset, with the pediatric shortcut of cxr-3class (every Viral Pneumonia image is of a young child).
Prompts outside these concepts get arbitrary answers; the probabilities depend on the temperature you choose.
"""
    return body, ModelCardData(library_name="open_clip", license="apache-2.0", pipeline_tag="zero-shot-image-classification",
                               tags=["chest-x-ray", "cxr-demo", "clip", "not-a-medical-device"])


train = ClipTrainer.train

if __name__ == "__main__":
    main(ClipConfig, ClipTrainer, __doc__)
