"""One export path for every task: `weights/<name>/` with config, safetensors, metrics and a model card."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from safetensors.torch import save_file


def export_checkpoint(out_dir: str | Path, state_dict: dict[str, torch.Tensor], config: dict, metrics: dict, card_body: str,
                      card_data: ModelCardData, half: bool = True) -> Path:
    """Write config.json, model.safetensors (fp16 by default), metrics.json and README.md into `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if half and v.is_floating_point() else v).contiguous().cpu() for k, v in state_dict.items()}
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n{card_body.strip()}\n").save(out / "README.md")
    return out
