"""The artefact inside an ONNX file: ``metadata_props``, I/O shapes, opset, and saving it.

Functions take an ``onnx.ModelProto``; files are read by :func:`.onnx_file.load_onnx`, the one
place that imports ``onnx`` to load a graph (the runtime never needs it). The card a graph's export
writes is :meth:`defectdet.artifact.ModelCard.from_graph`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

from ..config import atomic_write_bytes
from .sidecar import PREPROCESS


def props(model: Any) -> dict[str, str]:
    """A graph's ``metadata_props`` as a dict."""
    return {p.key: p.value for p in model.metadata_props}


def load_props(path: str | os.PathLike) -> dict[str, str]:
    """``metadata_props`` of an ONNX file, without loading external weights."""
    from .onnx_file import load_onnx

    return props(load_onnx(path, weights=False))


def embed_metadata(model: Any, entries: Mapping[str, str]) -> None:
    """Set ``metadata_props`` keys on an ``onnx.ModelProto`` (replacing ones already there)."""
    merged = {**props(model), **entries}
    del model.metadata_props[:]
    for k, v in merged.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v


def save_onnx(model: Any, path: str | os.PathLike) -> Path:
    """Serialize a graph and write it atomically (mode 0666 & ~umask, like any file the user creates)."""
    return atomic_write_bytes(path, model.SerializeToString())


def io_shapes(model: Any) -> tuple[str, list[int], str, list[int]]:
    """(input name, input shape, output name, output shape) of a static single-input ONNX graph."""

    def dims(v):
        return [d.dim_value for d in v.type.tensor_type.shape.dim]

    g = model.graph
    inits = {i.name for i in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    return inputs[0].name, dims(inputs[0]), g.output[0].name, dims(g.output[0])


_ONNX_UINT8 = 2  # onnx.TensorProto.UINT8 (the runtime never imports onnx)


def input_format(model: Any) -> tuple[str, str]:
    """(dtype, layout) of a graph's image input: ``("uint8", "NHWC")`` for a (B, H, W, 3) uint8 input,
    ``("float32", "NCHW")`` for what ultralytics exports (float16 graphs keep float32 I/O)."""
    g = model.graph
    inits = {i.name for i in g.initializer}
    tensor = next(i for i in g.input if i.name not in inits).type.tensor_type
    dims = [d.dim_value for d in tensor.shape.dim]
    layout = "NHWC" if len(dims) == 4 and dims[3] == 3 and dims[1] != 3 else "NCHW"
    return ("uint8" if tensor.elem_type == _ONNX_UINT8 else "float32"), layout


def graph_preprocess(model: Any, preprocess: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``preprocess`` record of a graph: ``preprocess`` (else the one its ``defectdet`` entry
    carries, else ultralytics' defaults), with dtype and layout read from the graph's input."""
    if preprocess is None:
        try:
            preprocess = json.loads(props(model).get("defectdet") or "{}").get("preprocess")
        except (ValueError, AttributeError):
            preprocess = None
    dtype, layout = input_format(model)
    return {**PREPROCESS, **(preprocess or {}), "dtype": dtype, "layout": layout}


def opset_version(model: Any) -> int:
    """The graph's default-domain opset (0 when it declares none)."""
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def has_qdq(model: Any) -> bool:
    """True when the graph has QuantizeLinear/DequantizeLinear nodes (explicit INT8)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
