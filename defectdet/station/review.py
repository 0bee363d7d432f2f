"""The review queue: frames an operator should look at, saved full-resolution under a disk budget.

What is queued (one frame per *part*: a run of consecutive frames of the same kind, as the
decision's debounce and the conveyor's pass group them; the part's most telling frame is kept):

* ``ng`` — every NG part: the frame of the run with the most confident defect;
* ``near_miss`` — OK parts with a detection whose confidence falls within ``near_band`` under its
  class's threshold (the escapes hide here): the frame closest to its threshold;
* ``audit`` — a random sample (``audit_rate``) of plain OK frames, for an escape audit.

Each item is ``items/<id>.<format>`` (the raw frame, not the annotated one) and ``items/<id>.json``
(run id, model id, kind, frame, time, every detection, the verdict's defects, the frame's ``info``).
Item ids start with the UTC time, so name order is age order; when the folder passes ``budget_mb``
the oldest items go first. ``queue.json`` describes the queue (class names, thresholds, run id).

A writer thread encodes and writes the items behind a bounded queue: :meth:`ReviewQueue.emit`
only compares a few numbers and keeps a reference to the frame. On a live source a full queue drops
the item (counted in ``dropped``, logged now and then); on a file or folder it waits. Nothing here
touches the event log, the snapshots or the decision. Operators review through the page
(:mod:`.review_page`); ``defectdet data harvest`` turns reviewed items into training data.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import queue as queue_module
import random
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import cv2
import numpy as np

from ..config import atomic_write_bytes, atomic_write_text
from ..errors import ConfigError
from .result import utc_iso
from .safety import new_run_id
from .sink import BaseSink

LOG = logging.getLogger("defectdet.inspect")
KINDS = ("ng", "near_miss", "audit")
MAX_PART_FRAMES = 600  # a run of NG (or near-miss) frames longer than this is cut into parts (a stopped line)


def detector_floor(thresholds: np.ndarray, band: float) -> np.ndarray:
    """The detector thresholds that let near misses (``band`` under a class's threshold) through."""
    return np.maximum(np.asarray(thresholds, np.float32) - float(band), 0.0).astype(np.float32)


class _Part:
    """The frames of one part so far: its kind, its best frame and that frame's score."""

    def __init__(self, kind: str, result: Any, score: float):
        self.kind, self.best, self.score = kind, result, score
        self.first = self.last = int(result.frame.index)
        self.frames = 1

    def add(self, result: Any, score: float) -> None:
        self.frames += 1
        self.last = int(result.frame.index)
        if score > self.score:
            self.best, self.score = result, score


class ReviewQueue(BaseSink):
    """NG parts, near misses and an audit sample as review items under a disk budget (module docstring)."""

    name = "review"

    def __init__(
        self,
        folder: str | os.PathLike,
        names: Mapping[int, str],
        thresholds: Sequence[float],
        budget_mb: float = 500.0,
        near_band: float = 0.1,
        audit_rate: float = 0.002,
        image_format: str = "png",
        queue: int = 16,
        block: bool = False,
        run_id: Optional[str] = None,
        seed: Optional[int] = None,
        info: Optional[Mapping[str, Any]] = None,
        close_timeout_s: float = 30.0,
        log_every_s: float = 30.0,
    ):
        self.folder, self.items = Path(folder), Path(folder) / "items"
        self.names = {int(k): str(v) for k, v in names.items()}
        self.thresholds = np.asarray(thresholds, np.float32).reshape(-1)  # (nc,) the decision's thresholds
        self.budget = int(float(budget_mb) * 2**20)
        self.near_band, self.audit_rate = float(near_band), float(audit_rate)
        self.suffix = "." + str(image_format).lstrip(".").lower()
        if self.suffix not in (".png", ".jpg", ".jpeg"):
            raise ConfigError(f"review.image_format={image_format!r}: expected png (lossless) or jpg")
        self.queue_size, self.block = max(int(queue), 1), bool(block)
        self.run_id = run_id or new_run_id()
        self.info = dict(info or {})
        self.close_timeout_s, self.log_every_s = float(close_timeout_s), float(log_every_s)
        self._rng = random.Random(seed)
        self._part: Optional[_Part] = None
        self.queued = {k: 0 for k in KINDS}
        self.written = self.deleted = self.dropped = self.failed = 0
        self.total = 0
        self._files: collections.deque[tuple[str, int]] = (
            collections.deque()
        )  # (item id, bytes), oldest first
        self._lock = threading.Lock()
        self._queue: queue_module.Queue = queue_module.Queue(self.queue_size)
        self._thread: Optional[threading.Thread] = None
        self._logged_at = -float("inf")
        self.last_error = ""

    # -- the loop's side ------------------------------------------------------------------------
    def open(self) -> None:
        self.items.mkdir(parents=True, exist_ok=True)
        self._scan()
        meta = {
            "run_id": self.run_id,
            "names": [self.names[i] for i in sorted(self.names)],
            "thresholds": {
                self.names[i]: round(float(t), 4) for i, t in zip(sorted(self.names), self.thresholds)
            },
            "near_band": self.near_band,
            "audit_rate": self.audit_rate,
            "started": utc_iso(time.time()),
            **self.info,
        }
        atomic_write_text(self.folder / "queue.json", json.dumps(meta, indent=1, default=str) + "\n")
        self._thread = threading.Thread(target=self._run, name="review-writer", daemon=True)
        self._thread.start()

    def emit(self, result: Any) -> None:
        kind, score = self.classify(result)
        part = self._part
        if part is not None and part.kind == kind and part.frames < MAX_PART_FRAMES:
            part.add(result, score)
            return
        self._part = _Part(kind, result, score) if kind else None
        if part is not None:
            self._enqueue(part)
        if kind is None and self.audit_rate > 0 and self._rng.random() < self.audit_rate:
            self._enqueue(_Part("audit", result, 0.0))

    def classify(self, result: Any) -> tuple[Optional[str], float]:
        """('ng', top defect confidence), ('near_miss', -distance under the threshold) or (None, 0.0)."""
        decision = result.decision
        if decision.ng:
            conf = decision.defects.confidence
            return "ng", float(conf.max()) if len(conf) else 0.0
        dets = result.detections
        if self.near_band <= 0 or not len(dets):
            return None, 0.0
        cls = np.minimum(dets.class_id, len(self.thresholds) - 1)
        gap = self.thresholds[cls] - dets.confidence  # (N,) how far under its threshold (negative: debounced)
        near = gap < self.near_band
        if near.any() and result.roi is not None:  # outside the region of interest nothing is a near miss
            centres = (dets.xyxy[:, :2] + dets.xyxy[:, 2:]) / 2  # (N, 2)
            near &= np.array(
                [cv2.pointPolygonTest(result.roi, (float(x), float(y)), False) >= 0 for x, y in centres]
            )
        if not near.any():
            return None, 0.0
        return "near_miss", float(-gap[near].min())

    def _enqueue(self, part: _Part) -> None:
        try:
            self._queue.put(part, block=self.block, timeout=self.close_timeout_s if self.block else None)
        except queue_module.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._logged_at >= self.log_every_s:
                self._logged_at = now
                LOG.warning(
                    "review: the writer is %d items behind (slow disk?): %s part at frame %d not queued "
                    "(%d dropped so far; inspection is not held up)",
                    self.queue_size,
                    part.kind,
                    part.best.frame.index,
                    self.dropped,
                )
            return
        self.queued[part.kind] += 1

    def close(self) -> None:
        """Queue the part in progress, write what is queued (at most ``close_timeout_s``), stop the writer."""
        if self._part is not None:
            part, self._part = self._part, None
            self._enqueue(part)
        if self._thread is None:
            return
        try:
            self._queue.put(None, timeout=self.close_timeout_s)
        except queue_module.Full:
            pass
        self._thread.join(self.close_timeout_s)
        if self._thread.is_alive():
            raise OSError(
                f"{self.items}: review items still queued after {self.close_timeout_s:g} s; left unwritten"
            )
        self._thread = None

    def stats(self) -> dict[str, Any]:
        return {
            "queued": dict(self.queued),
            "written": self.written,
            "deleted": self.deleted,
            "dropped": self.dropped,
            "failed": self.failed,
            "bytes": self.total,
            "budget_bytes": self.budget,
            "run_id": self.run_id,
            "folder": str(self.folder),
        }

    # -- the writer's side ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            part = self._queue.get()
            if part is None:
                return
            try:
                self._write(part)
            except Exception as e:  # a full or failing disk: counted, logged now and then
                self.failed += 1
                self.last_error = f"{e.__class__.__name__}: {e}"
                now = time.monotonic()
                if now - self._logged_at >= self.log_every_s:
                    self._logged_at = now
                    LOG.error(
                        "review: item not written (%s; %d so far); inspection goes on",
                        self.last_error,
                        self.failed,
                    )

    def _write(self, part: _Part) -> None:
        r = part.best
        stamp = utc_iso(r.frame.timestamp).replace(":", "").replace("-", "")
        item_id = f"{stamp}_f{int(r.frame.index):08d}_{part.kind}"
        ok, buf = cv2.imencode(self.suffix, r.frame.image)
        if not ok:
            raise OSError(f"OpenCV cannot encode {self.suffix}")
        image = self.items / f"{item_id}{self.suffix}"
        atomic_write_bytes(image, buf.tobytes(), fsync=False)
        h, w = r.frame.image.shape[:2]
        meta = {
            "id": item_id,
            "run_id": getattr(r, "run_id", None) or self.run_id,
            "model": r.model_id,
            "kind": part.kind,
            "frame": int(r.frame.index),
            "ts": utc_iso(r.frame.timestamp),
            "source": r.source,
            "image": image.name,
            "width": int(w),
            "height": int(h),
            "decision": r.decision.label,
            "raw_ng": bool(r.decision.raw_ng),
            "score": round(part.score, 4),
            "part_frames": [part.first, part.last, part.frames],
            "defects": r.decision.defects.to_list(),
            "detections": r.detections.to_list(),
        }
        if r.frame.info:
            meta["info"] = r.frame.info
        text = json.dumps(meta, default=_plain) + "\n"
        atomic_write_text(self.items / f"{item_id}.json", text)
        with self._lock:
            self._files.append((item_id, buf.nbytes + len(text)))
            self.total += buf.nbytes + len(text)
            self.written += 1
        self.enforce_budget()

    def _scan(self) -> None:
        """Count a previous run's items in this folder against the budget."""
        sizes: dict[str, int] = {}
        for p in self.items.iterdir():
            if p.is_file() and not p.name.startswith("."):
                sizes[p.stem] = sizes.get(p.stem, 0) + p.stat().st_size
        with self._lock:
            for item_id in sorted(sizes):
                self._files.append((item_id, sizes[item_id]))
                self.total += sizes[item_id]

    def enforce_budget(self) -> None:
        """Delete the oldest items until the folder is within budget (the newest one stays)."""
        while True:
            with self._lock:
                if self.total <= self.budget or len(self._files) <= 1:
                    return
                item_id, size = self._files.popleft()
                self.total -= size
                self.deleted += 1
            for p in self.items.glob(f"{item_id}.*"):
                p.unlink(missing_ok=True)


def _plain(value: Any) -> Any:
    """numpy scalars in a frame's ``info`` as plain JSON values."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)
