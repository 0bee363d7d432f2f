"""The model bundle (defectdet/artifact/bundle.py): written, opened and verified, its id, its members,
the device cache; and every way a bundle can be wrong refused in one line naming the member. Fast:
no torch, no model (the members are small files)."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest

from defectdet.artifact.bundle import (
    MANIFEST,
    BundleError,
    engine_key,
    is_bundle,
    manifest_bytes,
    matching_engines,
    open_bundle,
    write_bundle,
)


def make_bundle(tmp_path: Path, calibration: bool = False, name: str = "model.bundle"):
    src = tmp_path / "src"
    (src / "fp32").mkdir(parents=True, exist_ok=True)
    (src / "fp32" / "model.onnx").write_bytes(b"\x08\x07onnx-fp32" * 100)
    (src / "fp32" / "model.json").write_text(
        json.dumps({"names": {"0": "scratch"}, "imgsz": [64, 64], "thresholds": {"scratch": 0.3}})
    )
    (src / "fp32" / "model.calib.cache").write_text("TRT-8602-EntropyCalibration2\nimages: 3c010a14\n")
    (src / "val_report.json").write_text('{"map50": 0.5}')
    files = {
        "fp32/model.onnx": src / "fp32" / "model.onnx",
        "fp32/model.json": src / "fp32" / "model.json",
        "reports/val/val_report.json": src / "val_report.json",
    }
    cal = None
    if calibration:
        files["calib/model.calib.cache"] = src / "fp32" / "model.calib.cache"
        cal = {"cache": "calib/model.calib.cache", "model": "fp32/model.onnx"}
    return write_bundle(
        tmp_path / name,
        files,
        {"fp32": "fp32/model.onnx"},
        "fp32",
        "fp32/model.json",
        calibration=cal,
        extra={"gate": None},
    )


def rewrite(bundle: Path, change=None, drop=None, add=None, manifest=None) -> None:
    """Rewrite the zip: ``change`` {member: new bytes}, ``drop`` a member, ``add`` {member: bytes},
    ``manifest`` a function editing the manifest dict."""
    with zipfile.ZipFile(bundle) as z:
        members = {n: z.read(n) for n in z.namelist()}
    members.update(change or {})
    members.pop(drop, None)
    members.update(add or {})
    if manifest:
        doc = json.loads(members[MANIFEST])
        manifest(doc)
        members[MANIFEST] = manifest_bytes(doc)
    os.unlink(bundle)
    with zipfile.ZipFile(bundle, "w") as z:
        for n, data in members.items():
            z.writestr(n, data)


def refusal(path: Path) -> str:
    with pytest.raises(BundleError) as e:
        open_bundle(path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    return msg


def test_written_bundle_opens_verified_with_its_manifest_hash_as_id(tmp_path):
    b = make_bundle(tmp_path)
    assert is_bundle(b.path) and not is_bundle(tmp_path / "src" / "val_report.json")
    with zipfile.ZipFile(b.path) as z:
        raw = z.read(MANIFEST)
        assert sorted(z.namelist()) == sorted([MANIFEST, *b.members()])
    assert b.id == hashlib.sha256(raw).hexdigest() and b.label == f"model.bundle:{b.id[:12]}"
    assert b.members() == ["fp32/model.json", "fp32/model.onnx", "reports/val/val_report.json"]
    assert (
        b.manifest["files"]["fp32/model.onnx"]["sha256"]
        == hashlib.sha256(b"\x08\x07onnx-fp32" * 100).hexdigest()
    )
    assert b.card()["thresholds"] == {"scratch": 0.3} and b.deployed == "fp32"
    again = make_bundle(tmp_path, name="again.bundle")  # the id depends on the content only
    assert again.id == b.id and not list(tmp_path.glob(".*"))  # no temp files left


def test_extract_unpacks_once_and_restores_a_changed_file(tmp_path):
    b = make_bundle(tmp_path)
    onnx = b.model_file()
    assert onnx == tmp_path / "model.bundle.cache" / b.id[:16] / "files" / "fp32" / "model.onnx"
    assert onnx.read_bytes() == b"\x08\x07onnx-fp32" * 100 and onnx.with_suffix(".json").is_file()
    t = onnx.stat().st_mtime_ns
    assert b.model_file() == onnx and onnx.stat().st_mtime_ns == t  # verified, not unpacked again
    onnx.write_bytes(b"changed on the device")
    assert b.model_file().read_bytes() == b"\x08\x07onnx-fp32" * 100
    with pytest.raises(BundleError, match="no int8 model; it holds fp32"):
        b.model_file("int8")


@pytest.mark.parametrize("member", ["fp32/model.onnx", "fp32/model.json", "reports/val/val_report.json"])
def test_a_changed_member_is_refused_naming_it(tmp_path, member):
    b = make_bundle(tmp_path)
    rewrite(b.path, change={member: b"tampered"})
    assert (
        refusal(b.path) == f"{b.path}: {member}: sha256 differs from the manifest (changed after packaging)"
    )


def test_a_missing_member_an_extra_member_and_a_bad_manifest_are_refused(tmp_path):
    b = make_bundle(tmp_path)
    rewrite(b.path, drop="fp32/model.json")
    assert refusal(b.path) == f"{b.path}: fp32/model.json: listed in the manifest but missing"
    b = make_bundle(tmp_path, name="b.bundle")
    rewrite(b.path, add={"fp32/model.engine": b"plan"})
    assert (
        refusal(b.path) == f"{b.path}: fp32/model.engine: not listed in the manifest (added after packaging)"
    )
    c = make_bundle(tmp_path, name="c.bundle")
    rewrite(
        c.path,
        add={"../evil": b"x"},
        manifest=lambda m: m["files"].update({"../evil": {"sha256": "0", "size": 1}}),
    )
    assert "member '../evil' is not a plain relative path" in refusal(c.path)
    d = make_bundle(tmp_path, name="d.bundle")
    rewrite(d.path, change={MANIFEST: b"{not json"})
    assert "manifest.json: malformed JSON" in refusal(d.path)
    (tmp_path / "e.bundle").write_bytes(b"PK not really")
    assert (
        refusal(tmp_path / "e.bundle")
        == f"{tmp_path / 'e.bundle'}: not a zip file; expected the .bundle file "
        "`defectdet package` wrote"
    )


def test_calibration_cache_is_paired_with_its_model(tmp_path):
    b = make_bundle(tmp_path, calibration=True)
    assert b.manifest["calibration"] == {
        "cache": "calib/model.calib.cache",
        "model": "fp32/model.onnx",
        "model_sha256": b.manifest["files"]["fp32/model.onnx"]["sha256"],
    }
    other = hashlib.sha256(b"another model").hexdigest()
    rewrite(b.path, manifest=lambda m: m["calibration"].update(model_sha256=other))
    msg = refusal(b.path)
    assert msg.startswith(
        f"{b.path}: calib/model.calib.cache: paired with another model (sha256 {other[:12]})"
    )
    assert "not this bundle's fp32/model.onnx" in msg


def test_write_refuses_what_it_cannot_vouch_for(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes(b"m")
    with pytest.raises(BundleError, match="deployed='int8'; expected one of"):
        write_bundle(tmp_path / "x.bundle", {"m.onnx": src}, {"fp32": "m.onnx"}, "int8", "m.onnx")
    with pytest.raises(BundleError, match="card names m.json, which is not among the members"):
        write_bundle(tmp_path / "x.bundle", {"m.onnx": src}, {"fp32": "m.onnx"}, "fp32", "m.json")
    with pytest.raises(BundleError, match="member m.json comes from .*, which is not a file"):
        write_bundle(
            tmp_path / "x.bundle", {"m.json": tmp_path / "nope"}, {"fp32": "m.json"}, "fp32", "m.json"
        )
    assert not (tmp_path / "x.bundle").exists()


def test_engine_keys_and_matching_engines(tmp_path):
    assert engine_key("Orin", "8.7", "10.3.0.30", "int8") == "orin-sm87_gpu_trt10.3.0.30_int8"
    assert (
        engine_key("Xavier NX", "7.2", "8.5.2.2", "fp16", dla_core=1) == "xavier-nx-sm72_dla1_trt8.5.2.2_fp16"
    )
    b = make_bundle(tmp_path)
    assert matching_engines(b, "Orin", "8.7", "10.3.0.30") == []
    root = b.engines_dir()
    for key in (
        engine_key("Orin", "8.7", "10.3.0.30", "int8"),
        engine_key("Orin", "8.7", "10.3.0.30", "fp16", 0),
        engine_key("Orin", "8.7", "8.6.2", "int8"),
        engine_key("Xavier", "7.2", "10.3.0.30", "int8"),
    ):
        (root / key).mkdir(parents=True)
        (root / key / "model.engine").write_bytes(key.encode())
    os.utime(root / engine_key("Orin", "8.7", "10.3.0.30", "int8") / "model.engine", (1, 1))  # the older one
    found = matching_engines(b, "Orin", "8.7", "10.3.0.30")
    assert [e.parent.name for e in found] == [
        "orin-sm87_dla0_trt10.3.0.30_fp16",
        "orin-sm87_gpu_trt10.3.0.30_int8",
    ]


def test_device_cache_elsewhere_and_unwritable(tmp_path, monkeypatch):
    b = make_bundle(tmp_path)
    monkeypatch.setenv("DEFECTDET_BUNDLE_CACHE", str(tmp_path / "var"))
    assert (
        b.model_file()
        == tmp_path / "var" / "model.bundle.cache" / b.id[:16] / "files" / "fp32" / "model.onnx"
    )
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("DEFECTDET_BUNDLE_CACHE", str(blocker))
    with pytest.raises(BundleError) as e:
        b.extract()
    assert str(e.value).startswith(
        f"{b.path}: cannot write its device cache {blocker / 'model.bundle.cache'}"
    )
    assert "DEFECTDET_BUNDLE_CACHE" in str(e.value) and "\n" not in str(e.value)
