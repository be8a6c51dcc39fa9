"""What the zoo knows about a model before loading it (`ModelSpec`), what a load gives (`Loaded`), and the errors."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cxr_demo.zoo.gate import FeatureGate
from cxr_demo.zoo.task_table import KINDS


class UnknownModel(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


class ModelUnavailable(RuntimeError):
    """The model is listed but cannot be loaded; the message says why and what to do."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # the zoo kind: a key of task_table.KINDS
    arch: str
    source: str
    labels: tuple[str, ...] = ()
    input_size: int = 224
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    license: str = "unknown"
    default: bool = False
    description: str = ""
    caveat: str = ""  # what a user must read before trusting this model; the UI shows it with the model
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self):
        if self.task not in KINDS:
            raise ValueError(f"Model {self.name!r}: task must be one of {tuple(KINDS)}, got {self.task!r}.")
        if not self.source.startswith(("local:", "hf-hub:")):
            raise ValueError(f"Model {self.name!r}: source must start with 'local:' or 'hf-hub:', got {self.source!r}.")

    @property
    def is_hub(self) -> bool:
        return self.source.startswith("hf-hub:")

    @classmethod
    def from_dict(cls, entry: dict) -> "ModelSpec":
        known = {f for f in cls.__dataclass_fields__ if f != "extra"}
        unknown = {k: v for k, v in entry.items() if k not in known}
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in entry.items() if k in known}
        return cls(**values, extra=unknown)


@dataclass
class Loaded:
    """A ready-to-run model with everything a predictor needs."""

    spec: ModelSpec
    module: torch.nn.Module
    config: dict
    folder: Path
    gate: FeatureGate | None = None
    # hooks and requires_grad toggles (CAM) are per-module state: one request at a time per model
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def options(self) -> dict:
        return self.config.get("cxr_demo", {})
