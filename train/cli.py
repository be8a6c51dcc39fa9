"""One argparse front end for every `train.*` config dataclass: each field becomes a --flag of its own type."""
from __future__ import annotations

import argparse
import sys
import types
import typing
from dataclasses import MISSING, fields
from typing import NoReturn


def parse_config(config_cls, argv=None, doc: str | None = None, required: tuple[str, ...] = ()):
    """`--some-field VALUE` for each field; list fields take one or more values and repeat (`--data A --data B`); `X | None`
    fields take X; `bool` fields are switches (`--json`); `Literal[...]` fields, or `field(metadata={"choices": ...})`, take
    one of their values; `field(metadata={"help": ...})` explains the flag."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    hints = typing.get_type_hints(config_cls)
    for f in fields(config_cls):
        flag = "--" + f.name.replace("_", "-")
        has_default = f.default is not MISSING or f.default_factory is not MISSING
        default = f.default_factory() if f.default_factory is not MISSING else f.default if has_default else None
        options = dict(default=default, required=f.name in required or not has_default, help=f.metadata.get("help"))
        if "choices" in f.metadata:
            options["choices"] = f.metadata["choices"]
        kind = hints[f.name]
        if typing.get_origin(kind) in (typing.Union, types.UnionType):
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        if kind is bool:
            parser.add_argument(flag, action="store_true", **options)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, action="extend", nargs="+", type=typing.get_args(kind)[0], **options)
        elif typing.get_origin(kind) is typing.Literal:
            parser.add_argument(flag, **{**options, "choices": typing.get_args(kind)})
        else:
            parser.add_argument(flag, type=kind, **options)
    return config_cls(**vars(parser.parse_args(argv)))


def usage_error(message: str) -> NoReturn:
    """Refuse a command line as argparse does: the message on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
