"""Tab handlers are plain functions: call them as the browser would, including with bad input."""
from __future__ import annotations

import gradio as gr
import numpy as np
import pytest

from cxr_demo.ui import build_demo
from cxr_demo.ui.classify_tab import TOP_PREDICTION, classify_image, target_choices
from tests.conftest import LABELS


@pytest.fixture(autouse=True)
def small_models(tiny_zoo, use_zoo):
    use_zoo(tiny_zoo)


def test_classify_handler_returns_every_output(example_png):
    probabilities, overlay, metadata, notes, why = classify_image(str(example_png), "tiny-cnn", "GradCAM", TOP_PREDICTION, 0.5)
    assert set(probabilities) == set(LABELS)
    # the 224 px film enlarged to 512 px for the browser, with the heatmap's colour scale drawn under it
    assert overlay.dtype == np.uint8 and overlay.shape[1:] == (512, 3) and overlay.shape[0] > 512
    scale = overlay[520:, 5:-5].astype(int)
    assert scale[..., 2].mean(axis=0)[:40].mean() > scale[..., 0].mean(axis=0)[:40].mean()  # blue at "low"
    assert scale[..., 0].mean(axis=0)[-40:].mean() > scale[..., 2].mean(axis=0)[-40:].mean()  # red at "high"
    assert ["format", "PNG"] in metadata
    assert "GradCAM" in notes and "View position unknown" in notes
    assert "Input check:** Passed" in why and "of the heatmap lies inside the lung mask" in why


@pytest.fixture
def flag_everything(monkeypatch):
    from cxr_demo.intake import check
    from cxr_demo.intake import stage as intake

    verdict = check.Verdict(True, "This looks upside down. Upload the film upright.", "upside down")
    monkeypatch.setattr(intake, "check", lambda xray, lungs, model=None: verdict)


def test_a_flagged_image_is_refused_with_the_reason(example_png, flag_everything):
    with pytest.raises(gr.Error, match="upside down.*Analyse anyway"):
        classify_image(str(example_png), "tiny-cnn")


def test_analyse_anyway_gives_no_confident_label(example_png, flag_everything):
    probabilities, _, _, notes, why = classify_image(str(example_png), "tiny-cnn", "GradCAM", TOP_PREDICTION, 0.5, True)
    assert set(probabilities) == {f"{label} (unreliable)" for label in LABELS}
    assert "unreliable" in notes and "Flagged: This looks upside down" in why


def test_the_counterfactual_blanks_the_lungs_and_reports_the_answer(example_png):
    from cxr_demo.ui.classify_tab import classify_without_lungs

    text, blanked = classify_without_lungs(str(example_png), "tiny-cnn")
    assert text.startswith("With the lungs removed, **tiny-cnn** says")
    assert blanked.shape == (512, 512, 3)
    assert (blanked[..., 0] == np.median(blanked[..., 0])).mean() > 0.2  # a large grey area where the lungs were


def test_opacity_zero_shows_the_plain_image(example_png):
    _, plain, _, _, _ = classify_image(str(example_png), "tiny-cnn", "GradCAM", TOP_PREDICTION, 0.0)
    film = plain[:512]  # the colour scale strip under it is coloured by design
    assert np.ptp(film.astype(int), axis=2).max() <= 1  # gray: no colour from the heatmap


def test_dicom_metadata_is_shown(example_dicom):
    _, overlay, metadata, _, _ = classify_image(str(example_dicom), "tiny-cnn")
    assert ["modality", "CR"] in metadata and ["view position", "PA"] in metadata
    assert overlay.shape[1] == 768  # display copy, not the full 1024 px


@pytest.mark.parametrize("upload, message", [
    (None, "Upload a chest X-ray first"),
    ("/no/such/file.png", "No file"),
])
def test_missing_upload_gives_a_message(upload, message):
    with pytest.raises(gr.Error, match=message):
        classify_image(upload)


def test_non_image_gives_a_message_not_a_traceback(tmp_path):
    bogus = tmp_path / "notes.txt"
    bogus.write_text("patient notes, definitely not pixels " * 20)
    with pytest.raises(gr.Error, match="not an image"):
        classify_image(str(bogus))


def test_unreachable_model_gives_a_message(example_png):
    with pytest.raises(gr.Error, match="cannot reach it"):
        classify_image(str(example_png), "hub-only")


def test_bad_input_leaves_the_next_request_working(tmp_path, example_png):
    broken = tmp_path / "broken.png"
    broken.write_bytes(example_png.read_bytes()[:500])
    with pytest.raises(gr.Error):
        classify_image(str(broken), "tiny-cnn")
    assert classify_image(str(example_png), "tiny-cnn")[0]


def test_target_choices_follow_the_model():
    assert target_choices("tiny-cnn") == [TOP_PREDICTION, *LABELS]
    assert target_choices("no-such-model") == [TOP_PREDICTION]


def test_app_builds_with_named_api_endpoint():
    demo = build_demo()
    assert "classify" in {fn.api_name for fn in demo.fns.values()}


def test_model_summary_quotes_the_card_and_the_shortcut(tmp_path, use_zoo):
    import json

    from cxr_demo import zoo
    from cxr_demo.ui.classify_tab import model_summary
    from tests.conftest import export_random_classifier, tiny_zoo_toml

    folder = export_random_classifier(tmp_path / "m", "mobilenetv2_035")
    (folder / "metrics.json").write_text(json.dumps({"test": {"macro_f1": 0.9512, "accuracy": 0.95, "ece": 0.02, "n": 535},
                                                     "audit": {"external": {"accuracy": 0.9, "n": 9}, "lungs_removed": {"accuracy": 0.578, "n": 535}}}))
    entry = dict(name="m", task="classify", arch="mobilenetv2_035", labels=LABELS, source=f"local:{folder}")
    caveat = "Its Viral Pneumonia images are all of young children."
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, [{**entry, "caveat": caveat}, {**entry, "name": "adult"}])))
    text = model_summary("m")
    assert "0.951" in text and "n=535" in text and caveat in text
    assert "children" not in model_summary("adult")  # the caveat is the model's, not every classifier's
    assert "Other hospitals: accuracy 0.90 (n=9)" in text and "lungs removed: accuracy **0.58**" in text


def test_an_image_output_already_in_gradios_cache_is_never_rewritten_under_a_download(tmp_path, monkeypatch):
    import pathlib

    import gradio as gr
    import numpy as np

    from cxr_demo.ui import build_demo

    build_demo()  # installs the cache fix
    picture = np.full((16, 16, 3), 120, np.uint8)
    image = gr.Image()
    image.GRADIO_CACHE = str(tmp_path)
    first = image.postprocess(picture).path
    written, write_bytes = [], pathlib.Path.write_bytes
    monkeypatch.setattr(pathlib.Path, "write_bytes", lambda self, data: (written.append(str(self)), write_bytes(self, data))[1])
    assert image.postprocess(picture).path == first
    assert first not in written  # truncating it would cut off a download of the same picture in flight
    image.postprocess(np.zeros((16, 16, 3), np.uint8))
    assert written and all(pathlib.Path(w).name.startswith(".") for w in written)  # new pictures appear whole, by rename
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()]  # and leave no partial file behind
