"""Publish an exported checkpoint `weights/<NAME>/` to a Hugging Face model repo, its card carrying `model-index` metrics.

    python -m train.publish cxr-lungcrop-effnet-lite0 --repo my-org/cxr-lungcrop-effnet-lite0 [--private]

Needs the internet and `huggingface-cli login` (or HF_TOKEN) with write access. Prints the new revision and the zoo.toml line
that pins it: `source = "hf-hub:org/repo@<revision>"`.
"""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard

from train.cli import parse_config, usage_error

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"
REQUIRED = ("config.json", "model.safetensors", "README.md", "metrics.json")
# metrics.json key -> (model-index metric type, shown name)
METRICS = {
    "macro_f1": ("f1", "macro-F1"), "accuracy": ("accuracy", "accuracy"), "macro_precision": ("precision", "macro precision"),
    "macro_recall": ("recall", "macro recall"), "ece": ("ece", "ECE"), "dice": ("dice", "Dice"), "iou": ("iou", "IoU"),
    "map50": ("map50", "mAP@0.5"), "map": ("map", "mAP@[.5:.95]"),
    "cxr_flagged": ("cxr_flagged", "share of frontal CXRs flagged"), "others_flagged": ("others_flagged", "share of other inputs flagged"),
}
TASK_TYPES = {"classify": "image-classification", "check": "image-classification", "multitask": "image-classification",
              "zeroshot": "zero-shot-image-classification", "segment": "image-segmentation", "detect": "object-detection"}
DATASETS = {"classify": "cxr-3class", "check": "cxr-3class", "multitask": "cxr-3class", "zeroshot": "cxr-3class",
            "segment": "lung-masks", "detect": "rsna-lung-opacity"}
MASK_METRICS = {"dice", "iou"}  # a multi-task model's mask figures are on the lung-mask data, not cxr-3class


@dataclass
class PublishConfig:
    name: str = field(metadata={"help": "the checkpoint folder weights/<NAME>/ (also the first argument)"})
    repo: str = field(metadata={"help": "the Hub model repo, org/repo"})
    private: bool = field(default=False, metadata={"help": "create the repo private"})
    weights: Path = field(default=WEIGHTS, metadata={"help": "where the checkpoint folders are"})


def eval_results(name: str, metrics: dict) -> list[EvalResult]:
    """One EvalResult per figure in metrics.json's test split (validation when there is no test split); a zero-shot model's
    prompt presets each give their own."""
    task = metrics.get("task", "classify")
    key = "test" if isinstance(metrics.get("test"), dict) else "val"
    split = "test" if key == "test" else "validation"
    figures = metrics.get(key) or {}
    data = metrics.get("data") if isinstance(metrics.get("data"), dict) else {}
    def numeric(block: dict) -> bool:
        return any(isinstance(block.get(m), (int, float)) for m in METRICS)
    # a zero-shot model's figures are per prompt preset: {"clinical": {...}, "naive": {...}}
    groups = {} if numeric(figures) else {k: v for k, v in figures.items() if isinstance(v, dict) and numeric(v)}
    blocks = [(f" ({preset} prompts)", block) for preset, block in groups.items()] or [("", figures)]
    results = []
    for suffix, block in blocks:
        for key, (metric_type, shown) in METRICS.items():
            value = block.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            mask = task == "multitask" and key in MASK_METRICS
            dataset = "lung-masks" if mask else data.get("path") if isinstance(data.get("path"), str) else DATASETS.get(task, "cxr-demo")
            results.append(EvalResult(
                task_type="image-segmentation" if mask else TASK_TYPES.get(task, "image-classification"), dataset_type=dataset,
                dataset_name=dataset, dataset_split=split, metric_type=metric_type, metric_name=shown + suffix,
                metric_value=round(float(value), 4)))
    if not results:
        raise ValueError(f"{name}: metrics.json has no test or validation figures to put in the card's model-index.")
    return results


def card_with_model_index(folder: str | Path) -> ModelCard:
    """The folder's README.md model card with `model-index` built from its metrics.json (offline; nothing is written)."""
    folder = Path(folder)
    card = ModelCard.load(folder / "README.md")
    metrics = json.loads((folder / "metrics.json").read_text())
    card.data.model_name = card.data.model_name or folder.name
    card.data.eval_results = eval_results(folder.name, metrics)
    return ModelCard(f"---\n{card.data.to_yaml()}\n---\n{card.text}")


def publish(folder: Path, repo: str, private: bool = False) -> str:
    """Upload the folder (its card with model-index) to a model repo in one commit; returns the commit sha."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise RuntimeError("the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE is set. Unset it, connect, and log in "
                           "(`huggingface-cli login` or HF_TOKEN with write access).")
    if not get_token():
        raise RuntimeError("not logged in to the Hugging Face Hub: run `huggingface-cli login` or set HF_TOKEN (a token with write access).")
    card = card_with_model_index(folder)
    api = HfApi()
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / folder.name
        shutil.copytree(folder, staged, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pt", "*.bin", "*.pth"))
        card.save(staged / "README.md")
        try:
            api.create_repo(repo, repo_type="model", exist_ok=True, private=private or None)
            commit = api.upload_folder(repo_id=repo, repo_type="model", folder_path=str(staged),
                                       commit_message=f"Publish {folder.name} from cxr-demo (python -m train.publish)")
        except Exception as error:  # noqa: BLE001 - network, auth, permissions: one line, no traceback
            first = str(error).strip().splitlines()[0] if str(error).strip() else ""
            raise RuntimeError(f"the Hugging Face Hub refused or could not be reached ({type(error).__name__}: {first[:200]}). "
                               f"Check the connection and that you are logged in with write access.") from None
    return commit.oid


def main(argv: list[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):  # `python -m train.publish NAME --repo org/repo`
        argv = ["--name", argv[0], *argv[1:]]
    cfg = parse_config(PublishConfig, argv, __doc__)
    if cfg.repo.count("/") != 1 or not all(cfg.repo.split("/")):
        usage_error(f"--repo must be org/repo, got {cfg.repo!r}")
    folder = Path(cfg.weights) / cfg.name
    missing = [f for f in REQUIRED if not (folder / f).is_file()]
    if missing:
        usage_error(f"{folder} lacks {', '.join(missing)}: export it first with its `python -m train.<module>` trainer.")
    try:
        revision = publish(folder, cfg.repo, cfg.private)
    except (RuntimeError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(1) from None
    print(f"Published {cfg.name} to https://huggingface.co/{cfg.repo} at revision {revision}")
    print(f"In weights/zoo.toml, model {cfg.name!r}:")
    print(f'source = "hf-hub:{cfg.repo}@{revision}"')
    return revision


if __name__ == "__main__":
    main()
