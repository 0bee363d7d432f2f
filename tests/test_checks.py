"""``defectdet checks``: every device probe against fakes (the commands it runs, the files it reads,
the modules it imports, the CUDA device), and the command here, where no GPU is: ✘ lines, exit 0,
non-zero with --strict, --json for fleets."""

from __future__ import annotations

import json
import types

import pytest

from defectdet import checks as C
from defectdet.cli import main
from defectdet.runtime.backends import BackendUnavailable

ORIN = {"gpu": "Orin", "compute_capability": "8.7", "dla_cores": 2, "tensorrt": "10.3.0"}


def fake_commands(monkeypatch, present: dict):
    """``present``: program -> function(args) -> (status, text); other programs are not installed."""

    def run(cmd, timeout=20.0):
        fn = present.get(cmd[0])
        return None if fn is None else fn(cmd[1:])

    monkeypatch.setattr(C, "_run", run)


def gst(elements):
    return lambda args: (
        (0, "gst-inspect-1.0 version 1.20.3")
        if args == ["--version"]
        else ((0, "") if args[-1] in elements else (1, ""))
    )


@pytest.mark.parametrize(
    "text,detail,ok",
    [
        (
            "# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64",
            "L4T R36.4.3 (JetPack 6.2)",
            True,
        ),
        (
            "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref",
            "L4T R35.4.1 (JetPack 5.1.2)",
            True,
        ),
        ("# R36 (release), REVISION: 9.0, GCID: 1", "L4T R36.9.0 (JetPack 6.x)", True),
        ("# R32 (release), REVISION: 7.1, GCID: 1", "L4T R32.7.1", False),
        ("garbage", "unrecognised", False),
    ],
)
def test_jetpack_release_from_nv_tegra_release(monkeypatch, text, detail, ok):
    monkeypatch.setattr(C, "_read", lambda path: text if path == C.TEGRA_RELEASE else None)
    c = C.jetpack()
    assert c.ok is ok and detail in c.detail


def test_not_a_jetson(monkeypatch):
    monkeypatch.setattr(C, "_read", lambda path: None)
    c = C.jetpack()
    assert c.ok is False and "not a Jetson" in c.detail and c.fix


def test_opencv_gstreamer_from_build_information():
    yes = types.SimpleNamespace(getBuildInformation=lambda: "  Video I/O:\n    GStreamer:   YES (1.20.3)\n")
    no = types.SimpleNamespace(getBuildInformation=lambda: "  Video I/O:\n    GStreamer:   NO\n")
    assert (C.opencv_gstreamer(yes).ok, C.opencv_gstreamer(yes).detail) == (True, "YES (1.20.3)")
    c = C.opencv_gstreamer(no)
    assert c.ok is False and c.detail == "NO" and "WITH_GSTREAMER=ON" in c.fix
    assert C.opencv_gstreamer(None).ok is False


def test_gstreamer_elements_per_source_kind(monkeypatch):
    jetson = {
        "nvarguscamerasrc",
        "nvvidconv",
        "appsink",
        "rtspsrc",
        "rtph264depay",
        "h264parse",
        "nvv4l2decoder",
        "v4l2src",
        "videoconvert",
    }
    fake_commands(monkeypatch, {"gst-inspect-1.0": gst(jetson)})
    assert all(c.ok for c in C.gstreamer())
    fake_commands(
        monkeypatch,
        {"gst-inspect-1.0": gst((jetson - {"nvarguscamerasrc", "nvv4l2decoder"}) | {"avdec_h264"})},
    )
    by = {c.name: c for c in C.gstreamer()}
    assert by["gstreamer csi://"].ok is False and "missing nvarguscamerasrc" in by["gstreamer csi://"].detail
    assert "nvidia-l4t-gstreamer" in by["gstreamer csi://"].fix
    assert by["gstreamer rtsp://#backend=gstreamer"].ok  # the software decoder serves
    fake_commands(monkeypatch, {})
    (only,) = C.gstreamer()
    assert (
        only.ok is False and "gst-inspect-1.0 not found" in only.detail and "gstreamer1.0-tools" in only.fix
    )


@pytest.mark.parametrize(
    "out,ok,detail",
    [
        ((0, "NV Power Mode: MAXN\n0\n"), True, "MAXN"),
        ((0, "NV Power Mode: 15W\n2\n"), True, "15W (not MAXN: sudo nvpmodel -m 0 for full speed)"),
        ((1, "NVPM ERROR: failed to read"), False, "nvpmodel -q failed"),
    ],
)
def test_power_mode(monkeypatch, out, ok, detail):
    fake_commands(monkeypatch, {"nvpmodel": lambda args: out})
    c = C.power_mode()
    assert c.ok is ok and detail in c.detail


def test_cuda_device_and_dla_cores_through_the_backend():
    assert C.cuda_device(lambda: ORIN).detail == "Orin (compute 8.7), 2 DLA core(s), TensorRT 10.3.0"

    def none():
        raise BackendUnavailable("tensorrt and pycuda not installed: the TensorRT backend needs ...")

    c = C.cuda_device(none)
    assert c.ok is False and c.detail == "none usable: tensorrt and pycuda not installed"


def test_versions_report_what_is_importable(monkeypatch):
    mods = {
        "numpy": types.SimpleNamespace(__version__="1.26.4"),
        "tensorrt": types.SimpleNamespace(__version__="8.4.1"),
        "cv2": types.SimpleNamespace(
            __version__="4.8.0", getBuildInformation=lambda: "GStreamer: YES (1.16.3)"
        ),
    }
    monkeypatch.setattr(C, "_module", mods.get)
    monkeypatch.setattr(C, "_dist_version", lambda name: None)
    by = {c.name: c for c in C.versions()}
    assert by["numpy"].ok and by["opencv"].detail == "4.8.0" and by["opencv gstreamer"].ok
    assert by["onnxruntime"].ok is False and by["pycuda"].ok is False
    assert by["tensorrt"].ok is False and "8.5 or newer" in by["tensorrt"].fix  # 8.4 (JetPack 5.0) is too old
    assert by["torch"].ok is None and by["torch"].detail == "absent (not needed on the device)"


def test_camera_reads_one_frame_and_names_a_bad_source(tmp_path, monkeypatch):
    assert (
        C.camera("synthetic://?width=64&height=48").detail
        == "synthetic://?width=64&height=48: 64x48 frame read"
    )
    c = C.camera(str(tmp_path / "nothing"))
    assert c.ok is False and "nothing" in c.detail
    import threading

    from defectdet.station import sources

    hang = threading.Event()

    def never(spec):  # a camera that never answers (until the test ends)
        hang.wait(5)
        return types.SimpleNamespace(read=lambda: (None, {}), release=lambda: None)

    monkeypatch.setattr(sources, "open_reader", never)
    c = C.camera("csi://0", timeout=0.2)
    hang.set()
    assert c.ok is False and c.detail == "csi://0: no frame within 0.2 s"


def test_disk_and_model_backend(tmp_path):
    assert C.disk(str(tmp_path / "runs" / "x"), need_mb=1).ok
    assert C.disk(str(tmp_path), need_mb=1e12).ok is False
    c = C.model_backend(str(tmp_path / "none.bundle"), lambda: ORIN)
    assert c.ok is False and "not found" in c.detail
    bad = tmp_path / "bad.bundle"
    bad.write_bytes(b"not a zip")
    assert "not a zip file" in C.model_backend(str(bad), lambda: ORIN).detail


def test_the_command_here_exit_0_with_crosses_strict_non_zero_json(monkeypatch, capsys):
    fake_commands(monkeypatch, {})  # no gst-inspect, no nvpmodel
    monkeypatch.setattr(C, "_read", lambda path: None)  # not a Jetson
    assert main(["checks"]) == 0
    out = capsys.readouterr().out
    assert "✘ jetpack / l4t" in out and "✘ power mode" in out and "checks failed" in out
    assert main(["checks", "--strict"]) == 1
    capsys.readouterr()
    assert main(["checks", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["failed"] == sum(c["ok"] is False for c in doc["checks"])
    assert {"name", "ok", "detail", "fix"} <= set(doc["checks"][0])


def test_all_green_on_a_fake_jetson(monkeypatch, capsys):
    fake_commands(
        monkeypatch,
        {
            "gst-inspect-1.0": gst(set(sum((sum(v, ()) for v in C.GST_ELEMENTS.values()), ()))),
            "nvpmodel": lambda a: (0, "NV Power Mode: MAXN\n0"),
        },
    )
    monkeypatch.setattr(C, "_read", lambda path: "# R36 (release), REVISION: 4.3, GCID: 1")
    monkeypatch.setattr(C, "_identity", lambda: ORIN)
    monkeypatch.setattr(C, "versions", lambda: [C.Check("python", True, "3.10")])
    assert main(["checks", "--strict"]) == 0
    assert "all checks passed" in capsys.readouterr().out
