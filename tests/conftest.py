"""Shared fixtures: the shipped example images, synthetic bad inputs, tiny random models, a running app."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import shutil
import subprocess
from pathlib import Path

import pytest
import timm
import torch

from cxr_demo import serve, zoo
from cxr_demo.zoo import catalog

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"
SHARED_DATA = REPO.parent / "shared" / "data"
LABELS = ["COVID", "Normal", "Viral Pneumonia"]

torch.set_num_threads(2)

needs_shared_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (it sits beside the repo in CI and dev machines)"
)


@pytest.fixture(scope="session")
def example_png() -> Path:
    return EXAMPLES / "covid-1000.png"


@pytest.fixture(scope="session")
def example_dicom() -> Path:
    return EXAMPLES / "siim-cr-jpeg-baseline.dcm"


@pytest.fixture(scope="session")
def document_png(tmp_path_factory) -> Path:
    """A page of text, as a user might upload by mistake."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (850, 1100), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    draw.text((60, 50), "Discharge summary", fill=0, font=ImageFont.load_default(size=40))
    for line in range(30):
        draw.text((60, 130 + 30 * line), f"Line {line}: the patient was seen in clinic and the plan was discussed at length.", fill=0, font=font)
    path = tmp_path_factory.mktemp("document") / "letter.png"
    page.save(path)
    return path


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory) -> Path:
    """A tiny dataset in the COVID-19 Radiography Database layout, built from the example PNGs."""
    root = tmp_path_factory.mktemp("cxr-3class")
    sources = {"COVID": "covid-1000.png", "Normal": "normal-1062.png", "Viral Pneumonia": "viral-pneumonia-person1007.png"}
    for label, name in sources.items():
        folder = root / label / "images"
        folder.mkdir(parents=True)
        for i in range(10):
            stem = f"{label}-person{i}_virus_{i}" if label == "Viral Pneumonia" else f"{label}-{i}"
            shutil.copy(EXAMPLES / name, folder / f"{stem}.png")
    return root


def export_random_classifier(folder: Path, arch: str, temperature: float = 1.0, **model_args) -> Path:
    """A randomly initialised timm classifier exported in the zoo's checkpoint layout."""
    from huggingface_hub import ModelCardData

    from train.export import export_checkpoint

    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=len(LABELS), in_chans=1, **model_args)
    config = {
        "architecture": arch, "num_classes": len(LABELS), "label_names": LABELS,
        "model_args": {"in_chans": 1, **model_args},
        "cxr_demo": {"task": "classify", "preprocess": "equalize", "temperature": temperature},
    }
    metrics = {"task": "classify", "test": {"macro_f1": 0.0}}
    return export_checkpoint(folder, model.state_dict(), config, metrics, "# random test model", ModelCardData(license="apache-2.0"), half=False)


def tiny_zoo_toml(root: Path, entries: list[dict]) -> Path:
    lines = []
    for entry in entries:
        lines.append("[[model]]")
        for key, value in entry.items():
            rendered = str(value).lower() if isinstance(value, bool) else repr(value) if isinstance(value, (int, float)) else f'"{value}"' if isinstance(value, str) else "[" + ", ".join(f'"{v}"' if isinstance(v, str) else str(v) for v in value) + "]"
            lines.append(f"{key} = {rendered}")
    path = root / "zoo.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


SHIPPED_LUNG_SEGMENTER = dict(name="lung-unet-mobilenetv2-lite", task="segment", arch="unet", labels=["lung"], input_size=224, mean=[0.5],
                              std=[0.5], source=f"local:{REPO / 'weights' / 'lung-unet-mobilenetv2-lite'}", default=True)


@pytest.fixture(autouse=True)
def fresh_intake():
    """Each test computes its own intake: a cached verdict from another test's zoo must not leak in."""
    from cxr_demo.intake import forget

    forget()
    yield
    forget()


@pytest.fixture(scope="session")
def tiny_zoo(tmp_path_factory) -> zoo.Zoo:
    """A zoo of small random models: a CNN, a ViT, and a Hub-only entry that cannot be reached offline."""
    root = tmp_path_factory.mktemp("zoo")
    export_random_classifier(root / "tiny-cnn", "mobilenetv2_035")
    export_random_classifier(root / "tiny-vit", "vit_tiny_patch16_224", img_size=96)
    entries = [
        dict(name="tiny-cnn", task="classify", arch="mobilenetv2_035", labels=LABELS, input_size=224, mean=[0.5], std=[0.5],
             source=f"local:{root / 'tiny-cnn'}", default=True),
        dict(name="tiny-vit", task="classify", arch="vit_tiny_patch16_224", labels=LABELS, input_size=96, mean=[0.5], std=[0.5],
             source=f"local:{root / 'tiny-vit'}"),
        dict(name="hub-only", task="classify", arch="mobilenetv2_035", labels=LABELS, source="hf-hub:cxr-demo/does-not-exist@main"),
        SHIPPED_LUNG_SEGMENTER,  # the shared intake stage needs a lung mask
    ]
    return zoo.Zoo.from_toml(tiny_zoo_toml(root, entries))


@pytest.fixture
def use_zoo(monkeypatch):
    """Make the process-wide zoo a given one for the duration of a test."""
    def install(z: zoo.Zoo) -> zoo.Zoo:
        monkeypatch.setattr(catalog, "_ZOO", z)
        return z
    return install


@pytest.fixture(scope="session")
def running_app():
    """`python app.py` on a free localhost port, with the shipped zoo; yields its URL."""
    log = open(REPO / ".pytest_cache" / "app.log", "w") if (REPO / ".pytest_cache").is_dir() else subprocess.DEVNULL
    try:
        with serve.running_app(log) as app:
            yield app.url
    except serve.AppDidNotStart as error:
        pytest.fail(str(error))


TINY_CLIP_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def clip_zoo(tmp_path_factory) -> zoo.Zoo:
    """A randomly initialised tiny open_clip model in the local-dir layout (open_clip's own tokenizer, no network)."""
    import json

    import open_clip
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("clip")
    folder = root / "tiny-clip"
    folder.mkdir()
    torch.manual_seed(0)
    model = open_clip.CLIP(**TINY_CLIP_CFG)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, folder / "model.safetensors")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_CLIP_CFG}))
    (folder / "config.json").write_text(json.dumps({"label_names": LABELS, "cxr_demo": {"task": "zeroshot", "preprocess": "none"}}))
    entries = [dict(name="tiny-clip", task="zeroshot", arch="open_clip", labels=LABELS, input_size=32, mean=[0.5], std=[0.5],
                    source=f"local:{folder}", default=True),
               dict(name="hub-clip", task="zeroshot", arch="open_clip", labels=LABELS, source="hf-hub:cxr-demo/no-such-clip@main"),
               SHIPPED_LUNG_SEGMENTER]
    return zoo.Zoo.from_toml(tiny_zoo_toml(root, entries))
