"""Counts per time interval, for shift reports: the event log holds NG frames only, so the yield of
an hour needs the OK frames too.

One JSON line per ``every_s`` interval (aligned to the clock: minute, hour boundaries) with at least
one frame, written when the interval ends and when the run ends::

    {"ts": "2024-05-01T12:00:00.000Z", "until": "2024-05-01T12:01:00.000Z", "frames": 1800, "ok": 1790,
     "ng": 10, "per_class": {"scratch": 7, "dent": 3}, "parts": null, "parts_ng": 4, "missed_rejects": 0,
     "run": "20240501T060000Z-3f9a1c", "source": "...", "model": "..."}

``per_class``: NG frames with a defect of that class. ``parts_ng``: rejected (NG) parts — reject
triggers; ``missed_rejects``: those whose reject the PLC never got (counted when found missed);
``parts``: parts seen, when the station can tell (``signals.trigger: frame``, one frame per part,
or a source numbering its parts), else null. ``run``: the run id. Appended and flushed (one small write a
minute); read back by :func:`read_tally` and ``defectdet report``.
"""

from __future__ import annotations

import collections
import json
import math
import os
from pathlib import Path
from typing import Any, Iterator, Optional

from ..config import read_jsonl
from .result import utc_iso
from .sink import BaseSink


class Tally(BaseSink):
    """Frames, OK, NG and NG per class per ``every_s`` interval, one JSON line each."""

    name = "tally"

    def __init__(self, path: str | os.PathLike, *, every_s: float = 60.0):
        self.path, self.every_s = Path(path), max(float(every_s), 1.0)
        self.written = 0
        self._start: Optional[float] = None
        self._counts: collections.Counter[str] = collections.Counter()
        self._per_class: collections.Counter[str] = collections.Counter()
        self._meta: dict[str, str] = {}
        self._parts_known, self._closed = True, False

    def emit(self, result: Any) -> None:
        t = float(result.frame.timestamp)
        start = math.floor(t / self.every_s) * self.every_s
        if self._start is not None and start != self._start:
            self.flush()
        self._start = start
        ng = bool(result.decision.ng)
        self._counts.update(
            {
                "frames": 1,
                "ng" if ng else "ok": 1,
                "parts_ng": int(bool(result.trigger)),
                "parts": int(bool(result.new_part)),
            }
        )
        self._parts_known = self._parts_known and result.new_part is not None
        if ng:
            self._per_class.update(set(result.decision.defects.class_name.tolist()))
        self._meta = {"run": result.run_id, "source": result.source, "model": result.model_id}

    def missed_reject(self, record: dict) -> None:
        """Counted in the current interval (written with the next line; at the run's end, a line of its
        own)."""
        self._counts["missed_rejects"] += 1
        if self._start is None:
            import time

            self._start = math.floor(time.time() / self.every_s) * self.every_s
        if self._closed:  # an output's last misses, found while the run closed
            self.flush()

    def flush(self) -> None:
        """Write the current interval's line (nothing when it is empty)."""
        if self._start is None or not (self._counts["frames"] or self._counts["missed_rejects"]):
            return
        rec = {
            "ts": utc_iso(self._start),
            "until": utc_iso(self._start + self.every_s),
            "frames": self._counts["frames"],
            "ok": self._counts["ok"],
            "ng": self._counts["ng"],
            "per_class": dict(self._per_class),
            "parts": self._counts["parts"] if self._parts_known else None,
            "parts_ng": self._counts["parts_ng"],
            "missed_rejects": self._counts["missed_rejects"],
            **self._meta,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(
            self.path, "a", encoding="utf-8"
        ) as f:  # a failure raises: the counts go into the next line
            f.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._counts.clear()
        self._per_class.clear()
        self._parts_known = True
        self.written += 1

    def close(self) -> None:
        self.flush()
        self._closed = True

    def stats(self) -> dict[str, Any]:
        return {"written": self.written}


def read_tally(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The intervals of a tally file (a torn last line, from a power cut, is skipped)."""
    yield from read_jsonl(path, "ts")
