"""Evaluate a zoo model on a folder. The last printed line is one JSON object.

    python -m train.evaluate --data ../shared/data/cxr-3class --split test --json
    python -m train.evaluate --model cxr-effnet-lite0 --data DIR --json

`--data` in the COVID-19 Radiography Database layout (`<Class>/images/*`) gives the metrics; a flat folder of
unlabelled images gives the distribution of predicted classes (useful as a shortcut probe on other hospitals).
Images go through exactly the app's path: `read_xray` -> the model's preprocessing -> temperature-scaled softmax.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from cxr_demo import classify, zoo
from cxr_demo.io import InvalidImage, read_xray
from cxr_demo.preprocess import upsample_to
from PIL import Image
from train import data as datasets
from cxr_demo.metrics import classification_report

TASKS = ("classify", "zeroshot", "segment", "detect")
# a multi-task model is scored as a classifier or as a segmenter
SERVES = {"classify": {"classify", "multitask"}, "segment": {"segment", "multitask"}}


def classifier_logits(model_name: str, paths: list[Path], batch_size: int = 32) -> torch.Tensor:
    loaded = zoo.load(model_name)
    outputs = []
    for start in tqdm(range(0, len(paths), batch_size), desc="evaluate", unit="batch", file=sys.stderr):
        batch = torch.cat([classify.prepare(read_xray(p), loaded) for p in paths[start:start + batch_size]])
        with torch.inference_mode():
            output = loaded.module(batch)
        outputs.append((output[1] if isinstance(output, tuple) else output).float())
    return torch.cat(outputs)


def evaluate_classifier(model_name: str, data_dir: Path, split: str, seed: int) -> dict:
    loaded = zoo.load(model_name)
    labels = list(loaded.config.get("label_names") or loaded.spec.labels)
    temperature = float(loaded.options.get("temperature", 1.0))
    if not any(p.is_dir() for p in data_dir.iterdir()):
        return predicted_distribution(model_name, data_dir, labels, temperature)
    folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    unknown = [f for f in folders if f not in labels]
    if unknown:
        raise SystemExit(f"Folders {unknown} are not classes of {model_name} ({labels}). Rename them or remove them.")
    data = datasets.read_class_folders(data_dir, folders)
    index = np.arange(len(data)) if split == "all" else datasets.split_80_10_10(data, seed)[split]
    data = data.subset(index)
    targets = torch.tensor([labels.index(data.classes[i]) for i in data.labels])
    logits = classifier_logits(model_name, data.paths)
    report = classification_report(logits, targets, labels, temperature)
    return {"model": model_name, "task": "classify", "data": str(data_dir), "split": split, **report}


def predicted_distribution(model_name: str, data_dir: Path, labels: list[str], temperature: float) -> dict:
    paths = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in datasets.IMAGE_SUFFIXES | {".dcm"})
    readable = []
    for p in paths:
        try:
            read_xray(p)
            readable.append(p)
        except InvalidImage:
            continue
    probs = (classifier_logits(model_name, readable) / temperature).softmax(1)
    counts = np.bincount(probs.argmax(1).numpy(), minlength=len(labels))
    return {"model": model_name, "task": "classify", "data": str(data_dir), "n": len(readable),
            "predicted": {label: int(c) for label, c in zip(labels, counts)},
            "mean_probability": {label: round(float(v), 4) for label, v in zip(labels, probs.mean(0))}}


def evaluate_segmenter(model_name: str, data_dir: Path, masks: str) -> dict:
    """Mean Dice/IoU over a folder with images/ and masks/ (or `--masks NAME`), or a pairs.csv, through the app's predictor."""
    from cxr_demo import segment
    from train.seg_data import read_image_mask_folder, read_pairs_csv

    pairs = read_pairs_csv(data_dir) if data_dir.suffix == ".csv" else read_image_mask_folder(data_dir, masks=masks)
    scores = []
    for pair in tqdm(pairs, desc="evaluate", unit="img", file=sys.stderr):
        xray = read_xray(pair.image)
        with Image.open(pair.mask) as mask:
            reference = upsample_to((np.asarray(mask.convert("L")) > 127).astype(np.float32), xray.shape) >= 0.5
        scores.append(segment.overlap(segment.predict(xray, model_name).mask, reference))
    dice, iou = np.mean(scores, axis=0)
    return {"model": model_name, "task": "segment", "data": str(data_dir), "n": len(pairs), "dice": float(dice), "iou": float(iou)}


def evaluate_zeroshot(loaded: zoo.Loaded, paths: list[Path], labels: list[str], presets: list[str] | None = None) -> dict[str, dict]:
    """A classification report per prompt preset, through the app's zero-shot path (image embeddings computed once)."""
    from cxr_demo import zeroshot

    unknown = [p for p in presets or [] if p not in zeroshot.PRESETS]
    if unknown:
        raise SystemExit(f"Unknown prompt preset {unknown[0]!r}; choose from {', '.join(zeroshot.PRESETS)} or 'all'.")
    sample = zeroshot.LabelledSample(tuple(paths), tuple(labels))
    sets = [zeroshot.PRESETS[name] for name in (presets or zeroshot.PRESETS)]
    return {score.prompt_set: score.report for score in zeroshot.score_prompt_sets(loaded, sets, sample)}


def evaluate_zeroshot_folder(model_name: str, data_dir: Path, split: str, seed: int, prompts: str) -> dict:
    data = datasets.read_class_folders(data_dir)
    index = np.arange(len(data)) if split == "all" else datasets.split_80_10_10(data, seed)[split]
    data = data.subset(index)
    reports = evaluate_zeroshot(zoo.load(model_name), data.paths, [data.classes[i] for i in data.labels],
                                None if prompts == "all" else [prompts])
    headline = "clinical" if prompts == "all" else prompts
    result = {"model": model_name, "task": "zeroshot", "prompts": headline, "data": str(data_dir), "split": split, **reports[headline]}
    if prompts == "all":
        result["by_preset"] = {name: {k: r[k] for k in ("macro_f1", "accuracy", "confusion_matrix")} for name, r in reports.items()}
        values = [r["macro_f1"] for r in reports.values()]
        result["spread_macro_f1"] = max(values) - min(values)
    return result


def print_summary(result: dict) -> None:
    for name, row in result.get("by_preset", {}).items():
        print(f"  prompts {name:<10} macro-F1 {row['macro_f1']:.4f}  accuracy {row['accuracy']:.4f}")
    if "macro_f1" in result:
        print(f"{result['model']}{' with prompts ' + result['prompts'] if 'prompts' in result else ''} on {result['data']} ({result['split']}, n={result['n']}): "
              f"macro-F1 {result['macro_f1']:.4f}  accuracy {result['accuracy']:.4f}  "
              f"precision {result['macro_precision']:.4f}  recall {result['macro_recall']:.4f}  "
              f"ECE {result['ece_uncalibrated']:.4f} -> {result['ece']:.4f} (T={result['temperature']:.2f})")
        for name, row in result["per_class"].items():
            print(f"  {name:<18} F1 {row['f1']:.4f}  P {row['precision']:.4f}  R {row['recall']:.4f}  n={row['support']}")
    elif "map50" in result:
        print(f"{result['model']} on {result['data']} (n={result['n']}): mAP@0.5 {result['map50']:.4f}  mAP@[.5:.95] {result['map']:.4f}")
    elif "dice" in result:
        print(f"{result['model']} on {result['data']} (n={result['n']}): Dice {result['dice']:.4f}  IoU {result['iou']:.4f}")
    elif "predicted" in result:
        print(f"{result['model']} on {result['data']} (unlabelled, n={result['n']}): predicted {result['predicted']}")


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path)
    parser.add_argument("--model", help="zoo model name (default: the zoo's default for --task)")
    parser.add_argument("--task", choices=TASKS, default="classify")
    parser.add_argument("--split", choices=("all", "train", "val", "test"), default="all",
                        help="evaluate the seeded 80/10/10 split's part of --data (the training split)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", help="prompt preset for --task zeroshot (default clinical; 'all' scores every preset)")
    parser.add_argument("--held-out", action="store_true", help="detect: only the images the model's metrics.json lists as held out")
    parser.add_argument("--masks", default="masks", help="mask folder name beside images/ (segment), e.g. 'lung masks'")
    parser.add_argument("--json", action="store_true", help="end with one JSON line (always printed; kept for scripts)")
    args = parser.parse_args(argv)
    if not (args.data.is_dir() or (args.task == "segment" and args.data.suffix == ".csv" and args.data.is_file())):
        parser.error(f"--data {args.data} is not a folder" + (" or a pairs.csv" if args.task == "segment" else ""))
    try:
        model = args.model or zoo.default(args.task).name
        model_task = zoo.get(model).task
        if model_task not in SERVES.get(args.task, {args.task}):
            parser.error(f"{model} is a {model_task} model; pass --task {'segment' if model_task == 'multitask' else model_task}")
        if args.task == "classify":
            result = evaluate_classifier(model, args.data, args.split, args.seed)
        elif args.task == "zeroshot":
            result = evaluate_zeroshot_folder(model, args.data, args.split, args.seed, args.prompts or "clinical")
        elif args.task == "detect":
            from train.detect import evaluate_detector
            result = evaluate_detector(model, args.data, only_held_out=args.held_out)
        elif args.task == "segment":
            result = evaluate_segmenter(model, args.data, args.masks)
        else:
            parser.error(f"--task {args.task}: no evaluator yet")
    except (zoo.UnknownModel, zoo.ModelUnavailable) as error:
        parser.exit(2, f"error: {error}\n")
    print_summary(result)
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
