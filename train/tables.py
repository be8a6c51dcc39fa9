"""The seeds' comparison tables, trained and measured here on two CPU cores.

    python -m train.tables --table classify    # scratch vs ImageNet vs self-supervised, CNN vs ViT/Swin (lung crops)
    python -m train.tables --table segment     # seed 000's smp architectures with one MobileNetV2 ImageNet encoder
    python -m train.tables --ship cxr-vit-tiny-mae   # a measured classifier into weights/ and zoo.toml
    python -m train.tables --retime                  # the latency columns again, on an otherwise idle machine; trains nothing

Every row is an ordinary `train.classify` / `train.segment` run (its command is stored with the row), into
runs/tables/ (not the zoo), with the same split, crop, augmentation, schedule and epochs; runs resume, so an
interrupted sweep picks up where it stopped. The figures go to results/<table>_table.json and .md; the leaderboard
reads the JSON. Classifiers are measured beyond their test split: with the lungs blanked out (the shortcut), where
their GradCAM mass falls, on films from other hospitals, and for CPU latency with a heatmap.
"""
from __future__ import annotations

import json
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from cxr_demo import zoo
from cxr_demo.intake.lungs import crop_to_box, heatmap_share_in
from cxr_demo.io import read_xray
from cxr_demo.tasks import classify
from cxr_demo.tasks.cam import class_activation_map
from cxr_demo.tasks.metrics import classification_report
from train import data as datasets
from train.cli import parse_config
from train.data import SHARED

INIT = SHARED.parent / "weights-init"
RESULTS = Path("results")


@dataclass(frozen=True)
class ClassifierRow:
    name: str
    arch: str
    init: str  # "scratch", "imagenet" or "mae"
    family: str
    lr: float
    opt: str = "adam"
    weight_decay: float = 1e-6
    train_last: int | None = None
    note: str = ""
    epochs: int | None = None  # a row trained longer than the table's --epochs says so in its own column
    teacher: str | None = None  # a zoo classifier folder to distil from (`train.classify --teacher`)


SCRATCH_CNN, SCRATCH_VIT, PRETRAINED = dict(lr=1e-3), dict(lr=5e-4, opt="adamw", weight_decay=0.05), dict(lr=3e-4)
CLASSIFIER_ROWS = (
    ClassifierRow("cxr-simple-cnn", "cxr_simple_cnn", "scratch", "CNN", note="seed 004's simple CNN", **SCRATCH_CNN),
    ClassifierRow("cxr-resnet18-scratch", "resnet18", "scratch", "CNN", note="no offline ImageNet weights", **SCRATCH_CNN),
    ClassifierRow("cxr-effnet-lite0-scratch", "tf_efficientnet_lite0", "scratch", "CNN", **SCRATCH_CNN),
    ClassifierRow("cxr-effnet-lite0-imagenet", "tf_efficientnet_lite0", "imagenet", "CNN", **PRETRAINED),
    ClassifierRow("cxr-mobilenetv2-scratch", "mobilenetv2_100", "scratch", "CNN", **SCRATCH_CNN),
    ClassifierRow("cxr-mobilenetv2-imagenet", "mobilenetv2_100", "imagenet", "CNN", **PRETRAINED),
    ClassifierRow("cxr-vit-tiny-scratch", "vit_tiny_patch16_224", "scratch", "ViT", **SCRATCH_VIT),
    ClassifierRow("cxr-swin-atto-scratch", "cxr_swin_atto", "scratch", "Swin", **SCRATCH_VIT),
    ClassifierRow("cxr-vit-tiny-mae", "vit_tiny_patch16_224", "mae", "ViT", lr=1e-3, opt="adamw", weight_decay=0.05, train_last=4,
                  note="MAE on our own unlabelled CXRs (`train.pretrain`), then the last 4 blocks + head fine-tuned"),
    ClassifierRow("cxr-vit-tiny-mae-full", "vit_tiny_patch16_224", "mae", "ViT", lr=5e-4, opt="adamw", weight_decay=0.05, epochs=8,
                  note="the same MAE encoder, every layer fine-tuned, for 8 epochs"),
    ClassifierRow("cxr-densenet121-scratch", "densenet121", "scratch", "CNN", note="no offline ImageNet weights", **SCRATCH_CNN),
    ClassifierRow("cxr-swin-atto", "cxr_swin_atto", "scratch", "Swin", epochs=14, note="the scratch Swin row, trained 14 epochs", **SCRATCH_VIT),
    ClassifierRow("cxr-swin-atto-distilled", "cxr_swin_atto", "scratch", "Swin", epochs=14, teacher="weights/cxr-lungcrop-effnet-lite0",
                  note="from scratch, 14 epochs, distilled from the default lung-crop classifier (DeiT's recipe)", **SCRATCH_VIT),
    ClassifierRow("cxr-vit-hybrid-lite0", "cxr_vit_hybrid_lite0", "imagenet", "ViT", lr=3e-4, opt="adamw", weight_decay=0.05, epochs=6,
                  note="the ViT paper's hybrid: ImageNet EfficientNet-Lite0 stem (stride 16) + 4 ViT-Tiny blocks from scratch"),
)
IMAGENET_FILES = {"tf_efficientnet_lite0": "tf_efficientnet_lite0_imagenet.safetensors", "mobilenetv2_100": "mobilenet_v2_imagenet.safetensors",
                  "cxr_vit_hybrid_lite0": "tf_efficientnet_lite0_imagenet.safetensors"}
SEGMENT_ARCHS = ("unet", "unetplusplus", "manet", "fpn", "pspnet", "pan", "deeplabv3", "deeplabv3plus")


@dataclass
class TablesConfig:
    table: str = field(default="classify", metadata={"choices": ("classify", "segment")})
    data: str = str(SHARED / "cxr-3class")
    epochs: int = field(default=3, metadata={"help": "classifier epochs (segmenters: --seg-epochs)"})
    img_size: int = 128
    fraction: float = 1.0
    seg_epochs: int = 10
    pretrain_epochs: int = 30
    rows: list[str] = field(default_factory=list, metadata={"help": "only these row names (default: every row)"})
    runs: str = "runs/tables"
    retime: bool = field(default=False, metadata={"help": "measure every stored row's CPU latency again (on a quiet machine)"})
    ship: list[str] = field(default_factory=list, metadata={"help": "copy these measured classifiers into weights/ and zoo.toml"})
    threads: int | None = None
    results: str = str(RESULTS)


def classifier_command(cfg: TablesConfig, row: ClassifierRow) -> str:
    flags = f" --train-last {row.train_last}" if row.train_last is not None else ""
    flags += f" --teacher {row.teacher}" if row.teacher else ""
    first = f"{pretrain_command(cfg, row)} && " if row.init == "mae" else ""
    return (f"{first}python -m train.classify --data {cfg.data} --arch {row.arch} --init {init_path(cfg, row)} --crop lungs "
            f"--img-size {cfg.img_size} --fraction {cfg.fraction} --epochs {row.epochs or cfg.epochs} --lr {row.lr} --opt {row.opt} "
            f"--weight-decay {row.weight_decay}{flags} --name {row.name} --runs {cfg.runs} --out {cfg.runs}/weights")


def pretrain_command(cfg: TablesConfig, row: ClassifierRow) -> str:
    threads = f" --threads {cfg.threads}" if cfg.threads else ""
    return (f"python -m train.pretrain --arch {row.arch} --img-size {cfg.img_size} --epochs {cfg.pretrain_epochs} "
            f"--runs {cfg.runs}/pretrain --out {cfg.runs}/pretrain{threads}")


def init_path(cfg: TablesConfig, row: ClassifierRow) -> str:
    if row.init == "imagenet":
        return str(INIT / IMAGENET_FILES[row.arch])
    if row.init == "mae":
        return f"{cfg.runs}/pretrain/cxr-mae-{row.arch}"
    return "none"


def train_classifier(cfg: TablesConfig, row: ClassifierRow) -> Path:
    from train import classify, pretrain

    if row.init == "mae" and not (Path(init_path(cfg, row)) / "model.safetensors").is_file():
        pretrain.train(parse_config(pretrain.PretrainConfig, flags(pretrain_command(cfg, row))))
    folder = Path(cfg.runs) / "weights" / row.name
    if not (folder / "metrics.json").is_file():
        classify.train(classify.parse_args(flags(classifier_command(cfg, row), cfg.threads)))
    return folder


def flags(command: str, threads: int | None = None) -> list[str]:
    """The --flags of a command line's last `python -m module ...` step (the row's stored command is what runs)."""
    return command.split("&& ")[-1].split()[3:] + ([f"--threads={threads}"] if threads else [])


def listed(folder: Path, row: ClassifierRow) -> str:
    """The row's checkpoint, listed in the process's zoo (once) so that the app's own predictors can load it by name."""
    if row.name not in zoo.registry().names():
        zoo.registry().add(candidate_spec(folder, row))
    return row.name


def candidate_spec(folder: Path, row: ClassifierRow) -> zoo.ModelSpec:
    config = json.loads((folder / "config.json").read_text())
    pre = config["pretrained_cfg"]
    return zoo.ModelSpec(name=row.name, task="classify", arch=row.arch, source=f"local:{folder.resolve()}",
                         labels=tuple(config["label_names"]), input_size=pre["input_size"][-1], mean=tuple(pre["mean"]),
                         std=tuple(pre["std"]))


@torch.inference_mode()
def logits_of(module, pixels: np.ndarray, steps: str, mean, std) -> torch.Tensor:
    batches = datasets.evaluation_batches(pixels, np.zeros(len(pixels), np.int64), np.arange(len(pixels)), steps, mean, std)
    return torch.cat([module(x).float() for x, _ in batches])


def shortcut_figures(loaded: zoo.Loaded, cfg: TablesConfig) -> dict:
    """On the cached test split, as the trainer saw it: accuracy with the lungs blanked out, and GradCAM mass in the lungs."""
    data = datasets.read_class_folders(cfg.data)
    test = datasets.split_80_10_10(data, seed=0)["test"]
    full = np.asarray(datasets.cached_pixels(data.paths, datasets.CROP_SOURCE_SIZE))
    lungs = datasets.cached_lungs(data.paths, full)
    steps, size = loaded.options.get("preprocess", "equalize"), loaded.spec.input_size
    mean, std = loaded.spec.mean[:1], loaded.spec.std[:1]
    blanked = datasets.blanked_lung_crops(full[test], {k: v[test] for k, v in lungs.items()}, size)
    removed = classification_report(logits_of(loaded.module, blanked, steps, mean, std), torch.from_numpy(data.labels[test]),
                                    data.classes)
    crops = datasets.lung_crops(full[test], lungs["boxes"][test], size)
    shares = []
    for crop, box, mask in zip(crops, lungs["boxes"][test], lungs["masks"][test]):
        x = classify.prepare(crop.astype(np.float32) / 255.0, loaded)
        heatmap, _ = class_activation_map(loaded.module, x)
        shares.append(heatmap_share_in(heatmap, crop_to_box(mask, tuple(box))))
    return {"lungs_removed_accuracy": removed["accuracy"], "heatmap_in_lungs": float(np.mean(shares)), "n": int(len(test))}


def latency_with_heatmap(name: str, repeats: int = 10) -> float:
    """Median ms of `classify.predict` with GradCAM on one film whose lung mask is already known (the intake is shared).
    Each call is a first request: the app's result memo would answer a repeat without running the model."""
    from cxr_demo.intake import forget
    from cxr_demo.intake.lungs import find_lungs

    xray = read_xray(next((SHARED / "cxr-3class" / "COVID" / "images").iterdir()))
    lungs = find_lungs(xray)
    classify.predict(xray, name, "GradCAM", lungs=lungs)
    times = []
    for _ in range(repeats):
        forget()
        start = time.perf_counter()
        classify.predict(xray, name, "GradCAM", lungs=lungs)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def external_figures(name: str) -> dict:
    """Through the app's whole path, as `train.audit` does: the other hospitals' labelled films and the adult probes."""
    from train.audit import ADULT_OTHER_FINDINGS, external_folder, viral_pneumonia_share
    from train.evaluate import evaluate_classifier

    with tempfile.TemporaryDirectory() as tmp:
        folder = external_folder(Path(tmp), SHARED, list(zoo.get(name).labels))
        external = evaluate_classifier(name, folder, "all", 0)
        removed = evaluate_classifier(name, folder, "all", 0, lungs_removed=True)
    adults = {label: viral_pneumonia_share(name, SHARED / path) for label, path in ADULT_OTHER_FINDINGS.items()}
    called = sum(round(a["called_viral_pneumonia"] * a["n"]) for a in adults.values())
    return {"external_accuracy": external["accuracy"], "external_n": external["n"], "external_lungs_removed_accuracy": removed["accuracy"],
            "adults_called_viral_pneumonia": called, "adults_n": sum(a["n"] for a in adults.values())}


def measure_classifier(cfg: TablesConfig, row: ClassifierRow, folder: Path) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    loaded = zoo.load(listed(folder, row))
    test = metrics["test"]
    return {
        "name": row.name, "arch": row.arch, "family": row.family, "init": row.init, "note": row.note,
        **{k: test[k] for k in ("macro_f1", "macro_precision", "macro_recall", "accuracy", "ece", "n")},
        "minutes_per_epoch": metrics["minutes_per_epoch"], "epochs": metrics["epochs"],
        "params_m": sum(p.numel() for p in loaded.module.parameters()) / 1e6,
        "latency_ms_with_heatmap": latency_with_heatmap(row.name),
        **shortcut_figures(loaded, cfg),
        **external_figures(row.name),
        "command": classifier_command(cfg, row),
    }


def classify_table(cfg: TablesConfig) -> list[dict]:
    """Train the selected rows (all by default); the table holds every row trained so far, each measured once."""
    rows = []
    for row in CLASSIFIER_ROWS:
        folder = Path(cfg.runs) / "weights" / row.name
        if cfg.rows and row.name not in cfg.rows and not (folder / "metrics.json").is_file():
            continue
        rows.append(measured(folder, lambda: measure_classifier(cfg, row, train_classifier(cfg, row))))
        write(cfg, "classify", rows)
    return rows


def retime(cfg: TablesConfig) -> None:
    """Measure the CPU latency columns again for every stored row and rewrite both tables, training nothing: timings taken
    while other jobs shared the two cores are too slow, and latency is the one figure that depends on that."""
    for row in CLASSIFIER_ROWS:
        stored = Path(cfg.runs) / "weights" / row.name / "table_row.json"
        if stored.is_file():
            latency = latency_with_heatmap(listed(stored.parent, row))
            stored.write_text(json.dumps({**json.loads(stored.read_text()), "latency_ms_with_heatmap": latency}, indent=2) + "\n")
    for arch in SEGMENT_ARCHS:
        stored = Path(cfg.runs) / "weights" / segmenter_name(arch) / "table_row.json"
        if stored.is_file():
            latency, _ = segmenter_latency(stored.parent)
            stored.write_text(json.dumps({**json.loads(stored.read_text()), "latency_ms": latency}, indent=2) + "\n")
    for table, names in (("classify", [r.name for r in CLASSIFIER_ROWS]), ("segment", [segmenter_name(a) for a in SEGMENT_ARCHS])):
        stored = [Path(cfg.runs) / "weights" / name / "table_row.json" for name in names]
        write(cfg, table, [json.loads(path.read_text()) for path in stored if path.is_file()])


def measured(folder: Path, measure) -> dict:
    """The row stored beside its checkpoint, re-measured only when the checkpoint is newer."""
    stored = folder / "table_row.json"
    if stored.is_file() and stored.stat().st_mtime > (folder / "metrics.json").stat().st_mtime:
        return json.loads(stored.read_text())
    row = measure()
    stored.write_text(json.dumps(row, indent=2) + "\n")
    return row


def segmenter_name(arch: str) -> str:
    return f"lung-{arch}-mobilenetv2"


def segment_command(cfg: TablesConfig, arch: str) -> str:
    return (f"python -m train.segment --data {SHARED}/lung-masks/shenzhen --data train/splits/covid-qu-ex-sample-train.csv "
            f"--external train/splits/covid-qu-ex-sample-holdout.csv --arch {arch} --encoder mobilenet_v2 "
            f"--init {INIT}/mobilenet_v2_imagenet.safetensors --epochs {cfg.seg_epochs} --name {segmenter_name(arch)} "
            f"--runs {cfg.runs} --out {cfg.runs}/weights")


def segmenter_latency(folder: Path) -> tuple[float, float]:
    """Median CPU ms of one 256 px forward pass in eager PyTorch, and the parameters in millions."""
    from train import segment

    config = json.loads((folder / "config.json").read_text())
    model = segment.build_model(segment.SegmentConfig(arch=config["architecture"], encoder=config["encoder_name"])).eval()
    x = torch.zeros(1, 1, 256, 256)
    with torch.inference_mode():
        model(x)
        times = []
        for _ in range(10):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times)), sum(p.numel() for p in model.parameters()) / 1e6


def segment_table(cfg: TablesConfig) -> list[dict]:
    from train import segment

    rows = []
    for arch in SEGMENT_ARCHS:
        command = segment_command(cfg, arch)
        folder = Path(cfg.runs) / "weights" / segmenter_name(arch)
        if cfg.rows and arch not in cfg.rows and not (folder / "metrics.json").is_file():
            continue
        if not (folder / "metrics.json").is_file():
            segment.train(parse_config(segment.SegmentConfig, flags(command, cfg.threads)))
        rows.append(measured(folder, lambda: segmenter_row(folder, arch, command)))
        write(cfg, "segment", rows)
    return rows


def segmenter_row(folder: Path, arch: str, command: str) -> dict:
    metrics = json.loads((folder / "metrics.json").read_text())
    external = next(iter(metrics["external"].values()))
    latency, params = segmenter_latency(folder)
    return {"name": segmenter_name(arch), "arch": arch, "shenzhen_dice": metrics["test"]["dice"],
            "shenzhen_iou": metrics["test"]["iou"], "shenzhen_n": metrics["test"]["n"], "covid_qu_ex_dice": external["dice"],
            "covid_qu_ex_iou": external["iou"], "covid_qu_ex_n": external["n"], "minutes_per_epoch": metrics["minutes_per_epoch"],
            "epochs": metrics["epochs"], "latency_ms": latency, "params_m": params, "command": command}


CLASSIFY_HEADER = ("| model | family | init | epochs | macro-F1 | precision | recall | accuracy | ECE | min/epoch | params (M) | "
                   "ms with heatmap | **lungs removed** acc. | heatmap in lungs | other hospitals acc. (n) | adults called VP |")
SEGMENT_HEADER = "| architecture | Shenzhen Dice | IoU (n) | COVID-QU-Ex held-out Dice | IoU (n) | min/epoch | CPU ms | params (M) |"


def markdown(table: str, rows: list[dict]) -> str:
    if table == "classify":
        lines = [CLASSIFY_HEADER, "|" + "---|" * 16]
        lines += [f"| `{r['name']}` | {r['family']} | {r['init']} | {r['epochs']} | {r['macro_f1']:.3f} | {r['macro_precision']:.3f} | "
                  f"{r['macro_recall']:.3f} | {r['accuracy']:.3f} | {r['ece']:.3f} | {r['minutes_per_epoch']:.2f} | {r['params_m']:.1f} | "
                  f"{r['latency_ms_with_heatmap']:.0f} | {r['lungs_removed_accuracy']:.3f} | {r['heatmap_in_lungs']:.0%} | "
                  f"{r['external_accuracy']:.2f} ({r['external_n']}) | {r['adults_called_viral_pneumonia']}/{r['adults_n']} |" for r in rows]
    else:
        lines = [SEGMENT_HEADER, "|" + "---|" * 8]
        lines += [f"| {r['arch']} | {r['shenzhen_dice']:.4f} | {r['shenzhen_iou']:.4f} ({r['shenzhen_n']}) | {r['covid_qu_ex_dice']:.4f} | "
                  f"{r['covid_qu_ex_iou']:.4f} ({r['covid_qu_ex_n']}) | {r['minutes_per_epoch']:.2f} | {r['latency_ms']:.0f} | "
                  f"{r['params_m']:.1f} |" for r in rows]
    commands = "\n".join(f"- `{r['name']}`: `{r['command']}`" for r in rows)
    return "\n".join(lines) + f"\n\nEach row's command:\n{commands}\n"


def from_repo_root(text: str) -> str:
    """Paths into the shared folder written from the repository root (`../shared/...`), as the README gives every command."""
    return text.replace(str(SHARED.parent), "../shared")


def portable(row: dict) -> dict:
    return {**row, "command": from_repo_root(row["command"])}


def write(cfg: TablesConfig, table: str, rows: list[dict]) -> None:
    rows = [portable(row) for row in rows]
    out = Path(cfg.results)
    out.mkdir(parents=True, exist_ok=True)
    # the table's protocol, not this invocation's selection of rows
    config = {k: v for k, v in asdict(cfg).items() if k not in ("rows", "ship", "retime")} | {"data": from_repo_root(cfg.data)}
    (out / f"{table}_table.json").write_text(json.dumps({"config": config, "rows": rows}, indent=2) + "\n")
    (out / f"{table}_table.md").write_text(markdown(table, rows))


TABLE_MARK = "## In the architecture table"


def ship(cfg: TablesConfig, name: str) -> Path:
    """Copy a measured table classifier into weights/<name>/ with its table figures in metrics.json and the card, and list
    it in zoo.toml (the leaderboard and Compare then show it like any zoo model)."""
    row = portable(json.loads((Path(cfg.runs) / "weights" / name / "table_row.json").read_text()))
    if row["macro_f1"] < SHIP_MIN_F1:
        raise SystemExit(f"{name} scores macro-F1 {row['macro_f1']:.3f} on the test split; the zoo ships classifiers from {SHIP_MIN_F1}.")
    target = zoo.REPO_ROOT / "weights" / name
    shutil.copytree(Path(cfg.runs) / "weights" / name, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("table_row.json"))
    metrics = json.loads((target / "metrics.json").read_text())
    (target / "metrics.json").write_text(json.dumps({**metrics, "table": row}, indent=2) + "\n")
    card = (target / "README.md").read_text().split(TABLE_MARK)[0].rstrip()
    (target / "README.md").write_text(f"{card}\n\n{table_card_section(row)}")
    zoo_file = zoo.REPO_ROOT / "weights" / "zoo.toml"
    if f'name = "{name}"' not in zoo_file.read_text():
        with zoo_file.open("a") as handle:
            handle.write(zoo_entry(row, json.loads((target / "config.json").read_text())))
    return target


SHIP_MIN_F1 = 0.85


def table_card_section(row: dict) -> str:
    return f"""{TABLE_MARK}

One row of `python -m train.tables --table classify` (results/classify_table.md), measured on the lung crops:

| figure | value | n |
|---|---|---|
| test split: macro-F1 / accuracy / ECE | {row['macro_f1']:.4f} / {row['accuracy']:.4f} / {row['ece']:.4f} | {row['n']} |
| **lungs removed** (test split): accuracy; chance is 0.33 | **{row['lungs_removed_accuracy']:.4f}** | {row['n']} |
| share of GradCAM mass inside the lung mask (test split) | {row['heatmap_in_lungs']:.1%} | {row['n']} |
| **other hospitals** (COVID-QU-Ex, TBX11K, NIH): accuracy | **{row['external_accuracy']:.4f}** | {row['external_n']} |
| other hospitals, lungs removed: accuracy | {row['external_lungs_removed_accuracy']:.4f} | {row['external_n']} |
| adult films from other hospitals (Shenzhen, RSNA, SIIM) called "Viral Pneumonia" | {row['adults_called_viral_pneumonia']} | {row['adults_n']} |
| CPU ms, the classifier with GradCAM (2 cores, intake excluded) | {row['latency_ms_with_heatmap']:.0f} | |
| parameters | {row['params_m']:.2f} M | |

Reproduce: `{row['command']}`
"""


def zoo_entry(row: dict, config: dict) -> str:
    pre = config["pretrained_cfg"]
    init = {"scratch": "from scratch", "imagenet": "ImageNet init", "mae": "MAE-pretrained on our own unlabelled CXRs"}[row["init"]]
    numbers = lambda values: "[" + ", ".join(f"{v:g}" for v in values) + "]"  # noqa: E731
    return f"""
[[model]]
name = "{row['name']}"
task = "classify"
arch = "{row['arch']}"
labels = [{", ".join(f'"{label}"' for label in config["label_names"])}]
input_size = {pre["input_size"][-1]}
mean = {numbers(pre["mean"])}
std = {numbers(pre["std"])}
source = "local:weights/{row['name']}"
license = "apache-2.0"
description = "ARCHITECTURE TABLE: {row['family']} `{row['arch']}`, {init}, {row['epochs']} epochs on cxr-3class lung crops at {pre["input_size"][-1]} px (train.tables)."
caveat = "{VIRAL_PNEUMONIA_CAVEAT}"
"""


VIRAL_PNEUMONIA_CAVEAT = ("Its Viral Pneumonia images are all of young children from one hospital: the model may be recognising a child, "
                          "not a disease. Check where the heatmap looks.")


def main(argv=None) -> list[dict]:
    cfg = parse_config(TablesConfig, argv, __doc__)
    for name in cfg.ship:
        print(f"shipped {name} to {ship(cfg, name)}")
    if cfg.ship:
        return []
    if cfg.retime:
        retime(cfg)
        return []
    rows = classify_table(cfg) if cfg.table == "classify" else segment_table(cfg)
    print(markdown(cfg.table, rows))
    return rows


if __name__ == "__main__":
    main()
