"""Modbus TCP to a PLC and Prometheus /metrics, against pymodbus' own server and prometheus_client's
parser on loopback: one reject pulse per NG part, counters equal to the loop's, a PLC that is down
at the start or goes away mid-run, a metrics port already in use."""

import threading
import time

import pytest
from lineservers import BusyPort, LogLines, Plc, free_port, get
from test_inspect_sinks import NAMES
from test_station_sinks import EveryThirdNg

from defectdet.errors import ConfigError
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.inspect_cli import DEFAULTS, merge_config
from defectdet.station.loop import InspectionLoop
from defectdet.station.registry import build_sinks
from defectdet.station.sinks import EventLog, read_events

pytest.importorskip("pymodbus")
parser = pytest.importorskip("prometheus_client.parser")


def run(sinks, uri, tmp_path):
    """The loop over ``uri`` with a detector finding a defect on every third frame, and an event log."""
    log = EventLog(tmp_path / "events.jsonl", fsync=False)
    loop = InspectionLoop(EveryThirdNg(), FrameSource(uri), Decider(NAMES), [log, *sinks], status_every=0)
    for s in sinks:
        if hasattr(s, "status"):
            s.status = loop.summary
    summary = loop.run()
    events = list(read_events(tmp_path / "events.jsonl"))
    assert len(events) == summary["ng"] == summary["frames"] // 3, "every NG frame is in the events"
    return summary


def modbus(port, **kw):
    from defectdet.station.outputs.modbus import ModbusOutput

    return ModbusOutput(
        port=port,
        **{
            "pulse_ms": 30.0,
            "alarm_ms": 60.0,
            "update_s": 0.1,
            "backoff_s": 0.1,
            "backoff_max_s": 0.4,
            "timeout_s": 0.5,
        }
        | kw,
    )


def registers(summary):
    """The 9-register block the PLC should hold after the run."""
    u32 = lambda v: [v >> 16, v & 0xFFFF]  # noqa: E731
    return [*u32(summary["frames"]), *u32(summary["ok"]), *u32(summary["ng"])]


def test_reject_coil_pulses_once_per_ng_part_and_registers_equal_the_summary(tmp_path):
    plc = Plc().start()
    try:
        out = modbus(plc.port, registers=10)
        summary = run([out], "synthetic://?frames=30&seed=1&fps=60", tmp_path)
        assert summary["triggers"] == 10 and plc.rising_edges(0) == 10 and plc.rising_edges(1) == 10
        block = plc.read(10, 9)
        assert block[:6] == registers(summary) and block[6] >= 1  # heartbeat went up
        assert block[7] == 2 and block[8] == 1  # the 30th frame was NG; its class: id 0 + 1
        assert not plc.coil(0) and not plc.coil(1)  # every pulse ended
        assert summary["sinks"]["modbus"] | {"writes": 0} == {
            "pulses": 10,
            "missed": 0,
            "dropped": 0,
            "missed_rejects": 0,
            "writes": 0,
            "reconnects": 0,
            "connected": True,
            "errors": 0,
            "last_error": None,
        }
        assert plc.read(19, 3) == [0, 0, 0]  # status: the run ended (not ready), no alarm; no missed rejects
        assert summary["missed_rejects"] == 0 and not summary["alarm"] and not summary["degraded"]
    finally:
        plc.close()


def test_plc_unreachable_at_start_is_one_line_and_the_counters_arrive_once_it_is_up(tmp_path):
    port = free_port()
    out = modbus(port)
    plc = Plc(port)
    threading.Timer(1.0, plc.start).start()  # the PLC boots a second after the station
    try:
        with LogLines() as log:
            summary = run([out], "synthetic://?frames=120&seed=1&fps=40", tmp_path)
        assert len(log.having("modbus: PLC at")) == 1 and "unreachable" in log.having("modbus: PLC at")[0]
        assert (
            len(log.having("connected to the PLC")) == 1 and "again" in log.having("connected to the PLC")[0]
        )
        assert out.pulses + out.missed == summary["triggers"] and out.missed > 0 and out.pulses > 0
        assert plc.rising_edges(0) == out.pulses
        assert plc.read(0, 9)[:6] == registers(summary)
    finally:
        plc.close()


def test_plc_lost_mid_run_every_decision_goes_on(tmp_path):
    plc = Plc().start()
    threading.Timer(0.8, plc.stop).start()
    threading.Timer(1.8, plc.start).start()
    try:
        out = modbus(plc.port)
        with LogLines() as log:
            summary = run([out], "synthetic://?frames=150&seed=1&fps=50", tmp_path)
        assert summary["frames"] == 150 and summary["seconds"] < 5.0  # the loop never waited for the PLC
        assert (
            len(log.having("unreachable")) == 1 and len(log.having("connected to the PLC at")) == 2
        )  # at start, again
        assert len(log.having(" again ")) == 1
        assert out.reconnects >= 1 and out.pulses + out.missed == summary["triggers"]
        assert plc.rising_edges(0) == out.pulses
        assert plc.read(0, 9)[:6] == registers(summary)
    finally:
        plc.close()


def scrape(url, token=None):
    status, body = get(url, headers={"Authorization": f"Bearer {token}"} if token else None)
    assert status == 200, body
    return {
        s.name + "|" + ",".join(f"{k}={v}" for k, v in sorted(s.labels.items())): s.value
        for family in parser.text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_metrics_parse_and_equal_the_summary(tmp_path):
    from defectdet.station.outputs.metrics import MetricsEndpoint

    metrics = MetricsEndpoint(port=0, model_id="m.onnx:abc")
    seen = []
    timer = threading.Timer(0.5, lambda: seen.append(scrape(metrics.server.url + "/metrics")))
    timer.start()
    summary = run([metrics], "synthetic://?frames=60&seed=1&fps=60", tmp_path)
    timer.join()
    assert seen and seen[0]["defectdet_frames_total|model=m.onnx:abc"] > 0  # served while the loop ran
    m = seen[0]
    assert (
        m["defectdet_dropped_frames_total|model=m.onnx:abc"] == 0
        and "defectdet_sink_errors_total|model=m.onnx:abc" in m
    )
    assert (
        m["defectdet_latency_seconds_count|model=m.onnx:abc"] == m["defectdet_frames_total|model=m.onnx:abc"]
    )
    final = metrics.counters.read()
    assert (final["frames"], final["ok"], final["ng"]) == (summary["frames"], summary["ok"], summary["ng"])
    assert final["per_class"] == {NAMES[0]: summary["ng"]}


def test_metrics_port_in_use_is_one_line_and_the_loop_goes_on(tmp_path):
    from defectdet.station.outputs.metrics import MetricsEndpoint

    busy = BusyPort()
    try:
        with LogLines() as log:
            summary = run([MetricsEndpoint(port=busy.port)], "synthetic://?frames=30&seed=1", tmp_path)
    finally:
        busy.close()
    lines = log.having("metrics: open failed")
    assert len(lines) == 1 and "is the port in use?" in lines[0] and str(busy.port) in lines[0]
    assert summary["frames"] == 30 and summary["sinks"]["metrics"]["errors"] == 1


@pytest.mark.parametrize("key", ["metrics"])
def test_beyond_loopback_needs_a_token(tmp_path, monkeypatch, key):
    cfg = merge_config(
        DEFAULTS, {f"{key}.enabled": True, f"{key}.bind": "0.0.0.0:9108", "snapshots.enabled": False}, "t"
    )
    with pytest.raises(
        ConfigError, match=rf"^{key}.bind on '0.0.0.0' \(beyond 127.0.0.1\) needs an access token"
    ):
        build_sinks(cfg, tmp_path)
    cfg = merge_config(
        cfg, {f"{key}.token_env": "LINE_TOKEN", f"{key}.bind": f"127.0.0.1:{free_port()}"}, "t"
    )
    with pytest.raises(
        ConfigError, match=rf"^{key}.token_env='LINE_TOKEN': that environment variable is not set$"
    ):
        build_sinks(cfg, tmp_path)
    monkeypatch.setenv("LINE_TOKEN", "s3cret")
    sink = build_sinks(cfg, tmp_path)[-1]
    sink.open()
    try:
        path = "/metrics"
        assert get(sink.server.url + path)[0] == 401
        assert get(sink.server.url + path + "?token=s3cret")[0] == 200
        assert get(sink.server.url + path, headers={"Authorization": "Bearer s3cret"})[0] == 200
    finally:
        sink.close()


def test_bad_modbus_values_are_one_line_config_errors(tmp_path):
    cfg = merge_config(DEFAULTS, {"signals.modbus.enabled": True, "signals.modbus.reject_coil": "gate"}, "t")
    with pytest.raises(ConfigError, match=r"^signals.modbus.reject_coil='gate': expected an integer$"):
        build_sinks(cfg, tmp_path)
    with pytest.raises(ConfigError, match=r"^metrics.bind='9108': expected host:port"):
        build_sinks(merge_config(DEFAULTS, {"metrics.enabled": True, "metrics.bind": "9108"}, "t"), tmp_path)


def test_modbus_close_is_bounded_with_the_plc_away(tmp_path):
    out = modbus(free_port())
    t = time.monotonic()
    summary = run([out], "synthetic://?frames=30&seed=1", tmp_path)
    assert time.monotonic() - t < 5.0 and out.pulses == 0 and out.missed + out.dropped == summary["triggers"]
