"""Batch rows: one task over many files, one dict of CSV columns per file, through the app's own path and its own error
messages. Used by `python -m cxr_demo.batch` and by the Classify tab's several-files panel.

Zero-shot is not offered: its classes are whatever prompts the user types, so a CSV of it would need a prompt set as well
as a model; `python -m train.evaluate --task zeroshot --prompts PRESET` already scores a folder that way.
"""
from __future__ import annotations

import csv
import sys
from collections import Counter
from pathlib import Path

import gradio as gr
from tqdm import tqdm

from cxr_demo import zoo
from cxr_demo.intake import Intake, intake
from cxr_demo.io import XRay, read_xray
from cxr_demo.tasks import classify, detect, segment
from cxr_demo.ui.common import user_errors

TASKS = tuple(task for task in zoo.ENDPOINTS if task != "zeroshot")  # see the module docstring for why not zero-shot
SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"}  # what read_xray decodes
PASSED = "upright frontal chest X-ray"
BASE_COLUMNS = ["file", "status", "check", "error", "model"]
SEGMENT_COLUMNS = ["lung_share", "area_px", "right_px", "left_px", "right_share", "area_cm2", "right_cm2", "left_cm2"]
DETECT_COLUMNS = ["n_boxes", "boxes"]


def is_dicom(path: Path) -> bool:
    """An extension-less file is taken when it carries the DICOM preamble, as PACS exports often do."""
    with path.open("rb") as file:
        return file.read(132)[128:132] == b"DICM"


def find_images(root: Path) -> list[Path]:
    """Every image under `root`, sorted; hidden files and folders (.git, .ipynb_checkpoints) are skipped."""
    found = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        if path.suffix.lower() in SUFFIXES or (not path.suffix and is_dicom(path)):
            found.append(path)
    return found


def task_models(task: str) -> list[str]:
    """The models the task's tab offers: a multi-task U-Net segments, but its classifier head is not Classify's."""
    kinds = zoo.TASKS[task].kinds if task == "segment" else (task,)
    return [name for kind in kinds for name in zoo.names(kind)]


def resolve_model(task: str, model: str | None) -> str:
    """The model's name, checked and loaded once before the first file: a wrong name or missing weights is one message,
    not a CSV of identical errors."""
    if task not in TASKS:
        raise ValueError(f"Batch mode runs {', '.join(TASKS)}; not {task!r}.")
    choices = task_models(task)
    name = model or (zoo.default(task).name if choices else None)
    if name not in choices:
        raise zoo.UnknownModel(f"No {task} model {name!r} in the zoo. Choose one of: {', '.join(choices) or 'none installed'}.")
    zoo.load(name)
    return name


def classify_columns(xray: XRay, seen: Intake, model: str) -> dict:
    # no heatmap: a CAM costs a backward pass per image and a CSV cannot show it (heatmap_in_lungs stays out with it)
    result = classify.predict(xray, model, None, lungs=seen.lungs)
    return {"top_label": result.top_label, **{f"p_{label}": round(p, 6) for label, p in result.probabilities.items()},
            "unfamiliar": result.unfamiliar}


def segment_columns(xray: XRay, seen: Intake, model: str) -> dict:
    result = segment.predict(xray, model, lungs=seen.lungs)  # the intake's mask is reused when it came from this model
    m = result.measures
    return {"lung_share": round(float(result.mask.mean()), 4), "area_px": m.area_px, "right_px": m.right_px, "left_px": m.left_px,
            "right_share": round(m.right_share, 4), "area_cm2": m.area_cm2, "right_cm2": m.right_cm2, "left_cm2": m.left_cm2}


def detect_columns(xray: XRay, seen: Intake, model: str) -> dict:
    result = detect.predict(xray, model)  # the tab's default score threshold and NMS IoU
    boxes = "; ".join(f"{b.x0:.0f} {b.y0:.0f} {b.x1:.0f} {b.y1:.0f} {b.score:.3f}" for b in result.boxes)
    return {"n_boxes": len(result.boxes), "boxes": boxes}


PREDICTORS = {"classify": classify_columns, "segment": segment_columns, "detect": detect_columns}


def task_columns(task: str, model: str) -> list[str]:
    if task == "classify":
        return ["top_label", *(f"p_{label}" for label in zoo.get(model).labels), "unfamiliar"]
    return SEGMENT_COLUMNS if task == "segment" else DETECT_COLUMNS


def one_row(path: Path, name: str, task: str, model: str, analyse_anyway: bool) -> dict:
    row = {"file": name, "status": "error", "check": "", "error": "", "model": model}
    try:
        with user_errors():  # the UI's own translation: the message a user would see, never a traceback
            xray = read_xray(path)
            seen = intake(xray)
            flagged = seen.verdict.flagged
            row.update(status="flagged" if flagged else "ok", check=seen.verdict.reason if flagged else PASSED)
            if not flagged or analyse_anyway:
                row.update(PREDICTORS[task](xray, seen, model))
    except gr.Error as error:
        row.update(status="error", error=error.message)
    return row


def run_batch(paths, task: str, model: str | None = None, analyse_anyway: bool = False, root: Path | None = None) -> list[dict]:
    """One row (a dict of CSV columns) per path, in order; `file` is relative to `root` when given."""
    name = resolve_model(task, model)
    rows = []
    for path in tqdm([Path(p) for p in paths], desc=f"batch {task}", unit="file", file=sys.stderr):
        label = str(path.relative_to(root)) if root else str(path)
        rows.append(one_row(path, label, task, name, analyse_anyway))
    return rows


def columns(rows: list[dict], task: str, model: str) -> list[str]:
    """The task's declared columns in order, then any a row added beyond them."""
    declared = [*BASE_COLUMNS, *task_columns(task, model)]
    return declared + [key for key in dict.fromkeys(k for row in rows for k in row) if key not in declared]


def write_csv(rows: list[dict], out: Path, task: str, model: str) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=columns(rows, task, model), restval="")
        writer.writeheader()
        writer.writerows(rows)


def summary(rows: list[dict], out: Path, task: str, model: str) -> dict:
    count = Counter(row["status"] for row in rows)
    return {"files": len(rows), "ok": count["ok"], "flagged": count["flagged"], "errors": count["error"], "out": str(out),
            "task": task, "model": model}
