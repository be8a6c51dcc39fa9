"""Deploying to a Hugging Face Space (`cxr_demo.deploy`), publishing a checkpoint (`train.publish`) and loading an `hf-hub:`
model from a real Hugging Face cache. No network: the push itself is never faked, only what can be checked offline is."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cxr_demo import deploy, serve, zoo
from cxr_demo.io import examples
from cxr_demo.zoo import catalog
from tests.conftest import LABELS, REPO, export_random_classifier, tiny_zoo_toml

NEVER_PREFIXES = ("runs/", ".venv/", "tests/", "train/", ".cache/", ".git/", ".pytest_cache/")


def dry_run(capsys, *args: str, root: Path = REPO) -> list[str]:
    assert deploy.main(["--space", "org/name", "--dry-run", "--root", str(root), *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("# ") and "files" in lines[-1]
    return [line.split("\t")[0] for line in lines if not line.startswith("#")]


def forbidden(paths: list[str]) -> list[str]:
    return [p for p in paths if p.startswith(NEVER_PREFIXES) or "__pycache__" in p or p.endswith(".pyc")]


def test_dry_run_lists_every_file_the_app_needs_and_nothing_else(capsys):
    paths = dry_run(capsys)
    assert len(paths) == len(set(paths))
    tracked = deploy.tracked_files(REPO)
    needed = {"app.py", "README.md", "requirements.txt", "weights/zoo.toml", "results/seed_experiments.json", "results/bench.json"}
    needed |= {p for p in tracked if p.startswith("cxr_demo/") and p.endswith(".py")}
    needed |= {p for p in ("results/classify_table.json", "results/segment_table.json") if p in tracked}  # the leaderboard reads them
    for example in examples.paths():  # what the UI lists, its masks and the playground's labelled sample
        rel = Path(example).relative_to(REPO).as_posix()
        needed |= {rel} | ({Path(examples.mask_for(example)).relative_to(REPO).as_posix()} if examples.mask_for(example) else set())
    needed |= {p for p in tracked if p.startswith("examples/zeroshot-sample/")}
    for spec in zoo.Zoo.from_toml(REPO / "weights" / "zoo.toml").specs():
        if not spec.is_hub:
            folder = spec.source.removeprefix("local:")
            needed |= {f"{folder}/model.safetensors", f"{folder}/README.md", f"{folder}/metrics.json"}
            needed |= {f"{folder}/{'open_clip_config.json' if spec.task == 'zeroshot' else 'config.json'}"}
    assert needed - set(paths) == set()
    assert forbidden(paths) == []
    assert all(not Path(p).is_absolute() and (REPO / p).is_file() for p in paths)


def _tiny_repo(root: Path, hub_defaults: bool) -> Path:
    """A git checkout with the app's skeleton, a tiny zoo, tracked files that must stay home and untracked junk."""
    export_random_classifier(root / "weights" / "tiny", "mobilenetv2_035")
    source = "hf-hub:cxr-demo/tiny@0123456789abcdef0123456789abcdef01234567" if hub_defaults else "local:weights/tiny"
    tiny_zoo_toml(root / "weights", [dict(name="tiny", task="classify", arch="mobilenetv2_035", labels=LABELS, source=source, default=True)])
    for rel in ("app.py", "README.md", "docs/performance.md", "requirements.txt", "cxr_demo/__init__.py", "tests/test_x.py", "train/x.py", "results/bench.json",
                "results/detect_cv/fold1.json", "examples/a.png"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    for junk in ("cxr_demo/untracked.py", "cxr_demo/__pycache__/x.pyc", "runs/tiny/last.pt", ".venv/lib/x.py", "weights/tiny/best.pt"):
        (root / junk).parent.mkdir(parents=True, exist_ok=True)
        (root / junk).write_text("junk")
    return root


def test_only_tracked_files_that_match_the_patterns_go(tmp_path, capsys):
    paths = dry_run(capsys, root=_tiny_repo(tmp_path, hub_defaults=False))
    assert set(paths) == {"app.py", "README.md", "docs/performance.md", "requirements.txt", "cxr_demo/__init__.py", "results/bench.json", "examples/a.png",
                          "weights/zoo.toml", "weights/tiny/config.json", "weights/tiny/model.safetensors", "weights/tiny/README.md",
                          "weights/tiny/metrics.json"}


def test_weights_hub_ships_no_checkpoint(tmp_path, capsys):
    paths = dry_run(capsys, "--weights", "hub", root=_tiny_repo(tmp_path, hub_defaults=True))
    assert "weights/zoo.toml" in paths and "app.py" in paths
    assert [p for p in paths if p.startswith("weights/") and p != "weights/zoo.toml"] == []


def test_weights_hub_is_refused_while_defaults_are_local(capsys):
    assert deploy.main(["--space", "org/name", "--dry-run", "--weights", "hub"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cxr-lungcrop-effnet-lite0" in err and "lung-unet-mobilenetv2-lite" in err and "python -m train.publish" in err


def test_deploy_offline_fails_with_one_clear_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "cxr_demo.deploy", "--space", "org/name"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode != 0
    assert result.stdout == "" and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot be reached" in result.stderr and "huggingface-cli login" in result.stderr and "HF_TOKEN" in result.stderr


def test_publish_offline_fails_with_one_clear_line():
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "train.publish", "cxr-lungcrop-effnet-lite0", "--repo", "org/repo"], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert "cannot be reached" in result.stderr


def test_the_app_starts_from_a_copy_of_exactly_the_upload_list(tmp_path, capsys):
    from gradio_client import Client, handle_file

    space = tmp_path / "space"
    for rel in dry_run(capsys):
        (space / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, space / rel)
    assert not (space / "train").exists() and not (space / "tests").exists()
    log = tmp_path / "app.log"
    with open(log, "w") as handle:
        try:
            with serve.running_app(handle, timeout=300, root=space) as app:
                client = Client(app.url, verbose=False)
                label, *_ = client.predict(handle_file(str(space / "examples" / "covid-1000.png")),
                                           api_name="/classify")
        except serve.AppDidNotStart as error:
            pytest.fail(f"{error}\n{log.read_text()[-3000:]}")
    confidences = {c["label"]: c["confidence"] for c in label["confidences"]}
    assert set(confidences) == set(LABELS) and label["label"] in LABELS
    assert sum(confidences.values()) == pytest.approx(1.0, abs=0.02)
    assert "Traceback" not in log.read_text()


def _hf_cache(cache: Path, repo: str, revision: str, source: Path, files=("config.json", "model.safetensors")) -> Path:
    """A Hugging Face cache as huggingface_hub writes it: blobs named by hash, snapshot symlinks, refs/main."""
    repo_dir = cache / f"models--{repo.replace('/', '--')}"
    snapshot = repo_dir / "snapshots" / revision
    snapshot.mkdir(parents=True)
    (repo_dir / "blobs").mkdir()
    for name in files:
        data = (source / name).read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / name).parent.mkdir(parents=True, exist_ok=True)
        (snapshot / name).symlink_to(os.path.relpath(blob, (snapshot / name).parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(revision)
    return snapshot


@pytest.mark.parametrize("pin", ["sha", "main"])
def test_hub_model_loads_offline_from_a_real_hf_cache(tmp_path, monkeypatch, use_zoo, pin):
    import huggingface_hub
    from huggingface_hub import constants

    revision = "0123456789abcdef0123456789abcdef01234567"
    exported = export_random_classifier(tmp_path / "export", "mobilenetv2_035")
    cache = tmp_path / "hf" / "hub"
    snapshot = _hf_cache(cache, "cxr-demo/tiny-hub", revision, exported)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))  # read at import time; hf_hub_download uses this one
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(catalog, "REPO_ROOT", tmp_path / "repo")  # no weights/tiny-hub/: the local-first path cannot answer
    calls = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kwargs):
        calls.append((repo_id, filename, kwargs.get("revision")))
        return real(repo_id, filename, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    spec = zoo.ModelSpec(name="tiny-hub", task="classify", arch="mobilenetv2_035", labels=tuple(LABELS),
                         source=f"hf-hub:cxr-demo/tiny-hub@{revision if pin == 'sha' else 'main'}")
    use_zoo(zoo.Zoo([spec]))
    loaded = zoo.load("tiny-hub")
    assert loaded.folder == snapshot
    wanted = revision if pin == "sha" else "main"
    assert calls == [("cxr-demo/tiny-hub", "config.json", wanted), ("cxr-demo/tiny-hub", "model.safetensors", wanted)]
    assert not (tmp_path / "repo" / "weights" / "tiny-hub").exists()
    import torch
    with torch.no_grad():
        assert loaded.module(torch.rand(1, 1, 224, 224)).shape == (1, len(LABELS))


def test_the_published_zero_shot_model_loads_offline_from_a_real_hf_cache(tmp_path, monkeypatch, use_zoo):
    from huggingface_hub import constants

    from cxr_demo.zoo.catalog import LIT_FILES

    revision = "89abcdef0123456789abcdef0123456789abcdef"
    cache = tmp_path / "hf" / "hub"
    snapshot = _hf_cache(cache, "cxr-demo/lit", revision, REPO / "weights" / "cxr-lit-effnet-minilm", LIT_FILES)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(catalog, "REPO_ROOT", tmp_path / "repo")  # no weights/lit-hub/: only the Hub cache can answer
    spec = zoo.ModelSpec(name="lit-hub", task="zeroshot", arch="open_clip", labels=tuple(LABELS), input_size=224,
                         source=f"hf-hub:cxr-demo/lit@{revision}")
    use_zoo(zoo.Zoo([spec]))
    loaded = zoo.load("lit-hub")
    assert loaded.folder == snapshot
    assert loaded.module.encode_text(["clear lungs"]).shape[0] == 1


def _front_matter(card) -> dict:
    return yaml.safe_load(str(card).split("---")[1])


@pytest.mark.parametrize("name, figures", [
    ("cxr-lungcrop-effnet-lite0", {"f1": ("test", "macro_f1"), "accuracy": ("test", "accuracy")}),
    ("lung-unet-mobilenetv2-lite", {"dice": ("test", "dice"), "iou": ("test", "iou")}),
    ("opacity-frcnn-mobilenetv2", {"map50": ("test", "map50"), "map": ("test", "map")}),
])
def test_publish_card_carries_model_index_from_metrics_json(name, figures):
    import json

    from train.publish import card_with_model_index

    folder = REPO / "weights" / name
    before = (folder / "README.md").read_text()
    card = card_with_model_index(folder)
    assert (folder / "README.md").read_text() == before  # built in memory; the shipped card is untouched
    meta = _front_matter(card)
    (entry,) = meta["model-index"]
    assert entry["name"] == name
    reported = {m["type"]: m["value"] for result in entry["results"] for m in result["metrics"]}
    metrics = json.loads((folder / "metrics.json").read_text())
    for metric_type, (split, key) in figures.items():
        assert reported[metric_type] == pytest.approx(metrics[split][key], abs=1e-4)
    assert meta["license"] == yaml.safe_load(before.split("---")[1])["license"]
    assert f"# {name}" in str(card)  # the card's body is kept
