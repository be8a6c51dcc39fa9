"""Dataset readers, seeded splits and a decoded-pixel cache.

Reads the Kaggle "COVID-19 Radiography Database" layout: `<Class>/images/*.png`.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
CACHE_DIR = Path(os.environ.get("CXR_DEMO_CACHE", Path.home() / ".cache" / "cxr-demo"))
# Kermany file names carry the patient ("person123_virus_456"); one patient's images stay in one split.
_PATIENT = re.compile(r"(person\d+)")


@dataclass(frozen=True)
class LabelledImages:
    paths: list[Path]
    labels: np.ndarray  # int64 class indices
    classes: list[str]
    groups: list[str]  # patient id where known, else the file stem

    def subset(self, index: np.ndarray) -> "LabelledImages":
        return LabelledImages(
            [self.paths[i] for i in index], self.labels[index], self.classes, [self.groups[i] for i in index]
        )

    def __len__(self) -> int:
        return len(self.paths)


def read_class_folders(root: str | Path, classes: list[str] | None = None) -> LabelledImages:
    """Read `<root>/<Class>/images/*` (or `<root>/<Class>/*`) into paths and labels, classes sorted by name."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"No data folder at {root}. Expected <Class>/images/*.png under it.")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    classes = list(classes or found)
    paths, labels, groups = [], [], []
    for index, name in enumerate(classes):
        folder = root / name / "images" if (root / name / "images").is_dir() else root / name
        files = sorted(p for p in folder.glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        for path in files:
            paths.append(path)
            labels.append(index)
            match = _PATIENT.search(path.stem)
            groups.append(f"{name}/{match.group(1)}" if match else f"{name}/{path.stem}")
    if not paths:
        raise FileNotFoundError(f"No images under {root}/<Class>/images/. Classes looked for: {classes}")
    return LabelledImages(paths, np.asarray(labels, dtype=np.int64), classes, groups)


def split_80_10_10(data: LabelledImages, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified, patient-grouped, seeded 80/10/10 split: fold 0 of 10 is test, fold 1 validation."""
    folds = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    assignment = np.empty(len(data), dtype=np.int64)
    for fold, (_, held) in enumerate(folds.split(np.zeros(len(data)), data.labels, data.groups)):
        assignment[held] = fold
    return {
        "train": np.flatnonzero(assignment >= 2),
        "val": np.flatnonzero(assignment == 1),
        "test": np.flatnonzero(assignment == 0),
    }


def take_fraction(index: np.ndarray, labels: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """Keep `fraction` of each class (the seeds' 100/75/50/25% experiment)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--fraction must be in (0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    kept = []
    for cls in np.unique(labels[index]):
        members = index[labels[index] == cls]
        kept.append(rng.permutation(members)[: max(1, round(len(members) * fraction))])
    return np.sort(np.concatenate(kept))


def load_gray(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as image:
        image = image.convert("L")
        if image.size != (size, size):
            image = image.resize((size, size), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)


def cached_pixels(paths: list[Path], size: int) -> np.ndarray:
    """Decode every image once into an (N, size, size) uint8 array, cached on disk by file list and size."""
    key = hashlib.sha1(("\n".join(map(str, paths)) + f"|{size}").encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"pixels-{key}.npy"
    if cache.exists():
        return np.load(cache, mmap_mode="r")
    pixels = np.stack([load_gray(p, size) for p in tqdm(paths, desc="decode", unit="img")])
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(cache, pixels)
    return pixels
