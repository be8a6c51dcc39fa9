"""Images that are *not* upright frontal chest X-rays, to train and to measure the input check.

`non_cxr_images(split, n)` draws photos, documents, screenshots, noise, CT and MR slices and other medical images
(ultrasound, nuclear medicine, microscopy); `misoriented(image)` turns an upright CXR into the rotated, flipped and
inverted versions that the check must refuse too.

The "train" and "suite" splits draw from disjoint sources, so the suite measures how the check generalises to sources
it never saw, not how well it remembers them: every bundled image file (sklearn, matplotlib, gradio and pydicom sample
data, scikit-image's when installed) belongs to one split only; documents and screenshots use different font families,
word lists and layouts; procedural images come from separate seed streams. Random crops, rotations and tone changes
let a few sources give thousands of distinct images.

Write the held-out measurement suite:

    python -m train.negatives --out results/input-check-suite --n 300 \
        --cxr-dir ../shared/data/covid-qu-ex-sample/Test/Normal/images
"""
from __future__ import annotations

import gzip
import importlib.util
import re
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache, lru_cache, partial
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps
from pydicom.data import get_testdata_file
from pydicom.pixels import apply_color_lut, apply_modality_lut
from tqdm import tqdm

from train.cli import parse_config

NON_CXR_KINDS = ("photo", "document", "screenshot", "noise", "ct", "mr", "other_medical")
SPLITS = ("train", "suite")

ROT_CW = "rotated 90° clockwise"
UPSIDE_DOWN = "upside down"
ROT_CCW = "rotated 90° anticlockwise"
MIRRORED = "mirrored"
INVERTED = "inverted"
MISORIENTED_LABELS = (ROT_CW, UPSIDE_DOWN, ROT_CCW, MIRRORED, INVERTED)

MIN_SIDE, MAX_SIDE = 128, 1024
MIN_ASPECT, MAX_ASPECT = 0.6, 1.6  # height / width
CXR_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"), Path.home() / ".fonts")

Maker = Callable[[np.random.Generator, int, int], np.ndarray]  # (rng, height, width) -> uint8 HxW

# "library:file" for each bundled image, read by `_load_source`. Each belongs to exactly one split; a file that is not
# there offline (scikit-image is not a project dependency; a codec may be missing) is skipped.
_SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "train": {
        "photo": ("sklearn:china.jpg", "gradio:cheetah.jpg", "gradio:groot.jpeg", "gradio:hf-logo_transpng.png",
                  "matplotlib:grace_hopper.jpg", "matplotlib:Minduka_Present_Blue_Pack.png", "skimage:astronaut.png", "skimage:camera.png",
                  "skimage:coffee.png", "skimage:chelsea.png", "skimage:rocket.jpg", "skimage:brick.png", "skimage:grass.png",
                  "skimage:color.png", "skimage:horse.png", "skimage:hubble_deep_field.jpg"),
        "document": ("skimage:page.png",),
        "screenshot": (),
        "noise": (),
        "ct": ("pydicom:CT_small.dcm", "pydicom:J2K_pixelrep_mismatch.dcm", "skimage:phantom.png"),
        "mr": ("pydicom:MR_small.dcm", "matplotlib:s1045.ima.gz"),
        "other_medical": ("pydicom:examples_palette.dcm", "pydicom:JPEG2000.dcm", "skimage:retina.jpg", "skimage:cell.png"),
    },
    "suite": {
        "photo": ("sklearn:flower.jpg", "gradio:lion.jpg", "gradio:tower.jpg", "gradio:cheetah1.jpg", "matplotlib:logo2.png",
                  "skimage:coins.png", "skimage:moon.png", "skimage:gravel.png", "skimage:clock_motion.png", "skimage:logo.png"),
        "document": ("skimage:text.png",),
        "screenshot": ("gradio:screenshot.gif",),
        "noise": (),
        "ct": ("pydicom:693_J2KI.dcm",),
        "mr": ("pydicom:examples_overlay.dcm",),
        # examples_jpeg2k.dcm is the same ultrasound frame as examples_rgb_color.dcm, so only one of them is used
        "other_medical": ("pydicom:examples_rgb_color.dcm", "pydicom:examples_ybr_color.dcm", "skimage:ihc.png"),
    },
}

# Where a kind has a procedural generator as well as files, the generator's share of the draws.
_PROCEDURAL_SHARE = {"document": 0.85, "screenshot": 0.85, "noise": 1.0, "ct": 0.3}

_PACKAGE_DIRS = {  # where each library keeps its sample images, found without importing it
    "sklearn": ("sklearn", "datasets", "images"),
    "matplotlib": ("matplotlib", "mpl-data", "sample_data"),
    "gradio": ("gradio", "media_assets", "images"),
    "skimage": ("skimage", "data"),
}

_CT_WINDOWS = ((40, 400), (-600, 1500), (400, 1800), (40, 80), (50, 350))  # (centre, width) HU: soft tissue, lung, ...

_TRAIN_WORDS = tuple(
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore magna "
    "aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea commodo consequat duis "
    "aute irure reprehenderit voluptate velit esse cillum fugiat nulla pariatur excepteur sint occaecat cupidatat non "
    "proident sunt culpa qui officia deserunt mollit anim id est laborum".split()
)
_SUITE_WORDS = tuple(
    "the quarterly report shows revenue growth across all regions while operating costs remained stable our team will "
    "review budget proposal at next meeting please find attached invoice number payment due within thirty days "
    "customer support hours are monday to friday shipping address order total tax discount subtotal account settings "
    "privacy policy terms of service download update password email phone schedule project deadline summary results "
    "figure table chapter section".split()
)


@dataclass(frozen=True)
class _Style:
    """Per-split look of rendered documents and screenshots, so the suite's layouts are not the training ones."""

    words: tuple[str, ...]
    margin: tuple[float, float]  # fraction of the width
    body_size: tuple[float, float]  # font size as a fraction of the width
    columns: tuple[int, ...]
    line_spacing: tuple[float, float]
    dark_theme: float  # probability, screenshots
    window_buttons: str  # "mac": three dots at the left; "windows": glyphs at the right
    sidebar: tuple[str, ...]
    tabs: bool
    radius: tuple[float, float]  # button corner radius as a fraction of its height


_STYLES = {
    "train": _Style(words=_TRAIN_WORDS, margin=(0.06, 0.12), body_size=(0.014, 0.03), columns=(1, 1, 2), line_spacing=(1.2, 1.45),
                    dark_theme=0.3, window_buttons="mac", sidebar=("left", "none"), tabs=False, radius=(0.2, 0.5)),
    "suite": _Style(words=_SUITE_WORDS, margin=(0.03, 0.08), body_size=(0.012, 0.026), columns=(1, 2, 3), line_spacing=(1.1, 1.7),
                    dark_theme=0.5, window_buttons="windows", sidebar=("right", "none", "left"), tabs=True, radius=(0.0, 0.3)),
}


# ---------------------------------------------------------------------------------------------------------------- API
def non_cxr_images(split: str, n: int, seed: int = 0) -> list[tuple[np.ndarray, str]]:
    """`n` grayscale uint8 HxW images that are not chest X-rays, each with its kind, balanced across `NON_CXR_KINDS`.

    Sides are 128..1024 px, aspect (height/width) 0.6..1.6. "train" and "suite" use disjoint sources."""
    return list(iter_non_cxr_images(split, n, seed))


def iter_non_cxr_images(split: str, n: int, seed: int = 0) -> Iterator[tuple[np.ndarray, str]]:
    """`non_cxr_images` one image at a time. Image i depends only on (split, seed, i), not on `n`."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    _assert_disjoint()
    for i in range(n):
        kind = NON_CXR_KINDS[i % len(NON_CXR_KINDS)]  # interleaved, so every prefix is balanced too
        rng = np.random.default_rng([seed, SPLITS.index(split), i])
        makers, weights = _menu(split, kind)
        maker = makers[rng.choice(len(makers), p=weights)]
        height, width = _target_size(rng)
        yield maker(rng, height, width), kind


def misoriented(image: np.ndarray) -> list[tuple[np.ndarray, str]]:
    """The rotated, flipped and inverted versions of an upright frontal CXR (uint8 HxW), each with its label."""
    image = np.asarray(image)
    if image.ndim != 2 or image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 HxW image, got {image.dtype} {image.shape}")
    versions = [(np.rot90(image, -1), ROT_CW), (np.rot90(image, 2), UPSIDE_DOWN), (np.rot90(image, 1), ROT_CCW),
                (np.flipud(image), UPSIDE_DOWN), (np.fliplr(image), MIRRORED), (255 - image, INVERTED)]
    return [(np.ascontiguousarray(version), label) for version, label in versions]


def label_slug(label: str) -> str:
    """A folder name for a label: "rotated 90° clockwise" -> "rotated-90-clockwise"."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


# ------------------------------------------------------------------------------------------------------ the draws
@cache
def _menu(split: str, kind: str) -> tuple[tuple[Maker, ...], np.ndarray]:
    """The makers for one kind in one split and the probability of each."""
    specs = [spec for spec in _SOURCES[split][kind] if _load_source(spec) is not None]
    procedural = _procedural(split, kind)
    if procedural is None and not specs:
        raise RuntimeError(f"no {kind} source is available offline for the {split!r} split")
    share = 0.0 if procedural is None else (_PROCEDURAL_SHARE[kind] if specs else 1.0)
    makers = ([procedural] if procedural else []) + [partial(_from_source, spec=spec, kind=kind) for spec in specs]
    weights = ([share] if procedural else []) + [(1.0 - share) / max(1, len(specs))] * len(specs)
    return tuple(makers), np.asarray(weights) / sum(weights)


def _procedural(split: str, kind: str) -> Maker | None:
    makers = {"document": partial(_document, split=split), "screenshot": partial(_screenshot, split=split), "noise": _noise}
    if split == "train":  # the suite's CT stays real scans only
        makers["ct"] = _ct_phantom
    return makers.get(kind)


def _target_size(rng: np.random.Generator) -> tuple[int, int]:
    aspect = np.exp(rng.uniform(np.log(MIN_ASPECT), np.log(MAX_ASPECT)))
    height = int(rng.integers(MIN_SIDE, MAX_SIDE + 1))
    # clipping the width only pulls the aspect towards 1, so it stays in range
    width = int(np.clip(round(height / aspect), MIN_SIDE, MAX_SIDE))
    return height, width


def _assert_disjoint() -> None:
    """The two splits must not share a source, a word or a font family, or the suite would measure memory."""
    train = {spec for specs in _SOURCES["train"].values() for spec in specs}
    suite = {spec for specs in _SOURCES["suite"].values() for spec in specs}
    assert not train & suite, train & suite
    assert not set(_TRAIN_WORDS) & set(_SUITE_WORDS), set(_TRAIN_WORDS) & set(_SUITE_WORDS)
    fonts = [{path for pair in _fonts(split) for path in pair if path} for split in SPLITS]
    assert not fonts[0] & fonts[1], fonts[0] & fonts[1]


# ------------------------------------------------------------------------------------------------ bundled images
@cache
def _load_source(spec: str) -> np.ndarray | None:
    """float32 (frames, H, W, channels) pixels of one bundled image, in its own units (HU for CT); None if unavailable."""
    library, name = spec.split(":", 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom's notes about odd test files
            return _read_pydicom(name) if library == "pydicom" else _read_package_file(library, name)
    except Exception:  # noqa: BLE001 -- a missing package or codec, an undecodable file: the source is just skipped
        return None


def _read_package_file(library: str, name: str) -> np.ndarray | None:
    package, *parts = _PACKAGE_DIRS[library]
    spec = importlib.util.find_spec(package)  # locates the package without running its (slow) __init__
    path = Path(next(iter(spec.submodule_search_locations)), *parts, name) if spec and spec.submodule_search_locations else None
    if path is None or not path.is_file():
        return None  # e.g. scikit-image data that would have to be downloaded
    if name == "s1045.ima.gz":  # matplotlib's raw 256x256 16-bit MR slice
        pixels = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint16).reshape(256, 256)
        return pixels.astype(np.float32)[None, :, :, None]
    with Image.open(path) as image:
        rgb = _flatten_alpha(ImageOps.exif_transpose(image))
    return np.asarray(rgb, np.float32)[None]


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return image.convert("RGB")


def _read_pydicom(name: str) -> np.ndarray | None:
    path = get_testdata_file(name, download=False)  # only the files bundled in the wheel
    if path is None:
        return None
    ds = pydicom.dcmread(path)
    if str(ds.get("Modality", "")).upper() in {"CR", "DX"}:  # a radiograph could be a chest X-ray: not a negative
        return None
    pixels = ds.pixel_array
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    elif int(ds.get("SamplesPerPixel", 1)) == 1:
        pixels = apply_modality_lut(pixels, ds)  # CT in Hounsfield units, so CT windows mean what they say
        if ds.get("PhotometricInterpretation") == "MONOCHROME1":
            pixels = pixels.max() - pixels
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return np.asarray(pixels, np.float32).reshape(frames, int(ds.Rows), int(ds.Columns), -1)


def _from_source(rng: np.random.Generator, height: int, width: int, spec: str, kind: str) -> np.ndarray:
    stack = _load_source(spec)
    assert stack is not None  # `_menu` only offers sources that loaded
    frame = stack[rng.integers(len(stack))]
    unit = _ct_window(frame, rng) if kind == "ct" and spec.startswith("pydicom:") else _stretch(frame, 0.5, 99.5)
    return _augment(_to_gray(unit, rng), rng, height, width, rotate=kind not in ("document", "screenshot"))


def _ct_window(hounsfield: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    centre, width = _CT_WINDOWS[rng.integers(len(_CT_WINDOWS))]
    width *= rng.uniform(0.8, 1.25)
    return np.clip((hounsfield - centre + width / 2) / width, 0.0, 1.0)


def _stretch(x: np.ndarray, low: float, high: float) -> np.ndarray:
    step = max(1, min(x.shape[:2]) // 256)  # percentiles of a subsample are close enough and much faster
    lo, hi = np.percentile(x[::step, ::step], [low, high])
    return np.clip((x - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _to_gray(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """HxWxC -> HxW; colour images get a random channel mix, as uploads come from many converters."""
    if frame.shape[-1] == 1:
        return frame[..., 0]
    weights = np.array([0.299, 0.587, 0.114]) if rng.random() < 0.6 else rng.dirichlet(np.ones(3))
    return frame[..., :3] @ weights.astype(np.float32)


def _augment(gray: np.ndarray, rng: np.random.Generator, height: int, width: int, rotate: bool = True) -> np.ndarray:
    """Random 90° rotation, mirror, crop and tone of a [0, 1] HxW image, resized to height x width, as uint8."""
    if rotate:
        gray = np.rot90(gray, int(rng.integers(4)))
        if rng.random() < 0.5:
            gray = gray[:, ::-1]
    crop = _random_crop(gray, rng, height / width)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(crop, np.float32)).resize((width, height), Image.BILINEAR))
    return _to_uint8(_tone(resized, rng))


def _random_crop(image: np.ndarray, rng: np.random.Generator, aspect: float) -> np.ndarray:
    """A crop of 35-100% of the area with the target aspect (height/width), so resizing never distorts."""
    h, w = image.shape
    area = rng.uniform(0.35, 1.0) * h * w
    crop_w = min(w, h / aspect, np.sqrt(area / aspect))
    crop_h, crop_w = max(1, min(h, round(crop_w * aspect))), max(1, min(w, round(crop_w)))
    top, left = rng.integers(h - crop_h + 1), rng.integers(w - crop_w + 1)
    return image[top : top + crop_h, left : left + crop_w]


def _tone(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = _stretch(x, rng.uniform(0, 3), rng.uniform(97, 100))
    x = x ** np.exp(rng.normal(0, 0.35))  # gamma
    if rng.random() < 0.25:  # washed out, low-contrast copies of copies
        x = rng.uniform(0, 0.3) + x * rng.uniform(0.4, 0.7)
    if rng.random() < 0.15:
        x = 1.0 - x
    return x


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(x) * 255.0 + 0.5, 0, 255).astype(np.uint8)


# -------------------------------------------------------------------------------------------------------- noise
def _noise(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    pattern = _NOISE_PATTERNS[rng.integers(len(_NOISE_PATTERNS))]
    return _to_uint8(pattern(rng, height, width))


def _uniform_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    low = rng.uniform(0, 0.5)
    return low + rng.random((h, w)) * rng.uniform(0.1, 1 - low)


def _gaussian_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.clip(rng.normal(rng.uniform(0.2, 0.8), rng.uniform(0.03, 0.3), (h, w)), 0, 1)


def _smooth_noise(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Low-frequency blobs: the closest noise gets to soft anatomy, so the check must not mistake it for lungs."""
    cell = rng.uniform(8, 160)
    small = rng.normal(size=(max(2, round(h / cell)), max(2, round(w / cell)))).astype(np.float32)
    field = np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC))
    return _stretch(field, 0, 100)


def _salt_and_pepper(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    image = np.full((h, w), rng.uniform(0.2, 0.8)) if rng.random() < 0.5 else _smooth_noise(rng, h, w)
    hits = rng.random((h, w)) < rng.uniform(0.01, 0.3)
    image[hits] = rng.integers(0, 2, hits.sum())
    return image


def _gradient(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    if rng.random() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        field = np.cos(angle) * x + np.sin(angle) * y
    else:
        field = np.hypot(x - rng.uniform(0, w), y - rng.uniform(0, h))
    low, high = sorted(rng.uniform(0, 1, 2))
    return low + (high - low) * _stretch(field, 0, 100)


def _flat(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    return np.clip(rng.uniform(0.05, 0.95) + rng.normal(0, rng.uniform(0.002, 0.02), (h, w)), 0, 1)


def _checkerboard(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    size = int(rng.integers(2, max(3, min(h, w) // 4)))
    y, x = np.mgrid[0:h, 0:w] + rng.integers(0, size, 2)[:, None, None]
    cells = (x // size) % 2 if rng.random() < 0.25 else (x // size + y // size) % 2  # stripes sometimes
    low, high = sorted(rng.uniform(0, 1, 2))
    return np.where(cells == 1, high, low)


_NOISE_PATTERNS = (_uniform_noise, _gaussian_noise, _smooth_noise, _salt_and_pepper, _gradient, _flat, _checkerboard)


# ------------------------------------------------------------------------------------------------------- CT phantom
def _ct_phantom(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A rough axial chest CT slice in HU (body, fat, lungs with vessels, heart, spine, ribs, table), then windowed:
    the training CT files are few, and an axial chest slice is the CT most likely to be uploaded here."""
    size = 384
    yy, xx = np.mgrid[-1 : 1 : size * 1j, -1 : 1 : size * 1j]

    def ellipse(cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
        return ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1

    rx, ry, cy = rng.uniform(0.7, 0.92), rng.uniform(0.45, 0.7), rng.uniform(-0.1, 0.1)
    hu = np.full((size, size), -1000.0)
    hu[ellipse(0, cy, rx, ry)] = -100  # subcutaneous fat
    hu[ellipse(0, cy, rx * 0.9, ry * 0.88)] = 40  # muscle and mediastinum
    for side in (-1, 1):
        lung = ellipse(side * rx * 0.42, cy - 0.05, rx * rng.uniform(0.3, 0.4), ry * rng.uniform(0.6, 0.75))
        hu[lung] = -850 + rng.normal(0, 40, lung.sum())
    hu[ellipse(rng.uniform(0, 0.15), cy, rx * 0.28, ry * 0.4)] = 45  # heart
    for angle in np.linspace(0.15, np.pi - 0.15, int(rng.integers(6, 12))):  # ribs along the chest wall
        for sign in (-1, 1):
            hu[ellipse(sign * np.cos(angle) * rx * 0.86, cy + np.sin(angle) * ry * 0.84 * sign, 0.03, 0.02)] = 700
    spine_y = cy + ry * 0.7
    hu[ellipse(0, spine_y, 0.09, 0.08)] = 600
    hu[ellipse(0, spine_y - 0.01, 0.035, 0.03)] = 20  # spinal canal
    hu[(yy > cy + ry + 0.05) & (yy < cy + ry + 0.09)] = 150  # the table
    hu += rng.normal(0, rng.uniform(5, 30), hu.shape)
    return _augment(_ct_window(hu.astype(np.float32), rng), rng, height, width)


# ------------------------------------------------------------------------------------------------------ text & fonts
@cache
def _fonts(split: str) -> tuple[tuple[str | None, str | None], ...]:
    """(regular, bold) font files per family; families alternate between the splits, PIL's own font is train's."""
    families: dict[str, list[Path]] = {}
    for folder in FONT_DIRS:
        for path in sorted(folder.rglob("*")) if folder.is_dir() else ():
            if path.suffix.lower() in {".ttf", ".otf"}:
                families.setdefault(path.stem.split("-")[0], []).append(path)
    names = sorted(families)[SPLITS.index(split) :: 2]
    pairs: list[tuple[str | None, str | None]] = [_regular_and_bold(families[name]) for name in names]
    if split == "train" or not pairs:
        pairs.append((None, None))
    return tuple(pairs)


def _regular_and_bold(faces: list[Path]) -> tuple[str, str]:
    plain = [p for p in faces if "-" not in p.stem or p.stem.endswith("-Regular")] or faces
    bold = [p for p in faces if p.stem.endswith("-Bold")] or plain
    return str(plain[0]), str(bold[0])


@lru_cache(maxsize=256)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    size = max(6, size)
    return ImageFont.load_default(size=size) if path is None else ImageFont.truetype(path, size)


def _wrap(text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, width: float) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        candidate = f"{line} {word}".strip()
        if line and font.getlength(candidate) > width:
            lines.append(line)
            candidate = word
        line = candidate
    return lines + [line] if line else lines


# ------------------------------------------------------------------------------------------------------- documents
class _Flow:
    """Lays blocks out top to bottom, then in the next column; `place` says where a block goes, or None when full."""

    def __init__(self, left: int, top: int, right: int, bottom: int, columns: int, gutter: int) -> None:
        self.left, self.top, self.bottom, self.gutter = left, top, bottom, gutter
        self.column_width = max(20, (right - left - gutter * (columns - 1)) // columns)
        self.columns, self.column, self.y = columns, 0, top

    def place(self, height: int) -> tuple[int, int] | None:
        if self.y + height > self.bottom:
            self.column += 1
            self.y = self.top
            if self.column >= self.columns or height > self.bottom - self.top:
                return None
        x, y = self.left + self.column * (self.column_width + self.gutter), self.y
        self.y += height
        return x, y

    def skip(self, height: int) -> None:
        self.y += height


@dataclass
class _Canvas:
    """What every document block and screenshot widget draws with."""

    image: Image.Image
    draw: ImageDraw.ImageDraw
    rng: np.random.Generator
    style: _Style
    fonts: tuple[str | None, str | None]  # regular, bold
    size: int  # body font size
    shades: dict[str, int]  # "background", "panel", "bar", "text", "accent"

    def font(self, scale: float = 1.0, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
        return _font(self.fonts[bold], round(self.size * scale))

    def words(self, low: int, high: int, capitalise: bool = True) -> str:
        count = int(self.rng.integers(low, high))
        text = " ".join(self.style.words[i] for i in self.rng.integers(len(self.style.words), size=max(1, count)))
        return text[:1].upper() + text[1:] if capitalise else text


def _canvas(rng: np.random.Generator, split: str, height: int, width: int, size: int, shades: dict[str, int]) -> _Canvas:
    image = Image.new("L", (width, height), shades["background"])
    fonts = _fonts(split)
    return _Canvas(image, ImageDraw.Draw(image), rng, _STYLES[split], fonts[rng.integers(len(fonts))], size, shades)


def _document(rng: np.random.Generator, height: int, width: int, split: str) -> np.ndarray:
    """A page of text: title, headings, paragraphs, bullet lists and tables, sometimes as a skewed, noisy scan."""
    style = _STYLES[split]
    paper = int(rng.integers(215, 256))
    size = max(7, round(width * rng.uniform(*style.body_size)))
    c = _canvas(rng, split, height, width, size, {"background": paper, "text": int(rng.integers(0, 80))})
    margin = round(width * rng.uniform(*style.margin))
    c.draw.text((margin, margin), c.words(2, 6), fill=c.shades["text"], font=c.font(rng.uniform(1.6, 2.6), bold=True))
    columns = int(rng.choice(style.columns))
    flow = _Flow(margin, margin + round(size * 3.5), width - margin, height - margin, columns, max(8, margin // 2))
    line_height = round(size * rng.uniform(*style.line_spacing))
    blocks = (_paragraph, _paragraph, _paragraph, _heading, _bullets, _table)
    while blocks[rng.integers(len(blocks))](c, flow, line_height):
        flow.skip(line_height // 2)
    return _to_uint8(_scan(c.image, rng, paper) / 255.0)


def _paragraph(c: _Canvas, flow: _Flow, line_height: int) -> bool:
    font = c.font()
    for line in _wrap(c.words(12, 90) + ".", font, flow.column_width):
        if (spot := flow.place(line_height)) is None:
            return False
        c.draw.text(spot, line, fill=c.shades["text"], font=font)
    return True


def _heading(c: _Canvas, flow: _Flow, line_height: int) -> bool:
    scale = c.rng.uniform(1.2, 1.6)
    spot = flow.place(round(line_height * scale * 1.3))
    if spot is not None:
        c.draw.text(spot, c.words(1, 5), fill=c.shades["text"], font=c.font(scale, bold=True))
    return spot is not None


def _bullets(c: _Canvas, flow: _Flow, line_height: int) -> bool:
    font, half, dot = c.font(), c.size // 2, max(1, c.size // 6)
    for _ in range(int(c.rng.integers(2, 7))):
        if (spot := flow.place(line_height)) is None:
            return False
        x, y = spot
        c.draw.ellipse((x + half - dot, y + half - dot, x + half + dot, y + half + dot), fill=c.shades["text"])
        line = _wrap(c.words(3, 12), font, flow.column_width - 2 * c.size)[0]
        c.draw.text((x + 2 * c.size, y), line, fill=c.shades["text"], font=font)
    return True


def _table(c: _Canvas, flow: _Flow, line_height: int) -> bool:
    rows, cols = int(c.rng.integers(3, 10)), int(c.rng.integers(2, 6))
    row_height = round(line_height * 1.3)
    if (spot := flow.place(rows * row_height)) is None:
        return False
    x, y = spot
    cell = flow.column_width // cols
    fits = max(1, cell // max(1, c.size // 2))  # characters per cell, roughly
    for r in range(rows):
        for col in range(cols):
            text = c.words(1, 2) if r == 0 or col == 0 else f"{c.rng.uniform(0, 1000):.{int(c.rng.integers(0, 3))}f}"
            spot = (x + col * cell + 3, y + r * row_height + 2)
            c.draw.text(spot, text[:fits], fill=c.shades["text"], font=c.font(0.9, bold=r == 0))
    grid = int(c.rng.integers(0, 3))  # 0: full grid, 1: rules between rows only, 2: no lines
    for r in range(rows + 1) if grid < 2 else ():
        c.draw.line((x, y + r * row_height, x + cols * cell, y + r * row_height), fill=c.shades["text"])
    for col in range(cols + 1) if grid == 0 else ():
        c.draw.line((x + col * cell, y, x + col * cell, y + rows * row_height), fill=c.shades["text"])
    return True


def _scan(page: Image.Image, rng: np.random.Generator, paper: int) -> np.ndarray:
    """Half the pages look scanned or photographed: slightly rotated, blurred and grainy."""
    if rng.random() < 0.5:
        page = page.rotate(rng.uniform(-3, 3), resample=Image.BILINEAR, fillcolor=int(paper * rng.uniform(0.6, 1.0)))
        page = page.filter(ImageFilter.GaussianBlur(rng.uniform(0.2, 1.2)))
        return np.asarray(page, np.float32) + rng.normal(0, rng.uniform(1, 8), (page.height, page.width))
    return np.asarray(page, np.float32)


# ----------------------------------------------------------------------------------------------------- screenshots
def _screenshot(rng: np.random.Generator, height: int, width: int, split: str) -> np.ndarray:
    """An application window: title bar, optional tabs and sidebar, then text, fields, buttons, charts and tables."""
    style = _STYLES[split]
    size = max(8, round(min(width, height) * rng.uniform(0.018, 0.035)))
    c = _canvas(rng, split, height, width, size, _shades(rng, dark=rng.random() < style.dark_theme))
    top = _title_bar(c, width)
    if style.tabs and rng.random() < 0.7:
        top = _tabs(c, width, top)
    left, right = 0, width
    side = style.sidebar[rng.integers(len(style.sidebar))]
    if side != "none":
        left, right = _sidebar(c, width, height, top, side)
    _content(c, (left, top, right, height))
    return np.asarray(c.image)


def _shades(rng: np.random.Generator, dark: bool) -> dict[str, int]:
    base = int(rng.integers(15, 50)) if dark else int(rng.integers(225, 256))
    step = 1 if dark else -1
    text = int(rng.integers(190, 250)) if dark else int(rng.integers(0, 70))
    accent = int(rng.integers(70, 170))
    return {"background": base, "panel": base + 15 * step, "bar": base + 30 * step, "text": text, "accent": accent}


def _title_bar(c: _Canvas, width: int) -> int:
    bar = round(c.size * c.rng.uniform(1.8, 2.4))
    c.draw.rectangle((0, 0, width, bar), fill=c.shades["bar"])
    r, mid = max(2, bar // 5), bar // 2
    if c.style.window_buttons == "mac":
        for i in range(3):
            x = mid + i * 3 * r
            c.draw.ellipse((x - r, mid - r, x + r, mid + r), fill=int(c.rng.integers(60, 200)))
    else:  # close, maximise and minimise glyphs at the right
        x = width - mid
        c.draw.line((x - r, mid - r, x + r, mid + r), fill=c.shades["text"])
        c.draw.line((x - r, mid + r, x + r, mid - r), fill=c.shades["text"])
        c.draw.rectangle((x - 2 * bar - r, mid - r, x - 2 * bar + r, mid + r), outline=c.shades["text"])
        c.draw.line((x - 4 * bar - r, mid + r, x - 4 * bar + r, mid + r), fill=c.shades["text"])
    title, font = c.words(1, 4), c.font(0.9)
    x = (width - font.getlength(title)) / 2 if c.rng.random() < 0.5 else bar * 2.5
    c.draw.text((x, (bar - c.size) / 2), title, fill=c.shades["text"], font=font)
    return bar


def _tabs(c: _Canvas, width: int, top: int) -> int:
    height, font, active = round(c.size * 2.2), c.font(), int(c.rng.integers(0, 4))
    c.draw.rectangle((0, top, width, top + height), fill=c.shades["panel"])
    x = c.size
    for i in range(int(c.rng.integers(2, 7))):
        label = c.words(1, 2)
        tab_width = font.getlength(label) + 2 * c.size
        if i == active:
            c.draw.rectangle((x, top + 2, x + tab_width, top + height), fill=c.shades["background"])
        c.draw.text((x + c.size, top + (height - c.size) / 2), label, fill=c.shades["text"], font=font)
        x += tab_width + c.size // 2
    return top + height


def _sidebar(c: _Canvas, width: int, height: int, top: int, side: str) -> tuple[int, int]:
    """Draws a menu down one side; returns the left and right edges of what is left for the content."""
    bar_width = round(width * c.rng.uniform(0.15, 0.3))
    x0 = 0 if side == "left" else width - bar_width
    c.draw.rectangle((x0, top, x0 + bar_width, height), fill=c.shades["panel"])
    font, step, selected = c.font(), round(c.size * c.rng.uniform(1.8, 2.6)), int(c.rng.integers(0, 6))
    for i, y in enumerate(range(top + c.size, height - step, step)):
        if i == selected:
            c.draw.rectangle((x0, y - step // 4, x0 + bar_width, y + step * 3 // 4), fill=c.shades["accent"])
        c.draw.text((x0 + c.size, y), c.words(1, 3), fill=c.shades["text"], font=font)
    return (bar_width, width) if side == "left" else (0, x0)


def _content(c: _Canvas, box: tuple[int, int, int, int]) -> None:
    left, top, right, bottom = box
    pad = round(c.size * c.rng.uniform(1, 2.5))
    flow = _Flow(left + pad, top + pad, right - pad - c.size, bottom - pad, 1, 0)
    widgets = (_ui_text, _ui_field, _ui_buttons, _ui_chart, _ui_rows, _ui_picture)
    while widgets[c.rng.integers(len(widgets))](c, flow):
        flow.skip(pad)
    thumb = c.rng.uniform(top, max(top + 1, bottom - 2 * c.size))  # the scrollbar
    length = c.rng.uniform(c.size, max(c.size + 1, (bottom - top) / 2))
    c.draw.rectangle((right - c.size // 2 - 2, thumb, right - 2, thumb + length), fill=c.shades["bar"])


def _ui_text(c: _Canvas, flow: _Flow) -> bool:
    font = c.font(bold=c.rng.random() < 0.3)
    for line in _wrap(c.words(3, 40), font, flow.column_width)[:4]:
        if (spot := flow.place(round(c.size * 1.5))) is None:
            return False
        c.draw.text(spot, line, fill=c.shades["text"], font=font)
    return True


def _ui_field(c: _Canvas, flow: _Flow) -> bool:
    if (spot := flow.place(round(c.size * 4))) is None:
        return False
    (x, y), font, s = spot, c.font(), c.size
    c.draw.text((x, y), c.words(1, 3), fill=c.shades["text"], font=font)
    field = (x, y + s * 1.5, x + flow.column_width * c.rng.uniform(0.4, 1.0), y + s * 3.6)
    radius = round(s * c.rng.uniform(*c.style.radius))
    c.draw.rounded_rectangle(field, radius=radius, outline=c.shades["accent"], fill=c.shades["panel"])
    c.draw.text((x + s // 2, y + s * 2), c.words(1, 4, capitalise=False), fill=c.shades["bar"], font=font)
    return True


def _ui_buttons(c: _Canvas, flow: _Flow) -> bool:
    height = round(c.size * 2.2)
    if (spot := flow.place(height)) is None:
        return False
    (x, y), font = spot, c.font(bold=True)
    for i in range(int(c.rng.integers(1, 5))):
        label = c.words(1, 2)
        width = font.getlength(label) + 2 * c.size
        if x + width > flow.left + flow.column_width:
            break
        radius = round(height * c.rng.uniform(*c.style.radius))
        c.draw.rounded_rectangle((x, y, x + width, y + height), radius=radius, fill=c.shades["accent" if i == 0 else "panel"])
        c.draw.text((x + c.size, y + (height - c.size) / 2), label, fill=c.shades["text"], font=font)
        x += width + c.size
    return True


def _place_block(c: _Canvas, flow: _Flow, low: float, high: float) -> tuple[int, int, int] | None:
    """(x, y, height) of a block `low`..`high` text sizes high at the flow's next spot; None when the page is full."""
    height = round(c.size * c.rng.uniform(low, high))
    return None if (spot := flow.place(height)) is None else (*spot, height)


def _ui_chart(c: _Canvas, flow: _Flow) -> bool:
    if (block := _place_block(c, flow, 6, 14)) is None:
        return False
    (x, y, height), width = block, flow.column_width * c.rng.uniform(0.5, 1.0)
    values = c.rng.uniform(0.1, 1.0, int(c.rng.integers(4, 20)))
    step, base = width / len(values), y + height
    c.draw.line((x, base, x + width, base), fill=c.shades["text"])
    if c.rng.random() < 0.5:
        for i, value in enumerate(values):
            c.draw.rectangle((x + i * step + 2, base - height * value, x + (i + 1) * step - 2, base), fill=c.shades["accent"])
    else:
        points = [(x + i * step, base - height * value) for i, value in enumerate(values)]
        c.draw.line(points, fill=c.shades["accent"], width=max(1, c.size // 6))
    return True


def _ui_rows(c: _Canvas, flow: _Flow) -> bool:
    font, height = c.font(), round(c.size * 2)
    for i in range(int(c.rng.integers(3, 9))):
        if (spot := flow.place(height)) is None:
            return False
        x, y = spot
        if i % 2:
            c.draw.rectangle((x, y, x + flow.column_width, y + height), fill=c.shades["panel"])
        label = _wrap(c.words(2, 6), font, flow.column_width * 0.7 - c.size)[0]  # stays clear of the number column
        c.draw.text((x + c.size // 2, y + c.size // 2), label, fill=c.shades["text"], font=font)
        number = f"{c.rng.uniform(0, 9999):.2f}"
        c.draw.text((x + flow.column_width * 0.75, y + c.size // 2), number, fill=c.shades["text"], font=font)
    return True


def _ui_picture(c: _Canvas, flow: _Flow) -> bool:
    """An embedded picture, so an image-like region inside a window still reads as a screenshot."""
    if (block := _place_block(c, flow, 5, 12)) is None:
        return False
    x, y, height = block
    width = max(8, round(flow.column_width * c.rng.uniform(0.3, 0.8)))
    c.image.paste(Image.fromarray(_to_uint8(_smooth_noise(c.rng, height, width))), (x, y))
    return True


# ---------------------------------------------------------------------------------------------------------------- CLI
def _read_cxr(path: Path) -> np.ndarray:
    """An upright CXR file as uint8 HxW: DICOM through the app's own reader, bitmaps through PIL."""
    if path.suffix.lower() == ".dcm":
        from cxr_demo.io import read_xray  # local import: only the CLI needs the app package

        return _to_uint8(read_xray(path).pixels)
    with Image.open(path) as image:
        if image.mode.startswith("I") or image.mode == "F":  # 16-bit PNG: L conversion would clip, so scale
            return _to_uint8(_stretch(np.asarray(image, np.float32), 0, 100))
        return np.asarray(image.convert("L"))


def _write_non_cxr(folder: Path, n: int, seed: int) -> Counter[str]:
    folder.mkdir(parents=True, exist_ok=True)
    counts: Counter[str] = Counter()
    for i, (image, kind) in enumerate(tqdm(iter_non_cxr_images("suite", n, seed), total=n, desc="non-cxr", unit="img")):
        Image.fromarray(image).save(folder / f"{kind}-{i:04d}.png")
        counts[kind] += 1
    return counts


def _write_misoriented(folder: Path, roots: Sequence[Path]) -> Counter[str]:
    from cxr_demo.io import InvalidImage

    files = sorted({p for root in roots for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CXR_SUFFIXES})
    counts: Counter[str] = Counter()
    used: set[Path] = set()
    for path in tqdm(files, desc="misoriented", unit="img"):
        try:
            image = _read_cxr(path)
        except (InvalidImage, OSError, ValueError) as error:
            tqdm.write(f"skipped {path}: {error}")
            continue
        for version, label in misoriented(image):
            target = _unique(folder / label_slug(label), path.stem, used)
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(version).save(target)
            counts[label] += 1
    return counts


def _unique(folder: Path, stem: str, used: set[Path]) -> Path:
    """`stem.png`, or `stem-2.png`... when taken: two transforms give "upside down", and stems repeat across folders."""
    target, k = folder / f"{stem}.png", 1
    while target in used:
        k += 1
        target = folder / f"{stem}-{k}.png"
    used.add(target)
    return target


@dataclass
class SuiteConfig:
    out: Path = field(metadata={"help": "folder for non-cxr/ and misoriented/"})
    n: int = field(default=300, metadata={"help": "number of non-CXR images (balanced across kinds)"})
    cxr_dir: list[Path] = field(default_factory=list, metadata={"help": "upright CXRs to mis-orient"})
    seed: int = 0


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_config(SuiteConfig, argv, __doc__.splitlines()[0])
    kinds = _write_non_cxr(args.out / "non-cxr", args.n, args.seed)
    labels = _write_misoriented(args.out / "misoriented", args.cxr_dir) if args.cxr_dir else Counter()
    rows = [(f"non-cxr/{kind}", kinds[kind]) for kind in NON_CXR_KINDS]
    for name, count in rows + [(f"misoriented/{label_slug(label)}", labels[label]) for label in MISORIENTED_LABELS]:
        print(f"{name:<40} {count:5d}")


if __name__ == "__main__":
    main()
