"""The typed facts of defectdet.artifact: RunInfo (defectdet.yaml), ModelCard (the sidecar) and
Thresholds round-trip today's files unchanged, fail in one line naming file and key, and are the
only place such files are built (a scan of defectdet/ and bench/)."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from defectdet.artifact import (
    GateVerdict,
    MetadataError,
    ModelCard,
    Recipe,
    RunInfo,
    Thresholds,
    load_metadata,
)
from defectdet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
NAMES = {0: "scratch", 1: "spot", 2: "crack"}

# what `defectdet train` wrote before RunInfo existed (a crop=native run on the CPU)
OLD_RUN = {
    "cls_loss": "focal",
    "gamma": 1.0,
    "alpha": 0.5,
    "cls": 4.0,
    "data": "/d/data.yaml",
    "threads": 2,
    "sampling": "defect",
    "crop": "native",
    "eval_imgsz": 320,
    "paste": 0.5,
    "rot90": 0.0,
    "defect_fraction": 0.5,
    "repeat_thresh": None,
    "optimizer": "AdamW",
    "lr0": 0.003,
    "nbs": 16,
}

# what `defectdet export` + `quantize` + `gate` + `build-engine` wrote before ModelCard existed
OLD_CARD = {
    "names": {"0": "scratch", "1": "spot", "2": "crack"},
    "imgsz": [320, 320],
    "strides": [8, 16, 32],
    "preprocess": {
        "letterbox": True,
        "rgb": True,
        "scale": 1 / 255,
        "pad_value": 114,
        "dtype": "float32",
        "layout": "NCHW",
    },
    "input_name": "images",
    "input_shape": [1, 3, 320, 320],
    "output_name": "output0",
    "output_shape": [1, 7, 2100],
    "output_layout": "xywh+cls (1, 4+nc, A)",
    "batch": 1,
    "task": "detect",
    "cls_loss": "focal",
    "gamma": 1.0,
    "alpha": 0.5,
    "recipe": {
        "sampling": "defect",
        "defect_fraction": 0.5,
        "repeat_thresh": None,
        "paste": 0.5,
        "rot90": 0.0,
        "crop": "native",
        "eval_imgsz": 320,
    },
    "source": {"checkpoint": "/r/weights/best.pt", "sha256": "ab" * 32},
    "precision": "int8-qdq",
    "opset": 17,
    "versions": {"defectdet": "0.1.0", "ultralytics": "8.4.190", "date": "2026-12-06T10:00:00+00:00"},
    "thresholds": {"scratch": 0.31, "crack": 0.17},
    "gate": {
        "decision": "passed",
        "report": "model.int8.gate.json",
        "date": "2026-12-06T10:05:00+00:00",
        "map50_fp32": 0.65,
        "map50_int8": 0.64,
        "reasons": [],
    },
    "source_onnx": {"path": "/r/weights/model.onnx", "sha256": "cd" * 32},
    "quantization": {
        "tool": "onnxruntime.quantization.quantize_static",
        "kept_float": ["/model.23/cv3.0/Conv"],
    },
    "engine": {"path": "model.int8.engine", "precision": "int8", "tensorrt": "10.3.0", "dla_core": None},
    "a_key_from_a_later_version": {"kept": True},
}


# ----------------------------------------------------------------------------- Thresholds
def test_thresholds_parse_names_ids_and_partial_files():
    t = Thresholds.parse({"scratch": 0.3, 2: 0.1, "1": 0.6}, NAMES, "t.yaml")
    assert t.names == ("scratch", "spot", "crack") and t.values == (0.3, 0.6, 0.1) and t.complete
    part = Thresholds.parse({"crack": 0.2}, NAMES, "t.yaml")
    assert part.given == {2: 0.2} and not part.complete and part.by_name() == {"crack": 0.2}
    assert (
        part.vector(0.25).tolist() == pytest.approx([0.25, 0.25, 0.2]) and part.vector().dtype == np.float32
    )
    merged = part.over(Thresholds.of(NAMES, {0: 0.4, 2: 0.9}))  # given ones win, the sidecar's fill in
    assert merged.values == (0.4, None, 0.2) and merged.filled(0.25).values == (0.4, 0.25, 0.2)
    assert Thresholds.load(merged, NAMES) is merged  # parsed once, then passed on as it is
    with pytest.raises(MetadataError, match=r"expected the model's \['a', 'b'\]"):
        Thresholds.load(merged, {0: "a", 1: "b"})


@pytest.mark.parametrize(
    "mapping, match",
    [
        ({"dent": 0.3}, r"t.yaml: threshold for unknown class 'dent'; expected one of"),
        ({"scratch": 1.5}, r"t.yaml: threshold for class 'scratch' must be a number in \[0, 1\], got 1.5"),
        ({"scratch": 0.3, 0: 0.4}, r"t.yaml: class 'scratch' has two thresholds"),
        ([0.3], r"t.yaml: 'thresholds' must be a mapping"),
    ],
)
def test_thresholds_errors_name_file_and_key(mapping, match):
    with pytest.raises(MetadataError, match=match):
        Thresholds.parse(mapping, NAMES, "t.yaml")


def test_thresholds_file_round_trip(tmp_path):
    t = Thresholds.of(NAMES, {0: 0.3123456789, 2: 1e-7})
    path = t.save(tmp_path / "thresholds.yaml", target_escape=0.05)
    doc = yaml.safe_load(path.read_text())
    assert doc == {"thresholds": {"scratch": 0.3123456789, "crack": 1e-7}, "target_escape": 0.05}  # unrounded
    assert Thresholds.load(path, NAMES) == t


# ----------------------------------------------------------------------------- RunInfo
def test_run_info_reads_todays_file_and_writes_the_same_keys(tmp_path):
    (tmp_path / "defectdet.yaml").write_text(yaml.safe_dump(OLD_RUN))
    run = RunInfo.find(tmp_path / "weights" / "best.pt")
    assert run.recipe == Recipe(
        sampling="defect", defect_fraction=0.5, paste=0.5, crop="native", eval_imgsz=320
    )
    assert run.deploy_imgsz == 320 and run.cls_loss == "focal" and run.threads == 2 and run.imgsz is None
    written = run.to_dict()
    assert {k: written[k] for k in OLD_RUN} == OLD_RUN  # every key of today's file, same value
    assert run.recipe.card_entry() == OLD_CARD["recipe"]  # what the model card records
    run.replace(imgsz=160).save(tmp_path / "again.yaml")
    assert RunInfo.load(tmp_path / "again.yaml") == run.replace(imgsz=160)


def test_run_info_of_an_old_run_without_recipe_and_unknown_keys(tmp_path):
    (tmp_path / "defectdet.yaml").write_text("cls_loss: qfl\ngamma: 1.5\nalpha: null\nnote: kept\n")
    run = RunInfo.load(tmp_path / "defectdet.yaml")
    assert run.recipe is None and run.deploy_imgsz is None and run.extra == {"note": "kept"}
    assert run.to_dict()["note"] == "kept" and "sampling" not in run.to_dict()
    assert RunInfo.find(tmp_path / "elsewhere" / "x" / "best.pt") is None


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("eval_imgsz", "big", "a whole number of pixels"),
        ("sampling", "auto", "uniform, defect or repeat"),
        ("lr0", -1, "a number > 0"),
        ("gamma", "two", "a number >= 0"),
    ],
)
def test_a_bad_run_file_is_one_line_naming_file_and_key(tmp_path, key, value, expected):
    path = tmp_path / "defectdet.yaml"
    path.write_text(yaml.safe_dump({**OLD_RUN, key: value}))
    with pytest.raises(ConfigError) as e:
        RunInfo.load(path)
    assert str(e.value) == f"{path}: {key}={value!r}: expected {expected}"


# ----------------------------------------------------------------------------- ModelCard
def test_card_round_trips_todays_sidecar_key_for_key(tmp_path):
    side = tmp_path / "model.int8.json"
    side.write_text(json.dumps(OLD_CARD))
    card = ModelCard.load(tmp_path / "model.int8.onnx")
    assert card.gate == GateVerdict("passed", "model.int8.gate.json", "2026-12-06T10:05:00+00:00", 0.65, 0.64)
    assert card.thresholds.given == {0: 0.31, 2: 0.17} and card.imgsz == (320, 320)
    assert card.to_dict() == OLD_CARD  # same keys, same values: old files and the runtime read them
    card.save(tmp_path / "copy.int8.onnx")
    assert json.loads((tmp_path / "copy.int8.json").read_text()) == OLD_CARD
    meta = load_metadata(tmp_path / "copy.int8.onnx", {})
    assert meta.names == NAMES and meta.thresholds == {0: 0.31, 2: 0.17} and meta.imgsz == (320, 320)


def test_card_derive_amend_and_the_embedded_entry(tmp_path):
    fp32 = ModelCard.from_dict({**OLD_CARD, "precision": "fp32", "parity": {"ok": True}})
    int8 = fp32.derive(precision="int8-qdq", quantization={"tool": "x"})
    assert (int8.parity, int8.gate, int8.engine) == (None, None, None)  # they described the FP32 file only
    assert int8.thresholds == fp32.thresholds and int8.names == fp32.names and int8.precision == "int8-qdq"
    entry = json.loads(int8.embedded_entry())
    assert entry == {
        k: OLD_CARD[k]
        for k in ("cls_loss", "gamma", "alpha", "source", "preprocess", "strides", "output_layout")
    } | {"precision": "int8-qdq"}
    model = tmp_path / "model.onnx"
    fp32.save(model)
    ModelCard.amend(model, thresholds={"spot": 0.5}, gate=GateVerdict("refused", reasons=("mAP50 -3.0",)))
    doc = json.loads((tmp_path / "model.json").read_text())
    assert doc["thresholds"] == {"spot": 0.5} and doc["gate"] == {
        "decision": "refused",
        "reasons": ["mAP50 -3.0"],
    }
    assert {k: v for k, v in doc.items() if k not in ("thresholds", "gate")} == {
        k: v for k, v in fp32.to_dict().items() if k not in ("thresholds", "gate")
    }  # nothing else changed
    with pytest.raises(MetadataError, match="threshold for unknown class 'dent'"):
        ModelCard.amend(model, thresholds={"dent": 0.5})


def test_the_model_id_names_the_file_and_its_hash(tmp_path):
    import hashlib

    from defectdet.artifact import model_id

    (tmp_path / "model.onnx").write_bytes(b"graph")
    assert model_id(tmp_path / "model.onnx") == "model.onnx:" + hashlib.sha256(b"graph").hexdigest()[:12]


def test_a_card_leaves_out_what_it_does_not_have(tmp_path):
    card = ModelCard(names={0: "a"}, imgsz=(64, 64))
    assert card.to_dict() == {"names": {"0": "a"}, "imgsz": [64, 64]}  # absent keys stay absent, not null
    assert ModelCard(names={0: "a"}, cls_loss="bce").to_dict() == {
        "names": {"0": "a"},
        "cls_loss": "bce",
        "gamma": None,
        "alpha": None,
    }  # as export writes


@pytest.mark.parametrize(
    "change, match",
    [
        ({"batch": "one"}, r"model.json: 'batch' must be an integer"),
        ({"strides": [8, "x"]}, r"model.json: 'strides' must be a list of integers"),
        ({"gate": "passed"}, r"model.json: 'gate' must be a mapping with a 'decision'"),
        ({"preprocess": {"dtype": "int4"}}, r"model.json: 'preprocess.dtype' must be one of"),
        ({"names": None, "thresholds": {"a": 0.1}}, r"model.json: 'thresholds' without 'names'"),
    ],
)
def test_a_bad_card_is_one_line_naming_file_and_key(tmp_path, change, match):
    (tmp_path / "model.json").write_text(json.dumps({**OLD_CARD, **change}))
    with pytest.raises(MetadataError, match=match):
        ModelCard.load(tmp_path / "model.onnx")
    with pytest.raises(MetadataError, match="no sidecar beside nope.onnx"):
        ModelCard.load(tmp_path / "nope.onnx")


# ----------------------------------------------------------------------------- ownership
FORBIDDEN_CALLS = {
    "write_sidecar",
    "update_sidecar",
    "write_sidecar_thresholds",
    "read_sidecar",
    "build_metadata",
    "defectdet_entry",
    "sidecar_thresholds",
    "sidecar_names",
    "write_thresholds_file",
}
CARD_ONLY_KEYS = {
    "parity",
    "gate",
    "engine",
    "quantization",
    "source_onnx",
    "precision",
    "output_layout",
    "strides",
}
SIDECAR_SHAPE = {"preprocess", "input_name", "output_layout"}


def hand_built_facts(source: str, where: str) -> list[str]:
    """Places in ``source`` that build a sidecar or ``defectdet.yaml`` by hand: a call of the raw
    sidecar helpers, the ``defectdet.yaml`` file name, a dict literal shaped like a sidecar
    (``names`` + ``imgsz`` + a pre-processing/layout key), or a card-only key set by subscript."""
    found = []
    for n in ast.walk(ast.parse(source)):
        if isinstance(n, ast.Call):
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in FORBIDDEN_CALLS:
                found.append(f"{where}:{n.lineno}: calls {name}()")
        elif isinstance(n, ast.Constant) and n.value == "defectdet.yaml":
            found.append(f"{where}:{n.lineno}: names defectdet.yaml (use RunInfo.path / RunInfo.find)")
        elif isinstance(n, ast.Dict):
            keys = {k.value for k in n.keys if isinstance(k, ast.Constant)}
            if {"names", "imgsz"} <= keys and keys & SIDECAR_SHAPE:
                found.append(f"{where}:{n.lineno}: a sidecar-shaped dict (use ModelCard)")
        elif isinstance(n, (ast.Assign, ast.AugAssign)):
            for target in n.targets if isinstance(n, ast.Assign) else [n.target]:
                for s in ast.walk(target):
                    if (
                        isinstance(s, ast.Subscript)
                        and isinstance(s.slice, ast.Constant)
                        and s.slice.value in CARD_ONLY_KEYS
                    ):
                        found.append(f"{where}:{n.lineno}: sets [{s.slice.value!r}] (use ModelCard.replace)")
    return found


def test_the_scan_sees_the_ways_files_were_built_by_hand():
    old = """
meta = build_metadata(model, ckpt, sha, strides, "fp32", 17, training_info(ckpt))
meta["parity"] = result
side = write_sidecar(sidecar_path(dst), meta)
update_sidecar(int8, gate=gate)
meta = {"names": {"0": "a"}, "imgsz": [64, 64], "preprocess": {}, "cls_loss": "bce"}
dump_yaml(Path(trainer.save_dir) / "defectdet.yaml", {**info, **optim})
"""
    kinds = sorted(f.split(": ", 1)[1].split(" (")[0] for f in hand_built_facts(old, "old.py"))
    assert kinds == [
        "a sidecar-shaped dict",
        "calls build_metadata()",
        "calls update_sidecar()",
        "calls write_sidecar()",
        "names defectdet.yaml",
        "sets ['parity']",
    ]
    assert (
        hand_built_facts("stats = {'names': names, 'imgsz': 640, 'strides': [8]}\nkw['imgsz'] = 640\n", "x")
        == []
    )


def test_no_sidecar_or_run_file_is_built_outside_artifact():
    files = [
        p
        for p in sorted((ROOT / "defectdet").rglob("*.py")) + sorted((ROOT / "bench").rglob("*.py"))
        if (ROOT / "defectdet" / "artifact") not in p.parents
    ]
    assert len(files) > 50
    found = [
        f for p in files for f in hand_built_facts(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    ]
    assert not found, "built outside defectdet.artifact:\n" + "\n".join(found)
