"""``FrameSource``: capture in its own thread, latest-frame for live sources, reconnect with backoff.

cv2.VideoCapture buffers frames; a loop slower than the camera then inspects frames that are
seconds old. Here a thread reads continuously: for a live source it keeps only the newest frame
and counts the ones the loop never saw (``dropped``); files, folders and plain ``synthetic://``
go through a small prefetch queue instead, so every frame is inspected.

A live source whose read fails, or that delivers nothing for ``stall_s``, is reopened with
exponential backoff (``backoff_s`` doubling up to ``backoff_max_s``); each successful reopening
counts one ``reconnect``. A live source that cannot be opened at start-up is retried the same way
(a file or folder fails at once, and so does a source this machine cannot open at all, e.g. a
missing GStreamer element: :class:`~.sources.SourceUnsupported`). After ``give_up_s`` without a frame the
source ends with ``error`` set (``give_up_s=0``: never). A read that hangs inside the driver is abandoned (its
daemon thread releases the capture whenever the read returns) and a fresh connection takes over; for a sensor
only one session may hold (a CSI camera: Argus), the fresh connection first waits up to
``release_wait_s`` for the hung read to return and release it, and otherwise ends the source with
``error`` set (the run exits non-zero and systemd's ``Restart=`` starts a clean process) instead of
opening a second Argus session on a held sensor.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Callable, Optional, Union

from .sources import Frame, Reader, SourceError, SourceSpec, SourceUnsupported, open_reader, parse_source

LOG = logging.getLogger("defectdet.inspect")


class FrameSource:
    """A started source hands out :class:`Frame` objects through :meth:`read`; see the module docstring.

    >>> with FrameSource("synthetic://?frames=100") as src:
    ...     while not src.done:
    ...         frame = src.read(timeout=0.5)   # None on timeout
    """

    def __init__(
        self,
        source: Union[str, SourceSpec],
        *,
        opener: Callable[[SourceSpec], Reader] = open_reader,
        queue_size: int = 4,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        give_up_s: float = 60.0,
        stall_s: float = 5.0,
        release_wait_s: float = 10.0,
    ):
        self.spec = source if isinstance(source, SourceSpec) else parse_source(source)
        self.live = self.spec.live
        self._opener = opener
        self.queue_size = 1 if self.live else max(1, int(queue_size))
        self.backoff_s, self.backoff_max_s = float(backoff_s), float(backoff_max_s)
        self.give_up_s, self.stall_s = float(give_up_s), float(stall_s)
        self.release_wait_s = float(
            release_wait_s
        )  # an exclusive sensor: how long a hung session may hold it
        self.captured = self.dropped = self.reconnects = self.reconnect_attempts = 0
        self.error: Optional[str] = None
        self.ended_early: Optional[str] = (
            None  # a file that ended before its reported length (the reader says why)
        )
        self._opened = False  # a connection was made once: later openings count as reconnects
        self.fps: Optional[float] = None
        self._buf: collections.deque[Frame] = collections.deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._finished = False
        self._gen = 0  # connection generation: a stalled reader's thread sees a newer one and quits
        self._last_frame = time.monotonic()
        self._reading_since: Optional[float] = None  # set while the current connection is inside read()
        self._threads: list[threading.Thread] = []

    # -- lifetime -----------------------------------------------------------------------------
    def start(self) -> FrameSource:
        """Open the source and start the capture thread. A file or folder that cannot be opened raises
        :class:`SourceError` at once; a live source that cannot is retried in the thread with the
        backoff of a dropped one (and ends the run after ``give_up_s`` without a frame)."""
        self._last_frame = time.monotonic()
        try:
            reader: Optional[Reader] = self._opener(self.spec)
        except (SourceError, OSError) as e:
            if not self.live or isinstance(
                e, SourceUnsupported
            ):  # a file, or nothing here can open it: at once
                raise
            LOG.warning("%s; retrying in the background (capture.backoff_s, give_up_s=%g)", e, self.give_up_s)
            reader = None
        self._opened = reader is not None
        self.fps = getattr(reader, "fps", None)
        self._spawn(reader)
        return self

    def _spawn(self, reader: Optional[Reader], held: Optional[threading.Thread] = None) -> None:
        t = threading.Thread(
            target=self._run, args=(self._gen, reader, held), name=f"capture-{self._gen}", daemon=True
        )
        self._threads = [x for x in self._threads if x.is_alive()] + [t]
        t.start()

    def close(self, timeout: float = 1.0) -> None:
        """Stop capturing and release the source (waits at most ``timeout`` for the thread)."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> FrameSource:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- consumer side ------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """True once the source ended (end of file, give-up, close) and every frame was handed out."""
        with self._cond:
            return self._finished and not self._buf

    def read(self, timeout: float = 0.5) -> Optional[Frame]:
        """The next frame (live: the newest one), or None after ``timeout`` s or when the source is done."""
        self._check_stall()
        with self._cond:
            if not self._cond.wait_for(lambda: self._buf or self._finished, timeout):
                return None
            if not self._buf:
                return None
            frame = self._buf.popleft()
            self._cond.notify_all()
            return frame

    def _check_stall(self) -> None:
        """A live read hanging in the driver for ``stall_s``: abandon it and start a new connection."""
        since = self._reading_since
        if not self.live or since is None or self.stall_s <= 0 or self._stop.is_set():
            return
        if time.monotonic() - since < self.stall_s:
            return
        LOG.warning(
            "%s: no frame for %.1f s (read hangs); reopening the source",
            self.spec.uri,
            time.monotonic() - since,
        )
        held = self._threads[-1] if self.spec.exclusive and self._threads else None  # still inside read()
        with self._cond:
            self._gen += 1
            self._reading_since = None
        self._spawn(None, held)

    # -- capture thread -----------------------------------------------------------------------
    def _publish(self, gen: int, img, info: dict) -> None:
        with self._cond:
            if not self.live:
                self._cond.wait_for(
                    lambda: len(self._buf) < self.queue_size or self._stop.is_set() or gen != self._gen
                )
            if gen != self._gen or self._stop.is_set():
                return
            if self.live:
                self.dropped += len(self._buf)  # never handed out: the loop was busy
                self._buf.clear()
            self._buf.append(Frame(img, self.captured, time.time(), time.perf_counter(), info))
            self.captured += 1
            self._last_frame = time.monotonic()
            self._cond.notify_all()

    def _read(self, gen: int, reader: Reader):
        """One read, timed for the stall watchdog."""
        self._reading_since = time.monotonic()
        try:
            return reader.read()
        finally:
            if gen == self._gen:
                self._reading_since = None

    def _run(self, gen: int, reader: Optional[Reader], held: Optional[threading.Thread] = None) -> None:
        """Read until the end, a stop, a give-up or a newer generation takes over; ``held``: the
        abandoned connection's thread, whose session must release an exclusive sensor first."""
        try:
            if held is not None and not self._await_release(held):
                return
            while not self._stop.is_set() and gen == self._gen:
                if reader is None:
                    reader = self._reconnect(gen)
                    if reader is None:
                        break
                img, info = self._read(gen, reader)
                if gen != self._gen:
                    break  # abandoned while reading (stall): the new connection owns the source
                if img is None:
                    if not self.live:  # end of file / folder / synthetic run: complete, or cut short?
                        self.ended_early = getattr(reader, "ended_early", lambda: None)()
                        if self.ended_early:
                            LOG.error("%s", self.ended_early)
                        break
                    LOG.warning("%s: read failed; reconnecting", self.spec.uri)
                    _release(reader)
                    reader = None
                    continue
                self._publish(gen, img, info)
        except Exception as e:  # a reader bug must end the source visibly, not kill the thread silently
            self.error = f"{self.spec.uri}: capture failed ({e.__class__.__name__}: {e})"
            LOG.error(self.error)
        finally:
            _release(reader)
            with self._cond:
                if gen == self._gen:
                    self._finished = True
                self._cond.notify_all()

    def _await_release(self, held: threading.Thread) -> bool:
        """Wait (bounded by ``release_wait_s``) for a hung read on an exclusive sensor to return and
        release it; False (``error`` set: the run ends, the service restarts) when it does not."""
        start = time.monotonic()
        while held.is_alive() and not self._stop.is_set() and time.monotonic() - start < self.release_wait_s:
            held.join(0.1)
        if not held.is_alive() or self._stop.is_set():
            LOG.warning(
                "%s: the stalled session released the sensor after %.1f s; reopening",
                self.spec.uri,
                time.monotonic() - start,
            )
            return True
        self.error = (
            f"{self.spec.uri}: the stalled capture session still holds the sensor {self.release_wait_s:g} s "
            "later; not opening a second Argus session on it: ending the run (systemd Restart= starts a "
            "clean process; if it recurs: sudo systemctl restart nvargus-daemon)"
        )
        LOG.error(self.error)
        return False

    def _reconnect(self, gen: int) -> Optional[Reader]:
        """Reopen with exponential backoff; None on stop, abandonment or give-up (``error`` set)."""
        delay = self.backoff_s
        while not self._stop.is_set() and gen == self._gen:
            silent = time.monotonic() - self._last_frame
            if self.give_up_s > 0 and silent > self.give_up_s:
                self.error = (
                    f"{self.spec.uri}: no frame for {silent:.0f} s (give_up_s={self.give_up_s:g}); giving up"
                )
                LOG.error(self.error)
                return None
            self.reconnect_attempts += 1
            try:
                reader = self._opener(self.spec)
            except (SourceError, OSError) as e:
                LOG.warning("%s; retrying in %.1f s", e, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, self.backoff_max_s)
                continue
            if not self._opened:  # the start-up open failed: this is the first connection, not a reconnect
                self._opened, self.fps = True, getattr(reader, "fps", None)
                LOG.warning("%s: opened after %d attempt(s)", self.spec.uri, self.reconnect_attempts + 1)
                return reader
            with self._cond:
                self.reconnects += 1
            LOG.warning("%s: reconnected (%d so far)", self.spec.uri, self.reconnects)
            return reader
        return None


def _release(reader: Optional[Reader]) -> None:
    if reader is not None:
        try:
            reader.release()
        except Exception as e:  # releasing a broken capture must not mask the real problem
            LOG.debug("release failed: %s", e)
