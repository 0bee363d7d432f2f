"""Sources of the inspection loop: URI parsing, pipelines, readers, the capture thread (latest frame,
prefetch, reconnect with backoff, give-up, stall)."""

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectdet.station.capture import FrameSource
from defectdet.station.sources import (
    SourceError,
    SyntheticReader,
    csi_pipeline,
    has_gstreamer,
    open_reader,
    parse_source,
    rtsp_pipeline,
)


# --------------------------------------------------------------------------- URIs
@pytest.mark.parametrize(
    "uri, kind, target, live",
    [
        ("0", "usb", 0, True),
        ("/dev/video2", "usb", "/dev/video2", True),
        ("usb://1?width=640&height=480&fourcc=MJPG", "usb", 1, True),
        ("csi://1?width=1280&height=720&fps=60", "csi", 1, True),
        ("gst://videotestsrc ! appsink", "gst", "videotestsrc ! appsink", True),
        ("synthetic://", "synthetic", None, False),
        ("synthetic://?fps=5&live=1", "synthetic", None, True),
    ],
)
def test_parse_source_kinds(uri, kind, target, live):
    spec = parse_source(uri)
    assert (spec.kind, spec.target, spec.live) == (kind, target, live)


def test_parse_source_options_are_typed():
    assert parse_source("usb://1?width=640&height=480&fourcc=MJPG").options == {
        "width": 640,
        "height": 480,
        "fourcc": "MJPG",
    }
    syn = parse_source("synthetic://?width=320&defect_rate=0.5")
    assert syn.options["width"] == 320 and syn.options["defect_rate"] == 0.5 and syn.options["height"] == 480


def test_rtsp_options_live_in_the_fragment_and_the_url_keeps_its_query():
    spec = parse_source(
        "rtsp://user:pw@10.0.0.5:554/stream?channel=1#backend=ffmpeg&latency=50&transport=udp"
    )
    assert spec.kind == "stream" and spec.live
    assert spec.target == "rtsp://user:pw@10.0.0.5:554/stream?channel=1"
    assert spec.options == {"backend": "ffmpeg", "latency": 50, "transport": "udp"}


def test_files_and_folders(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "v.mp4").write_bytes(b"x")
    assert parse_source(str(tmp_path)).kind == "folder"
    assert parse_source(str(tmp_path / "a.png")).kind == "folder"  # one image
    assert parse_source(str(tmp_path / "v.mp4")).kind == "video"
    assert not parse_source(str(tmp_path / "v.mp4")).live


@pytest.mark.parametrize(
    "uri, message",
    [
        ("", "expected a camera index"),
        ("csi://left", "csi://<sensor id>"),
        ("csi://0?widht=10", "unknown option(s) ['widht']"),
        ("rtsp://h/s#backend=vlc", "expected auto, gstreamer or ffmpeg"),
        ("ftp://h/file", "unknown scheme 'ftp'"),
        ("/no/such/video.mp4", "no such file or folder"),
        ("synthetic://?colour=red", "unknown option(s) ['colour']"),
    ],
)
def test_parse_source_errors_are_one_clear_line(uri, message):
    with pytest.raises(SourceError) as e:
        parse_source(uri)
    assert message in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------- pipelines
def test_csi_pipeline_is_argus_to_bgr_appsink_keeping_one_buffer():
    p = csi_pipeline(1, 1920, 1080, 30, flip=2, out_width=960, out_height=540)
    assert p.startswith(
        "nvarguscamerasrc sensor-id=1 ! video/x-raw(memory:NVMM), width=(int)1920, height=(int)1080"
    )
    assert "framerate=(fraction)30/1" in p and "nvvidconv flip-method=2" in p
    assert "width=(int)960, height=(int)540, format=(string)BGRx" in p
    assert p.endswith("video/x-raw, format=(string)BGR ! appsink drop=true max-buffers=1 sync=false")
    assert [e.split()[0] for e in p.split(" ! ")][::2] == [
        "nvarguscamerasrc",
        "nvvidconv",
        "videoconvert",
        "appsink",
    ]


def test_rtsp_pipeline_low_latency_and_decoder_choice():
    soft = rtsp_pipeline("rtsp://cam/s", latency=0, transport="tcp", codec="h264", decoder="avdec_h264")
    assert soft.startswith(
        'rtspsrc location="rtsp://cam/s" latency=0 protocols=tcp drop-on-latency=true ! rtph264depay ! '
        "h264parse ! avdec_h264 ! videoconvert"
    )
    assert "nvvidconv" not in soft and soft.endswith("appsink drop=true max-buffers=1 sync=false")
    hw = rtsp_pipeline("rtsp://cam/s", codec="h265", decoder="nvv4l2decoder")
    assert (
        "rtph265depay ! h265parse ! nvv4l2decoder ! nvvidconv ! video/x-raw, format=(string)BGRx ! "
        "videoconvert" in hw
    )
    with pytest.raises(SourceError, match="codec"):
        rtsp_pipeline("rtsp://cam/s", codec="mjpeg")


@pytest.mark.skipif(
    has_gstreamer(), reason="this OpenCV has GStreamer; the error path is for builds without it"
)
def test_csi_without_gstreamer_says_what_to_do():
    with pytest.raises(SourceError, match="no GStreamer support.*JetPack's OpenCV"):
        open_reader(parse_source("csi://0"))


@pytest.mark.skipif(not Path("/dev/video0").exists(), reason="no USB/V4L2 camera at /dev/video0")
def test_usb_camera_gives_frames():
    reader = open_reader(parse_source("0"))
    try:
        img, _ = reader.read()
        assert img is not None and img.ndim == 3
    finally:
        reader.release()


def test_missing_camera_and_unreachable_stream_are_clear_errors():
    with pytest.raises(SourceError, match="cannot open the camera"):
        open_reader(parse_source("/dev/video97"))
    had_options, t = "OPENCV_FFMPEG_CAPTURE_OPTIONS" in os.environ, time.monotonic()
    with pytest.raises(SourceError, match="FFmpeg cannot open the stream"):
        open_reader(parse_source("rtsp://127.0.0.1:9/none#backend=ffmpeg&timeout_ms=1000"))
    assert time.monotonic() - t < 10
    assert (
        "OPENCV_FFMPEG_CAPTURE_OPTIONS" in os.environ
    ) == had_options  # low-delay flags left there cost video files a frame


# --------------------------------------------------------------------------- readers
def _numbered(i: int, size=(48, 64)) -> np.ndarray:
    img = np.zeros((*size, 3), np.uint8)
    img[:] = (10 * i) % 250
    return img


def test_video_file_hands_over_every_frame_in_order(tmp_path):
    path = tmp_path / "v.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(12):
        w.write(_numbered(i))
    w.release()
    with FrameSource(str(path), queue_size=2) as src:
        frames = []
        while not src.done:
            f = src.read(1.0)
            if f is not None:
                frames.append(f)
                time.sleep(0.005)  # a consumer slower than the decoder: nothing may be skipped
    assert [f.index for f in frames] == list(range(12))
    assert [int(round(f.image.mean() / 10)) for f in frames] == list(range(12))
    assert src.dropped == 0 and src.error is None


def test_folder_in_name_order_skipping_unreadable(tmp_path, caplog):
    for name, i in (("b.png", 2), ("a.png", 1), ("d.jpg", 4)):
        cv2.imwrite(str(tmp_path / name), _numbered(i))
    (tmp_path / "c.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored")
    with FrameSource(str(tmp_path)) as src:
        frames = [f for f in iter(lambda: src.read(1.0), None)]
    assert [Path(f.info["path"]).name for f in frames] == ["a.png", "b.png", "d.jpg"]
    assert "c.png: unreadable image" in caplog.text
    assert src.done


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        FrameSource(str(tmp_path)).start()


def test_synthetic_frames_equal_the_generators_conveyor():
    from defectdet.data.synthetic import conveyor_frame

    reader = SyntheticReader(width=320, height=160, seed=3, defect_rate=0.5)
    for f in (0, 5, 23, 24, 30, 71):
        ours, info = reader.frame(f)
        theirs, truth = conveyor_frame(3, f, 320, 160, defect_rate=0.5)
        assert np.array_equal(ours, theirs), f
        assert info == {k: truth[k] for k in ("part", "defective", "in_view", "in_position")}


def test_synthetic_frames_limit_and_pacing():
    with FrameSource("synthetic://?width=96&height=64&frames=6&fps=50") as src:
        t = time.monotonic()
        frames = [f for f in iter(lambda: src.read(1.0), None)]
        took = time.monotonic() - t
    assert [f.index for f in frames] == list(range(6))
    assert took >= 5 / 50  # paced at 50 frames/s


# --------------------------------------------------------------------------- capture thread
class FakeReader:
    """Frames numbered by a shared counter; fails (returns None) after ``fail_after`` reads; may hang."""

    def __init__(self, counter, fail_after=None, hang_at=None, period=0.0):
        self.counter, self.fail_after, self.hang_at, self.period = counter, fail_after, hang_at, period
        self.reads, self.released = 0, False
        self.unblock = threading.Event()
        self.fps = None

    def read(self):
        self.reads += 1
        if self.period:
            time.sleep(self.period)
        if self.hang_at is not None and self.reads == self.hang_at:
            self.unblock.wait(30)
        if self.fail_after is not None and self.reads > self.fail_after:
            return None, {}
        self.counter[0] += 1
        return _numbered(self.counter[0], (8, 8)), {"n": self.counter[0]}

    def release(self):
        self.released = True


def _collect(src, n, timeout=10.0):
    out, deadline = [], time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        f = src.read(0.2)
        if f is not None:
            out.append(f)
    return out


def test_live_source_keeps_only_the_latest_frame_and_counts_drops():
    counter, readers = [0], []

    def opener(spec):
        readers.append(FakeReader(counter, period=0.001))
        return readers[-1]

    src = FrameSource("0", opener=opener).start()
    got = []
    for _ in range(15):
        time.sleep(0.02)  # the loop is slower than the camera
        f = src.read(1.0)
        got.append(f)
        # fresh: a FIFO of buffered frames would hand out frame k here, ~19*k ms old (285 ms by the end)
        assert time.perf_counter() - f.t_mono < 0.1
    src.close()
    ns = [f.info["n"] for f in got]
    assert ns == sorted(ns) and len(set(ns)) == len(ns)
    assert max(np.diff(ns)) > 1  # frames were skipped ...
    pending = len(src._buf)
    assert src.dropped + len(got) + pending == src.captured  # ... and every skipped one is counted
    assert src.dropped > 0 and readers[0].released


def test_failures_mid_run_give_exactly_k_reconnects():
    counter, k, readers, attempts = [0], 3, [], [0]

    def opener(spec):
        attempts[0] += 1
        if attempts[0] in (3, 4):  # the camera is not back at once: two failed attempts
            raise SourceError("camera busy")
        readers.append(FakeReader(counter, fail_after=5 if len(readers) < k else None))
        return readers[-1]

    src = FrameSource("0", opener=opener, backoff_s=0.01, backoff_max_s=0.02, stall_s=0).start()
    frames = _collect(src, 40)
    src.close()
    assert len(frames) == 40
    assert src.reconnects == k and src.reconnect_attempts == k + 2
    assert all(r.released for r in readers[:k])
    assert [f.index for f in frames] == sorted(f.index for f in frames)


def test_backoff_doubles_up_to_the_cap_then_gives_up():
    times, counter = [], [0]

    def opener(spec):
        times.append(time.monotonic())
        if len(times) == 1:
            return FakeReader(counter, fail_after=1)
        raise SourceError("camera unplugged")

    src = FrameSource("0", opener=opener, backoff_s=0.05, backoff_max_s=0.2, give_up_s=1.0, stall_s=0).start()
    deadline = time.monotonic() + 10
    while not src.done and time.monotonic() < deadline:
        src.read(0.1)
    src.close()
    assert src.done and "giving up" in src.error and "give_up_s=1" in src.error
    gaps = np.diff(times[1:])  # waits between failed attempts
    expected = [min(0.05 * 2**i, 0.2) for i in range(len(gaps))]
    assert len(gaps) >= 4
    assert all(g >= 0.9 * e for g, e in zip(gaps, expected))
    assert all(g < e + 0.5 for g, e in zip(gaps, expected))
    assert src.reconnects == 0


def test_a_hanging_read_is_abandoned_and_the_source_reopened():
    counter, readers = [0], []

    def opener(spec):
        readers.append(FakeReader(counter, hang_at=3 if not readers else None, period=0.002))
        return readers[-1]

    src = FrameSource("0", opener=opener, stall_s=0.3, backoff_s=0.01).start()
    frames = _collect(src, 20)
    src.close()
    readers[0].unblock.set()
    assert len(frames) == 20 and src.reconnects == 1 and len(readers) == 2
    time.sleep(0.1)
    assert readers[0].released  # the abandoned thread released its capture when the read returned


class ArgusSensor:
    """A CSI sensor as Argus serves it: one capture session at a time; a second one while the first
    holds the sensor fails (nvarguscamerasrc: "Failed to create CaptureSession")."""

    def __init__(self):
        self.held, self.most_held, self.readers, self.counter = 0, 0, [], [0]
        self.lock = threading.Lock()

    def open(self, spec):
        with self.lock:
            self.most_held = max(self.most_held, self.held + 1)
            if self.held:
                raise SourceError(f"{spec.uri}: Failed to create CaptureSession (the sensor is busy)")
            self.held += 1
        sensor, first = self, not self.readers

        class Session(FakeReader):
            def release(self):
                if not self.released:
                    with sensor.lock:
                        sensor.held -= 1
                super().release()

        self.readers.append(Session(self.counter, hang_at=3 if first else None, period=0.002))
        return self.readers[-1]


def test_a_stalled_csi_camera_waits_for_the_sensor_before_reopening():
    """The hung Argus session still holds the sensor: the new one opens only once it is released."""
    sensor = ArgusSensor()
    src = FrameSource("csi://0", opener=sensor.open, stall_s=0.3, backoff_s=0.01, release_wait_s=5).start()
    assert _collect(src, 2, timeout=2)
    threading.Timer(0.8, sensor.readers[0].unblock.set).start()  # the driver's read returns 0.8 s later
    frames = _collect(src, 10)
    src.close()
    assert len(frames) == 10 and src.error is None and src.reconnects == 1
    assert sensor.most_held == 1 and len(sensor.readers) == 2  # never two sessions on the sensor


def test_a_csi_camera_whose_session_never_lets_go_ends_the_run_for_a_restart():
    sensor = ArgusSensor()
    src = FrameSource(
        "csi://0", opener=sensor.open, stall_s=0.3, backoff_s=0.01, release_wait_s=0.5, give_up_s=30
    ).start()
    t0 = time.monotonic()
    while not src.done and time.monotonic() - t0 < 5:
        src.read(0.1)
    src.close()
    sensor.readers[0].unblock.set()
    assert src.done and time.monotonic() - t0 < 3  # bounded: not give_up_s
    assert "still holds the sensor" in src.error and "csi://0" in src.error
    assert sensor.most_held == 1 and len(sensor.readers) == 1


def test_only_argus_sources_hold_their_sensor_exclusively():
    assert parse_source("csi://1").exclusive
    assert parse_source("gst://nvarguscamerasrc sensor-id=0 ! nvvidconv ! appsink").exclusive
    assert not parse_source("0").exclusive and not parse_source("rtsp://cam/stream").exclusive


def test_close_is_prompt_and_files_stop_at_their_end():
    src = FrameSource("synthetic://?width=64&height=48&fps=2&live=1").start()
    assert src.read(2.0) is not None
    t = time.monotonic()
    src.close(timeout=1.0)
    assert time.monotonic() - t < 1.2
