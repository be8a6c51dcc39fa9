"""Zero-shot classification with open_clip models: prompt sets, cached text embeddings, and prompt-set scoring.

    result = zeroshot.predict(xray, prompt_set=zeroshot.PRESETS["clinical"])
    scores = zeroshot.score_prompt_sets(loaded, [PRESETS["clinical"], PRESETS["naive"]], sample)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cxr_demo import zoo
from cxr_demo.intake.lungs import Lungs, crop_to_box, find_lungs
from cxr_demo.io import InvalidImage, XRay, read_xray
from cxr_demo.io.preprocess import model_input
from cxr_demo.io.recent import Recent
from cxr_demo.tasks.memo import remembered
from cxr_demo.tasks.metrics import classification_report

NEGATION = "no {}"  # CheXzero's negative prompt for each positive one


@dataclass(frozen=True)
class PromptSet:
    """Prompts per class, filled into every template; with `contrast`, each class is scored as "{}" against "no {}"."""

    name: str
    prompts: dict[str, tuple[str, ...]]
    templates: tuple[str, ...] = ("{}",)
    contrast: bool = False
    description: str = ""

    def __post_init__(self):
        empty = [label for label, lines in self.prompts.items() if not lines]
        if empty:
            raise ValueError(f"Prompt set {self.name!r}: give at least one prompt for {', '.join(empty)}.")
        bad = [t for t in self.templates if t.count("{}") != 1]
        if bad or not self.templates:
            raise ValueError(f"Each template needs exactly one {{}} where the prompt goes; fix {bad[0] if bad else 'the empty template list'!r}.")

    def __hash__(self) -> int:  # the prompts are a dict: hash its items, so a request with this set can be remembered
        return hash((self.name, tuple(self.prompts.items()), self.templates, self.contrast))

    def texts(self, label: str, negative: bool = False) -> list[str]:
        prompts = [NEGATION.format(p) for p in self.prompts[label]] if negative else self.prompts[label]
        return [template.format(p) for p in prompts for template in self.templates]

    @classmethod
    def from_text(cls, name: str, prompts: dict[str, str], templates: str = "{}", contrast: bool = False) -> "PromptSet":
        """From what a user typed: one prompt or template per line; blank lines are ignored."""
        lines = lambda text: tuple(line.strip() for line in (text or "").splitlines() if line.strip())  # noqa: E731
        return cls(name, {label: lines(text) for label, text in prompts.items()}, lines(templates) or ("{}",), contrast)

    def as_text(self) -> tuple[dict[str, str], str]:
        return {label: "\n".join(p) for label, p in self.prompts.items()}, "\n".join(self.templates)


PRESETS: dict[str, PromptSet] = {
    p.name: p for p in [
        PromptSet("clinical", {
            "COVID": ("bilateral peripheral ground-glass opacities and consolidation typical of COVID-19 pneumonia",
                      "multifocal airspace disease in an adult, consistent with SARS-CoV-2 infection"),
            "Normal": ("clear lungs with no consolidation, effusion or pneumothorax", "a normal adult chest"),
            "Viral Pneumonia": ("viral pneumonia with perihilar interstitial infiltrates in a child",
                                "peribronchial cuffing and streaky perihilar opacities of a pediatric viral infection"),
        }, templates=("a chest x-ray showing {}", "findings: {}"), description="Careful, report-like wording with an ensemble of templates."),
        PromptSet("naive", {
            "COVID": ("covid",), "Normal": ("normal",), "Viral Pneumonia": ("pneumonia",),
        }, templates=("a photo of {}",), description="One word per class in a generic photo template."),
        PromptSet("bad", {
            "COVID": ("a healthy person",), "Normal": ("an infection",), "Viral Pneumonia": ("an adult",),
        }, templates=("{}",), description="Deliberately misleading: each class is described by words that fit another class."),
        PromptSet("chexzero", {
            "COVID": ("covid-19 pneumonia",), "Normal": ("abnormality",), "Viral Pneumonia": ("viral pneumonia in a child",),
        }, templates=("{}",), contrast=True,
            description="CheXzero-style pairs: each class is '{}' against 'no {}' (Normal is 'no abnormality')."),
    ]
}


class TextEmbeddingCache:
    """Normalised text embeddings per (model, text), least recently used first out. Thread-safe."""

    def __init__(self, max_items: int = 8192):
        self._recent = Recent(max_items)
        self.hits = self.misses = 0

    def embed(self, loaded: zoo.Loaded, texts: list[str]) -> torch.Tensor:
        name = loaded.spec.name
        vectors = {text: self._recent.get((name, text)) for text in dict.fromkeys(texts)}
        missing = [text for text, vector in vectors.items() if vector is None]
        self.hits += len(texts) - len(missing)  # statistics for tests and the bench; a lost update under threads is harmless
        self.misses += len(missing)
        if missing:
            with loaded.lock, torch.inference_mode():
                embedded = loaded.module.encode_text(missing)
            for text, vector in zip(missing, embedded):
                self._recent.put((name, text), vector)
                vectors[text] = vector
        return torch.stack([vectors[t] for t in texts])

    def clear(self) -> None:
        self._recent.clear()
        self.hits = self.misses = 0


TEXT_CACHE = TextEmbeddingCache()


def class_embeddings(loaded: zoo.Loaded, prompt_set: PromptSet, negative: bool = False) -> torch.Tensor:
    """One embedding per class: the renormalised mean over its prompts x templates (a prompt ensemble)."""
    labels = model_labels(loaded)
    missing = [label for label in labels if label not in prompt_set.prompts]
    if missing:
        raise ValueError(f"Prompt set {prompt_set.name!r} has no prompts for {', '.join(missing)} ({loaded.spec.name} knows {labels}).")
    rows = [TEXT_CACHE.embed(loaded, prompt_set.texts(label, negative)).mean(0) for label in labels]
    return F.normalize(torch.stack(rows), dim=-1)


def model_labels(loaded: zoo.Loaded) -> list[str]:
    return list(loaded.config.get("label_names") or loaded.spec.labels)


def probabilities(image_embeddings: torch.Tensor, loaded: zoo.Loaded, prompt_set: PromptSet, temperature: float = 1.0) -> torch.Tensor:
    """(N, classes) probabilities. Temperature divides the model's own logit scale: >1 flattens, <1 sharpens."""
    if temperature <= 0:
        raise ValueError("Temperature must be above 0.")
    scale = float(loaded.module.logit_scale) / temperature
    positive = scale * image_embeddings @ class_embeddings(loaded, prompt_set).T
    if not prompt_set.contrast:
        return positive.softmax(-1)
    negative = scale * image_embeddings @ class_embeddings(loaded, prompt_set, negative=True).T
    per_class = torch.sigmoid(positive - negative)  # softmax over the ("{}", "no {}") pair
    return per_class / per_class.sum(-1, keepdim=True)


def image_input(xray: XRay, loaded: zoo.Loaded, lungs: Lungs | None = None) -> torch.Tensor:
    """(1, 1, H, W) for a grayscale tower; (1, 3, H, W) with per-channel normalisation for an RGB CLIP.
    A tower trained on lung crops gets the lung crop (from `lungs`, the shared intake's mask, when given)."""
    spec = loaded.spec
    size, steps = (spec.input_size, spec.input_size), loaded.options.get("preprocess", "none")
    pixels = xray.pixels
    if loaded.options.get("crop", "none") == "lungs":
        pixels = crop_to_box(pixels, (lungs or find_lungs(xray)).box)
    if len(spec.mean) == 1:
        return model_input(pixels, size, spec.mean, spec.std, steps)
    x = model_input(pixels, size, (0.0,), (1.0,), steps).expand(-1, len(spec.mean), -1, -1)
    return (x - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)


def embed_images(loaded: zoo.Loaded, x: torch.Tensor) -> torch.Tensor:
    with loaded.lock, torch.inference_mode():
        return loaded.module.encode_image(x)


@dataclass(frozen=True)
class ZeroShotResult:
    model: str
    prompt_set: str
    probabilities: dict[str, float]
    latency_ms: float
    warnings: tuple[str, ...] = ()

    @property
    def top_label(self) -> str:
        return max(self.probabilities, key=self.probabilities.get)


@remembered
def predict(xray: XRay, model: str | None = None, prompt_set: PromptSet | None = None, temperature: float = 1.0,
            lungs: Lungs | None = None) -> ZeroShotResult:
    loaded = zoo.load(model or zoo.default("zeroshot").name)
    prompt_set = prompt_set or PRESETS["clinical"]
    start = time.perf_counter()
    probs = probabilities(embed_images(loaded, image_input(xray, loaded, lungs)), loaded, prompt_set, temperature)[0]
    latency = (time.perf_counter() - start) * 1000
    return ZeroShotResult(loaded.spec.name, prompt_set.name, dict(zip(model_labels(loaded), probs.tolist())), latency, tuple(xray.warnings))


@dataclass(frozen=True)
class LabelledSample:
    """Images with their class names: the zoo's sample folder, a user's folder, or a test split."""

    paths: tuple[Path, ...]
    labels: tuple[str, ...]

    @classmethod
    def from_folder(cls, root: str | Path, per_class: int | None = None) -> "LabelledSample":
        """`<root>/<Class>/*.png` (or `<Class>/images/*`); every readable image file, sorted, at most `per_class` each."""
        root = Path(root)
        if not root.is_dir():
            raise InvalidImage(f"{root} is not a folder of class folders.")
        paths, labels = [], []
        for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in {".png", ".jpg", ".jpeg", ".dcm", ".bmp", ".tif", ".tiff"})
            for f in files[:per_class]:
                paths.append(f)
                labels.append(folder.name)
        if not paths:
            raise InvalidImage(f"No images under {root}: expected one sub-folder per class.")
        return cls(tuple(paths), tuple(labels))


_IMAGE_CACHE = Recent(1024)  # (model, file) -> embedding: a playground sample is tens of images, each a few hundred floats


def sample_embeddings(loaded: zoo.Loaded, sample: LabelledSample, batch_size: int = 32) -> torch.Tensor:
    """Image embeddings of a sample, cached per model and file, so re-scoring prompts costs only the text side."""
    key = lambda p: (loaded.spec.name, str(p))  # noqa: E731
    vectors = {p: _IMAGE_CACHE.get(key(p)) for p in sample.paths}
    todo = [p for p, vector in vectors.items() if vector is None]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        batch = torch.cat([image_input(read_xray(p), loaded) for p in chunk])
        for path, vector in zip(chunk, embed_images(loaded, batch)):
            _IMAGE_CACHE.put(key(path), vector)
            vectors[path] = vector
    return torch.stack([vectors[p] for p in sample.paths])


@dataclass(frozen=True)
class PromptSetScore:
    prompt_set: str
    report: dict = field(repr=False)

    @property
    def macro_f1(self) -> float:
        return self.report["macro_f1"]

    @property
    def accuracy(self) -> float:
        return self.report["accuracy"]


def score_prompt_sets(loaded: zoo.Loaded, prompt_sets: list[PromptSet], sample: LabelledSample,
                      temperature: float = 1.0) -> list[PromptSetScore]:
    """Accuracy, macro-F1, per class and confusion matrix for each prompt set on the same labelled images."""
    labels = model_labels(loaded)
    unknown = sorted(set(sample.labels) - set(labels))
    if unknown:
        raise InvalidImage(f"The sample has classes {unknown} that {loaded.spec.name} does not know ({labels}).")
    embeddings = sample_embeddings(loaded, sample)
    targets = torch.tensor([labels.index(label) for label in sample.labels])
    scores = []
    for prompt_set in prompt_sets:
        probs = probabilities(embeddings, loaded, prompt_set, temperature)
        scores.append(PromptSetScore(prompt_set.name, classification_report(probs.clamp_min(1e-12).log(), targets, labels)))
    return scores


def spread(scores: list[PromptSetScore]) -> float:
    """Best minus worst macro-F1: how much the wording alone moves the result."""
    values = [s.macro_f1 for s in scores]
    return float(np.max(values) - np.min(values)) if values else 0.0
