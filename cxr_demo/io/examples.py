"""Example images shipped with the app (provenance in examples/SOURCE.md)."""
from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parents[2] / "examples"
SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def mask_for(image: str | Path) -> str | None:
    """The reference mask shipped with an example image, if any (examples/masks/<same name>)."""
    mask = EXAMPLES_DIR / "masks" / Path(image).name
    return str(mask) if mask.is_file() else None


LABELS = {
    "covid-1000.png": "COVID (COVID-19 Radiography DB)",
    "normal-1062.png": "Normal (COVID-19 Radiography DB)",
    "viral-pneumonia-person1007.png": "Viral pneumonia, child (Kermany)",
    "quex-normal-10.png": "Normal, another hospital (COVID-QU-Ex)",
    "siim-cr-jpeg-baseline.dcm": "DICOM, CR (SIIM-ACR)",
}


def label(image: str | Path) -> str:
    """A short caption for an example: what it shows and where it comes from (examples/SOURCE.md has the rest)."""
    name = Path(image).name
    return LABELS.get(name, name) + (" + lung mask" if mask_for(image) else "")


def paths() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in SUFFIXES]
