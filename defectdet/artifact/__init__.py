"""The model artefact and the facts about a model, as typed values, read and written here only.

An exported model is three things: the graph (``model.onnx`` / ``model.int8.onnx`` / ``.engine``),
the metadata embedded in it (ultralytics' ``metadata_props`` plus a ``defectdet`` entry, or the
ultralytics engine header), and its card, the sidecar ``model.json`` beside it. The facts travel
as frozen values created once and read below their owner:

* :mod:`.run`         :class:`RunInfo` (``<run>/defectdet.yaml``: loss, resolved :class:`Recipe`,
                      imgsz / eval_imgsz, optimizer) written by ``defectdet train``
* :mod:`.card`        :class:`ModelCard` (the sidecar): created by export, derived by quantize and
                      build-engine, amended by gate and ``val --write-sidecar``
* :mod:`.thresholds`  :class:`Thresholds` (class names + per-class values, the one parser, files)
* :mod:`.onnx_file`   :func:`load_onnx`: the one loader of ONNX files (one-line errors for
                      empty, text, truncated, random-byte and wrong-opset files)
* :mod:`.metadata`    :func:`load_metadata` -> :class:`ModelMetadata` (what the runtime needs)
* :mod:`.sidecar`     constants (pre-processing, layouts, strides, opset limit), files, hashes
* :mod:`.onnx_graph`  metadata_props, I/O shapes, opset, saving a graph

Torch-free: stdlib, numpy and pyyaml only; ``onnx`` is imported inside :func:`load_onnx`, the one
function that loads a graph file.
"""

from .card import GateVerdict, ModelCard
from .metadata import ModelMetadata, load_metadata
from .onnx_file import ModelFileError, OnnxMissing, explain_load_failure, load_onnx, sniff_onnx
from .onnx_graph import (
    embed_metadata,
    graph_preprocess,
    has_qdq,
    input_format,
    io_shapes,
    load_props,
    opset_version,
    props,
    save_onnx,
)
from .run import Recipe, RunInfo
from .sidecar import (
    DEFAULT_STRIDES,
    INPUT_DTYPES,
    INPUT_LAYOUTS,
    LAYOUT_END2END,
    LAYOUT_XYWH_CLS,
    MIN_OPSET,
    OUTPUT_LAYOUT,
    PREPROCESS,
    SIDECAR_SUFFIX,
    TRT86_MAX_OPSET,
    MetadataError,
    Preprocess,
    model_id,
    read_engine_header,
    read_sidecar,
    sha256_file,
    sidecar_path,
)
from .thresholds import Thresholds, load_thresholds, parse_thresholds

__all__ = [
    "DEFAULT_STRIDES",
    "INPUT_DTYPES",
    "INPUT_LAYOUTS",
    "LAYOUT_END2END",
    "LAYOUT_XYWH_CLS",
    "MIN_OPSET",
    "OUTPUT_LAYOUT",
    "PREPROCESS",
    "SIDECAR_SUFFIX",
    "TRT86_MAX_OPSET",
    "GateVerdict",
    "MetadataError",
    "ModelCard",
    "ModelFileError",
    "ModelMetadata",
    "OnnxMissing",
    "Preprocess",
    "Recipe",
    "RunInfo",
    "Thresholds",
    "embed_metadata",
    "explain_load_failure",
    "graph_preprocess",
    "has_qdq",
    "input_format",
    "io_shapes",
    "load_metadata",
    "load_onnx",
    "load_props",
    "load_thresholds",
    "model_id",
    "opset_version",
    "parse_thresholds",
    "props",
    "read_engine_header",
    "read_sidecar",
    "save_onnx",
    "sha256_file",
    "sidecar_path",
    "sniff_onnx",
]
