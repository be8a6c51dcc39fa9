"""The Classify tab: probabilities plus a class activation map. Wiring only."""
from __future__ import annotations

import gradio as gr

from cxr_demo import classify, examples, zoo
from cxr_demo.cam import METHODS, SLOW_METHODS
from cxr_demo.render import heatmap_overlay
from cxr_demo.ui.common import UPLOAD_HINT, load_upload, notes_markdown, user_errors

TOP_PREDICTION = "Top prediction"


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
    test = (zoo.metrics(spec.name) or {}).get("test")
    if test and {"macro_f1", "accuracy", "ece", "n"} <= set(test):
        lines.append(f"Held-out test split: macro-F1 **{test['macro_f1']:.3f}**, accuracy {test['accuracy']:.3f}, "
                     f"calibration error {test['ece']:.3f} (n={test['n']}, same sources as training).")
    lines.append("Its Viral Pneumonia images are all of young children from one hospital: the model may be "
                 "recognising a child, not a disease. Check where the heatmap looks.")
    return "\n\n".join(lines)


def classify_image(upload, model: str | None = None, method: str = "GradCAM", target: str = TOP_PREDICTION, opacity: float = 0.45,
                   progress=gr.Progress(track_tqdm=True)):
    """Handler: (probabilities, heatmap overlay, metadata rows, notes). ScoreCAM's own tqdm bar shows as progress."""
    with user_errors():
        xray = load_upload(upload)
        result = classify.predict(xray, model or None, method, None if target in (None, "", TOP_PREDICTION) else target)
        overlay = heatmap_overlay(xray.pixels, result.heatmap, opacity)
    notes = [
        f"Heatmap: **{result.method}** for **{result.target_label}** (model `{result.model}`, {result.latency_ms:.0f} ms on the server).",
        *result.warnings,
    ]
    if xray.meta.view_position is None:
        notes.append("View position unknown: the models expect a frontal (PA/AP) chest X-ray.")
    return result.probabilities, overlay, xray.meta.as_rows(), notes_markdown(notes)


def build() -> None:
    models = zoo.names("classify")
    default_model = zoo.default("classify").name
    with gr.Row():
        with gr.Column(scale=1):
            upload = gr.File(label=f"Chest X-ray ({UPLOAD_HINT})", type="filepath")
            model = gr.Dropdown(models, value=default_model, label="Model")
            method = gr.Dropdown(list(METHODS), value="GradCAM", label="Heatmap method",
                                 info=f"{', '.join(SLOW_METHODS)} runs one pass per feature channel and takes seconds.")
            target = gr.Dropdown(target_choices(default_model), value=TOP_PREDICTION, label="Explain class")
            opacity = gr.Slider(0.0, 1.0, value=0.45, step=0.05, label="Heatmap opacity")
            button = gr.Button("Classify", variant="primary")
            summary = gr.Markdown(model_summary(default_model), elem_id="classify-model-card")
            gr.Examples(examples.paths(), inputs=[upload], label="Examples (click to load)", cache_examples=False)
        with gr.Column(scale=2):
            with gr.Row():
                overlay = gr.Image(label="Heatmap overlay", type="numpy", height=420, elem_id="classify-overlay")
                probabilities = gr.Label(label="Probabilities (calibrated)", num_top_classes=5, elem_id="classify-label")
            notes = gr.Markdown(elem_id="classify-notes")
            metadata = gr.Dataframe(headers=["field", "value"], label="Image metadata (no patient identifiers)",
                                    interactive=False, wrap=True)
    model.change(lambda m: (gr.Dropdown(choices=target_choices(m), value=TOP_PREDICTION), model_summary(m)),
                 model, [target, summary], api_visibility="private")
    button.click(classify_image, [upload, model, method, target, opacity], [probabilities, overlay, metadata, notes],
                 api_name="classify", concurrency_id="classify", concurrency_limit=2)
