"""The architecture tables' machinery: the zoo's own architectures, ImageNet and self-supervised starts, and the rows."""
from __future__ import annotations

import json

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from cxr_demo.reports import leaderboard
from cxr_demo.zoo import architectures  # noqa: F401
from tests.conftest import LABELS, REPO
from train import tables
from train.classify import ClassifyConfig, build_model, in_timm_names, model_config
from train.pretrain import MaskedAutoencoder

MOBILENET_INIT = REPO.parent / "shared" / "weights-init" / "mobilenet_v2_imagenet.safetensors"


@pytest.mark.parametrize("arch", ["cxr_simple_cnn", "cxr_swin_atto"])
def test_the_zoos_own_architectures_build_by_name_with_timms_interface(arch):
    model = timm.create_model(arch, num_classes=3, in_chans=1).eval()
    x = torch.randn(2, 1, 128, 128)
    assert model(x).shape == (2, 3)
    assert model.forward_head(model.forward_features(x), pre_logits=True).shape == (2, model.num_features)
    assert model.pretrained_cfg["mean"] == (0.5,)


def test_a_transformer_is_built_at_the_training_size_and_says_so_in_its_config():
    cfg = ClassifyConfig(data="x", arch="vit_tiny_patch16_224", img_size=96)
    model = build_model(cfg, 3)
    assert tuple(model.patch_embed.grid_size) == (6, 6)
    assert model_config(cfg, LABELS, 1.0, (0.5,), (0.5,))["model_args"] == {"in_chans": 1, "img_size": 96}
    assert model_config(ClassifyConfig(data="x", arch="resnet18", img_size=96), LABELS, 1.0, (0.5,), (0.5,))["model_args"] == {"in_chans": 1}


@pytest.mark.skipif(not MOBILENET_INIT.is_file(), reason="needs ../shared/weights-init (the offline ImageNet weights)")
def test_a_torchvision_mobilenet_file_becomes_the_same_network_in_timm_names(tmp_path, monkeypatch):
    from torchvision.models import mobilenet_v2

    monkeypatch.setattr("train.data.CACHE_DIR", tmp_path)
    reference = mobilenet_v2()
    reference.load_state_dict(load_file(MOBILENET_INIT))
    converted = timm.create_model("mobilenetv2_100", num_classes=1000)
    converted.load_state_dict(load_file(in_timm_names(MOBILENET_INIT, "mobilenetv2_100")))
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        torch.testing.assert_close(converted.eval()(x), reference.eval()(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(SystemExit, match="does not fit"):
        in_timm_names(MOBILENET_INIT, "mobilenetv2_050")


def tiny_mae(depth: int = 2) -> MaskedAutoencoder:
    torch.manual_seed(0)
    encoder = timm.create_model("vit_tiny_patch16_224", num_classes=0, in_chans=1, img_size=64, depth=depth)
    return MaskedAutoencoder(encoder, decoder_dim=32, decoder_depth=1, mask_ratio=0.75)


def test_the_masked_autoencoder_encodes_only_a_quarter_of_the_patches_and_learns_through_both_halves():
    mae = tiny_mae()
    seen = []
    mae.encoder.blocks.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    loss = mae(torch.randn(3, 1, 64, 64))
    assert seen == [(3, 1 + 16 // 4, 192)]  # the class token and 4 of the 16 patches
    loss.backward()
    assert mae.encoder.patch_embed.proj.weight.grad.abs().sum() > 0 and mae.decoder_pred.weight.grad.abs().sum() > 0


def save_mae(mae: MaskedAutoencoder, folder) -> str:
    folder.mkdir()
    save_file({k: v.contiguous() for k, v in mae.state_dict().items()}, folder / "model.safetensors")
    return str(folder)


def test_a_classifier_starts_from_the_pretrained_encoder_with_a_fresh_head(tmp_path):
    mae = tiny_mae(depth=12)
    model = build_model(ClassifyConfig(data="x", arch="vit_tiny_patch16_224", img_size=64, init=save_mae(mae, tmp_path / "mae")), 3)
    encoder = mae.encoder.state_dict()
    assert all(torch.equal(value, encoder[key]) for key, value in model.state_dict().items() if not key.startswith("head."))
    assert model.head.weight.shape == (3, 192)
    with pytest.raises(SystemExit, match="weights missing"):  # a shallower encoder is not this architecture
        build_model(ClassifyConfig(data="x", arch="vit_tiny_patch16_224", img_size=64, init=save_mae(tiny_mae(2), tmp_path / "shallow")), 3)


def table_row(name: str) -> dict:
    return {"name": name, "arch": "resnet18", "family": "CNN", "init": "scratch", "note": "", "macro_f1": 0.8, "macro_precision": 0.81,
            "macro_recall": 0.79, "accuracy": 0.8, "ece": 0.05, "n": 535, "minutes_per_epoch": 1.5, "epochs": 3, "params_m": 11.2,
            "latency_ms_with_heatmap": 40.0, "lungs_removed_accuracy": 0.5, "heatmap_in_lungs": 0.4, "external_accuracy": 0.67,
            "external_n": 9, "external_lungs_removed_accuracy": 0.4, "adults_called_viral_pneumonia": 3, "adults_n": 89, "command": "python -m train.classify"}


def test_table_rows_reach_the_leaderboard_once_with_their_own_figures(tmp_path):
    rows = [table_row("cxr-resnet18-scratch"), table_row("cxr-lungcrop-effnet-lite0")]  # the second is a zoo model: shown as itself
    (tmp_path / "classify_table.json").write_text(json.dumps({"rows": rows}))
    entries = leaderboard.architecture_table_entries(tmp_path)
    assert [e.model for e in entries] == ["cxr-resnet18-scratch"]
    assert (entries[0].f1, entries[0].lungs_removed_accuracy, entries[0].external_n) == (0.8, 0.5, 9)
    assert "| `cxr-resnet18-scratch` | CNN | scratch | 3 | 0.800 |" in tables.markdown("classify", rows)


def test_a_table_segmenter_named_like_the_zoos_shows_as_the_table_run(tmp_path):
    row = {"name": "lung-unet-mobilenetv2", "arch": "unet", "shenzhen_dice": 0.95, "shenzhen_iou": 0.9, "shenzhen_n": 6, "covid_qu_ex_dice": 0.92,
           "covid_qu_ex_iou": 0.85, "covid_qu_ex_n": 6, "minutes_per_epoch": 0.5, "epochs": 10, "latency_ms": 200.0, "params_m": 6.6,
           "command": "python -m train.segment"}
    (tmp_path / "segment_table.json").write_text(json.dumps({"rows": [row]}))
    [entry] = leaderboard.architecture_table_entries(tmp_path)
    assert (entry.model, entry.dice, entry.external_dice) == ("lung-unet-mobilenetv2 (table run)", 0.95, 0.92)


def test_every_table_command_is_a_valid_training_command():
    from train.classify import parse_args

    cfg = tables.TablesConfig()
    for row in tables.CLASSIFIER_ROWS:
        parsed = parse_args(tables.flags(tables.classifier_command(cfg, row)))
        assert (parsed.arch, parsed.crop, parsed.lr, parsed.img_size) == (row.arch, "lungs", row.lr, cfg.img_size)


def test_shipping_a_table_row_lists_a_loadable_model_and_refuses_a_weak_one(tmp_path, monkeypatch):
    from cxr_demo import zoo
    from tests.conftest import export_random_classifier

    runs = tmp_path / "runs"
    for name, f1 in (("cxr-resnet18-scratch", 0.9), ("cxr-weak", 0.6)):
        folder = export_random_classifier(runs / "weights" / name, "resnet18")
        config = json.loads((folder / "config.json").read_text())
        config["pretrained_cfg"] = {"input_size": [1, 64, 64], "mean": [0.5], "std": [0.5]}
        (folder / "config.json").write_text(json.dumps(config))
        (folder / "table_row.json").write_text(json.dumps({**table_row(name), "macro_f1": f1}))
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "zoo.toml").write_text("# the zoo\n")
    monkeypatch.setattr(zoo, "REPO_ROOT", tmp_path)
    cfg = tables.TablesConfig(runs=str(runs))
    shipped = tables.ship(cfg, "cxr-resnet18-scratch")
    tables.ship(cfg, "cxr-resnet18-scratch")  # shipping again updates the files and lists the model once
    listed = zoo.Zoo.from_toml(tmp_path / "weights" / "zoo.toml")
    assert listed.names() == ["cxr-resnet18-scratch"]
    monkeypatch.setattr("cxr_demo.zoo.catalog.REPO_ROOT", tmp_path)
    assert listed.load("cxr-resnet18-scratch").module(torch.zeros(1, 1, 64, 64)).shape == (1, 3)
    assert json.loads((shipped / "metrics.json").read_text())["table"]["external_n"] == 9
    assert (shipped / "README.md").read_text().count(tables.TABLE_MARK) == 1
    with pytest.raises(SystemExit, match="0.600"):
        tables.ship(cfg, "cxr-weak")
