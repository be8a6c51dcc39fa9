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
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from safetensors.torch import load_file
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from tqdm import tqdm

from cxr_demo.zoo import clip_model
from cxr_demo.io.preprocess import apply_steps
from train import data as datasets
from train.captions import caption_bank, sample_captions
from train.classify import Batches, train_augment
from train.cli import parse_config, start_run
from train.export import export_checkpoint
from cxr_demo.tasks.metrics import classification_report

MEAN, STD = (0.5,), (0.5,)  # EfficientNet-Lite's normalisation


@dataclass
class ClipConfig:
    data: str
    image_arch: str = "tf_efficientnet_lite0"
    text_tower: str = clip_model.MINILM
    init: str | None = None  # ImageNet .safetensors for the image tower
    name: str = "cxr-lit-effnet-minilm"
    embed_dim: int = 256
    epochs: int = 5
    lr: float = 3e-4
    head_lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 32
    img_size: int = 224
    preprocess: str = "equalize"
    crop: str = "none"  # "lungs": the image tower reads the lung box from the zoo's segmenter, as the classifier does
    seed: int = 0
    out: str = "weights"
    runs: str = "runs"
    max_steps: int | None = None
    threads: int | None = None


def build_model(cfg: ClipConfig) -> torch.nn.Module:
    model = clip_model.build(clip_model.lit_model_cfg(cfg.image_arch, cfg.img_size, cfg.embed_dim, cfg.text_tower), text_pretrained=True)
    if cfg.init:
        state = {k: v for k, v in load_file(cfg.init).items() if not k.startswith("classifier.")}
        missing, unexpected = model.visual.trunk.load_state_dict(state, strict=False)
        if unexpected or [k for k in missing if not k.startswith("classifier")]:
            raise SystemExit(f"--init {cfg.init} does not fit {cfg.image_arch}: missing {missing[:3]}, unexpected {unexpected[:3]}")
    model.text.transformer.requires_grad_(False)  # LiT: the pretrained text tower is locked
    return model.to(memory_format=torch.channels_last)


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


@torch.inference_mode()
def zero_shot_logits(model, batches, class_embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    model.eval()
    outs, ys = [], []
    for x, y in tqdm(batches, desc="eval", leave=False):
        outs.append(model.logit_scale.exp() * encode_images(model, x) @ class_embeddings.T)
        ys.append(y)
    return torch.cat(outs), torch.cat(ys)


def class_embeddings_from(model, pooled: torch.Tensor, caption_labels: torch.Tensor, n_classes: int) -> torch.Tensor:
    with torch.no_grad():
        text = F.normalize(model.text.proj(pooled), dim=-1)
        return F.normalize(torch.stack([text[caption_labels == c].mean(0) for c in range(n_classes)]), dim=-1)


def train(cfg: ClipConfig) -> Path:
    run_dir = start_run(cfg.runs, cfg.name, cfg.seed, cfg.threads)
    data = datasets.read_class_folders(cfg.data)
    splits = datasets.split_80_10_10(data, seed=cfg.seed)
    pixels = datasets.training_pixels(data.paths, cfg.img_size, cfg.crop)
    model = build_model(cfg)
    tokenizer = open_clip_tokenizer(cfg)
    captions, caption_labels = caption_bank(data.classes)
    pooled = pooled_text_features(model, tokenizer, captions)
    caption_labels_t = torch.tensor(caption_labels)
    print(f"{len(captions)} captions for {len(data.classes)} classes; {len(splits['train'])} training images")

    heads = [*model.text.proj.parameters(), model.logit_scale, *model.visual.head.parameters()]
    optimizer = create_optimizer_v2([{"params": list(model.visual.trunk.parameters()), "lr": cfg.lr}, {"params": heads, "lr": cfg.head_lr}],
                                    opt="adamw", lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_batches = Batches(pixels, data.labels, splits["train"], cfg.batch_size, train_augment(cfg.img_size, cfg.preprocess),
                            MEAN, STD, shuffle=True, seed=cfg.seed)
    steps_per_epoch = min(len(train_batches), cfg.max_steps or len(train_batches))
    scheduler, _ = create_scheduler_v2(optimizer, sched="cosine", num_epochs=cfg.epochs, warmup_epochs=1, step_on_epochs=False,
                                       updates_per_epoch=steps_per_epoch, min_lr=cfg.lr * 0.01, warmup_lr=cfg.lr * 0.1)
    val_batches = Batches(pixels, data.labels, splits["val"], 64, lambda im: apply_steps(im, cfg.preprocess), MEAN, STD, shuffle=False)

    state = {"epoch": 0, "best_f1": -1.0, "history": []}
    last = run_dir / "last.pt"
    if last.exists():
        saved = torch.load(last, map_location="cpu", weights_only=True)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        state = saved["state"]
        print(f"resuming {cfg.name} after epoch {state['epoch']}")
    rng = random.Random(cfg.seed + state["epoch"])

    for epoch in range(state["epoch"], cfg.epochs):
        model.train()
        model.text.eval()
        start = time.perf_counter()
        losses = []
        bar = tqdm(train_batches, total=steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.epochs}")
        for step, (x, y) in enumerate(bar):
            if step >= steps_per_epoch:
                break
            chosen = torch.tensor(sample_captions(caption_labels, y.tolist(), rng))
            text = F.normalize(model.text.proj(pooled[chosen]), dim=-1)
            loss = multi_positive_clip_loss(encode_images(model, x), text, y, model.logit_scale.exp().clamp(max=100))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step_update(epoch * steps_per_epoch + step + 1)
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
        minutes = (time.perf_counter() - start) / 60
        logits, labels = zero_shot_logits(model, val_batches, class_embeddings_from(model, pooled, caption_labels_t, len(data.classes)))
        val = classification_report(logits, labels, data.classes)
        state["history"].append({"epoch": epoch + 1, "train_loss": float(np.mean(losses)), "val_macro_f1": val["macro_f1"], "minutes": minutes})
        print(json.dumps(state["history"][-1]), flush=True)
        if val["macro_f1"] >= state["best_f1"]:
            state["best_f1"] = val["macro_f1"]
            torch.save(model.state_dict(), run_dir / "best.pt")
        state["epoch"] = epoch + 1
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state}, last)
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=2))
    return finish(cfg, run_dir, data, splits, state)


def open_clip_tokenizer(cfg: ClipConfig):
    from open_clip.tokenizer import HFTokenizer

    return HFTokenizer(clip_model.text_tower_source(cfg.text_tower), context_length=64)


def finish(cfg: ClipConfig, run_dir: Path, data, splits, state) -> Path:
    """Export the best epoch in open_clip's local-dir layout, then score every prompt preset on the test split."""
    model = build_model(ClipConfig(**{**asdict(cfg), "init": None}))
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    out = Path(cfg.out) / cfg.name
    export_folder(cfg, model, data.classes, out, state)
    from cxr_demo import zoo
    from train.evaluate import evaluate_zeroshot  # scores through the app's own zero-shot path

    test_paths = [data.paths[i] for i in splits["test"]]
    test_labels = [data.classes[data.labels[i]] for i in splits["test"]]
    metrics = {"task": "zeroshot", "test": {}, "epochs": state["epoch"], "history": state["history"],
               "minutes_per_epoch": float(np.mean([h["minutes"] for h in state["history"]])) if state["history"] else None,
               "train_config": asdict(cfg)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    spec = zoo.ModelSpec(cfg.name, "zeroshot", "open_clip", f"local:{out.resolve()}", tuple(data.classes), cfg.img_size, MEAN, STD)
    metrics["test"] = evaluate_zeroshot(zoo.Zoo([spec]).load(cfg.name), test_paths, test_labels)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps({name: {k: r[k] for k in ("macro_f1", "accuracy")} for name, r in metrics["test"].items()}))
    return out


def export_folder(cfg: ClipConfig, model, classes: list[str], out: Path, state: dict) -> None:
    text_source = Path(clip_model.text_tower_source(cfg.text_tower))
    config = {"architecture": "open_clip", "label_names": classes, "image_arch": cfg.image_arch, "text_tower": cfg.text_tower,
              "cxr_demo": {"task": "zeroshot", "preprocess": cfg.preprocess, "crop": cfg.crop, "input_size": cfg.img_size, "mean": list(MEAN), "std": list(STD)}}
    card, card_data = model_card(cfg, classes, state)
    export_checkpoint(out, model.state_dict(), config, {}, card, card_data)
    open_clip_config = {"model_cfg": clip_model.lit_model_cfg(cfg.image_arch, cfg.img_size, cfg.embed_dim, cfg.text_tower),
                        "preprocess_cfg": {"mean": list(MEAN) * 3, "std": list(STD) * 3}}
    (out / "open_clip_config.json").write_text(json.dumps(open_clip_config, indent=2) + "\n")
    (out / "text").mkdir(exist_ok=True)
    shutil.copy(text_source / "config.json", out / "text" / "config.json")
    for name in clip_model.TOKENIZER_FILES:
        shutil.copy(text_source / name, out / name)


def model_card(cfg: ClipConfig, classes: list[str], state: dict) -> tuple[str, ModelCardData]:
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
`python -m train.clip --data {cfg.data} --init {cfg.init} --name {cfg.name} --epochs {cfg.epochs}`: AdamW, image tower lr {cfg.lr},
projections and logit scale lr {cfg.head_lr}, cosine schedule, batch {cfg.batch_size}, {cfg.img_size} px, preprocessing `{cfg.preprocess}`,
the classifier's augmentation, seeded 80/10/10 split (the classifier's split), checkpoint chosen on validation macro-F1 with the
training captions' class means. Loss: symmetric InfoNCE with every same-class caption a positive.

Results per prompt preset (test split, never trained on) are in `metrics.json`; reproduce them with
`python -m train.evaluate --task zeroshot --model {cfg.name} --data {cfg.data} --split test --prompts clinical --json`.

## Load it
`open_clip.create_model_and_transforms("local-dir:weights/{cfg.name}")` (fetches the text tower's config from the Hub by name), or offline
`cxr_demo.clip_model.build_from_folder(...)`, which builds the text tower from `text/config.json`.

## Limits
Three classes, one dataset, with the pediatric shortcut of cxr-3class (every Viral Pneumonia image is of a young child).
Prompts outside these concepts get arbitrary answers; the probabilities depend on the temperature you choose.
"""
    data = ModelCardData(library_name="open_clip", license="apache-2.0", tags=["chest-x-ray", "cxr-demo", "clip", "not-a-medical-device"],
                         pipeline_tag="zero-shot-image-classification")
    return body, data


def parse_args(argv=None) -> ClipConfig:
    return parse_config(ClipConfig, argv, __doc__, required=("data",))


if __name__ == "__main__":
    train(parse_args())
