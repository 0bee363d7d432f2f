"""Per-class confidence thresholds: the :class:`Thresholds` value, its one parser and its files.

A thresholds source is a YAML file ``{thresholds: {class: conf}, ...}`` (what ``defectdet val
--target-escape`` writes; other top-level keys are notes), a mapping (the inner ``{class: conf}``
or the whole document), the ``thresholds`` of a model's sidecar, or a :class:`Thresholds` already
parsed. The rules, the same for ``val``, ``gate``, ``inspect``, ``Detector`` and the sidecar:

* a class is named by its name or its id (``scratch: 0.3``, ``0: 0.3``, ``'0': 0.3``); a name wins
  over an id when a class is called ``"1"``;
* a file may list only some classes (partial): the others keep the command's default (the
  Detector's ``conf``; ``val`` / ``gate``: each class's max-F1 confidence);
* a confidence is a number in [0, 1]; a class named twice, an unknown class, a non-numeric,
  boolean, NaN or out-of-range value is a one-line :class:`MetadataError` (a
  :class:`~defectdet.errors.ConfigError`) naming the file and the key and saying what was expected.

Parsed once, a :class:`Thresholds` travels as it is: from the YAML (or the sidecar) through the
``Detector`` to the station's ``Decider`` and the operator page, which read its vector and its
``{name: conf}`` view.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple, Union

import numpy as np

from ..config import dump_yaml, load_yaml
from ..errors import ConfigError
from .sidecar import MetadataError, literal

ThresholdSource = Union[None, str, os.PathLike, Mapping[Any, Any], "Thresholds"]


def _class_id(key: Any, names: Mapping[int, str], by_name: Mapping[str, int]) -> int | None:
    """The class id a thresholds key names (a name or an id), or None when it names none."""
    if isinstance(key, str) and key in by_name:
        return by_name[key]
    if isinstance(key, bool):
        return None
    if isinstance(key, int) or (isinstance(key, str) and key.strip().isdigit()):
        cid = int(key)
        return cid if cid in names else None
    return None


def _confidence(value: Any) -> float | None:
    """A threshold value as a float in [0, 1], or None when it is not one."""
    if isinstance(value, bool):
        return None
    try:
        conf = float(value)
    except (TypeError, ValueError):
        return None
    return conf if 0.0 <= conf <= 1.0 and not math.isnan(conf) else None


@dataclass(frozen=True)
class Thresholds:
    """Per-class confidences of one model's classes: ``values[c]`` is class ``c``'s threshold, or
    None where the source left the class to the command's default (a partial file)."""

    names: Tuple[str, ...]  # class names in id order
    values: Tuple[Optional[float], ...]  # (nc,) confidence per class, None: not given

    def __post_init__(self):
        if len(self.names) != len(self.values):
            raise ValueError(f"Thresholds: {len(self.names)} names but {len(self.values)} values")

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def none(cls, names: Mapping[int, str]) -> Thresholds:
        """No class given (every class at the command's default)."""
        n = _names(names)
        return cls(n, (None,) * len(n))

    @classmethod
    def of(cls, names: Mapping[int, str], per_class: Mapping[int, float]) -> Thresholds:
        """From already checked ``{class_id: conf}``."""
        n = _names(names)
        return cls(n, tuple(float(per_class[c]) if c in per_class else None for c in range(len(n))))

    @classmethod
    def uniform(cls, names: Mapping[int, str], conf: float) -> Thresholds:
        """Every class at ``conf``."""
        n = _names(names)
        return cls(n, (float(conf),) * len(n))

    @classmethod
    def parse(cls, mapping: Any, names: Mapping[int, str], where: str) -> Thresholds:
        """``{class_name_or_id: conf}`` under the module's rules; ``where`` (the file) starts every
        error message."""
        mapping = literal(mapping)
        if mapping is None:
            return cls.none(names)
        if not isinstance(mapping, Mapping):
            raise MetadataError(
                f"{where}: 'thresholds' must be a mapping of class name or id -> confidence, "
                f"got {type(mapping).__name__}"
            )
        by_name = {v: k for k, v in names.items()}
        out: dict[int, float] = {}
        keys: dict[int, Any] = {}
        for key, value in mapping.items():
            cid = _class_id(key, names, by_name)
            if cid is None:
                raise MetadataError(
                    f"{where}: threshold for unknown class {key!r}; expected one of "
                    f"{list(names.values())} or ids 0..{len(names) - 1}"
                )
            if cid in out:
                raise MetadataError(
                    f"{where}: class {names[cid]!r} has two thresholds (keys {keys[cid]!r} and "
                    f"{key!r}); expected one per class"
                )
            conf = _confidence(value)
            if conf is None:
                raise MetadataError(
                    f"{where}: threshold for class {key!r} must be a number in [0, 1], got {value!r}"
                )
            out[cid], keys[cid] = conf, key
        return cls.of(names, out)

    @classmethod
    def load(cls, source: ThresholdSource, names: Mapping[int, str]) -> Thresholds:
        """From a thresholds YAML path, a mapping, or a Thresholds (checked against ``names``); None: none."""
        if source is None:
            return cls.none(names)
        if isinstance(source, Thresholds):
            if source.names != _names(names):
                raise MetadataError(
                    f"thresholds for classes {list(source.names)}; expected the model's {list(_names(names))}"
                )
            return source
        if isinstance(source, Mapping):
            return cls.parse(source.get("thresholds", source), names, "thresholds")
        path = Path(source)
        try:
            doc = load_yaml(path, kind="thresholds")
        except ConfigError as e:  # not found / malformed YAML: the same error class as every other rule
            raise MetadataError(str(e)) from None
        if "thresholds" not in doc:
            raise MetadataError(
                f"{path}: expected a top-level 'thresholds:' mapping of class name or id -> confidence"
            )
        return cls.parse(doc["thresholds"], names, str(path))

    # -- reading -------------------------------------------------------------------------------
    @property
    def nc(self) -> int:
        return len(self.names)

    @property
    def given(self) -> dict[int, float]:
        """``{class_id: conf}`` of the classes that have a threshold."""
        return {c: v for c, v in enumerate(self.values) if v is not None}

    @property
    def complete(self) -> bool:
        """True when every class has a threshold."""
        return all(v is not None for v in self.values)

    def __bool__(self) -> bool:
        return any(v is not None for v in self.values)

    def over(self, base: Thresholds) -> Thresholds:
        """These thresholds where given, ``base``'s elsewhere."""
        return Thresholds(
            self.names, tuple(v if v is not None else b for v, b in zip(self.values, base.values))
        )

    def filled(self, default: float) -> Thresholds:
        """Every class given: ``default`` where none was."""
        return Thresholds(self.names, tuple(float(default) if v is None else v for v in self.values))

    def vector(self, default: float = 1.0) -> np.ndarray:
        """(nc,) float32, ``default`` where a class has none."""
        return np.array([default if v is None else v for v in self.values], np.float32)

    def by_name(self, ndigits: int | None = None) -> dict[str, float]:
        """``{class_name: conf}`` of the given classes in id order (how files store them)."""
        return {
            self.names[c]: float(v) if ndigits is None else round(float(v), ndigits)
            for c, v in self.given.items()
        }

    # -- files ---------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, **notes: Any) -> Path:
        """The thresholds YAML the runtime reads: ``thresholds: {name: conf}`` then ``notes`` (how they
        were found). Values are written unrounded: calibrated gaps can be below 1e-6."""
        return dump_yaml(path, {"thresholds": self.by_name(), **notes})


def _names(names: Mapping[int, str]) -> Tuple[str, ...]:
    return tuple(str(names[c]) for c in sorted(names))


def parse_thresholds(mapping: Any, names: Mapping[int, str], where: str) -> dict[int, float]:
    """``{class_name_or_id: conf}`` -> ``{class_id: conf}`` (:meth:`Thresholds.parse`)."""
    return Thresholds.parse(mapping, names, where).given


def load_thresholds(source: ThresholdSource, names: Mapping[int, str]) -> dict[int, float]:
    """``{class_id: conf}`` from a thresholds YAML path or a mapping (:meth:`Thresholds.load`)."""
    return Thresholds.load(source, names).given
