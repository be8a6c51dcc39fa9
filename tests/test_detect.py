"""Detection: the four box readers, boxes under the lung crop and resize, mAP, a few training steps exported and served
through a tiny zoo, the predictor, the Detect tab handler and its bad inputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cxr_demo import zoo
from cxr_demo.io import detector_input, read_xray
from cxr_demo.render import boxes as box_render
from cxr_demo.tasks import detect
from cxr_demo.ui.detect_tab import BOX_HEADERS, detect_image
from cxr_demo.zoo import detector
from tests.conftest import EXAMPLES, SHARED_DATA, SHIPPED_LUNG_SEGMENTER, needs_shared_data, tiny_zoo_toml
from train.det_data import Sample, grouped_folds, load_sample, parse_siim_label, read_coco, read_rsna, read_source
from train.detect import DetectConfig, evaluate_detector, score, train

torch.set_num_threads(2)
RSNA = SHARED_DATA / "rsna-opacity-boxes"
TBX = SHARED_DATA / "tbx11k-boxes"
SIZE = 128  # the tiny model's input side: fast enough for a CPU test


# --- readers ------------------------------------------------------------------------------------------------------


@needs_shared_data
def test_boxes_folder_reader_reads_every_staged_box():
    samples = read_source(str(RSNA))
    assert len(samples) == 20 and sum(len(s.boxes) for s in samples) == 36
    assert {s.labels[0] for s in samples} == {"Lung Opacity"}
    assert all(s.group == s.image.stem for s in samples)  # RSNA names each image after its patient
    for s in samples:
        assert all(0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512 for x0, y0, x1, y1 in s.boxes)


@needs_shared_data
def test_rsna_labels_on_1024_grid_land_on_the_staged_512_images():
    """The official CSV's boxes, scaled to the downscaled PNGs, must equal the staged boxes.csv ones."""
    official = {s.image.name: s for s in read_rsna(RSNA / "stage_2_train_labels.csv", RSNA / "images")}
    staged = {s.image.name: s for s in read_source(str(RSNA))}
    assert official.keys() == staged.keys() and len(official) == 20
    for name, sample in official.items():
        assert sample.label_size == (1024, 1024)
        _, boxes = load_sample(sample)
        expected = torch.tensor(staged[name].boxes)
        assert torch.allclose(boxes[boxes[:, 0].argsort()], expected[expected[:, 0].argsort()], atol=0.01)


@needs_shared_data
def test_coco_reader_on_tbx11k():
    samples = {s.image.name: s for s in read_coco(TBX / "annotations" / "TBX11K_train.json")}
    assert sorted(samples) == ["h0001.png", "tb0005.png", "tb0007.png"]
    assert samples["h0001.png"].boxes == ()
    assert samples["tb0007.png"].labels == ("ObsoletePulmonaryTuberculosis",) * 2
    x0, y0, x1, y1 = samples["tb0005.png"].boxes[0]
    assert (x1 - x0, y1 - y0) == pytest.approx((40.2369, 44.5658), abs=1e-3)  # COCO bbox is x, y, width, height
    assert [s.image.name for s in read_source(str(TBX))] == [s.image.name for s in samples.values()]


def write_siim_fisabio(root, image) -> None:
    """Kaggle's layout: train/<study>/<series>/<image id>.dcm-or-png and the image-level CSV."""
    rows = ["id,boxes,label,StudyInstanceUID",
            "aaa_image,\"[{'x': 10.0, 'y': 20.0, 'width': 30.0, 'height': 40.0}]\",opacity 1 10 20 40 60,study1",
            "bbb_image,,none 1 0 0 1 1,study1",
            "ccc_image,\"[{'x': 1, 'y': 2, 'width': 3, 'height': 4}, {'x': 50, 'y': 60, 'width': 70, 'height': 80}]\","
            "opacity 0.5 1 2 4 6 opacity 1 50 60 120 140,study2",
            "ddd_image,,none 1 0 0 1 1,study3"]
    (root / "train_image_level.csv").write_text("\n".join(rows) + "\n")
    for study, stem in (("study1", "aaa"), ("study1", "bbb"), ("study2", "ccc"), ("study3", "ddd")):
        folder = root / "train" / study / "series"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(image, folder / f"{stem}.png")


def test_siim_fisabio_reader_groups_by_study(tmp_path, example_png):
    write_siim_fisabio(tmp_path, example_png)
    samples = {s.image.stem: s for s in read_source(str(tmp_path))}
    assert samples["aaa"].boxes == ((10.0, 20.0, 40.0, 60.0),) and samples["aaa"].labels == ("opacity",)
    assert samples["bbb"].boxes == () and samples["ccc"].boxes == ((1, 2, 4, 6), (50, 60, 120, 140))
    assert samples["aaa"].group == samples["bbb"].group == "study1"
    folds = grouped_folds(list(samples.values()), n_splits=3)
    assert folds[0] == folds[1]  # one study never straddles two folds


def test_siim_label_strings():
    assert parse_siim_label("none 1 0 0 1 1") == []
    assert parse_siim_label("opacity 0.9 1 2 3 4") == [("opacity", (1.0, 2.0, 3.0, 4.0))]
    with pytest.raises(ValueError, match="groups of 6"):
        parse_siim_label("opacity 1 2 3")


def test_unrecognised_data_is_explained(tmp_path):
    with pytest.raises(FileNotFoundError, match="boxes.csv"):
        read_source(str(tmp_path))


def test_grouped_folds_keep_a_patient_together():
    samples = [Sample(Path(f"{i}.png"), (), (), f"patient{i // 2}") for i in range(12)]  # two images per patient
    folds = grouped_folds(samples, n_splits=3, seed=1)
    assert all(folds[i] == folds[i + 1] for i in range(0, 12, 2)) and set(folds) == {0, 1, 2}


# --- boxes under the crop and resize -------------------------------------------------------------------------------


def framed_image(h: int, w: int, border: int) -> np.ndarray:
    """Mid-grey 'body' with a black frame, like a radiograph with empty borders."""
    pixels = np.zeros((h, w), np.float32)
    pixels[border:h - border, border:w - border] = 0.5
    return pixels


def test_lung_crop_trims_black_borders_but_never_more_than_allowed():
    x0, y0, x1, y1 = detector_input.lung_crop_box(framed_image(400, 300, 40), max_cut=0.25, margin=0.0)
    assert abs(x0 - 40) <= 3 and abs(y0 - 40) <= 4 and abs(x1 - 260) <= 3 and abs(y1 - 360) <= 4
    x0, y0, x1, y1 = detector_input.lung_crop_box(framed_image(400, 300, 120), max_cut=0.1, margin=0.0)
    assert (x0, y0, x1, y1) == (30, 40, 270, 360)
    assert detector_input.lung_crop_box(framed_image(400, 300, 40), max_cut=0) == (0, 0, 300, 400)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(80, 300), w=st.integers(80, 300), border=st.integers(0, 30), size=st.integers(32, 256),
       box=st.tuples(*[st.floats(0, 1)] * 4))
def test_boxes_map_back_through_crop_and_resize(h, w, border, size, box):
    """torchvision moves the boxes forward; Prepared.to_source (what predictions go through) must undo it exactly."""
    pixels = framed_image(h, w, border)
    xs, ys = sorted([box[0] * w, box[2] * w]), sorted([box[1] * h, box[3] * h])
    original = torch.tensor([[xs[0], ys[0], xs[1] + 1, ys[1] + 1]])
    prepared = detector_input.prepare(pixels, detector_input.DetectPreprocess(size, equalize=False, crop_max_cut=0.25), original)
    assert max(prepared.image.shape[-2:]) == size
    cx0, cy0, cx1, cy1 = prepared.crop
    clipped = torch.stack([original[:, 0].clamp(cx0, cx1), original[:, 1].clamp(cy0, cy1),
                           original[:, 2].clamp(cx0, cx1), original[:, 3].clamp(cy0, cy1)], dim=1)
    assert torch.allclose(prepared.to_source(prepared.boxes.as_subclass(torch.Tensor)), clipped, atol=1e-3)


def test_boxes_follow_the_pixels_they_mark():
    pixels = framed_image(300, 400, 50)
    pixels[100:160, 220:300] = 1.0  # a bright 'finding'
    prepared = detector_input.prepare(pixels, detector_input.DetectPreprocess(200, equalize=False), torch.tensor([[220.0, 100.0, 300.0, 160.0]]))
    bright = np.argwhere(prepared.image[0].numpy() > 200)
    (y0, x0), (y1, x1) = bright.min(0), bright.max(0) + 1
    assert torch.allclose(prepared.boxes[0], torch.tensor([x0, y0, x1, y1], dtype=torch.float32), atol=1.5)


def test_equalization_is_applied_after_the_crop():
    pixels = framed_image(200, 200, 30) + np.linspace(0, 0.3, 200, dtype=np.float32)[None]
    plain = detector_input.prepare(pixels, detector_input.DetectPreprocess(128, equalize=False)).image
    equalized = detector_input.prepare(pixels, detector_input.DetectPreprocess(128, equalize=True)).image
    assert plain.shape == equalized.shape and equalized.float().std() > plain.float().std()


# --- the metric --------------------------------------------------------------------------------------------------


class Oracle(torch.nn.Module):
    """Stands in for a detector: answers each image with given boxes in the network's pixels."""

    def __init__(self, answers: list[torch.Tensor]):
        super().__init__()
        self.answers = answers
        self.roi_heads = torch.nn.Module()

    def forward(self, images):
        boxes = self.answers.pop(0)
        return [{"boxes": boxes, "scores": torch.ones(len(boxes)), "labels": torch.ones(len(boxes), dtype=torch.int64)}]


@needs_shared_data
def test_map_is_one_for_perfect_boxes_and_drops_when_they_shift():
    samples = read_source(str(RSNA))[:3]
    options = detector_input.DetectPreprocess(256)
    truth = []
    for sample in samples:
        pixels, boxes = load_sample(sample)
        truth.append(detector_input.prepare(pixels, options, boxes).boxes.as_subclass(torch.Tensor))
    perfect = score(Oracle([b.clone() for b in truth]), samples, options, ["Lung Opacity"])
    shifted = score(Oracle([b + torch.tensor([12.0, 12.0, 12.0, 12.0]) for b in truth]), samples, options, ["Lung Opacity"])
    assert perfect["map50"] == pytest.approx(1.0) and perfect["map"] == pytest.approx(1.0, abs=0.02)
    assert shifted["map"] < perfect["map"] - 0.2
    assert perfect["n"] == 3 and perfect["n_boxes"] == sum(len(s.boxes) for s in samples)


# --- training, export, the zoo, the predictor and the tab -------------------------------------------------------------


@pytest.fixture(scope="module")
def box_folder(tmp_path_factory):
    """Six example X-rays with made-up boxes, in the images/ + boxes.csv layout."""
    root = tmp_path_factory.mktemp("boxes")
    (root / "images").mkdir()
    rows = ["image,patientId,label,x,y,width,height"]
    sources = ["covid-1000.png", "normal-1062.png", "viral-pneumonia-person1007.png"]
    for i in range(6):
        name = f"images/p{i}.png"
        shutil.copy(EXAMPLES / sources[i % 3], root / name)
        rows.append(f"{name},p{i},Lung Opacity,{40 + i * 5},60,70,90")
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture(scope="module")
def trained(box_folder, tmp_path_factory):
    """Two real optimisation steps at 128 px, exported; returns the exported folder."""
    out = tmp_path_factory.mktemp("trained")
    cfg = DetectConfig(data=[str(box_folder)], epochs=1, max_steps=2, batch_size=2, img_size=SIZE, folds=3,
                       representation_size=64, rpn_top_n_test=50, rpn_top_n_train=100, rois_per_image=32,
                       out=str(out / "weights"), runs=str(out / "runs"), name="tiny-frcnn")
    return train(cfg), cfg


@pytest.fixture
def det_zoo(trained, use_zoo):
    folder, _ = trained
    entry = dict(name="tiny-frcnn", task="detect", arch="fasterrcnn_mobilenet_v2_fpn", labels=["Lung Opacity"],
                 input_size=SIZE, mean=list(detector.IMAGENET_MEAN), std=list(detector.IMAGENET_STD), source=f"local:{folder}", default=True)
    return use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(folder.parent, [entry, SHIPPED_LUNG_SEGMENTER])))


def test_training_exports_a_checkpoint_with_metrics_and_card(trained):
    folder, cfg = trained
    metrics = json.loads((folder / "metrics.json").read_text())
    assert set(metrics["test"]) == {"map50", "map", "n", "n_boxes"} and 0 <= metrics["test"]["map50"] <= 1
    assert metrics["data"]["sizes"] == {"train": 4, "val": 0, "test": 2} and len(metrics["data"]["held_out"]) == 2
    assert metrics["minutes_per_epoch"] > 0
    config = json.loads((folder / "config.json").read_text())
    assert config["cxr_demo"]["demo"] is True and config["detector"]["input_size"] == SIZE
    card = (folder / "README.md").read_text()
    assert "mAP@0.5" in card and detect.demo_warning(4) in card


def test_training_resumes_from_the_last_epoch_and_adds_other_folds(trained, capsys, tmp_path):
    folder, cfg = trained
    assert (folder.parent.parent / "runs" / "tiny-frcnn" / "last.pt").is_file()
    before = json.loads((folder / "metrics.json").read_text())
    other = tmp_path / "fold1-metrics.json"
    other.write_text(json.dumps({"test": {"map50": 0.2, "map": 0.1, "n": 3, "n_boxes": 4}}))
    # an interrupted-then-restarted run picks up after its last finished epoch; a finished one only re-exports
    train(DetectConfig(**{**cfg.__dict__, "cv_metrics": [str(other)]}))
    assert "resuming tiny-frcnn after epoch 1" in capsys.readouterr().out
    after = json.loads((folder / "metrics.json").read_text())
    assert after["history"] == before["history"] and after["test"] == before["test"]
    cv = after["cross_validation"]
    assert cv["k"] == 2 and cv["n"] == before["test"]["n"] + 3
    assert cv["mean_map50"] == pytest.approx((before["test"]["map50"] + 0.2) / 2)
    assert "2-fold mean" in (folder / "README.md").read_text()


def test_predictor_returns_boxes_in_the_original_pixels(det_zoo, example_dicom):
    xray = read_xray(example_dicom)
    result = detect.predict(xray, score_threshold=0.0, keep_preprocessed=True)
    assert result.model == "tiny-frcnn" and result.latency_ms > 0 and detect.demo_warning(4) in result.warnings
    assert result.boxes, "a zero threshold keeps every candidate"
    width, height = xray.meta.width, xray.meta.height
    assert all(0 <= b.x0 < b.x1 <= width + 0.1 and 0 <= b.y0 < b.y1 <= height + 0.1 for b in result.boxes)
    assert max(result.preprocessed.shape) == SIZE and result.preprocessed.dtype == np.uint8
    scores = [b.score for b in result.boxes]
    assert scores == sorted(scores, reverse=True)
    stricter = detect.predict(xray, score_threshold=max(scores) + 1e-3)
    assert not stricter.boxes and any("Lower the score threshold" in w for w in stricter.warnings)


def test_evaluate_detector_scores_through_the_app(det_zoo, box_folder):
    result = evaluate_detector("tiny-frcnn", box_folder)
    assert {k: result[k] for k in ("model", "task", "n")} == {"model": "tiny-frcnn", "task": "detect", "n": 6}
    assert 0 <= result["map50"] <= 1 and 0 <= result["map"] <= result["map50"] + 1e-6
    assert evaluate_detector("tiny-frcnn", box_folder, only_held_out=True)["n"] == 2


def test_weights_that_do_not_fit_are_refused(trained, use_zoo, tmp_path):
    folder, _ = trained
    broken = tmp_path / "broken"
    shutil.copytree(folder, broken)
    config = json.loads((broken / "config.json").read_text())
    config["detector"]["representation_size"] = 32
    (broken / "config.json").write_text(json.dumps(config))
    entry = dict(name="broken", task="detect", arch="fasterrcnn_mobilenet_v2_fpn", source=f"local:{broken}",
                 mean=list(detector.IMAGENET_MEAN), std=list(detector.IMAGENET_STD))
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [entry, SHIPPED_LUNG_SEGMENTER])))
    with pytest.raises(zoo.ModelUnavailable, match="do not fit"):
        zoo.load("broken")


def test_the_detector_normalises_with_the_zoo_statistics_and_refuses_other_ones(trained, use_zoo, tmp_path):
    folder, _ = trained
    config = json.loads((folder / "config.json").read_text())
    gray = dict(name="gray", task="detect", arch="fasterrcnn_mobilenet_v2_fpn", source=f"local:{folder}", mean=[0.5], std=[0.25])
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [gray, SHIPPED_LUNG_SEGMENTER])))
    with pytest.raises(zoo.ModelUnavailable, match="trained with"):
        zoo.load("gray")
    del config["pretrained_cfg"]  # a checkpoint that does not say: zoo.toml's figures are built into the detector
    (tmp_path / "unsaid").mkdir()
    shutil.copy(folder / "model.safetensors", tmp_path / "unsaid")
    (tmp_path / "unsaid" / "config.json").write_text(json.dumps(config))
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [{**gray, "source": f"local:{tmp_path / 'unsaid'}"}, SHIPPED_LUNG_SEGMENTER])))
    transform = zoo.load("gray").module.transform
    assert (transform.image_mean, transform.image_std) == ([0.5] * 3, [0.25] * 3)


def test_detect_handler_draws_boxes_and_scores_ground_truth(det_zoo, example_png, tmp_path):
    truth = tmp_path / "truth.csv"
    truth.write_text("x,y,width,height,label\n40,60,70,90,Lung Opacity\n")
    overlay, rows, notes, preprocessed = detect_image(str(example_png), None, 0.0, 0.5, True, str(truth))
    assert overlay.shape == (512, 512, 3) and overlay.dtype == np.uint8  # a 224 px film is enlarged for the browser
    assert all(len(r) == len(BOX_HEADERS) for r in rows)
    truth_rows = [r for r in rows if r[0].startswith("truth")]
    assert len(truth_rows) == 1 and 0 <= float(truth_rows[0][-1]) <= 1
    assert "of your 1 box" in notes and "blue: the lung crop" in notes and detect.demo_warning(4) in notes
    assert preprocessed is not None and max(preprocessed.shape) == SIZE
    plain, _, _, hidden = detect_image(str(example_png))
    assert hidden is None and not np.array_equal(plain, overlay)


def test_overlay_marks_boxes_in_their_colour():
    pixels = np.full((300, 600), 0.5, np.float32)
    box = detect.Box(40, 20, 240, 200, "Lung Opacity", 0.9)
    overlay = box_render.draw_boxes(pixels, [box], original_size=(1200, 600))  # boxes given on a 2x larger original
    assert tuple(overlay[10, 100]) == box_render.BOX_COLOUR  # top edge at y = 20 / 2
    assert tuple(overlay[70, 60]) != box_render.BOX_COLOUR  # inside, below the label
    label_row = overlay[12:28, 21:60]
    assert (label_row == 255).all(axis=2).any()  # white label text on the box colour


@pytest.mark.parametrize("csv_text, words", [
    ("a,b\n1,2\n", "x, y, width, height"),
    ("x,y,width,height\n", "x, y, width, height"),
    ("x,y,width,height\n1,2,three,4\n", "not a number"),
    ("x,y,width,height\n1,2,0,4\n", "no area"),
    ("x,y,width,height\n200,2,100,4\n", "outside"),
])
def test_detect_handler_rejects_bad_ground_truth(det_zoo, example_png, tmp_path, csv_text, words):
    truth = tmp_path / "truth.csv"
    truth.write_text(csv_text)
    with pytest.raises(gr.Error, match=words):
        detect_image(str(example_png), None, 0.3, 0.5, False, str(truth))


def test_detect_handler_bad_inputs(det_zoo, tmp_path, example_png):
    with pytest.raises(gr.Error, match="Upload a chest X-ray"):
        detect_image(None)
    junk = tmp_path / "notes.txt"
    junk.write_text("not an image")
    with pytest.raises(gr.Error, match="not an image"):
        detect_image(str(junk))
    with pytest.raises(gr.Error, match="score threshold"):
        detect_image(str(example_png), None, 1.5)
    with pytest.raises(gr.Error, match="No model named"):
        detect_image(str(example_png), "no-such-detector")


@pytest.mark.parametrize("arch", detector.ARCHITECTURES)
def test_every_architecture_builds_through_one_path(arch):
    spec = detector.DetectorSpec(arch=arch, input_size=96, representation_size=32, rpn_pre_nms_top_n_test=20,
                               rpn_post_nms_top_n_test=20)
    model = detector.build_detector(spec).eval()
    prepared = detector_input.prepare(framed_image(120, 100, 10), detector_input.DetectPreprocess(96))
    output = detect.run_detector(model, [prepared], 0.0, 0.5)[0]
    assert output["boxes"].shape[1] == 4 and len(output["boxes"]) == len(output["scores"])


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="fasterrcnn_mobilenet_v2_fpn"):
        detector.build_detector(detector.DetectorSpec(arch="yolo-v99"))
    with pytest.raises(SystemExit, match="--arch"):
        from train.detect import build_model
        build_model(DetectConfig(arch="yolo-v99"), ["Lung Opacity"])


INIT = SHARED_DATA.parent / "weights-init" / "mobilenet_v2_imagenet.safetensors"


@pytest.mark.skipif(not INIT.is_file(), reason=f"offline ImageNet weights not found at {INIT}")
def test_offline_imagenet_init_fills_the_whole_mobilenet_v2_backbone():
    from safetensors.torch import load_file

    from train.detect import build_model

    model = build_model(DetectConfig(init=str(INIT)), ["Lung Opacity"])
    source = load_file(INIT)
    body = model.backbone.body.state_dict()
    features = {k: v for k, v in source.items() if k.startswith("features.")}
    assert all(torch.equal(body[k.removeprefix("features.")], v) for k, v in features.items() if not k.endswith("num_batches_tracked"))
    from torchvision.ops.misc import FrozenBatchNorm2d
    assert isinstance(model.backbone.body["1"].conv[0][1], FrozenBatchNorm2d)  # ImageNet statistics kept, tiny batches
    assert not model.backbone.body["0"][0].weight.requires_grad and model.backbone.body["18"][0].weight.requires_grad


def test_slivers_along_the_crop_edge_are_dropped_and_counted():
    sliver = detect.Box(100, 223, 136, 224, "Lung Opacity", 0.4)  # what covid-1000.png used to show: 36 x 1 px
    strip = detect.Box(0, 1019, 153, 1024, "Lung Opacity", 0.48)  # and the example DICOM: 153 x 5 px at the bottom edge
    long = detect.Box(10, 10, 200, 30, "Lung Opacity", 0.5)  # 190 x 20: long enough, but 9.5:1
    finding = detect.Box(40, 60, 110, 150, "Lung Opacity", 0.6)
    kept, dropped = detect.plausible_boxes((sliver, finding, long), (224, 224))
    assert kept == (finding,) and dropped == 2
    assert detect.plausible_boxes((strip,), (1024, 1024)) == ((), 1)
