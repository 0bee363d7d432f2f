"""The float view of a uint8-input graph: what ``defectdet export --input uint8`` prepends, and how a
reader that can only feed float tensors (ultralytics' ``predict`` in ``defectdet val``) removes it.

The names of the prepended nodes are part of the artefact (the exporter,
:mod:`defectdet.export.uint8`, writes them; this module reads them). ``onnx`` is imported inside
the functions.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .onnx_graph import save_onnx

PREFIX = "defectdet_input/"  # names of the prepended nodes and their constants
NODES = {
    PREFIX + n for n in ("cast", "transpose", "bgr2rgb", "div255")
}  # (quantizers name their nodes after tensors)
CONSTANTS = {PREFIX + n for n in ("bgr2rgb", "255")}


def _image_input(graph: Any) -> Any:
    inits = {i.name for i in graph.initializer}
    return next(i for i in graph.input if i.name not in inits)


def _set_dims(tensor_type: Any, dims: list[int]) -> None:
    del tensor_type.shape.dim[:]
    for d in dims:
        tensor_type.shape.dim.add().dim_value = int(d)


def is_uint8_input(model: Any) -> bool:
    """True when ``model`` carries the nodes :func:`uint8_input` prepends."""
    return any(n.name in NODES for n in model.graph.node)


def float_view(model: Any) -> Any:
    """A copy of a :func:`uint8_input` graph (FP32 or Q/DQ) with those nodes removed: the (B, 3, H, W)
    float32 RGB input ultralytics feeds, and otherwise the same graph and metadata."""
    from onnx import TensorProto

    out = type(model)()
    out.CopyFrom(model)
    g = out.graph
    inp = _image_input(g)
    name, inner = inp.name, PREFIX + "normalised"
    kept = [n for n in g.node if n.name not in NODES]
    for n in kept:
        n.input[:] = [name if i == inner else i for i in n.input]
    del g.node[:]
    g.node.extend(kept)
    inits = [i for i in g.initializer if i.name not in CONSTANTS]
    del g.initializer[:]
    g.initializer.extend(inits)
    tt = inp.type.tensor_type
    dims = [d.dim_value for d in tt.shape.dim]
    b, h, w = (dims[0], dims[1], dims[2]) if dims[3] == 3 and dims[1] != 3 else (dims[0], dims[2], dims[3])
    tt.elem_type = TensorProto.FLOAT
    _set_dims(tt, [b, 3, h, w])
    return out


@contextmanager
def float_copy(path: Any) -> Iterator[Any]:
    """``path`` itself for anything but a uint8-input ``.onnx`` file (a float ONNX, a .pt, a loaded
    model); for a uint8-input one, a temporary :func:`float_view` of it (same metadata) that exists
    inside the ``with`` block."""
    from .onnx_file import load_onnx

    if not isinstance(path, (str, os.PathLike)) or not str(path).endswith(".onnx"):
        yield path
        return
    path = Path(path)
    model = load_onnx(path, weights=False)  # a bad file: one line naming it
    if not is_uint8_input(model):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="defectdet-float-view-") as tmp:
        view = Path(tmp) / path.name
        save_onnx(float_view(model), view)
        yield view
