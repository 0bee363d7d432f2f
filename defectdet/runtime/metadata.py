"""Model metadata for the runtime: a re-export of :mod:`defectdet.artifact`, which owns it."""

from ..artifact import (  # noqa: F401  (the runtime's names for the artefact's reader)
    LAYOUT_END2END,
    LAYOUT_XYWH_CLS,
    SIDECAR_SUFFIX,
    MetadataError,
    ModelMetadata,
    Preprocess,
    load_metadata,
    load_thresholds,
    parse_thresholds,
    read_engine_header,
    sidecar_path,
)
