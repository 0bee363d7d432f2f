"""What the reject/alarm outputs share, and the simplest of them: :class:`SignalError` (an output
that cannot be set up: a missing package, a bad pin or URL), :func:`payload` (the JSON a trigger
carries) and :class:`StdoutSignal` (one line per trigger on stdout).

Each output is a :class:`~defectdet.station.sink.Sink` that acts only when ``result.trigger`` is
set (the loop sets it on the first NG frame of a part, or on every NG frame with ``signals.trigger: frame``),
and never blocks the loop: :mod:`.gpio` (a Jetson GPIO pin pulse, released by a timer), :mod:`.mqtt`
(paho-mqtt's own network thread), :mod:`.webhook` (a worker thread and a bounded queue).

A reject that an output (the PLC) could not deliver is an alarm: stdout prints ``ALARM {record}``,
MQTT publishes the record to ``<topic>/alarm``, the webhook posts it (``missed_reject``; the GPIO
pin is a reject gate, which a late pulse would fire on the wrong part, so it stays still).
"""

from __future__ import annotations

import json
from typing import Any

from ...errors import DefectdetError
from ..sink import BaseSink


class SignalError(DefectdetError):
    """A reject/alarm output cannot be set up (missing package, bad pin or URL)."""


def payload(result: Any) -> bytes:
    """The JSON message an alarm carries: the frame's event record."""
    return json.dumps(result.event(), separators=(",", ":"), default=str).encode()


class StdoutSignal(BaseSink):
    """One JSON line per trigger on stdout (for a PLC bridge reading a pipe, or a demo)."""

    name = "stdout"

    def __init__(self) -> None:
        self.sent = 0

    def emit(self, result: Any) -> None:
        if result.trigger:
            print("NG " + payload(result).decode(), flush=True)
            self.sent += 1

    def missed_reject(self, record: dict) -> None:
        print("ALARM " + json.dumps(record, separators=(",", ":")), flush=True)

    def stats(self) -> dict[str, Any]:
        return {"sent": self.sent}
