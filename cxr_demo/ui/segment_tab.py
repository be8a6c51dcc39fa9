"""The Segment tab: lung mask overlay, measurements, and Dice against an uploaded mask. Wiring only."""
from __future__ import annotations

import gradio as gr

from cxr_demo import examples, segment, zoo
from cxr_demo.io import read_xray
from cxr_demo.render import mask_overlay
from cxr_demo.ui.common import (UPLOAD_HINT, analyse_anyway_box, load_checked, notes_markdown, unreliable, upload_path,
                                user_errors)


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
        reference = None
        if upload_path(reference_upload):
            ref = read_xray(upload_path(reference_upload))
            reference = segment.reference_mask(ref.pixels, xray.shape, (xray.meta.width, xray.meta.height))
        result = segment.predict(xray, model or None, reference, lungs=seen.lungs)
        overlay = mask_overlay(xray.pixels, result.mask, reference, opacity)
    notes = [f"Model `{result.model}`, {result.latency_ms:.0f} ms on the server. Blue: predicted {result.label}"
             + ("; yellow: your mask." if reference is not None else "."), *warnings, *(w for w in result.warnings if w not in warnings)]
    if xray.meta.pixel_spacing_mm is None:
        notes.append("No pixel spacing in this file, so areas are in pixels only (DICOMs with PixelSpacing also give cm²).")
    return overlay, measurement_rows(result), notes_markdown(notes), unreliable(result.probabilities, seen)


def build() -> None:
    models = zoo.names("segment") + zoo.names("multitask")
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label=f"Chest X-ray ({UPLOAD_HINT})", type="filepath", elem_id="segment-upload")
            model = gr.Dropdown(models, value=zoo.default("segment").name if models else None, label="Model")
            reference = gr.File(label="Ground-truth mask (optional, black and white PNG of the same shape)", type="filepath",
                                elem_id="segment-reference")
            opacity = gr.Slider(0.0, 1.0, value=0.35, step=0.05, label="Mask opacity")
            anyway = analyse_anyway_box()
            button = gr.Button("Segment", variant="primary")
            gr.Examples([[p, examples.mask_for(p)] for p in examples.paths()], inputs=[upload, reference],
                        label="Examples (click to load; the COVID-QU-Ex one comes with its lung mask)", cache_examples=False)
        with gr.Column(scale=2):
            overlay = gr.Image(label="Lung mask", type="numpy", height=420, elem_id="segment-overlay")
            notes = gr.Markdown(elem_id="segment-notes")
            probabilities = gr.Label(label="Class probabilities (multi-task models only)", elem_id="segment-label")
            measures = gr.Dataframe(headers=["measure", "pixels", "cm²"], label="Measurements", interactive=False,
                                    elem_id="segment-measures")
    button.click(segment_image, [upload, model, reference, opacity, anyway], [overlay, measures, notes, probabilities],
                 api_name="segment", concurrency_id="segment", concurrency_limit=2)
