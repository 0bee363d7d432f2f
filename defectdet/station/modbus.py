"""Modbus TCP to the PLC (pymodbus client): reject/alarm coil pulses, counters, heartbeat, last result.

Per trigger (the first NG frame of a part, or every NG frame with ``signals.trigger: frame``) the
reject coil is pulsed for ``pulse_ms`` and the alarm coil, if set, for ``alarm_ms``. A trigger
during a pulse restarts it (the coil goes off, then on again), so the PLC sees one rising edge per
part. Every ``update_s`` one write of holding registers from ``registers`` on (32-bit values are
two registers, high word first):

======  =================================================================
offset  value
======  =================================================================
0, 1    total frames inspected (u32)
2, 3    OK frames (u32)
4, 5    NG frames (u32)
6       heartbeat: +1 at every register write (u16, wraps)
7       last result: 0 none yet, 1 OK, 2 NG
8       last NG class: class id + 1 of its most confident defect (0: none)
======  =================================================================

The loop never waits for the PLC: ``emit`` counts and queues a pulse (bounded queue); a worker
thread owns the connection, reconnects with exponential backoff, and drops pulses that could not
be sent within ``max_delay_ms`` (a late reject hits the wrong part) as ``missed``. A PLC that is
down is one log line when it goes away and one when it is back. pymodbus is imported when the
output is built.
"""

from __future__ import annotations

import inspect
import logging
import queue
import threading
import time
from typing import Any, Optional

import numpy as np

from .live import LineCounters
from .signals import SignalError
from .sink import BaseSink

LOG = logging.getLogger("defectdet.inspect")
REGISTER_COUNT = 9


def register_block(counts: dict[str, Any], heartbeat: int, last_class_id: int) -> list[int]:
    """The holding registers' values (see the module docstring)."""
    def u32(v: int) -> list[int]:
        v = int(v) & 0xFFFFFFFF
        return [v >> 16, v & 0xFFFF]

    last = {"OK": 1, "NG": 2}.get(counts["last"].get("result", ""), 0)
    return [*u32(counts["frames"]), *u32(counts["ok"]), *u32(counts["ng"]), heartbeat & 0xFFFF, last, last_class_id]


class ModbusOutput(BaseSink):
    """A Modbus TCP client writing to the PLC at ``host:port`` (see the module docstring)."""

    name = "modbus"

    def __init__(self, host: str = "127.0.0.1", port: int = 502, unit: int = 1, reject_coil: int = 0,
                 alarm_coil: Optional[int] = 1, pulse_ms: float = 200.0, alarm_ms: float = 1000.0, registers: int = 0,
                 update_s: float = 0.5, timeout_s: float = 1.0, backoff_s: float = 0.5, backoff_max_s: float = 10.0,
                 max_delay_ms: float = 500.0, queue_size: int = 64):
        try:
            from pymodbus.client import ModbusTcpClient
        except ImportError:
            raise SignalError("modbus output needs pymodbus: pip install 'defectdet[station]'") from None
        if logging.getLogger("pymodbus").level == logging.NOTSET:
            logging.getLogger("pymodbus").setLevel(logging.CRITICAL)  # its per-attempt errors; ours is one line
        self.client = ModbusTcpClient(host, port=int(port), timeout=float(timeout_s), retries=0)
        params = inspect.signature(self.client.write_coil).parameters  # pymodbus >= 3.10: device_id; before: slave
        self._unit = {"device_id" if "device_id" in params else "slave": int(unit)}
        self.where = f"{host}:{port}"
        self.coils = {int(reject_coil): float(pulse_ms) / 1e3}
        if alarm_coil is not None:
            self.coils[int(alarm_coil)] = float(alarm_ms) / 1e3
        self.registers, self.update_s = int(registers), float(update_s)
        self.backoff_s, self.backoff_max_s, self.max_delay_s = float(backoff_s), float(backoff_max_s), float(max_delay_ms) / 1e3
        self.counters = LineCounters()
        self.pulses = self.missed = self.dropped = self.writes = self.reconnects = self.heartbeat = 0
        self.connected, self._last_class = False, 0
        self._q: queue.Queue[float] = queue.Queue(maxsize=int(queue_size))
        self._off_at: dict[int, float] = {}  # coil -> monotonic time its pulse ends
        self._stop = threading.Event()
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
            try:
                self._q.put_nowait(time.monotonic())
            except queue.Full:
                self.dropped += 1
                raise OSError(f"modbus {self.where}: {self._q.maxsize} reject pulses waiting; this one dropped") from None

    def stats(self) -> dict[str, Any]:
        return {"pulses": self.pulses, "missed": self.missed, "dropped": self.dropped, "writes": self.writes,
                "reconnects": self.reconnects, "connected": self.connected}

    def close(self, timeout: float = 3.0) -> None:
        """Send queued pulses, end running ones, write the final counters, disconnect (within ``timeout``)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout + max(self.coils.values()))
        self.client.close()

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
            if self.reconnects:
                LOG.warning("modbus: connected to the PLC at %s again (after %d failed attempt(s))", self.where, self.reconnects)
            else:
                LOG.info("modbus: connected to the PLC at %s", self.where)
            for coil in self.coils:  # a pulse cut short by the outage must not stay on
                self._call("write_coil", coil, False)
            self._off_at.clear()
            return True
        return False

    def _lost(self, e: BaseException) -> None:
        if self.connected or not self.reconnects:
            LOG.error("modbus: PLC at %s unreachable (%s: %s); retrying with backoff up to %.0f s, reject pulses "
                      "that cannot be sent in %.0f ms are counted as missed", self.where, e.__class__.__name__, e,
                      self.backoff_max_s, self.max_delay_s * 1e3)
        self.connected = False
        self.reconnects += 1
        self.client.close()

    def _work(self) -> None:
        backoff, next_write = self.backoff_s, 0.0
        while True:
            stopping = self._stop.is_set() and self._q.empty() and not self._off_at
            try:
                if not self._connect():
                    raise ConnectionError("connection refused or timed out")
                backoff = self.backoff_s
                next_write = self._step(next_write, stopping)
            except Exception as e:  # pymodbus' ConnectionException, socket errors, refused requests
                self._lost(e)
                self._drop_late()
                if self._stop.wait(backoff) or stopping:
                    self._drop_late(everything=True)
                    return
                backoff = min(backoff * 2, self.backoff_max_s)
                continue
            if stopping:
                return

    def _step(self, next_write: float, final: bool) -> float:
        """Start queued pulses, end due ones, write the registers when due; returns the next register time."""
        now = time.monotonic()
        due = min([next_write, *self._off_at.values()])
        try:
            t_trigger = self._q.get(timeout=max(0.0, min(due - now, 0.05)))
        except queue.Empty:
            t_trigger = None
        if t_trigger is not None:
            if time.monotonic() - t_trigger > self.max_delay_s:
                self.missed += 1
            else:
                self._pulse()
        now = time.monotonic()
        for coil, t_off in list(self._off_at.items()):
            if now >= t_off:
                self._call("write_coil", coil, False)
                del self._off_at[coil]
        if now >= next_write or final:
            self.heartbeat += 1
            block = register_block(self.counters.read(), self.heartbeat, self._last_class)
            self._call("write_registers", self.registers, block)
            next_write = now + self.update_s
        return next_write

    def _pulse(self) -> None:
        for coil, length in self.coils.items():
            if coil in self._off_at:
                self._call("write_coil", coil, False)  # restart: a rising edge per part
            self._call("write_coil", coil, True)
            self._off_at[coil] = time.monotonic() + length
        self.pulses += 1

    def _drop_late(self, everything: bool = False) -> None:
        """Queued pulses older than max_delay_ms (all of them when the run ends) are missed."""
        while True:
            try:
                t = self._q.get_nowait()
            except queue.Empty:
                return
            if not everything and time.monotonic() - t <= self.max_delay_s:
                self._q.put_nowait(t)  # still in time: keep it (order no longer matters: pulses are alike)
                return
            self.missed += 1
