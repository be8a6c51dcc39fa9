"""Dataset readers, seeded splits, a decoded-pixel cache and the batches every image-level trainer draws from it.

Reads the Kaggle "COVID-19 Radiography Database" layout: `<Class>/images/*.png`.
"""
from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import count, repeat
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import StratifiedGroupKFold
from tqdm import tqdm

from cxr_demo.io.preprocess import apply_steps, normalize

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"  # the real data, beside the repository
CROP_SOURCE_SIZE = 224  # cxr-3class's own size
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
        return LabelledImages([self.paths[i] for i in index], self.labels[index], self.classes, [self.groups[i] for i in index])

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
        paths += files
        labels += [index] * len(files)
        groups += [f"{name}/{match.group(1) if (match := _PATIENT.search(path.stem)) else path.stem}" for path in files]
    if not paths:
        raise FileNotFoundError(f"No images under {root}/<Class>/images/. Classes looked for: {classes}")
    return LabelledImages(paths, np.asarray(labels, dtype=np.int64), classes, groups)


def split_80_10_10(data: LabelledImages, seed: int = 0) -> dict[str, np.ndarray]:
    """Stratified, patient-grouped, seeded 80/10/10 split: fold 0 of 10 is test, fold 1 validation."""
    folds = StratifiedGroupKFold(n_splits=10, shuffle=True, random_state=seed)
    assignment = np.empty(len(data), dtype=np.int64)
    for fold, (_, held) in enumerate(folds.split(np.zeros(len(data)), data.labels, data.groups)):
        assignment[held] = fold
    return {"train": np.flatnonzero(assignment >= 2), "val": np.flatnonzero(assignment == 1), "test": np.flatnonzero(assignment == 0)}


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


def cached_lungs(paths: list[Path], pixels: np.ndarray, segmenter: str | None = None) -> dict[str, np.ndarray]:
    """The zoo segmenter's lung box (top, left, bottom, right fractions), lung area and mask (on the segmenter's own grid)
    for every image, through the app's own `cxr_demo.intake.lungs` path; cached on disk like the pixels."""
    from cxr_demo import zoo
    from cxr_demo.intake import lungs

    spec = zoo.get(segmenter) if segmenter else zoo.default("segment")
    # the input size too: the same weights run at another size find other boxes
    # the mask at full grid ("grid-mask"): a 64 px copy blanked blockier lungs in training than `--lungs-removed` blanks
    key = hashlib.sha1(("\n".join(map(str, paths)) + f"|{spec.name}|{spec.input_size}|{lungs.BOX_MARGIN}|grid-mask").encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"lungs-{key}.npz"
    if cache.exists():
        return dict(np.load(cache))
    boxes, areas, masks = [], [], []
    for image in tqdm(pixels, desc="lungs", unit="img"):
        found = lungs.find_lungs(np.asarray(image, dtype=np.float32) / 255.0, spec.name)
        boxes.append(found.box)
        areas.append(found.area_fraction)
        masks.append(found.mask)
    result = {"boxes": np.asarray(boxes, np.float32), "areas": np.asarray(areas, np.float32), "masks": np.stack(masks)}
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **result)
    return result


def lung_crops(pixels: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Every image cropped to its lung box and squashed back to `size` (uint8, N x size x size)."""
    from cxr_demo.intake.lungs import crop_to_box

    out = np.empty((len(pixels), size, size), np.uint8)
    for i, (image, box) in enumerate(zip(pixels, boxes)):
        out[i] = np.asarray(Image.fromarray(crop_to_box(np.asarray(image), tuple(box))).resize((size, size), Image.BILINEAR))
    return out


def blanked_lung_crops(pixels: np.ndarray, lungs: dict[str, np.ndarray], size: int, fills: tuple[str, ...] = ("median",)) -> np.ndarray:
    """The lung crops with the lungs blanked out, exactly as `train.evaluate --lungs-removed --blank-fill F` makes them;
    image i gets `fills[i % len(fills)]`."""
    from cxr_demo.intake.lungs import blank_lungs

    blanked = np.stack([blank_lungs(np.asarray(image), mask, fill=fills[i % len(fills)])
                        for i, (image, mask) in enumerate(zip(pixels, lungs["masks"]))])
    return lung_crops(blanked, lungs["boxes"], size)


def training_pixels(paths: list[Path], size: int, crop: str = "none") -> np.ndarray:
    """Decoded images, cropped to the lungs when `crop == "lungs"` (boxes from the app's own segmenter). A crop is cut
    from at least the 224 px decode and then resized, as the app cuts it from the full film, never upsampled from less."""
    if crop == "none":
        return np.asarray(cached_pixels(paths, size))
    if crop != "lungs":
        raise SystemExit(f"--crop must be 'none' or 'lungs', got {crop!r}")
    pixels = np.asarray(cached_pixels(paths, max(size, CROP_SOURCE_SIZE)))
    return lung_crops(pixels, cached_lungs(paths, pixels)["boxes"], size)


class Batches:
    """Shuffled batches straight from the in-memory uint8 cache."""

    def __init__(self, pixels, labels, index, batch_size, transform, mean, std, shuffle, seed=0):
        self.pixels, self.labels, self.index = pixels, labels, index
        self.batch_size, self.transform, self.mean, self.std = batch_size, transform, mean, std
        self.shuffle, self.rng = shuffle, np.random.default_rng(seed)

    def __len__(self):
        return (len(self.index) + self.batch_size - 1) // self.batch_size

    def __iter__(self):
        order = self.rng.permutation(self.index) if self.shuffle else self.index
        for start in range(0, len(order), self.batch_size):
            chunk = np.sort(order[start:start + self.batch_size])
            images = torch.from_numpy(np.asarray(self.pixels[chunk]))[:, None]
            images = torch.stack([self.transform(im) for im in images])
            x = normalize(images, self.mean, self.std).contiguous(memory_format=torch.channels_last)
            yield x, torch.from_numpy(self.labels[chunk])


def evaluation_batches(pixels, labels, index, steps: str, mean, std) -> Batches:
    """Batches of 64 in order, with only the inference-time preprocessing."""
    return Batches(pixels, labels, index, 64, lambda image: apply_steps(image, steps), mean, std, shuffle=False)


def endless(batches: Batches | None, with_labels: bool = False) -> Iterator:
    """The images of `batches` (with their labels, if asked), reshuffled pass after pass (`None` forever when there are
    none), to pair with each training batch; a fresh call starts a fresh pass."""
    if batches is None:
        return repeat(None)
    return (pair if with_labels else pair[0] for _pass in count() for pair in batches)
