"""The valid range of every numeric key of ``configs/inspect.yaml``, checked once after the layers merge.

``defectdet inspect`` calls :func:`check_numbers` on the merged config, so a bad value from the file,
a ``key=value`` override or a flag is one line naming the key and what was expected
(``snapshots.quota_mb='abc': expected a number >= 0``), before anything is opened. An output added to
the sink registry lists its numeric keys here too (a test checks that every numeric default has a range);
``conf``, ``iou`` and ``max_det`` are the Detector's, which checks them itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ..errors import ConfigError


@dataclass(frozen=True)
class Range:
    """A number (``kind`` int or float) in [low, high]; ``open_low``: low itself excluded; ``nullable``: null allowed."""

    kind: type = float
    low: Optional[float] = 0
    high: Optional[float] = None
    open_low: bool = False
    nullable: bool = False

    def describe(self) -> str:
        what = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            what += f" in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}]"
        elif self.low is not None:
            what += f" {'>' if self.open_low else '>='} {self.low:g}"
        return f"null or {what}" if self.nullable else what

    def check(self, key: str, value: Any) -> Any:
        """``value`` as ``kind``; anything else is a one-line ConfigError naming ``key``."""
        if value is None and self.nullable:
            return None
        number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
        if number is not None and self.kind is int and isinstance(number, float) and math.isfinite(number) and number % 1 == 0:
            number = int(number)  # 10.0 -> 10
        ok = number is not None and math.isfinite(number) and (self.kind is float or isinstance(number, int))
        ok = ok and (self.low is None or number > self.low or (number == self.low and not self.open_low))
        if not ok or (self.high is not None and number > self.high):
            raise ConfigError(f"{key}={value!r}: expected {self.describe()}")
        return self.kind(number)


INT, POSITIVE = Range(int), Range(float, open_low=True)  # an integer >= 0; a number > 0

# The detector's own settings, range-checked by defectdet.runtime.Detector itself (same one-line errors).
DETECTOR_KEYS = ("conf", "iou", "max_det")

# Every other numeric key of configs/inspect.yaml (dotted), with its range.
RANGES: dict[str, Range] = {
    "threads": Range(int, 1, nullable=True),
    "max_frames": INT,
    "duration": Range(),
    "status_every": Range(),
    "capture.queue": Range(int, 1),
    "capture.backoff_s": POSITIVE,
    "capture.backoff_max_s": POSITIVE,
    "capture.give_up_s": Range(),
    "capture.stall_s": Range(),
    "decision.debounce_k": Range(int, 1),
    "decision.debounce_n": Range(int, 1),
    "events.max_mb": Range(),
    "snapshots.quota_mb": Range(),
    "snapshots.jpeg_quality": Range(int, 0, 100),
    "snapshots.queue": INT,
    "snapshots.min_free_mb": Range(),
    "record.fps": POSITIVE,
    "signals.gpio.pin": INT,
    "signals.gpio.pulse_ms": POSITIVE,
    "signals.mqtt.port": Range(int, 1, 65535),
    "signals.mqtt.qos": Range(int, 0, 2),
    "signals.mqtt.keepalive": INT,
    "signals.webhook.timeout_s": POSITIVE,
    "signals.webhook.queue": Range(int, 1),
    "signals.modbus.port": Range(int, 1, 65535),
    "signals.modbus.unit": Range(int, 0, 255),  # Modbus unit (device) id
    "signals.modbus.reject_coil": Range(int, 0, 65535),
    "signals.modbus.alarm_coil": Range(int, 0, 65535),
    "signals.modbus.registers": Range(int, 0, 65535),  # first holding register of the block
    "signals.modbus.pulse_ms": POSITIVE,
    "signals.modbus.alarm_ms": POSITIVE,
    "signals.modbus.update_s": POSITIVE,
    "signals.modbus.timeout_s": POSITIVE,
    "signals.modbus.backoff_s": POSITIVE,
    "signals.modbus.backoff_max_s": POSITIVE,
    "signals.modbus.max_delay_ms": POSITIVE,
    "signals.modbus.queue": Range(int, 1),
    "opcua.update_s": POSITIVE,
    "page.stream_fps": POSITIVE,
    "page.stream_width": Range(int, 16),
    "page.jpeg_quality": Range(int, 0, 100),
    "page.keep_ng": Range(int, 1),
    "page.write_timeout_s": POSITIVE,
    "tally.every_s": POSITIVE,
    # the review queue (defectdet/station/review.py)
    "review.budget_mb": POSITIVE,
    "review.near_band": Range(float, 0, 1),
    "review.audit_rate": Range(float, 0, 1),
    "review.queue": Range(int, 1),
}


def check_numbers(cfg: Mapping[str, Any], ranges: Mapping[str, Range] = RANGES) -> dict[str, Any]:
    """A copy of the merged config with every key of ``ranges`` checked and typed (ConfigError on the first bad one)."""
    out = _copy(cfg)
    for key, rng in ranges.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node[part]
        node[leaf] = rng.check(key, node[leaf])
    return out


def _copy(node: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in node.items()}
