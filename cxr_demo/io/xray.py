"""Turn an uploaded file into an `XRay`: float pixels plus an allow-list of safe metadata.

Only the fields in `SafeMeta` are ever read from a DICOM header, so patient-identifying tags cannot leak
into logs or the UI.
"""
from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from PIL import Image, ImageOps, UnidentifiedImageError
from pydicom.dataset import FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_PIXELS = 60_000_000  # ~7700x7700; anything bigger is a decompression bomb or not a radiograph
MIN_SIDE = 64
MAX_ASPECT = 4.0
WORKING_MAX_SIDE = 2048  # larger images are downsampled once on read; every model runs far below this
LATERAL_VIEWS = {"LL", "RL", "LATERAL", "LAT", "LLD", "RLD"}
IMAGE_SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"BM", b"II*\x00", b"MM\x00*", b"GIF8", b"RIFF")


class InvalidImage(ValueError):
    """The upload cannot be used; the message is written for the person who uploaded it."""


@dataclass(frozen=True)
class SafeMeta:
    format: str
    width: int
    height: int
    bits: int | None = None
    modality: str | None = None
    view_position: str | None = None
    photometric: str | None = None
    pixel_spacing_mm: tuple[float, float] | None = None
    transfer_syntax: str | None = None

    def as_rows(self) -> list[list[str]]:
        """Field/value rows for display; fields the file does not carry are left out."""
        return [[k.replace("_", " "), str(v)] for k, v in asdict(self).items() if v is not None]


@dataclass(frozen=True)
class XRay:
    pixels: np.ndarray  # float32, HxW, [0, 1], 0 = black (air)
    meta: SafeMeta
    warnings: tuple[str, ...] = field(default=())

    @property
    def shape(self) -> tuple[int, int]:
        return self.pixels.shape  # type: ignore[return-value]

    @functools.cached_property
    def content_key(self) -> str:
        """What the shared intake and the task caches key on, hashed once per image rather than once per cache."""
        return fingerprint(self.pixels)


def fingerprint(pixels: np.ndarray) -> str:
    """Content key: a strided sample is enough to tell uploads apart and costs well under a millisecond."""
    sample = np.ascontiguousarray(pixels[::4, ::4])
    return hashlib.blake2b(sample.tobytes() + str(pixels.shape).encode(), digest_size=16).hexdigest()


def read_xray(source: str | Path | bytes) -> XRay:
    """Read PNG/JPG/BMP/TIFF or DICOM from a path or bytes. Raises `InvalidImage` with a plain message."""
    raw = _read_bytes(source)
    if _looks_like_dicom(raw):
        return _read_dicom(raw)
    try:
        return _read_bitmap(raw)
    except InvalidImage:
        raise
    except UnidentifiedImageError:
        try:  # DICOM files without the 128-byte preamble still parse with force=True
            return _read_dicom(raw, force=True)
        except InvalidImage:
            pass
        if raw.startswith(IMAGE_SIGNATURES):
            raise InvalidImage("The image file is damaged or truncated and could not be decoded.") from None
        raise InvalidImage("This file is not an image we can read. Upload a PNG, JPG, BMP, TIFF or DICOM chest X-ray.") from None
    except Image.DecompressionBombError:
        raise InvalidImage("The image is too large to open safely (over 60 megapixels).") from None
    except (OSError, SyntaxError, ValueError) as error:
        raise InvalidImage(f"The image file is damaged or truncated and could not be decoded ({type(error).__name__}).") from None


def _read_bytes(source: str | Path | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        raw = bytes(source)
    else:
        path = Path(source)
        if not path.is_file():
            raise InvalidImage("No file was uploaded, or it could not be found.")
        if path.stat().st_size > MAX_FILE_BYTES:
            raise InvalidImage("The file is larger than 200 MB; chest X-rays are far smaller.")
        raw = path.read_bytes()
    if len(raw) == 0:
        raise InvalidImage("The file is empty.")
    return raw


def _looks_like_dicom(raw: bytes) -> bool:
    return len(raw) > 132 and raw[128:132] == b"DICM"


def _check_size(width: int, height: int) -> None:
    if width * height > MAX_PIXELS:
        raise InvalidImage(f"The image is {width}x{height} pixels, too large to open safely (limit 60 megapixels).")
    if min(width, height) < MIN_SIDE:
        raise InvalidImage(f"The image is only {width}x{height} pixels; a chest X-ray needs at least {MIN_SIDE} on each side.")
    if max(width, height) / min(width, height) > MAX_ASPECT:
        raise InvalidImage(f"The image is {width}x{height} pixels, far too elongated to be a chest X-ray.")


def _read_bitmap(raw: bytes) -> XRay:
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(raw)) as image:
            _check_size(*image.size)
            fmt = image.format or "image"
            image = ImageOps.exif_transpose(image)
            notes = []
            array, bits = _bitmap_to_gray(image, notes)
    pixels = _rescale(array)
    meta = SafeMeta(format=fmt, width=pixels.shape[1], height=pixels.shape[0], bits=bits)
    return _finish(pixels, meta, notes)


def _bitmap_to_gray(image: Image.Image, notes: list[str]) -> tuple[np.ndarray, int]:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        array = np.asarray(image)
        return array, 16 if image.mode.startswith("I;16") or array.max() > 255 else 8
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        notes.append("The image had an alpha channel; transparent areas were shown as black.")
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode not in ("L", "RGB"):
        image = image.convert("RGB")
    if image.mode == "RGB":
        rgb = np.asarray(image).astype(np.float32)
        if np.abs(rgb - rgb.mean(2, keepdims=True)).mean() > 8:
            notes.append("This is a colour image. X-rays are grayscale: is this really a radiograph? It was converted to gray.")
        image = image.convert("L")
    return np.asarray(image), 8


def _read_dicom(raw: bytes, force: bool = False) -> XRay:
    try:
        ds = pydicom.dcmread(io.BytesIO(raw), force=force)
    except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
        raise InvalidImage("This DICOM file is damaged and could not be read.") from None
    if "PixelData" not in ds:
        raise InvalidImage("This DICOM file has no image in it (no Pixel Data): it may be a report or a structured document.")
    rows, cols = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    _check_size(cols, rows)
    _ensure_transfer_syntax(ds)
    syntax = ds.file_meta.get("TransferSyntaxUID")
    syntax_name = getattr(syntax, "name", None) if syntax else None
    try:
        array = ds.pixel_array
    except (NotImplementedError, RuntimeError) as error:
        if "no pixel data handler" in str(error).lower() or "unable to decode" in str(error).lower() or isinstance(error, NotImplementedError):
            raise InvalidImage(
                f"This DICOM uses a compression ({syntax_name or 'unknown'}) that no installed decoder supports. "
                "Export it uncompressed or as PNG and try again."
            ) from None
        raise InvalidImage("The DICOM pixel data could not be decoded: the file may be truncated.") from None
    except (ValueError, AttributeError, KeyError, TypeError, EOFError):
        raise InvalidImage("The DICOM pixel data could not be decoded: the file may be truncated.") from None
    notes = []
    if array.ndim == 3 and ds.get("SamplesPerPixel", 1) == 1:
        notes.append(f"This DICOM holds {array.shape[0]} frames; only the first is shown.")
        array = array[0]
    if array.ndim == 3:  # colour DICOM (secondary capture)
        array = array.mean(axis=-1)
        notes.append("This DICOM is in colour; it was converted to gray.")
    array = apply_modality_lut(array, ds)
    array = apply_voi_lut(array, ds) if ("WindowCenter" in ds or "VOILUTSequence" in ds) else array
    pixels = _rescale(np.asarray(array))
    photometric = str(ds.get("PhotometricInterpretation", "")) or None
    if photometric == "MONOCHROME1":  # bright = air on MONOCHROME1; we always show air as black
        pixels = 1.0 - pixels
    view = str(ds.get("ViewPosition", "") or "") or None
    if view and view.upper() in LATERAL_VIEWS:
        notes.append(f"The DICOM header says this is a {view} (lateral) view. Every model here was trained on frontal views only.")
    meta = SafeMeta(
        format="DICOM",
        width=pixels.shape[1],
        height=pixels.shape[0],
        bits=int(ds.get("BitsStored", 0) or 0) or None,
        modality=str(ds.get("Modality", "") or "") or None,
        view_position=view,
        photometric=photometric,
        pixel_spacing_mm=_pixel_spacing(ds),
        transfer_syntax=syntax_name,
    )
    return _finish(pixels, meta, notes)


def _ensure_transfer_syntax(ds) -> None:
    """Files without file meta (no preamble, old ACR-NEMA style) are uncompressed; say so, so pixels decode."""
    if "TransferSyntaxUID" in getattr(ds, "file_meta", {}):
        return
    implicit, little = getattr(ds, "original_encoding", (True, True))
    ds.file_meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def _pixel_spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2:
            try:
                return (round(float(value[0]), 4), round(float(value[1]), 4))
            except (TypeError, ValueError):
                return None
    return None


def _rescale(array: np.ndarray) -> np.ndarray:
    """Map the stored range to float32 [0, 1]. 8-bit data keep their absolute scale; deeper data are stretched min-max.
    Integer arrays are taken as stored: they cannot hold NaN, and their min and max cost a tenth of a float's."""
    if array.dtype.kind not in "ui":
        array = _finite(np.asarray(array, dtype=np.float32))
    lo, hi = float(array.min()), float(array.max())
    if lo >= 0 and hi <= 255 and hi > 1:
        if hi - lo < 1:
            raise InvalidImage("The image is a single flat colour: there is nothing to analyse.")
        return _stretched(array, 0.0, 255.0) if hi - lo > 64 else _stretched(array, lo, hi - lo)
    if hi - lo < 1e-6:
        raise InvalidImage("The image is a single flat colour: there is nothing to analyse.")
    return _stretched(array, lo, hi - lo)


def _finite(array: np.ndarray) -> np.ndarray:
    finite = np.isfinite(array)
    if finite.all():  # checked first: nan_to_num costs 8 ms on a 1024 px film, and almost every film is finite
        return array
    if not finite.any():
        raise InvalidImage("The image holds no finite pixel values: there is nothing to analyse.")
    # the film's own range, not float32's: an infinite pixel must not squash every other one to black
    lowest, highest = array[finite].min(), array[finite].max()
    return np.nan_to_num(array, nan=lowest, posinf=highest, neginf=lowest)


def _stretched(array: np.ndarray, offset: float, scale: float) -> np.ndarray:
    """(array - offset) / scale in float32, in two passes whatever the stored type."""
    return np.divide(np.subtract(array, np.float32(offset), dtype=np.float32), np.float32(scale), dtype=np.float32)


def _finish(pixels: np.ndarray, meta: SafeMeta, notes: list[str]) -> XRay:
    h, w = pixels.shape
    if max(h, w) > WORKING_MAX_SIDE:
        scale = WORKING_MAX_SIDE / max(h, w)
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        pixels = np.asarray(Image.fromarray(pixels, mode="F").resize(size, Image.BILINEAR))
    return XRay(np.ascontiguousarray(pixels, dtype=np.float32), meta, tuple(notes))
