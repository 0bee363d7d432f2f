"""The one loader of ONNX model files: what is wrong with a file, said in one line naming it.

Every command that reads an ``.onnx`` (``val``, ``quantize``, ``gate``, ``build-engine``,
``inspect``) comes through here, so an empty, text, truncated, random-byte or wrong-opset file
gives a :class:`ModelFileError` ("<file>: <what is wrong>; expected ...") instead of a protobuf
traceback.

* :func:`sniff_onnx`   the checks that need no ``onnx`` package (exists, empty, text, Git LFS
                       pointer, zip/.pt, TensorRT engine header, not a protobuf ModelProto)
* :func:`load_onnx`    sniff, parse with ``onnx`` (imported inside), then structure and opset
* :func:`explain_load_failure`  the same line for a runtime that failed to open the file

Torch-free; ``onnx`` is imported only inside :func:`load_onnx` (the runtime may not have it).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .sidecar import MIN_OPSET, TRT86_MAX_OPSET, MetadataError

EXPECTED = "expected an ONNX model from `defectdet export` / `defectdet quantize`"
_HEAD = 512  # bytes read to tell a text file from a binary one
# An ONNX file is a protobuf ModelProto serialized field by field in number order: it starts with
# field 1 (ir_version, a varint), i.e. the byte 0x08.
_MODELPROTO_FIRST_BYTE = 0x08


class ModelFileError(MetadataError):
    """A model file that cannot be read as what it claims to be; the message names the file."""


class OnnxMissing(ModelFileError):
    """The ``onnx`` package is not installed (a Jetson may run without it: callers can fall back)."""


def _is_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        # a multi-byte character cut at the end of the sample is still text
        try:
            text = head[:-3].decode("utf-8")
        except UnicodeDecodeError:
            return False
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    return bool(text) and printable >= 0.95 * len(text)


def _is_engine(path: Path, head: bytes) -> bool:
    """An ultralytics ``.engine``: a 4-byte little-endian JSON length, then the JSON header."""
    n = int.from_bytes(head[:4], "little")
    if not 0 < n < len(head) - 4 or head[4:5] != b"{":
        return False
    try:
        return isinstance(json.loads(head[4 : 4 + n]), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def sniff_onnx(path: str | os.PathLike) -> Path:
    """Refuse, without ``onnx``, a file that cannot be an ONNX model; returns the path.

    Raises :class:`ModelFileError` for a missing, empty, text (a Git LFS pointer included), zip
    (a PyTorch ``.pt``), ultralytics ``.engine`` or other non-protobuf file.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a directory, not a model file" if path.is_dir() else "model not found"
        raise ModelFileError(f"{path}: {what}; {EXPECTED}")
    size = path.stat().st_size
    if size == 0:
        raise ModelFileError(f"{path}: empty file (0 bytes); {EXPECTED}")
    with open(path, "rb") as f:
        head = f.read(_HEAD)
    if head.startswith(b"version https://git-lfs"):
        raise ModelFileError(
            f"{path}: a Git LFS pointer ({size} bytes), not the model; run `git lfs pull`, "
            f"or copy the real file; {EXPECTED}"
        )
    if head.startswith(b"PK\x03\x04"):
        raise ModelFileError(
            f"{path}: a zip archive (a PyTorch .pt checkpoint?), not an ONNX model; "
            "export it with `defectdet export`"
        )
    if _is_engine(path, head):
        raise ModelFileError(
            f"{path}: a TensorRT .engine (ultralytics header), not an ONNX model; "
            "run it with a .engine name (the TensorRT backend)"
        )
    if head[0] != _MODELPROTO_FIRST_BYTE and _is_text(head):  # a ModelProto's first byte is not text
        first = head.decode("utf-8", "replace").strip().splitlines()[0][:40] if head.strip() else ""
        raise ModelFileError(
            f"{path}: a text file ({size} bytes, starts {first!r}), not an ONNX model; {EXPECTED}"
        )
    if head[0] != _MODELPROTO_FIRST_BYTE:
        raise ModelFileError(
            f"{path}: not an ONNX model ({size} bytes of unrecognised binary data: an ONNX file "
            f"starts with its ir_version field); {EXPECTED}"
        )
    return path


def _corrupt(path: Path, detail: str) -> ModelFileError:
    size = path.stat().st_size
    return ModelFileError(
        f"{path}: truncated or corrupt ONNX file ({size} bytes; {detail}); copy it again "
        f"or re-export; {EXPECTED}"
    )


def _check_structure(path: Path, model: Any) -> None:
    """A parsed ModelProto with a graph, inputs, outputs and a supported opset."""
    g = model.graph
    if model.ir_version <= 0 or not len(g.node) or not len(g.input) or not len(g.output):
        missing = [
            w
            for w, ok in (
                ("ir_version", model.ir_version > 0),
                ("nodes", len(g.node)),
                ("inputs", len(g.input)),
                ("outputs", len(g.output)),
            )
            if not ok
        ]
        raise _corrupt(path, f"parsed, but it has no {', no '.join(missing)}")
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None:
        raise ModelFileError(f"{path}: declares no ai.onnx opset (a truncated file?); {EXPECTED}")
    import onnx

    top = onnx.defs.onnx_opset_version()
    if opset < MIN_OPSET:
        raise ModelFileError(
            f"{path}: opset {opset} is older than {MIN_OPSET}, the oldest defectdet reads; "
            f"re-export with `defectdet export --opset {TRT86_MAX_OPSET}`"
        )
    if opset > top:
        raise ModelFileError(
            f"{path}: opset {opset} is newer than this onnx {onnx.__version__} knows (<= {top}); "
            f"re-export with `defectdet export --opset {TRT86_MAX_OPSET}` (TensorRT 8.5/8.6 "
            f"parse <= {TRT86_MAX_OPSET})"
        )


def _external(model: Any) -> bool:
    return any(t.data_location == 1 for t in model.graph.initializer)  # onnx.TensorProto.EXTERNAL


def load_onnx(path: str | os.PathLike, weights: bool = True, check: bool = True) -> Any:
    """The ``onnx.ModelProto`` of ``path``, or a one-line :class:`ModelFileError` saying what is wrong.

    Args:
        path: the ``.onnx`` file.
        weights: also load external weight files (False: the graph and metadata only).
        check: run ``onnx.checker`` (catches a file cut at a field boundary, which still parses).
    """
    path = sniff_onnx(path)
    try:
        import onnx
        from google.protobuf.message import DecodeError
    except ImportError as e:
        raise OnnxMissing(
            f"{path}: the `onnx` package is needed to read it ({e}); pip install onnx"
        ) from None
    try:
        model = onnx.load(str(path), load_external_data=weights)
    except DecodeError as e:
        raise _corrupt(path, f"protobuf: {str(e).splitlines()[0][:80]}") from None
    except (OSError, ValueError, RuntimeError) as e:  # a missing external-data file, a bad field value
        raise _corrupt(
            path, f"{type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
        ) from None
    _check_structure(path, model)
    if check and not _external(model):
        try:
            onnx.checker.check_model(model)
        except onnx.checker.ValidationError as e:
            first = next((ln for ln in str(e).splitlines() if ln.strip()), "")[:160]
            raise _corrupt(path, f"onnx.checker: {first}") from None
    return model


def explain_load_failure(path: str | os.PathLike, runtime: str, error: BaseException) -> ModelFileError:
    """The one-line error for ``path`` after ``runtime`` (e.g. onnxruntime) failed to open it: the
    loader's own diagnosis when it finds one, else the runtime's first line."""
    try:
        load_onnx(path, weights=False)
    except OnnxMissing:
        pass  # without onnx, the runtime's own words are all there is
    except ModelFileError as e:
        return e
    first = next((ln.strip() for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
    return ModelFileError(f"{path}: {runtime} cannot load the model ({type(error).__name__}: {first[:200]})")
