"""The model artefact: what travels with a detector's weights, read and written here only.

An exported model is three things: the graph (``model.onnx`` / ``model.int8.onnx`` / ``.engine``),
the metadata embedded in it (ultralytics' ``metadata_props`` plus a ``defectdet`` entry, or the
ultralytics engine header), and the sidecar ``model.json`` beside it, which carries the per-class
``thresholds`` the line runs at. ``defectdet export`` creates them; ``quantize``, ``gate``,
``build-engine`` and ``val --write-sidecar`` update the sidecar; the runtime reads them.

* :mod:`.sidecar`     constants (pre-processing, layouts, strides, opset limit), sidecar and
                      engine-header files, hashes
* :mod:`.onnx_file`   :func:`load_onnx`: the one loader of ONNX files (one-line errors for
                      empty, text, truncated, random-byte and wrong-opset files)
* :mod:`.onnx_graph`  metadata_props, I/O shapes, opset, the sidecar of an exported graph, saving
* :mod:`.metadata`    :func:`load_metadata` -> :class:`ModelMetadata` (what the runtime needs)
* :mod:`.thresholds`  the one thresholds parser (names or ids, partial, checked values) and files

Torch-free: stdlib, numpy and pyyaml only; ``onnx`` is imported inside :func:`load_onnx`, the one
function that loads a graph file.
"""

from .metadata import ModelMetadata, load_metadata
from .onnx_file import ModelFileError, OnnxMissing, explain_load_failure, load_onnx, sniff_onnx
from .onnx_graph import (
    build_metadata,
    defectdet_entry,
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
    read_engine_header,
    read_sidecar,
    sha256_file,
    sidecar_path,
    update_sidecar,
    write_sidecar,
)
from .thresholds import (
    by_name,
    load_thresholds,
    parse_thresholds,
    sidecar_names,
    sidecar_thresholds,
    write_sidecar_thresholds,
    write_thresholds_file,
)

__all__ = [
    "DEFAULT_STRIDES", "INPUT_DTYPES", "INPUT_LAYOUTS", "LAYOUT_END2END", "LAYOUT_XYWH_CLS", "MIN_OPSET", "OUTPUT_LAYOUT", "PREPROCESS",
    "SIDECAR_SUFFIX", "TRT86_MAX_OPSET", "MetadataError", "ModelFileError", "ModelMetadata", "OnnxMissing", "Preprocess", "build_metadata",
    "by_name", "defectdet_entry", "embed_metadata", "explain_load_failure", "graph_preprocess", "has_qdq", "input_format", "io_shapes", "load_metadata", "load_onnx", "load_props",
    "load_thresholds", "opset_version", "parse_thresholds", "props", "read_engine_header", "read_sidecar",
    "save_onnx", "sha256_file", "sniff_onnx", "sidecar_names", "sidecar_path", "sidecar_thresholds", "update_sidecar", "write_sidecar",
    "write_sidecar_thresholds", "write_thresholds_file",
]
