"""Batch mode: one CSV row per file found, bad files as plain-message rows, flagged images held back, no patient data."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import gradio as gr
import pydicom
import pytest

from cxr_demo import batch, zoo
from cxr_demo.ui import batch_rows
from cxr_demo.intake import check
from cxr_demo.intake import stage as intake
from cxr_demo.io import InvalidImage, read_xray
from tests.conftest import EXAMPLES

REFUSED = check.MESSAGES["not a chest X-ray"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory, example_png, example_dicom):
    """Two good PNGs, a DICOM in a nested subfolder, a truncated PNG, a text file named .png, and files to skip."""
    root = tmp_path_factory.mktemp("batch")
    shutil.copy(example_png, root / "a.png")
    (root / "nested" / "deeper").mkdir(parents=True)
    shutil.copy(EXAMPLES / "normal-1062.png", root / "nested" / "b.png")
    shutil.copy(example_dicom, root / "nested" / "deeper" / "film.dcm")
    (root / "truncated.png").write_bytes(example_png.read_bytes()[:3000])
    (root / "letter.png").write_text("Dear colleague, please find the report attached.\n")
    (root / "notes.txt").write_text("not an image, not found")
    (root / ".hidden").mkdir()
    shutil.copy(example_png, root / ".hidden" / "copy.png")
    shutil.copy(example_png, root / ".dotfile.png")
    return root


def expected_message(path) -> str:
    with pytest.raises(InvalidImage) as error:
        read_xray(path)
    return str(error.value)


def test_find_images_walks_subfolders_sorted_and_skips_hidden_and_non_images(folder, tmp_path, example_dicom):
    found = [str(p.relative_to(folder)) for p in batch_rows.find_images(folder)]
    assert found == ["a.png", "letter.png", "nested/b.png", "nested/deeper/film.dcm", "truncated.png"]
    shutil.copy(example_dicom, tmp_path / "IM0001")  # a PACS export without a suffix
    (tmp_path / "LICENSE").write_text("MIT")
    assert [p.name for p in batch_rows.find_images(tmp_path)] == ["IM0001"]


def test_classify_gives_one_row_per_file_and_bad_files_a_plain_message(folder):
    rows = batch_rows.run_batch(batch_rows.find_images(folder), "classify", root=folder)
    by_file = {row["file"]: row for row in rows}
    assert list(by_file) == ["a.png", "letter.png", "nested/b.png", "nested/deeper/film.dcm", "truncated.png"]
    for bad in ("letter.png", "truncated.png"):
        row = by_file[bad]
        assert row["status"] == "error" and row["error"] == expected_message(folder / bad)
        assert "Traceback" not in row["error"] and "p_COVID" not in row
    labels = zoo.get(zoo.default("classify").name).labels
    for good in ("a.png", "nested/b.png", "nested/deeper/film.dcm"):
        row = by_file[good]
        assert row["status"] in ("ok", "flagged") and row["error"] == "" and row["check"]
        assert sum(row[f"p_{label}"] for label in labels) == pytest.approx(1.0, abs=1e-4)
        assert row["top_label"] == max(labels, key=lambda label: row[f"p_{label}"])


def test_one_failing_prediction_does_not_stop_the_run(folder, monkeypatch):
    def broken(xray, seen, model):
        raise RuntimeError("CUDA out of memory at 0x7f3a")  # internal detail that must not reach the CSV
    monkeypatch.setitem(batch_rows.PREDICTORS, "classify", broken)
    rows = batch_rows.run_batch([folder / "a.png", folder / "nested" / "b.png"], "classify")
    assert [row["status"] for row in rows] == ["error", "error"]
    assert rows[0]["error"].startswith("Something went wrong") and "0x7f3a" not in rows[0]["error"]


def test_segment_and_detect_fill_their_columns(folder):
    seg, = batch_rows.run_batch([folder / "a.png"], "segment")
    assert seg["status"] == "ok" and seg["model"] == zoo.default("segment").name
    assert 0.05 < seg["lung_share"] < 0.6 and seg["area_px"] == seg["right_px"] + seg["left_px"] > 0
    det, = batch_rows.run_batch([folder / "nested" / "deeper" / "film.dcm"], "detect")
    assert det["status"] == "ok" and det["model"] == zoo.default("detect").name
    boxes = [b.split() for b in det["boxes"].split("; ")] if det["boxes"] else []
    assert len(boxes) == det["n_boxes"] and all(len(b) == 5 and float(b[0]) < float(b[2]) for b in boxes)


def test_a_flagged_image_is_not_predicted_unless_analysed_anyway(folder, monkeypatch):
    monkeypatch.setattr(intake, "check", lambda xray, lungs, model=None: check.Verdict(True, REFUSED, "not a chest X-ray"))
    held, = batch_rows.run_batch([folder / "a.png"], "classify")
    assert held["status"] == "flagged" and held["check"] == REFUSED
    assert "top_label" not in held and not any(key.startswith("p_") for key in held)
    anyway, = batch_rows.run_batch([folder / "a.png"], "classify", analyse_anyway=True)
    assert anyway["status"] == "flagged" and anyway["check"] == REFUSED and anyway["top_label"]


def test_the_csv_holds_no_dicom_patient_fields(tmp_path, example_dicom):
    header = pydicom.dcmread(example_dicom, stop_before_pixels=True)
    secrets = [str(header.PatientName), str(header.PatientID)]
    assert all(secrets)
    for task in batch_rows.TASKS:
        out = tmp_path / f"{task}.csv"
        batch.main([str(example_dicom.parent), "--task", task, "--out", str(out)])
        text = out.read_text()
        assert "siim-cr-jpeg-baseline.dcm" in text and not any(secret in text for secret in secrets)


def test_cli_writes_every_row_and_ends_with_the_counts_as_json(folder, tmp_path, capsys):
    out = tmp_path / "out.csv"
    batch.main([str(folder), "--task", "classify", "--out", str(out)])
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    with out.open(newline="") as file:
        rows = list(csv.DictReader(file))
    ok = sum(row["status"] == "ok" for row in rows)
    assert len(rows) == 5 and [row["file"] for row in rows] == [str(p.relative_to(folder)) for p in batch_rows.find_images(folder)]
    assert last == {"files": 5, "ok": ok, "flagged": 3 - ok, "errors": 2, "out": str(out), "task": "classify",
                    "model": zoo.default("classify").name}


def test_cli_refuses_zeroshot_and_unknown_models(folder, tmp_path):
    with pytest.raises(SystemExit):
        batch.main([str(folder), "--task", "zeroshot", "--out", str(tmp_path / "z.csv")])
    with pytest.raises(SystemExit):
        batch.main([str(folder), "--task", "classify", "--model", "no-such-model", "--out", str(tmp_path / "x.csv")])
    assert not (tmp_path / "x.csv").exists()


def test_the_classify_tab_takes_several_files_and_gives_a_table_and_a_csv(tmp_path, example_png, example_dicom):
    from cxr_demo.ui.classify_tab import classify_files

    broken = tmp_path / "broken.png"
    broken.write_bytes(example_png.read_bytes()[:300])
    table, csv_path = classify_files([str(example_png), str(example_dicom), str(broken)])
    assert list(table["file"]) == [example_png.name, example_dicom.name, "broken.png"]
    assert list(table["status"])[:2] != ["error", "error"] and table["status"].iloc[2] == "error" and table["error"].iloc[2]
    text = Path(csv_path).read_text()
    header = pydicom.dcmread(example_dicom, stop_before_pixels=True)
    assert str(header.get("PatientID", "")) not in ("",) and str(header.PatientID) not in text
    with pytest.raises(gr.Error, match="Choose one or more"):
        classify_files([])
