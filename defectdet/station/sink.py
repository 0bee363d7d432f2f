"""The output contract of the inspection station: the :class:`Sink` protocol and the :class:`Guard` that runs
one.

A sink is anything the loop hands each inspected frame to: the event log, snapshots, a video, a
window, a reject/alarm output (GPIO, MQTT, webhook, stdout), and later a PLC, a web page or a
metrics endpoint. The loop calls, in this order and from one thread:

* ``open()`` once, when the run starts (connect, start a worker; lazy sinks do nothing here);
* ``emit(result)`` for every inspected frame (a :class:`~defectdet.station.result.FrameResult`;
  ``result.decision.ng`` and ``result.trigger`` say whether to act);
* ``close()`` once, when the run ends (flush, disconnect, release);

and, for a sink with a ``missed_reject(record)`` method, hands it every reject an output could not
deliver (:mod:`.safety`: the event log records it, MQTT/webhook/stdout send an alarm);
it reads ``stats()`` whenever it reports (``summary.json``, status): a fresh ``dict`` of the
sink's own counters as plain JSON values. ``stats()`` may be called from another thread while
``emit`` runs, so it only reads counters and never blocks. ``name`` keys the sink in the summary's
``sinks`` block; ``summary_keys`` maps top-level ``summary.json`` keys the sink fills to its stats
keys (the event log: ``{"events_written": "written"}``).

A sink that fills a field of the frame's result for others declares it in ``adds`` (the snapshot
writer: ``snapshot_job``, ``snapshots``); a sink that reads such a field declares it in ``reads``
(the event log). The loop emits in :func:`emit_order`: every sink that adds a field before every
sink that reads it, the order given otherwise; the order of a list of sinks is never load-bearing.

Every call goes through a :class:`Guard`: an exception is logged (one clear line naming the sink,
then a reminder every ``log_every_s``), counted in the sink's ``errors``, and survived — a failing
disk or an unreachable PLC never blocks a decision. New outputs subclass :class:`BaseSink` and are
registered in :mod:`defectdet.station.registry`.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar, FrozenSet, Iterable, Mapping, Protocol

if TYPE_CHECKING:
    from .result import FrameResult

LOG = logging.getLogger("defectdet.inspect")
METHODS = ("open", "emit", "close", "stats")


class Sink(Protocol):
    """What the loop needs of an output (see the module docstring)."""

    name: str
    summary_keys: ClassVar[Mapping[str, str]]
    adds: ClassVar[FrozenSet[str]]  # FrameResult fields emit() fills in for the sinks after it
    reads: ClassVar[FrozenSet[str]]  # FrameResult fields emit() reads that another sink fills in

    def open(self) -> None: ...

    def emit(self, result: FrameResult) -> None: ...

    def close(self) -> None: ...

    def stats(self) -> dict[str, Any]: ...


class BaseSink:
    """Defaults for a :class:`Sink`: nothing to open or close, no counters, no top-level summary keys,
    nothing added to or read from the frame's result for other sinks."""

    name: str = "sink"
    summary_keys: ClassVar[Mapping[str, str]] = {}
    adds: ClassVar[FrozenSet[str]] = frozenset()
    reads: ClassVar[FrozenSet[str]] = frozenset()

    def open(self) -> None:
        pass

    def emit(self, result: FrameResult) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def stats(self) -> dict[str, Any]:
        return {}


def emit_order(sinks: Iterable[Sink]) -> list[Sink]:
    """``sinks`` in the order the loop emits to them: each after every other sink that ``adds`` a
    field of the frame's result it ``reads``, in the given order otherwise (a stable topological
    order). A field that is no :class:`~defectdet.station.result.FrameResult` field, or sinks that
    wait on each other, are a TypeError naming them."""
    from dataclasses import fields

    from .result import FrameResult

    known = {f.name for f in fields(FrameResult)}
    todo = list(sinks)
    for sink in todo:
        for kind in ("adds", "reads"):
            unknown = sorted(set(getattr(sink, kind, ())) - known)
            if unknown:
                raise TypeError(
                    f"{type(sink).__name__}.{kind}: {', '.join(unknown)} is not a FrameResult field"
                )
    order: list[Sink] = []
    while todo:
        ready = next((s for s in todo if not _waits_on(s, todo)), None)
        if ready is None:
            names = ", ".join(type(s).__name__ for s in todo)
            raise TypeError(f"sinks {names} read what each other adds to the frame's result: no order")
        order.append(ready)
        todo.remove(ready)
    return order


def _waits_on(sink: Sink, others: list[Sink]) -> bool:
    """Whether another sink in ``others`` adds a field that ``sink`` reads."""
    reads = set(getattr(sink, "reads", ()))
    return any(o is not sink and reads & set(getattr(o, "adds", ())) for o in others)


class Guard:
    """Runs a sink; an exception is logged (naming the sink, then each ``log_every_s``), counted, survived."""

    def __init__(self, sink: Sink, log_every_s: float = 30.0):
        missing = [m for m in METHODS if not callable(getattr(sink, m, None))]
        if missing:
            raise TypeError(
                f"{type(sink).__name__} is not a Sink: no {', '.join(missing)}() (subclass BaseSink)"
            )
        self.sink, self.name = sink, getattr(sink, "name", type(sink).__name__)
        self.summary_keys: Mapping[str, str] = getattr(sink, "summary_keys", {})
        self.log_every_s = float(log_every_s)
        self.errors, self.last_error = 0, ""
        self._logged_at = -float("inf")

    def _failed(self, action: str, e: BaseException) -> None:
        self.errors += int(getattr(e, "failures", 1))  # an exception may stand for several failed writes
        self.last_error = f"{self.name}: {action} failed: {e.__class__.__name__}: {e}"
        now = time.monotonic()
        if now - self._logged_at >= self.log_every_s:
            self._logged_at = now
            LOG.error(
                "%s (%d so far); the loop goes on deciding and signalling", self.last_error, self.errors
            )

    def open(self) -> None:
        try:
            self.sink.open()
        except Exception as e:
            self._failed("open", e)

    def emit(self, result: FrameResult) -> None:
        try:
            self.sink.emit(result)
        except Exception as e:
            self._failed("emit", e)

    def close(self) -> None:
        try:
            self.sink.close()
        except Exception as e:
            self._failed("close", e)

    def notify(self, record: Mapping[str, Any]) -> None:
        """Hand a missed-reject record to the sink's ``missed_reject(record)``, when it has one (the
        event log writes it, alarm outputs send it)."""
        handler = getattr(self.sink, "missed_reject", None)
        if handler is None:
            return
        try:
            handler(dict(record))
        except Exception as e:
            self._failed("alarm", e)

    def stats(self) -> dict[str, Any]:
        """The sink's own counters, then ``errors`` and ``last_error`` (None when it never failed)."""
        try:
            own = dict(self.sink.stats())
        except Exception as e:
            self._failed("stats", e)
            own = {}
        return {**own, "errors": self.errors, "last_error": self.last_error or None}
