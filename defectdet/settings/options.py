"""A command's argparse options, built from its schema: each :class:`~defectdet.settings.Key` becomes one
option with the key's flag, default, choices and one-line doc (its ``--help`` line, the default appended),
and a number key with a :class:`~defectdet.settings.Range` is parsed and checked by that range, so
``--calib-images 0`` is one line (``--calib-images=0: expected an integer >= 1``) and exit status 2.

stdlib only (argparse): the station's commands build their parsers with it on the Jetson.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable, Mapping, Optional

from ..errors import BadValue, ConfigError, exit_statuses
from . import ULTRALYTICS, Key, Schema


def parser(schema: Schema, description: str, exits: Iterable[tuple] = (), before: str = "", **kw):
    """``defectdet <schema.command>``'s parser: every key of ``schema`` an option; ``exits`` and
    ``before``: the ``--help`` epilog (:func:`~defectdet.errors.exit_statuses`)."""
    p = argparse.ArgumentParser(
        prog=f"defectdet {schema.command}",
        description=description,
        **exit_statuses(*exits, before=before),
        **kw,
    )
    add_options(p, schema)
    return p


def add_options(p: argparse.ArgumentParser, keys: Iterable[Key]) -> None:
    """One argparse option per key, each in its ``group`` (created once, in the order first named)."""
    groups: dict[str, Any] = {}
    for key in keys:
        target = p
        if key.group:
            if key.group not in groups:
                groups[key.group] = p.add_argument_group(key.group)
            target = groups[key.group]
        target.add_argument(*_names(key), **argument(key))


def _names(key: Key) -> tuple[str, ...]:
    return (key.name,) if key.positional else (key.option,)


def argument(key: Key) -> dict[str, Any]:
    """The ``add_argument`` keywords of ``key`` (all but its name)."""
    kw: dict[str, Any] = {"help": help_text(key)}
    if not key.positional:
        kw["dest"] = key.name
    if key.kind is bool:
        kw["action"] = "store_false" if key.default is True else "store_true"
        return kw
    kw["default"] = key.default
    kind = key.range.kind if key.range is not None else key.kind
    if key.range is not None:
        kw["type"] = number(key.range.check, key.option, kind)
    elif kind in (int, float):
        kw["type"] = number(lambda name, v: _typed(kind, name, v), key.option, kind)
    if key.choices:  # checked by a type, so that a bad one is one line, not argparse's usage block
        kw["type"], kw["metavar"] = choice(key.choices, key.option), "{" + ",".join(key.choices) + "}"
    for field in ("nargs", "metavar"):
        if getattr(key, field):
            kw[field] = getattr(key, field)
    if key.required:
        kw["required"] = True
    return kw


def help_text(key: Key) -> str:
    """The key's doc, plus its default when it has one worth stating (argparse's ``%`` escaped)."""
    text = key.doc
    if key.kind is not bool and key.default is not None and not key.positional:
        shown = " ".join(map(str, key.default)) if isinstance(key.default, (list, tuple)) else key.default
        text += f" (default {shown})"
    return text.replace("%", "%%")


def number(check: Callable[[str, Any], Any], name: str, kind: type = float) -> Callable[[str], Any]:
    """An argparse ``type``: the text as a ``kind`` (``1e3`` is no int), then ``check(name, value)``;
    a bad value is a one-line :class:`~defectdet.errors.ConfigError` (argparse would swallow a ValueError)."""

    def parse(text: str) -> Any:
        try:
            value: Any = kind(text)
        except ValueError:
            value = text
        try:
            return check(name, value)
        except BadValue as e:
            raise ConfigError(str(e)) from None

    parse.__name__ = name
    return parse


def choice(choices: tuple, name: str) -> Callable[[str], str]:
    """An argparse ``type``: one of ``choices``, else a one-line ConfigError
    (``--escape-rule strict: expected one of box, any``)."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ConfigError(f"{name} {text}: expected one of {', '.join(choices)}")
        return text

    parse.__name__ = name
    return parse


def _typed(kind: type, name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value % 1):
        raise BadValue(f"{name}={value!r}: expected {'an integer' if kind is int else 'a number'}")
    return kind(value)


def key_help(keys: Iterable[Key], width: int = 24) -> str:
    """``--help`` lines of key=value settings: ``  key=default  doc`` (wrapped by nothing: one line each)."""
    lines = []
    for k in keys:
        default = "ultralytics'" if k.default is ULTRALYTICS else _shown(k.default)
        lines.append(f"  {k.name + '=' + default:<{width}} {k.doc}")
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def apply_overrides(
    args: argparse.Namespace, schema: Schema, overrides: Mapping[str, Any], skip: tuple = ()
) -> None:
    """``key=value`` overrides (YAML-typed) onto parsed ``args``: each a key of ``schema`` (not in
    ``skip``), checked as its option would be (range, number type, choices); ConfigError otherwise."""
    known = [k.name for k in schema if k.name not in skip]
    for name, value in overrides.items():
        if name not in known:
            raise ConfigError(f"unknown option {name!r}; expected one of: {', '.join(sorted(known))}")
        setattr(args, name, check_value(schema[name], value))


def check_value(key: Key, value: Any, name: Optional[str] = None) -> Any:
    """``value`` (already typed, e.g. from YAML) checked as ``key``'s option checks its text."""
    name = name or key.name
    if value is None:
        return None
    if key.range is not None:
        return key.range.check(name, value)
    if key.kind in (int, float):
        return _typed(key.kind, name, value)
    if key.kind is bool and not isinstance(value, bool):
        raise BadValue(f"{name}={value!r}: expected true or false")
    if key.choices and value not in key.choices:
        raise BadValue(f"{name}={value!r}: expected one of {', '.join(key.choices)}")
    return value
