"""Pieces every tab shares: turning an upload into an XRay, and errors into messages."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager

import gradio as gr

from cxr_demo import NOT_A_MEDICAL_DEVICE, zoo
from cxr_demo.check import InputRefused
from cxr_demo.intake import Intake, admit, intake
from cxr_demo.io import InvalidImage, XRay, read_xray

log = logging.getLogger("cxr_demo")
UPLOAD_HINT = "PNG, JPG, BMP, TIFF (8 or 16 bit) or DICOM"
ANALYSE_ANYWAY = "Analyse anyway"
ANALYSE_ANYWAY_INFO = "Only if the input check refused the image and you know better: the output is then marked unreliable."


def upload_path(upload) -> str | None:
    """Gradio hands over a path, a file wrapper or a dict depending on component and client."""
    if upload is None:
        return None
    if isinstance(upload, (str, os.PathLike)):
        return str(upload)
    if isinstance(upload, dict):
        return upload.get("path") or upload.get("name")
    return getattr(upload, "path", None) or getattr(upload, "name", None)


def load_upload(upload) -> XRay:
    path = upload_path(upload)
    if not path:
        raise gr.Error(f"Upload a chest X-ray first ({UPLOAD_HINT}), or click one of the examples.")
    return read_xray(path)


def load_checked(upload, analyse_anyway: bool = False) -> tuple[XRay, Intake, tuple[str, ...]]:
    """The upload, its shared intake (input check and lung mask) and the warnings to show; InputRefused when flagged."""
    xray = load_upload(upload)
    seen = intake(xray)
    return xray, seen, xray.warnings + admit(seen, bool(analyse_anyway))


def unreliable(probabilities: dict[str, float] | None, seen: Intake) -> dict[str, float] | None:
    """No big confident label for an image the input check flagged: every class says so."""
    if probabilities is None or not seen.verdict.flagged:
        return probabilities
    return {f"{label} (unreliable)": p for label, p in probabilities.items()}


def analyse_anyway_box() -> gr.Checkbox:
    return gr.Checkbox(False, label=ANALYSE_ANYWAY, info=ANALYSE_ANYWAY_INFO)


@contextmanager
def user_errors():
    """Turn every failure into a plain message in the UI; never a traceback, never patient data."""
    try:
        yield
    except gr.Error:
        raise
    except InputRefused as error:
        log.info("input check refused an upload: %s", str(error).split(".")[0])
        raise gr.Error(str(error), title="Input check", print_exception=False) from None
    except (InvalidImage, zoo.ModelUnavailable, zoo.UnknownModel, ValueError) as error:
        raise gr.Error(str(error)) from None
    except Exception as error:  # noqa: BLE001 - the UI must survive anything a model or file throws
        log.exception("unexpected failure")  # the log holds the traceback; the user gets a sentence
        raise gr.Error(f"Something went wrong while processing this image ({type(error).__name__}). Try another image or model.") from None


def notes_markdown(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def disclaimer() -> gr.Markdown:
    return gr.Markdown(f"> ⚠️ **{NOT_A_MEDICAL_DEVICE}**", elem_classes=["disclaimer"])
