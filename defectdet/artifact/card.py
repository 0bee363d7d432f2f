"""The model card: the sidecar ``<model stem>.json`` beside a graph or an engine, as a typed value.

One :class:`ModelCard` per model file. ``defectdet export`` creates it (:meth:`ModelCard.from_graph`);
``defectdet quantize`` and ``build-engine`` derive theirs from the FP32 model's
(:meth:`ModelCard.derive`, :meth:`ModelCard.replace`); ``defectdet gate`` and ``val --write-sidecar``
amend it (:meth:`ModelCard.amend`: the gate verdict, the operating thresholds). No other module
builds a sidecar mapping: they go through here, so the keys the runtime reads
(:func:`defectdet.artifact.load_metadata`) stay the same whoever writes them.

The JSON keys, in the order written: ``names``, ``imgsz``, ``strides``, ``preprocess``,
``input_name``, ``input_shape``, ``output_name``, ``output_shape``, ``output_layout``, ``batch``,
``task``, ``cls_loss`` / ``gamma`` / ``alpha``, ``recipe``, ``source`` (the checkpoint and its hash),
``precision``, ``opset``, ``versions``, ``parity``, ``thresholds``, ``gate``, ``source_onnx``,
``quantization`` (the INT8 calibration report), ``engine``; keys this version does not know are
kept as they are. A key the card does not have is not written (a reader sees it absent, not null).
"""

from __future__ import annotations

import ast
import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Optional, Tuple

from .. import __version__
from .metadata import _imgsz, _preprocess
from .run import RunInfo
from .sidecar import (
    OUTPUT_LAYOUT,
    MetadataError,
    Preprocess,
    literal,
    parse_names,
    read_sidecar,
    sidecar_path,
    write_sidecar,
)
from .thresholds import Thresholds, ThresholdSource

# The facts of the card that also go into the graph's ``defectdet`` metadata_props entry.
DEFECTDET_ENTRY_KEYS = (
    "cls_loss",
    "gamma",
    "alpha",
    "source",
    "preprocess",
    "strides",
    "precision",
    "output_layout",
)
# what describes one file only, dropped when a card is derived for another file
PER_FILE = ("parity", "gate", "engine")


@dataclass(frozen=True)
class GateVerdict:
    """``defectdet gate``'s decision on an INT8 model, as its card records it."""

    decision: str  # passed | refused | forced
    report: Optional[str] = None  # the gate report's file name (beside the model)
    date: Optional[str] = None
    map50_fp32: Optional[float] = None
    map50_int8: Optional[float] = None
    reasons: Tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["reasons"] = list(self.reasons)
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> GateVerdict:
        if not isinstance(d, Mapping) or not isinstance(d.get("decision"), str):
            raise MetadataError(f"{where}: 'gate' must be a mapping with a 'decision', got {d!r:.80}")
        known = {f.name for f in fields(cls)}
        return cls(
            **{k: v for k, v in d.items() if k in known and k != "reasons"},
            reasons=tuple(str(r) for r in d.get("reasons") or ()),
        )


def _ints(value: Any, where: str, key: str) -> Tuple[int, ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise MetadataError(f"{where}: '{key}' must be a list of integers, got {value!r:.80}")
    return tuple(int(v) for v in value)


def _mapping(value: Any, where: str, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise MetadataError(f"{where}: '{key}' must be a mapping, got {type(value).__name__}")
    return json.loads(json.dumps(value, default=str))  # a deep, JSON-plain copy


def _int(value: Any, where: str, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise MetadataError(f"{where}: '{key}' must be an integer, got {value!r:.80}")
    return int(value)


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise MetadataError(f"{where}: '{key}' must be text, got {value!r:.80}")
    return value


@dataclass(frozen=True)
class ModelCard:
    """What travels with one model file (graph or engine) besides its weights; None: not recorded."""

    names: Optional[Mapping[int, str]] = None  # class id -> name
    imgsz: Optional[Tuple[int, int]] = None  # network input (H, W)
    strides: Optional[Tuple[int, ...]] = None
    preprocess: Optional[Preprocess] = None
    input_name: Optional[str] = None
    input_shape: Optional[Tuple[int, ...]] = None
    output_name: Optional[str] = None
    output_shape: Optional[Tuple[int, ...]] = None
    output_layout: Optional[str] = None
    batch: Optional[int] = None
    task: Optional[str] = None
    cls_loss: Optional[str] = None  # which classification loss trained it ("unknown": not defectdet train)
    gamma: Optional[float] = None
    alpha: Optional[float] = None
    recipe: Optional[Mapping[str, Any]] = None  # the training data recipe (RunInfo.recipe)
    source: Optional[Mapping[str, Any]] = None  # provenance: {checkpoint, sha256}
    precision: Optional[str] = None  # fp32 | fp16 | int8-qdq | int8-qdq-cpu | an engine's
    opset: Optional[int] = None
    versions: Optional[Mapping[str, Any]] = None  # defectdet, ultralytics, date
    parity: Optional[Mapping[str, Any]] = None  # export: ONNX vs PyTorch
    thresholds: Optional[Thresholds] = None  # the per-class operating thresholds
    gate: Optional[GateVerdict] = None  # INT8: the accuracy gate's decision
    source_onnx: Optional[Mapping[str, Any]] = None  # INT8: the FP32 ONNX it was made from
    quantization: Optional[Mapping[str, Any]] = None  # INT8: calibration and Q/DQ report
    engine: Optional[Mapping[str, Any]] = None  # build-engine: the TensorRT build
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know, kept

    # -- building ------------------------------------------------------------------------------
    @classmethod
    def from_graph(
        cls,
        model: Any,
        source: Path,
        sha: str,
        strides: list[int],
        precision: str,
        opset: int,
        run: Optional[RunInfo] = None,
        preprocess: Mapping[str, Any] | None = None,
    ) -> ModelCard:
        """The card of an exported graph (an ``onnx.ModelProto`` with ultralytics' metadata_props);
        ``source`` is the file it was made from (checkpoint or FP32 ONNX), ``run`` the training run it
        came from (None: ``cls_loss`` unknown), ``preprocess`` what the graph's input wants."""
        from .onnx_graph import graph_preprocess, io_shapes, props

        meta = props(model)
        names = ast.literal_eval(meta["names"])
        in_name, in_shape, out_name, out_shape = io_shapes(model)
        pre = graph_preprocess(model, preprocess)
        hw = in_shape[1:3] if pre["layout"] == "NHWC" else in_shape[2:4]
        run = run or RunInfo()
        return cls(
            names={int(k): str(v) for k, v in sorted(names.items())},
            imgsz=(int(hw[0]), int(hw[1])),
            strides=tuple(int(s) for s in strides),
            preprocess=Preprocess(**pre),
            input_name=in_name,
            input_shape=tuple(in_shape),
            output_name=out_name,
            output_shape=tuple(out_shape),
            output_layout=OUTPUT_LAYOUT,
            batch=int(in_shape[0]),
            task=meta.get("task", "detect"),
            cls_loss=run.cls_loss,
            gamma=run.gamma,
            alpha=run.alpha,
            recipe=run.recipe.card_entry() if run.recipe is not None else None,
            source={"checkpoint": str(source.resolve()), "sha256": sha},
            precision=precision,
            opset=int(opset),
            versions={
                "defectdet": __version__,
                "ultralytics": meta.get("version"),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )

    def replace(self, **changes: Any) -> ModelCard:
        """This card with ``changes`` (same file: an amendment)."""
        return replace(self, **changes)

    def derive(self, **changes: Any) -> ModelCard:
        """The card of a file made from this card's model (INT8 from FP32): what described only the
        source file (``parity``, ``gate``, ``engine``) dropped, then ``changes``."""
        return replace(self, **{k: None for k in PER_FILE}, **changes)

    def with_thresholds(self, source: ThresholdSource) -> ModelCard:
        """This card with the operating thresholds of ``source`` (any source :class:`Thresholds`
        reads), checked against its class names."""
        if not self.names:
            raise MetadataError("thresholds need the model's class names; expected a card with 'names'")
        return replace(self, thresholds=Thresholds.load(source, self.names))

    @property
    def gate_decision(self) -> Optional[str]:
        return self.gate.decision if self.gate is not None else None

    # -- dict and file -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The sidecar mapping (JSON types; keys the card does not have are left out)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            k, v = f.name, getattr(self, f.name)
            if k == "extra" or (v is None and not (k in ("gamma", "alpha") and self.cls_loss is not None)):
                continue
            if k == "names":
                v = {str(c): str(n) for c, n in sorted(v.items())}
            elif k in ("imgsz", "strides", "input_shape", "output_shape"):
                v = list(v)
            elif k == "preprocess":
                v = asdict(v)
            elif k == "thresholds":
                v = v.by_name()
            elif k == "gate":
                v = v.to_dict()
            elif isinstance(v, Mapping):
                v = json.loads(json.dumps(v, default=str))
            out[k] = v
        return {**out, **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "model card") -> ModelCard:
        """Parse a sidecar mapping; a malformed known key is one :class:`MetadataError` naming
        ``where`` and the key."""
        known = {f.name for f in fields(cls)} - {"extra"}
        kw: dict[str, Any] = {"extra": {k: v for k, v in d.items() if k not in known}}
        v = {k: d[k] for k in known if d.get(k) is not None}
        names = parse_names(v["names"], where) if "names" in v else None
        kw["names"] = names
        if "imgsz" in v:
            kw["imgsz"] = _imgsz(v["imgsz"], where)
        for key in ("strides", "input_shape", "output_shape"):
            if key in v:
                kw[key] = _ints(literal(v[key]), where, key)
        if "preprocess" in v:
            kw["preprocess"] = _preprocess(v["preprocess"], where)
        for key in ("input_name", "output_name", "output_layout", "task", "cls_loss", "precision"):
            if key in v:
                kw[key] = _text(v[key], where, key)
        for key in ("batch", "opset"):
            if key in v:
                kw[key] = _int(v[key], where, key)
        for key in ("gamma", "alpha"):
            kw[key] = v.get(key)
        for key in ("recipe", "source", "versions", "parity", "source_onnx", "quantization", "engine"):
            if key in v:
                kw[key] = _mapping(v[key], where, key)
        if "thresholds" in v:
            if names is None:
                raise MetadataError(
                    f"{where}: 'thresholds' without 'names'; expected the class names "
                    "`defectdet export` records"
                )
            kw["thresholds"] = Thresholds.parse(v["thresholds"], names, where)
        if "gate" in v:
            kw["gate"] = GateVerdict.from_dict(v["gate"], where)
        return cls(**kw)

    @classmethod
    def load(cls, model_path: str | os.PathLike, missing_ok: bool = False) -> ModelCard:
        """The card beside ``model_path`` (``model.onnx`` -> ``model.json``); a missing one is an
        error naming it, or an empty card with ``missing_ok``."""
        side = sidecar_path(model_path)
        if not side.is_file():
            if missing_ok:
                return cls()
            raise MetadataError(
                f"{side}: no sidecar beside {Path(model_path).name}; expected the model.json "
                "that `defectdet export` writes"
            )
        return cls.from_dict(read_sidecar(side), str(side))

    def save(self, model_path: str | os.PathLike) -> Path:
        """Write the card beside ``model_path`` atomically; returns the sidecar's path."""
        return write_sidecar(sidecar_path(model_path), self.to_dict())

    @classmethod
    def amend(cls, model_path: str | os.PathLike, thresholds: ThresholdSource = None, **changes: Any) -> Path:
        """Set fields of ``model_path``'s card (created when absent), keeping every other one;
        ``thresholds``: any thresholds source, checked against its class names."""
        card = cls.load(model_path, missing_ok=True).replace(**changes)
        if thresholds is not None:
            card = card.with_thresholds(thresholds)
        return card.save(model_path)

    def embedded_entry(self) -> str:
        """The ``defectdet`` metadata_props value: the facts a runtime needs besides ultralytics' keys."""
        d = self.to_dict()
        return json.dumps({k: d.get(k) for k in DEFECTDET_ENTRY_KEYS})
