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
    assert rows["both lungs"][2]  # cm², from the DICOM's pixel spacing
    assert "lung-unet-mobilenetv2" in notes


def test_zeroshot_endpoint_needs_only_the_image(client, example_png):
    label, notes = client.predict(handle_file(str(example_png)), api_name="/zeroshot")
    assert {c["label"] for c in label["confidences"]} == set(LABELS)
    assert "prompts **clinical**" in notes


def test_detect_endpoint_needs_only_the_image(client, example_dicom):
    overlay, boxes, notes, preprocessed = client.predict(handle_file(str(example_dicom)), api_name="/detect")
    assert overlay and "opacity-frcnn-mobilenetv2" in notes
    assert all(len(row) == 8 for row in boxes["data"])


def test_compare_endpoint_needs_only_the_image(client, example_png):
    gallery, table, notes = client.predict(handle_file(str(example_png)), api_name="/compare")
    assert len(gallery) >= 2 and "agreement" in notes
