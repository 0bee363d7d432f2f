"""Model metadata: sidecar, ONNX metadata_props (ultralytics strings), engine header, thresholds YAML."""

import json

import pytest

from defectdet.artifact import (
    LAYOUT_END2END,
    MetadataError,
    load_metadata,
    load_thresholds,
    read_engine_header,
)

NAMES = {0: "scratch", 1: "spot", 2: "crack", 3: "dent"}

# What ultralytics 8.x writes into ONNX metadata_props: every value a string.
ULTRALYTICS_PROPS = {
    "stride": "32",
    "task": "detect",
    "batch": "1",
    "imgsz": "[256, 320]",
    "names": "{0: 'scratch', 1: 'spot', 2: 'crack', 3: 'dent'}",
    "args": "{'batch': 1, 'nms': None, 'dynamic': False, 'opset': 17}",
    "end2end": "False",
}


def _sidecar(tmp_path, **meta):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not read here")
    model.with_suffix(".json").write_text(json.dumps(meta))
    return model


def test_sidecar_contract(tmp_path):
    model = _sidecar(
        tmp_path,
        names={"0": "scratch", "1": "spot"},
        imgsz=[320, 320],
        strides=[8, 16, 32],
        preprocess={"letterbox": True, "rgb": True, "scale": 1 / 255, "pad_value": 114},
        input_name="images",
        output_layout="xywh+cls (1, 4+nc, A)",
        cls_loss="qfl",
        thresholds={"spot": 0.4, "0": 0.3},
    )
    m = load_metadata(model)
    assert m.names == {0: "scratch", 1: "spot"} and m.imgsz == (320, 320) and m.nc == 2
    assert m.strides == (8, 16, 32) and m.anchors() == 40 * 40 + 20 * 20 + 10 * 10
    assert m.preprocess.pad_value == 114 and m.preprocess.rgb and not m.end2end
    assert m.cls_loss == "qfl" and m.thresholds == {1: 0.4, 0: 0.3}
    assert m.source.endswith("model.json")


def test_embedded_ultralytics_strings_are_parsed_like_autobackend(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    m = load_metadata(model, ULTRALYTICS_PROPS)
    assert m.names == NAMES and m.imgsz == (256, 320) and m.strides == (8, 16, 32) and m.batch == 1
    assert not m.end2end
    assert load_metadata(model, {**ULTRALYTICS_PROPS, "end2end": "True"}).output_layout == LAYOUT_END2END


def test_defectdet_entry_in_metadata_props_is_read(tmp_path):
    """``defectdet export`` embeds a JSON entry with what ultralytics' keys lack."""
    model = tmp_path / "model.onnx"
    model.write_bytes(b"")
    entry = {"cls_loss": "qfl", "strides": [8, 16, 32, 64], "preprocess": {"letterbox": False}, "gamma": None}
    m = load_metadata(model, {**ULTRALYTICS_PROPS, "defectdet": json.dumps(entry)})
    assert m.cls_loss == "qfl" and m.strides == (8, 16, 32, 64) and not m.preprocess.letterbox


def test_sidecar_wins_over_embedded_and_fills_gaps(tmp_path):
    model = _sidecar(tmp_path, names={"0": "a", "1": "b"}, cls_loss="focal")
    m = load_metadata(model, {"imgsz": "[128, 128]", "names": "{0: 'x'}", "stride": "64"})
    assert m.names == {0: "a", 1: "b"} and m.imgsz == (128, 128) and m.strides == (16, 32, 64)


def test_missing_metadata_names_what_and_where(tmp_path):
    model = tmp_path / "bare.onnx"
    model.write_bytes(b"")
    with pytest.raises(MetadataError) as e:
        load_metadata(model, {"task": "detect"})
    msg = str(e.value)
    assert (
        "'names'" in msg and "'imgsz'" in msg and "bare.json (not found)" in msg and "metadata_props" in msg
    )
    with pytest.raises(MetadataError, match="'imgsz'") as e:
        load_metadata(_sidecar(tmp_path, names={"0": "a"}), {})
    assert "'names'" not in str(e.value)


@pytest.mark.parametrize(
    "meta, match",
    [
        ({"names": {"0": "a"}, "imgsz": [0, 320]}, "imgsz"),
        ({"names": {"0": "a", "2": "c"}, "imgsz": 320}, "ids must be 0..1"),
        ({"names": {"x": "a"}, "imgsz": 320}, "class ids"),
        ({"names": {"0": "a"}, "imgsz": 320, "preprocess": {"mean": 0}}, "unknown 'preprocess' keys"),
        ({"names": {"0": "a"}, "imgsz": 320, "strides": [8, "x"]}, "strides"),
        ({"names": {"0": "a"}, "imgsz": 320, "thresholds": {"dent": 0.5}}, "unknown class 'dent'"),
        ({"names": {"0": "a"}, "imgsz": 320, "thresholds": {"a": 2}}, r"in \[0, 1\]"),
    ],
)
def test_malformed_sidecar_values_are_named(tmp_path, meta, match):
    with pytest.raises(MetadataError, match=match):
        load_metadata(_sidecar(tmp_path, **meta))


def test_malformed_sidecar_json_names_file_and_line(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    model.with_suffix(".json").write_text('{\n "names": {"0": "a"},\n "imgsz": [320, 320],,\n}')
    with pytest.raises(MetadataError, match=r"m\.json:3: malformed JSON"):
        load_metadata(model)


def test_engine_header_roundtrip_and_bare_plan(tmp_path):
    meta = {"names": {"0": "scratch"}, "imgsz": [320, 320], "stride": 32}
    blob = json.dumps(meta).encode()
    plan = b"\x00ftrt-plan-bytes" * 10
    eng = tmp_path / "m.engine"
    eng.write_bytes(len(blob).to_bytes(4, "little") + blob + plan)
    offset, got = read_engine_header(eng)
    assert got == meta and eng.read_bytes()[offset:] == plan
    m = load_metadata(eng)  # no sidecar: the header provides it
    assert m.names == {0: "scratch"} and m.imgsz == (320, 320)
    bare = tmp_path / "bare.engine"
    bare.write_bytes(b"ftrt" + plan)  # a plain plan: the first 4 bytes are no sane length
    assert read_engine_header(bare) == (0, {})
    with pytest.raises(MetadataError, match="engine header"):
        load_metadata(bare)


def test_thresholds_yaml_by_name_and_id(tmp_path):
    f = tmp_path / "thresholds.yaml"
    f.write_text("thresholds:\n  scratch: 0.35\n  3: 0.6\n  '1': 0.2\nnote: calibrated at escape <= 0.5%\n")
    assert load_thresholds(f, NAMES) == {0: 0.35, 3: 0.6, 1: 0.2}
    assert load_thresholds({"thresholds": {"crack": 0.1}}, NAMES) == {2: 0.1}
    assert load_thresholds({"dent": 0.9}, NAMES) == {3: 0.9}


@pytest.mark.parametrize(
    "text, match",
    [
        (
            "thresholds:\n  rust: 0.3\n",
            r"thresholds\.yaml: threshold for unknown class 'rust'; expected one of",
        ),
        ("thresholds:\n  spot: high\n", "must be a number in"),
        ("scratch: 0.3\n", "top-level 'thresholds:'"),
        ("thresholds: [\n", r"thresholds\.yaml:\d+: malformed YAML"),
    ],
)
def test_thresholds_yaml_errors_name_the_file(tmp_path, text, match):
    f = tmp_path / "thresholds.yaml"
    f.write_text(text)
    with pytest.raises(MetadataError, match=match):
        load_thresholds(f, NAMES)


def test_thresholds_file_missing(tmp_path):
    with pytest.raises(MetadataError, match="not found"):
        load_thresholds(tmp_path / "nope.yaml", NAMES)
