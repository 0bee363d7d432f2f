"""uint8 image input: the normalisation moves from the host into the graph.

``defectdet export --input uint8`` rewrites the FP32 graph ultralytics exports, whose input is
(B, 3, H, W) float32 RGB in [0, 1], so that it takes the letterboxed OpenCV image as it is:
(B, H, W, 3) uint8 BGR (``--input-layout nhwc``, the default) or (B, 3, H, W) uint8 BGR planes
(``nchw``). Prepended nodes, all named ``defectdet_input/...``::

    images (uint8) -> Cast(float) -> [Transpose 0,3,1,2] -> Gather(axis 1, [2, 1, 0]) -> Div(255) -> the old
    graph

The Cast comes first because TensorRT (8.6 and 10.x) accepts a UINT8 network input only as the
input of a cast; Div by 255 (not Mul by 1/255) gives the float tensor ultralytics' predictor builds,
bit for bit. The opset is unchanged (every op here exists since opset 13).
:func:`defectdet.artifact.uint8_view.float_view` removes exactly these nodes again, for tools that
can only feed float tensors (ultralytics' ``predict`` in ``defectdet val``).
"""

from __future__ import annotations

from typing import Any

from ..artifact.uint8_view import (  # noqa: F401  (float_view, is_uint8_input: the reader side, re-exported)
    PREFIX,
    _image_input,
    _set_dims,
    float_copy,
    float_view,
    is_uint8_input,
)
from . import ExportError

LAYOUTS = ("NHWC", "NCHW")


def uint8_input(model: Any, layout: str = "NHWC") -> dict[str, Any]:
    """Give ``model`` (an ``onnx.ModelProto``, FP32 (B, 3, H, W) RGB input) a uint8 BGR input in
    ``layout``, in place; returns the ``preprocess`` record the host follows (BGR bytes, as is)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    layout = layout.upper()
    if layout not in LAYOUTS:
        raise ExportError(f"input layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    g = model.graph
    inp = _image_input(g)
    tt = inp.type.tensor_type
    dims = [d.dim_value for d in tt.shape.dim]
    if tt.elem_type != TensorProto.FLOAT or len(dims) != 4 or dims[1] != 3 or not all(dims):
        raise ExportError(
            f"input {inp.name!r}: expected a static (B, 3, H, W) float32 input to make uint8, got {dims}"
        )
    if is_uint8_input(model):
        raise ExportError(f"input {inp.name!r} already takes uint8")
    name, inner = inp.name, PREFIX + "normalised"
    for n in g.node:  # the old graph now reads the normalised tensor
        n.input[:] = [inner if i == name else i for i in n.input]
    nodes = [helper.make_node("Cast", [name], [PREFIX + "float"], name=PREFIX + "cast", to=TensorProto.FLOAT)]
    if layout == "NHWC":  # (B, H, W, 3) -> (B, 3, H, W)
        nodes.append(
            helper.make_node(
                "Transpose",
                [PREFIX + "float"],
                [PREFIX + "nchw"],
                name=PREFIX + "transpose",
                perm=[0, 3, 1, 2],
            )
        )
    cur = nodes[-1].output[0]  # (B, 3, H, W) float32 BGR, 0..255
    nodes += [
        helper.make_node(
            "Gather", [cur, PREFIX + "bgr2rgb"], [PREFIX + "rgb"], name=PREFIX + "bgr2rgb", axis=1
        ),
        helper.make_node("Div", [PREFIX + "rgb", PREFIX + "255"], [inner], name=PREFIX + "div255"),
    ]
    g.initializer.extend(
        [
            numpy_helper.from_array(np.array([2, 1, 0], np.int64), PREFIX + "bgr2rgb"),
            numpy_helper.from_array(np.array(255.0, np.float32), PREFIX + "255"),
        ]
    )
    old = list(g.node)
    del g.node[:]
    g.node.extend(nodes + old)
    tt.elem_type = TensorProto.UINT8
    b, _, h, w = dims
    _set_dims(tt, [b, h, w, 3] if layout == "NHWC" else [b, 3, h, w])
    return {"rgb": False, "dtype": "uint8", "layout": layout}
