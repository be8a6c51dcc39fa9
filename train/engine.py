"""The one training loop behind every `train.*` trainer.

A `Trainer` subclass supplies data, model, loss, a validation score and its model card; `fit` does the rest: seed and
threads, the run folder `runs/<name>/`, resuming from `last.pt`, one JSON history line per epoch, `best.pt` (best
validation score, later epochs win ties) and the export to `<out>/<name>/` through `train.export.export_checkpoint`.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch
from huggingface_hub import ModelCardData
from safetensors.torch import load_file
from tqdm import tqdm

from train.cli import parse_config
from train.export import export_checkpoint


@dataclass(kw_only=True)
class TrainConfig:
    """The fields every trainer has. A trainer's config subclasses this, adds its own fields and may restate a default."""
    name: str | None = None  # runs/<name>/ and <out>/<name>/; trainers without a fixed name derive one (`run_name`)
    init: str | None = None  # starting weights: a .safetensors file, "hub" (needs network) or None
    epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    img_size: int = 224
    preprocess: str = "equalize"
    seed: int = 0
    out: str = "weights"
    runs: str = "runs"
    max_steps: int | None = None  # stop each epoch early (smoke tests)
    threads: int | None = None
    push_to_hub: str | None = None  # a Hub repo id to upload the export to

    @property
    def run_name(self) -> str:
        return self.name


@dataclass
class Export:
    """What a trainer hands the shared export step: everything `export_checkpoint` writes and the line printed last."""
    config: dict
    metrics: dict
    card: str
    card_data: ModelCardData
    summary: dict = field(default_factory=dict)
    extra_weights: dict[str, torch.Tensor] = field(default_factory=dict)  # stored beside the network's (the classifier's gate)


class Trainer:
    """One task's data, model, loss, validation and export. `__init__(cfg)` sets the attributes below, building data,
    model, optimizer and scheduler in the order that draws from the seeded random streams."""

    cfg: TrainConfig
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any  # a torch LR scheduler (stepped per batch) or a timm scheduler (`step_update` with the update count)
    steps_per_epoch: int
    train_batches: Iterable  # what `batches` returns unless a trainer overrides it
    max_grad_norm: float | None = None

    # supplied by each trainer
    def build_model(self, init: str | None) -> torch.nn.Module: ...  # the export rebuilds it with init=None, loads best.pt
    def loss(self, batch) -> torch.Tensor: ...
    def validate(self) -> tuple[dict, float]: ...  # this epoch's history fields, and the score best.pt is chosen on
    def export(self, model: torch.nn.Module, state: dict) -> Export: ...

    # hooks with defaults
    def batches(self, epoch: int) -> Iterable:
        return self.train_batches

    def start_epoch(self, epoch: int) -> None:
        self.model.train()

    def after_step(self, update: int) -> None:
        """After each optimizer and scheduler step (an EMA update); `update` counts from 0 across epochs."""

    @property
    def selected(self) -> torch.nn.Module:
        """The network validated and saved as best.pt (an EMA copy where the trainer keeps one)."""
        return self.model

    def resumable(self) -> dict[str, Any]:
        """What last.pt holds. timm schedulers need nothing: they recompute the rate from the update count."""
        parts = {"model": self.model, "optimizer": self.optimizer}
        if isinstance(self.scheduler, torch.optim.lr_scheduler.LRScheduler):
            parts["scheduler"] = self.scheduler
        return parts

    def after_export(self, out: Path, export: Export) -> None:
        """Add to the exported folder (and to `export.summary`) before the summary is printed."""

    @classmethod
    def train(cls, cfg: TrainConfig) -> Path:
        """Train (or resume) and export; each trainer module exposes this as its `train(cfg)`. Returns the exported folder."""
        return fit(cfg, cls)


def main(config_cls: type[TrainConfig], make_trainer: Callable[[TrainConfig], Trainer], doc: str, required=()) -> Path:
    """The command line of a trainer module: `python -m train.<task> --flags`."""
    return fit(parse_config(config_cls, None, doc, required), make_trainer)


def fit(cfg: TrainConfig, make_trainer: Callable[[TrainConfig], Trainer]) -> Path:
    """Seed, threads and run folder; train (or resume) and export. Returns the exported folder."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run_dir = Path(cfg.runs) / cfg.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    trainer = make_trainer(cfg)
    state = resume(trainer, run_dir / "last.pt")
    for epoch in range(state["epoch"], cfg.epochs):
        row, minutes = train_epoch(trainer, epoch)
        fields, score = trainer.validate()
        state["history"].append({**row, **fields, "minutes": minutes})
        print(json.dumps(state["history"][-1]), flush=True)
        if score >= state["best"]:
            state["best"] = score
            torch.save(trainer.selected.state_dict(), run_dir / "best.pt")
        state["epoch"] = epoch + 1
        torch.save({**{key: part.state_dict() for key, part in trainer.resumable().items()}, "state": state}, run_dir / "last.pt")
        (run_dir / "history.json").write_text(json.dumps(state["history"], indent=2))
    return finish(trainer, run_dir, state)


def resume(trainer: Trainer, last: Path) -> dict:
    if not last.exists():
        return {"epoch": 0, "best": -1.0, "history": []}
    saved = torch.load(last, map_location="cpu", weights_only=True)
    for key, part in trainer.resumable().items():
        part.load_state_dict(saved[key])
    state = saved["state"]
    # runs saved before the shared engine named their best score per task ("best_dice", "best_f1", "best_val")
    state.setdefault("best", next((v for k, v in state.items() if k.startswith("best")), -1.0))
    print(f"resuming {trainer.cfg.run_name} after epoch {state['epoch']}", flush=True)
    return state


def train_epoch(trainer: Trainer, epoch: int) -> tuple[dict, float]:
    """One pass over the training batches: the history row so far, and the minutes it took."""
    optimizer, steps = trainer.optimizer, trainer.steps_per_epoch
    trainer.start_epoch(epoch)
    start, losses = time.perf_counter(), []
    bar = tqdm(trainer.batches(epoch), total=steps, desc=f"epoch {epoch + 1}/{trainer.cfg.epochs}")
    for step, batch in enumerate(bar):
        if step >= steps:  # checked after the batch is drawn, so the random streams match runs without --max-steps
            break
        loss = trainer.loss(batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if trainer.max_grad_norm:
            torch.nn.utils.clip_grad_norm_(trainer.model.parameters(), trainer.max_grad_norm)
        optimizer.step()
        update = epoch * steps + step
        if hasattr(trainer.scheduler, "step_update"):
            trainer.scheduler.step_update(update + 1)
        else:
            trainer.scheduler.step()
        trainer.after_step(update)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    return {"epoch": epoch + 1, "train_loss": float(np.mean(losses))}, (time.perf_counter() - start) / 60


def load_imagenet(network: torch.nn.Module, path: str | Path) -> None:
    """An ImageNet checkpoint (.safetensors) into a backbone network that has no classifier of its own; its
    classifier is dropped, and every other weight must fit."""
    if not Path(path).is_file():
        raise SystemExit(f"--init {path}: no such file")
    head = ("classifier.", "fc.")
    result = network.load_state_dict({k: v for k, v in load_file(path).items() if not k.startswith(head)}, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(head)]
    if missing or result.unexpected_keys:
        raise SystemExit(f"--init {path} does not fit {type(network).__name__}: {len(missing)} keys missing "
                         f"({missing[:2]}), {len(result.unexpected_keys)} unexpected ({result.unexpected_keys[:2]})")


@torch.inference_mode()
def predict(model: torch.nn.Module, batches: Iterable, head: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """`head(model, x)` (by default the model's float output) for every (x, y) batch, and the y's."""
    model.eval()
    outs, labels = [], []
    for x, y in tqdm(batches, desc="eval", leave=False):
        outs.append(head(model, x) if head else model(x).float())
        labels.append(y)
    return torch.cat(outs), torch.cat(labels)


def progress(state: dict) -> dict:
    """The run's part of metrics.json."""
    minutes = [h["minutes"] for h in state["history"]]
    return {"minutes_per_epoch": float(np.median(minutes)) if minutes else 0.0, "epochs": state["epoch"], "history": state["history"]}


def finish(trainer: Trainer, run_dir: Path, state: dict) -> Path:
    """Load best.pt into a fresh network, write the trainer's export and print its summary as one JSON line."""
    cfg = trainer.cfg
    model = trainer.build_model(init=None)
    model.load_state_dict(torch.load(run_dir / "best.pt", map_location="cpu", weights_only=True))
    export = trainer.export(model, state)
    out = export_checkpoint(Path(cfg.out) / cfg.run_name, {**model.state_dict(), **export.extra_weights}, export.config,
                            export.metrics, export.card, export.card_data)
    trainer.after_export(out, export)
    print(json.dumps(export.summary), flush=True)
    if cfg.push_to_hub:  # the same upload as `python -m train.publish`: the card carries model-index, refusals are one line
        from train.publish import publish

        print(f"pushed to https://huggingface.co/{cfg.push_to_hub} at revision {publish(out, cfg.push_to_hub)}")
    return out
