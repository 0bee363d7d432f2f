"""A shadow model: a candidate runs on the live frames, drives nothing, and says where it disagrees.

``defectdet inspect --shadow candidate.bundle`` (a model bundle, or an .onnx/.engine;
``shadow.model:`` in the config) adds a :class:`ShadowSink`. Each frame the loop decides is handed
to the sink's own thread, which runs the candidate and decides the frame with the candidate's
thresholds and the live run's region of interest (per frame: no debounce, so it is compared with the
live model's per-frame verdict, ``raw_ng``). The candidate never touches the event log, the
snapshots, the page's counters or any reject/alarm output.

When the candidate is slower than the line, a live source keeps only the newest frame waiting for
it: frames in between are not shadowed (``skipped``; logged once, with the candidate's time per
frame), so the line's decisions are never held up. A file or folder waits for it: every frame
is shadowed.

``shadow.jsonl`` holds one line per shadowed frame where either model rejects or they disagree
(every shadowed frame with ``log_agreeing``); ``shadow.json`` the candidate and the counts:
``shadowed``, ``agree``, ``live_only`` (live NG, candidate OK), ``candidate_only``,
``class_differs``. ``defectdet compare <run>`` reads both, and the reviewed items.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..config import atomic_write_text
from .decisions import Decider
from .result import utc_iso
from .sink import BaseSink

LOG = logging.getLogger("defectdet.inspect")


def verdict(decision: Any) -> dict[str, Any]:
    """A per-frame verdict as recorded: NG (this frame alone), defect classes, defects."""
    d = decision.defects
    return {
        "ng": bool(decision.raw_ng),
        "classes": sorted(set(d.class_name.tolist())),
        "defects": d.to_list(),
    }


class ShadowSink(BaseSink):
    """Runs a candidate detector beside the live one (see the module docstring)."""

    name = "shadow"

    def __init__(
        self,
        detector: Callable[[Any], Any],
        names: Mapping[int, str],
        thresholds: Sequence[float],
        path: str | os.PathLike,
        candidate: str = "",
        roi: Optional[Sequence] = None,
        roi_units: str = "fraction",
        block: bool = False,
        log_agreeing: bool = False,
        close_timeout_s: float = 60.0,
        model_path: Optional[str] = None,
    ):
        self.detector, self.candidate, self.model_path = detector, str(candidate), model_path
        self.decider = Decider(names, thresholds=_vector(thresholds), roi=roi, roi_units=roi_units)
        self.path, self.block, self.log_agreeing = Path(path), bool(block), bool(log_agreeing)
        self.close_timeout_s = float(close_timeout_s)
        self.shadowed = self.skipped = self.agree = self.live_only = self.candidate_only = (
            self.class_differs
        ) = 0
        self.logged = self.errors = 0
        self.ms_total = 0.0
        self.live_model = ""
        self._waiting: Any = None  # the newest frame not yet taken by the worker
        self._cond = threading.Condition()
        self._closing = False
        self._thread: Optional[threading.Thread] = None
        self._file: Any = None
        self._warned = False

    # -- the loop's side -------------------------------------------------------------------------
    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(self.path, "a", encoding="utf-8")
        self._write_meta()
        self._thread = threading.Thread(target=self._run, name="shadow", daemon=True)
        self._thread.start()
        LOG.info(
            "shadow: %s runs beside the live model (drives no output) -> %s",
            self.candidate or "candidate",
            self.path,
        )

    def emit(self, result: Any) -> None:
        self.live_model = self.live_model or result.model_id
        with self._cond:
            if self.block:
                self._cond.wait_for(lambda: self._waiting is None or self._closing, self.close_timeout_s)
            elif self._waiting is not None:
                self.skipped += 1
                self._warn_behind()
            self._waiting = result
            self._cond.notify_all()

    def _warn_behind(self) -> None:
        if not self._warned:
            self._warned = True
            per = self.ms_total / self.shadowed if self.shadowed else float("nan")
            LOG.warning(
                "shadow: the candidate (%.1f ms per frame) cannot keep up with the line: it shadows a share "
                "of the frames (the rest counted as skipped in summary.json's sinks.shadow)",
                per,
            )

    def close(self) -> None:
        """Let the worker finish the frame it has, stop it, write ``shadow.json``."""
        if self._thread is not None:
            with self._cond:
                self._closing = True
                self._cond.notify_all()
            self._thread.join(self.close_timeout_s)
            self._thread = None
        if self._file is not None:
            self._file.close()
            self._file = None
        self._write_meta()
        close = getattr(self.detector, "close", None)
        if callable(close):
            close()

    def stats(self) -> dict[str, Any]:
        seen = self.shadowed + self.skipped
        return {
            "candidate": self.candidate,
            "shadowed": self.shadowed,
            "skipped": self.skipped,
            "shadowed_share": round(self.shadowed / seen, 4) if seen else None,
            "agree": self.agree,
            "live_only": self.live_only,
            "candidate_only": self.candidate_only,
            "class_differs": self.class_differs,
            "logged": self.logged,
            "candidate_errors": self.errors,
            "ms_per_frame": round(self.ms_total / self.shadowed, 2) if self.shadowed else None,
        }

    # -- the worker ----------------------------------------------------------------------------
    def _take(self) -> Any:
        with self._cond:
            self._cond.wait_for(lambda: self._waiting is not None or self._closing)
            result, self._waiting = self._waiting, None
            self._cond.notify_all()
            return result

    def _run(self) -> None:
        while True:
            result = self._take()
            if result is None:
                return
            try:
                self._shadow(result)
            except Exception as e:  # the candidate failing never touches the line
                self.errors += 1
                if self.errors == 1 or self.errors % 1000 == 0:
                    LOG.error(
                        "shadow: candidate failed on frame %d (%s: %s; %d so far)",
                        result.frame.index,
                        e.__class__.__name__,
                        e,
                        self.errors,
                    )

    def _shadow(self, result: Any) -> None:
        t = time.perf_counter()
        dets = self.detector(result.frame.image)
        mine = verdict(self.decider(dets, result.frame.image.shape))
        self.ms_total += (time.perf_counter() - t) * 1e3
        live = verdict(result.decision)
        agree = live["ng"] == mine["ng"] and live["classes"] == mine["classes"]
        self.shadowed += 1
        self.agree += agree
        self.live_only += live["ng"] and not mine["ng"]
        self.candidate_only += mine["ng"] and not live["ng"]
        self.class_differs += live["ng"] and mine["ng"] and not agree
        if not agree or live["ng"] or mine["ng"] or self.log_agreeing:
            rec = {
                "ts": utc_iso(result.frame.timestamp),
                "frame": int(result.frame.index),
                "run_id": getattr(result, "run_id", None),
                "agree": agree,
                "live": live,
                "candidate": mine,
            }
            self._file.write(json.dumps(rec) + "\n")
            self._file.flush()
            self.logged += 1

    def _write_meta(self) -> None:
        meta = {
            "candidate": self.candidate,
            "model_path": self.model_path,
            "live_model": self.live_model,
            "log": self.path.name,
            "names": [self.decider.names[i] for i in sorted(self.decider.names)],
            "thresholds": [round(float(t), 4) for t in self.decider.thresholds],
            **self.stats(),
        }
        atomic_write_text(self.path.with_suffix(".json"), json.dumps(meta, indent=1) + "\n")


def _vector(thresholds: Sequence[float]) -> Any:
    import numpy as np

    return np.asarray(thresholds, np.float32).reshape(-1)


def open_shadow(s: Mapping[str, Any], ctx: Any) -> ShadowSink:
    """The ``shadow:`` section -> a :class:`ShadowSink` (the candidate loads now).

    ``shadow.model`` is a model bundle (``defectdet package``: verified, and run as ``inspect --model``
    runs one, :func:`.bundled.resolve_model`, never building an engine for it) or an .onnx/.engine.
    The candidate runs the live model's views (flips, tiles)."""
    from ..runtime import Detector
    from .bundled import resolve_model

    res = resolve_model(Path(str(s["model"])), s["backend"])
    if res.note:
        LOG.info("shadow: %s", res.note)
    views = dict(ctx.info.get("views") or {})  # the live model's flips and tiles: the same views
    det = Detector(
        res.model,
        backend=res.backend,
        conf=float(ctx.info.get("conf", 0.25)),
        thresholds=s["thresholds"],
        tta=views.get("tta", "none"),
        tiles=views.get("tiles"),
        overlap=views.get("tile_overlap", 0.2),
    )
    decision = dict(ctx.info.get("decision") or {})
    return ShadowSink(
        det,
        det.names,
        det.thresholds,
        ctx.out / s["file"],
        res.model_id,
        decision.get("roi"),
        decision.get("roi_units", "fraction"),
        block=not ctx.live,
        log_agreeing=bool(s["log_agreeing"]),
        model_path=str(Path(res.model).resolve()),
    )
