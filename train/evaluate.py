"""Evaluate a zoo model on a folder. The last printed line is one JSON object.

    python -m train.evaluate --data ../shared/data/cxr-3class --split test --json
    python -m train.evaluate --model cxr-effnet-lite0 --data DIR --json

`--data` in the COVID-19 Radiography Database layout (`<Class>/images/*`) gives the metrics; any other folder is read
as unlabelled images (recursively) and gives the distribution of predicted classes (a shortcut probe on other hospitals).
Images go through exactly the app's path: `read_xray` -> intake (input check and lung mask) -> the model's crop and
preprocessing -> temperature-scaled softmax. Every classify result also reports `flagged`: the share of files the input
check refuses or flags, unreadable files included.

    python -m train.evaluate --task check --data DIR --json            # only the input check: flagged share and reasons
    python -m train.evaluate --data ../shared/data/cxr-3class --split test --lungs-removed --json   # the shortcut, as accuracy
    python -m train.evaluate --data ../shared/data/cxr-3class --split test --heatmap-share --json   # GradCAM mass inside the lungs
    python -m train.evaluate --data ../shared/data/cxr-3class --split test --shift all --json       # another hospital, simulated
"""
from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from cxr_demo import zoo
from cxr_demo.intake import intake
from cxr_demo.intake.lungs import BLANK_FILLS, Lungs, blank_lungs
from cxr_demo.io import InvalidImage, XRay, read_xray
from cxr_demo.io.preprocess import upsample_to
from cxr_demo.tasks import classify
from cxr_demo.tasks.metrics import classification_report
from train import data as datasets
from train.cli import parse_config, usage_error
from train.site_shift import SHIFTS


def image_paths(data_dir: Path) -> list[Path]:
    return sorted(p for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in datasets.IMAGE_SUFFIXES | {".dcm", ".dicom", ""})


def model_logits(loaded: zoo.Loaded, xray: XRay, lungs: Lungs, cam: bool = False) -> tuple[torch.Tensor, float | None]:
    """Logits through the app's own path (lung crop included), and the heatmap's share inside the lungs when `cam`.
    A zero-shot model answers with its clinical prompts, so it gets the same figures as a classifier (no heatmap)."""
    if loaded.spec.task == "zeroshot":
        from cxr_demo.tasks import zeroshot

        result = zeroshot.predict(xray, loaded.spec.name, zeroshot.PRESETS["clinical"], lungs=lungs)
        return torch.tensor([result.probabilities[k] for k in zeroshot.model_labels(loaded)]).clamp_min(1e-12).log(), None
    if loaded.spec.task == "classify":
        result = classify.predict(xray, loaded.spec.name, "GradCAM" if cam else None, lungs=lungs)
        probs = torch.tensor([result.probabilities[k] for k in loaded.config.get("label_names") or loaded.spec.labels])
        # temperature x log-probabilities differ from the logits by a constant, so the report's softmax is unchanged
        return float(loaded.options.get("temperature", 1.0)) * probs.clamp_min(1e-12).log(), result.heatmap_in_lungs
    with torch.inference_mode():
        output = loaded.module(classify.prepare(xray.pixels, loaded))
    return (output[1] if isinstance(output, tuple) else output)[0].float(), None


@dataclass
class Pass:
    """What one pass over a folder saw: logits for the readable images and the input check's verdicts."""
    logits: list[torch.Tensor] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # index into the paths of each readable image
    flagged: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    heatmap_in_lungs: list[float] = field(default_factory=list)

    def flag(self, reason: str) -> None:
        self.flagged += 1
        self.reasons[reason] = self.reasons.get(reason, 0) + 1


def run_classifier(model_name: str | None, paths: list[Path], lungs_removed: bool = False, cam: bool = False,
                   fill: str = "median", shift: Callable[[np.ndarray], np.ndarray] | None = None) -> Pass:
    """Every image (changed by `shift` first, if given: see `train.site_shift`) through intake (input check + lung mask)
    and, when a model is given, the classifier (with the lungs blanked with `fill`, if asked)."""
    loaded = zoo.load(model_name) if model_name else None
    seen = Pass()
    for i, path in enumerate(tqdm(paths, desc="evaluate", unit="img", file=sys.stderr)):
        try:
            xray = read_xray(path)
        except InvalidImage:
            seen.flag("unreadable")
            continue
        if shift is not None:
            xray = XRay(shift(xray.pixels), xray.meta, xray.warnings)
        checked = intake(xray)
        if checked.verdict.flagged:
            seen.flag(checked.verdict.reason)
        if loaded is None:
            continue
        if lungs_removed:
            xray = XRay(blank_lungs(xray.pixels, checked.lungs.mask, fill=fill), xray.meta, xray.warnings)
        logits, share = model_logits(loaded, xray, checked.lungs, cam)
        seen.logits.append(logits)
        seen.kept.append(i)
        if share is not None:
            seen.heatmap_in_lungs.append(share)
    return seen


def check_summary(seen: Pass, n: int) -> dict:
    return {"flagged": seen.flagged / n if n else 0.0, "n_flagged": seen.flagged, "n_files": n,
            "flag_reasons": dict(sorted(seen.reasons.items(), key=lambda kv: -kv[1]))}


def labelled_folders(data_dir: Path, labels: list[str]) -> list[str] | None:
    """The class folders when every sub-folder is one of the model's classes; None for any other layout."""
    folders = sorted(p.name for p in data_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    return folders if folders and all(f in labels for f in folders) else None


def split_part(data: datasets.LabelledImages, split: str, seed: int) -> datasets.LabelledImages:
    """One part of the seeded 80/10/10 training split, or everything for "all"."""
    return data if split == "all" else data.subset(datasets.split_80_10_10(data, seed)[split])


def evaluate_classifier(model_name: str, data_dir: Path, split: str, seed: int, lungs_removed: bool = False, cam: bool = False,
                        fill: str = "median", shift: str | None = None) -> dict:
    loaded = zoo.load(model_name)
    labels = list(loaded.config.get("label_names") or loaded.spec.labels)
    temperature = float(loaded.options.get("temperature", 1.0))
    folders = labelled_folders(data_dir, labels)
    if folders is None:
        return predicted_distribution(model_name, data_dir, labels, temperature, lungs_removed, fill, shift)
    data = split_part(datasets.read_class_folders(data_dir, folders), split, seed)
    seen = run_classifier(model_name, data.paths, lungs_removed, cam, fill, SHIFTS[shift] if shift else None)
    targets = torch.tensor([labels.index(data.classes[data.labels[i]]) for i in seen.kept])
    report = classification_report(torch.stack(seen.logits), targets, labels, temperature)
    result = {"model": model_name, "task": loaded.spec.task, "data": str(data_dir), "split": split, "lungs_removed": lungs_removed,
              **({"blank_fill": fill} if lungs_removed else {}), **({"shift": shift} if shift else {}),
              **report, **check_summary(seen, len(data.paths))}
    if seen.heatmap_in_lungs:
        result["heatmap_in_lungs"] = float(np.mean(seen.heatmap_in_lungs))
    return result


def evaluate_shifts(model_name: str, data_dir: Path, split: str, seed: int, unchanged: dict | None = None) -> dict:
    """The unchanged films, then each simulated other hospital in turn (`train.site_shift`): accuracy, macro-F1 and the
    share the input check flags, per shift, and the worst accuracy of them. `unchanged`: the caller's own
    `evaluate_classifier` result on the same films, so that they are not run again."""
    by_shift = {}
    for name in ("none", *SHIFTS):
        if name == "none" and unchanged is not None:
            result = unchanged
        else:
            result = evaluate_classifier(model_name, data_dir, split, seed, shift=None if name == "none" else name)
        by_shift[name] = {key: result[key] for key in ("accuracy", "macro_f1", "flagged", "n", "ece")}
    worst = min(SHIFTS, key=lambda name: by_shift[name]["accuracy"])
    return {"model": model_name, "task": zoo.get(model_name).task, "data": str(data_dir), "split": split, "shift": "all",
            "by_shift": by_shift, "worst_shift": worst, "worst_shift_accuracy": by_shift[worst]["accuracy"]}


def predicted_distribution(model_name: str, data_dir: Path, labels: list[str], temperature: float, lungs_removed: bool = False,
                           fill: str = "median", shift: str | None = None) -> dict:
    paths = image_paths(data_dir)
    seen = run_classifier(model_name, paths, lungs_removed, fill=fill, shift=SHIFTS[shift] if shift else None)
    probs = (torch.stack(seen.logits) / temperature).softmax(1) if seen.logits else torch.zeros(0, len(labels))
    counts = np.bincount(probs.argmax(1).numpy(), minlength=len(labels))
    return {"model": model_name, "task": "classify", "data": str(data_dir), "n": len(seen.kept),
            "predicted": {label: int(c) for label, c in zip(labels, counts)},
            "mean_probability": {label: round(float(v), 4) for label, v in zip(labels, probs.mean(0))},
            **check_summary(seen, len(paths))}


def evaluate_check(data_dir: Path) -> dict:
    """Only the input check (and the lung mask it uses): the share of files it refuses or flags."""
    paths = image_paths(data_dir)
    return {"task": "check", "data": str(data_dir), "n": len(paths), **check_summary(run_classifier(None, paths), len(paths))}


def evaluate_segmenter(model_name: str, data_dir: Path, masks: str) -> dict:
    """Mean Dice/IoU over a folder with images/ and masks/ (or `--masks NAME`), or a pairs.csv, through the app's predictor."""
    from cxr_demo.tasks import segment
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
    from cxr_demo.tasks import zeroshot

    unknown = [p for p in presets or [] if p not in zeroshot.PRESETS]
    if unknown:
        raise SystemExit(f"Unknown prompt preset {unknown[0]!r}; choose from {', '.join(zeroshot.PRESETS)} or 'all'.")
    sample = zeroshot.LabelledSample(tuple(paths), tuple(labels))
    sets = [zeroshot.PRESETS[name] for name in (presets or zeroshot.PRESETS)]
    return {score.prompt_set: score.report for score in zeroshot.score_prompt_sets(loaded, sets, sample)}


def evaluate_zeroshot_folder(model_name: str, data_dir: Path, split: str, seed: int, prompts: str) -> dict:
    data = split_part(datasets.read_class_folders(data_dir), split, seed)
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
    for name, row in result.get("by_shift", {}).items():
        print(f"  shift {name:<15} accuracy {row['accuracy']:.4f}  macro-F1 {row['macro_f1']:.4f}  flagged {row['flagged']:.1%}  (n={row['n']})")
    if "flagged" in result:
        print(f"input check on {result['data']}: flagged {result['n_flagged']}/{result['n_files']} ({result['flagged']:.1%}) {result['flag_reasons']}")
    if "heatmap_in_lungs" in result:
        print(f"GradCAM mass inside the lung mask: {result['heatmap_in_lungs']:.1%}")
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


@dataclass
class EvaluateConfig:
    data: Path
    model: str | None = field(default=None, metadata={"help": "zoo model name (default: the zoo's default for --task)"})
    task: str = field(default="classify", metadata={"choices": tuple(zoo.TASKS), "help": "a task of the task table"})
    split: Literal["all", "train", "val", "test"] = field(default="all", metadata={"help": "the seeded 80/10/10 split's part of --data"})
    seed: int = 0
    prompts: str | None = field(default=None, metadata={"help": "prompt preset for --task zeroshot (default clinical; 'all' scores every preset)"})
    held_out: bool = field(default=False, metadata={"help": "detect: only the images the model's metrics.json lists as held out"})
    masks: str = field(default="masks", metadata={"help": "mask folder name beside images/ (segment), e.g. 'lung masks'"})
    lungs_removed: bool = field(default=False, metadata={"help": "classify or zeroshot: blank the lungs first: what is left is the shortcut"})
    blank_fill: str = field(default="median", metadata={"choices": BLANK_FILLS, "help": "with --lungs-removed: what fills the lungs "
                            "(median: the counterfactual penalty's default blank; dark, bright and noise: blanks a median-trained model never saw)"})
    heatmap_share: bool = field(default=False, metadata={"help": "classify: also report the GradCAM mass inside the lung mask"})
    shift: str | None = field(default=None, metadata={"choices": (*SHIFTS, "all"), "help": "classify or zeroshot: change each "
                              "film as another hospital would before the intake (train.site_shift); 'all' scores every shift"})
    json: bool = field(default=False, metadata={"help": "end with one JSON line (always printed; kept for scripts)"})


def main(argv=None) -> dict:
    args = parse_config(EvaluateConfig, argv, __doc__)
    if not (args.data.is_dir() or (args.task == "segment" and args.data.suffix == ".csv" and args.data.is_file())):
        usage_error(f"--data {args.data} is not a folder" + (" or a pairs.csv" if args.task == "segment" else ""))
    try:
        result = evaluate_check(args.data) if args.task == "check" else evaluate_model(args)
    except (zoo.UnknownModel, zoo.ModelUnavailable) as error:
        usage_error(str(error))
    print_summary(result)
    print(json.dumps(result))
    return result


def evaluate_model(args: EvaluateConfig) -> dict:
    model = args.model or zoo.default(args.task).name
    model_task = zoo.get(model).task
    if model_task not in zoo.TASKS[args.task].kinds:  # a multi-task model is scored as a classifier or as a segmenter
        usage_error(f"{model} is a {model_task} model; pass --task {' or --task '.join(zoo.task_table.tasks_served_by(model_task))}")
    if args.shift == "all" and args.task in ("classify", "zeroshot"):
        return evaluate_shifts(model, args.data, args.split, args.seed)
    if args.task == "classify":
        return evaluate_classifier(model, args.data, args.split, args.seed, args.lungs_removed, args.heatmap_share, args.blank_fill, args.shift)
    if args.task == "zeroshot" and (args.lungs_removed or args.shift):  # the clinical prompts, through the classifier's path
        return evaluate_classifier(model, args.data, args.split, args.seed, args.lungs_removed, fill=args.blank_fill, shift=args.shift)
    if args.task == "zeroshot":
        return evaluate_zeroshot_folder(model, args.data, args.split, args.seed, args.prompts or "clinical")
    if args.task == "detect":
        from train.detect import evaluate_detector
        return evaluate_detector(model, args.data, only_held_out=args.held_out)
    return evaluate_segmenter(model, args.data, args.masks)

if __name__ == "__main__":
    main()
