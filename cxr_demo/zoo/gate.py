"""Is this image like the ones the model was trained on? A diagonal-Gaussian gate on the classifier's own features.

It cannot say what an image is, only how far its features lie from the training images'. Measured, it does not tell a
photo or a document from a chest film (the README's limitations), so it only adds a warning; refusing non-CXR input is the
input check's job (`cxr_demo.intake.check`).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

PREFIX = "gate."
QUANTILE = 0.995  # of validation scores: about 1 in 200 ordinary images is flagged


@dataclass(frozen=True)
class FeatureGate:
    mean: torch.Tensor
    inv_std: torch.Tensor
    threshold: float

    def score(self, features: torch.Tensor) -> torch.Tensor:
        """Mean squared z-score per image; about 1 for typical training images."""
        return (((features.float() - self.mean) * self.inv_std) ** 2).mean(-1)

    def is_unfamiliar(self, features: torch.Tensor) -> bool:
        return bool(self.score(features).max() > self.threshold)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {PREFIX + "mean": self.mean, PREFIX + "inv_std": self.inv_std}

    @classmethod
    def fit(cls, train_features: torch.Tensor, val_features: torch.Tensor) -> "FeatureGate":
        mean = train_features.float().mean(0)
        inv_std = 1.0 / train_features.float().std(0).clamp_min(1e-3)
        gate = cls(mean, inv_std, 0.0)
        threshold = float(np.quantile(gate.score(val_features).numpy(), QUANTILE)) * 1.25
        return cls(mean, inv_std, threshold)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], threshold: float | None) -> "FeatureGate | None":
        if threshold is None or PREFIX + "mean" not in state:
            return None
        return cls(state[PREFIX + "mean"].float(), state[PREFIX + "inv_std"].float(), float(threshold))


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(model weights, gate tensors) from one checkpoint."""
    model = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    return model, {k: v for k, v in state.items() if k.startswith(PREFIX)}


@contextmanager
def capture_pre_logits(model: torch.nn.Module):
    """Collect what enters the classifier layer (the pooled features) during any forward pass."""
    captured: list[torch.Tensor] = []
    handle = model.get_classifier().register_forward_hook(lambda m, args, out: captured.append(args[0].detach()))
    try:
        yield captured
    finally:
        handle.remove()
