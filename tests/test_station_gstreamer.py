"""GStreamer pipelines are chosen from the elements that exist (``gst-inspect-1.0 --exists``), not from
/etc/nv_tegra_release: a stand-in gst-inspect-1.0 on PATH plays a Jetson container, a desktop and a
container run without ``--runtime nvidia``. A missing element is one line naming it and its package."""

import os

import pytest

from defectdet.station import gst, sources
from defectdet.station.capture import FrameSource
from defectdet.station.sources import (
    SourceUnsupported,
    csi_pipeline,
    open_reader,
    parse_source,
    pick_decoder,
    pipeline_elements,
    rtsp_pipeline,
)

BASE = "rtspsrc rtph264depay rtph265depay h264parse h265parse videoconvert appsink"
JETSON = f"{BASE} nvarguscamerasrc nvvidconv nvv4l2decoder"


@pytest.fixture
def elements(tmp_path, monkeypatch):
    """``elements("a b c")``: a gst-inspect-1.0 on PATH knowing exactly these elements (None: none)."""

    def install(names):
        gst.has_element.cache_clear()
        if names is None:
            monkeypatch.setenv("PATH", str(tmp_path / "empty"))
            return
        exe = tmp_path / "bin" / gst.INSPECT
        exe.parent.mkdir(exist_ok=True)
        exe.write_text(
            f'#!/bin/sh\n[ "$1" = "--exists" ] || exit 2\ncase " {names} " in *" $2 "*) exit 0 ;; esac\nexit '
            "1\n"
        )
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")

    yield install
    gst.has_element.cache_clear()


def test_a_jetson_container_without_the_release_file_gets_the_hardware_decoder(elements, monkeypatch):
    monkeypatch.setattr(sources, "is_jetson", lambda: False)
    elements(JETSON)
    assert pick_decoder("h264") == "nvv4l2decoder" and "! nvv4l2decoder ! nvvidconv !" in rtsp_pipeline(
        "rtsp://cam/s"
    )


def test_without_nvidias_elements_rtsp_falls_back_to_software_decoding(elements, monkeypatch):
    monkeypatch.setattr(sources, "is_jetson", lambda: True)  # the release file is there, the plugins are not
    elements(f"{BASE} avdec_h264 avdec_h265")
    assert pick_decoder("h265") == "avdec_h265"
    pipe = rtsp_pipeline("rtsp://cam/s", codec="h264")
    assert "! avdec_h264 ! videoconvert !" in pipe and "nvvidconv" not in pipe


def test_only_when_gst_inspect_is_absent_does_the_release_file_decide(elements, monkeypatch):
    elements(None)
    assert gst.has_element("nvv4l2decoder") is None and gst.missing(["nvvidconv"]) == []
    for jetson, decoder in ((True, "nvv4l2decoder"), (False, "avdec_h264")):
        monkeypatch.setattr(sources, "is_jetson", lambda j=jetson: j)
        assert pick_decoder("h264") == decoder


def test_pipeline_elements_skip_caps_and_properties():
    assert pipeline_elements(csi_pipeline(0)) == ["nvarguscamerasrc", "nvvidconv", "videoconvert", "appsink"]
    assert pipeline_elements(rtsp_pipeline("rtsp://cam/s", decoder="avdec_h264")) == [
        "rtspsrc",
        "rtph264depay",
        "h264parse",
        "avdec_h264",
        "videoconvert",
        "appsink",
    ]


@pytest.mark.parametrize(
    "uri, present, absent, hint",
    [
        ("csi://0", BASE, "nvarguscamerasrc, nvvidconv", "--runtime nvidia"),
        ("rtsp://cam/s#backend=gstreamer", BASE, "avdec_h264", "apt install gstreamer1.0-libav"),
        (
            "rtsp://cam/s#backend=gstreamer&decoder=nvv4l2decoder",
            f"{BASE} avdec_h264",
            "nvv4l2decoder, nvvidconv",
            "nvidia-l4t-gstreamer",
        ),
        ("gst://videotestsrc ! videoconvert ! appsink", BASE, "videotestsrc", "a GStreamer plugin package"),
    ],
)
def test_a_missing_element_is_one_line_naming_it_and_its_package(
    elements, monkeypatch, uri, present, absent, hint
):
    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)  # as JetPack's OpenCV: the elements decide
    monkeypatch.setattr(sources, "is_jetson", lambda: False)
    elements(present)
    with pytest.raises(SourceUnsupported) as e:
        open_reader(parse_source(uri))
    msg = str(e.value)
    assert (
        msg.startswith(f"{uri}: GStreamer has no element {absent} (gst-inspect-1.0 --exists ") and hint in msg
    )
    assert "\n" not in msg


def test_a_live_source_missing_an_element_fails_at_once_instead_of_retrying(elements, monkeypatch):
    monkeypatch.setattr(sources, "has_gstreamer", lambda: True)
    elements(BASE)
    src = FrameSource("csi://0", backoff_s=0.01)
    with pytest.raises(SourceUnsupported, match="nvarguscamerasrc"):
        src.start()
    assert src.reconnect_attempts == 0
