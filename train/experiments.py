"""The seeds' experiments, at the scale a 2-core CPU allows: training-data fraction and last-layers vs full fine-tuning.

    python -m train.experiments --data ../shared/data/cxr-3class \
        --init ../shared/weights-init/tf_efficientnet_lite0_imagenet.safetensors --epochs 3

Every variant is a `train.classify` run with the same split, seed, schedule and test set; only the fraction of the
training split or the trainable layers change. Checkpoints go to runs/experiments/ (not the zoo); the figures go to
results/seed_experiments.json, which the leaderboard reads. Runs resume, so an interrupted sweep picks up where it stopped.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from train.classify import ClassifyConfig, train
from train.cli import parse_config

RESULTS = Path("results") / "seed_experiments.json"


@dataclass
class ExperimentsConfig:
    data: str
    init: str | None = None
    arch: str = "tf_efficientnet_lite0"
    epochs: int = 3
    lr: float = 3e-4
    fractions: list[str] = field(default_factory=list)  # default 1.0 0.75 0.5 0.25
    train_last: int = 2
    runs: str = "runs/experiments"
    threads: int | None = None
    results: str = str(RESULTS)


def variants(cfg: ExperimentsConfig) -> list[tuple[str, str, dict]]:
    """(name, what it tests, ClassifyConfig overrides)."""
    fractions = [float(f) for f in cfg.fractions] or [1.0, 0.75, 0.5, 0.25]
    found = [(f"exp-{cfg.arch}-data{round(f * 100)}", f"{round(f * 100)}% of the training split, full fine-tuning", {"fraction": f})
             for f in fractions]
    found.append((f"exp-{cfg.arch}-last{cfg.train_last}", f"100% of the data, only the last {cfg.train_last} blocks + head trained",
                  {"train_last": cfg.train_last}))
    return found


def command(cfg: ExperimentsConfig, overrides: dict, name: str) -> str:
    flags = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in overrides.items())
    return (f"python -m train.classify --data {cfg.data} --arch {cfg.arch} --init {cfg.init} --epochs {cfg.epochs} "
            f"--lr {cfg.lr} --name {name} {flags}")


def run(cfg: ExperimentsConfig) -> list[dict]:
    rows = []
    for name, description, overrides in variants(cfg):
        classify_cfg = ClassifyConfig(data=cfg.data, arch=cfg.arch, name=name, init=cfg.init, epochs=cfg.epochs, lr=cfg.lr,
                                      runs=cfg.runs, out=str(Path(cfg.runs) / "weights"), threads=cfg.threads, **overrides)
        metrics_file = Path(classify_cfg.out) / name / "metrics.json"
        if not metrics_file.is_file():
            train(classify_cfg)
        metrics = json.loads(metrics_file.read_text())
        test = metrics["test"]
        rows.append({
            "name": name, "experiment": description, **overrides,
            "train_images": metrics["data"]["sizes"]["train"],
            **{k: test[k] for k in ("macro_f1", "macro_precision", "macro_recall", "accuracy", "ece", "n")},
            "minutes_per_epoch": metrics["minutes_per_epoch"], "epochs": metrics["epochs"],
            "data": f"{Path(cfg.data).name}, test split (seeded 80/10/10, seed 0)",
            "command": command(cfg, overrides, name),
            "config": asdict(classify_cfg),
        })
        Path(cfg.results).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.results).write_text(json.dumps({"experiments": rows}, indent=2) + "\n")
    return rows


def main(argv=None) -> list[dict]:
    cfg = parse_config(ExperimentsConfig, argv, __doc__, required=("data",))
    rows = run(cfg)
    for row in rows:
        print(f"{row['experiment']:<58} train n={row['train_images']:<5} macro-F1 {row['macro_f1']:.4f}  "
              f"accuracy {row['accuracy']:.4f}  {row['minutes_per_epoch']:.2f} min/epoch")
    print(json.dumps({row["name"]: row["macro_f1"] for row in rows}))
    return rows


if __name__ == "__main__":
    main()
