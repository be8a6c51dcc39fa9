"""Detection readers: RSNA Pneumonia, SIIM-FISABIO-RSNA (COVID-19), COCO JSON (TBX11K) and an images/ + boxes.csv
folder, into one `Sample` list; patient-grouped k-fold splits; loading a sample as pixels plus boxes.

Boxes are kept in the grid the labels were drawn on (`label_size`) and scaled to the image actually on disk when it
is loaded, so a downscaled copy of a dataset (RSNA's 1024 px labels over 512 px PNGs) needs no relabelling.
"""
from __future__ import annotations

import ast
import csv
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.model_selection import GroupKFold

from cxr_demo.io import read_xray
from train.data import IMAGE_SUFFIXES

RSNA_ORIGINAL_SIZE = 1024  # every RSNA Pneumonia Challenge DICOM is 1024x1024; its labels use that grid
RSNA_LABEL = "Lung Opacity"
BOX_SUFFIXES = (".dcm", *sorted(IMAGE_SUFFIXES))


@dataclass(frozen=True)
class Sample:
    image: Path
    boxes: tuple[tuple[float, float, float, float], ...]  # x0, y0, x1, y1 in the label grid
    labels: tuple[str, ...]
    group: str  # patient (or study) id: one group never straddles two splits
    label_size: tuple[int, int] | None = None  # (width, height) of the labels' grid; None = the image's own pixels

    def __post_init__(self):
        if len(self.boxes) != len(self.labels):
            raise ValueError(f"{self.image.name}: {len(self.boxes)} boxes but {len(self.labels)} labels")


def _xywh(x, y, w, h) -> tuple[float, float, float, float]:
    x, y, w, h = (float(v) for v in (x, y, w, h))
    return x, y, x + w, y + h


def _find_image(folder: Path, stem: str) -> Path | None:
    return next((folder / f"{stem}{suffix}" for suffix in BOX_SUFFIXES if (folder / f"{stem}{suffix}").is_file()), None)


def read_rsna(csv_path: str | Path, images: str | Path) -> list[Sample]:
    """RSNA Pneumonia: `stage_2_train_labels.csv` (patientId, x, y, width, height, Target; one row per box, one empty
    row per negative) with images named `<patientId>.dcm` or `.png` in `images`. Patients without an image are skipped."""
    csv_path, images = Path(csv_path), Path(images)
    boxes: dict[str, list] = defaultdict(list)
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            boxes.setdefault(row["patientId"], [])
            if row["Target"] == "1":
                boxes[row["patientId"]].append(_xywh(row["x"], row["y"], row["width"], row["height"]))
    samples = []
    for patient, found in boxes.items():
        image = _find_image(images, patient)
        if image is not None:
            size = None if image.suffix == ".dcm" else (RSNA_ORIGINAL_SIZE, RSNA_ORIGINAL_SIZE)
            samples.append(Sample(image, tuple(found), (RSNA_LABEL,) * len(found), patient, size))
    if not samples:
        raise FileNotFoundError(f"No image in {images} is named after a patientId of {csv_path} (<patientId>.dcm or .png).")
    return samples


def parse_siim_label(label: str) -> list[tuple[str, tuple[float, float, float, float]]]:
    """'opacity 1 x1 y1 x2 y2 opacity 1 ...' to (name, box) pairs; 'none 1 0 0 1 1' means no box."""
    parts = label.split()
    if len(parts) % 6:
        raise ValueError(f"A SIIM-FISABIO label has groups of 6 values (name confidence x1 y1 x2 y2); got {label!r}")
    groups = [parts[i:i + 6] for i in range(0, len(parts), 6)]
    return [(g[0], tuple(float(v) for v in g[2:])) for g in groups if g[0] != "none"]


def read_siim_fisabio(csv_path: str | Path, images: str | Path) -> list[Sample]:
    """SIIM-FISABIO-RSNA COVID-19: `train_image_level.csv` (id, boxes, label, StudyInstanceUID); images anywhere under
    `images` as `<id without _image>.dcm` (Kaggle's study/series/image tree) or .png/.jpg, boxes in their pixels.
    Grouped by study: the image-level file has no patient id, and one study's images must stay together."""
    csv_path, images = Path(csv_path), Path(images)
    on_disk = {p.stem: p for p in images.rglob("*") if p.suffix.lower() in BOX_SUFFIXES}
    samples = []
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            image = on_disk.get(row["id"].removesuffix("_image"))
            if image is None:
                continue
            found = parse_siim_label(row["label"])
            if not found and row.get("boxes") not in (None, "", "nan"):  # older copies carry boxes only in `boxes`
                found = [("opacity", _xywh(b["x"], b["y"], b["width"], b["height"])) for b in ast.literal_eval(row["boxes"])]
            samples.append(Sample(image, tuple(b for _, b in found), tuple(n for n, _ in found), row["StudyInstanceUID"]))
    if not samples:
        raise FileNotFoundError(f"No image under {images} matches an id of {csv_path}.")
    return samples


def read_coco(json_path: str | Path, images: str | Path | None = None) -> list[Sample]:
    """COCO detection JSON (TBX11K): `bbox` = [x, y, w, h] in each image's pixels, `file_name` relative to `images`
    (default: `imgs/` beside the annotations folder). No patient ids: each image is its own group."""
    json_path = Path(json_path)
    images = Path(images) if images else json_path.parent.parent / "imgs"
    coco = json.loads(json_path.read_text())
    names = {c["id"]: c["name"] for c in coco["categories"]}
    by_image: dict[int, list] = defaultdict(list)
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append((names[ann["category_id"]], _xywh(*ann["bbox"])))
    samples = []
    for entry in coco["images"]:
        found = by_image.get(entry["id"], [])
        path = images / entry["file_name"]
        if path.is_file():
            samples.append(Sample(path, tuple(b for _, b in found), tuple(n for n, _ in found), Path(entry["file_name"]).stem,
                                  (int(entry["width"]), int(entry["height"]))))
    if not samples:
        raise FileNotFoundError(f"None of the images listed in {json_path} is under {images}.")
    return samples


def read_boxes_folder(root: str | Path) -> list[Sample]:
    """`root/boxes.csv` (image, patientId, label, x, y, width, height in pixels of the image as stored) beside
    `root/images/`; images with no row are negatives."""
    root = Path(root)
    rows: dict[str, list] = defaultdict(list)
    patients: dict[str, str] = {}
    with open(root / "boxes.csv", newline="", encoding="utf-8-sig") as handle:
        for row in csv.DictReader(handle):
            rows[row["image"]].append((row.get("label") or "finding", _xywh(row["x"], row["y"], row["width"], row["height"])))
            patients[row["image"]] = row.get("patientId") or Path(row["image"]).stem
    listed = {str(p.relative_to(root)): p for p in sorted((root / "images").glob("*")) if p.suffix.lower() in BOX_SUFFIXES}
    missing = sorted(set(rows) - set(listed))
    if missing:
        raise FileNotFoundError(f"{root / 'boxes.csv'} lists images that are not in {root / 'images'}: {missing[:3]}")
    return [Sample(path, tuple(b for _, b in rows[rel]), tuple(n for n, _ in rows[rel]), patients.get(rel, path.stem))
            for rel, path in listed.items()]


def read_source(spec: str) -> list[Sample]:
    """`--data` forms: a folder with boxes.csv + images/; a COCO .json (or a folder with annotations/*.json);
    `stage_2_train_labels.csv::IMAGES` (RSNA) or `train_image_level.csv::IMAGES` (SIIM-FISABIO); or a folder holding
    one of those CSVs with its images in `images/`, `stage_2_train_images/` or `train/`."""
    path, _, images = spec.partition("::")
    path = Path(path)
    if path.suffix == ".json":
        return read_coco(path, images or None)
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8-sig") as handle:
            columns = next(csv.reader(handle), [])
        if "patientId" in columns and "Target" in columns:
            return read_rsna(path, images or _first_dir(path.parent, "stage_2_train_images", "images"))
        if "StudyInstanceUID" in columns and "label" in columns:
            return read_siim_fisabio(path, images or _first_dir(path.parent, "train", "images"))
        raise ValueError(f"{path}: not an RSNA (patientId, Target) or SIIM-FISABIO (id, label, StudyInstanceUID) box CSV.")
    if (path / "boxes.csv").is_file():
        return read_boxes_folder(path)
    if sorted((path / "annotations").glob("*.json")):
        return read_coco(sorted((path / "annotations").glob("*train*.json") or (path / "annotations").glob("*.json"))[0])
    for name in ("stage_2_train_labels.csv", "train_image_level.csv"):
        if (path / name).is_file():
            return read_source(str(path / name))
    raise FileNotFoundError(f"No detection data recognised at {spec}: expected boxes.csv + images/, COCO JSON, "
                            "stage_2_train_labels.csv or train_image_level.csv.")


def _first_dir(root: Path, *names: str) -> Path:
    return next((root / n for n in names if (root / n).is_dir()), root / names[0])


def grouped_folds(samples: list[Sample], n_splits: int = 5, seed: int = 0) -> np.ndarray:
    """The fold (0..n_splits-1) of each sample; one patient's images share a fold."""
    groups = [s.group for s in samples]
    n_splits = min(n_splits, len(set(groups)))
    folds = GroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    assignment = np.empty(len(samples), dtype=np.int64)
    for fold, (_, held) in enumerate(folds.split(np.zeros(len(samples)), groups=groups)):
        assignment[held] = fold
    return assignment


def load_sample(sample: Sample) -> tuple[np.ndarray, torch.Tensor]:
    """(float [0, 1] pixels through the app's reader, xyxy boxes in those pixels)."""
    xray = read_xray(sample.image)
    width, height = sample.label_size or (xray.meta.width, xray.meta.height)
    # read_xray may also have downsampled a very large image: one scale maps label grid -> working pixels
    scale = torch.tensor([xray.shape[1] / width, xray.shape[0] / height] * 2)
    boxes = torch.tensor(sample.boxes, dtype=torch.float32).reshape(-1, 4) * scale
    return xray.pixels, boxes
