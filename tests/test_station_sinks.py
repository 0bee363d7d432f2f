"""The station's output contract: the Sink protocol, its Guard, each sink's own stats() in summary.json,
and the registry that builds sinks from the inspect config (one class + one entry per new output)."""

import logging

import numpy as np
import pytest
from test_inspect_sinks import NAMES, FakeGPIO, make_result

from defectdet.errors import ConfigError
from defectdet.runtime.detections import Detections
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.inspect_cli import DEFAULTS, merge_config
from defectdet.station.loop import InspectionLoop
from defectdet.station.outputs.gpio import GpioSignal
from defectdet.station.outputs.mqtt import MqttSignal
from defectdet.station.outputs.signals import StdoutSignal
from defectdet.station.outputs.webhook import WebhookSignal
from defectdet.station.registry import SINKS, SinkEntry, build_sinks, sink_defaults
from defectdet.station.sink import BaseSink, Guard
from defectdet.station.sinks import EventLog, VideoRecorder
from defectdet.station.snapshots import Snapshots
from defectdet.station.tally import Tally


class EveryThirdNg:
    """A detector finding a defect on every third call: parts of one NG frame between two OK ones."""

    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        self.calls += 1
        if self.calls % 3 == 0:
            return Detections.from_arrays(np.array([[4, 4, 20, 20]], np.float32), [0.9], [0], NAMES)
        return Detections.empty()


def run_loop(sinks, frames=12):
    src = FrameSource(f"synthetic://?frames={frames}&seed=3")
    return InspectionLoop(EveryThirdNg(), src, Decider(NAMES), sinks, status_every=0).run()


class Plc(BaseSink):
    """A stand-in for a new output: counts pulses, owns its stats and one top-level summary key."""

    name = "plc"
    summary_keys = {"plc_pulses": "pulses"}

    def __init__(self, unit):
        self.unit, self.opened, self.pulses, self.closed = unit, 0, 0, False

    def open(self):
        self.opened += 1

    def emit(self, result):
        self.pulses += bool(result.trigger)

    def close(self):
        self.closed = True

    def stats(self):
        return {"pulses": self.pulses, "unit": self.unit}


PLC = SinkEntry("signals.plc", {"enabled": False, "unit": 1}, lambda s, ctx: Plc(s.number("unit", int)))


def test_a_new_output_is_one_class_and_one_registry_entry(tmp_path):
    entries = (*SINKS, PLC)
    defaults = sink_defaults(entries)
    assert defaults["signals"]["plc"] == {"enabled": False, "unit": 1}
    cfg = merge_config(
        {**DEFAULTS, "signals": {**DEFAULTS["signals"], **defaults["signals"]}},  # 3.8: no dict |
        {"signals.plc.enabled": True, "signals.plc.unit": 7, "snapshots.enabled": False},
        "test",
    )
    sinks = build_sinks(cfg, tmp_path, live=False, entries=entries)
    assert [s.name for s in sinks] == ["events", "tally", "plc"]
    plc = sinks[-1]
    summary = run_loop(sinks)
    assert plc.opened == 1 and plc.closed and plc.pulses == summary["triggers"] == 4
    assert summary["sinks"]["plc"] == {"pulses": plc.pulses, "unit": 7, "errors": 0, "last_error": None}
    assert summary["plc_pulses"] == plc.pulses and list(summary)[-2:] == ["plc_pulses", "sinks"]
    assert summary["events_written"] == summary["ng"] == summary["sinks"]["events"]["written"]


def test_registry_builds_the_enabled_sinks_in_emit_order(tmp_path, monkeypatch, caplog):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    on = {
        "record.enabled": True,
        "signals.stdout.enabled": True,
        "signals.webhook.enabled": True,
        "signals.webhook.url": "http://127.0.0.1:9/ng",
        "display.show": True,
    }
    with caplog.at_level(logging.WARNING, "defectdet.inspect"):
        sinks = build_sinks(merge_config(DEFAULTS, on, "test"), tmp_path)
    try:
        assert [type(s) for s in sinks] == [
            Snapshots,
            EventLog,
            Tally,
            VideoRecorder,
            StdoutSignal,
            WebhookSignal,
        ]
        assert "no display" in caplog.text  # the window is skipped with one warning, the run stays headless
    finally:
        sinks[-1].close()
    off = {"snapshots.enabled": False, "events.enabled": False, "tally.enabled": False}
    assert build_sinks(merge_config(DEFAULTS, off, "test"), tmp_path) == []


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("snapshots.queue", "many", "snapshots.queue='many': expected an integer"),
        ("events.max_mb", "big", "events.max_mb='big': expected a number"),
        ("signals.gpio.pin", True, "signals.gpio.pin=True: expected an integer"),
    ],
)
def test_bad_sink_values_are_one_line_config_errors(tmp_path, key, value, message):
    cfg = merge_config(DEFAULTS, {key: value, "signals.gpio.enabled": True}, "test")
    with pytest.raises(ConfigError) as e:
        build_sinks(cfg, tmp_path)
    assert str(e.value) == message


def test_a_section_registered_twice_is_refused():
    with pytest.raises(ValueError, match="'signals.plc' is registered twice"):
        sink_defaults((PLC, PLC))


def test_every_builtin_sink_reports_the_same_counters_as_before(tmp_path):
    """The summary's per-sink keys, in order, as summary.json has always had them."""
    mqtt = MqttSignal(port=9, keepalive=5)  # never connects: the broker's absence does not matter here
    webhook = WebhookSignal("http://127.0.0.1:9/ng")
    sinks = [
        Snapshots(tmp_path / "s", queue=0),
        EventLog(tmp_path / "e.jsonl"),
        VideoRecorder(tmp_path / "v.mp4"),
        StdoutSignal(),
        GpioSignal(12, gpio=FakeGPIO()),
        mqtt,
        webhook,
    ]
    try:
        got = {s.name: list(Guard(s).stats()) for s in sinks}
    finally:
        mqtt.close(timeout=0)
        webhook.close(timeout=0)
    tail = ["errors", "last_error"]
    assert got == {
        "snapshots": ["written", "deleted", "dropped", "failed", "dropped_low_disk", "min_free_mb", *tail],
        "events": ["written", *tail],
        "video": ["written", *tail],
        "stdout": ["sent", *tail],
        "gpio": ["pulses", *tail],
        "mqtt": ["sent", *tail],
        "webhook": ["sent", "failed", "dropped", *tail],
    }


def test_guard_refuses_an_object_that_is_not_a_sink():
    class HalfSink:
        name = "half"

        def emit(self, result):
            pass

    with pytest.raises(TypeError, match="HalfSink is not a Sink: no open, close, stats"):
        Guard(HalfSink())


def test_a_sink_failing_to_open_or_report_never_stops_the_loop(caplog):
    class Unreachable(Plc):
        name = "plc"

        def open(self):
            raise ConnectionRefusedError(111, "Connection refused")

        def stats(self):
            raise RuntimeError("counters unavailable")

    sink = Unreachable(1)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary = run_loop([sink])
    assert summary["frames"] == 12 and sink.pulses == summary["triggers"] > 0  # emit still ran on every frame
    assert (
        summary["sinks"]["plc"]["errors"] == 2
        and "stats failed: RuntimeError" in summary["sinks"]["plc"]["last_error"]
    )
    assert "plc: open failed: ConnectionRefusedError" in caplog.text
    assert summary["plc_pulses"] is None  # its stats could not be read


def test_guard_passes_open_emit_close_and_stats_through():
    plc = Plc(2)
    guard = Guard(plc)
    guard.open()
    guard.emit(make_result(3, trigger=True))
    guard.close()
    assert (plc.opened, plc.pulses, plc.closed) == (1, 1, True)
    assert guard.stats() == {"pulses": 1, "unit": 2, "errors": 0, "last_error": None}
