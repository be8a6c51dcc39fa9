"""Training code: readers, splits, fractions, freezing, calibration, and a few real steps end to end."""
from __future__ import annotations

import json

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from cxr_demo import zoo
from cxr_demo.tasks.metrics import classification_report, fit_temperature
from tests.conftest import LABELS, SHARED_DATA, SHIPPED_LUNG_SEGMENTER, export_random_classifier, needs_shared_data, tiny_zoo_toml
from train import data as datasets
from train.classify import (ClassifyConfig, build_model, classify_loss, films_loss, freeze_all_but_last, parse_args, selection_score,
                            train)
from train.evaluate import main as evaluate_main


def test_reader_finds_classes_and_patients(class_folder):
    data = datasets.read_class_folders(class_folder)
    assert data.classes == LABELS and len(data) == 30
    assert np.bincount(data.labels).tolist() == [10, 10, 10]
    assert "Viral Pneumonia/person3" in data.groups


def test_reader_explains_a_wrong_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="Class"):
        datasets.read_class_folders(tmp_path / "missing")
    (tmp_path / "COVID").mkdir()
    with pytest.raises(FileNotFoundError, match="No images"):
        datasets.read_class_folders(tmp_path)


@needs_shared_data
def test_split_is_80_10_10_stratified_grouped_and_seeded():
    data = datasets.read_class_folders(SHARED_DATA / "cxr-3class")
    splits = datasets.split_80_10_10(data, seed=0)
    sizes = {k: len(v) for k, v in splits.items()}
    assert abs(sizes["train"] / len(data) - 0.8) < 0.02 and abs(sizes["test"] / len(data) - 0.1) < 0.02
    groups = {k: {data.groups[i] for i in v} for k, v in splits.items()}
    assert not groups["train"] & groups["test"] and not groups["train"] & groups["val"]
    for k in splits:
        share = np.bincount(data.labels[splits[k]], minlength=3) / len(splits[k])
        np.testing.assert_allclose(share, np.bincount(data.labels) / len(data), atol=0.03)
    again = datasets.split_80_10_10(data, seed=0)
    assert all((again[k] == splits[k]).all() for k in splits)
    assert not (datasets.split_80_10_10(data, seed=1)["test"] == splits["test"]).all()


@pytest.mark.parametrize("fraction", [1.0, 0.75, 0.5, 0.25])
def test_fraction_keeps_each_class_share(fraction):
    labels = np.repeat([0, 1, 2], [400, 400, 200])
    kept = datasets.take_fraction(np.arange(1000), labels, fraction)
    assert np.bincount(labels[kept]).tolist() == [round(400 * fraction)] * 2 + [round(200 * fraction)]


def test_fraction_out_of_range():
    with pytest.raises(ValueError, match="fraction"):
        datasets.take_fraction(np.arange(10), np.zeros(10, int), 1.5)


def test_freeze_all_but_last_blocks():
    model = timm.create_model("mobilenetv2_035", num_classes=3, in_chans=1)
    total = sum(p.numel() for p in model.parameters())
    head_only = freeze_all_but_last(model, 0)
    two_blocks = freeze_all_but_last(model, 2)
    assert head_only < two_blocks < total
    assert model.classifier.weight.requires_grad and not model.conv_stem.weight.requires_grad


def test_temperature_recovers_a_known_overconfidence():
    torch.manual_seed(0)
    true_logits = torch.randn(4000, 3) * 2
    labels = torch.distributions.Categorical(logits=true_logits).sample()
    fitted = fit_temperature(true_logits * 3, labels)  # a model 3x too confident
    assert fitted == pytest.approx(3, rel=0.15)
    report = classification_report(true_logits * 3, labels, LABELS, fitted)
    assert report["ece"] < report["ece_uncalibrated"]


def test_report_has_the_seed_columns():
    logits = torch.tensor([[3.0, 0, 0], [0, 3.0, 0], [0, 0, 3.0], [3.0, 0, 0]])
    report = classification_report(logits, torch.tensor([0, 1, 2, 1]), LABELS)
    assert report["accuracy"] == pytest.approx(0.75)
    assert report["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
    assert report["per_class"]["Normal"]["recall"] == pytest.approx(0.5)
    assert {"macro_f1", "macro_precision", "macro_recall", "ece"} <= set(report)


def test_cli_defaults_follow_the_seed_recipe():
    cfg = parse_args(["--data", "somewhere"])
    assert (cfg.opt, cfg.lr, cfg.weight_decay, cfg.epochs) == ("adam", 5e-5, 1e-6, 20)
    assert parse_args(["--data", "d", "--train-last", "2", "--fraction", "0.5"]).train_last == 2


def test_a_few_steps_train_export_and_evaluate(class_folder, tmp_path, use_zoo, capsys, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    cfg = ClassifyConfig(data=str(class_folder), arch="mobilenetv2_035", name="smoke", init=None, epochs=2,
                         batch_size=8, img_size=96, max_steps=2, lr=1e-3, out=str(tmp_path / "weights"), runs=str(tmp_path / "runs"))
    out = train(cfg)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "metrics.json", "model.safetensors"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["minutes_per_epoch"] > 0
    assert {"macro_f1", "accuracy", "ece", "ece_uncalibrated", "confusion_matrix"} <= set(metrics["test"])
    assert metrics["gate"]["threshold"] > 0
    assert json.loads((out / "config.json").read_text())["cxr_demo"]["gate_threshold"] == pytest.approx(metrics["gate"]["threshold"], rel=1e-3)
    card = (out / "README.md").read_text()
    assert "pediatric" in card and "not a medical device" in card.lower()

    # resuming a finished run does no more epochs and exports the same shape of result
    assert json.loads((train(cfg) / "metrics.json").read_text())["epochs"] == 2

    trained_with = json.loads((out / "config.json").read_text())["pretrained_cfg"]  # zoo.toml must repeat the training statistics
    entry = dict(name="smoke", task="classify", arch="mobilenetv2_035", labels=LABELS, input_size=96, mean=trained_with["mean"],
                 std=trained_with["std"], source=f"local:{out}")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry, SHIPPED_LUNG_SEGMENTER])))
    capsys.readouterr()
    evaluate_main(["--data", str(class_folder), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert zoo.load("smoke").gate is not None
    assert result["n"] == 30 and {"accuracy", "macro_f1", "macro_precision", "macro_recall", "per_class", "ece"} <= set(result)


def test_distillation_mixes_the_labels_with_the_teachers_softened_answer():
    logits, labels = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 1])
    labels_only = films_loss(logits, labels, 0.5, 2.0)
    agreeing = torch.cat([labels[:, None].float(), (logits / 2.0).softmax(1)], 1)
    assert films_loss(logits, agreeing, 0.5, 2.0).item() == pytest.approx(0.5 * labels_only.item(), abs=1e-5)
    disagreeing = torch.cat([labels[:, None].float(), torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])], 1)
    assert films_loss(logits, disagreeing, 0.5, 2.0).item() > 0.5 * labels_only.item() + 1


def test_a_student_trains_on_a_zoo_teachers_answers(class_folder, tmp_path, use_zoo, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    teacher = export_random_classifier(tmp_path / "teacher", "mobilenetv2_035")
    entry = {"name": "teacher", "task": "classify", "arch": "mobilenetv2_035", "labels": LABELS, "input_size": 96, "mean": [0.5],
             "std": [0.5], "source": f"local:{teacher}"}
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry])))
    cfg = ClassifyConfig(data=str(class_folder), arch="cxr_simple_cnn", name="student", teacher="teacher", epochs=1, batch_size=8,
                         img_size=64, max_steps=2, out=str(tmp_path / "weights"), runs=str(tmp_path / "runs"))
    out = train(cfg)
    assert "Distilled** from the zoo classifier `teacher`" in (out / "README.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["train_config"]["teacher"] == "teacher"


def test_evaluate_reports_predictions_on_an_unlabelled_folder(tmp_path, tiny_zoo, use_zoo, capsys, example_png, example_dicom):
    use_zoo(tiny_zoo)
    for source in (example_png, example_dicom):
        (tmp_path / source.name).write_bytes(source.read_bytes())
    (tmp_path / "junk.png").write_bytes(b"not an image")
    evaluate_main(["--data", str(tmp_path), "--model", "tiny-cnn", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["n"] == 2 and sum(result["predicted"].values()) == 2
    assert result["n_files"] == 3 and result["n_flagged"] >= 1 and result["flag_reasons"]["unreadable"] == 1


def test_folders_that_are_not_classes_are_read_as_unlabelled(tmp_path, tiny_zoo, use_zoo, example_png, capsys):
    use_zoo(tiny_zoo)
    (tmp_path / "Pneumothorax").mkdir()
    (tmp_path / "Pneumothorax" / "a.png").write_bytes(example_png.read_bytes())
    evaluate_main(["--data", str(tmp_path), "--model", "tiny-cnn"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "macro_f1" not in result and result["n"] == 1 and "flagged" in result


def test_evaluate_check_counts_what_the_input_check_refuses(tmp_path, tiny_zoo, use_zoo, example_png, capsys, monkeypatch):
    from cxr_demo.intake import stage as intake
    from cxr_demo.intake import check

    use_zoo(tiny_zoo)
    for name in ("a.png", "b.png"):
        (tmp_path / name).write_bytes(example_png.read_bytes())
    (tmp_path / "c.png").write_bytes(example_png.read_bytes()[:300])  # truncated: unreadable counts as flagged
    monkeypatch.setattr(intake, "check", lambda xray, lungs, model=None: check.Verdict(True, "This looks upside down.", "upside down"))
    evaluate_main(["--task", "check", "--data", str(tmp_path), "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["flagged"] == 1.0 and result["flag_reasons"] == {"This looks upside down.": 2, "unreadable": 1}


def test_lungs_removed_blanks_every_image_before_the_model_sees_it(class_folder, tiny_zoo, use_zoo, capsys, monkeypatch):
    from train import evaluate

    use_zoo(tiny_zoo)
    seen = []
    monkeypatch.setattr(evaluate, "model_logits", lambda loaded, xray, lungs, cam=False: (seen.append(xray.pixels), (torch.zeros(3), None))[1])
    evaluate_main(["--data", str(class_folder), "--model", "tiny-cnn", "--lungs-removed", "--json"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["lungs_removed"] is True and len(seen) == result["n"] == 30
    assert all((pixels == np.median(pixels)).mean() > 0.15 for pixels in seen)  # the lungs are one flat grey


class FixedLogits(torch.nn.Module):
    """Films get confident right answers; blanked crops (all zeros) get `blank_logits`."""

    def __init__(self, blank_logits):
        super().__init__()
        self.blank = torch.tensor(blank_logits, dtype=torch.float32)

    def forward(self, x):
        films = x.flatten(1).sum(1) != 0
        confident = torch.nn.functional.one_hot(torch.arange(len(x)) % 3, 3).float() * 10
        return torch.where(films[:, None], confident, self.blank.expand(len(x), 3))


def test_the_counterfactual_loss_asks_for_no_answer_without_lungs():
    x, y = torch.ones(3, 1, 4, 4), torch.arange(3)
    blanked = torch.zeros(2, 1, 4, 4)
    films_only = classify_loss(FixedLogits([0, 0, 0]), x, y, None)
    undecided = classify_loss(FixedLogits([0, 0, 0]), x, y, blanked)
    shortcut = classify_loss(FixedLogits([8, 0, 0]), x, y, blanked)
    assert undecided.item() == pytest.approx(films_only.item() + np.log(3), abs=1e-4)  # the uniform answer costs only ln 3
    assert shortcut.item() > undecided.item() + 2  # a confident answer with the lungs gone is penalised
    heavier = classify_loss(FixedLogits([8, 0, 0]), x, y, blanked, weight=3.0)
    assert heavier.item() - films_only.item() == pytest.approx(3 * (shortcut.item() - films_only.item()), rel=1e-4)


def test_the_checkpoint_is_chosen_on_f1_less_what_it_reads_outside_the_lungs():
    assert selection_score(0.96, 0.40, None) == 0.96
    assert selection_score(0.96, 0.40, 0.45) == 0.96  # under the bar: F1 alone decides
    assert selection_score(0.97, 0.50, 0.45) == pytest.approx(0.92)
    assert selection_score(0.97, 0.50, 0.45) < selection_score(0.95, 0.44, 0.45)  # a better F1 bought with the shortcut loses


def test_a_lung_crop_run_validates_with_the_lungs_removed_each_epoch(class_folder, tmp_path, use_zoo, monkeypatch):
    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [SHIPPED_LUNG_SEGMENTER])))
    cfg = ClassifyConfig(data=str(class_folder), arch="mobilenetv2_035", name="crop", init=None, epochs=2, batch_size=8, img_size=96,
                         max_steps=1, crop="lungs", counterfactual=0.25, blind_weight=1.0, shortcut_bar=0.4, out=str(tmp_path / "weights"),
                         runs=str(tmp_path / "runs"))
    history = json.loads((train(cfg) / "metrics.json").read_text())["history"]
    assert len(history) == 2 and all(0 <= epoch["val_lungs_removed_accuracy"] <= 1 for epoch in history)
    with pytest.raises(SystemExit, match="--crop lungs"):
        train(ClassifyConfig(**{**cfg.__dict__, "crop": "none", "counterfactual": 0.0, "name": "full-film"}))


def test_the_blind_penalty_measures_how_much_the_blanked_answer_depends_on_the_class():
    from train.classify import between_class_spread

    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same_answer = torch.tensor([[0.3, 0.1, -0.2]]).repeat(6, 1)
    assert between_class_spread(same_answer, labels).item() == pytest.approx(0.0, abs=1e-7)
    assert between_class_spread(same_answer + torch.randn(6, 1), labels).item() == pytest.approx(0.0, abs=1e-6)  # a shift per image is no answer
    reads_the_class = same_answer + 0.1 * F.one_hot(labels, 3)  # a small lean towards the right class, all an argmax needs
    assert between_class_spread(reads_the_class, labels).item() > 1e-3
    x, y = torch.ones(3, 1, 4, 4), torch.arange(3)
    blanked = torch.zeros(3, 1, 4, 4)
    plain = classify_loss(FixedLogits([0, 0, 0]), x, y, blanked, blanked_labels=y, blind_weight=10.0)
    assert plain.item() == pytest.approx(classify_loss(FixedLogits([0, 0, 0]), x, y, blanked).item())  # the same answer for every class costs nothing


def test_the_zero_shot_counterfactual_asks_the_blanked_crops_to_match_no_class():
    from train.classify import no_class_loss

    undecided = no_class_loss(torch.zeros(4, 3))
    matched = no_class_loss(torch.tensor([[30.0, 0.0, 0.0]]).repeat(4, 1))  # a logit scale of 100 makes this easy to reach
    assert undecided.item() == pytest.approx(np.log(3), abs=1e-5)  # the floor: every class equally (un)likely
    assert matched.item() > undecided.item() + 5


def test_blanked_lung_crops_fill_the_lungs_with_grey():
    pixels = np.zeros((2, 64, 64), np.uint8)
    pixels[:, :, 32:] = 200  # a bright half; the "lungs" sit in the dark half
    masks = np.zeros((2, 64, 64), bool)
    masks[:, 20:44, 8:24] = True
    boxes = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (2, 1))
    blanked = datasets.blanked_lung_crops(pixels, {"masks": masks, "boxes": boxes}, 64)
    assert blanked.shape == (2, 64, 64)
    assert (blanked[:, 24:40, 10:22] == np.median(pixels[0])).all() and (blanked[:, :, 48:] == 200).all()


def test_training_can_start_from_a_zoo_checkpoint(tmp_path):
    folder = export_random_classifier(tmp_path / "start", "mobilenetv2_035")
    model = build_model(ClassifyConfig(data="x", arch="mobilenetv2_035", init=str(folder)), len(LABELS))
    saved = timm.create_model("mobilenetv2_035", num_classes=len(LABELS), in_chans=1)
    saved.load_state_dict(load_file(folder / "model.safetensors"))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), saved.state_dict().values()))
    with pytest.raises(SystemExit, match="not a checkpoint of this architecture"):
        build_model(ClassifyConfig(data="x", arch="tf_efficientnet_lite0", init=str(folder)), len(LABELS))


def test_gate_flags_what_is_far_from_training_features():
    from cxr_demo.zoo.gate import FeatureGate

    torch.manual_seed(0)
    train_features, val_features = torch.randn(2000, 64), torch.randn(300, 64)
    gate = FeatureGate.fit(train_features, val_features)
    assert (gate.score(val_features) > gate.threshold).float().mean() < 0.02
    assert gate.is_unfamiliar(torch.randn(1, 64) * 4 + 3)
    restored = FeatureGate.from_state(gate.state_dict(), gate.threshold)
    torch.testing.assert_close(restored.score(val_features), gate.score(val_features))


def test_reliability_bins_count_every_prediction_and_measure_its_accuracy():
    from cxr_demo.tasks.metrics import reliability_bins

    probs = torch.tensor([[0.95, 0.05], [0.92, 0.08], [0.55, 0.45], [0.42, 0.58]])
    bins = reliability_bins(probs, torch.tensor([0, 1, 0, 1]), n_bins=10)
    assert sum(bins["count"]) == 4 and bins["count"][9] == 2 and bins["count"][5] == 2
    assert bins["accuracy"][9] == 0.5 and bins["accuracy"][5] == 1.0
    assert bins["confidence"][9] == pytest.approx(0.935)


def test_the_vit_hybrid_takes_its_stem_from_an_efficientnet_file_and_starts_its_blocks_fresh(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    cnn = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000).state_dict()
    file = tmp_path / "lite0.safetensors"
    save_file({k: v.contiguous() for k, v in cnn.items()}, file)
    model = build_model(ClassifyConfig(data="unused", arch="cxr_vit_hybrid_lite0", init=str(file), img_size=128), num_classes=3)
    state = model.state_dict()
    # one input channel: timm sums the RGB stem filters
    assert torch.allclose(state["patch_embed.backbone.conv_stem.weight"], cnn["conv_stem.weight"].sum(1, keepdim=True))
    assert torch.equal(state["patch_embed.backbone.blocks.4.0.conv_pwl.weight"], cnn["blocks.4.0.conv_pwl.weight"])
    assert not any(k.startswith("patch_embed.backbone.blocks.5") for k in state)  # the stem stops at stride 16
    assert tuple(model.patch_embed.grid_size) == (8, 8)
    assert model(torch.randn(2, 1, 128, 128)).shape == (2, 3)


def test_the_audit_card_names_the_segmenter_that_cut_its_crops():
    from train.audit import card_section

    figures = {"accuracy": 0.9, "macro_f1": 0.9, "n": 9, "flagged": 0.0, "heatmap_in_lungs": 0.5}
    result = {"segmenter": "lung-unet-mobilenetv2-lite", "test": figures, "lungs_removed": {"accuracy": 0.4, "n": 10},
              "external": {**figures, "data": "elsewhere", "lungs_removed_accuracy": 0.5},
              "adult_other_findings": {"Shenzhen (TB)": {"n": 3, "called_viral_pneumonia": 0.0}}}
    card = card_section("some-classifier", result)
    assert "`lung-unet-mobilenetv2-lite`" in card and "| **0.4000 (95% CI 0.17–0.69)** | 10 |" in card
    assert "blank-fill" not in card and "--shift all" not in card  # an older audit without those figures: no empty tables


def test_the_audit_card_shows_every_blank_and_marks_the_worst_simulated_hospital():
    from train.audit import card_section

    figures = {"accuracy": 0.9, "macro_f1": 0.9, "n": 9, "flagged": 0.0, "heatmap_in_lungs": 0.5}
    result = {"test": figures, "lungs_removed": {"accuracy": 0.4, "n": 10},
              "external": {**figures, "data": "elsewhere", "lungs_removed_accuracy": 0.5}, "adult_other_findings": {},
              "lungs_removed_by_blank": {"n": 10, "median": 0.4, "dark": 0.41, "bright": 0.42, "noise": 0.43},
              "site_shift": {"n": 10, "none": 0.9, "grain": 0.7, "jpeg": 0.8, "worst": "grain"}}
    card = card_section("some-classifier", result)
    assert "| median | dark | bright | noise |" in card and "| 0.400 | 0.410 | 0.420 | 0.430 |" in card
    assert "| none | grain | jpeg |" in card and "| 0.900 | **0.700** | 0.800 |" in card and "worst **grain**" in card


def test_training_blanks_the_lungs_exactly_where_lungs_removed_does(tmp_path, use_zoo, monkeypatch, example_png):
    """The counterfactual crops the model is trained on must show the blanked region the evaluation shows it."""
    from PIL import Image

    from cxr_demo.intake.lungs import blank_lungs, crop_to_box, find_lungs
    from cxr_demo.io import read_xray

    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [SHIPPED_LUNG_SEGMENTER])))
    film = tmp_path / "film.png"
    Image.open(example_png).convert("L").resize((224, 224), Image.BILINEAR).save(film)  # cxr-3class's own size
    pixels = datasets.cached_pixels([film], 224)
    trained_on = datasets.blanked_lung_crops(pixels, datasets.cached_lungs([film], pixels), 224)[0]

    xray = read_xray(film)
    found = find_lungs(xray)
    evaluated = crop_to_box(blank_lungs(xray.pixels, found.mask), found.box)
    evaluated = np.asarray(Image.fromarray((evaluated * 255).round().astype(np.uint8)).resize((224, 224), Image.BILINEAR))
    grey = round(float(np.median(xray.pixels)) * 255)
    blanked_in_training, blanked_in_evaluation = np.abs(trained_on.astype(int) - grey) <= 1, np.abs(evaluated.astype(int) - grey) <= 1
    overlap = (blanked_in_training & blanked_in_evaluation).sum() / (blanked_in_training | blanked_in_evaluation).sum()
    assert blanked_in_evaluation.mean() > 0.3 and overlap > 0.99


def test_a_lung_crop_lit_run_validates_with_the_lungs_removed_and_says_so_in_its_card(class_folder, tmp_path, use_zoo, monkeypatch):
    from train.clip import ClipConfig, ClipTrainer

    monkeypatch.setattr(datasets, "CACHE_DIR", tmp_path / "cache")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [SHIPPED_LUNG_SEGMENTER])))
    cfg = ClipConfig(data=str(class_folder), name="lit-crop", init=None, epochs=1, batch_size=8, img_size=96, max_steps=1, crop="lungs",
                     counterfactual=0.25, blind_weight=1.0, shortcut_bar=0.4, out=str(tmp_path / "weights"), runs=str(tmp_path / "runs"))
    out = ClipTrainer.train(cfg)
    history = json.loads((out / "metrics.json").read_text())["history"]
    assert 0 <= history[0]["val_lungs_removed_accuracy"] <= 1
    assert "--blind-weight 1 --shortcut-bar 0.4" in (out / "README.md").read_text()


def test_blanked_lung_crops_take_the_fills_in_turn_and_the_flag_is_checked():
    from train.classify import blank_fills

    pixels = np.tile(np.linspace(0, 255, 64, dtype=np.float32).astype(np.uint8), (3, 64, 1))
    masks = np.zeros((3, 64, 64), bool)
    masks[:, 20:44, 8:24] = True
    boxes = np.tile(np.array([[0.0, 0.0, 1.0, 1.0]], np.float32), (3, 1))
    blanked = datasets.blanked_lung_crops(pixels, {"masks": masks, "boxes": boxes}, 64, ("median", "dark", "noise"))
    lung = blanked[:, 26:38, 12:20].astype(int)
    assert (lung[0] == np.median(pixels[0])).all() and (lung[1] < lung[0]).all() and lung[2].std() > 5
    assert blank_fills(ClassifyConfig(data="x", blank_fills="median, noise")) == ("median", "noise")
    with pytest.raises(SystemExit, match="median, dark, bright, noise"):
        blank_fills(ClassifyConfig(data="x", blank_fills="median,stripes"))
