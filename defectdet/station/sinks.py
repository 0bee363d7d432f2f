"""Where the loop's results go: JSONL events, annotated video, an optional window (what a sink sees:
:class:`~defectdet.station.result.FrameResult`; NG snapshots: :mod:`.snapshots`; reject/alarm
outputs: :mod:`.signals`).

Each is a :class:`~defectdet.station.sink.Sink`; the loop runs each behind a
:class:`~defectdet.station.sink.Guard`, so a full or read-only disk is logged (one clear line, then
a reminder every ``log_every_s``) and counted, and the loop goes on deciding and signalling.
"""

from __future__ import annotations

import collections
import json
import os
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import cv2
import numpy as np

from .result import FrameResult
from .sink import BaseSink


# --------------------------------------------------------------------------- JSONL events
class EventLog(BaseSink):
    """One JSON line per NG frame: appended, flushed and fsync'd; rotated by size; never truncated.

    The file exists from :meth:`open` on (created empty when new). An NG frame whose snapshots are
    being written (:class:`SnapshotJob`) is written once they are on disk (or known lost), by the
    next :meth:`emit` (the loop's thread: one frame later on a live line), in frame order;
    :meth:`close` writes what is left. Each missed reject (:meth:`missed_reject`) is a line too:
    ``{"type": "missed_reject", ...}``
    (:func:`read_events` yields frame events only unless asked for records).

    ``events.jsonl`` is renamed ``events.000001.jsonl`` (the next free number) when a line would take
    it past ``max_bytes``; old files are never deleted. A write that fails half-way (disk full) is
    cut back to the end of the last whole line, so the file stays valid JSONL.
    """

    name = "events"
    summary_keys = {"events_written": "written"}
    reads = frozenset({"snapshot_job", "snapshots"})  # filled by Snapshots: the event waits for its files

    def __init__(self, path: str | os.PathLike, *, max_bytes: int = 50 * 2**20, fsync: bool = True):
        self.path = Path(path)
        self.max_bytes, self.fsync = int(max_bytes), bool(fsync)
        self.written = self.records = 0
        self._fd: Optional[int] = None
        self._size = 0
        self._lock = threading.RLock()
        self._waiting: collections.deque[FrameResult] = (
            collections.deque()
        )  # NG frames whose snapshots are pending

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # append-only writes
        try:
            size = os.fstat(fd).st_size
            if size and os.pread(fd, 1, size - 1) != b"\n":
                os.write(fd, b"\n")  # a line torn by a power cut stays alone on its line
                size += 1
        except OSError:
            os.close(fd)
            raise
        self._fd, self._size = fd, size

    def open(self) -> None:
        """Create the file (even empty) when the run starts: a log shipper can tail it from frame one."""
        if self._fd is None:
            self._open()

    def rotate(self) -> Path:
        """Rename the current file to the next free ``<stem>.NNNNNN.jsonl`` (never overwriting)."""
        self._close_fd()
        n = 1 + max((_rotation_number(p) for p in rotated_files(self.path)), default=0)
        target = self.path.with_name(f"{self.path.stem}.{n:06d}{self.path.suffix}")
        os.rename(self.path, target)
        _fsync_dir(self.path.parent)
        return target

    def emit(self, result: FrameResult) -> None:
        if result.decision.ng:
            with self._lock:
                self._waiting.append(result)
        self.drain()

    def drain(self, force: bool = False) -> None:
        """Write the waiting NG events whose snapshots are done, in frame order (``force``: all of them)."""
        error, failures = None, 0
        with self._lock:
            while self._waiting:
                job = self._waiting[0].snapshot_job
                if job is not None and not job.done.is_set() and not force:
                    break
                try:
                    self._write(self._waiting.popleft().event(), True)
                except OSError as e:  # this event is lost (counted: written < ng); the next ones are tried
                    error, failures = error or e, failures + 1
        if error is not None:
            error.failures = failures  # the guard counts each lost event
            raise error

    def missed_reject(self, record: dict[str, Any]) -> None:
        """One line for a reject an output could not deliver."""
        with self._lock:
            was_closed = self._fd is None
            self.write(record, frame=False)
            if was_closed:  # after close (an output's last misses): close again
                self._close_fd()

    def write(self, record: dict[str, Any], frame: bool = True) -> None:
        """Append one record as a line; raises OSError (after cutting back any partial line) on failure."""
        with self._lock:
            self._write(record, frame)

    def _write(self, record: dict[str, Any], frame: bool) -> None:
        line = (json.dumps(record, separators=(",", ":"), default=_json_default) + "\n").encode()
        if self._fd is None:
            self._open()
        if self.max_bytes and self._size and self._size + len(line) > self.max_bytes:
            self.rotate()
            self._open()
        start = self._size
        try:
            n = os.write(self._fd, line)
            if n != len(line):
                raise OSError(28, f"short write ({n} of {len(line)} bytes)", str(self.path))
            if self.fsync:
                os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, start)  # our own partial line only
            except OSError:
                pass
            self._close_fd()
            raise
        self._size += len(line)
        if frame:
            self.written += 1
        else:
            self.records += 1

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def close(self) -> None:
        """Write the waiting events (the snapshots closed first: theirs are done or lost), then close."""
        with self._lock:
            try:
                self.drain(force=True)
            finally:
                if self._fd is not None and self.fsync:
                    os.fsync(self._fd)
                self._close_fd()

    def stats(self) -> dict[str, Any]:
        return {"written": self.written}


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _rotation_number(p: Path) -> int:
    middle = p.suffixes[-2] if len(p.suffixes) >= 2 else ""
    return int(middle[1:]) if middle[1:].isdigit() else 0


def rotated_files(path: str | os.PathLike) -> list[Path]:
    """The rotated siblings of an event log, oldest first."""
    path = Path(path)
    found = [p for p in path.parent.glob(f"{path.stem}.*{path.suffix}") if _rotation_number(p) > 0]
    return sorted(found, key=_rotation_number)


def read_events(
    path: str | os.PathLike, records: bool = False, torn: Optional[list[str]] = None
) -> Iterator[dict[str, Any]]:
    """Every frame event of a log and its rotated files, oldest first (a malformed line raises ValueError;
    with a ``torn`` list, ``file:line`` is appended to it and the line skipped: a run killed mid-write);
    ``records``: also the other lines (``{"type": "missed_reject", ...}``)."""
    path = Path(path)
    for p in [*rotated_files(path), path]:
        if not p.exists():
            continue
        with open(p, encoding="utf-8") as f:
            for no, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        if torn is None:
                            raise ValueError(f"{p}:{no}: malformed JSON line ({e.msg})") from None
                        torn.append(f"{p}:{no}")
                        continue
                    if records or not (isinstance(rec, dict) and "type" in rec):
                        yield rec


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- video and window
class VideoRecorder(BaseSink):
    """Annotated frames into a video (written as ``.<name>.partial<ext>``, renamed on close)."""

    name = "video"

    def __init__(
        self, path: str | os.PathLike, *, fps: float = 15.0, fourcc: str = "mp4v", only_ng: bool = False
    ):
        self.path, self.fps, self.fourcc, self.only_ng = Path(path), float(fps), str(fourcc), bool(only_ng)
        self.tmp = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.written = 0
        self._writer: Optional[cv2.VideoWriter] = None
        self._size: Optional[tuple[int, int]] = None

    def emit(self, result: FrameResult) -> None:
        if self.only_ng and not result.decision.ng:
            return
        img = result.annotated()
        if self._writer is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._size = (img.shape[1], img.shape[0])
            self._writer = cv2.VideoWriter(
                str(self.tmp), cv2.VideoWriter_fourcc(*self.fourcc[:4]), self.fps, self._size
            )
            if not self._writer.isOpened():
                self._writer = None
                raise OSError(f"{self.path}: OpenCV cannot write a {self.fourcc} video here")
        if (img.shape[1], img.shape[0]) != self._size:
            img = cv2.resize(img, self._size)  # the source came back at another resolution
        self._writer.write(img)
        self.written += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            os.replace(self.tmp, self.path)

    def stats(self) -> dict[str, Any]:
        return {"written": self.written}


def display_available() -> bool:
    """A window can open: X11/Wayland on Linux (headless boards and services have neither); else assumed."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


class Window(BaseSink):
    """An on-screen view (only construct it when :func:`display_available`); q or Esc ends the run."""

    name = "window"

    def __init__(self, title: str = "defectdet inspect", on_quit: Optional[Callable[[], None]] = None):
        if not display_available():
            raise OSError(
                "no display (DISPLAY/WAYLAND_DISPLAY unset): the window is off; inspection is headless"
            )
        self.title, self.on_quit = title, on_quit
        cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)

    def emit(self, result: FrameResult) -> None:
        cv2.imshow(self.title, result.annotated())
        if (cv2.waitKey(1) & 0xFF) in (27, ord("q")) and self.on_quit:
            self.on_quit()

    def close(self) -> None:
        cv2.destroyWindow(self.title)
