"""Small ONNX files, good and bad, for the tests of the one model loader (no torch, no ultralytics)."""

from __future__ import annotations

import json
import random
from pathlib import Path

GOOD_META = {"names": {"0": "scratch"}, "imgsz": [32, 32]}


def tiny_onnx(opset: int = 17) -> bytes:
    """A valid one-node graph (1, 3, 32, 32) -> (1, 3, 32, 32) with ultralytics-style metadata."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 32, 32])
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 3, 32, 32])
    g = helper.make_graph([helper.make_node("Relu", ["images"], ["output0"])], "g", [x], [y])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.opset_import[0].version = opset  # make_model would check it
    for k, v in (("names", "{0: 'scratch'}"), ("imgsz", "[32, 32]"), ("stride", "32")):
        m.metadata_props.add(key=k, value=v)
    return m.SerializeToString()


def random_bytes(n: int = 4096, seed: int = 0) -> bytes:
    data = bytearray(random.Random(seed).getrandbits(8) for _ in range(n))
    data[0] = 0xA7  # not 0x08, the first byte of every ONNX file (its ir_version field)
    return bytes(data)


# kind -> (file bytes, a word the one-line error must contain)
def bad_models() -> dict:
    good = tiny_onnx()
    return {
        "empty": (b"", "empty file"),
        "text": (b"this is not a model\nbut a text file\n", "a text file"),
        "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n", "Git LFS pointer"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt"),
        "random": (random_bytes(), "not an ONNX model"),
        "zip": (b"PK\x03\x04" + random_bytes(200), "zip archive"),
        "old-opset": (tiny_onnx(7), "opset 7"),
        "new-opset": (tiny_onnx(99), "opset 99"),
    }


def write_model(folder: Path, name: str, data: bytes, sidecar: bool = True) -> Path:
    path = Path(folder) / name
    path.write_bytes(data)
    if sidecar:
        path.with_suffix(".json").write_text(json.dumps(GOOD_META))
    return path
