"""classify.predict: calibrated probabilities and a heatmap, through the zoo."""
from __future__ import annotations

import numpy as np
import pytest

from cxr_demo import zoo
from cxr_demo.io import read_xray
from cxr_demo.tasks import classify
from tests.conftest import LABELS, export_random_classifier, tiny_zoo_toml


@pytest.fixture
def xray(example_png):
    return read_xray(example_png)


@pytest.mark.parametrize("model", ["tiny-cnn", "tiny-vit"])
def test_probabilities_and_heatmap(tiny_zoo, use_zoo, xray, model):
    use_zoo(tiny_zoo)
    result = classify.predict(xray, model, "GradCAM")
    assert list(result.probabilities) == LABELS
    assert sum(result.probabilities.values()) == pytest.approx(1, abs=1e-5)
    assert result.top_label == max(result.probabilities, key=result.probabilities.get)
    assert result.target_label == result.top_label
    assert result.heatmap is not None and np.isfinite(result.heatmap).all()


def test_default_model_and_no_heatmap(tiny_zoo, use_zoo, xray):
    use_zoo(tiny_zoo)
    result = classify.predict(xray, None, method=None)
    assert result.model == "tiny-cnn" and result.heatmap is None


def test_chosen_target_is_explained(tiny_zoo, use_zoo, xray):
    use_zoo(tiny_zoo)
    assert classify.predict(xray, "tiny-cnn", "GradCAM", "Viral Pneumonia").target_label == "Viral Pneumonia"
    with pytest.raises(ValueError, match="not one of this model's classes"):
        classify.predict(xray, "tiny-cnn", "GradCAM", "Pneumothorax")


def test_temperature_softens_probabilities(tmp_path, xray, use_zoo):
    export_random_classifier(tmp_path / "t1", "mobilenetv2_035", temperature=1.0)
    export_random_classifier(tmp_path / "t5", "mobilenetv2_035", temperature=5.0)
    entries = [dict(name=n, task="classify", arch="mobilenetv2_035", labels=LABELS, source=f"local:{tmp_path / n}") for n in ("t1", "t5")]
    use_zoo(zoo.Zoo.from_toml(tiny_zoo_toml(tmp_path, entries)))
    sharp = classify.predict(xray, "t1", None).probabilities
    soft = classify.predict(xray, "t5", None).probabilities
    assert max(soft.values()) < max(sharp.values())
    assert max(soft, key=soft.get) == max(sharp, key=sharp.get)


def test_dicom_goes_through_the_same_path(tiny_zoo, use_zoo, example_dicom):
    use_zoo(tiny_zoo)
    result = classify.predict(read_xray(example_dicom), "tiny-cnn", "EigenCAM")
    assert result.heatmap.shape == (224, 224)
