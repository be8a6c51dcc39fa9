"""Segmentation readers: image/mask folders, pairs.csv lists, and SIIM-ACR DICOM + RLE (both RLE flavours)."""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cxr_demo.io import read_xray
from train.data import IMAGE_SUFFIXES


@dataclass(frozen=True)
class Pair:
    image: Path
    mask: Path | None  # None: an RLE-defined or empty mask, given by `rle`
    rle: tuple[str, ...] = ()
    relative_rle: bool = False


def read_image_mask_folder(root: str | Path, images: str = "images", masks: str = "masks") -> list[Pair]:
    """`root/images/x.png` with `root/masks/x.png` (COVID-19 Radiography / COVID-QU-Ex layout). Searches subfolders."""
    root = Path(root)
    pairs = []
    for image_dir in sorted(p for p in [root / images, *root.rglob(images)] if p.is_dir()):
        mask_dir = image_dir.parent / masks
        if not mask_dir.is_dir():
            continue
        pairs += [Pair(image, mask_dir / image.name) for image in sorted(image_dir.iterdir())
                  if image.suffix.lower() in IMAGE_SUFFIXES and (mask_dir / image.name).is_file()]
    if not pairs:
        raise FileNotFoundError(f"No image/mask pairs under {root}: expected {images}/X.png beside {masks}/X.png.")
    return sorted(set(pairs), key=lambda p: str(p.image))


def read_pairs_csv(path: str | Path) -> list[Pair]:
    """A CSV with `image` and `mask` columns, paths relative to the CSV's folder."""
    path = Path(path)
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    missing = {"image", "mask"} - set(rows[0] if rows else {})
    if missing:
        raise ValueError(f"{path} needs columns image and mask; missing {sorted(missing)}")
    return [Pair(path.parent / r["image"], path.parent / r["mask"]) for r in rows]


def decode_rle(rle: str, height: int, width: int, relative: bool = False) -> np.ndarray:
    """Decode one run-length string to a uint8 {0, 1} mask. Runs walk the image column by column.

    absolute (the usual Kaggle format): `start length ...` with 1-based starts;
    relative (SIIM-ACR stage 1): each start counts from the end of the previous run, 0-based.
    """
    flat = np.zeros(height * width, dtype=np.uint8)
    values = [int(v) for v in rle.split()]
    if not values or values == [-1]:
        return flat.reshape(width, height).T
    if len(values) % 2:
        raise ValueError("An RLE string needs an even number of values (start, length pairs).")
    position = 0
    for start, length in zip(values[0::2], values[1::2]):
        position = position + start if relative else start - 1
        if position < 0 or position + length > flat.size:
            raise ValueError(f"RLE run {start} {length} falls outside a {height}x{width} image.")
        flat[position:position + length] = 1
        position += length
    return flat.reshape(width, height).T


def encode_rle(mask: np.ndarray, relative: bool = False) -> str:
    """Inverse of `decode_rle`; '-1' for an empty mask."""
    flat = np.concatenate([[0], mask.T.reshape(-1).astype(np.uint8), [0]])
    edges = np.flatnonzero(flat[1:] != flat[:-1])
    starts, ends = edges[0::2], edges[1::2]
    if len(starts) == 0:
        return "-1"
    if relative:
        offsets = starts - np.concatenate([[0], ends[:-1]])
        return " ".join(f"{o} {e - s}" for o, s, e in zip(offsets, starts, ends))
    return " ".join(f"{s + 1} {e - s}" for s, e in zip(starts, ends))


def read_siim_rle(csv_path: str | Path, dicom_dir: str | Path) -> list[Pair]:
    """SIIM-ACR: `ImageId, EncodedPixels` rows (several per image for several regions), DICOMs named `<ImageId>.dcm`.
    Files named like the original `train-rle-sample*` are in the stage-1 relative format."""
    csv_path, dicom_dir = Path(csv_path), Path(dicom_dir)
    relative = "sample" in csv_path.name
    runs: dict[str, list[str]] = {}
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        for row in csv.reader(handle):
            if not row or row[0] == "ImageId":
                continue
            runs.setdefault(row[0].strip(), []).append(row[1].strip())
    pairs = [Pair(dicom_dir / f"{image_id}.dcm", None, rle=tuple(r for r in rles if r != "-1"), relative_rle=relative)
             for image_id, rles in runs.items() if (dicom_dir / f"{image_id}.dcm").is_file()]
    if not pairs:
        raise FileNotFoundError(f"No DICOMs in {dicom_dir} match the image ids in {csv_path}.")
    return pairs


def load_pair(pair: Pair, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(uint8 image, uint8 {0,1} mask), both squashed to size x size, through the app's own reader."""
    xray = read_xray(pair.image)
    image = Image.fromarray((xray.pixels * 255 + 0.5).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    if pair.mask is not None:
        mask = np.asarray(Image.open(pair.mask).convert("L")) > 127
    else:
        h, w = xray.pixels.shape
        mask = np.zeros((h, w), bool)
        for rle in pair.rle:
            mask |= decode_rle(rle, h, w, pair.relative_rle).astype(bool)
    mask = Image.fromarray(mask.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return np.asarray(image), (np.asarray(mask) > 127).astype(np.uint8)
