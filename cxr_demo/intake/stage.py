"""The stage every tab shares: the input check and the lung mask, computed once per image.

    seen = intake(xray)                      # cached by pixel content: a second tab on the same upload costs nothing
    notes = admit(seen, analyse_anyway)      # raises InputRefused with the reason, or returns the warnings to show
"""
from __future__ import annotations

from dataclasses import dataclass

from cxr_demo.intake.check import UNRELIABLE, InputRefused, Verdict, check
from cxr_demo.intake.lungs import Lungs, find_lungs
from cxr_demo.io import XRay
from cxr_demo.io.recent import Recent, forget_images

CACHE_SIZE = 16  # images; a lung mask is at most 256x256, so the cache stays around a few MB


@dataclass(frozen=True)
class Intake:
    verdict: Verdict
    lungs: Lungs


_RECENT = Recent(CACHE_SIZE, per_image=True)


def intake(xray: XRay, segmenter: str | None = None, checker: str | None = None) -> Intake:
    def compute() -> Intake:
        lungs = find_lungs(xray, segmenter)
        return Intake(check(xray, lungs, checker), lungs)

    return _RECENT.remember((xray.content_key, segmenter, checker), compute)[0]


def forget() -> None:
    """Drop every cached intake and every remembered task result (benchmarks time a first click; tests start clean)."""
    forget_images()


def admit(seen: Intake, analyse_anyway: bool = False) -> tuple[str, ...]:
    """The warnings a flagged image carries when the user insists; InputRefused when they did not."""
    if not seen.verdict.flagged:
        return ()
    if not analyse_anyway:
        raise InputRefused(f"{seen.verdict.reason} Nothing was analysed. If you are sure, tick “Analyse anyway”.")
    return (f"{UNRELIABLE} Reason: {seen.verdict.reason}",)
