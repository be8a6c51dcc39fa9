"""The Detect tab: boxes with labels and scores, score and NMS sliders, the preprocessing on request, and IoU against
uploaded ground-truth boxes. Wiring only."""
from __future__ import annotations

import gradio as gr

from cxr_demo import zoo
from cxr_demo.render.boxes import draw_boxes
from cxr_demo.tasks import detect
from cxr_demo.ui.common import (CLICKS_IN_FLIGHT, analyse_anyway_box, load_checked, model_choices, notes_markdown, run_on_upload,
                                upload_panel, upload_path, user_errors)

BOX_HEADERS = ["box", "label", "score", "x0", "y0", "x1", "y1", "best IoU"]
FOUND_IOU = 0.5  # the usual detection criterion: a ground-truth box counts as found at IoU 0.5 or more


def box_rows(result: detect.DetectResult, reference: list[detect.Box] | None) -> list[list[str]]:
    """One row per predicted box, then one per ground-truth box; `best IoU` pairs each with the other set."""
    coords = lambda b: [f"{v:.0f}" for v in b.xyxy]  # noqa: E731
    matched = detect.best_ious(result.boxes, reference) if reference else [None] * len(result.boxes)
    rows = [[str(i), b.label, f"{b.score:.2f}", *coords(b), "" if iou is None else f"{iou:.3f}"]
            for i, (b, iou) in enumerate(zip(result.boxes, matched), start=1)]
    for i, (b, iou) in enumerate(zip(reference or [], detect.best_ious(reference or [], result.boxes)), start=1):
        rows.append([f"truth {i}", b.label, "", *coords(b), f"{iou:.3f}"])
    return rows


def detect_image(upload, model: str | None = None, score_threshold: float = 0.3, nms_iou: float = 0.5,
                 show_preprocessing: bool = False, reference_upload=None, analyse_anyway: bool = False):
    """Handler: (overlay, box rows, notes, the preprocessed image the detector saw or None)."""
    with user_errors():
        xray, seen, warnings = load_checked(upload, analyse_anyway)
        size = (xray.meta.width, xray.meta.height)
        reference = None
        if upload_path(reference_upload):
            reference = detect.read_reference_boxes(upload_path(reference_upload), size)
        result = detect.predict(xray, model or None, float(score_threshold), float(nms_iou), keep_preprocessed=bool(show_preprocessing))
        overlay = draw_boxes(xray.pixels, result.boxes, reference, result.crop if show_preprocessing else None, size)
    legend = "Red: predicted boxes" + ("; yellow: your boxes" if reference else "") + ("; blue: the lung crop" if show_preprocessing else "")
    notes = [f"Model `{result.model}`, {len(result.boxes)} box(es) at score ≥ {score_threshold:.2f}, "
             f"{result.latency_ms:.0f} ms on the server. {legend}.", *warnings, *(w for w in result.warnings if w not in warnings)]
    if reference:
        found = sum(iou >= FOUND_IOU for iou in detect.best_ious(reference, result.boxes))
        notes.append(f"{found} of your {len(reference)} box(es) overlap a prediction at IoU ≥ {FOUND_IOU}.")
    return overlay, box_rows(result, reference), notes_markdown(notes), result.preprocessed


def model_caveat(model: str | None) -> str:
    """The picked detector's own caveat from zoo.toml (a demo detector says how few images it saw)."""
    try:
        return f"> ⚠️ **{zoo.get(model).caveat}**" if model and zoo.get(model).caveat else ""
    except zoo.UnknownModel:
        return ""


def build() -> None:
    models = zoo.names("detect")
    caveat = gr.Markdown(model_caveat(zoo.default("detect").name if models else None), elem_classes=["disclaimer"])
    with gr.Row():
        with gr.Column(scale=1):
            upload, shown = upload_panel("detect", "Examples: one click detects")
            model = gr.Dropdown(model_choices(models), value=zoo.default("detect").name if models else None, label="Model")
            score = gr.Slider(0.05, 0.95, value=0.3, step=0.05, label="Score threshold (hide weaker boxes)")
            nms = gr.Slider(0.1, 0.9, value=0.5, step=0.05, label="NMS IoU (merge boxes overlapping more than this)")
            show = gr.Checkbox(False, label="Show the preprocessing (lung crop and equalization)")
            reference = gr.File(label="Ground-truth boxes (optional CSV: x,y,width,height in the image's pixels)", type="filepath",
                                file_types=[".csv"], height=130, elem_id="detect-reference")
            anyway = analyse_anyway_box()
            button = gr.Button("Detect", variant="primary")
        with gr.Column(scale=2):
            overlay = gr.Image(label="Boxes", type="numpy", height=420, elem_id="detect-overlay")
            notes = gr.Markdown(label="Notes", elem_id="detect-notes")
            boxes = gr.Dataframe(headers=BOX_HEADERS, label="Boxes (original image pixels)", interactive=False, elem_id="detect-boxes")
            preprocessed = gr.Image(label="What the detector sees (tick 'Show the preprocessing')", type="numpy", height=320,
                                    elem_id="detect-preprocessed")
    inputs, outputs = [upload, model, score, nms, show, reference, anyway], [overlay, boxes, notes, preprocessed]
    model.change(model_caveat, model, caveat, api_visibility="private")
    button.click(detect_image, inputs, outputs, api_name="detect", concurrency_id="detect", concurrency_limit=CLICKS_IN_FLIGHT)
    run_on_upload(upload, shown, detect_image, inputs, outputs, concurrency_id="detect", concurrency_limit=CLICKS_IN_FLIGHT)
