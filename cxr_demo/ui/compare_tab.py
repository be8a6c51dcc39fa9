"""The Compare tab: 2–4 models side by side on one image, and the leaderboard of the zoo's measured figures. Wiring only."""
from __future__ import annotations

import gradio as gr
import pandas as pd

from cxr_demo.render.overlays import confusion_figure, heatmap_overlay, mask_overlay, reliability_figure, with_colour_scale
from cxr_demo.render.boxes import draw_boxes
from cxr_demo.reports import leaderboard
from cxr_demo.tasks import compare
from cxr_demo.tasks.cam import METHODS
from cxr_demo.tasks.zeroshot import PRESETS
from cxr_demo.ui.common import analyse_anyway_box, load_checked, model_choices, notes_markdown, run_on_upload, upload_panel, user_errors
from cxr_demo.zoo.runtime import release_memory


def compare_image(upload, task: str = "classify", models: list[str] | None = None, preset: str = "clinical", method: str = "GradCAM",
                  analyse_anyway: bool = False):
    """Handler: (gallery of (image, caption), one row per model, agreement notes). No models: the task's first four."""
    with user_errors():
        xray, seen, warnings = load_checked(upload, analyse_anyway)
        chosen = list(models or compare.on_this_machine(task)[:compare.MAX_MODELS])
        result = compare.run(xray, task, chosen, preset, method, seen.lungs)
        gallery = [(_picture(xray, output), _caption(output)) for output in result.outputs]
        release_memory()  # four models' heatmaps and masks at film size
    labels = sorted({label for o in result.outputs for label in (o.probabilities or {})})
    rows = [[o.model, o.kind, o.reads, o.top_label or "", *[_percent(o.probabilities, label) for label in labels],
             "" if o.heatmap_in_lungs is None else f"{o.heatmap_in_lungs:.0%}", f"{o.latency_ms:.0f}"]
            for o in result.outputs]
    headers = ["model", "kind", "reads", "top class", *labels, "heatmap in lungs", "ms"]
    notes = [f"Input check: {seen.verdict.summary}", *warnings]
    # a plain DataFrame, not a component update: API clients get {"headers", "data"}, not Gradio's internal "__type__"
    return gallery, pd.DataFrame(rows, columns=headers), notes_markdown(notes) + "\n" + _agreement_notes(result, preset, method)


def _picture(xray, output: compare.ModelOutput):
    if output.heatmap is not None:
        return with_colour_scale(heatmap_overlay(xray.pixels, output.heatmap))
    if output.mask is not None:
        return mask_overlay(xray.pixels, output.mask)
    if output.boxes:
        return draw_boxes(xray.pixels, output.boxes, original_size=(xray.meta.width, xray.meta.height))
    return mask_overlay(xray.pixels, xray.pixels < -1)  # the plain image: this model has no spatial output


def _caption(output: compare.ModelOutput) -> str:
    if output.error:
        return f"{output.model}: unavailable"
    verdict = output.top_label or (f"{len(output.boxes)} boxes" if output.kind == "detect" else "mask")
    return f"{output.model}: {verdict}"  # latency is in the table: a long caption is cut off under the picture


def _percent(probabilities: dict | None, label: str) -> str:
    return "" if not probabilities or label not in probabilities else f"{probabilities[label]:.1%}"


def _agreement_notes(result: compare.Comparison, preset: str, method: str) -> str:
    what = {"classify": "top-class agreement", "segment": "mask Dice", "detect": "box agreement (IoU ≥ 0.5)"}[result.task]
    lines = [f"**{what.capitalize()}: {result.agreement:.2f}** (mean over {len(result.pairwise)} model pairs)."]
    lines += [f"{a} vs {b}: {score:.3f}" for (a, b), score in result.pairwise.items()]
    lines += [o.error for o in result.outputs if o.error]
    if result.task == "classify":
        lines.append(f"Heatmaps: {method} for every timm classifier; zero-shot models use the *{preset}* prompts and have no heatmap; "
                     "a multi-task U-Net shows its lung mask.")
    return notes_markdown(lines)


def leaderboard_table(task: str = "all", sort_by: str = "macro-F1", columns: list[str] | None = None) -> pd.DataFrame:
    """The leaderboard, best first by `sort_by`, with the chosen columns (the sort column always among them)."""
    with user_errors():
        full = pd.DataFrame(leaderboard.table(task, sort_by), columns=list(leaderboard.COLUMNS))
        return full[leaderboard.shown_columns(columns, sort_by)]


def leaderboard_plots(entry: str | None):
    """Confusion matrix and reliability diagram of one classification entry ("model · variant")."""
    match = next((e for e in leaderboard.entries() if _entry_name(e) == entry), None)
    if match is None or match.confusion is None:
        return None, None
    title = _entry_name(match)
    confusion = confusion_figure(match.confusion, list(match.labels), f"{title}: confusion (test)")
    reliability = reliability_figure(match.reliability, f"{title}: reliability (ECE {match.ece:.3f})") if match.reliability else None
    return confusion, reliability


def _entry_name(entry: leaderboard.Entry) -> str:
    return f"{entry.model} · {entry.variant}" if entry.variant else entry.model


def build() -> None:
    tasks = [t for t in compare.KINDS if compare.candidates(t)]  # a task with one model still shows it (and serves the API)
    first = tasks[0] if tasks else "classify"
    with gr.Row():
        with gr.Column(scale=1):
            upload, shown = upload_panel("compare", "Examples: one click compares")
            task = gr.Radio(tasks, value=first, label="Task")
            # a Dropdown, not a CheckboxGroup: the API validates against build-time choices, and /compare serves every task
            models = gr.Dropdown(model_choices(compare.candidates(first)), value=compare.on_this_machine(first)[:compare.MAX_MODELS], multiselect=True,
                                 allow_custom_value=True, max_choices=compare.MAX_MODELS, label="Models (2 to 4)")
            preset = gr.Dropdown(list(PRESETS), value="clinical", label="Prompt preset for zero-shot models")
            method = gr.Dropdown(list(METHODS), value="GradCAM", label="Heatmap method (the same for every classifier)")
            anyway = analyse_anyway_box()
            button = gr.Button("Compare", variant="primary")
        with gr.Column(scale=2):
            gallery = gr.Gallery(label="Side by side", columns=4, height="auto", object_fit="contain", elem_id="compare-gallery")
            table = gr.Dataframe(label="Outputs and latency", interactive=False, elem_id="compare-table")
            agreement = gr.Markdown(label="Agreement and notes", elem_id="compare-agreement")
    gr.Markdown("### Leaderboard: the zoo's own measured figures\nEvery figure comes from a checkpoint's `metrics.json` or "
                "`results/*.json`; the last columns say on which data and split, and the command that reproduces it.")
    with gr.Row():
        board_task = gr.Dropdown(["all", *leaderboard.KINDS], value="all", label="Task")
        sort_by = gr.Dropdown(list(leaderboard.SORTABLE), value="macro-F1", label="Sort by (best first; always shown)")
    columns = gr.Dropdown(list(leaderboard.COLUMNS), value=list(leaderboard.DEFAULT_COLUMNS), multiselect=True,
                          label="Columns (add precision, recall, ECE, IoU, min/epoch, the data and the training command)",
                          elem_id="leaderboard-columns")
    board = gr.Dataframe(value=leaderboard_table(), interactive=False, wrap=True, max_height=480, elem_id="leaderboard",
                         label="Leaderboard")
    named = [_entry_name(e) for e in leaderboard.entries() if e.confusion is not None]
    entry = gr.Dropdown(named, value=named[0] if named else None, label="Plots for")
    first_confusion, first_reliability = leaderboard_plots(named[0] if named else None)
    with gr.Row():
        confusion_plot = gr.Plot(first_confusion, label="Confusion matrix", elem_id="leaderboard-confusion")
        reliability_plot = gr.Plot(first_reliability, label="Reliability diagram", elem_id="leaderboard-reliability")
    task.change(lambda t: gr.Dropdown(choices=model_choices(compare.candidates(t)), value=compare.on_this_machine(t)[:compare.MAX_MODELS]),
                task, models, api_visibility="private")
    inputs, outputs = [upload, task, models, preset, method, anyway], [gallery, table, agreement]
    button.click(compare_image, inputs, outputs, api_name="compare", concurrency_id="compare", concurrency_limit=1)
    run_on_upload(upload, shown, compare_image, inputs, outputs, concurrency_id="compare", concurrency_limit=1)
    for control in (board_task, sort_by, columns):
        control.change(leaderboard_table, [board_task, sort_by, columns], board, api_visibility="private")
    entry.change(leaderboard_plots, entry, [confusion_plot, reliability_plot], api_visibility="private")
