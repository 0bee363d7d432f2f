"""``PipelinedLoop``: the inspection loop with its stages on their own threads.

    capture (FrameSource's thread) -> pre -> infer -> post + decide -> sinks (the thread calling run())

Stages hand frames on through small bounded :class:`Channel` s. ONNX Runtime and TensorRT release
the GIL while the model runs, and OpenCV while it resizes, so the model computes frame n while the
CPU letterboxes frame n+1 and writes frame n-1's events. Each stage is one thread and every channel
is first in, first out, so frames, decisions (debounce) and events stay in frame order, and the
sinks run in the calling thread as in :class:`~.loop.InspectionLoop` (a window, a stop from ``q``).

* Files, folders and plain ``synthetic://`` inspect every frame: a full channel makes the stage
  before it wait.
* Live sources keep latest-frame semantics end to end: the pre stage takes a frame from the source
  only when the infer stage's channel has room, so frames arriving meanwhile are replaced in the
  capture thread and counted in ``dropped`` (as the sequential loop's are); a channel holds at most
  one frame, so the model gets a frame at most one inference after the pre stage took it.
* A detector failing on a frame (in pre, infer or post) skips and counts that frame exactly as the
  sequential loop does: the decide stage sees failures in frame order. Any other exception in a
  stage ends the run: one log line names the stage and frame, the other stages stop, every thread
  is joined, ``summary.json`` is written and :meth:`run` re-raises the exception.
* A stop (SIGTERM, ``q``, ``duration``, ``max_frames``, end of source): the pre stage takes no
  more frames, the few already inside are finished and delivered (never past ``max_frames``), the
  threads are joined.

A detector with :meth:`~defectdet.runtime.Detector.forward` and ``stageable`` true is split into
its three stages; any other callable (a tiled Detector, a test double) runs whole in the infer stage.
When its backend can hold two frames at once (``Detector.in_flight`` 2: a static TensorRT engine,
two slots), the infer stage submits frame n+1 before it collects frame n, so one frame's copies
and compute overlap the other's copy back and decoding; ``summary.json`` says ``in_flight``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

from .loop import InspectionLoop
from .sources import Frame

LOG = logging.getLogger("defectdet.inspect")

END, CLOSED = object(), object()  # end of the stream; channel closed (the run is aborting)


class Channel:
    """A bounded first-in-first-out hand-over between two threads; :meth:`close` wakes every waiter."""

    def __init__(self, capacity: int):
        self.capacity = max(1, int(capacity))
        self._items: collections.deque[Any] = collections.deque()
        self._cond = threading.Condition()
        self.closed = False
        self.finished = False  # no more puts; what is queued is still handed out, then END

    def put(self, item: Any) -> bool:
        """Append, waiting while full; False (nothing appended) once closed or finished."""
        with self._cond:
            self._cond.wait_for(lambda: len(self._items) < self.capacity or self.closed or self.finished)
            if self.closed or self.finished:
                return False
            self._items.append(item)
            self._cond.notify_all()
            return True

    def wait_room(self, timeout: float) -> bool:
        """True when a put would not wait (within ``timeout`` s); False on timeout or once closed."""
        with self._cond:
            return (
                self._cond.wait_for(lambda: len(self._items) < self.capacity or self.closed, timeout)
                and not self.closed
            )

    def get(self, timeout: Optional[float] = None) -> Any:
        """The oldest item; None after ``timeout`` s; :data:`CLOSED` once closed (what is left is dropped);
        :data:`END` once finished and empty."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self.closed or self.finished, timeout):
                return None
            if self.closed:
                return CLOSED
            if not self._items:
                return END
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def finish(self) -> None:
        """Take no more items, but hand out those queued (then :data:`END`): frames already decided."""
        with self._cond:
            self.finished = True
            self._cond.notify_all()


@dataclass
class _Job:
    """One frame on its way through the stages."""

    frame: Frame
    t0: float  # perf_counter() when the pre stage took it: the start of its latency
    pre: Any = None  # the Preprocessor whose buffer holds its input (back to the pool after infer)
    batch: Any = None  # (1, 3, H, W) model input, a view of pre's buffer
    params: Any = None  # its LetterboxParams
    out: Any = None  # staged: the (1, 4+nc, A) model output; whole: the Detections
    error: Optional[Exception] = None
    ticket: Optional[int] = None  # overlapped: the detector's submit() ticket until collected
    infer_ms: float = 0.0  # overlapped: time in submit() + collect()


class PipelinedLoop(InspectionLoop):
    """:class:`~.loop.InspectionLoop` with pre, infer and post + decide on their own threads (see the module
    docstring).

    Takes the same arguments, plus ``drain_s``: how long a stop may take to finish the frames inside
    before the stages are abandoned (logged; they are daemon threads).
    """

    pipelined = True

    def __init__(self, *args: Any, drain_s: float = 10.0, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.drain_s = float(drain_s)
        self.staged = bool(getattr(self.detector, "stageable", False)) and callable(
            getattr(self.detector, "forward", None)
        )
        self.in_flight = int(getattr(self.detector, "in_flight", 1)) if self.staged else 1
        self.overlapped = self.in_flight > 1
        depth = 1 if self.source.live else 2
        self._to_infer, self._to_post, self._to_sinks = Channel(depth), Channel(depth), Channel(depth)
        pool = [self.detector.new_preprocessor() for _ in range(depth + 2)] if self.staged else []
        self._buffers = Channel(
            len(pool) or 1
        )  # free input buffers: one per frame between pre and the end of infer
        for pre in pool:
            self._buffers.put(pre)
        self._threads: list[threading.Thread] = []
        self.failure: Optional[tuple[str, BaseException]] = None

    # -- the calling thread: sinks ------------------------------------------------------------
    def _inspect(self) -> None:
        """Start the stage threads, deliver in this one; a stage's failure is re-raised here."""
        for name, body in (
            ("pre", self._pre_stage),
            ("infer", self._infer_stage),
            ("post", self._post_stage),
        ):
            self._threads.append(
                threading.Thread(target=self._stage, args=(name, body), name=f"inspect-{name}", daemon=True)
            )
            self._threads[-1].start()
        self._sink_stage()
        if self.failure is not None:
            raise self.failure[1]

    def _sink_stage(self) -> None:
        """Deliver decided frames to the sinks until the stream ends, the run aborts or a stop can't drain."""
        stopped_at: Optional[float] = None
        while True:
            item = self._to_sinks.get(self.read_timeout)
            if item is END or item is CLOSED:
                return
            if item is not None and not (self.max_frames and self.frames >= self.max_frames):
                self.deliver(item)
            self._limit_reached()
            self._maybe_status()
            if self.stop_event.is_set():
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > self.drain_s:
                    LOG.error(
                        "pipeline: the frames inside did not finish within %.1f s of the stop; abandoning "
                        "them",
                        self.drain_s,
                    )
                    return

    def _end_stages(self, join_s: float = 2.0) -> None:
        """Close every channel (waking the stages) and join the stage threads."""
        for ch in (self._to_infer, self._to_post, self._to_sinks, self._buffers):
            ch.close()
        deadline = time.monotonic() + join_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        stuck = [t.name for t in self._threads if t.is_alive()]
        if stuck:
            LOG.error(
                "pipeline: %s still running %.1f s after the stop (left behind as daemon threads)",
                ", ".join(stuck),
                join_s,
            )

    # -- the stage threads --------------------------------------------------------------------
    def _stage(self, name: str, body: Callable[[], None]) -> None:
        """Run one stage's body; an exception aborts the run (the first one is re-raised by run()). The
        frames already decided still reach the sinks (their rejects, events and counts), then the run ends."""
        try:
            body()
        except BaseException as e:
            if self.failure is None:
                self.failure = (name, e)
                LOG.error(
                    "pipeline: stage %r failed (%s: %s); stopping the run", name, e.__class__.__name__, e
                )
            self.stop_event.set()
            for ch in (self._to_infer, self._to_post, self._buffers):
                ch.close()
            self._to_sinks.finish()

    def _timed(self, name: str, job: _Job, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` timed into the stage's statistics; a detector exception is kept on the job (None)."""
        t = time.perf_counter()
        try:
            return fn(*args)
        except Exception as e:
            job.error = e
            return None
        finally:
            self.stages[name].add((time.perf_counter() - t) * 1e3)

    def _pre_stage(self) -> None:
        """Take frames from the source (live: only when the infer stage has room) and letterbox them."""
        while not self.stop_event.is_set():
            if not self._to_infer.wait_room(self.read_timeout):
                continue
            pre = self._buffers.get(self.read_timeout) if self.staged else None
            if pre is CLOSED or (self.staged and pre is None):
                continue
            frame = self.source.read(self.read_timeout)
            if frame is None:
                if pre is not None:
                    self._buffers.put(pre)
                self._source_idle()
                continue
            job = _Job(frame, time.perf_counter(), pre)
            if pre is not None:
                job.batch, job.params = self._timed("pre", job, pre, [frame.image]) or (None, None)
            if not self._to_infer.put(job):
                return
        self._to_infer.put(END)

    def _infer_stage(self) -> None:
        """Run the model (staged) or the whole detector on each frame."""
        if self.overlapped:
            return self._infer_overlapped()
        while (job := self._to_infer.get()) is not END and job is not CLOSED:
            if job.error is None and self.staged:
                job.out = self._timed("infer", job, self.detector.forward, job.batch)
            elif job.error is None:
                job.out = self._timed("infer", job, self.detector, job.frame.image)
            if job.pre is not None:
                self._buffers.put(job.pre)
                job.pre = job.batch = None
            if not self._to_post.put(job):
                return
        self._to_post.put(END)

    def _infer_overlapped(self) -> None:
        """Keep up to ``detector.in_flight`` frames on the device: frame n+1 is submitted before frame n
        is collected, so its copy and compute overlap frame n's copy back and decoding. A frame is
        collected as soon as no next frame is waiting, so a live line never waits for the next part
        to get this one's verdict; frames leave in the order they came (collect() is first in, first
        out, and so is ``inflight``)."""
        det, limit = self.detector, self.detector.in_flight
        inflight: collections.deque[_Job] = collections.deque()
        while True:
            job = self._to_infer.get(0 if inflight else None)
            if job is None:  # nothing waiting: finish the oldest now
                if not self._pass_oldest(inflight):
                    return
                continue
            if job is END or job is CLOSED:
                break
            if job.error is None:
                while sum(j.ticket is not None for j in inflight) >= limit:
                    if not self._pass_oldest(inflight):
                        return
                t = time.perf_counter()
                try:
                    job.ticket = det.submit(job.batch)  # copies the input: its buffer is free again below
                except Exception as e:
                    job.error = e
                job.infer_ms = (time.perf_counter() - t) * 1e3
            if job.pre is not None:
                self._buffers.put(job.pre)
                job.pre = job.batch = None
            inflight.append(job)
        if job is CLOSED:
            return
        while inflight:
            if not self._pass_oldest(inflight):
                return
        self._to_post.put(END)

    def _pass_oldest(self, inflight: collections.deque) -> bool:
        """Collect the oldest frame in flight and hand it to the post stage; False once the run aborts."""
        return self._to_post.put(self._collected(inflight.popleft()))

    def _collected(self, job: _Job) -> _Job:
        """``job`` with its output collected (a frame that failed before submit passes through as it is)."""
        if job.ticket is None:
            return job
        t = time.perf_counter()
        try:
            ticket, job.out = self.detector.collect()
        except Exception as e:
            job.error = e
        else:
            if ticket != job.ticket:  # a bug, not a detector fault: end the run
                raise RuntimeError(
                    f"pipeline: collected ticket {ticket} for frame {job.frame.index} (submitted as "
                    f"{job.ticket})"
                )
        job.ticket = None
        self.stages["infer"].add(job.infer_ms + (time.perf_counter() - t) * 1e3)
        return job

    def _post_stage(self) -> None:
        """Decode (staged), then decide in frame order; detector failures counted as in InspectionLoop."""
        while (job := self._to_post.get()) is not END and job is not CLOSED:
            dets = job.out
            if job.error is None and self.staged:
                dets = self._timed("post", job, self.detector.decode, job.out[0], job.params[0])
            if job.error is not None:
                self.detector_failed(job.frame, job.error)  # raises after max_detector_errors in a row
                continue
            if not self._to_sinks.put(self.decide(job.frame, dets, job.t0)):
                return
        self._to_sinks.put(END)
