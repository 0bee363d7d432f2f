"""Per-class confidence thresholds: the one parser every command uses, and their files.

A thresholds source is a YAML file ``{thresholds: {class: conf}, ...}`` (what ``defectdet val
--target-escape`` writes; other top-level keys are notes), a mapping (the inner ``{class: conf}``
or the whole document), or the ``thresholds`` of a model's sidecar. The rules, the same for
``val``, ``gate``, ``inspect``, ``Detector`` and the sidecar:

* a class is named by its name or its id (``scratch: 0.3``, ``0: 0.3``, ``'0': 0.3``); a name wins
  over an id when a class is called ``"1"``;
* a file may list only some classes (partial): the others keep the command's default (the
  Detector's ``conf``; ``val`` / ``gate``: each class's max-F1 confidence);
* a confidence is a number in [0, 1]; a class named twice, an unknown class, a non-numeric,
  boolean, NaN or out-of-range value is a one-line :class:`MetadataError` (a
  :class:`~defectdet.errors.ConfigError`) naming the file and the key and saying what was expected.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Union

from ..config import dump_yaml, load_yaml
from ..errors import ConfigError
from .sidecar import MetadataError, literal, parse_names, read_sidecar, sidecar_path, update_sidecar

ThresholdSource = Union[None, str, os.PathLike, Mapping[Any, Any]]


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


def parse_thresholds(mapping: Any, names: Mapping[int, str], where: str) -> dict[int, float]:
    """``{class_name_or_id: conf}`` -> ``{class_id: conf}`` under the module's rules; ``where`` (the
    file) starts every error message."""
    mapping = literal(mapping)
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise MetadataError(f"{where}: 'thresholds' must be a mapping of class name or id -> confidence, "
                          f"got {type(mapping).__name__}")
    by_name = {v: k for k, v in names.items()}
    out: dict[int, float] = {}
    keys: dict[int, Any] = {}
    for key, value in mapping.items():
        cid = _class_id(key, names, by_name)
        if cid is None:
            raise MetadataError(f"{where}: threshold for unknown class {key!r}; expected one of "
                              f"{list(names.values())} or ids 0..{len(names) - 1}")
        if cid in out:
            raise MetadataError(f"{where}: class {names[cid]!r} has two thresholds (keys {keys[cid]!r} and {key!r}); "
                              "expected one per class")
        conf = _confidence(value)
        if conf is None:
            raise MetadataError(f"{where}: threshold for class {key!r} must be a number in [0, 1], got {value!r}")
        out[cid], keys[cid] = conf, key
    return out


def load_thresholds(source: ThresholdSource, names: Mapping[int, str]) -> dict[int, float]:
    """Per-class thresholds ``{class_id: conf}`` from a thresholds YAML path or a mapping (None: none)."""
    if source is None:
        return {}
    if isinstance(source, Mapping):
        return parse_thresholds(source.get("thresholds", source), names, "thresholds")
    path = Path(source)
    try:
        doc = load_yaml(path, kind="thresholds")
    except ConfigError as e:  # not found / malformed YAML: the same error class as every other rule
        raise MetadataError(str(e)) from None
    if "thresholds" not in doc:
        raise MetadataError(f"{path}: expected a top-level 'thresholds:' mapping of class name or id -> confidence")
    return parse_thresholds(doc["thresholds"], names, str(path))


def by_name(per_class: Mapping[int, float], names: Mapping[int, str]) -> dict[str, float]:
    """``{class_id: conf}`` -> ``{class_name: conf}`` in class-id order (how files store them)."""
    return {names[c]: float(per_class[c]) for c in sorted(per_class)}


def write_thresholds_file(path: str | os.PathLike, thresholds: Mapping[str, float], **notes: Any) -> Path:
    """The thresholds YAML the runtime reads: ``thresholds: {name: conf}`` then ``notes`` (how they
    were found). Values are written unrounded: calibrated gaps can be below 1e-6."""
    return dump_yaml(path, {"thresholds": {str(n): float(t) for n, t in thresholds.items()}, **notes})


def sidecar_names(model_path: str | os.PathLike) -> dict[int, str]:
    """Class names from ``model_path``'s sidecar; a missing sidecar or ``names`` is a one-line error."""
    side = sidecar_path(model_path)
    if not side.is_file():
        raise MetadataError(f"{side}: no sidecar beside {Path(model_path).name}; expected the model.json that "
                          "`defectdet export` writes")
    meta = read_sidecar(side)
    if not meta.get("names"):
        raise MetadataError(f"{side}: no 'names'; expected the class names `defectdet export` records")
    return parse_names(meta["names"], str(side))


def sidecar_thresholds(model_path: str | os.PathLike) -> dict[str, float]:
    """The ``thresholds`` of ``model_path``'s sidecar as ``{name: conf}`` ({} when it has none)."""
    side = sidecar_path(model_path)
    meta = read_sidecar(side) if side.is_file() else {}
    if not meta.get("thresholds"):
        return {}
    names = parse_names(meta.get("names") or {}, str(side))
    return by_name(parse_thresholds(meta["thresholds"], names, str(side)), names)


def write_sidecar_thresholds(model_path: str | os.PathLike, thresholds: ThresholdSource, **changes: Any) -> Path:
    """Put ``thresholds`` (any source :func:`load_thresholds` reads) into ``model_path``'s sidecar
    as ``{name: conf}``, checked against its class names; ``changes`` sets other keys too."""
    names = sidecar_names(model_path)
    per_class = load_thresholds(thresholds, names)
    return update_sidecar(model_path, **changes, thresholds=by_name(per_class, names))
