"""The station on the line, end to end: ``defectdet inspect`` on synthetic:// with the stand-in model,
Modbus to pymodbus' server, the OPC UA server read by asyncua's client, /metrics parsed by
prometheus_client, and the operator page's state, all on loopback: one reject pulse per NG part,
the PLC's counters equal summary.json, and every NG frame in the events."""

import json

import pytest
from lineservers import Inspect, Plc, free_port, get
from test_station_opcua import read_nodes
from test_station_page import model  # noqa: F401 (the stand-in model fixture)
from test_station_plc import registers, scrape

from defectdet.station.sinks import read_events

pytest.importorskip("pymodbus")
pytest.importorskip("asyncua")
pytest.importorskip("aiohttp")
pytest.importorskip("prometheus_client")


def test_inspect_with_modbus_opcua_metrics_and_the_page(model, tmp_path):  # noqa: F811
    plc = Plc().start()
    page, metrics, ua = free_port(), free_port(), f"opc.tcp://127.0.0.1:{free_port()}/defectdet"
    out = tmp_path / "run"
    args = [
        "--model",
        str(model),
        "--source",
        "synthetic://?width=320&height=240&fps=15&frames=90",
        "--out",
        str(out),
        "--serve",
        f"127.0.0.1:{page}",
        "conf=0.5",
        "status_every=0",
        "signals.modbus.enabled=true",
        f"signals.modbus.port={plc.port}",
        "signals.modbus.pulse_ms=20",
        "signals.modbus.alarm_ms=20",
        "signals.modbus.update_s=0.2",
        "opcua.enabled=true",
        f"opcua.endpoint={ua}",
        "metrics.enabled=true",
        f"metrics.bind=127.0.0.1:{metrics}",
    ]
    run = Inspect(args, tmp_path)
    try:
        run.wait_for(f"http://127.0.0.1:{page}/api/state")
        state = json.loads(get(f"http://127.0.0.1:{page}/api/state")[1])
        nodes = read_nodes(ua, ["Frames", "ModelId", "Healthy"])
        m = scrape(f"http://127.0.0.1:{metrics}/metrics")
        summary = run.stop(timeout=60, terminate=False)
        block = plc.read(0, 9)
    finally:
        if run.proc.poll() is None:
            run.proc.kill()
        plc.close()
    assert summary["frames"] == 90 and summary["stop_reason"] == "end of source", run.stderr()
    assert (
        summary["triggers"] > 0
        and plc.rising_edges(0) == summary["triggers"] == summary["sinks"]["modbus"]["pulses"]
    )
    assert block[:6] == registers(summary)
    assert len(list(read_events(out / "events.jsonl"))) == summary["ng"] > 0
    assert nodes["ModelId"] == summary["model"] and nodes["Frames"] <= summary["frames"]
    model_label = f"model={summary['model']}"
    assert f"defectdet_frames_total|{model_label}" in m and state["model"] == summary["model"]
    assert all(summary["sinks"][k]["errors"] == 0 for k in ("modbus", "opcua", "metrics", "page", "tally"))
    assert (out / "tally.jsonl").is_file()
