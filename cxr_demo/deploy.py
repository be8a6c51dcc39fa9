"""Deploy the app to a Hugging Face Space through `huggingface_hub` (binaries go through LFS/Xet; this repo stays plain git).

    python -m cxr_demo.deploy --space org/name --dry-run     # the repo-relative paths it would upload, one per line, with sizes
    python -m cxr_demo.deploy --space org/name               # needs `huggingface-cli login` or HF_TOKEN (write access)
    python -m cxr_demo.deploy --space org/name --weights hub # checkpoints from the Hub (`python -m train.publish` first)

The upload list is computed once: git's tracked files filtered by the patterns below, so untracked files never go.
Nothing in the library imports this module.
"""
from __future__ import annotations

import argparse
import glob
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from huggingface_hub.utils import filter_repo_objects

from cxr_demo.zoo.catalog import REPO_ROOT, Zoo
from cxr_demo.zoo.spec import ModelSpec

ZOO = "weights/zoo.toml"
# what `python app.py` needs, besides the checkpoints (added per model); README.md carries the Space's front matter
APP_PATTERNS = ("app.py", "README.md", "docs/*", "requirements.txt", "LICENSE", "cxr_demo/*", ZOO, "examples/*",  # docs/: the README links there
                "results/seed_experiments.json", "results/bench.json",  # the results files the leaderboard reads
                "results/classify_table.json", "results/segment_table.json")
NEVER = ("runs/*", ".venv/*", "*/.venv/*", ".cache/*", "*__pycache__*", "*.pyc", ".git/*", ".pytest_cache/*", "tests/*", "train/*",
         "*.egg-info/*", "screenshots/*")
# remote paths this tool owns: files there that are no longer in the list are deleted by the next deploy
OWNED = ("app.py", "requirements.txt", "LICENSE", "docs/*", "cxr_demo/*", "weights/*", "examples/*", "results/*")
WEIGHT_FILES = ("config.json", "model.safetensors")


class DeployError(RuntimeError):
    """A one-line reason the deploy cannot go ahead."""


@dataclass(frozen=True)
class Plan:
    files: list[str]  # repo-relative, posix, sorted
    warnings: list[str]


def tracked_files(root: Path) -> list[str]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as error:
        raise DeployError(f"{root} is not a git checkout (git ls-files failed: {error}); the upload list comes from git's tracked files.") from None
    return sorted(p for p in out.decode().split("\0") if p and (root / p).is_file())


def _folder(root: Path, spec: ModelSpec) -> str:
    """A local model's folder, repo-relative; a source outside the repo cannot be deployed."""
    folder = Path(spec.source.removeprefix("local:"))
    folder = (folder if folder.is_absolute() else root / folder).resolve()
    try:
        return folder.relative_to(root.resolve()).as_posix()
    except ValueError:
        raise DeployError(f"Model {spec.name!r}: its source {spec.source} is outside the repo; move it under weights/ to deploy it.") from None


def plan(root: Path = REPO_ROOT, weights: str = "local") -> Plan:
    """The files to upload and the warnings to show, from git's tracked files and the zoo."""
    tracked = tracked_files(root)
    specs = Zoo.from_toml(root / ZOO).specs()  # the app's own reading of zoo.toml, duplicate names refused alike
    model_patterns, warnings = [], []
    if weights == "hub":
        local_defaults = [s.name for s in specs if s.default and not s.is_hub]
        if local_defaults:
            raise DeployError(f"--weights hub needs every default model on the Hub, but {', '.join(local_defaults)} "
                              f"{'is' if len(local_defaults) == 1 else 'are'} local: publish each with `python -m train.publish NAME --repo org/repo` "
                              f"and put the printed `source = \"hf-hub:...\"` line in {ZOO}, or deploy with --weights local.")
        others = [s.name for s in specs if not s.is_hub]
        if others:
            warnings.append(f"--weights hub ships no checkpoints: {', '.join(others)} (local source) will not load on the Space.")
    else:
        for spec in specs:
            # a local source's folder; a Hub model's weights/<name>/ copy when one is tracked (it is read first)
            folder = _folder(root, spec) if not spec.is_hub else f"weights/{spec.name}"
            present = {p.removeprefix(folder + "/") for p in tracked if p.startswith(folder + "/")}
            if spec.is_hub and not present:
                continue
            missing = [f for f in WEIGHT_FILES if f not in present and not (spec.task == "zeroshot" and f == "config.json")]
            if missing:
                raise DeployError(f"Model {spec.name!r}: {', '.join(missing)} not tracked by git in {folder}/; commit it, or remove the model from {ZOO}.")
            model_patterns.append(glob.escape(folder) + "/*")
    files = list(filter_repo_objects(tracked, allow_patterns=[*APP_PATTERNS, *model_patterns], ignore_patterns=list(NEVER)))
    for needed in ("app.py", "README.md", "requirements.txt", ZOO):
        if needed not in files:
            raise DeployError(f"{needed} is not tracked by git; the Space cannot start without it.")
    return Plan(sorted(files), warnings)


def dry_run_lines(root: Path, files: list[str]) -> list[str]:
    """`path<TAB>bytes` per file, then one `#` total line (never mistaken for a path)."""
    sizes = [(root / f).stat().st_size for f in files]
    lines = [f"{f}\t{size}" for f, size in zip(files, sizes)]
    return [*lines, f"# {len(files)} files, {sum(sizes)} bytes ({sum(sizes) / 2**20:.1f} MiB)"]


def push(root: Path, space: str, files: list[str], private: bool, hardware: str) -> str:
    """Create the Space if needed and upload exactly `files` in one commit; returns the commit sha."""
    from huggingface_hub import HfApi, constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise DeployError("the Hugging Face Hub cannot be reached: HF_HUB_OFFLINE is set. Unset it, connect, and log in "
                          "(`huggingface-cli login` or HF_TOKEN with write access).")
    if not get_token():
        raise DeployError("not logged in to the Hugging Face Hub: run `huggingface-cli login` or set HF_TOKEN (a token with write access).")
    api = HfApi()
    try:
        api.create_repo(space, repo_type="space", space_sdk="gradio", exist_ok=True, private=private or None, space_hardware=hardware)
        commit = api.upload_folder(repo_id=space, repo_type="space", folder_path=str(root), allow_patterns=[glob.escape(f) for f in files],
                                   ignore_patterns=list(NEVER), delete_patterns=list(OWNED),
                                   commit_message="Deploy cxr-demo (python -m cxr_demo.deploy)")
        if hardware != "cpu-basic":
            api.request_space_hardware(space, hardware)
    except Exception as error:  # noqa: BLE001 - no traceback for a host: network, auth, permissions, quota
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise DeployError(f"the Hugging Face Hub refused or could not be reached ({type(error).__name__}: {first[:200]}). "
                          f"Check the connection and that you are logged in with write access (`huggingface-cli login` or HF_TOKEN).") from None
    return commit.oid


def main(argv: list[str] | None = None) -> int:
    from huggingface_hub import SpaceHardware

    parser = argparse.ArgumentParser(prog="python -m cxr_demo.deploy", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", required=True, help="the Space's repo id, org/name")
    parser.add_argument("--dry-run", action="store_true", help="print the repo-relative paths it would upload (path<TAB>bytes), one per line")
    parser.add_argument("--weights", choices=("local", "hub"), default="local",
                        help="local: upload the checkpoints the zoo lists; hub: none, every default model comes from the Hub")
    parser.add_argument("--private", action="store_true", help="create the Space private")
    parser.add_argument("--hardware", default="cpu-basic", choices=[h.value for h in SpaceHardware],
                        help="cpu-basic (the free 2 vCPU) is enough: the app needs no GPU")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.space.count("/") != 1 or not all(args.space.split("/")):
        print(f"error: --space must be org/name, got {args.space!r}", file=sys.stderr)
        return 2
    try:
        upload = plan(args.root, args.weights)
        for warning in upload.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if args.dry_run:
            print("\n".join(dry_run_lines(args.root, upload.files)))
            return 0
        sha = push(args.root, args.space, upload.files, args.private, args.hardware)
    except DeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"Uploaded {len(upload.files)} files to https://huggingface.co/spaces/{args.space} (commit {sha}); the Space builds now.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
