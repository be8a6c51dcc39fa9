"""One argparse front end for every training config dataclass: each field becomes a --flag of its own type."""
from __future__ import annotations

import argparse
import types
import typing
from dataclasses import MISSING, fields
from pathlib import Path

import torch


def parse_config(config_cls, argv=None, doc: str | None = None, required: tuple[str, ...] = ()):
    """`--some-field VALUE` for each field; list fields repeat (`--data A --data B`); `X | None` fields take X."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        default = f.default_factory() if f.default_factory is not MISSING else (None if f.default is MISSING else f.default)
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if typing.get_origin(kind) is list:
            parser.add_argument(flag, action="append", default=[], required=f.name in required)
        else:
            parser.add_argument(flag, type=kind, default=default, required=f.name in required)
    return config_cls(**vars(parser.parse_args(argv)))


def start_run(runs: str, name: str, seed: int, threads: int | None) -> Path:
    """Seed, thread count and the run folder (checkpoints and history) shared by every trainer."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    run_dir = Path(runs) / name
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir
