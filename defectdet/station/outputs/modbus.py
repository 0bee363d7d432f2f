"""Modbus TCP to the PLC (pymodbus client): reject/alarm coil pulses, counters, a ready bit, heartbeat.

Per trigger (the first NG frame of a part, or every NG frame with ``signals.trigger: frame``) the
reject coil is pulsed for ``pulse_ms`` and the alarm coil, if set, for ``alarm_ms``. A trigger
during a pulse restarts it (the coil goes off, then on again), so the PLC sees one rising edge per
part. Every ``update_s`` one write of holding registers from ``registers`` on (32-bit values are
two registers, high word first):

======  =================================================================
offset  value
======  =================================================================
0, 1    total frames inspected (u32): advances per inspected frame
2, 3    OK frames (u32)
4, 5    NG frames (u32)
6       heartbeat (u16, wraps): +1 at a register write when frames were inspected since the last
        one; it stops when inspection stops (a hung camera, a halted station)
7       last result: 0 none yet, 1 OK, 2 NG
8       last NG class: class id + 1 of its most confident defect (0: none)
9       status bits: bit 0 ready (frames inspected within ``capture.stall_s``, inspection not
        halted), bit 1 alarm (a reject was missed; latched for the run), bit 2 inspection halted
10, 11  missed rejects (u32)
======  =================================================================

The loop never waits for the PLC: ``emit`` counts and queues a pulse (bounded queue); a worker
thread owns the connection and reconnects with exponential backoff — short (``backoff_s``) while
reject pulses wait. A pulse that cannot be sent within ``max_delay_ms`` is dropped (a late reject
hits the wrong part), as is one that finds the queue full: each is a *missed reject*, reported to
the run's :class:`~defectdet.station.safety.LineSafety` (late, queue_full or unreachable), which
raises the alarm everywhere and degrades the run. Once connected with the alarm raised, the alarm
coil is held on (latched: it stays on when the run ends, for the line to check the OK bin). A PLC
that is down is one log line when it goes away and one when it is back. pymodbus is imported when
the output is built.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from typing import Any, Optional

import numpy as np

from ..safety import LineSafety
from ..sink import BaseSink
from .live import LineCounters
from .signals import SignalError

LOG = logging.getLogger("defectdet.inspect")
REGISTER_COUNT = 12
READY, ALARM, HALTED = 1, 2, 4  # bits of the status register (offset 9)


def _u32(v: int) -> list[int]:
    v = int(v) & 0xFFFFFFFF
    return [v >> 16, v & 0xFFFF]


def register_block(
    counts: dict[str, Any], heartbeat: int, last_class_id: int, safety: Optional[dict[str, Any]] = None
) -> list[int]:
    """The holding registers' values (see the module docstring); ``safety``: a LineSafety.state()."""
    last = {"OK": 1, "NG": 2}.get(counts["last"].get("result", ""), 0)
    s = safety or {}
    status = READY * bool(s.get("ready")) | ALARM * bool(s.get("alarm")) | HALTED * bool(s.get("halted"))
    return [
        *_u32(counts["frames"]),
        *_u32(counts["ok"]),
        *_u32(counts["ng"]),
        heartbeat & 0xFFFF,
        last,
        last_class_id,
        status,
        *_u32(s.get("missed_rejects", 0)),
    ]


class ModbusOutput(BaseSink):
    """A Modbus TCP client writing to the PLC at ``host:port`` (see the module docstring)."""

    name = "modbus"

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 502,
        unit: int = 1,
        reject_coil: int = 0,
        alarm_coil: Optional[int] = 1,
        pulse_ms: float = 200.0,
        alarm_ms: float = 1000.0,
        registers: int = 0,
        update_s: float = 0.5,
        timeout_s: float = 1.0,
        backoff_s: float = 0.5,
        backoff_max_s: float = 10.0,
        max_delay_ms: float = 500.0,
        queue_size: int = 64,
        safety: Optional[LineSafety] = None,
    ):
        try:
            from pymodbus.client import ModbusTcpClient
        except ImportError:
            raise SignalError("modbus output needs pymodbus: pip install 'defectdet[station]'") from None
        if logging.getLogger("pymodbus").level == logging.NOTSET:
            logging.getLogger("pymodbus").setLevel(
                logging.CRITICAL
            )  # its per-attempt errors; ours is one line
        self.client = ModbusTcpClient(host, port=int(port), timeout=float(timeout_s), retries=0)
        params = inspect.signature(
            self.client.write_coil
        ).parameters  # pymodbus >= 3.10: device_id; before: slave
        self._unit = {"device_id" if "device_id" in params else "slave": int(unit)}
        self.where = f"{host}:{port}"
        self.coils = {int(reject_coil): float(pulse_ms) / 1e3}
        if alarm_coil is not None:
            self.coils[int(alarm_coil)] = float(alarm_ms) / 1e3
        self.registers, self.update_s = int(registers), float(update_s)
        self.backoff_s, self.backoff_max_s, self.max_delay_s = (
            float(backoff_s),
            float(backoff_max_s),
            float(max_delay_ms) / 1e3,
        )
        self.alarm_coil = None if alarm_coil is None else int(alarm_coil)
        self.counters = LineCounters()
        self.safety = safety if safety is not None else LineSafety()  # the loop hands its own
        self.pulses = self.missed = self.dropped = self.writes = self.reconnects = self.heartbeat = 0
        self.connected, self._last_class, self._written_frames, self._alarm_on = False, 0, 0, False
        self._q: queue.Queue[tuple] = queue.Queue(maxsize=int(queue_size))  # (t queued, part, frame, ts, run)
        self._held: Optional[tuple] = None  # a pulse whose write failed: sent first once connected again
        self._off_at: dict[int, float] = {}  # coil -> monotonic time its pulse ends
        self._stop, self._wake = threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._work, name="modbus", daemon=True)

    # -- the loop's side: count and queue, never wait ------------------------------------------
    def open(self) -> None:
        self._thread.start()

    def emit(self, result: Any) -> None:
        self.counters.add(result)
        if result.decision.ng:
            d = result.decision.defects
            self._last_class = int(d.class_id[int(np.argmax(d.confidence))]) + 1 if len(d.confidence) else 0
        if result.trigger:
            from ..result import utc_iso

            item = (
                time.monotonic(),
                int(result.part),
                int(result.frame.index),
                utc_iso(result.frame.timestamp),
                str(result.run_id),
            )
            try:
                self._q.put_nowait(item)
            except queue.Full:
                self.dropped += 1
                self._missed(item, "queue_full")
            self._wake.set()

    def stats(self) -> dict[str, Any]:
        return {
            "pulses": self.pulses,
            "missed": self.missed,
            "dropped": self.dropped,
            "missed_rejects": self.missed + self.dropped,
            "writes": self.writes,
            "reconnects": self.reconnects,
            "connected": self.connected,
        }

    def close(self, timeout: float = 3.0) -> None:
        """Send queued pulses, end running ones, write the final counters, disconnect (within ``timeout``)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout + max(self.coils.values()))
        self.client.close()

    def _missed(self, item: tuple, reason: str) -> None:
        _, part, frame, ts, run = item
        if reason != "queue_full":
            self.missed += 1
        self.safety.reject_missed(reason, f"modbus {self.where}", part, frame, ts, run)

    # -- the worker: the only user of the connection -------------------------------------------
    def _call(self, method: str, address: int, value: Any) -> None:
        response = getattr(self.client, method)(address, value, **self._unit)
        if response.isError():
            raise OSError(f"PLC refused {method}({address}): {response}")
        self.writes += 1

    def _connect(self) -> bool:
        """Connect (or confirm the connection); False after a failed attempt."""
        if self.connected:
            return True
        if self.client.connect():
            self.connected = True
            self.safety.link("modbus", True)
            if self.reconnects:
                LOG.warning(
                    "modbus: connected to the PLC at %s again (after %d failed attempt(s))",
                    self.where,
                    self.reconnects,
                )
            else:
                LOG.info("modbus: connected to the PLC at %s", self.where)
            for coil in self.coils:  # a pulse cut short by the outage must not stay on
                self._call("write_coil", coil, False)
            self._off_at.clear()
            self._alarm_on = False
            return True
        return False

    def _lost(self, e: BaseException) -> None:
        if self.connected or not self.reconnects:
            LOG.error(
                "modbus: PLC at %s unreachable (%s: %s); retrying with backoff up to %.0f s "
                "(%.1f s while reject pulses wait); a reject that cannot be sent in %.0f ms is a missed "
                "reject: alarm raised, run degraded",
                self.where,
                e.__class__.__name__,
                e,
                self.backoff_max_s,
                self.backoff_s,
                self.max_delay_s * 1e3,
            )
        self.connected = False
        self.safety.link("modbus", False)
        self.reconnects += 1
        self.client.close()

    def _pending(self) -> bool:
        return self._held is not None or not self._q.empty()

    def _work(self) -> None:
        self.safety.link("modbus", False)
        backoff, next_write = self.backoff_s, 0.0
        while True:
            stopping = self._stop.is_set() and not self._pending() and not self._off_at
            try:
                if not self._connect():
                    raise ConnectionError("connection refused or timed out")
                backoff = self.backoff_s
                next_write = self._step(next_write, stopping)
            except Exception as e:  # pymodbus' ConnectionException, socket errors, refused requests
                self._lost(e)
                self._drop_late()
                wait = self.backoff_s if self._pending() else backoff  # NG parts waiting: retry soon
                self._wake.wait(wait)
                self._wake.clear()
                if self._stop.is_set() or stopping:
                    self._drop_late(everything=True)
                    return
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            if stopping:
                return

    def _next(self, timeout: float) -> Optional[tuple]:
        if self._held is not None:
            item, self._held = self._held, None
            return item
        try:
            return self._q.get(timeout=timeout)
        except queue.Empty:
            return None

    def _step(self, next_write: float, final: bool) -> float:
        """Start queued pulses, end due ones, hold the alarm, write the registers when due;
        returns the next register time."""
        now = time.monotonic()
        due = min([next_write, *self._off_at.values()])
        item = self._next(max(0.0, min(due - now, 0.05)))
        if item is not None:
            if time.monotonic() - item[0] > self.max_delay_s:
                self._missed(item, "late")
            else:
                self._pulse(item)
        now = time.monotonic()
        alarm = self.safety.alarm and self.alarm_coil is not None
        for coil, t_off in list(self._off_at.items()):
            if now >= t_off:
                if not (alarm and coil == self.alarm_coil):  # a latched alarm stays on
                    self._call("write_coil", coil, False)
                del self._off_at[coil]
        if alarm and not self._alarm_on:
            self._call("write_coil", self.alarm_coil, True)
            self._alarm_on = True
        if now >= next_write or final:
            self._write_registers()
            next_write = now + self.update_s
        return next_write

    def _write_registers(self) -> None:
        counts = self.counters.read()
        if counts["frames"] != self._written_frames:  # the heartbeat only beats while frames are inspected
            self.heartbeat += 1
        block = register_block(counts, self.heartbeat, self._last_class, self.safety.state())
        self._call("write_registers", self.registers, block)
        self._written_frames = counts["frames"]

    def _pulse(self, item: tuple) -> None:
        """Raise the reject coil (and the alarm coil); the reject counts as delivered once its coil is on."""
        delivered = False
        try:
            for coil, length in self.coils.items():
                if coil in self._off_at:
                    self._call("write_coil", coil, False)  # restart: a rising edge per part
                self._call("write_coil", coil, True)
                self._off_at[coil] = time.monotonic() + length
                if not delivered:
                    delivered = True
                    self.pulses += 1
        except Exception:
            if not delivered:
                self._held = (
                    item  # the connection broke before the reject went out: retried (or missed) later
                )
            raise

    def _drop_late(self, everything: bool = False) -> None:
        """Pulses waiting longer than max_delay_ms (all of them when the run ends) are missed:
        the PLC is unreachable."""
        if self._held is not None and (everything or time.monotonic() - self._held[0] > self.max_delay_s):
            item, self._held = self._held, None
            self._missed(item, "unreachable")
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                return
            if not everything and time.monotonic() - item[0] <= self.max_delay_s:
                self._q.put_nowait(item)  # still in time: keep it (order no longer matters: pulses are alike)
                return
            self._missed(item, "unreachable")
