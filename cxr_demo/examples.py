"""Example images shipped with the app (provenance in examples/SOURCE.md)."""
from __future__ import annotations

from pathlib import Path

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm"}


def mask_for(image: str | Path) -> str | None:
    """The reference mask shipped with an example image, if any (examples/masks/<same name>)."""
    mask = EXAMPLES_DIR / "masks" / Path(image).name
    return str(mask) if mask.is_file() else None


def paths() -> list[str]:
    if not EXAMPLES_DIR.is_dir():
        return []
    return [str(p) for p in sorted(EXAMPLES_DIR.iterdir()) if p.suffix.lower() in SUFFIXES]
