"""The model zoo: typed specs read from `weights/zoo.toml`, resolved local-first, loaded lazily from safetensors.

    from cxr_demo import zoo
    spec = zoo.default("classify")
    model = zoo.load(spec.name)      # cached; raises ModelUnavailable with a plain reason
"""
from __future__ import annotations

import json
import os
import threading
import tomllib
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

from cxr_demo.zoo.gate import FeatureGate, split_state
from cxr_demo.zoo.loaders import LOADERS, check_normalisation
from cxr_demo.zoo.spec import Loaded, ModelSpec, ModelUnavailable, UnknownModel
from cxr_demo.zoo.task_table import KINDS

REPO_ROOT = Path(__file__).resolve().parents[2]
ZOO_FILE = Path(os.environ.get("CXR_DEMO_ZOO", REPO_ROOT / "weights" / "zoo.toml"))
WEIGHTS_FILE = "model.safetensors"
# open_clip's Hub layout; its weights are read only when the repo has a safetensors copy
OPEN_CLIP_FILES = ("open_clip_config.json", "open_clip_model.safetensors")
LFS_POINTER = b"version https://git-lfs.github.com/spec/v1"
# a cxr-demo LiT export (`train.clip`, `train.publish`): open_clip's layout plus the text tower's config and tokenizer
LIT_FILES = ("config.json", WEIGHTS_FILE, OPEN_CLIP_FILES[0], "text/config.json", "tokenizer.json", "tokenizer_config.json",
             "vocab.txt", "special_tokens_map.json")


class Zoo:
    def __init__(self, specs: list[ModelSpec]):
        names = [s.name for s in specs]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"Duplicate model names in the zoo: {sorted(duplicates)}")
        self._specs = {s.name: s for s in specs}
        self._cache: dict[str, Loaded] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_toml(cls, path: str | Path = ZOO_FILE) -> "Zoo":
        with open(path, "rb") as handle:
            entries = tomllib.load(handle).get("model", [])
        return cls([ModelSpec.from_dict(e) for e in entries])

    def add(self, spec: ModelSpec) -> None:
        """List one more model at run time (a comparison table's candidate checkpoint); names stay unique."""
        if spec.name in self._specs:
            raise ValueError(f"The zoo already has a model named {spec.name!r}.")
        self._specs[spec.name] = spec

    def specs(self, task: str | None = None) -> list[ModelSpec]:
        return [s for s in self._specs.values() if task is None or s.task == task]

    def names(self, task: str | None = None) -> list[str]:
        return [s.name for s in self.specs(task)]

    def get(self, name: str) -> ModelSpec:
        try:
            return self._specs[name]
        except KeyError:
            raise UnknownModel(f"No model named {name!r} in the zoo. Known models: {', '.join(self._specs) or 'none'}.") from None

    def default(self, task: str) -> ModelSpec:
        specs = self.specs(task)
        if not specs:
            raise UnknownModel(f"The zoo has no {task} model. Add one to {ZOO_FILE.name}.")
        return next((s for s in specs if s.default), specs[0])

    def load(self, name: str) -> Loaded:
        spec = self.get(name)
        with self._lock:  # one load per model even when several requests arrive together
            if name not in self._cache:
                folder = resolve(spec)
                config = _read_config(folder, spec)
                check_normalisation(spec, config)
                state, gate_state = split_state(load_weights(folder))
                module = LOADERS[spec.task](spec, config, state, folder)
                gate = FeatureGate.from_state(gate_state, config.get("cxr_demo", {}).get("gate_threshold"))
                self._cache[name] = Loaded(spec, module.eval(), config, folder, gate)
            return self._cache[name]

    def metrics(self, name: str) -> dict | None:
        """The checkpoint's metrics.json when it is on disk (never downloads)."""
        spec = self.get(name)
        try:
            folder = resolve(spec) if not spec.is_hub else REPO_ROOT / "weights" / name
            return json.loads((folder / "metrics.json").read_text())
        except (ModelUnavailable, OSError, json.JSONDecodeError):
            return None

    def loaded_names(self) -> list[str]:
        return list(self._cache)


def resolve(spec: ModelSpec) -> Path:
    """The folder holding the model's files: `weights/<name>/` first, then the Hub (cache, then download)."""
    local = REPO_ROOT / "weights" / spec.name
    if spec.source.startswith("local:"):
        folder = Path(spec.source.removeprefix("local:"))
        folder = folder if folder.is_absolute() else REPO_ROOT / folder
        if not (folder / WEIGHTS_FILE).is_file():
            raise ModelUnavailable(f"Model {spec.name!r}: no {WEIGHTS_FILE} in {folder}. Train it with `python -m {KINDS[spec.task]}` or fix its source in zoo.toml.")
        return folder
    if (local / WEIGHTS_FILE).is_file():
        return local
    return _download(spec)


def _download(spec: ModelSpec) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

    repo, _, revision = spec.source.removeprefix("hf-hub:").partition("@")
    fetch = lambda name: hf_hub_download(repo, name, revision=revision or None, etag_timeout=5)  # noqa: E731
    try:
        files = _zeroshot_files(fetch) if spec.task == "zeroshot" else ("config.json", WEIGHTS_FILE)
        config = [fetch(name) for name in files][0]
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as error:
        raise ModelUnavailable(
            f"Model {spec.name!r} lives on the Hugging Face Hub ({repo}) and this machine cannot reach it "
            f"({type(error).__name__}). Connect to the internet, or download it once and put its files in weights/{spec.name}/."
        ) from None
    except HfHubHTTPError as error:
        raise ModelUnavailable(
            f"Model {spec.name!r}: the Hub refused {repo}@{revision or 'main'} ({error.response.status_code if error.response is not None else 'error'}). "
            f"It may be private, renamed, or have no safetensors weights (pickled weights are never loaded)."
        ) from None
    return Path(config).parent


def _zeroshot_files(fetch) -> tuple[str, ...]:
    """A LiT export names its text tower in config.json; any other repo is read in open_clip's own Hub layout."""
    from huggingface_hub.errors import EntryNotFoundError

    try:
        config = json.loads(Path(fetch("config.json")).read_text())
    except (EntryNotFoundError, json.JSONDecodeError):
        config = {}
    return LIT_FILES if "text_tower" in config else OPEN_CLIP_FILES


def _read_config(folder: Path, spec: ModelSpec) -> dict:
    path = folder / "config.json"
    if not path.is_file() and (folder / OPEN_CLIP_FILES[0]).is_file():  # a Hub open_clip repo: labels come from zoo.toml
        return {"label_names": list(spec.labels), "cxr_demo": {"preprocess": "none"}}
    if not path.is_file():
        raise ModelUnavailable(f"Model {spec.name!r}: {path} is missing.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelUnavailable(f"Model {spec.name!r}: config.json is not valid JSON ({error}).") from None


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    """safetensors only: never unpickle a downloaded file."""
    path = folder / WEIGHTS_FILE if (folder / WEIGHTS_FILE).is_file() else folder / OPEN_CLIP_FILES[1]
    shown = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
    with open(path, "rb") as handle:
        if handle.read(len(LFS_POINTER)) == LFS_POINTER:  # a clone without git-lfs, or a download that went wrong
            raise ModelUnavailable(f"{shown} is a Git LFS pointer, not the weights: run `git lfs pull` (or download the file again).")
    try:
        state = load_file(path)
    except (SafetensorError, OSError) as error:
        raise ModelUnavailable(f"{shown} is not a readable safetensors file (truncated or corrupt: {error}). "
                               "Download it again, or retrain it with the command in its model card.") from None
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


_ZOO: Zoo | None = None


def registry() -> Zoo:
    """The process-wide zoo, read once from zoo.toml."""
    global _ZOO
    if _ZOO is None:
        _ZOO = Zoo.from_toml(ZOO_FILE)
    return _ZOO


def get(name: str) -> ModelSpec:
    return registry().get(name)


def default(task: str) -> ModelSpec:
    return registry().default(task)


def load(name: str) -> Loaded:
    return registry().load(name)


def metrics(name: str) -> dict | None:
    return registry().metrics(name)


def names(task: str | None = None) -> list[str]:
    return registry().names(task)
