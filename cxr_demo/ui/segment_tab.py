"""The Segment tab: lung mask overlay, measurements, and Dice against an uploaded mask. Wiring only."""
from __future__ import annotations

import gradio as gr

from cxr_demo import zoo
from cxr_demo.io import read_xray
from cxr_demo.render.overlays import mask_overlay
from cxr_demo.tasks import segment
from cxr_demo.ui.common import (CLICKS_IN_FLIGHT, analyse_anyway_box, load_checked, model_choices, notes_markdown, run_on_upload,
                                unreliable, upload_panel, upload_path, user_errors)


def measurement_rows(result: segment.SegmentResult) -> list[list[str]]:
    m = result.measures
    cm2 = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    rows = [
        ["both lungs", f"{m.area_px:,}", cm2(m.area_cm2)],
        ["right lung (image left)", f"{m.right_px:,}", cm2(m.right_cm2)],
        ["left lung (image right)", f"{m.left_px:,}", cm2(m.left_cm2)],
        ["right share", f"{m.right_share:.1%}", ""],
    ]
    if result.dice is not None:
        rows += [["Dice vs your mask", f"{result.dice:.4f}", ""], ["IoU vs your mask", f"{result.iou:.4f}", ""]]
    return rows


def segment_image(upload, model: str | None = None, reference_upload=None, opacity: float = 0.35, analyse_anyway: bool = False):
    """Handler: (overlay, measurement rows, notes, class probabilities of a multi-task model or None)."""
    with user_errors():
        xray, seen, warnings = load_checked(upload, analyse_anyway)
        reference, resized = None, None
        if upload_path(reference_upload):
            ref = read_xray(upload_path(reference_upload))
            reference, resized = segment.reference_mask(ref.pixels, xray.shape, (xray.meta.width, xray.meta.height),
                                                        (ref.meta.width, ref.meta.height))
        result = segment.predict(xray, model or None, reference, lungs=seen.lungs)
        overlay = mask_overlay(xray.pixels, result.mask, reference, opacity)
    notes = [f"Model `{result.model}`, {result.latency_ms:.0f} ms on the server. Blue: predicted {result.label}"
             + ("; yellow: your mask." if reference is not None else "."), *([resized] if resized else []),
             *warnings, *(w for w in result.warnings if w not in warnings)]
    if xray.meta.pixel_spacing_mm is None:
        notes.append("No pixel spacing in this file, so areas are in pixels only (DICOMs with PixelSpacing also give cm²).")
    return overlay, measurement_rows(result), notes_markdown(notes), unreliable(result.probabilities, seen)


def build() -> None:
    models = [name for kind in zoo.TASKS["segment"].kinds for name in zoo.names(kind)]
    # made here, drawn below the model choice: the examples above it fill it too
    reference = gr.File(label="Ground-truth mask (optional: a black-and-white PNG made for this image)", type="filepath", height=130,
                        elem_id="segment-reference", render=False)
    with gr.Row():
        with gr.Column(scale=1):
            upload, shown = upload_panel("segment", "Examples: one click segments (the COVID-QU-Ex one brings its lung mask)", reference)
            model = gr.Dropdown(model_choices(models), value=zoo.default("segment").name if models else None, label="Model")
            reference.render()
            opacity = gr.Slider(0.0, 1.0, value=0.35, step=0.05, label="Mask opacity")
            anyway = analyse_anyway_box()
            button = gr.Button("Segment", variant="primary")
        with gr.Column(scale=2):
            overlay = gr.Image(label="Lung mask", type="numpy", height=420, elem_id="segment-overlay")
            notes = gr.Markdown(label="Notes", elem_id="segment-notes")
            probabilities = gr.Label(label="Class probabilities (multi-task models only)", elem_id="segment-label")
            measures = gr.Dataframe(headers=["measure", "pixels", "cm²"], label="Measurements", interactive=False,
                                    elem_id="segment-measures")
    inputs, outputs = [upload, model, reference, opacity, anyway], [overlay, measures, notes, probabilities]
    button.click(segment_image, inputs, outputs, api_name="segment", concurrency_id="segment", concurrency_limit=CLICKS_IN_FLIGHT)
    run_on_upload(upload, shown, segment_image, inputs, outputs, concurrency_id="segment", concurrency_limit=CLICKS_IN_FLIGHT)
