"""One settings schema: every key of a command declared once — name, type, range or choices, default,
a one-line doc — and checked, documented and (for ``configs/inspect.yaml``) written from that one place.

torch-free and light (stdlib + :mod:`defectdet.errors`): the station on the Jetson imports it.

- :class:`Range`: a number (int or float) in [low, high], checked with a one-line
  :class:`~defectdet.errors.ConfigError` naming the key (``snapshots.quota_mb='abc': expected a
  number >= 0``).
- :class:`Key`: one setting. ``range`` makes the schema check it; ``choices`` and ``kind`` are checked
  by a command-line option built from the key (:mod:`.options`), and in a config file where the command
  uses the value, with the same one-line errors.
- :class:`Schema`: the keys of one command, in order, with their defaults as the nested mapping
  the command merges its layers onto, and the ranges its merged settings are checked against.

The schemas: :mod:`.inspect` (``defectdet inspect``), :mod:`.train` (``defectdet train``), and the
command-line options of every other command (:mod:`.commands` lists them; :mod:`.options` builds
their argparse parsers).
``python -m defectdet.settings.render`` (:mod:`.render`) writes ``docs/settings.md`` and
``configs/inspect.yaml`` from them;
``tests/test_settings_schema.py`` keeps the commands, the files and the docs in step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple

from ..errors import BadValue, ConfigError

ULTRALYTICS = object()  # the default of a key that ultralytics owns: whatever its version sets


@dataclass(frozen=True)
class Range:
    """A number (``kind`` int or float) in [low, high]; ``open_low`` / ``open_high``: that end itself
    excluded; ``nullable``: null allowed; ``note``: what the number is, said after the range
    (``an integer >= 32 (pixels)``)."""

    kind: type = float
    low: Optional[float] = 0
    high: Optional[float] = None
    open_low: bool = False
    nullable: bool = False
    open_high: bool = False
    note: str = ""

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            ends = ("(" if self.open_low else "[", ")" if self.open_high else "]")
            what += f" in {ends[0]}{self.low:g}, {self.high:g}{ends[1]}"
        elif self.low is not None:
            what += f" {'>' if self.open_low else '>='} {self.low:g}"
        elif self.high is not None:
            what += f" {'<' if self.open_high else '<='} {self.high:g}"
        what += f" ({self.note})" if self.note else ""
        return f"null or {what}" if self.nullable else what

    def check(self, key: str, value: Any) -> Any:
        """``value`` as ``kind``; anything else is a one-line :class:`~defectdet.errors.BadValue` (a
        ConfigError, and a ValueError for callers of the library API) naming ``key``."""
        if value is None and self.nullable:
            return None
        real = isinstance(value, numbers.Real) and not isinstance(value, bool)  # numpy's numbers too
        number = (int(value) if isinstance(value, numbers.Integral) else float(value)) if real else None
        if number is not None and self.kind is int and math.isfinite(number) and number % 1 == 0:
            number = int(number)  # 10.0 -> 10
        ok = number is not None and math.isfinite(number) and (self.kind is float or isinstance(number, int))
        ok = ok and (self.low is None or number > self.low or (number == self.low and not self.open_low))
        ok = ok and (self.high is None or number < self.high or (number == self.high and not self.open_high))
        if not ok:
            raise BadValue(f"{key}={value!r}: expected {self.describe()}")
        return self.kind(number)


INT, POSITIVE = Range(int), Range(float, open_low=True)  # an integer >= 0; a number > 0


@dataclass(frozen=True)
class Key:
    """One setting: dotted ``name``, ``default``, a one-line ``doc`` and what a value may be.

    ``range``: checked by :meth:`Schema.check`. ``test`` + ``expected``: a rule a Range cannot say
    (``batch``: an integer, -1 or a fraction), checked the same way. ``choices`` / ``kind``:
    checked by the option :mod:`.options` builds (in a config file: where the command reads it).
    ``more``: further comment lines for the generated YAML file. ``literal``: the default as the YAML
    file writes it (``on``). ``gap``: a blank line before the key in the YAML file.

    A command-line option (:mod:`.options` builds the argparse parser from these): ``name`` is its
    argparse dest, the option ``--name-with-dashes`` (``--no-name`` for a bool that defaults to true)
    unless ``flag`` names it; ``positional``, ``required``, ``nargs``, ``metavar`` and ``group`` (the
    ``--help`` section) as argparse has them.
    """

    name: str
    default: Any
    doc: str
    kind: Optional[type] = None
    range: Optional[Range] = None
    choices: Tuple[str, ...] = ()
    test: Optional[Callable[[Any], bool]] = None
    expected: str = ""
    more: Tuple[str, ...] = ()
    literal: Optional[str] = None
    gap: bool = False
    flag: str = ""
    positional: bool = False
    required: bool = False
    nargs: Any = None
    metavar: Optional[str] = None
    group: str = ""

    def __post_init__(self):
        if "\n" in self.doc:
            raise ValueError(f"{self.name}: the doc is one line (put the rest in more=)")

    def check(self, value: Any) -> Any:
        """``value`` checked against the key's range or rule (unchanged when it declares neither); None
        passes where it is the default (not given)."""
        if value is None and (self.default is None or self.default is ULTRALYTICS):
            return None
        if self.range is not None:
            return self.range.check(self.name, value)
        if self.test is not None and value is not None and not self.test(value):
            raise ConfigError(f"{self.name}={value!r}: expected {self.expected}")
        return value

    @property
    def option(self) -> str:
        """The command-line spelling: ``--calib-images``, ``--no-gate``, ``--from``, a positional's name."""
        if self.positional:
            return self.name
        if self.flag:
            return self.flag
        dashed = self.name.replace("_", "-")
        return f"--no-{dashed}" if self.kind is bool and self.default is True else f"--{dashed}"

    def describe(self) -> str:
        """What a value may be, as the docs table says it."""
        if self.range is not None:
            return self.range.describe()
        if self.expected:
            return self.expected
        if self.choices:
            return " | ".join(self.choices)
        names = {bool: "true | false", str: "a string", int: "an integer", float: "a number"}
        what = names.get(self.kind, "see the description")
        return f"null or {what}" if self.default is None and self.kind is not None else what


@dataclass(frozen=True)
class Schema:
    """The keys of one command, in the order its file and docs list them."""

    command: str
    keys: Sequence[Key]
    sections: Mapping[str, str] = field(default_factory=dict)  # dotted section -> its one-line comment

    def __post_init__(self):
        names = [k.name for k in self.keys]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"{self.command}: keys declared twice: {', '.join(dup)}")

    def __iter__(self) -> Iterator[Key]:
        return iter(self.keys)

    def __getitem__(self, name: str) -> Key:
        for k in self.keys:
            if k.name == name:
                return k
        raise KeyError(name)

    def names(self) -> list[str]:
        return [k.name for k in self.keys]

    def defaults(self) -> dict[str, Any]:
        """The defaults as a nested mapping (``a.b`` -> ``{"a": {"b": ...}}``)."""
        out: dict[str, Any] = {}
        for k in self.keys:
            *parents, leaf = k.name.split(".")
            node = out
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = k.default
        return out

    def ranges(self) -> dict[str, Range]:
        """{dotted name: Range} of every key with a range."""
        return {k.name: k.range for k in self.keys if k.range is not None}

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """A copy of ``values`` (flat or nested) with every checked key that is present checked and typed;
        a ConfigError names the first bad one."""
        out = _copy(values)
        for k in self.keys:
            if k.range is None and k.test is None:
                continue
            *parents, leaf = k.name.split(".")
            node = out
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict) and leaf in node:
                node[leaf] = k.check(node[leaf])
        return out


def flat_names(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted names of the leaves of a nested mapping (a config's keys)."""
    out = []
    for key, value in tree.items():
        out += flat_names(value, f"{prefix}{key}.") if isinstance(value, Mapping) else [prefix + key]
    return out


def _copy(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in node.items()}
