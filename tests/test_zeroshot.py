"""Zero-shot: prompt sets and templates, the text-embedding cache, scoring prompt sets, the tab handler (tiny random CLIP)."""
from __future__ import annotations

import gradio as gr
import pytest
import torch

from cxr_demo import zoo
from cxr_demo.io import read_xray
from cxr_demo.tasks import zeroshot
from cxr_demo.tasks.zeroshot import PRESETS, LabelledSample, PromptSet
from tests.conftest import EXAMPLES, LABELS


@pytest.fixture
def clip(clip_zoo, use_zoo):
    use_zoo(clip_zoo)
    zeroshot.TEXT_CACHE.clear()
    return clip_zoo.load("tiny-clip")


@pytest.fixture(scope="module")
def sample(tmp_path_factory) -> LabelledSample:
    sources = {"COVID": "covid-1000.png", "Normal": "normal-1062.png", "Viral Pneumonia": "viral-pneumonia-person1007.png"}
    return LabelledSample(tuple(EXAMPLES / name for name in sources.values()), tuple(sources))


def test_templates_wrap_every_prompt_and_negation_is_chexzero_style():
    ps = PromptSet("t", {"COVID": ("covid", "sars"), "Normal": ("normal",), "Viral Pneumonia": ("viral",)}, ("x-ray of {}", "{}!"))
    assert ps.texts("COVID") == ["x-ray of covid", "covid!", "x-ray of sars", "sars!"]
    assert ps.texts("Normal", negative=True) == ["x-ray of no normal", "no normal!"]


def test_prompts_typed_by_a_user_are_split_into_lines():
    ps = PromptSet.from_text("mine", {"COVID": " covid \n\n ground glass", "Normal": "normal", "Viral Pneumonia": "viral"}, "a cxr of {}\n")
    assert ps.prompts["COVID"] == ("covid", "ground glass") and ps.templates == ("a cxr of {}",)
    assert PromptSet.from_text("mine", *PRESETS["clinical"].as_text()) .prompts == PRESETS["clinical"].prompts


@pytest.mark.parametrize("prompts, templates, words", [
    ({"COVID": "", "Normal": "n", "Viral Pneumonia": "v"}, "{}", "at least one prompt for COVID"),
    ({"COVID": "c", "Normal": "n", "Viral Pneumonia": "v"}, "no placeholder", "exactly one {}"),
])
def test_bad_prompt_sets_say_what_to_fix(prompts, templates, words):
    with pytest.raises(ValueError, match=words.replace("{}", r"\{\}")):
        PromptSet.from_text("bad", prompts, templates)


def test_presets_cover_the_labels_and_differ():
    for preset in PRESETS.values():
        assert set(preset.prompts) == set(LABELS)
    assert len({tuple(p.texts("COVID")) for p in PRESETS.values()}) == len(PRESETS)


def test_text_embeddings_are_computed_once_per_model_and_text(clip):
    zeroshot.class_embeddings(clip, PRESETS["clinical"])
    misses = zeroshot.TEXT_CACHE.misses
    assert misses == sum(len(PRESETS["clinical"].texts(label)) for label in LABELS)
    again = zeroshot.class_embeddings(clip, PRESETS["clinical"])
    assert zeroshot.TEXT_CACHE.misses == misses and zeroshot.TEXT_CACHE.hits >= misses
    assert torch.allclose(again.norm(dim=-1), torch.ones(len(LABELS)), atol=1e-5)


def test_the_cache_returns_what_the_model_computes(clip):
    cached = zeroshot.TEXT_CACHE.embed(clip, ["a chest x-ray", "a chest x-ray", "normal"])
    assert torch.allclose(cached[0], cached[1])
    with torch.inference_mode():
        direct = clip.module.encode_text(["normal"])[0]
    assert torch.allclose(cached[2], direct, atol=1e-6)


def test_the_cache_evicts_the_least_recently_used(clip):
    cache = zeroshot.TextEmbeddingCache(max_items=2)
    cache.embed(clip, ["a"]), cache.embed(clip, ["b"]), cache.embed(clip, ["a"]), cache.embed(clip, ["c"])
    cache.embed(clip, ["a"])
    assert cache.misses == 3  # "b" went out, "a" stayed


@pytest.mark.parametrize("contrast", [False, True])
def test_probabilities_sum_to_one_and_temperature_flattens(clip, example_png, contrast):
    prompt_set = PromptSet("p", PRESETS["clinical"].prompts, contrast=contrast)
    x = zeroshot.image_input(read_xray(example_png), clip)
    embedding = zeroshot.embed_images(clip, x)
    sharp = zeroshot.probabilities(embedding, clip, prompt_set, temperature=0.1)[0]
    flat = zeroshot.probabilities(embedding, clip, prompt_set, temperature=100.0)[0]
    assert sharp.sum() == pytest.approx(1.0, abs=1e-5) and flat.sum() == pytest.approx(1.0, abs=1e-5)
    assert sharp.max() >= flat.max()
    assert flat.max() - flat.min() < 0.05


def test_predict_returns_every_label(clip, example_dicom):
    result = zeroshot.predict(read_xray(example_dicom), prompt_set=PRESETS["naive"])
    assert set(result.probabilities) == set(LABELS) and result.model == "tiny-clip" and result.latency_ms > 0


def test_scores_are_classification_metrics_of_the_argmax(clip, sample):
    scores = zeroshot.score_prompt_sets(clip, [PRESETS["clinical"], PRESETS["bad"]], sample)
    for score in scores:
        matrix = torch.tensor(score.report["confusion_matrix"])
        assert matrix.sum() == len(sample.paths)
        assert score.accuracy == pytest.approx(float(matrix.diag().sum() / matrix.sum()))
        assert score.report.keys() >= {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class"}
    assert zeroshot.spread(scores) == pytest.approx(max(s.macro_f1 for s in scores) - min(s.macro_f1 for s in scores))


def test_sample_embeddings_are_cached_per_model(clip, sample, monkeypatch):
    zeroshot.sample_embeddings(clip, sample)
    monkeypatch.setattr(zeroshot, "read_xray", lambda path: pytest.fail("re-read a cached sample image"))
    zeroshot.score_prompt_sets(clip, [PRESETS["naive"]], sample)


def test_sample_from_a_folder_of_class_folders(class_folder):
    sample = LabelledSample.from_folder(class_folder, per_class=4)
    assert len(sample.paths) == 12 and set(sample.labels) == set(LABELS)


def test_a_sample_with_unknown_classes_is_refused(clip, sample):
    odd = LabelledSample(sample.paths[:1], ("Pneumothorax",))
    with pytest.raises(Exception, match="Pneumothorax"):
        zeroshot.score_prompt_sets(clip, [PRESETS["naive"]], odd)


def test_an_offline_hub_clip_says_so(clip_zoo):
    with pytest.raises(zoo.ModelUnavailable, match="cannot reach it"):
        clip_zoo.load("hub-clip")


from cxr_demo.ui import zeroshot_tab  # noqa: E402


def test_tab_handler_defaults_to_the_preset(clip, example_png):
    label, notes = zeroshot_tab.zeroshot_image(example_png)
    assert set(label) == set(LABELS) and "prompts **clinical**" in notes


def test_tab_handler_with_edited_prompts_reports_custom(clip, example_png):
    texts, templates = PRESETS["naive"].as_text()
    _, unchanged = zeroshot_tab.zeroshot_image(example_png, None, "naive", *[texts[label] for label in LABELS], templates, False, 1.0)
    _, edited = zeroshot_tab.zeroshot_image(example_png, None, "naive", "ground glass", texts["Normal"], texts["Viral Pneumonia"],
                                            templates, False, 2.0)
    assert "prompts **naive**" in unchanged and "prompts **custom**" in edited


def test_an_emptied_prompt_box_names_the_custom_set(clip, example_png):
    texts, templates = PRESETS["clinical"].as_text()
    with pytest.raises(gr.Error, match="Prompt set 'custom': give at least one prompt for COVID"):
        zeroshot_tab.zeroshot_image(example_png, None, "clinical", "", texts["Normal"], texts["Viral Pneumonia"], templates, False)


def test_compare_prompt_sets_runs_the_input_check(clip, example_png, monkeypatch):
    from cxr_demo.intake import check
    from cxr_demo.intake import stage as intake

    monkeypatch.setattr(intake, "check", lambda xray, lungs, model=None: check.Verdict(True, "This looks upside down.", "upside down"))
    with pytest.raises(gr.Error, match="upside down"):
        zeroshot_tab.compare_prompt_sets(str(example_png), None, ["naive"], per_class=2)
    on_image, _, _ = zeroshot_tab.compare_prompt_sets(str(example_png), None, ["naive"], per_class=2, analyse_anyway=True)
    assert on_image[0][-1].endswith("(unreliable)")


def test_preset_fields_fill_every_editor():
    covid, normal, viral, templates, contrast, description = zeroshot_tab.preset_fields("chexzero")
    assert covid == "covid-19 pneumonia" and contrast is True and templates == "{}" and description


def test_compare_scores_presets_and_custom_on_the_shipped_sample(clip, example_png):
    on_image, table, summary = zeroshot_tab.compare_prompt_sets(
        example_png, None, ["clinical", "bad", zeroshot_tab.CUSTOM], "covid", "normal", "viral pneumonia", "{}", False, 1.0, per_class=2)
    assert [row[0] for row in on_image] == ["clinical", "bad", "custom"] == [row[0] for row in table]
    assert "Spread:" in summary and "on the same 6 labelled images" in summary
    assert summary.count("confusion matrix") == 3


def test_compare_without_an_image_still_scores_the_sample(clip):
    on_image, table, _ = zeroshot_tab.compare_prompt_sets(None, None, ["naive", "bad"], per_class=2)
    assert on_image == [] and len(table) == 2


@pytest.mark.parametrize("kwargs, words", [
    (dict(prompt_sets=[]), None),
    (dict(prompt_sets=["clinical", "naive", "bad", "chexzero", zeroshot_tab.CUSTOM]), "between one and four"),
    (dict(sample_folder="/etc"), "switched off"),
    (dict(prompt_sets=[zeroshot_tab.CUSTOM]), "at least one prompt"),
])
def test_compare_refuses_clearly(clip, kwargs, words):
    if words is None:  # an empty choice falls back to the three presets
        assert len(zeroshot_tab.compare_prompt_sets(None, None, per_class=2, **kwargs)[1]) == 3
        return
    with pytest.raises(gr.Error, match=words):
        zeroshot_tab.compare_prompt_sets(None, None, per_class=2, **kwargs)


def test_bad_upload_and_bad_template_are_messages_not_tracebacks(clip, tmp_path, example_png):
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    with pytest.raises(gr.Error):
        zeroshot_tab.zeroshot_image(str(junk))
    with pytest.raises(gr.Error, match="exactly one"):
        zeroshot_tab.zeroshot_image(example_png, None, "clinical", None, None, None, "no placeholder")
    with pytest.raises(gr.Error, match="Temperature"):
        zeroshot_tab.zeroshot_image(example_png, None, "clinical", temperature=0)


def test_evaluate_cli_prints_classifier_keys_for_a_prompt_preset(clip, class_folder, capsys):
    from train import evaluate

    result = evaluate.main(["--task", "zeroshot", "--data", str(class_folder), "--prompts", "all", "--json"])
    last = __import__("json").loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert last["task"] == "zeroshot" and last["prompts"] == "clinical" and last["n"] == 30
    assert {"accuracy", "macro_f1", "macro_precision", "macro_recall", "confusion_matrix"} <= set(last)
    assert set(last["by_preset"]) == set(PRESETS)
    assert last["spread_macro_f1"] == pytest.approx(max(r["macro_f1"] for r in result["by_preset"].values())
                                                    - min(r["macro_f1"] for r in result["by_preset"].values()))
