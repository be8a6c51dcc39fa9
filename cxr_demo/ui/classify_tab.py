"""The Classify tab: probabilities plus a class activation map. Wiring only."""
from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from cxr_demo import zoo
from cxr_demo.intake import Intake
from cxr_demo.intake.lungs import FULL_FILM, blank_lungs
from cxr_demo.io import XRay
from cxr_demo.render.overlays import display_pixels, gray_to_rgb_uint8, heatmap_overlay, outline_box, with_colour_scale
from cxr_demo.tasks import classify
from cxr_demo.tasks.cam import METHODS, SLOW_METHODS
from cxr_demo.ui import batch_rows
from cxr_demo.ui.common import (CLICKS_IN_FLIGHT, analyse_anyway_box, load_checked, model_choices, notes_markdown, run_on_upload,
                                unreliable, upload_panel, upload_path, user_errors)

MAX_FILES = 50  # a class set of films; a whole archive belongs to `python -m cxr_demo.batch`
TOP_PREDICTION = "Top prediction"
SCORECAM_SECONDS = 12  # the default classifier: 320 masked passes, 12.3 s measured on the 2-core machine (28 s before)


def target_choices(model_name: str | None) -> list[str]:
    try:
        spec = zoo.get(model_name or zoo.default("classify").name)
    except zoo.UnknownModel:
        return [TOP_PREDICTION]
    return [TOP_PREDICTION, *spec.labels]


def model_summary(model_name: str | None) -> str:
    """One paragraph from the model's own card figures, with the caveat a user must read."""
    try:
        spec = zoo.get(model_name or zoo.default("classify").name)
    except zoo.UnknownModel as error:
        return str(error)
    lines = [f"**{spec.name}** ({spec.arch}): {spec.description}"]
    metrics = zoo.metrics(spec.name) or {}
    test, audit = metrics.get("test"), metrics.get("audit")
    if test and {"macro_f1", "accuracy", "ece", "n"} <= set(test):
        lines.append(f"Held-out test split: macro-F1 **{test['macro_f1']:.3f}**, accuracy {test['accuracy']:.3f}, "
                     f"calibration error {test['ece']:.3f} (n={test['n']}, same sources as training).")
    if audit:
        lines.append(f"Other hospitals: accuracy {audit['external']['accuracy']:.2f} (n={audit['external']['n']}). "
                     f"With the lungs removed: accuracy **{audit['lungs_removed']['accuracy']:.2f}** (n={audit['lungs_removed']['n']}; chance 0.33).")
    if spec.caveat:
        lines.append(spec.caveat)
    return "\n\n".join(lines)


def classify_image(upload, model: str | None = None, method: str = "GradCAM", target: str = TOP_PREDICTION, opacity: float = 0.45,
                   analyse_anyway: bool = False, progress=gr.Progress(track_tqdm=True)):
    """Handler: (probabilities, heatmap overlay, metadata rows, notes, why panel). ScoreCAM's own tqdm bar shows as progress."""
    with user_errors():
        xray, seen, warnings = load_checked(upload, analyse_anyway)
        result = classify.predict(xray, model or None, method, None if target in (None, "", TOP_PREDICTION) else target, lungs=seen.lungs)
        overlay = film_overlay(xray, result, opacity)
    notes = [
        f"Heatmap: **{result.method}** for **{result.target_label}** (model `{result.model}`, {result.latency_ms:.0f} ms on the server).",
        *warnings, *(w for w in result.warnings if w not in warnings),
    ]
    if result.crop_box != FULL_FILM:
        notes.append("This model reads only the lung box (dashed green): the heatmap is drawn back on the whole film.")
    if xray.meta.view_position is None:
        notes.append("View position unknown: the models expect a frontal (PA/AP) chest X-ray.")
    return unreliable(result.probabilities, seen), overlay, xray.meta.as_rows(), notes_markdown(notes), why_markdown(seen, result)


def film_overlay(xray: XRay, result: classify.ClassifyResult, opacity: float):
    base = display_pixels(xray.pixels)
    heatmap = result.heatmap_on_film(base.shape)
    if heatmap is None:
        return gray_to_rgb_uint8(base)
    picture = heatmap_overlay(base, heatmap, opacity)
    picture = picture if result.crop_box == FULL_FILM else outline_box(picture, result.crop_box)
    return with_colour_scale(picture, title=f"{result.method}: where {result.target_label} is read")


def why_markdown(seen: Intake, result: classify.ClassifyResult) -> str:
    """The three checks an educator or a clinician wants before trusting the label."""
    share = result.heatmap_in_lungs
    inside = "no heatmap" if share is None else (
        f"**{share:.0%}** of the heatmap lies inside the lung mask" + (" — most of what it looks at is *outside* the lungs" if share < 0.5 else ""))
    return "\n".join([
        "#### Why should I believe this?",
        f"- **Input check:** {seen.verdict.summary}",
        f"- **Where it looks:** {inside}.",
        "- **With the lungs removed:** press *Remove the lungs* to see what the model says when the lungs are blanked out. "
        "A model that still answers confidently was reading something else: borders, markers, body size or the scanner.",
    ])


def classify_without_lungs(upload, model: str | None = None, analyse_anyway: bool = False):
    """Handler: (markdown, the blanked film). The counterfactual: the same model on the film with the lungs filled with grey."""
    with user_errors():
        xray, seen, _ = load_checked(upload, analyse_anyway)
        if not seen.lungs.found:
            raise gr.Error("No lungs were found in this image, so there is nothing to remove.")
        blanked = XRay(blank_lungs(xray.pixels, seen.lungs.mask), xray.meta)
        with_lungs = classify.predict(xray, model or None, None, lungs=seen.lungs)
        without = classify.predict(blanked, model or None, None, lungs=seen.lungs)
    top = without.top_label
    text = (f"With the lungs removed, **{without.model}** says **{top} {without.probabilities[top]:.0%}** "
            f"(with them: {with_lungs.top_label} {with_lungs.probabilities[with_lungs.top_label]:.0%}). ")
    chance = 1 / len(without.probabilities)
    text += ("It can no longer tell: good, the answer came from the lungs." if without.probabilities[top] < chance + 0.2 else
             "It still answers with confidence although there is no lung to read: that confidence comes from elsewhere.")
    return text, gray_to_rgb_uint8(display_pixels(blanked.pixels))


def classify_files(uploads, model: str | None = None, analyse_anyway: bool = False):
    """Handler: several files at once -> (one row per file, the same table as a CSV to download). A bad file is a row, not a stop."""
    paths = [upload_path(u) for u in uploads or [] if upload_path(u)]
    if not paths:
        raise gr.Error("Choose one or more chest X-ray files first.")
    if len(paths) > MAX_FILES:
        raise gr.Error(f"{len(paths)} files: the app takes up to {MAX_FILES} at once. `python -m cxr_demo.batch DIR` runs a whole folder.")
    with user_errors():
        rows = batch_rows.run_batch(paths, "classify", model or None, bool(analyse_anyway))
    for row, path in zip(rows, paths):
        row["file"] = Path(path).name  # the upload's own name, not the server's temp folder
    out = Path(tempfile.mkdtemp(prefix="cxr-demo-")) / "classify.csv"
    batch_rows.write_csv(rows, out, "classify", rows[0]["model"])
    table = pd.DataFrame(rows, columns=batch_rows.columns(rows, "classify", rows[0]["model"])).fillna("")
    # on screen the answer comes first: the long check and error texts would push the probabilities out of view
    shown = ["file", "status", *[c for c in table.columns if c not in batch_rows.BASE_COLUMNS], "check", "error", "model"]
    return table[shown], str(out)


def build() -> None:
    models = zoo.names("classify")
    default_model = zoo.default("classify").name
    with gr.Row():
        with gr.Column(scale=1):
            upload, shown = upload_panel("classify", "Examples: one click classifies")
            model = gr.Dropdown(model_choices(models), value=default_model, label="Model")
            method = gr.Dropdown(list(METHODS), value="GradCAM", label="Heatmap method",
                                 info=f"{', '.join(SLOW_METHODS)} runs one forward pass per feature channel: about {SCORECAM_SECONDS} s on a 2-core CPU "
                                      "(a progress bar shows). The others take milliseconds.")
            target = gr.Dropdown(target_choices(default_model), value=TOP_PREDICTION, label="Explain class")
            opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Heatmap opacity")
            anyway = analyse_anyway_box()
            button = gr.Button("Classify", variant="primary")
            summary = gr.Markdown(model_summary(default_model), elem_id="classify-model-card")
        with gr.Column(scale=2):
            with gr.Row():
                overlay = gr.Image(label="Heatmap overlay", type="numpy", height=420, elem_id="classify-overlay")
                probabilities = gr.Label(label="Probabilities (calibrated)", num_top_classes=5, elem_id="classify-label")
            notes = gr.Markdown(label="Notes", elem_id="classify-notes")
            with gr.Group():
                why = gr.Markdown(label="Why should I believe this?", elem_id="classify-why")
                with gr.Row():
                    remove = gr.Button("Remove the lungs", size="sm", elem_id="classify-remove-lungs")
                    counterfactual = gr.Markdown(label="With the lungs removed", elem_id="classify-counterfactual")
                blanked = gr.Image(label="The film with the lungs removed", type="numpy", height=260, visible=True)
            metadata = gr.Dataframe(headers=["field", "value"], label="Image metadata (no patient identifiers)",
                                    interactive=False, wrap=True)
    with gr.Accordion(f"Several files at once (up to {MAX_FILES}): a table and a CSV", open=False):
        files = gr.File(label="Chest X-rays", file_count="multiple", type="filepath", height=130, elem_id="classify-files")
        run_files = gr.Button("Classify these files", elem_id="classify-files-button")
        table = gr.Dataframe(label="One row per file: the input check's verdict, the probabilities, or why it could not be read",
                             interactive=False, wrap=True, elem_id="classify-files-table")
        download = gr.File(label="The same table as CSV (no patient fields)", elem_id="classify-files-csv")
    model.change(lambda m: (gr.Dropdown(choices=target_choices(m), value=TOP_PREDICTION), model_summary(m)),
                 model, [target, summary], api_visibility="private")
    inputs, outputs = [upload, model, method, target, opacity, anyway], [probabilities, overlay, metadata, notes, why]
    button.click(classify_image, inputs, outputs, api_name="classify", concurrency_id="classify", concurrency_limit=CLICKS_IN_FLIGHT)
    run_on_upload(upload, shown, classify_image, inputs, outputs, also_clear=(counterfactual, blanked),
                  concurrency_id="classify", concurrency_limit=CLICKS_IN_FLIGHT)
    run_files.click(classify_files, [files, model, anyway], [table, download], api_name="classify_files",
                    concurrency_id="classify", concurrency_limit=CLICKS_IN_FLIGHT)
    remove.click(classify_without_lungs, [upload, model, anyway], [counterfactual, blanked],
                 api_name="lungs_removed", concurrency_id="classify", concurrency_limit=CLICKS_IN_FLIGHT)
