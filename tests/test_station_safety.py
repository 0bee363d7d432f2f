"""A missed reject is an escape: with pymodbus' own server standing in for the PLC, stopped for 8 s
and restarted during a run of NG parts, every NG part's reject is delivered or counted as missed;
each missed one shows on the page, /metrics, OPC UA, summary.json, the event log, the tally and the
shift report; the alarm goes out on every output still up; the run exits 3. With
``plc.on_failure: stop`` inspection stops and the ready bit drops within ``stall_s``. The Modbus
heartbeat only beats while frames are inspected."""

import json
import threading
import time

import pytest
from lineservers import Plc, free_port, get
from test_inspect_sinks import NAMES
from test_station_opcua import read_by_string_id
from test_station_plc import scrape
from test_station_sinks import EveryThirdNg

from defectdet.cli import main
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.health import EXIT_DEGRADED, exit_status
from defectdet.station.loop import InspectionLoop
from defectdet.station.outputs.signals import StdoutSignal
from defectdet.station.safety import LineSafety
from defectdet.station.sinks import EventLog, read_events
from defectdet.station.tally import Tally, read_tally

pytest.importorskip("pymodbus")
pytest.importorskip("asyncua")
pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")

STATUS = 19  # registers=10: the status register (offset 9) and missed rejects (10, 11)


def modbus(port, **kw):
    from defectdet.station.outputs.modbus import ModbusOutput

    return ModbusOutput(
        port=port,
        registers=10,
        **{
            "pulse_ms": 30.0,
            "alarm_ms": 30.0,
            "update_s": 0.1,
            "backoff_s": 0.1,
            "backoff_max_s": 2.0,
            "timeout_s": 0.3,
            "max_delay_ms": 300.0,
            **kw,
        },
    )


def after_first_frame(loop, delay, fn):
    """A thread calling ``fn`` ``delay`` s after the loop inspected its first frame (the servers take a
    while to start)."""

    def wait():
        deadline = time.monotonic() + 30
        while not loop.frames and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(delay)
        fn()

    return threading.Thread(target=wait)


def line_outputs(plc_port):
    from defectdet.station.outputs.metrics import MetricsEndpoint
    from defectdet.station.outputs.opcua import OpcUaServer
    from defectdet.station.outputs.page import OperatorPage

    return {
        "modbus": modbus(plc_port),
        "opcua": OpcUaServer(f"opc.tcp://127.0.0.1:{free_port()}/defectdet", update_s=0.1),
        "metrics": MetricsEndpoint(port=0, model_id="m"),
        "page": OperatorPage(port=0),
        "stdout": StdoutSignal(),
    }


def test_plc_stopped_8s_every_missed_reject_is_counted_shown_alarmed_and_degrades(tmp_path, capsys):
    plc = Plc().start()
    out = line_outputs(plc.port)
    sinks = [EventLog(tmp_path / "events.jsonl", fsync=False), Tally(tmp_path / "tally.jsonl"), *out.values()]
    # 15 frames/s for 12 s, every third frame NG: an NG part every 0.2 s
    loop = InspectionLoop(
        EveryThirdNg(),
        FrameSource("synthetic://?frames=180&seed=1&fps=15"),
        Decider(NAMES),
        sinks,
        status_every=0,
        out_dir=tmp_path,
    )
    for name in ("opcua", "metrics", "page"):
        out[name].status = loop.summary
    seen = {}

    def during_the_outage():
        time.sleep(8.0)  # the PLC went away at 1.5 s
        seen["page"] = json.loads(get(out["page"].server.url + "/api/state")[1])
        seen["metrics"] = scrape(out["metrics"].server.url + "/metrics")
        seen["opcua"] = read_by_string_id(
            out["opcua"].endpoint, ["MissedRejects", "Alarm", "PlcLink", "Ready"]
        )

    timers = [
        after_first_frame(loop, 1.5, plc.stop),
        after_first_frame(loop, 9.5, plc.start),
        after_first_frame(loop, 0, during_the_outage),
    ]
    for t in timers:
        t.start()
    try:
        summary = loop.run()
        for t in timers:
            t.join(20)
        block = plc.read(10, 12)
        alarm_coil = plc.coil(1)
    finally:
        plc.close()
    mb = summary["sinks"]["modbus"]
    missed = summary["missed_rejects"]
    # delivered + missed = NG parts, and the misses are the PLC's outage, not a miscount
    assert summary["rejected_parts"] == summary["triggers"] == 60 and mb["pulses"] + missed == 60
    assert (
        20 <= missed <= 50
        and plc.rising_edges(0) == mb["pulses"]
        and summary["missed_rejects_by_reason"]["unreachable"]
    )
    # the run says so: degraded, exit 3
    assert summary["degraded"] and exit_status(summary) == EXIT_DEGRADED and summary["alarm"]
    assert any(
        r.startswith(f"rejects: {missed} NG part(s) not rejected") for r in summary["degraded_reasons"]
    )
    # every output still up showed it during the outage
    assert seen["page"]["safety"]["missed_rejects"] > 0 and seen["page"]["safety"]["alarm"]
    assert seen["page"]["safety"]["plc_links"] == {"modbus": False}
    assert seen["metrics"]["defectdet_missed_rejects_total|model=m,reason=unreachable"] > 0
    assert (
        seen["metrics"]["defectdet_alarm|model=m"] == 1
        and seen["metrics"]["defectdet_plc_up|link=modbus,model=m"] == 0
    )
    assert (
        seen["opcua"]["MissedRejects"] > 0
        and seen["opcua"]["Alarm"] is True
        and seen["opcua"]["PlcLink"] == "modbus:down"
    )
    assert seen["opcua"]["Ready"] is True  # inspection went on (on_failure: alarm)
    # ... and has every one of them at the end
    assert out["page"].state()["safety"]["missed_rejects"] == missed
    assert out["opcua"]._state()["missed_rejects"] == missed
    # the PLC, once back: the alarm coil held on, the alarm bit, the count; not ready (the run ended)
    assert alarm_coil and block[9] == 2 and block[10:12] == [missed >> 16, missed & 0xFFFF]
    # stdout alarm messages, the event log, the tally
    alarms = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ALARM ")]
    assert len(alarms) == missed and json.loads(alarms[0][6:])["type"] == "missed_reject"
    records = [
        r for r in read_events(tmp_path / "events.jsonl", records=True) if r.get("type") == "missed_reject"
    ]
    assert len(records) == missed and {r["run"] for r in records} == {summary["run_id"]}
    ng_parts = {e["part"] for e in read_events(tmp_path / "events.jsonl")}
    assert {r["part"] for r in records} <= ng_parts and len(ng_parts) == 60
    assert sum(t["missed_rejects"] for t in read_tally(tmp_path / "tally.jsonl")) == missed
    # and the shift report
    assert (
        main(
            [
                "report",
                "--events",
                str(tmp_path),
                "--out",
                str(tmp_path / "report"),
                "--no-charts",
                "--tz",
                "UTC",
            ]
        )
        == 0
    )
    md = (tmp_path / "report" / "report.md").read_text()
    assert f"| 60 | {missed} |" in md and "MISSED REJECTS" in md


def test_on_failure_stop_drops_ready_within_stall_s_and_stops_inspecting(tmp_path):
    plc = Plc().start()
    out = line_outputs(plc.port)
    safety = LineSafety("stop", ready_s=0.5)
    loop = InspectionLoop(
        EveryThirdNg(),
        FrameSource("synthetic://?frames=75&seed=1&fps=15"),
        Decider(NAMES),
        [EventLog(tmp_path / "events.jsonl", fsync=False), out["modbus"], out["opcua"]],
        status_every=0,
        out_dir=tmp_path,
        safety=safety,
    )
    readings = []  # (time, Ready) as an OPC UA client saw them

    def poll():
        deadline = time.monotonic() + 4.5
        while time.monotonic() < deadline:
            try:
                readings.append(
                    (time.monotonic(), read_by_string_id(out["opcua"].endpoint, ["Ready"])["Ready"])
                )
            except Exception:  # not serving yet
                pass
            time.sleep(0.05)

    timers = [
        after_first_frame(loop, 1.0, plc.stop),
        after_first_frame(loop, 3.0, plc.start),
        after_first_frame(loop, 0, poll),
    ]
    for t in timers:
        t.start()
    try:
        summary = loop.run()
        for t in timers:
            t.join(20)
        block = plc.read(10, 12)
    finally:
        plc.close()
    halted_at = safety.halted_at
    assert halted_at is not None and summary["inspection_halted"].startswith("plc.on_failure=stop")
    assert any(ready for t, ready in readings if t < halted_at)  # ready while inspecting
    dropped = [t for t, ready in readings if t >= halted_at and not ready]
    assert dropped and dropped[0] - halted_at <= 0.5 + 0.2  # within stall_s (+ one refresh and a read)
    assert all(not ready for t, ready in readings if t >= dropped[0])  # and stays down
    assert summary["uninspected_frames"] > 0 and summary["frames"] + summary["uninspected_frames"] == 75
    assert summary["missed_rejects"] >= 1 and exit_status(summary) == EXIT_DEGRADED
    assert block[9] == 2 | 4  # the PLC, once back: alarm and halted, not ready
    assert any(r.startswith("inspection halted") for r in summary["degraded_reasons"])


def test_modbus_heartbeat_stops_when_no_frame_is_inspected():
    plc = Plc().start()
    try:
        out = modbus(plc.port)
        out.open()
        time.sleep(0.6)  # six register writes, no frame
        idle = plc.read(10, 12)
        out.close()
    finally:
        plc.close()
    assert out.writes >= 3 and idle[6] == 0 and idle[9] == 0  # no heartbeat, not ready


def test_a_full_queue_and_a_late_pulse_are_the_same_failure(tmp_path):
    """Both paths agree: a pulse dropped from a full queue and one that found no PLC are missed rejects
    alike."""
    out = modbus(free_port(), queue_size=1)  # nobody listens there
    loop = InspectionLoop(
        EveryThirdNg(),
        FrameSource("synthetic://?frames=30&seed=1"),
        Decider(NAMES),
        [EventLog(tmp_path / "events.jsonl", fsync=False), out],
        status_every=0,
    )
    summary = loop.run()
    by = summary["missed_rejects_by_reason"]
    assert (
        summary["missed_rejects"] == summary["triggers"] == 10
        and by["queue_full"] > 0
        and by["unreachable"] > 0
    )
    assert (
        summary["sinks"]["modbus"]["errors"] == 0
        and summary["degraded"]
        and exit_status(summary) == EXIT_DEGRADED
    )
    assert [r for r in summary["degraded_reasons"] if r.startswith("rejects:")] == [
        f"rejects: 10 NG part(s) not rejected ({by['queue_full']} queue full, {by['unreachable']} "
        "unreachable): they may be in the OK bin; the alarm was raised"
    ]
