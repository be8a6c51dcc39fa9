"""Fit the "is this like the training images?" gate for a classifier and store it in its checkpoint.

    python -m train.gate --model cxr-effnet-lite0 --data ../shared/data/cxr-3class

`train.classify` does this itself at export; this CLI adds or refreshes the gate on an existing checkpoint.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from cxr_demo import zoo
from cxr_demo.zoo.gate import FeatureGate, capture_pre_logits, split_state
from train import data as datasets
from train.cli import parse_config


@torch.inference_mode()
def pooled_features(model: torch.nn.Module, batches) -> torch.Tensor:
    model.eval()
    with capture_pre_logits(model) as captured:
        for x, _ in tqdm(batches, desc="features", leave=False):
            model(x)
        return torch.cat(list(captured))


@dataclass
class GateConfig:
    model: str
    data: str
    seed: int = 0


def fit_gate(model, pixels, labels, splits, steps: str, mean, std) -> tuple[FeatureGate, dict]:
    train_features = pooled_features(model, datasets.evaluation_batches(pixels, labels, splits["train"], steps, mean, std))
    val_features = pooled_features(model, datasets.evaluation_batches(pixels, labels, splits["val"], steps, mean, std))
    gate = FeatureGate.fit(train_features, val_features)
    flagged = float((gate.score(val_features) > gate.threshold).float().mean())
    return gate, {"threshold": round(gate.threshold, 4), "val_flagged": round(flagged, 4)}


def main(argv=None) -> None:
    args = parse_config(GateConfig, argv, __doc__)
    loaded = zoo.load(args.model)
    data = datasets.read_class_folders(args.data)
    splits = datasets.split_80_10_10(data, seed=args.seed)
    pixels = np.asarray(datasets.cached_pixels(data.paths, loaded.spec.input_size))
    gate, stats = fit_gate(loaded.module, pixels, data.labels, splits, loaded.options.get("preprocess", "none"),
                           loaded.spec.mean, loaded.spec.std)
    weights, _ = split_state(load_file(loaded.folder / zoo.WEIGHTS_FILE))
    save_file({**weights, **gate.state_dict()}, loaded.folder / zoo.WEIGHTS_FILE, metadata={"format": "pt"})
    config = json.loads((loaded.folder / "config.json").read_text())
    config.setdefault("cxr_demo", {})["gate_threshold"] = gate.threshold
    (loaded.folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    metrics = json.loads((loaded.folder / "metrics.json").read_text())
    metrics["gate"] = stats
    (loaded.folder / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
