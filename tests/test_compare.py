"""Compare tab and leaderboard, on the shipped zoo (small real models) and on the checkpoints' own metrics.json."""
from __future__ import annotations

import json
import re

import gradio as gr
import pytest

from cxr_demo import zoo
from cxr_demo.io import read_xray
from cxr_demo.reports import leaderboard
from cxr_demo.tasks import compare, segment
from cxr_demo.ui import compare_tab
from tests.conftest import REPO


@pytest.fixture(autouse=True)
def shipped(use_zoo):
    return use_zoo(zoo.Zoo.from_toml(REPO / "weights" / "zoo.toml"))


def test_classifiers_clip_and_multitask_side_by_side(example_png):
    models = ["cxr-effnet-lite0", "cxr-lit-effnet-minilm", "multitask-unet-mobilenetv2"]
    result = compare.run(read_xray(example_png), "classify", models, preset="naive")
    assert [o.model for o in result.outputs] == models
    assert result.outputs[0].heatmap is not None and result.outputs[1].heatmap is None
    for (a, b), score in result.pairwise.items():
        tops = {o.model: o.top_label for o in result.outputs}
        assert score == float(tops[a] == tops[b])
    assert len(result.pairwise) == 3 and all(o.latency_ms > 0 for o in result.outputs)


def test_masks_are_compared_by_dice(example_png):
    result = compare.run(read_xray(example_png), "segment", ["lung-unet-mobilenetv2", "multitask-unet-mobilenetv2"])
    a, b = result.outputs
    assert result.pairwise[(a.model, b.model)] == pytest.approx(segment.overlap(a.mask, b.mask)[0])
    assert 0.5 < result.agreement <= 1.0


def test_a_hub_model_offline_is_reported_and_the_others_still_run(example_png):
    result = compare.run(read_xray(example_png), "classify", ["cxr-effnet-lite0", "cxr-lit-effnet-minilm", "biomedclip"])
    assert "cannot reach" in result.outputs[2].error
    assert list(result.pairwise) == [("cxr-effnet-lite0", "cxr-lit-effnet-minilm")]


@pytest.mark.parametrize("task, models, words", [
    ("classify", ["cxr-effnet-lite0"], "between 2 and 4"),
    ("classify", ["cxr-effnet-lite0", "cxr-effnet-lite0"], "between 2 and 4"),
    ("classify", ["cxr-effnet-lite0", "lung-unet-mobilenetv2"], "cannot be compared on classify"),
    ("pose", ["a", "b"], "Compare works on"),
])
def test_bad_choices_are_refused(example_png, task, models, words):
    with pytest.raises(ValueError, match=words):
        compare.run(read_xray(example_png), task, models)


def test_box_agreement():
    box = lambda x0, y0, x1, y1: type("Box", (), dict(x0=x0, y0=y0, x1=x1, y1=y1))  # noqa: E731
    a = [box(0, 0, 10, 10), box(20, 20, 30, 30)]
    assert compare.box_agreement(a, a) == 1.0
    assert compare.box_agreement(a, [box(0, 0, 10, 11)]) == pytest.approx(2 / 3)
    assert compare.box_agreement([], []) == 1.0 and compare.box_agreement(a, []) == 0.0


def test_compare_handler_defaults_and_gallery(example_dicom):
    gallery, table, notes = compare_tab.compare_image(str(example_dicom))
    rows = table.values.tolist()  # a plain DataFrame: the API serves it as {"headers", "data"}
    assert len(gallery) == len(rows) >= 2
    assert rows[0][0] == zoo.default("classify").name
    assert "Top-class agreement" in notes


def test_compare_handler_bad_file_is_a_message(tmp_path):
    junk = tmp_path / "x.dcm"
    junk.write_bytes(b"DICM" * 10)
    with pytest.raises(gr.Error):
        compare_tab.compare_image(str(junk))


def test_leaderboard_rows_are_the_checkpoints_own_figures():
    by_model = {(e.model, e.variant): e for e in leaderboard.entries()}
    for name in ("cxr-effnet-lite0", "lung-unet-mobilenetv2", "multitask-unet-mobilenetv2"):
        test = json.loads((REPO / "weights" / name / "metrics.json").read_text())["test"]
        entry = by_model[(name, "")]
        assert entry.f1 == test.get("macro_f1") and entry.dice == test.get("dice")
        assert entry.command.startswith("python -m train.")
    clip = json.loads((REPO / "weights" / "cxr-lit-effnet-minilm" / "metrics.json").read_text())["test"]
    assert by_model[("cxr-lit-effnet-minilm", "prompts: bad")].f1 == clip["bad"]["macro_f1"]


@pytest.mark.parametrize("column", ["macro-F1", "ECE", "Dice"])
def test_leaderboard_sorts_best_first_and_missing_last(column):
    index = leaderboard.COLUMNS.index(column)
    values = [row[index] for row in leaderboard.table("all", column)]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=column not in leaderboard.LOWER_IS_BETTER)
    assert values[:len(present)] == present


def test_leaderboard_plots_for_a_classifier():
    confusion, reliability = compare_tab.leaderboard_plots("cxr-effnet-lite0")
    assert confusion is not None and reliability is not None


def test_the_readme_results_table_matches_metrics_json():
    """Each bold test figure in the README's zoo table is the checkpoint's metrics.json value, rounded."""
    readme = (REPO / "README.md").read_text()
    for name in ("cxr-effnet-lite0", "lung-unet-mobilenetv2", "multitask-unet-mobilenetv2", "cxr-lit-effnet-minilm"):
        row = next(line for line in readme.splitlines() if line.startswith(f"| `{name}`"))
        test = json.loads((REPO / "weights" / name / "metrics.json").read_text())["test"]
        figures = {"macro_f1": test.get("macro_f1"), "dice": test.get("dice")}
        if name == "cxr-lit-effnet-minilm":
            figures = {"macro_f1": test["clinical"]["macro_f1"]}
        checked = 0
        for key, word in (("macro_f1", "macro-F1"), ("dice", "Dice")):
            bold = re.search(word + r" \*\*([0-9.]+)\*\*", row)  # the first one is the test split's
            if bold and figures.get(key) is not None:
                digits = len(bold.group(1).split(".")[1])
                assert float(bold.group(1)) == pytest.approx(figures[key], abs=0.6 * 10 ** -digits), (name, key)
                checked += 1
        assert checked


def test_leaderboard_says_which_data_each_figure_comes_from():
    segmenter = {"task": "segment", "external": {"../data/quex::lung masks": {"dice": 0.9, "n": 6}},
                 "train_config": {"data": ["../data/shenzhen", "splits/half.csv"]}}
    assert leaderboard._provenance(segmenter["train_config"], segmenter) == \
        "shenzhen, half.csv, test split; external Dice on quex (n=6)"
    multitask = {"task": "multitask", "train_config": {"cls_data": "../data/cxr-3class", "seg_data": ["../data/shenzhen"]}}
    assert leaderboard._provenance(multitask["train_config"], multitask) == "cxr-3class, shenzhen, test split"
    detector = {"task": "detect", "cross_validation": {"k": 5, "n": 20, "mean_map50": 0.4, "std_map50": 0.1}}
    assert leaderboard._provenance({"data": ["../data/boxes"]}, detector).endswith("5-fold mean mAP@0.5 0.400 ± 0.100 over 20 images")


def test_the_leaderboard_shows_the_sort_column_beside_the_model():
    assert leaderboard.shown_columns(None, "CPU p50 ms")[:2] == ["model", "CPU p50 ms"]
    assert leaderboard.shown_columns(["ECE"], "Dice") == ["model", "Dice", "ECE"]
    assert set(leaderboard.shown_columns(None, "macro-F1")) == set(leaderboard.DEFAULT_COLUMNS)
    with pytest.raises(ValueError, match="Unknown leaderboard column"):
        leaderboard.shown_columns(["F2"], "macro-F1")


def test_the_leaderboard_handler_returns_the_chosen_columns():
    table = compare_tab.leaderboard_table("classify", "accuracy, lungs removed", ["model", "ECE"])
    assert list(table.columns) == ["model", "accuracy, lungs removed", "ECE"]
    removed = [v for v in table["accuracy, lungs removed"] if v is not None and v == v]
    assert removed == sorted(removed)  # lower is better with the lungs removed: best first


def test_a_remembered_answer_keeps_its_models_compute_time(example_png):
    xray, models = read_xray(example_png), compare.on_this_machine("classify")[:2]
    first = compare.run(xray, "classify", models, method=None)
    again = compare.run(xray, "classify", models, method=None)  # every answer now comes from the memo
    assert [o.latency_ms for o in again.outputs] == [o.latency_ms for o in first.outputs]
    assert all(o.latency_ms > 1 for o in again.outputs)


def test_a_zero_shot_models_clinical_row_carries_its_audit():
    name = "cxr-lit-effnet-minilm"
    metrics = json.loads((REPO / "weights" / name / "metrics.json").read_text())
    entries = leaderboard.entries_for(zoo.get(name), metrics, {})
    clinical = next(e for e in entries if e.variant == "prompts: clinical")
    assert clinical.lungs_removed_accuracy == metrics["audit"]["lungs_removed"]["accuracy"]
    assert clinical.external_n == metrics["audit"]["external"]["n"]
    assert all(e.lungs_removed_accuracy is None for e in entries if e is not clinical)


def test_the_leaderboard_shows_the_worst_simulated_hospital_from_the_audit():
    name = zoo.default("classify").name
    metrics = json.loads((REPO / "weights" / name / "metrics.json").read_text())
    shifts = metrics["audit"]["site_shift"]
    entry = next(e for e in leaderboard.entries_for(zoo.get(name), metrics, {}) if e.model == name)
    assert entry.worst_shift_accuracy == shifts[shifts["worst"]] == min(v for k, v in shifts.items() if k not in ("n", "worst", "none"))
    without = {**metrics, "audit": {k: v for k, v in metrics["audit"].items() if k != "site_shift"}}
    assert next(e for e in leaderboard.entries_for(zoo.get(name), without, {}) if e.model == name).worst_shift_accuracy is None
