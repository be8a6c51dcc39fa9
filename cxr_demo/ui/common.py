"""Pieces every tab shares: turning an upload into an XRay, and errors into messages."""
from __future__ import annotations

import functools
import logging
import os
from contextlib import contextmanager

import gradio as gr

from cxr_demo import NOT_A_MEDICAL_DEVICE, zoo
from cxr_demo.intake import Intake, admit, intake
from cxr_demo.intake.check import InputRefused
from cxr_demo.io import InvalidImage, XRay, examples, read_xray
from cxr_demo.render.overlays import display_pixels, gray_to_rgb_uint8

log = logging.getLogger("cxr_demo")
UPLOAD_HINT = "PNG, JPG, BMP, TIFF (8 or 16 bit) or DICOM"
# clicks of one tab in flight at once. Each model's forward pass is serialised by its own lock anyway; what runs side by side
# is decoding, the remembered answers and drawing, so a classroom's repeated clicks do not queue behind one slow film
CLICKS_IN_FLIGHT = 4
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


def preview(upload):
    """A small picture of the upload, shown before any model runs; nothing (not an error) when it cannot be read."""
    path = upload_path(upload)
    if not path:
        return None
    try:
        xray = read_xray(path)
    except InvalidImage:
        return None  # the tab's own run says why, once
    return gray_to_rgb_uint8(display_pixels(xray.pixels, max_side=384, min_side=256))


def preview_image() -> gr.Image:
    return gr.Image(label="Your image", type="numpy", height=220, interactive=False, show_label=True)


def upload_panel(tab: str, examples_label: str, reference: gr.File | None = None) -> tuple[gr.File, gr.Image]:
    """What every tab starts with: the upload, its preview and the one-click examples (with each example's mask when the
    tab takes a `reference`)."""
    upload = gr.File(label=f"Chest X-ray ({UPLOAD_HINT})", type="filepath", height=130, elem_id=f"{tab}-upload")
    shown = preview_image()
    rows = [[p, examples.mask_for(p)] if reference else [p] for p in examples.paths()]
    gr.Examples(rows, inputs=[upload, reference] if reference else [upload], label=examples_label,
                example_labels=[examples.label(p) for p in examples.paths()], cache_examples=False)
    return upload, shown


def run_on_upload(upload, shown: gr.Image, handler, inputs: list, outputs: list, also_clear: tuple = (), **event) -> None:
    """A new file, uploaded or an example clicked, clears the last result (so an error never sits under an old answer),
    shows a preview, and runs the tab at once: one click on an example gives a result."""
    cleared = [*outputs, *also_clear]

    def clear(file):
        return (preview(file), *([None] * len(cleared)))

    @functools.wraps(handler)
    def run(*args, **kwargs):
        if not upload_path(args[0]):
            return tuple(gr.skip() for _ in outputs)
        return handler(*args, **kwargs)

    upload.change(clear, upload, [shown, *cleared], api_visibility="private", queue=False).then(
        run, inputs, outputs, api_visibility="private", **event)


def analyse_anyway_box() -> gr.Checkbox:
    return gr.Checkbox(False, label=ANALYSE_ANYWAY, info=ANALYSE_ANYWAY_INFO)


@contextmanager
def user_errors():
    """Turn every failure into a plain message in the UI; never a traceback, never patient data.
    A user's mistake is one line in the server log; only a real bug logs its traceback."""
    try:
        yield
    except gr.Error as error:
        _log_user_error(error.message)
        error.print_exception = False
        raise
    except InputRefused as error:
        _log_user_error(f"input check refused an upload: {str(error).split('.')[0]}")
        raise gr.Error(str(error), title="Input check", print_exception=False) from None
    except (InvalidImage, zoo.ModelUnavailable, zoo.UnknownModel, ValueError) as error:
        _log_user_error(f"{type(error).__name__}: {error}")
        raise gr.Error(str(error), print_exception=False) from None
    except Exception as error:  # noqa: BLE001 - the UI must survive anything a model or file throws
        log.exception("unexpected failure")  # the log holds the traceback; the user gets a sentence
        raise gr.Error(f"Something went wrong while processing this image ({type(error).__name__}). Try another image or model.",
                       print_exception=False) from None


def _log_user_error(message: str) -> None:
    log.info("user error: %s", message.splitlines()[0][:200] if message else "")


HUB_ONLY = "Hugging Face Hub: needs internet"


def model_choices(names: list[str]) -> list[tuple[str, str]]:
    """(label, name) for a model dropdown: a Hub model with no local copy says that it needs the internet."""
    def label(name: str) -> str:
        spec = zoo.get(name)
        local = not spec.is_hub or (zoo.REPO_ROOT / "weights" / name).is_dir()
        return name if local else f"{name} ({HUB_ONLY})"
    return [(label(name), name) for name in names]


def notes_markdown(lines: list[str]) -> str:
    return "\n".join(f"- {line}" for line in lines)


def disclaimer() -> gr.Markdown:
    return gr.Markdown(f"> ⚠️ **{NOT_A_MEDICAL_DEVICE}**", elem_classes=["disclaimer"])
