"""Segmentation: RLE readers against the official sample masks, measurements, reference masks, the predictor and tab."""
from __future__ import annotations

import json

import gradio as gr
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import ModelCardData
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from cxr_demo import zoo
from cxr_demo.io import InvalidImage, read_xray
from cxr_demo.tasks import segment
from cxr_demo.ui.segment_tab import segment_image
from tests.conftest import SHARED_DATA, needs_shared_data, tiny_zoo_toml
from train.export import export_checkpoint
from train.seg_data import decode_rle, encode_rle, read_image_mask_folder, read_siim_rle

SIIM = SHARED_DATA / "siim-pneumothorax"


@settings(max_examples=60, deadline=None)
@given(st.integers(4, 40), st.integers(4, 40), st.data(), st.booleans())
def test_rle_round_trip(h, w, data, relative):
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=h * w, max_size=h * w)), dtype=np.uint8).reshape(h, w)
    assert (decode_rle(encode_rle(mask, relative), h, w, relative) == mask).all()


def test_rle_formats_differ_and_walk_columns():
    mask = np.zeros((4, 3), np.uint8)
    mask[1:3, 0] = 1  # a run down the first column
    mask[0, 2] = 1
    assert encode_rle(mask) == "2 2 9 1"
    assert encode_rle(mask, relative=True) == "1 2 5 1"
    assert decode_rle("-1", 4, 3).sum() == 0
    with pytest.raises(ValueError, match="outside"):
        decode_rle("10 5", 4, 3)


@needs_shared_data
def test_siim_relative_rle_matches_the_official_sample_masks():
    pairs = read_siim_rle(SIIM / "train-rle-sample_original.csv", SIIM / "dicom")
    positives = [p for p in pairs if p.rle]
    assert len(pairs) == 10 and len(positives) == 5
    for pair in positives:
        decoded = np.zeros((1024, 1024), bool)
        for rle in pair.rle:
            decoded |= decode_rle(rle, 1024, 1024, relative=True).astype(bool)
        reference = np.asarray(Image.open(SIIM / "masks" / f"{pair.image.stem}.png")) > 127
        assert (decoded == reference).all()


@needs_shared_data
def test_siim_absolute_rle_from_the_same_masks(tmp_path):
    pairs = read_siim_rle(SIIM / "train-rle-sample_original.csv", SIIM / "dicom")
    rows = ["ImageId,EncodedPixels"]
    for pair in pairs:
        reference = np.asarray(Image.open(SIIM / "masks" / f"{pair.image.stem}.png")) > 127
        rows.append(f"{pair.image.stem},{encode_rle(reference)}")
    (tmp_path / "train-rle.csv").write_text("\n".join(rows))
    absolute = read_siim_rle(tmp_path / "train-rle.csv", SIIM / "dicom")
    assert not absolute[0].relative_rle
    for pair in absolute:
        reference = np.asarray(Image.open(SIIM / "masks" / f"{pair.image.stem}.png")) > 127
        decoded = decode_rle(pair.rle[0], 1024, 1024) if pair.rle else np.zeros((1024, 1024))
        assert (decoded.astype(bool) == reference).all()


@needs_shared_data
def test_folder_reader_pairs_images_and_masks():
    assert len(read_image_mask_folder(SHARED_DATA / "lung-masks" / "shenzhen")) == 59
    assert len(read_image_mask_folder(SHARED_DATA / "covid-qu-ex-sample", masks="lung masks")) == 12


def two_lungs(h=200, w=300) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[40:160, 30:130] = True  # image left = the patient's right lung, 12000 px
    mask[50:150, 170:250] = True  # 8000 px
    return mask


def test_measures_split_at_the_midline_and_convert_to_cm2():
    m = segment.measure(two_lungs(), (0.5, 0.5))
    assert (m.right_px, m.left_px, m.area_px) == (12000, 8000, 20000)
    assert m.area_cm2 == pytest.approx(20000 * 0.25 / 100)
    assert segment.measure(two_lungs(), None).area_cm2 is None


def test_measures_count_original_pixels_for_a_downsampled_working_copy():
    assert segment.measure(two_lungs(), None, (400, 600)).area_px == 80000


def test_overlap():
    mask = two_lungs()
    assert segment.overlap(mask, mask) == (1.0, 1.0)
    dice, iou = segment.overlap(mask, np.zeros_like(mask) | mask[:, ::-1])
    assert 0 < iou < dice < 1


class TestReferenceMask:
    def test_binary_mask_is_resized_onto_the_image(self):
        ref, note = segment.reference_mask(two_lungs().astype(np.float32), (400, 600), (600, 400), (600, 400))
        assert ref.shape == (400, 600) and ref.sum() == pytest.approx(80000, rel=0.02)
        assert note is None  # the mask file has the image's own size

    def test_a_mask_of_another_size_is_resized_and_said_so(self):
        ref, note = segment.reference_mask(two_lungs(256, 256).astype(np.float32), (1024, 1024), (1024, 1024), (256, 256))
        assert ref.shape == (1024, 1024)
        assert "256x256" in note and "1024x1024" in note and "resized" in note

    @pytest.mark.parametrize("pixels, words", [
        (np.zeros((200, 300), np.float32), "empty"),
        (np.ones((200, 300), np.float32), "all white"),
        (np.tile(np.linspace(0, 1, 300, dtype=np.float32), (200, 1)), "not binary"),
        (np.zeros((300, 300), np.float32), "shapes differ"),
    ])
    def test_bad_masks(self, pixels, words):
        with pytest.raises(InvalidImage, match=words):
            segment.reference_mask(pixels, (200, 300), (300, 200))


@pytest.fixture(scope="module")
def seg_zoo(tmp_path_factory):
    root = tmp_path_factory.mktemp("segzoo")
    torch.manual_seed(0)
    model = smp.create_model("unet", encoder_name="mobilenet_v2", encoder_weights=None, in_channels=1, classes=1)
    config = {"architecture": "unet", "encoder_name": "mobilenet_v2", "in_channels": 1, "classes": 1, "label_names": ["lung"],
              "cxr_demo": {"task": "segment", "preprocess": "equalize", "threshold": 0.5}}
    export_checkpoint(root / "tiny-unet", model.state_dict(), config, {"task": "segment"}, "# test", ModelCardData(), half=False)
    entry = dict(name="tiny-unet", task="segment", arch="unet", labels=["lung"], input_size=128, mean=[0.5], std=[0.5],
                 source=f"local:{root / 'tiny-unet'}", default=True)
    return zoo.Zoo.from_toml(tiny_zoo_toml(root, [entry]))


def test_predictor_returns_a_mask_at_image_resolution(seg_zoo, use_zoo, example_dicom):
    use_zoo(seg_zoo)
    xray = read_xray(example_dicom)
    result = segment.predict(xray, reference=two_lungs(1024, 1024))
    assert result.mask.shape == (1024, 1024) and result.mask.dtype == bool
    assert result.dice is not None and 0 <= result.dice <= 1
    has_cm2 = segment.implausible_spacing(xray.meta.pixel_spacing_mm, xray.shape) is None
    assert (result.measures.area_cm2 is not None) == (has_cm2 and result.measures.area_px > 0)


def test_segment_handler_with_a_reference_mask(seg_zoo, use_zoo, example_png, tmp_path):
    use_zoo(seg_zoo)
    ref = tmp_path / "mask.png"
    Image.fromarray(two_lungs(224, 224).astype(np.uint8) * 255).save(ref)
    overlay, rows, notes, probabilities = segment_image(str(example_png), None, str(ref), 0.4)
    assert probabilities is None  # a single-task segmenter does not classify
    assert overlay.shape == (512, 512, 3)
    assert any(r[0] == "Dice vs your mask" for r in rows)
    assert "yellow" in notes and "pixels only" in notes


def test_segment_handler_rejects_a_wrong_mask(seg_zoo, use_zoo, example_png, tmp_path):
    use_zoo(seg_zoo)
    ref = tmp_path / "wide.png"
    Image.fromarray(two_lungs(100, 300).astype(np.uint8) * 255).save(ref)
    with pytest.raises(gr.Error, match="shapes differ"):
        segment_image(str(example_png), None, str(ref))


def test_segment_handler_says_when_it_resized_the_mask(seg_zoo, use_zoo, example_dicom, tmp_path):
    use_zoo(seg_zoo)
    ref = tmp_path / "small.png"
    Image.fromarray(two_lungs(256, 256).astype(np.uint8) * 255).save(ref)
    _, rows, notes, _ = segment_image(str(example_dicom), None, str(ref))
    assert "Your mask is 256x256 pixels and the image 1024x1024" in notes
    assert any(r[0] == "Dice vs your mask" for r in rows)


@pytest.mark.parametrize("spacing, shape, plausible", [
    ((0.168, 0.168), (1024, 1024), False),  # SIIM: 17 cm, a film resized without updating PixelSpacing
    ((0.143, 0.143), (3000, 2500), True),  # 43 x 36 cm
    ((0.7, 0.7), (1024, 1024), False),  # 72 cm
    (None, (1024, 1024), True),
])
def test_pixel_spacing_is_checked_against_a_chest_film(spacing, shape, plausible):
    doubt = segment.implausible_spacing(spacing, shape)
    assert (doubt is None) == plausible
    if not plausible:
        assert "pixels only" in doubt


def test_implausible_spacing_gives_no_cm2(seg_zoo, use_zoo, example_dicom):
    use_zoo(seg_zoo)
    xray = read_xray(example_dicom)
    if segment.implausible_spacing(xray.meta.pixel_spacing_mm, xray.shape) is None:
        pytest.skip("the example DICOM's spacing is plausible")
    result = segment.predict(xray)
    assert result.measures.area_cm2 is None and any("pixel spacing" in w for w in result.warnings)


def pairs_folder(folder, image_png, n: int = 10):
    """`folder/images/i.png` beside `folder/masks/i.png` (two lungs), the layout train.segment reads."""
    (folder / "images").mkdir(parents=True)
    (folder / "masks").mkdir()
    for i in range(n):
        Image.open(image_png).save(folder / "images" / f"{i}.png")
        Image.fromarray(two_lungs(224, 224).astype(np.uint8) * 255).save(folder / "masks" / f"{i}.png")
    return folder


def test_a_few_segmentation_steps_train_and_export(tmp_path, example_png):
    from train.segment import SegmentConfig, train

    folder = pairs_folder(tmp_path / "pairs", example_png)
    cfg = SegmentConfig(data=[str(folder)], external=[str(folder)], arch="fpn", encoder="mobilenet_v2", epochs=2, max_steps=1,
                        batch_size=4, img_size=64, out=str(tmp_path / "w"), runs=str(tmp_path / "r"), name="smoke")
    out = train(cfg)
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"dice", "iou"} <= set(metrics["test"]) and str(folder) in metrics["external"]
    assert (out / "README.md").read_text().count("Dice") >= 1


@pytest.mark.parametrize("channels, depth", [([32, 16, 8, 8, 4], 5), ([16, 8, 8, 4], 4)])
def test_a_slim_decoder_is_trained_exported_and_loaded_back_as_such(tmp_path, use_zoo, example_png, channels, depth):
    from train.segment import SegmentConfig, train

    folder = pairs_folder(tmp_path / "pairs", example_png)
    cfg = SegmentConfig(data=[str(folder)], arch="unet", encoder="mobilenet_v2", decoder_channels=channels, encoder_depth=depth, epochs=1,
                        max_steps=1, batch_size=4, img_size=64, out=str(tmp_path / "w"), runs=str(tmp_path / "r"), name="slim")
    out = train(cfg)
    config = json.loads((out / "config.json").read_text())
    assert config["decoder_channels"] == channels and config.get("encoder_depth", 5) == depth
    entry = dict(name="slim", task="segment", arch="unet", labels=["lung"], input_size=64, mean=[0.5], std=[0.5], source=f"local:{out}")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry])))
    result = segment.predict(read_xray(example_png), "slim")  # smp's default decoder and depth would not fit these weights
    assert result.mask.shape == (224, 224)


def test_decoder_widths_that_do_not_match_the_encoder_depth_are_refused_with_the_fix():
    from train.segment import SegmentConfig, build_model

    with pytest.raises(SystemExit, match="one width per encoder stage: 4"):
        build_model(SegmentConfig(decoder_channels=[32, 16, 8, 8, 4], encoder_depth=4))


def test_multitask_model_returns_mask_and_classes(tmp_path, use_zoo, example_png):
    torch.manual_seed(0)
    model = smp.create_model("unet", encoder_name="mobilenet_v2", encoder_weights=None, in_channels=1, classes=1, aux_params=dict(classes=3))
    config = {"architecture": "unet", "encoder_name": "mobilenet_v2", "in_channels": 1, "classes": 1, "aux_classes": 3,
              "label_names": ["COVID", "Normal", "Viral Pneumonia"], "mask_label": "lung", "cxr_demo": {"task": "multitask"}}
    export_checkpoint(tmp_path / "mt", model.state_dict(), config, {"task": "multitask"}, "# test", ModelCardData(), half=False)
    entry = dict(name="mt", task="multitask", arch="unet", labels=["COVID", "Normal", "Viral Pneumonia"], input_size=96,
                 mean=[0.5], std=[0.5], source=f"local:{tmp_path / 'mt'}")
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry])))
    result = segment.predict(read_xray(example_png), "mt")
    assert result.label == "lung" and result.mask.shape == (224, 224)
    assert set(result.probabilities) == {"COVID", "Normal", "Viral Pneumonia"}
    assert sum(result.probabilities.values()) == pytest.approx(1, abs=1e-5)


def test_multitask_losses_are_masked_to_their_labels():
    from train.multitask import NO_CLASS, multitask_loss

    torch.manual_seed(0)
    model = smp.create_model("unet", encoder_name="mobilenet_v2", encoder_weights=None, in_channels=1, classes=1, aux_params=dict(classes=3))
    losses = (smp.losses.DiceLoss("binary"), smp.losses.SoftBCEWithLogitsLoss())
    x, masks = torch.randn(4, 1, 64, 64), torch.ones(4, 1, 64, 64)
    no_labels = torch.full((4,), NO_CLASS)
    none = torch.zeros(4, dtype=torch.bool)
    assert multitask_loss(model, x, no_labels, masks, none, losses).item() == 0
    only_class = multitask_loss(model, x, torch.tensor([0, 1, 2, NO_CLASS]), masks, none, losses)
    both = multitask_loss(model, x, torch.tensor([0, 1, 2, NO_CLASS]), masks, torch.tensor([False, False, False, True]), losses)
    assert 0 < only_class.item() < both.item()


@pytest.mark.parametrize("arch", ["unet", "unetplusplus", "manet", "fpn", "pspnet", "pan", "deeplabv3", "deeplabv3plus"])
def test_every_seed_architecture_builds_through_one_path(arch):
    from train.segment import SegmentConfig, build_model

    model = build_model(SegmentConfig(arch=arch, encoder="mobilenet_v2")).eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 128, 128))  # PAN pools its deepest map: 64 px is too small
    assert out.shape == (1, 1, 128, 128)


def test_unknown_architecture_is_refused():
    from train.segment import SegmentConfig, build_model

    with pytest.raises(SystemExit, match="unet, unetplusplus"):
        build_model(SegmentConfig(arch="segformer-xl"))


@pytest.mark.parametrize("aux_classes", [None, 3])
def test_onnxruntime_export_gives_pytorchs_outputs(aux_classes, monkeypatch):
    from cxr_demo.zoo.runtime import OnnxRuntimeModule, with_onnxruntime

    torch.manual_seed(0)
    model = smp.create_model("unet", encoder_name="mobilenet_v2", encoder_weights=None, in_channels=1, classes=1,
                             aux_params=dict(classes=aux_classes) if aux_classes else None).eval()
    example = torch.zeros(1, 1, 64, 64)
    exported = with_onnxruntime(model, example, "tiny")
    assert isinstance(exported, OnnxRuntimeModule)
    batch = torch.rand(2, 1, 64, 64)  # a batch size the export never saw
    with torch.inference_mode():
        expected, got = model(batch), exported(batch)
    expected, got = (expected, got) if aux_classes else ((expected,), (got,))
    assert len(got) == len(expected)
    for e, g in zip(expected, got):
        assert g.shape == e.shape and torch.allclose(e, g, atol=1e-4)
    monkeypatch.setenv("CXR_DEMO_ONNX", "0")
    assert with_onnxruntime(model, example, "tiny") is model
