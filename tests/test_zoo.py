"""The zoo: typed specs, local-first resolution, lazy cached loading, safetensors only, clear offline failures."""
from __future__ import annotations

import json
import re
import time
import tomllib

import pytest
import torch

from cxr_demo import zoo
from cxr_demo.zoo import catalog
from tests.conftest import LABELS, REPO, export_random_classifier, tiny_zoo_toml


def test_shipped_zoo_parses_and_every_local_checkpoint_is_complete():
    shipped = zoo.Zoo.from_toml(REPO / "weights" / "zoo.toml")
    assert shipped.default("classify").default
    for spec in shipped.specs():
        if spec.is_hub:
            continue
        folder = zoo.resolve(spec)
        for name in ("config.json", "model.safetensors", "README.md", "metrics.json"):
            assert (folder / name).is_file(), f"{spec.name} lacks {name}"
        assert json.loads((folder / "config.json").read_text())["label_names"] == list(spec.labels)


def test_spec_validation_says_what_is_wrong():
    with pytest.raises(ValueError, match="task must be one of"):
        zoo.ModelSpec(name="x", task="regress", arch="a", source="local:x")
    with pytest.raises(ValueError, match="'local:' or 'hf-hub:'"):
        zoo.ModelSpec(name="x", task="classify", arch="a", source="s3://bucket")


def test_unknown_model_lists_the_known_ones(tiny_zoo):
    with pytest.raises(zoo.UnknownModel, match="Known models: tiny-cnn, tiny-vit, hub-only"):
        tiny_zoo.get("resnet-9000")


def test_default_is_the_flagged_model(tiny_zoo):
    assert tiny_zoo.default("classify").name == "tiny-cnn"
    with pytest.raises(zoo.UnknownModel, match="no detect model"):
        tiny_zoo.default("detect")


def test_load_is_lazy_and_cached(tiny_zoo):
    fresh = zoo.Zoo(tiny_zoo.specs())
    assert fresh.loaded_names() == []
    first = fresh.load("tiny-vit")
    assert fresh.loaded_names() == ["tiny-vit"]
    assert fresh.load("tiny-vit") is first
    assert not first.module.training
    assert first.config["label_names"] == LABELS


def test_hub_model_offline_fails_fast_with_a_plain_reason(tiny_zoo):
    start = time.perf_counter()
    with pytest.raises(zoo.ModelUnavailable, match="cannot reach it.*weights/hub-only"):
        tiny_zoo.load("hub-only")
    assert time.perf_counter() - start < 15


def test_hub_model_prefers_a_local_copy(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "REPO_ROOT", tmp_path)
    export_random_classifier(tmp_path / "weights" / "mirrored", "mobilenetv2_035")
    spec = zoo.ModelSpec(name="mirrored", task="classify", arch="mobilenetv2_035", labels=tuple(LABELS),
                         source="hf-hub:cxr-demo/mirrored@v1")
    assert zoo.resolve(spec) == tmp_path / "weights" / "mirrored"


def test_pickled_weights_are_never_loaded(tmp_path):
    folder = tmp_path / "pickled"
    folder.mkdir()
    torch.save({"w": torch.zeros(1)}, folder / "pytorch_model.bin")
    (folder / "config.json").write_text("{}")
    toml = tiny_zoo_toml(tmp_path, [dict(name="pickled", task="classify", arch="mobilenetv2_035", labels=LABELS, source=f"local:{folder}")])
    with pytest.raises(zoo.ModelUnavailable, match="no model.safetensors"):
        zoo.Zoo.from_toml(toml).load("pickled")


def test_weights_that_do_not_fit_the_architecture(tmp_path):
    export_random_classifier(tmp_path / "cnn", "mobilenetv2_035")
    toml = tiny_zoo_toml(tmp_path, [dict(name="wrong", task="classify", arch="mobilenetv2_050", labels=LABELS, source=f"local:{tmp_path / 'cnn'}")])
    with pytest.raises(zoo.ModelUnavailable, match="do not fit architecture 'mobilenetv2_050'"):
        zoo.Zoo.from_toml(toml).load("wrong")


def test_label_mismatch_between_zoo_and_checkpoint(tmp_path):
    export_random_classifier(tmp_path / "cnn", "mobilenetv2_035")
    toml = tiny_zoo_toml(tmp_path, [dict(name="cnn", task="classify", arch="mobilenetv2_035", labels=["A", "B", "C"], source=f"local:{tmp_path / 'cnn'}")])
    with pytest.raises(zoo.ModelUnavailable, match="labels"):
        zoo.Zoo.from_toml(toml).load("cnn")


def test_duplicate_names_are_rejected(tmp_path):
    entry = dict(name="same", task="classify", arch="a", source="local:x")
    with pytest.raises(ValueError, match="Duplicate"):
        zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry, entry]))


def test_unknown_toml_keys_are_kept_as_extra(tmp_path):
    toml = tiny_zoo_toml(tmp_path, [dict(name="m", task="classify", arch="a", source="local:x", paper="arXiv:1234")])
    assert zoo.Zoo.from_toml(toml).get("m").extra == {"paper": "arXiv:1234"}
    assert tomllib.loads(toml.read_text())


def test_every_kind_has_exactly_one_loader_once_the_zoo_is_imported():
    from cxr_demo.zoo import loaders

    assert set(loaders.LOADERS) == set(zoo.KINDS)
    with pytest.raises(ValueError, match="already registered"):
        loaders.register_loader("classify")(lambda *args: None)
    with pytest.raises(ValueError, match="not a zoo kind"):
        loaders.register_loader("ocr")(lambda *args: None)
    assert loaders.LOADERS["classify"].__name__ == "_load_timm_classifier"


def test_the_task_table_names_a_training_module_that_exists_for_every_kind():
    import importlib.util

    assert all(importlib.util.find_spec(module) for module in zoo.KINDS.values())
    assert set(zoo.ENDPOINTS) == {"classify", "zeroshot", "segment", "detect"}


@pytest.mark.parametrize("damage, words", [
    (lambda raw: b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 6123456\n",
     "is a Git LFS pointer, not the weights: run `git lfs pull`"),
    (lambda raw: raw[: len(raw) // 3], "truncated or corrupt"),
    (lambda raw: b"\x00" * 64, "truncated or corrupt"),
])
def test_a_broken_checkpoint_says_what_is_wrong_and_the_other_models_still_work(tmp_path, use_zoo, example_png, damage, words):
    import gradio as gr

    from cxr_demo.ui.classify_tab import classify_image
    from tests.conftest import SHIPPED_LUNG_SEGMENTER

    good, broken = export_random_classifier(tmp_path / "good", "mobilenetv2_035"), export_random_classifier(tmp_path / "broken", "mobilenetv2_035")
    weights = broken / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    entry = dict(task="classify", arch="mobilenetv2_035", labels=LABELS, input_size=224, mean=[0.5], std=[0.5])
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [{**entry, "name": "good", "source": f"local:{good}", "default": True},
                                                       {**entry, "name": "broken", "source": f"local:{broken}"}, SHIPPED_LUNG_SEGMENTER])))
    with pytest.raises(zoo.ModelUnavailable, match=re.escape(words)):
        zoo.load("broken")
    with pytest.raises(gr.Error, match=re.escape(words)):
        classify_image(str(example_png), "broken")
    probabilities = classify_image(str(example_png), "good")[0]
    assert set(probabilities) == set(LABELS)
