"""The CLIP prompt playground: edit prompts per class, see the answer move, and score prompt sets side by side. Wiring only."""
from __future__ import annotations

import os

import gradio as gr

from cxr_demo import zoo
from cxr_demo.io import examples
from cxr_demo.tasks import zeroshot
from cxr_demo.tasks.zeroshot import PRESETS, LabelledSample, PromptSet
from cxr_demo.ui.common import (CLICKS_IN_FLIGHT, analyse_anyway_box, load_checked, model_choices, notes_markdown, run_on_upload,
                                unreliable, upload_panel, user_errors)

CUSTOM = "custom (the prompts above)"
SAMPLE_DIR = examples.EXAMPLES_DIR / "zeroshot-sample"
# reading folders on the server is for local use only; a public Space must not list its disk for strangers
LOCAL_FOLDERS = os.environ.get("CXR_DEMO_LOCAL_FOLDERS") == "1"


def model_labels(model: str | None = None) -> tuple[str, ...]:
    """The classes the prompt editors stand for: the model's own (zoo.toml), in its order."""
    return zoo.get(model or zoo.default("zeroshot").name).labels


def prompt_set_from(preset: str, model: str | None, covid: str | None, normal: str | None, viral: str | None,
                    templates: str | None, contrast: bool | None) -> PromptSet:
    """The preset as it stands, or the user's edited version of it (named "custom")."""
    if preset not in PRESETS:
        raise ValueError(f"Unknown prompt preset {preset!r}; choose one of {', '.join(PRESETS)}.")
    base = PRESETS[preset]
    if covid is None and normal is None and viral is None and templates is None and contrast is None:
        return base
    texts, base_templates = base.as_text()
    typed = dict(zip(model_labels(model), (covid, normal, viral)))
    edited = PromptSet.from_text("custom", {label: texts[label] if typed[label] is None else typed[label] for label in typed},
                                 base_templates if templates is None else templates, base.contrast if contrast is None else contrast)
    if (edited.prompts, edited.templates, edited.contrast) == (base.prompts, base.templates, base.contrast):
        return base
    return edited


def preset_fields(preset: str):
    """Fill the editors with a preset: three prompt boxes, templates, contrast, and its description."""
    texts, templates = PRESETS[preset].as_text()
    return (*[texts[label] for label in model_labels()], templates, PRESETS[preset].contrast, f"*{PRESETS[preset].description}*")


def zeroshot_image(upload, model: str | None = None, preset: str = "clinical", covid_prompts: str | None = None,
                   normal_prompts: str | None = None, viral_pneumonia_prompts: str | None = None, templates: str | None = None,
                   contrast: bool | None = None, temperature: float = 1.0, analyse_anyway: bool = False):
    """Handler: (probabilities, notes). Prompt fields left out mean the preset's own."""
    with user_errors():
        xray, seen, warnings = load_checked(upload, analyse_anyway)
        prompt_set = prompt_set_from(preset, model, covid_prompts, normal_prompts, viral_pneumonia_prompts, templates, contrast)
        result = zeroshot.predict(xray, model or None, prompt_set, float(temperature), lungs=seen.lungs)
    notes = [f"Model `{result.model}`, prompts **{prompt_set.name}**, temperature {temperature:g}: {result.latency_ms:.0f} ms "
             "(text embeddings are cached, so only the image is encoded).", *warnings, *(w for w in result.warnings if w not in warnings)]
    return unreliable(result.probabilities, seen), notes_markdown(notes)


def compare_prompt_sets(upload=None, model: str | None = None, prompt_sets: list[str] | None = None,
                        covid_prompts: str | None = None, normal_prompts: str | None = None, viral_pneumonia_prompts: str | None = None,
                        templates: str | None = None, contrast: bool | None = None, temperature: float = 1.0,
                        per_class: int = 8, sample_folder: str | None = None, analyse_anyway: bool = False,
                        progress=gr.Progress(track_tqdm=True)):
    """Handler: (probabilities on the image per set, scores on the labelled sample per set, spread and confusion matrices)."""
    chosen = list(prompt_sets or ["clinical", "naive", "bad"])
    with user_errors():
        if not 1 <= len(chosen) <= 4:
            raise ValueError("Pick between one and four prompt sets to compare.")
        sets = [PromptSet.from_text("custom", *_custom_texts(model, covid_prompts, normal_prompts, viral_pneumonia_prompts, templates), bool(contrast))
                if name == CUSTOM else PRESETS[name] for name in chosen]
        loaded = zoo.load(model or zoo.default("zeroshot").name)
        sample = LabelledSample.from_folder(_sample_root(sample_folder), per_class=int(per_class))
        scores = zeroshot.score_prompt_sets(loaded, sets, sample, float(temperature))
        on_image = []
        if upload is not None:
            xray, seen, _ = load_checked(upload, analyse_anyway)
            flag = " (unreliable)" if seen.verdict.flagged else ""
            for prompt_set in sets:
                result = zeroshot.predict(xray, loaded.spec.name, prompt_set, float(temperature), lungs=seen.lungs)
                on_image.append([prompt_set.name, *[f"{p:.3f}" for p in result.probabilities.values()], result.top_label + flag])
    table = [[s.prompt_set, f"{s.accuracy:.3f}", f"{s.macro_f1:.3f}",
              *[f"{row['f1']:.3f}" for row in s.report["per_class"].values()]] for s in scores]
    return on_image, table, _scores_markdown(scores, len(sample.paths), loaded.spec.name)


def _custom_texts(model, covid, normal, viral, templates) -> tuple[dict[str, str], str]:
    return {label: text or "" for label, text in zip(model_labels(model), (covid, normal, viral))}, templates or "{}"


def _sample_root(sample_folder: str | None):
    if not sample_folder:
        return SAMPLE_DIR
    if not LOCAL_FOLDERS:
        raise ValueError("Scoring a folder on the server is switched off here; start the app with CXR_DEMO_LOCAL_FOLDERS=1 to allow it.")
    return sample_folder


def _scores_markdown(scores: list[zeroshot.PromptSetScore], n: int, model: str) -> str:
    best = max(scores, key=lambda s: s.macro_f1)
    worst = min(scores, key=lambda s: s.macro_f1)
    lines = [f"**Spread: {zeroshot.spread(scores):.3f} macro-F1** between the best set (*{best.prompt_set}*, {best.macro_f1:.3f}) "
             f"and the worst (*{worst.prompt_set}*, {worst.macro_f1:.3f}), on the same {n} labelled images, with the same model "
             f"(`{model}`). Only the wording changed."]
    for score in scores:
        labels = list(score.report["per_class"])
        header = "| true \\ predicted | " + " | ".join(labels) + " |\n|---|" + "---|" * len(labels)
        rows = "\n".join(f"| {label} | " + " | ".join(str(v) for v in row) + " |"
                         for label, row in zip(labels, score.report["confusion_matrix"]))
        lines.append(f"**{score.prompt_set}** confusion matrix\n\n{header}\n{rows}")
    return "\n\n".join(lines)


def build() -> None:
    models = zoo.names("zeroshot")
    default_model = zoo.default("zeroshot").name
    texts, template_text = PRESETS["clinical"].as_text()
    labels = model_labels()
    with gr.Row():
        with gr.Column(scale=1):
            upload, shown = upload_panel("zeroshot", "Examples: one click classifies with the prompts below")
            model = gr.Dropdown(model_choices(models), value=default_model, label="Model",
                                info="The offline default was trained on these three concepts: 'zero-shot' here means free-text prompts on unseen images.")
            preset = gr.Dropdown(list(PRESETS), value="clinical", label="Prompt preset")
            description = gr.Markdown(f"*{PRESETS['clinical'].description}*")
            boxes = [gr.Textbox(texts[label], lines=2, label=f"{label} prompts (one per line; averaged)") for label in labels]
            templates = gr.Textbox(template_text, lines=2, label="Templates (one per line, {} is the prompt)")
            contrast = gr.Checkbox(False, label="Positive/negative pairs (CheXzero: each class is '{}' against 'no {}')")
            temperature = gr.Slider(0.1, 5.0, value=1.0, step=0.1, label="Temperature (divides the model's logit scale)")
            anyway = analyse_anyway_box()
            button = gr.Button("Classify with these prompts", variant="primary")
        with gr.Column(scale=2):
            probabilities = gr.Label(label="Zero-shot probabilities", elem_id="zeroshot-label")
            notes = gr.Markdown(label="Notes", elem_id="zeroshot-notes")
            with gr.Group():
                gr.Markdown("### Prompt sets side by side")
                sets = gr.CheckboxGroup([*PRESETS, CUSTOM], value=["clinical", "naive", "bad"], label="Prompt sets (up to four)")
                with gr.Row():
                    per_class = gr.Slider(2, 8, value=8, step=1, label="Sample images per class (from examples/zeroshot-sample)")
                    folder = gr.Textbox(label="Or a folder of class folders on this machine", visible=LOCAL_FOLDERS)
                compare = gr.Button("Compare prompt sets")
            on_image = gr.Dataframe(headers=["prompt set", *labels, "top"], label="On your image", interactive=False)
            scores = gr.Dataframe(headers=["prompt set", "accuracy", "macro-F1", *[f"F1 {label}" for label in labels]],
                                  label="On the labelled sample", interactive=False, elem_id="zeroshot-scores")
            summary = gr.Markdown(label="Spread between prompt sets", elem_id="zeroshot-summary")
    preset.change(preset_fields, preset, [*boxes, templates, contrast, description], api_visibility="private")
    inputs = [upload, model, preset, *boxes, templates, contrast, temperature, anyway]
    button.click(zeroshot_image, inputs, [probabilities, notes], api_name="zeroshot", concurrency_id="zeroshot", concurrency_limit=CLICKS_IN_FLIGHT)
    run_on_upload(upload, shown, zeroshot_image, inputs, [probabilities, notes], also_clear=(on_image,),
                  concurrency_id="zeroshot", concurrency_limit=CLICKS_IN_FLIGHT)
    compare.click(compare_prompt_sets, [upload, model, sets, *boxes, templates, contrast, temperature, per_class, folder, anyway],
                  [on_image, scores, summary], api_name="zeroshot_compare", concurrency_id="zeroshot", concurrency_limit=CLICKS_IN_FLIGHT)
