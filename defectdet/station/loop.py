"""The inspection loop: capture -> (timeout: continue) -> infer -> decide -> sinks -> status.

Everything runs inside try/finally, which releases the source, closes (flushes) the sinks and
writes ``summary.json``; SIGINT/SIGTERM (:func:`install_signal_handlers`) only set a stop flag the
loop checks between frames, so a run ends cleanly within a read timeout plus one inference
(a second signal falls back to the default action). Sinks (:class:`~.sink.Sink`) run behind
:class:`~.sink.Guard`: a failing disk is logged and counted, never fatal; ``summary.json`` reports
each sink's own ``stats()``, and per-stage latency percentiles (``stages_ms``: pre, infer, post,
decide, sinks). This loop runs every stage in one thread, one frame after another;
:class:`~.pipeline.PipelinedLoop` runs the same stages on their own threads.

>>> source = FrameSource("video.mp4")
>>> loop = InspectionLoop(detector, source, Decider(detector.names), sinks=[EventLog("ev.jsonl")])
>>> summary = loop.run()
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Optional

import numpy as np

from ..config import atomic_write_text
from .capture import FrameSource
from .decisions import Decider
from .health import assess
from .result import FrameResult
from .safety import LineSafety, new_run_id
from .sink import Guard, Sink, emit_order
from .sources import Frame

LOG = logging.getLogger("defectdet.inspect")


class LatencyStats:
    """Percentiles of a run in constant memory: a log-spaced histogram (1 % bins from 1 µs to 100 s)
    for the whole run, the last ``window`` values for status lines."""

    RATIO, LOW, BINS = 1.01, 1e-3, 2600  # bin i covers [LOW*RATIO**i, LOW*RATIO**(i+1)) ms

    def __init__(self, window: int = 2048):
        self.counts = np.zeros(self.BINS, np.int64)  # (BINS,)
        self.recent: collections.deque[float] = collections.deque(maxlen=window)
        self.n = 0

    def add(self, ms: float) -> None:
        i = int(math.log(max(ms, self.LOW) / self.LOW, self.RATIO))
        self.counts[min(i, self.BINS - 1)] += 1
        self.recent.append(ms)
        self.n += 1

    def percentile(self, q: float) -> Optional[float]:
        """Whole-run percentile (within 1 %): the geometric centre of the bin holding it."""
        if not self.n:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), math.ceil(q / 100 * self.n)))
        return self.LOW * self.RATIO ** (i + 0.5)

    def recent_percentile(self, q: float) -> Optional[float]:
        return float(np.percentile(np.fromiter(self.recent, float), q)) if self.recent else None


def _ms(v: Optional[float]) -> Optional[float]:
    return None if v is None else round(v, 2)


def _percentiles(stats: LatencyStats) -> dict[str, Optional[float]]:
    return {"p50": _ms(stats.percentile(50)), "p99": _ms(stats.percentile(99))}


STAGES = ("pre", "infer", "post", "decide", "sinks")  # summary.json's stages_ms, in pipeline order


class InspectionLoop:
    """One inspection run over a :class:`FrameSource`, all stages in the calling thread (module docstring)."""

    pipelined = False
    in_flight = 1  # frames the model works on at once (a pipelined loop on a two-slot TensorRT engine: 2)

    def __init__(
        self,
        detector: Callable[[np.ndarray], Any],
        source: FrameSource,
        decider: Decider,
        sinks: Iterable[Sink] = (),
        *,
        signal_on: str = "edge",
        max_frames: int = 0,
        duration: float = 0.0,
        status_every: float = 5.0,
        read_timeout: float = 0.2,
        model_id: str = "",
        out_dir: Optional[str | os.PathLike] = None,
        log_every_s: float = 30.0,
        max_detector_errors: int = 10,
        safety: Optional[LineSafety] = None,
        run_id: Optional[str] = None,
    ):
        """Args:
        detector: frame -> Detections (a :class:`~defectdet.runtime.Detector`).
        source: an unstarted FrameSource; the loop starts and releases it.
        decider: per-class thresholds, ROI, debounce.
        sinks: :class:`~.sink.Sink` s — snapshots, event log, video, reject/alarm outputs, window
            (opened, emitted to and closed in :func:`~.sink.emit_order`: a sink that adds a field of
            the frame's result before the sinks that read it, the given order otherwise).
        signal_on: 'edge' (alarms fire on the first NG frame of a part) or 'frame' (every NG frame).
        max_frames, duration: stop after this many frames / seconds (0: no limit).
        status_every: seconds between status lines (0: none).
        read_timeout: seconds the loop waits for a frame before checking stop flags again.
        model_id: recorded in every event.
        out_dir: where ``summary.json`` goes (None: not written).
        log_every_s: a failing sink is logged at most this often.
        max_detector_errors: a detector exception skips its frame (logged, counted); this many in a
            row end the run with the exception.
        safety: the run's reject ledger, alarm and ready state (:class:`~.safety.LineSafety`), handed
            to every sink with a ``safety`` attribute; None: a new one (policy alarm).
        run_id: the run's id in every event, tally line, snapshot name and the summary (None: a new one).
        """
        if signal_on not in ("edge", "frame"):
            raise ValueError(f"signal_on={signal_on!r}: expected 'edge' or 'frame'")
        self.detector, self.source, self.decider = detector, source, decider
        self.guards = [Guard(s, log_every_s) for s in emit_order(sinks)]  # adds before reads
        self.signal_on, self.max_frames, self.duration = signal_on, int(max_frames), float(duration)
        self.status_every, self.read_timeout = float(status_every), float(read_timeout)
        self.model_id, self.out_dir = model_id, Path(out_dir) if out_dir is not None else None
        self.stop_event = threading.Event()
        self.stop_reason = ""
        self.safety = safety if safety is not None else LineSafety()
        self.run_id = run_id or new_run_id()
        for guard in self.guards:
            self._bind(guard.sink)
        self.parts_ng = self.uninspected = self._alarms_sent = 0
        self._last_part_id: Any = None
        self._halt_logged = False
        self.frames = self.ok = self.ng = self.triggers = self.detector_errors = self._errors_in_row = 0
        self.max_detector_errors, self._error_logged_at = int(max_detector_errors), -float("inf")
        self.latency, self.age = LatencyStats(), LatencyStats()
        self.stages = {name: LatencyStats(window=1) for name in STAGES}  # per-stage ms, whole run
        self._t0 = self._t_last = time.monotonic()
        self._status_at, self._status_frames = self._t0, 0

    def _bind(self, sink: Any) -> None:
        if hasattr(sink, "safety"):
            sink.safety = self.safety

    def request_stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to end after the current frame (thread- and signal-safe)."""
        if not self.stop_event.is_set():
            self.stop_reason = reason
            self.stop_event.set()

    # -- the loop -----------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run to a limit, the end of the source, or a stop; returns the summary (also in summary.json)."""
        self._t0 = self._status_at = time.monotonic()
        try:
            for guard in self.guards:
                guard.open()
            self.source.start()
            self._inspect()
        finally:
            self._end_stages()
            self.safety.end()  # not ready any more: the outputs' last writes say so
            self.source.close(timeout=0.5)
            for guard in self.guards:
                guard.close()
            self.raise_alarms()  # rejects an output missed while closing: recorded and told
            summary = self.summary()
            self._write_summary(summary)
        LOG.info("%s", self.status_line(final=True))
        return summary

    def _inspect(self) -> None:
        """Read, inspect and deliver frames until a limit, the end of the source or a stop."""
        while not self.stop_event.is_set():
            if self._limit_reached():
                break
            frame = self.source.read(self.read_timeout)
            if frame is None:
                self._source_idle()
                self._maybe_status()
                continue
            self.process(frame)
            self._maybe_status()

    def _source_idle(self) -> None:
        """No frame within the read timeout: stop once the source is done."""
        if self.source.done:
            self.request_stop(
                "source gave up"
                if self.source.error
                else "source ended early"
                if self.source.ended_early
                else "end of source"
            )

    def _end_stages(self) -> None:
        """Stop whatever runs beside the calling thread (nothing here; the pipeline's stage threads)."""

    def _limit_reached(self) -> bool:
        if self.max_frames and self.frames >= self.max_frames:
            self.request_stop("max_frames")
        elif self.duration and time.monotonic() - self._t0 >= self.duration:
            self.request_stop("duration")
        return self.stop_event.is_set()

    def _detect(self, frame: Frame) -> Any:
        """The detector on one frame; an exception is logged and counted (None returned) unless
        ``max_detector_errors`` frames in a row failed, which ends the run."""
        try:
            dets = self.detector(frame.image)
        except Exception as e:
            return self.detector_failed(frame, e)
        timings = getattr(self.detector, "timings", None)  # a Detector's own pre/infer/post split
        for name in ("pre", "infer", "post") if timings is not None else ():
            self.stages[name].add(getattr(timings, name))
        return dets

    def detector_failed(self, frame: Frame, e: Exception) -> None:
        """Count (and now and then log) a frame the detector failed on; re-raise once
        ``max_detector_errors`` frames in a row failed. Frames must come in order."""
        self.detector_errors += 1
        self._errors_in_row += 1
        if self._errors_in_row >= self.max_detector_errors:
            raise e
        now = time.monotonic()
        if now - self._error_logged_at >= 30.0:
            self._error_logged_at = now
            LOG.error(
                "frame %d: detector failed (%s: %s); frame skipped (%d so far)",
                frame.index,
                e.__class__.__name__,
                e,
                self.detector_errors,
            )
        return None

    def process(self, frame: Frame) -> Optional[FrameResult]:
        """Infer, decide and emit one frame (None: the detector failed on it, or inspection is halted)."""
        if self._halted():
            return None
        t0 = time.perf_counter()
        dets = self._detect(frame)
        if dets is None:
            return None
        result = self.decide(frame, dets, t0)
        self.deliver(result)
        return result

    def decide(self, frame: Frame, dets: Any, t0: float) -> FrameResult:
        """The decision on a frame's detections (in frame order: debounce); ``t0``: when inspection began."""
        self._errors_in_row = 0
        t = time.perf_counter()
        decision = self.decider(dets, frame.image.shape)
        t1 = time.perf_counter()
        self.stages["decide"].add((t1 - t) * 1e3)
        trigger = decision.ng and (decision.rising or self.signal_on == "frame")
        roi = self.decider.roi_pixels(frame.image.shape) if self.decider.roi is not None else None
        self.parts_ng += trigger
        return FrameResult(
            frame,
            dets,
            decision,
            (t1 - t0) * 1e3,
            self.source.spec.uri,
            self.model_id,
            trigger,
            roi,
            run_id=self.run_id,
            part=self.parts_ng if decision.ng else 0,
            new_part=self._new_part(frame),
        )

    def _new_part(self, frame: Frame) -> Optional[bool]:
        """Whether ``frame`` shows a new part: with ``signals.trigger: frame`` every frame is one part (a
        triggered camera); else only a source that numbers its parts (``info['part']``) can tell."""
        if self.signal_on == "frame":
            return True
        part = frame.info.get("part") if isinstance(frame.info, dict) else None
        if part is None:
            return None
        new, self._last_part_id = part != self._last_part_id, part
        return new

    def _halted(self) -> bool:
        """Inspection halted by ``plc.on_failure: stop`` (logged once): frames are no longer inspected."""
        if not self.safety.halted:
            return False
        self.uninspected += 1
        if not self._halt_logged:
            self._halt_logged = True
            LOG.error(
                "inspection stopped: %s; ready dropped, frames are no longer inspected. Check the line, then "
                "restart defectdet inspect",
                self.safety.halt_reason,
            )
        return True

    def raise_alarms(self) -> None:
        """Hand each new missed-reject record to every sink that takes them (event log, tally, alarm
        messages)."""
        records = self.safety.records_since(self._alarms_sent)
        self._alarms_sent += len(records)
        for record in records:
            for guard in self.guards:
                guard.notify(record)

    def deliver(self, result: FrameResult) -> None:
        """Hand one decided frame to every sink and count it (nothing, once inspection is halted)."""
        if self.pipelined and self._halted():
            return
        t = time.perf_counter()
        for guard in self.guards:
            guard.emit(result)
        self.stages["sinks"].add((time.perf_counter() - t) * 1e3)
        decision, frame = result.decision, result.frame
        self.frames += 1
        self.ng += decision.ng
        self.ok += not decision.ng
        self.triggers += result.trigger
        self.latency.add(result.latency_ms)
        self.age.add((t - frame.t_mono) * 1e3)
        self._t_last = time.monotonic()
        self.safety.frame_inspected()

    # -- reporting ----------------------------------------------------------------------------
    def _maybe_status(self) -> None:
        if len(self.safety.records) > self._alarms_sent:
            self.raise_alarms()
        now = time.monotonic()
        if self.status_every > 0 and now - self._status_at >= self.status_every:
            LOG.info("%s", self.status_line(now=now))
            self._status_at, self._status_frames = now, self.frames

    def status_line(self, now: Optional[float] = None, final: bool = False) -> str:
        """The status line, e.g.
        ``12.3 fps | latency p50 15.2 ms p99 30.1 ms | frames 1234 ok 1200 ng 34 | dropped 3 | reconnects 0``.
        """
        now = time.monotonic() if now is None else now
        if final:
            fps, p50, p99 = self._fps(), self.latency.percentile(50), self.latency.percentile(99)
        else:
            fps = (self.frames - self._status_frames) / max(now - self._status_at, 1e-9)
            p50, p99 = self.latency.recent_percentile(50), self.latency.recent_percentile(99)
        lat = f"latency p50 {p50:.1f} ms p99 {p99:.1f} ms" if p50 is not None else "latency -"
        errors = sum(g.errors for g in self.guards)
        return (
            f"{'done: ' if final else ''}{fps:.1f} fps | {lat} | frames {self.frames} ok {self.ok} ng "
            f"{self.ng} | dropped {self.source.dropped} | reconnects {self.source.reconnects}"
            + (f" | sink errors {errors}" if errors else "")
            + (f" | MISSED REJECTS {self.safety.missed_total}" if self.safety.missed_total else "")
        )

    def _fps(self) -> float:
        return self.frames / max(self._t_last - self._t0, 1e-9) if self.frames else 0.0

    def summary(self) -> dict[str, Any]:
        """Counts, rates and per-sink results of the run so far."""
        stats = [(g, g.stats()) for g in self.guards]
        sinks = {g.name: st for g, st in stats}
        headline = _headline((g.summary_keys, st) for g, st in stats)
        safety = self.safety.state()
        summary = {
            "run_id": self.run_id,
            "frames": self.frames,
            "ok": self.ok,
            "ng": self.ng,
            "triggers": self.triggers,
            "rejected_parts": self.triggers,  # NG parts: each reject trigger is one part
            "missed_rejects": safety["missed_rejects"],
            "missed_rejects_by_reason": safety["missed_by_reason"],
            "alarm": safety["alarm"],
            "inspection_halted": safety["halt_reason"] or False,
            "uninspected_frames": self.uninspected,
            "plc_links": safety["plc_links"],
            "detector_errors": self.detector_errors,
            "events_written": headline.pop("events_written", None),
            "dropped_frames": self.source.dropped,
            "reconnects": self.source.reconnects,
            "fps": round(self._fps(), 2),
            "latency_ms": _percentiles(self.latency),
            "frame_age_ms": _percentiles(self.age),
            "pipeline": self.pipelined,
            "in_flight": self.in_flight,
            "stages_ms": {name: _percentiles(st) for name, st in self.stages.items() if st.n},
            "seconds": round(time.monotonic() - self._t0, 3),
            "stop_reason": self.stop_reason or "error",
            "source": self.source.spec.uri,
            "source_error": self.source.error,
            "source_ended_early": self.source.ended_early,
            "model": self.model_id,
        }
        summary.update(
            assess({**summary, "sinks": sinks})
        )  # degraded, degraded_reasons: what the run failed to record
        summary.update(
            (k, v) for k, v in headline.items() if k not in summary
        )  # never over the loop's own keys
        summary["sinks"] = sinks
        return summary

    def _write_summary(self, summary: dict[str, Any]) -> None:
        if self.out_dir is None:
            return
        try:
            atomic_write_text(
                self.out_dir / "summary.json", json.dumps(summary, indent=1, default=str) + "\n"
            )
        except OSError as e:
            LOG.error(
                "summary: cannot write %s (%s: %s); it is printed instead",
                self.out_dir / "summary.json",
                e.__class__.__name__,
                e,
            )
            summary["degraded"] = True
            summary["degraded_reasons"].append(f"summary.json not written: {e.__class__.__name__}: {e}")


def _headline(sinks: Iterable[tuple[Mapping[str, str], dict[str, Any]]]) -> dict[str, Any]:
    """Summary keys that sinks fill: ``(summary_keys, stats)`` pairs -> {key: value}, summed per key."""
    out: dict[str, Any] = {}
    for keys, stats in sinks:
        for key, stat in keys.items():
            value = stats.get(stat)
            out[key] = value if out.get(key) is None else out[key] + (value or 0)
    return out


def install_signal_handlers(loop: InspectionLoop) -> Callable[[], None]:
    """SIGINT/SIGTERM ask ``loop`` to stop (a second one acts as usual); returns a function restoring the old
    handlers.

    Only possible from the main thread; elsewhere nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, _frame):
        LOG.warning("%s: finishing the current frame, then stopping", signal.Signals(signum).name)
        loop.request_stop(signal.Signals(signum).name)
        signal.signal(signum, old[signum] if old[signum] is not None else signal.SIG_DFL)

    for s in old:
        signal.signal(s, handler)

    def restore() -> None:
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    return restore
