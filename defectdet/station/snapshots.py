"""NG snapshots: raw and annotated frames under a disk quota, written by a writer thread."""

from __future__ import annotations

import collections
import logging
import os
import queue as queue_module
import shutil
import threading
import time
from pathlib import Path
from typing import Any, Optional

import cv2
import numpy as np

from ..config import atomic_write_bytes
from .result import FrameResult, SnapshotJob, utc_iso
from .sink import BaseSink

LOG = logging.getLogger("defectdet.inspect")


class Snapshots(BaseSink):
    """NG frames as files (raw and/or annotated) under a disk quota: the oldest are deleted first.

    Names start with the UTC time, so name order is age order, also across runs into the same folder,
    then the run id: ``<UTC time>_<run id>_f<frame>_<kind>.<ext>``.
    With ``queue > 0`` (the default) a writer thread draws, encodes and writes the files, so a slow
    disk or a large PNG never holds up the next decision: :meth:`emit` records the names in the
    event and queues the frame. A full queue drops that frame's snapshots (counted in ``dropped``;
    with ``block=True``, for files and folders where every frame is inspected anyway, it waits);
    a drop, and a write that fails in the thread (counted in ``failed``), raises ``OSError`` from the
    next :meth:`emit` or from :meth:`close`, so the loop's guard logs it. ``queue=0`` writes in the
    caller's thread. :meth:`close` writes what is queued (at most ``close_timeout_s``). Each NG
    frame gets a :class:`~.sinks.SnapshotJob` (``result.snapshot_job``), done once its files are
    written or lost: the event log waits for it, so an event names only files that exist.

    The event log has priority on a filling disk: a frame whose snapshots would leave less than
    ``min_free_mb`` free on the disk holding ``folder`` is not saved (logged, then every
    ``log_every_s``; counted in ``dropped_low_disk``), so the space left stays for the events.
    """

    name = "snapshots"
    adds = frozenset({"snapshot_job", "snapshots"})  # the files the event names

    def __init__(
        self,
        folder: str | os.PathLike,
        *,
        quota_mb: float = 500.0,
        raw: bool = True,
        annotated: bool = True,
        raw_format: str = "png",
        annotated_format: str = "jpg",
        jpeg_quality: int = 90,
        queue: int = 8,
        block: bool = False,
        close_timeout_s: float = 30.0,
        min_free_mb: float = 100.0,
        log_every_s: float = 30.0,
    ):
        self.folder = Path(folder)
        self.min_free_mb, self.log_every_s = float(min_free_mb), float(log_every_s)
        self.dropped_low_disk, self._low_since, self._low_logged_at = 0, None, -float("inf")
        self.quota = int(float(quota_mb) * 2**20)
        self.raw, self.annotated = bool(raw), bool(annotated)
        self.formats = {"raw": "." + raw_format.lstrip("."), "annotated": "." + annotated_format.lstrip(".")}
        self.params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
        self.written = self.deleted = self.dropped = self.failed = 0
        self._files: collections.deque[tuple[Path, int]] = collections.deque()
        self.total = 0
        self.queue_size, self.block, self.close_timeout_s = int(queue), bool(block), float(close_timeout_s)
        self._queue: Optional[queue_module.Queue] = None
        self._thread: Optional[threading.Thread] = None
        self._errors: collections.deque[str] = collections.deque(maxlen=64)  # from the writer thread
        if self.folder.is_dir():  # a previous run's snapshots count against the quota too
            for p in sorted(q for q in self.folder.iterdir() if q.is_file() and not q.name.startswith(".")):
                self._files.append((p, p.stat().st_size))
                self.total += p.stat().st_size

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "deleted": self.deleted,
            "dropped": self.dropped,
            "failed": self.failed,
            "dropped_low_disk": self.dropped_low_disk,
            "min_free_mb": self.min_free_mb,
        }

    def _room(self, result: FrameResult, files: int) -> bool:
        """Whether ``files`` snapshots (each at most the frame's raw size) leave ``min_free_mb`` free."""
        if self.min_free_mb <= 0:
            return True
        try:
            free = shutil.disk_usage(_existing(self.folder)).free
        except OSError:
            return True  # the write itself will fail, and say why
        if free - files * result.frame.image.nbytes >= self.min_free_mb * 2**20:
            if self._low_since is not None:
                LOG.warning(
                    "snapshots: %.0f MB free again on %s: saving snapshots again (%d NG frame(s) not saved)",
                    free / 2**20,
                    self.folder,
                    self.dropped_low_disk,
                )
                self._low_since = None
            return True
        self.dropped_low_disk += 1
        now = time.monotonic()
        self._low_since = self._low_since or now
        if now - self._low_logged_at >= self.log_every_s:
            self._low_logged_at = now
            LOG.warning(
                "snapshots: %.0f MB free on %s, under snapshots.min_free_mb=%g: frame %d not saved, the "
                "space is kept for the event log (%d NG frame(s) not saved so far)",
                free / 2**20,
                self.folder,
                self.min_free_mb,
                result.frame.index,
                self.dropped_low_disk,
            )
        return False

    def emit(self, result: FrameResult) -> None:
        if not result.decision.ng:
            return
        run = f"_{result.run_id}" if result.run_id else ""
        when = utc_iso(result.frame.timestamp).replace(":", "").replace("-", "")
        stem = f"{when}{run}_f{result.frame.index:08d}"
        kinds = (["annotated"] if self.annotated else []) + (["raw"] if self.raw else [])  # name order = age
        paths = [self.folder / f"{stem}_{kind}{self.formats[kind]}" for kind in kinds]
        job = result.snapshot_job = SnapshotJob([p.name for p in paths])
        if not self._room(result, len(paths)):
            job.finish(error="not saved: free disk space under snapshots.min_free_mb")
            return
        if self.queue_size <= 0:
            try:
                self._save(result, kinds, paths, names=result.snapshots)
            finally:
                job.finish(
                    result.snapshots,
                    "" if len(result.snapshots) == len(paths) else "not written: write failed",
                )
            return
        if self._thread is None:
            self._queue = queue_module.Queue(self.queue_size)
            self._thread = threading.Thread(target=self._run, name="snapshot-writer", daemon=True)
            self._thread.start()
        try:
            self._queue.put((result, kinds, paths), block=self.block)
        except queue_module.Full:
            self.dropped += 1
            job.finish(error="not saved: the snapshot writer was behind (queue full)")
            raise OSError(
                f"{self.folder}: the snapshot writer is {self.queue_size} frames behind (slow disk?): "
                f"frame {result.frame.index} not saved ({self.dropped} dropped so far)"
            ) from None
        result.snapshots.extend(p.name for p in paths)
        self._raise_errors()

    def _save(
        self, result: FrameResult, kinds: list[str], paths: list[Path], names: Optional[list[str]] = None
    ) -> None:
        for kind, path in zip(kinds, paths):
            self._write(path, result.annotated() if kind == "annotated" else result.frame.image)
            if names is not None:
                names.append(path.name)
        self.enforce_quota(keep=len(paths))

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            written: list[str] = []
            error = "not saved: free disk space under snapshots.min_free_mb"
            try:
                if job is None:
                    return
                if self._room(job[0], len(job[2])):  # the disk may have filled while the job waited
                    self._save(*job, names=written)
                    error = ""
            except Exception as e:  # reported by the next emit/close, on the loop's thread
                self.failed += 1
                self._errors.append(f"frame {job[0].frame.index}: {e.__class__.__name__}: {e}")
                error = f"not written: {e.__class__.__name__}"
            finally:
                if job is not None and job[0].snapshot_job is not None:
                    job[0].snapshot_job.finish(written, error)
                self._queue.task_done()

    def _raise_errors(self) -> None:
        if self._errors:
            errors = [self._errors.popleft() for _ in range(len(self._errors))]
            more = f" (+{len(errors) - 1} more; {self.failed} failed so far)" if len(errors) > 1 else ""
            raise OSError(f"{self.folder}: snapshot not written: {errors[0]}{more}")

    def flush(self, timeout: Optional[float] = None) -> bool:
        """Wait until the queued snapshots are written (True) or ``timeout`` seconds pass (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._queue is not None and self._queue.unfinished_tasks:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def _write(self, path: Path, img: np.ndarray) -> None:
        ok, buf = cv2.imencode(path.suffix, img, self.params if path.suffix in (".jpg", ".jpeg") else [])
        if not ok:
            raise OSError(f"{path}: OpenCV cannot encode {path.suffix}")
        atomic_write_bytes(path, buf.tobytes(), fsync=False)
        self._files.append((path, buf.nbytes))
        self.total += buf.nbytes
        self.written += 1

    def enforce_quota(self, keep: int = 0) -> None:
        """Delete the oldest files until the folder is within quota (the newest ``keep`` files stay)."""
        while self.total > self.quota and len(self._files) > keep:
            path, size = self._files.popleft()
            path.unlink(missing_ok=True)
            self.total -= size
            self.deleted += 1

    def close(self) -> None:
        """Write what is queued (waiting at most ``close_timeout_s``), stop the thread, report failures."""
        if self._thread is not None:
            done = self.flush(self.close_timeout_s)
            if done:
                self._queue.put(None)
                self._thread.join(self.close_timeout_s)
            self._thread = None
            if not done:
                left = self._queue.unfinished_tasks
                raise OSError(
                    f"{self.folder}: {left} snapshot(s) still queued after {self.close_timeout_s:g} s; "
                    "left unwritten"
                )
        self._raise_errors()


def _existing(path: Path) -> Path:
    """``path`` or its nearest existing parent (the folder may not exist yet)."""
    while not path.exists() and path.parent != path:
        path = path.parent
    return path
