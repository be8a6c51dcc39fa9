"""The running app through its public API, as a script or another service would call it."""
from __future__ import annotations

import pytest
from gradio_client import Client, handle_file

from tests.conftest import LABELS


@pytest.fixture(scope="module")
def client(running_app):
    return Client(running_app, verbose=False)


def test_classify_endpoint_needs_only_the_image(client, example_dicom):
    label, overlay, metadata, notes, why = client.predict(handle_file(str(example_dicom)), api_name="/classify")
    assert label["label"] in LABELS
    assert {c["label"] for c in label["confidences"]} == set(LABELS)
    assert overlay  # a served image file
    assert any(row[:2] == ["modality", "CR"] for row in metadata["data"])
    assert "GradCAM" in notes
    assert "Input check:** Passed" in why and "inside the lung mask" in why


def test_a_document_is_refused_by_every_endpoint_unless_analysed_anyway(client, document_png):
    for endpoint in ("/classify", "/segment", "/zeroshot", "/detect", "/compare"):
        with pytest.raises(Exception, match="does not look like a chest X-ray"):
            client.predict(handle_file(str(document_png)), api_name=endpoint)
    label, *_ = client.predict(handle_file(str(document_png)), "cxr-lungcrop-effnet-lite0", "GradCAM", "Top prediction", 0.45, True,
                               api_name="/classify")
    assert all(c["label"].endswith("(unreliable)") for c in label["confidences"])


def test_lungs_removed_endpoint_gives_the_counterfactual(client, example_png):
    text, blanked = client.predict(handle_file(str(example_png)), api_name="/lungs_removed")
    assert text.startswith("With the lungs removed") and blanked


def test_bad_upload_is_an_error_and_the_app_keeps_serving(client, tmp_path, example_png):
    bogus = tmp_path / "report.pdf"
    bogus.write_bytes(b"%PDF-1.4 not an x-ray" * 50)
    with pytest.raises(Exception, match="not an image"):
        client.predict(handle_file(str(bogus)), api_name="/classify")
    label, *_ = client.predict(handle_file(str(example_png)), "cxr-effnet-lite0", "LayerCAM", "Normal", 0.3, api_name="/classify")
    assert label["label"] in LABELS


def test_segment_endpoint_needs_only_the_image(client, example_dicom):
    overlay, measures, notes, probabilities = client.predict(handle_file(str(example_dicom)), api_name="/segment")
    assert overlay
    rows = {row[0]: row for row in measures["data"]}
    # the example's PixelSpacing (0.168 mm for 1024 px) makes a 17 cm film: no cm² is better than a wrong one
    assert rows["both lungs"][1] and not rows["both lungs"][2]
    assert "lung-unet-mobilenetv2" in notes and "resized without updating its spacing" in notes


def test_segment_endpoint_refuses_a_mask_of_another_shape_and_names_a_resize(client, example_dicom, tmp_path):
    import numpy as np
    from PIL import Image

    wide, small = tmp_path / "wide.png", tmp_path / "small.png"
    lungs = np.zeros((256, 256), np.uint8)
    lungs[60:200, 40:110] = lungs[60:200, 146:216] = 255
    Image.fromarray(lungs[:128]).save(wide)
    Image.fromarray(lungs).save(small)
    with pytest.raises(Exception, match="shapes differ"):
        client.predict(handle_file(str(example_dicom)), "lung-unet-mobilenetv2", handle_file(str(wide)), api_name="/segment")
    _, measures, notes, _ = client.predict(handle_file(str(example_dicom)), "lung-unet-mobilenetv2", handle_file(str(small)),
                                           api_name="/segment")
    assert "Your mask is 256x256 pixels and the image 1024x1024" in notes
    assert any(row[0] == "Dice vs your mask" for row in measures["data"])


def test_zeroshot_endpoint_needs_only_the_image(client, example_png):
    label, notes = client.predict(handle_file(str(example_png)), api_name="/zeroshot")
    assert {c["label"] for c in label["confidences"]} == set(LABELS)
    assert "prompts **clinical**" in notes


def test_detect_endpoint_needs_only_the_image(client, example_dicom):
    overlay, boxes, notes, preprocessed = client.predict(handle_file(str(example_dicom)), api_name="/detect")
    assert overlay and "opacity-frcnn-mobilenetv2" in notes
    assert all(len(row) == 8 for row in boxes["data"])


def test_detect_draws_no_slivers_on_any_example(client):
    from cxr_demo.io import examples

    for example in examples.paths():
        _, boxes, _, _ = client.predict(handle_file(example), "opacity-frcnn-mobilenetv2", 0.05, api_name="/detect")
        for row in boxes["data"]:
            x0, y0, x1, y1 = map(float, row[3:7])
            assert min(x1 - x0, y1 - y0) >= 8, f"{example}: box {row} is a sliver"


def test_compare_endpoint_needs_only_the_image(client, example_png):
    gallery, table, notes = client.predict(handle_file(str(example_png)), api_name="/compare")
    assert len(gallery) >= 2 and "agreement" in notes
    assert set(table) >= {"headers", "data"} and "__type__" not in table  # a plain table, not a component update
    assert table["headers"][:4] == ["model", "kind", "reads", "top class"]


@pytest.mark.parametrize("task", ["classify", "segment", "detect"])
def test_compare_endpoint_serves_every_task_with_its_models(client, example_dicom, task):
    from cxr_demo.tasks import compare

    models = compare.candidates(task)[:2]  # the shipped zoo has one detector: Compare shows it alone
    gallery, table, _ = client.predict(handle_file(str(example_dicom)), task, models, api_name="/compare")
    assert [row[0] for row in table["data"]] == models and len(gallery) == len(models)


def test_every_endpoint_output_is_named(client):
    api = client.view_api(print_info=False, return_format="dict")
    for endpoint, info in api["named_endpoints"].items():
        for output in info["returns"]:
            assert not output["label"].startswith("value_"), f"{endpoint} returns an unnamed output"


def test_the_load_tests_browser_like_client_gets_answers_refusals_and_a_repeat_marked_as_reused(running_app, example_png, document_png):
    from cxr_demo.loadtest import BrowserLikeClient, InputRefused

    browser = BrowserLikeClient(running_app, BrowserLikeClient.endpoint_defaults(running_app))
    label, overlay, *_ = browser.predict(str(example_png), api_name="/classify")
    assert label["label"] in LABELS and overlay["url"]
    again = browser.predict(str(example_png), api_name="/classify")
    assert again[1]["url"] == overlay["url"]  # the same picture, served from the same cached file
    assert "Same image and settings" in again[3]
    with pytest.raises(InputRefused, match="does not look like a chest X-ray"):
        browser.predict(str(document_png), api_name="/segment")
