"""Frame sources for the inspection loop: URI parsing, OpenCV capture, a capture thread per source.

URIs (``parse_source``):

* ``0`` / ``/dev/video0`` / ``usb://0?width=1280&height=720&fps=30&fourcc=MJPG`` — USB/V4L2 camera;
* ``csi://0?width=1920&height=1080&fps=30&flip=0`` — Jetson CSI camera, a GStreamer
  ``nvarguscamerasrc ... ! appsink`` pipeline (:func:`csi_pipeline`; needs OpenCV built with GStreamer);
* ``rtsp://user:pw@host/stream#backend=gstreamer&latency=0&transport=tcp&codec=h264`` — our options
  go in the fragment (never sent to the camera); GStreamer (:func:`rtsp_pipeline`) when this OpenCV
  has it, else FFmpeg with low-delay flags; ``rtmp://`` / ``http(s)://`` streams go through FFmpeg;
* ``gst://<pipeline ending in appsink>`` — any GStreamer pipeline, as given;
* a video file, an image folder (every image, sorted by name) or one image;
* ``synthetic://?width=640&height=480&seed=0&defect_rate=0.1&frames=0&fps=0&live=0`` — the
  conveyor of :mod:`defectdet.data.synthetic` (imported only when used), for the demo and tests.

``open_reader(spec)`` opens one connection; :class:`defectdet.station.capture.FrameSource` runs it
in a capture thread (latest frame for live sources, reconnect with backoff).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Protocol
from urllib.parse import parse_qsl, urlsplit

import cv2
import numpy as np

from ..errors import DefectdetError
from . import gst

LOG = logging.getLogger("defectdet.inspect")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
STREAM_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https")


class SourceError(DefectdetError):
    """A source cannot be parsed or opened (the message names the URI and what was expected)."""


class SourceUnsupported(SourceError):
    """This machine cannot open this kind of source (no GStreamer, a missing element): retrying can't help."""


@dataclass(frozen=True)
class SourceSpec:
    """A parsed source URI: ``kind`` in usb, csi, stream, gst, video, folder, synthetic."""

    uri: str
    kind: str
    target: Any  # camera index / device path / URL / pipeline / file / folder
    options: dict = field(default_factory=dict)

    @property
    def live(self) -> bool:
        """Cameras and streams (and synthetic with live=1) keep only the latest frame."""
        return self.kind in ("usb", "csi", "stream", "gst") or bool(self.options.get("live"))

    @property
    def exclusive(self) -> bool:
        """One session at a time holds the sensor: a CSI camera (Argus, ``nvarguscamerasrc``) refuses, or
        hangs, a second capture session while the first still holds it."""
        return self.kind == "csi" or (self.kind == "gst" and "nvarguscamerasrc" in str(self.target))


@dataclass
class Frame:
    """One captured frame."""

    image: np.ndarray  # (H, W, 3) uint8 BGR
    index: int  # frame id: position in a file/folder/synthetic run, capture counter of a live source
    timestamp: float  # capture time, seconds since the epoch (UTC)
    t_mono: float  # capture time, time.perf_counter()
    info: dict = field(default_factory=dict)  # folder: {'path'}; synthetic: ground truth


class Reader(Protocol):
    """What :class:`FrameSource` drives in its thread (one per connection)."""

    fps: Optional[float]

    def read(self) -> tuple[Optional[np.ndarray], dict]: ...  # (None, {}) on failure / end

    def release(self) -> None: ...


# --------------------------------------------------------------------------- URIs
def _typed(value: str) -> Any:
    """Query values: ints, floats, else the text."""
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _options(query: str, uri: str, allowed: tuple[str, ...]) -> dict:
    opts = {k: _typed(v) for k, v in parse_qsl(query, keep_blank_values=True)}
    unknown = sorted(set(opts) - set(allowed))
    if unknown:
        raise SourceError(f"source {uri!r}: unknown option(s) {unknown}; expected {', '.join(allowed)}")
    return opts


def parse_source(uri: str) -> SourceSpec:
    """Parse a source URI (see the module docstring) into a :class:`SourceSpec`."""
    text = str(uri).strip()
    if not text:
        raise SourceError(
            "source '': expected a camera index, /dev/videoN, csi://, rtsp://, synthetic://, a file or a "
            "folder"
        )
    if text.isdigit():
        return SourceSpec(text, "usb", int(text))
    if text.startswith("gst://"):
        return SourceSpec(text, "gst", text[len("gst://") :])
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "usb":
        dev = parts.netloc or parts.path
        opts = _options(parts.query, text, ("width", "height", "fps", "fourcc"))
        return SourceSpec(text, "usb", int(dev) if dev.isdigit() else dev, opts)
    if scheme == "csi":
        sensor = parts.netloc or "0"
        if not sensor.isdigit():
            raise SourceError(
                f"source {text!r}: expected csi://<sensor id>, e.g. csi://0?width=1920&height=1080&fps=30"
            )
        opts = _options(parts.query, text, ("width", "height", "fps", "flip", "out_width", "out_height"))
        return SourceSpec(text, "csi", int(sensor), opts)
    if scheme in STREAM_SCHEMES:
        url = text.split("#", 1)[0]
        opts = _options(
            parts.fragment, text, ("backend", "latency", "transport", "codec", "decoder", "timeout_ms")
        )
        backend = opts.get("backend", "auto")
        if backend not in ("auto", "gstreamer", "ffmpeg"):
            raise SourceError(f"source {text!r}: backend={backend!r}; expected auto, gstreamer or ffmpeg")
        return SourceSpec(text, "stream", url, opts)
    if scheme == "synthetic":
        opts = _options(
            parts.query,
            text,
            ("width", "height", "seed", "defect_rate", "defect_scale", "frames", "fps", "live"),
        )
        return SourceSpec(text, "synthetic", None, {**SYNTHETIC_DEFAULTS, **opts})
    if text.startswith("/dev/video"):
        return SourceSpec(text, "usb", text)
    path = Path(text).expanduser()
    if path.is_dir():
        return SourceSpec(text, "folder", path)
    if path.is_file():
        return SourceSpec(text, "folder" if path.suffix.lower() in IMAGE_SUFFIXES else "video", path)
    if scheme and len(scheme) > 1:
        raise SourceError(
            f"source {text!r}: unknown scheme {scheme!r}; expected csi, usb, rtsp, gst, synthetic or a path"
        )
    raise SourceError(
        f"source {text!r}: no such file or folder; expected a camera index, /dev/videoN, a URI, a file or a "
        "folder"
    )


SYNTHETIC_DEFAULTS = {
    "width": 640,
    "height": 480,
    "seed": 0,
    "defect_rate": 0.1,
    "defect_scale": 1.0,
    "frames": 0,
    "fps": 0,
    "live": 0,
}


# --------------------------------------------------------------------------- GStreamer pipelines
APPSINK = "appsink drop=true max-buffers=1 sync=false"  # never queue: the newest frame only


def csi_pipeline(
    sensor_id: int = 0,
    width: int = 1920,
    height: int = 1080,
    fps: int = 30,
    flip: int = 0,
    out_width: Optional[int] = None,
    out_height: Optional[int] = None,
) -> str:
    """The Jetson CSI camera pipeline (Argus ISP in NVMM memory -> BGR in system memory -> appsink)."""
    ow, oh = out_width or width, out_height or height
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width=(int){width}, height=(int){height}, framerate=(fraction){fps}/1, "
        f"format=(string)NV12 ! nvvidconv flip-method={flip} ! video/x-raw, width=(int){ow}, "
        f"height=(int){oh}, format=(string)BGRx ! videoconvert ! video/x-raw, format=(string)BGR ! {APPSINK}"
    )


def is_jetson() -> bool:
    """True on an NVIDIA Jetson (L4T); only a clue: containers often lack the file (:func:`pick_decoder`)."""
    return Path("/etc/nv_tegra_release").exists()


def pick_decoder(codec: str = "h264") -> str:
    """The RTSP decoder element: ``nvv4l2decoder`` (+ ``nvvidconv``) when GStreamer has both, else the
    software ``avdec_<codec>``. Only when ``gst-inspect-1.0`` cannot be asked is the L4T release file used."""
    hw = [gst.has_element(n) for n in ("nvv4l2decoder", "nvvidconv")]
    if all(hw) or (None in hw and False not in hw and is_jetson()):
        return "nvv4l2decoder"
    return f"avdec_{codec}"


def pipeline_elements(pipeline: str) -> list[str]:
    """The element names of a ``a prop=1 ! caps ! b`` pipeline (caps such as ``video/x-raw, ...`` skipped)."""
    names = (part.strip().split(" ", 1)[0] for part in pipeline.split("!"))
    return [n for n in names if n and "/" not in n and "=" not in n]


def require_elements(uri: str, pipeline: str) -> None:
    """:class:`SourceUnsupported` naming the pipeline's elements GStreamer lacks, and what provides them."""
    absent = gst.missing(dict.fromkeys(pipeline_elements(pipeline)))
    if absent:
        raise SourceUnsupported(gst.explain(uri, absent))


def rtsp_pipeline(
    url: str, latency: int = 0, transport: str = "tcp", codec: str = "h264", decoder: Optional[str] = None
) -> str:
    """A low-latency RTSP pipeline: no jitter buffer, a hardware decoder if present, newest frame only."""
    if codec not in ("h264", "h265"):
        raise SourceError(f"rtsp codec={codec!r}; expected h264 or h265")
    if transport not in ("tcp", "udp"):
        raise SourceError(f"rtsp transport={transport!r}; expected tcp or udp")
    decoder = decoder or pick_decoder(codec)
    convert = (
        "nvvidconv ! video/x-raw, format=(string)BGRx ! videoconvert"
        if decoder.startswith("nv")
        else "videoconvert"
    )
    return (
        f'rtspsrc location="{url}" latency={int(latency)} protocols={transport} drop-on-latency=true ! '
        f"rtp{codec}depay ! {codec}parse ! {decoder} ! {convert} ! video/x-raw, format=(string)BGR ! "
        f"{APPSINK}"
    )


def has_gstreamer() -> bool:
    """Whether this OpenCV build can open GStreamer pipelines (pip's opencv-python cannot)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line
    return False


# --------------------------------------------------------------------------- readers
class CvReader:
    """cv2.VideoCapture behind the :class:`Reader` interface."""

    def __init__(self, cap: cv2.VideoCapture, what: str, name: str = ""):
        """``name``: a video file's path, for files only: its reported length is then checked at the end."""
        if not cap.isOpened():
            cap.release()
            raise SourceError(what)
        self.cap, self.name, self.frames_read = cap, name, 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else None
        count = cap.get(cv2.CAP_PROP_FRAME_COUNT) if name else 0
        self.frame_count = int(count) if count and 0 < count < 2**31 else None

    def read(self) -> tuple[Optional[np.ndarray], dict]:
        ok, img = self.cap.read()
        if ok and img is not None:
            self.frames_read += 1
            return img, {}
        return None, {}

    def ended_early(self) -> Optional[str]:
        """After the last read of a video file: why it ended before its reported frame count (None: it did
        not).

        The container's count (CAP_PROP_FRAME_COUNT) may be estimated from its duration, so a shortfall of
        up to 1 % (at least 2 frames) is taken as complete."""
        expected = self.frame_count
        if not expected or self.frames_read >= expected - max(2, expected // 100):
            return None
        return (
            f"{self.name}: source ended early: {self.frames_read} of {expected} frames decoded "
            "(CAP_PROP_FRAME_COUNT); the file is truncated or corrupt"
        )

    def release(self) -> None:
        self.cap.release()


class FolderReader:
    """Every image of a folder (or one image file), sorted by name; unreadable files are logged, skipped."""

    fps = None

    def __init__(self, path: Path):
        self.paths = (
            [path]
            if path.is_file()
            else sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        )
        if not self.paths:
            raise SourceError(f"{path}: no images ({', '.join(IMAGE_SUFFIXES)}) in this folder")
        self.i = 0

    def read(self) -> tuple[Optional[np.ndarray], dict]:
        while self.i < len(self.paths):
            p = self.paths[self.i]
            self.i += 1
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                return img, {"path": str(p)}
            LOG.warning("%s: unreadable image, skipped", p)
        return None, {}

    def release(self) -> None:
        self.i = len(self.paths)


class SyntheticReader:
    """The synthetic conveyor (``defectdet.data.synthetic.conveyor_frame``), paced at ``fps`` when > 0."""

    def __init__(
        self, width=640, height=480, seed=0, defect_rate=0.1, defect_scale=1.0, frames=0, fps=0, live=0
    ):
        # cv2 + numpy + yaml only; imported lazily, so the runtime needs it only for this source
        from ..data.synthetic import conveyor_frame

        self._conveyor = conveyor_frame
        self.w, self.h, self.seed = int(width), int(height), int(seed)
        self.rate, self.scale, self.frames = float(defect_rate), float(defect_scale), int(frames)
        self.fps = float(fps) or None
        self.i = 0
        self._next_t = time.perf_counter()

    def frame(self, f: int) -> tuple[np.ndarray, dict]:
        """Frame ``f`` of the conveyor and its ground truth (part, defective, in_view, in_position)."""
        img, info = self._conveyor(
            self.seed, f, self.w, self.h, defect_rate=self.rate, defect_scale=self.scale
        )
        return img, {k: info[k] for k in ("part", "defective", "in_view", "in_position")}

    def read(self) -> tuple[Optional[np.ndarray], dict]:
        if self.frames and self.i >= self.frames:
            return None, {}
        if self.fps:
            self._next_t += 1.0 / self.fps
            time.sleep(max(0.0, self._next_t - time.perf_counter()))
        img, info = self.frame(self.i)
        self.i += 1
        return img, info

    def release(self) -> None:
        self.frames, self.i = 1, 1


def _open_usb(spec: SourceSpec) -> CvReader:
    api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
    cap = cv2.VideoCapture(spec.target, api)
    o = spec.options
    if "fourcc" in o:
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*str(o["fourcc"])[:4].ljust(4)))
    for key, prop in (
        ("width", cv2.CAP_PROP_FRAME_WIDTH),
        ("height", cv2.CAP_PROP_FRAME_HEIGHT),
        ("fps", cv2.CAP_PROP_FPS),
    ):
        if key in o:
            cap.set(prop, float(o[key]))
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # V4L2: one buffer, so a read returns a fresh frame
    return CvReader(
        cap, f"{spec.uri}: cannot open the camera (is it connected, and not used by another process?)"
    )


def _need_gstreamer(spec: SourceSpec, pipeline: Optional[str] = None) -> None:
    """OpenCV with GStreamer and (if given) every element of ``pipeline``, else :class:`SourceUnsupported`."""
    if pipeline is not None:
        require_elements(spec.uri, pipeline)
    if not has_gstreamer():
        raise SourceUnsupported(
            f"{spec.uri}: this OpenCV ({cv2.__version__}) has no GStreamer support (pip's opencv-python); "
            "on the Jetson use JetPack's OpenCV (deploy/jetson/setup.sh)"
        )


def _open_stream(spec: SourceSpec) -> CvReader:
    o = spec.options
    backend = o.get("backend", "auto")
    scheme = urlsplit(spec.target).scheme.lower()
    if backend == "gstreamer" or (backend == "auto" and scheme in ("rtsp", "rtsps") and has_gstreamer()):
        pipe = rtsp_pipeline(
            spec.target,
            o.get("latency", 0),
            o.get("transport", "tcp"),
            o.get("codec", "h264"),
            o.get("decoder"),
        )
        _need_gstreamer(spec, pipe)
        return CvReader(
            cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER), f"{spec.uri}: GStreamer cannot open {pipe!r}"
        )
    timeout = int(o.get("timeout_ms", 5000))
    params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, timeout, cv2.CAP_PROP_READ_TIMEOUT_MSEC, timeout]
    with _ffmpeg_options(f"rtsp_transport;{o.get('transport', 'tcp')}|fflags;nobuffer|flags;low_delay"):
        cap = cv2.VideoCapture(spec.target, cv2.CAP_FFMPEG, params)
    cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
    return CvReader(cap, f"{spec.uri}: FFmpeg cannot open the stream within {timeout} ms")


@contextlib.contextmanager
def _ffmpeg_options(options: str):
    """FFmpeg capture options (no input buffering, low-delay decoding) for one open only: OpenCV reads
    them from the environment at open time, and left there they would make later video files lose
    their last frame. A user's own OPENCV_FFMPEG_CAPTURE_OPTIONS wins."""
    key = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
    if key in os.environ:
        yield
        return
    with _ENV_LOCK:
        os.environ[key] = options
        try:
            yield
        finally:
            os.environ.pop(key, None)


_ENV_LOCK = threading.Lock()


def open_reader(spec: SourceSpec) -> Reader:
    """Open one connection to ``spec``; raises :class:`SourceError` when it cannot."""
    if spec.kind == "usb":
        return _open_usb(spec)
    if spec.kind == "csi":
        pipe = csi_pipeline(spec.target, **{k: int(v) for k, v in spec.options.items()})
        _need_gstreamer(spec, pipe)
        return CvReader(
            cv2.VideoCapture(pipe, cv2.CAP_GSTREAMER), f"{spec.uri}: GStreamer cannot open {pipe!r}"
        )
    if spec.kind == "gst":
        _need_gstreamer(spec, spec.target)
        return CvReader(
            cv2.VideoCapture(spec.target, cv2.CAP_GSTREAMER),
            f"{spec.uri}: GStreamer cannot open this pipeline",
        )
    if spec.kind == "stream":
        return _open_stream(spec)
    if spec.kind == "video":
        return CvReader(
            cv2.VideoCapture(str(spec.target)),
            f"{spec.target}: OpenCV cannot decode this video file",
            str(spec.target),
        )
    if spec.kind == "folder":
        return FolderReader(Path(spec.target))
    if spec.kind == "synthetic":
        return SyntheticReader(**spec.options)
    raise SourceError(f"{spec.uri}: unknown source kind {spec.kind!r}")
