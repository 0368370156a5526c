"""The ONE mapping from config dataclasses to command-line options.

Every field of a config dataclass becomes an option: ``max_steps`` -> ``--max-steps`` (with a ``prefix``,
``--vqvae-max-steps``), typed from its annotation, with the field's own ``# comment`` as its help text:
``bool`` fields get ``--x/--no-x``, ``dict`` fields take ``KEY=VALUE`` pairs (values read as JSON when they
parse, else as text), ``X | None`` fields accept ``none``. Every option defaults to "not given", so a preset
fills the defaults first and only the options the user typed override them (:func:`build_config`); values a
preset derives from the number of steps (warm-up, checkpoint and sample intervals) are recomputed through the
config's ``with_max_steps`` before the explicit options apply.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
from dataclasses import MISSING, fields, replace
from typing import Any

_COMMENT = re.compile(r"^\s+(\w+)\s*:\s*[^=#]+(?:=[^#]*)?#\s*(.+?)\s*$")
POSITIVE = ("max_steps", "batch_size", "gradient_accumulation_steps")  # fields that must be >= 1
CHOICES: dict[str, tuple[str, ...]] = {"mixed_precision": ("no", "bf16", "fp16"), "lr_scaling": ("sqrt", "linear", "none")}


def field_help(cls: type) -> dict[str, str]:
    """``{field: the comment written after it in the class body}``, base classes first."""
    helps: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not hasattr(klass, "__dataclass_fields__"):
            continue
        try:
            source = inspect.getsource(klass)
        except (OSError, TypeError):
            continue
        for line in source.splitlines():
            match = _COMMENT.match(line)
            if match:
                helps[match.group(1)] = match.group(2).replace("%", "%%")
    return helps


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_values(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip().replace("-", "_"), _parse_value(value)


def _typed(annotation: str):
    optional = "None" in annotation
    base = annotation.replace("| None", "").replace("None |", "").strip()
    caster = {"int": int, "float": float, "str": str}.get(base, str)

    def convert(text: str):
        if optional and text.lower() == "none":
            return None
        return caster(text)

    convert.__name__ = base
    return convert


def _default_text(value: Any) -> str:
    return "" if value is MISSING else f" (class default: {value!r})"


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: tuple[str, ...] = (),
                         title: str | None = None) -> list[str]:  # fmt: skip
    """One option per field of ``cls`` (except ``skip``); returns the ``dest`` names added."""
    group = parser.add_argument_group(title or f"{cls.__name__} fields (the preset sets each; an option overrides it)")
    helps = field_help(cls)
    added = []
    for f in fields(cls):
        if f.name in skip:
            continue
        flag = "--" + (prefix + "-" if prefix else "") + f.name.replace("_", "-")
        dest = (prefix.replace("-", "_") + "__" if prefix else "") + f.name
        annotation = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        text = helps.get(f.name, "")
        default = f.default if f.default is not MISSING else (f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
        if annotation == "bool":
            group.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif annotation.startswith("dict"):
            group.add_argument(flag, dest=dest, nargs="+", type=_key_values, default=None, metavar="KEY=VALUE",
                               help=f"{text}; KEY=VALUE pairs")  # fmt: skip
        else:
            from .arguments import positive_int

            kind = positive_int if f.name in POSITIVE else _typed(annotation)
            group.add_argument(flag, dest=dest, type=kind, default=None, choices=CHOICES.get(f.name),
                               metavar=None if f.name in CHOICES else f.name.upper(), help=text + _default_text(default))  # fmt: skip
        added.append(dest)
    return added


def explicit_values(args: argparse.Namespace, cls: type, prefix: str = "") -> dict[str, Any]:
    """The fields of ``cls`` the user gave on the command line (``prefix`` as in :func:`add_config_arguments`)."""
    values = {}
    for f in fields(cls):
        dest = (prefix.replace("-", "_") + "__" if prefix else "") + f.name
        value = getattr(args, dest, None)
        if value is None:
            continue
        values[f.name] = dict(value) if isinstance(value, list) and value and isinstance(value[0], tuple) else value
    return values


def build_config(cls: type, preset: str, explicit: dict[str, Any]) -> Any:
    """The preset's config, then ``with_max_steps`` for an explicit step count (derived values recomputed),
    then every other explicit value."""
    explicit = dict(explicit)
    config = cls.preset(preset)
    steps = explicit.pop("max_steps", None)
    if steps is not None:
        config = config.with_max_steps(steps)
    if "model_overrides" in explicit:  # pairs add to the preset's overrides
        explicit["model_overrides"] = {**getattr(config, "model_overrides", {}), **explicit["model_overrides"]}
    return replace(config, **explicit) if explicit else config
