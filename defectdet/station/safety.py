"""Line safety: whether every NG part's reject reached the line, whether the station is inspecting,
and the run's identity.

One :class:`LineSafety` per run, shared by the loop and the outputs (``SinkContext.safety``; the
loop hands its own to every sink that has a ``safety`` attribute):

* a reject output (Modbus) calls :meth:`LineSafety.reject_missed` for every NG part whose reject
  pulse it could not deliver — too late (``late``), its queue full (``queue_full``) or the PLC
  unreachable (``unreachable``). A missed reject is an escape: it latches the alarm (every output
  still up shows it: the Modbus alarm coil and status register, OPC UA ``Alarm``, the page, /metrics,
  MQTT/webhook/stdout alarm messages), is recorded in the event log, the tally and the shift report,
  and marks the run degraded (exit 3). With ``plc.on_failure: stop`` it also halts inspection: no
  more verdicts, and the "ready" outputs drop, so the line's interlock stops the line rather than
  pass parts nobody can reject.
* the loop calls :meth:`LineSafety.frame_inspected` per inspected frame; :meth:`LineSafety.ready` is
  true only while frames are inspected within ``ready_s`` (``capture.stall_s``) and inspection is
  not halted or over.
* outputs report their link to the PLC with :meth:`LineSafety.link` (page, /metrics).

:func:`new_run_id` names a run (UTC start time + random), carried by every event, tally line,
snapshot name and ``summary.json``, so runs appended into one folder stay apart.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
import time
from typing import Any, Optional

from ..errors import ConfigError

LOG = logging.getLogger("defectdet.inspect")
POLICIES = ("alarm", "stop")
REASONS = ("late", "queue_full", "unreachable")  # why a reject was missed
SAID = {
    "late": "not sent within max_delay_ms",
    "queue_full": "the output's queue was full",
    "unreachable": "no connection to the PLC",
}


def new_run_id(t: Optional[float] = None) -> str:
    """``20240501T060000Z-3f9a1c``: the UTC start time and 24 random bits (sortable by start)."""
    return (
        time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if t is None else t))
        + "-"
        + secrets.token_hex(3)
    )


def check_policy(value: Any, key: str = "plc.on_failure") -> str:
    """``alarm`` or ``stop``; anything else is a one-line ConfigError naming ``key``."""
    if value not in POLICIES:
        raise ConfigError(
            f"{key}={value!r}: expected alarm (keep inspecting, raise the alarm) or stop "
            "(stop inspecting and drop the ready output)"
        )
    return str(value)


class LineSafety:
    """The run's reject ledger, alarm, ready state and PLC links (thread-safe; see the module docstring)."""

    def __init__(self, on_failure: str = "alarm", ready_s: float = 5.0, log_every_s: float = 30.0):
        self.on_failure = check_policy(on_failure)
        self.ready_s = float(ready_s) if ready_s and ready_s > 0 else 5.0
        self.log_every_s = float(log_every_s)
        self._lock = threading.Lock()
        self.missed: collections.Counter[str] = collections.Counter()
        self.records: list[dict[str, Any]] = []  # one per missed reject, in the order they were missed
        self.alarm, self.alarm_reason = False, ""
        self.halted, self.halt_reason = False, ""
        self.halted_at: Optional[float] = None  # monotonic time inspection was halted
        self.ended = False
        self.links: dict[str, bool] = {}
        self.inspected = 0
        self._last_inspected: Optional[float] = None
        self._logged_at = -float("inf")

    # -- writers --------------------------------------------------------------------------------
    def frame_inspected(self) -> None:
        """The loop inspected (decided and signalled) one more frame."""
        with self._lock:
            self.inspected += 1
            self._last_inspected = time.monotonic()

    def reject_missed(
        self, reason: str, output: str, part: int = 0, frame: int = -1, ts: str = "", run: str = ""
    ) -> None:
        """One NG part's reject was not delivered by ``output`` (``reason``: late, queue_full,
        unreachable)."""
        if reason not in REASONS:
            raise ValueError(f"reason={reason!r}: expected one of {', '.join(REASONS)}")
        now = time.monotonic()
        with self._lock:
            self.missed[reason] += 1
            total = sum(self.missed.values())
            self.records.append(
                {
                    "type": "missed_reject",
                    "ts": ts,
                    "run": run,
                    "part": part,
                    "frame": frame,
                    "reason": reason,
                    "output": output,
                }
            )
            first = not self.alarm
            self.alarm = True
            self.alarm_reason = self.alarm_reason or f"{output}: reject of NG part {part} missed ({reason})"
            halt = self.on_failure == "stop" and not self.halted
            if halt:
                self.halted, self.halt_reason = (
                    True,
                    f"plc.on_failure=stop: {output} missed a reject ({reason})",
                )
                self.halted_at = now
            log = first or now - self._logged_at >= self.log_every_s
            if log:
                self._logged_at = now
        if log:
            LOG.error(
                "%s: reject of NG part %d (frame %d) missed: %s; %d missed so far. The part may be in the OK "
                "bin: alarm raised%s",
                output,
                part,
                frame,
                SAID[reason],
                total,
                "; inspection stopped (plc.on_failure=stop), ready dropped" if halt else "",
            )

    def link(self, name: str, up: bool) -> None:
        """The state of an output's link to the PLC."""
        with self._lock:
            self.links[name] = bool(up)

    def end(self) -> None:
        """The run is ending: not ready any more."""
        self.ended = True

    # -- readers --------------------------------------------------------------------------------
    @property
    def missed_total(self) -> int:
        with self._lock:
            return sum(self.missed.values())

    def ready(self, now: Optional[float] = None) -> bool:
        """True while frames are inspected within ``ready_s`` and inspection is neither halted nor over."""
        now = time.monotonic() if now is None else now
        with self._lock:
            last = self._last_inspected
        return not (self.halted or self.ended) and last is not None and now - last <= self.ready_s

    def records_since(self, n: int) -> list[dict[str, Any]]:
        """The missed-reject records from the ``n``-th on."""
        with self._lock:
            return [dict(r) for r in self.records[n:]]

    def state(self) -> dict[str, Any]:
        """Plain JSON values for outputs and ``summary.json``."""
        ready = self.ready()
        with self._lock:
            return {
                "ready": ready,
                "inspected": self.inspected,
                "missed_rejects": sum(self.missed.values()),
                "missed_by_reason": {r: self.missed[r] for r in REASONS},
                "alarm": self.alarm,
                "alarm_reason": self.alarm_reason,
                "halted": self.halted,
                "halt_reason": self.halt_reason,
                "on_failure": self.on_failure,
                "plc_links": dict(self.links),
            }
