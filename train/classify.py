"""Train a timm classifier on a COVID-19 Radiography Database folder and export it to `weights/<name>/`.

    python -m train.classify --data ../shared/data/cxr-3class --arch tf_efficientnet_lite0 \
        --init ../shared/weights-init/tf_efficientnet_lite0_imagenet.safetensors --name cxr-effnet-lite0

Defaults follow the seed reports (Adam, lr 5e-5, weight decay 1e-6, 20 epochs, 80/10/10 split).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import timm
import torch
import torch.nn.functional as F
from huggingface_hub import ModelCardData
from safetensors.torch import load_file, save_file
from timm.models._manipulate import group_with_matcher
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from torchvision.transforms import v2

from cxr_demo.io.preprocess import apply_steps
from cxr_demo.tasks.metrics import classification_report, fit_temperature
from cxr_demo.zoo import architectures  # noqa: F401  (the zoo's own timm names)
from train import data as datasets
from train.cli import parse_config
from train.data import Batches, endless
from train.engine import Export, TrainConfig, Trainer, main, predict, progress
from train.gate import fit_gate


@dataclass(kw_only=True)
class ClassifyConfig(TrainConfig):
    """`init`: a local .safetensors file, a zoo checkpoint folder (fine-tune it), "hub" (needs network) or None."""
    data: str
    arch: str = "tf_efficientnet_lite0"
    lr: float = 5e-5
    weight_decay: float = 1e-6
    opt: str = "adam"
    sched: str = "cosine"
    warmup_epochs: int = 1
    batch_size: int = 32
    fraction: float = 1.0
    train_last: int | None = None  # fine-tune only the last N blocks (+ head): the DINOv2/BEiT recipe
    crop: str = "none"  # "lungs": train on the lung box from the zoo's segmenter (cxr_demo.intake.lungs), as the app will see it
    augment: str = "standard"  # "site": also gamma, noise, JPEG and stronger blur/contrast, to break scanner and site cues; "harsh": site with heavier grain and JPEG
    counterfactual: float = 0.0  # share of each batch added as lungs-blanked crops with a uniform target: nothing outside the lungs may decide
    counterfactual_weight: float = 1.0  # of that uniform-target term against the films' cross-entropy
    blind_weight: float = 0.0  # of the between-class spread of the blanked crops' logits: their answer may not depend on the class
    shortcut_bar: float | None = None  # with --crop lungs: best.pt on val macro-F1 less how far val lungs-removed accuracy exceeds this
    blank_fills: str = "median"  # what fills the blanked lungs, comma-separated (cxr_demo.intake.lungs.BLANK_FILLS), one per image in turn
    ema_decay: float = 0.998
    drop_rate: float = 0.2
    teacher: str | None = None  # a zoo classifier (name or weights/ folder) whose softened answers the model also learns (DeiT's soft distillation)
    distill_weight: float = 0.5  # of the teacher's term against the labels' cross-entropy
    distill_temperature: float = 2.0

    @property
    def run_name(self) -> str:
        return self.name or f"cxr-{self.arch}"


def build_model(cfg: ClassifyConfig, num_classes: int) -> torch.nn.Module:
    kwargs = dict(num_classes=num_classes, in_chans=1, drop_rate=cfg.drop_rate, **model_args(cfg))
    if cfg.init in (None, "none"):
        return timm.create_model(cfg.arch, pretrained=False, **kwargs)
    if cfg.init == "hub":
        return timm.create_model(cfg.arch, pretrained=True, **kwargs)
    init = Path(cfg.init)
    if (init / "model.safetensors").is_file():
        return from_checkpoint(timm.create_model(cfg.arch, pretrained=False, **kwargs), init / "model.safetensors")
    if init.suffix != ".safetensors" or not init.is_file():
        raise SystemExit(f"--init must be an existing .safetensors file, a weights/<name> folder, 'hub' or 'none'; got {cfg.init}")
    return timm.create_model(cfg.arch, pretrained=True, pretrained_cfg_overlay=dict(file=str(in_timm_names(init, cfg.arch))), **kwargs)


def in_timm_names(init: Path, arch: str) -> Path:
    """timm loads ImageNet files in its own names. A torchvision checkpoint (the offline MobileNetV2 in
    ../shared/weights-init) holds the same tensors in the same order: re-key it by position, every shape checked, once."""
    state = load_file(init)
    if "features.18.1.weight" not in state:
        return init
    converted = datasets.CACHE_DIR / f"{init.stem}-as-{arch}.safetensors"
    if not converted.is_file():
        from torchvision.models import mobilenet_v2

        state = {k: state[k] for k in mobilenet_v2().state_dict()}  # the file's keys are sorted; the network's order is not
        own = timm.create_model(arch, pretrained=False, num_classes=1000).state_dict()
        if len(own) != len(state) or any(a.shape != b.shape for a, b in zip(own.values(), state.values())):
            raise SystemExit(f"--init {init} is a torchvision checkpoint that does not fit {arch}: use the matching timm architecture")
        converted.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in zip(own, state.values())}, converted)
    return converted


def model_args(cfg: ClassifyConfig) -> dict:
    """A transformer's position grid is fixed at creation: build it at the training size (stored in config.json's model_args)."""
    default_size = (timm.models.get_pretrained_cfg_value(cfg.arch, "input_size") or (0, 0, 0))[-1]
    transformer = cfg.arch.startswith(("vit_", "deit", "beit", "swin", "cxr_swin", "cxr_vit"))
    return {"img_size": cfg.img_size} if transformer and default_size != cfg.img_size else {}


def from_checkpoint(model: torch.nn.Module, file: Path) -> torch.nn.Module:
    """Start from a zoo checkpoint of the same architecture (its gate statistics are not part of the network), or from a
    self-supervised encoder (`train.pretrain`: timm's names under `encoder.`, no head, so the head starts fresh)."""
    own = model.state_dict()
    state = {k.removeprefix("encoder."): v.float() for k, v in load_file(file).items()}
    state = {k: v for k, v in state.items() if k in own}
    head = {f"{model.default_cfg['classifier']}.{suffix}" for suffix in ("weight", "bias")}
    missing = set(own) - set(state) - (head if not head & set(state) else set())
    if missing:
        raise SystemExit(f"{file} is not a checkpoint of this architecture: {len(missing)} weights missing, e.g. {sorted(missing)[0]}")
    model.load_state_dict(state, strict=False)
    return model


def freeze_all_but_last(model: torch.nn.Module, n_blocks: int) -> int:
    """Freeze every parameter group but the last `n_blocks` (timm's group matcher) and the head."""
    groups = list(group_with_matcher(model.named_parameters(), model.group_matcher(coarse=True)).values())
    trainable = {name for group in groups[-(n_blocks + 1):] for name in group}
    for name, param in model.named_parameters():
        param.requires_grad_(name in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# --augment's site levels: (grain up to this share of the range, lowest JPEG quality, probability of each)
SITE_STRENGTHS = {"site": (0.04, 30, 0.3), "harsh": (0.07, 15, 0.5)}


def train_augment(size: int, steps: str, strength: str = "standard"):
    """X-ray-appropriate augmentation. Geometry first, then the inference-time intensity step, then blur/contrast
    noise, so that the model cannot rely on one scanner's sharpness or contrast. No flips: anatomy is lateralised.
    `site` adds what differs between hospitals (gamma, grain, JPEG, softer or sharper films) before the intensity step;
    `harsh` draws the grain up to 7% of the range and the JPEG quality down to 15, each on half the crops (a low-dose
    portable film, a teleradiology export), where `site` stops at 4% and 30 on a third."""
    scale = (0.7, 1.0) if strength == "standard" else (0.75, 1.0)
    geometric = v2.Compose([v2.RandomResizedCrop(size, scale=scale, ratio=(0.85, 1.18), antialias=True),
                            v2.RandomAffine(degrees=10, translate=(0.05, 0.05))])
    photometric = v2.Compose([v2.RandomApply([v2.GaussianBlur(5, sigma=(0.1, 1.5))], p=0.3),
                              v2.RandomApply([v2.ColorJitter(brightness=0.15, contrast=0.2)], p=0.5)])
    if strength == "standard":
        return lambda image: photometric(apply_steps(geometric(image), steps))
    if strength not in SITE_STRENGTHS:
        raise SystemExit(f"--augment must be 'standard', {' or '.join(map(repr, SITE_STRENGTHS))}, got {strength!r}")
    grain, lowest_quality, p = SITE_STRENGTHS[strength]
    site = v2.Compose([v2.RandomApply([random_gamma(0.6, 1.6)], p=0.6),
                       v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.35)], p=0.6),
                       v2.RandomApply([v2.GaussianBlur(7, sigma=(0.3, 2.0))], p=0.3), v2.RandomApply([v2.JPEG((lowest_quality, 90))], p=p),
                       v2.RandomApply([gaussian_grain(grain)], p=p)])
    return lambda image: photometric(apply_steps(site(geometric(image)), steps))


AUGMENT_NOTES = {"site": ", plus gamma, grain and JPEG (`--augment site`)",
                 "harsh": ", plus gamma, grain up to 7% and JPEG down to quality 15 (`--augment harsh`)"}


def random_gamma(low: float, high: float):
    """A uint8 image transform: a gamma drawn from [low, high]."""
    return lambda image: to_uint8(image.float().div(255).pow(float(np.random.uniform(low, high))) * 255)


def gaussian_grain(sigma: float):
    """A uint8 image transform: Gaussian grain, its standard deviation drawn from [0, sigma] of the range."""
    return lambda image: to_uint8(image.float() + torch.randn(image.shape) * 255 * float(np.random.uniform(0, sigma)))


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.round().clamp(0, 255).to(torch.uint8)


def lungs_blanked(cfg, data) -> np.ndarray:
    """Every image's lung crop with the lungs blanked out, exactly as `train.evaluate --lungs-removed` makes them."""
    if cfg.crop != "lungs":
        raise SystemExit("--counterfactual and --shortcut-bar need --crop lungs: they blank the lungs found by the same segmenter")
    pixels = np.asarray(datasets.cached_pixels(data.paths, cfg.img_size))
    return datasets.blanked_lung_crops(pixels, datasets.cached_lungs(data.paths, pixels), cfg.img_size, blank_fills(cfg))


def validation_blanks(cfg, data) -> np.ndarray | None:
    """The blanked crops a lung-crop run (or one with --shortcut-bar) validates on each epoch; None for a full-film run."""
    return lungs_blanked(cfg, data) if cfg.crop == "lungs" or cfg.shortcut_bar is not None else None


def lungs_removed_accuracy(logits: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> float:
    return classification_report(logits, labels, classes)["accuracy"]


def blank_fills(cfg) -> tuple[str, ...]:
    from cxr_demo.intake.lungs import BLANK_FILLS

    fills = tuple(f.strip() for f in cfg.blank_fills.split(",") if f.strip())
    if not fills or any(f not in BLANK_FILLS for f in fills):
        raise SystemExit(f"--blank-fills takes a comma-separated list of {', '.join(BLANK_FILLS)}; got {cfg.blank_fills!r}")
    return fills


def counterfactual_batches(cfg, data, splits, train_batches: Batches, blanked: np.ndarray | None = None) -> Batches | None:
    """Lungs-blanked training crops, `counterfactual` x batch at a time, to be taught that no class fits them."""
    if cfg.counterfactual <= 0:
        return None
    size = max(1, round(cfg.counterfactual * cfg.batch_size))
    return Batches(lungs_blanked(cfg, data) if blanked is None else blanked, data.labels, splits["train"], size,
                   train_batches.transform, train_batches.mean, train_batches.std, shuffle=True, seed=cfg.seed + 1)


def selection_score(f1: float, lungs_removed: float | None, bar: float | None) -> float:
    """Validation macro-F1, less what the lungs-removed accuracy gives away above `bar`: a checkpoint that reads more of the
    class from outside the lungs has to be that much better on the films to be kept."""
    if bar is None or lungs_removed is None:
        return f1
    return f1 - max(0.0, lungs_removed - bar)


def classify_loss(model, x: torch.Tensor, y: torch.Tensor, blanked: torch.Tensor | None, weight: float = 1.0,
                  distill: tuple[float, float] = (0.0, 1.0), blanked_labels: torch.Tensor | None = None,
                  blind_weight: float = 0.0) -> torch.Tensor:
    """Cross-entropy on the films, plus, for the blanked crops, `weight` x cross-entropy against the uniform distribution:
    with the lungs gone the model should not know the class (a "right for the right reasons" penalty), and `blind_weight` x
    the spread between the classes' mean answers on them (`between_class_spread`). With a teacher, `y` holds the label and
    the teacher's softened probabilities (`with_teacher`), mixed in by `distill` = (weight, temperature)."""
    logits = model(x if blanked is None else torch.cat([x, blanked]))
    loss = films_loss(logits[: len(x)], y, *distill)
    if blanked is None:
        return loss
    loss = loss + weight * no_class_loss(logits[len(x):])
    if blind_weight and blanked_labels is not None:
        loss = loss + blind_weight * between_class_spread(logits[len(x):], blanked_labels)
    return loss


def between_class_spread(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The between-class variance of the centred logits (ANOVA's between-group term): zero when, on average, the model
    answers the same whatever the class. The uniform target shrinks the logits towards zero but leaves whatever small
    class-dependent difference remains, and an argmax reads that difference however small it is."""
    centred = logits - logits.mean(1, keepdim=True)
    overall = centred.mean(0)
    spread = logits.new_zeros(())
    for label in labels.unique():
        members = labels == label
        spread = spread + members.float().mean() * (centred[members].mean(0) - overall).square().sum()
    return spread


def no_class_loss(logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against the uniform distribution over the classes: with the lungs blanked out, no class may fit."""
    return -logits.log_softmax(1).mean()


def films_loss(logits: torch.Tensor, y: torch.Tensor, distill_weight: float, temperature: float) -> torch.Tensor:
    if y.ndim == 1:
        return F.cross_entropy(logits, y)
    labels, teacher = y[:, 0].long(), y[:, 1:]
    soft = F.kl_div((logits / temperature).log_softmax(1), teacher, reduction="batchmean") * temperature ** 2
    return (1 - distill_weight) * F.cross_entropy(logits, labels) + distill_weight * soft


def with_teacher(cfg: ClassifyConfig, data, index: np.ndarray) -> np.ndarray:
    """The labels as one (N, 1 + classes) float array: the label, then the teacher's probabilities at the distillation
    temperature, computed once on the un-augmented training crops as the app feeds the teacher (its size, crop and preprocessing)."""
    from cxr_demo import zoo

    teacher = zoo.load(Path(cfg.teacher).name)
    options, spec = teacher.options, teacher.spec
    if list(teacher.config.get("label_names") or spec.labels) != list(data.classes):
        raise SystemExit(f"--teacher {cfg.teacher} answers {spec.labels}, not this data's classes {data.classes}")
    pixels = datasets.training_pixels(data.paths, spec.input_size, options.get("crop", "none"))
    batches = datasets.evaluation_batches(pixels, data.labels, index, options.get("preprocess", "none"), spec.mean[:1], spec.std[:1])
    with torch.inference_mode():
        logits, _ = predict(teacher.module, batches)
    targets = np.zeros((len(data.labels), 1 + logits.shape[1]), np.float32)
    targets[:, 0] = data.labels
    targets[index, 1:] = (logits / cfg.distill_temperature).softmax(1).numpy()
    return targets


def model_config(cfg: ClassifyConfig, classes: list[str], temperature: float, mean, std) -> dict:
    """timm's Hub config format (so `timm.create_model('hf-hub:...')` works), plus our own section."""
    return {"architecture": cfg.arch, "num_classes": len(classes), "label_names": classes, "model_args": {"in_chans": 1, **model_args(cfg)},
            "pretrained_cfg": {"input_size": [1, cfg.img_size, cfg.img_size], "interpolation": "bilinear", "crop_pct": 1.0,
                               "mean": list(mean), "std": list(std), "num_classes": len(classes), "label_names": classes},
            "cxr_demo": {"task": "classify", "preprocess": cfg.preprocess, "crop": cfg.crop, "temperature": temperature}}


LUNG_CROP_NOTE = """Input: **the lung box only.** The zoo's lung segmenter (`{segmenter}`) finds the two lungs, the box around
them is widened by 5% of the image on each side, and that crop is squashed to a square. The app, `train.classify` and
`train.evaluate` all take the crop through `cxr_demo.intake.lungs`, so the model sees at inference what it was trained on.
Borders, markers, the shoulders and most of the body outline, where a full-film model finds its shortcuts, are cut away."""

SHORTCUT_NOTE = """
In `cxr-3class`, COVID and Normal come from the COVID-19 Radiography Database (mostly adults, many sources) and
Viral Pneumonia from the Kermany set.

**Known shortcut.** Every Viral Pneumonia image is pediatric (ages 1-5, one hospital in Guangzhou), while COVID
and Normal images are mostly adults from many sources. The model can separate "child vs adult" or "Guangzhou vs
elsewhere" instead of disease, and the in-distribution test figures below cannot tell the difference.
An adult viral pneumonia will likely not be called "Viral Pneumonia"; a child's normal film may be.
Use the Grad-CAM view to see what the model looks at.
"""


def lung_crop_note() -> str:
    from cxr_demo import zoo

    return LUNG_CROP_NOTE.format(segmenter=zoo.default("segment").name)


def counterfactual_note(cfg: ClassifyConfig) -> str:
    if cfg.counterfactual <= 0:
        return ""
    return (f"\n**Counterfactual penalty** (`--counterfactual {cfg.counterfactual:g} --counterfactual-weight {cfg.counterfactual_weight:g}`): each batch also holds "
            f"{round(cfg.counterfactual * cfg.batch_size)} training crops with the lungs blanked out, exactly as "
            "`train.evaluate --lungs-removed` blanks them, and their target is the uniform distribution: with the lungs gone "
            "the model is taught not to know the class, so that what it does know comes from the lungs."
            + (f" Plus {cfg.blind_weight:g} x the between-class variance of their centred logits (`--blind-weight`): on average "
               "the answer to a blanked crop may not depend on its class." if cfg.blind_weight else "")
            + (f" The lungs are filled in turn with {', '.join(blank_fills(cfg))} (`--blank-fills {cfg.blank_fills}`), so that the model"
               " learns that the lungs are gone, not what one blank looks like." if len(blank_fills(cfg)) > 1 else ""))


def selection_note(cfg: ClassifyConfig) -> str:
    if cfg.shortcut_bar is None:
        return ""
    return (f"\n**Checkpoint chosen** (`--shortcut-bar {cfg.shortcut_bar:g}`) on validation macro-F1 less whatever the validation "
            f"accuracy with the lungs removed exceeds {cfg.shortcut_bar:g}: an epoch that reads more from outside the lungs must earn it on the films.")


def distillation_note(cfg: ClassifyConfig) -> str:
    if cfg.teacher is None:
        return ""
    return (f"\n**Distilled** from the zoo classifier `{Path(cfg.teacher).name}` (`--teacher`, DeiT's soft distillation): the loss is "
            f"{1 - cfg.distill_weight:g} x the labels' cross-entropy + {cfg.distill_weight:g} x the KL divergence to the teacher's "
            f"probabilities at temperature {cfg.distill_temperature:g}, computed once on the un-augmented training crops.")


def model_card(cfg: ClassifyConfig, name: str, metrics: dict, split_sizes: dict) -> tuple[str, ModelCardData]:
    test = metrics["test"]
    counts = ", ".join(f"{c} {n}" for c, n in metrics["data"]["class_counts"].items())
    calibration_note = "" if test["nll"] <= test["nll_uncalibrated"] else (
        "\nThe temperature fitted on the validation split makes this test split's calibration slightly worse: the "
        "EMA weights were already well calibrated here. It is kept because it was chosen without looking at the test split.\n")
    init_text = {None: "random", "none": "random", "hub": "timm's pretrained weights from the Hub"}.get(
        cfg.init, f"ImageNet weights from `{Path(str(cfg.init)).name}`")
    if cfg.init and (Path(cfg.init) / "model.safetensors").is_file():
        init_text = f"the zoo checkpoint `{Path(cfg.init).name}` (this run fine-tunes it further)"
    rows = "\n".join(f"| {c} | {v['f1']:.4f} | {v['precision']:.4f} | {v['recall']:.4f} | {v['support']} |" for c, v in test["per_class"].items())
    body = f"""
# {name}

A `{cfg.arch}` classifier for **{", ".join(test["per_class"])}** on frontal chest X-rays, trained by
cxr-demo's `train/classify.py`. **A teaching demo, not a medical device.**

## Data
`{Path(cfg.data).name}`: {counts}. Stratified, patient-grouped, seeded 80/10/10 split (seed {cfg.seed}):
train {split_sizes["train"]}, val {split_sizes["val"]}, test {split_sizes["test"]}.
{SHORTCUT_NOTE if "Viral Pneumonia" in test["per_class"] else ""}
## Training
Init: {init_text}. Optimizer {cfg.opt}, lr {cfg.lr}, weight decay {cfg.weight_decay}, {cfg.sched} schedule,
{cfg.epochs} epochs, batch {cfg.batch_size}, EMA {cfg.ema_decay}, input {cfg.img_size} px, preprocessing `{cfg.preprocess}`
(histogram equalization at train and inference time), augmentation: random resized crop, small rotation/shift,
blur and contrast jitter{AUGMENT_NOTES.get(cfg.augment, "")}; no flips.
{lung_crop_note() if cfg.crop == "lungs" else "Input: the whole film, squashed to a square."}{counterfactual_note(cfg)}{selection_note(cfg)}{distillation_note(cfg)} Data fraction {cfg.fraction:.0%}; trained layers: {"all" if cfg.train_last is None else f"last {cfg.train_last} blocks + head"}.
Minutes per epoch (2-core CPU): {metrics["minutes_per_epoch"]:.2f}. Temperature (fitted on val): {test["temperature"]:.3f}.

## Test-split results ({test["n"]} images never seen in training or model selection)
| metric | value |
|---|---|
| macro F1 | {test["macro_f1"]:.4f} |
| macro precision | {test["macro_precision"]:.4f} |
| macro recall | {test["macro_recall"]:.4f} |
| accuracy | {test["accuracy"]:.4f} |
| ECE before / after temperature scaling (15 bins) | {test["ece_uncalibrated"]:.4f} / {test["ece"]:.4f} |
| NLL before / after temperature scaling | {test["nll_uncalibrated"]:.4f} / {test["nll"]:.4f} |

| class | F1 | precision | recall | support |
|---|---|---|---|---|
{rows}

Confusion matrix (rows true, columns predicted, order as above): `{test["confusion_matrix"]}`
{calibration_note}
Reproduce: `python -m train.evaluate --model {name} --data DIR --split test --json`.

Out-of-distribution gate: pooled features of a new image are compared with the training images' (diagonal Gaussian);
above the threshold ({metrics["gate"]["threshold"]:.2f}, {metrics["gate"]["val_flagged"]:.1%} of validation images) the app warns that
the image does not look like its training data.

## Intended use and limits
Education and demonstration: showing what a small CNN learns from a public dataset and where it fails.
Not for clinical use. It has never seen lateral views, other diseases, devices, or images from scanners outside
its sources; it outputs one of three labels whatever it is given. Figures above come from the same sources as
the training data and overstate performance on any other hospital.
"""
    return body, ModelCardData(license="apache-2.0", library_name="timm", pipeline_tag="image-classification",
                               tags=["chest-x-ray", "cxr-demo", "not-a-medical-device"], metrics=["f1", "precision", "recall", "accuracy"])


class ClassifyTrainer(Trainer):
    """Cross-entropy (plus the counterfactual penalty) with an EMA copy of the weights, which is validated and kept;
    best.pt on validation macro-F1 (less any lungs-removed accuracy above `shortcut_bar`). The export calibrates a temperature on val and fits the feature gate."""

    def __init__(self, cfg: ClassifyConfig):
        self.cfg = cfg
        self.data = data = datasets.read_class_folders(cfg.data)
        self.splits = splits = datasets.split_80_10_10(data, seed=cfg.seed)
        splits["train"] = datasets.take_fraction(splits["train"], data.labels, cfg.fraction, seed=cfg.seed)
        self.pixels = datasets.training_pixels(data.paths, cfg.img_size, cfg.crop)
        self.model = self.build_model(cfg.init)
        if cfg.train_last is not None:
            print(f"training {freeze_all_but_last(self.model, cfg.train_last):,} parameters (last {cfg.train_last} blocks + head)")
        self.mean, self.std = self.model.pretrained_cfg["mean"][:1], self.model.pretrained_cfg["std"][:1]
        self.ema = ModelEmaV3(self.model, decay=cfg.ema_decay, use_warmup=True)
        self.optimizer = create_optimizer_v2([p for p in self.model.parameters() if p.requires_grad], opt=cfg.opt, lr=cfg.lr,
                                             weight_decay=cfg.weight_decay)
        targets = data.labels if cfg.teacher is None else with_teacher(cfg, data, splits["train"])
        self.train_batches = Batches(self.pixels, targets, splits["train"], cfg.batch_size,
                                     train_augment(cfg.img_size, cfg.preprocess, cfg.augment), self.mean, self.std, shuffle=True,
                                     seed=cfg.seed)
        self.steps_per_epoch = min(len(self.train_batches), cfg.max_steps or len(self.train_batches))
        self.scheduler, _ = create_scheduler_v2(self.optimizer, sched=cfg.sched, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
                                                step_on_epochs=False, updates_per_epoch=self.steps_per_epoch, min_lr=cfg.lr * 0.01,
                                                warmup_lr=cfg.lr * 0.1)
        self.blanked = validation_blanks(cfg, data)
        self.counterfactuals = counterfactual_batches(cfg, data, splits, self.train_batches, self.blanked)

    def build_model(self, init: str | None) -> torch.nn.Module:
        return build_model(replace(self.cfg, init=init), len(self.data.classes)).to(memory_format=torch.channels_last)

    def batches(self, epoch: int):
        return zip(self.train_batches, endless(self.counterfactuals, with_labels=True))

    def loss(self, batch) -> torch.Tensor:
        (x, y), blanked = batch
        blanked, blanked_labels = blanked or (None, None)
        cfg = self.cfg
        return classify_loss(self.model, x, y, blanked, cfg.counterfactual_weight, (cfg.distill_weight, cfg.distill_temperature),
                             blanked_labels, cfg.blind_weight)

    def after_step(self, update: int) -> None:
        self.ema.update(self.model, step=update)

    @property
    def selected(self) -> torch.nn.Module:
        return self.ema.module

    def resumable(self) -> dict:
        return {"model": self.model, "ema": self.ema.module, "optimizer": self.optimizer}

    def logits(self, model, part: str, pixels: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = self.pixels if pixels is None else pixels
        batches = datasets.evaluation_batches(pixels, self.data.labels, self.splits[part], self.cfg.preprocess, self.mean, self.std)
        return predict(model, batches)

    def validate(self) -> tuple[dict, float]:
        logits, labels = self.logits(self.ema.module, "val")
        f1 = classification_report(logits, labels, self.data.classes)["macro_f1"]
        fields = {"val_macro_f1": f1, "val_loss": float(F.cross_entropy(logits, labels))}
        if self.blanked is not None:
            removed, labels = self.logits(self.ema.module, "val", self.blanked)
            fields["val_lungs_removed_accuracy"] = lungs_removed_accuracy(removed, labels, self.data.classes)
        return fields, selection_score(f1, fields.get("val_lungs_removed_accuracy"), self.cfg.shortcut_bar)

    def export(self, model, state) -> Export:
        """Calibrate on val, score the test split and fit the gate."""
        cfg, data, splits = self.cfg, self.data, self.splits
        val_logits, val_labels = self.logits(model, "val")
        temperature = fit_temperature(val_logits, val_labels)
        test_logits, test_labels = self.logits(model, "test")
        gate, gate_stats = fit_gate(model, self.pixels, data.labels, splits, cfg.preprocess, self.mean, self.std)
        metrics = {
            "task": "classify",
            "test": classification_report(test_logits, test_labels, data.classes, temperature),
            "val": classification_report(val_logits, val_labels, data.classes, temperature),
            **progress(state),
            "data": {"path": Path(cfg.data).name, "split": "stratified patient-grouped 80/10/10",
                     "seed": cfg.seed, "sizes": {k: int(len(v)) for k, v in splits.items()},
                     "class_counts": {c: int((data.labels == i).sum()) for i, c in enumerate(data.classes)}},
            "gate": gate_stats,
            "train_config": asdict(cfg),
        }
        body, card_data = model_card(cfg, cfg.run_name, metrics, metrics["data"]["sizes"])
        config = model_config(cfg, data.classes, temperature, self.mean, self.std)
        config["cxr_demo"]["gate_threshold"] = gate.threshold
        summary = {k: metrics["test"][k] for k in ("accuracy", "macro_f1", "macro_precision", "macro_recall", "ece")}
        return Export(config, metrics, body, card_data, summary, extra_weights=gate.state_dict())


def parse_args(argv=None) -> ClassifyConfig:
    return parse_config(ClassifyConfig, argv, __doc__, required=("data",))


train = ClassifyTrainer.train

if __name__ == "__main__":
    main(ClassifyConfig, ClassifyTrainer, __doc__)
