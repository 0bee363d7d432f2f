"""The station's OPC UA server read by asyncua's own client on loopback: every node equals the
counters, values move while the loop runs, nodes are read-only, a port in use is one log line, and
anonymous access is refused beyond 127.0.0.1."""

import asyncio
import threading
import time

import pytest
from lineservers import BusyPort, LogLines, free_port
from test_inspect_sinks import NAMES, make_result
from test_station_sinks import EveryThirdNg

from defectdet.errors import ConfigError
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.inspect_cli import DEFAULTS, merge_config
from defectdet.station.loop import InspectionLoop
from defectdet.station.registry import build_sinks
from defectdet.station.sinks import EventLog, read_events

pytest.importorskip("asyncua")


def read_nodes(endpoint: str, names) -> dict:
    """Every named node under Objects/Station, read with asyncua's client."""
    from asyncua import Client

    async def go():
        async with Client(endpoint, timeout=5) as c:
            ns = await c.get_namespace_index("urn:defectdet:station")
            out = {}
            for name in names:
                out[name] = await (
                    await c.nodes.objects.get_child([f"{ns}:Station", f"{ns}:{name}"])
                ).read_value()
            return out

    return asyncio.run(go())


def read_by_string_id(endpoint: str, names) -> dict:
    """Nodes read by their string node ids, ``ns=<idx>;s=Station.<name>``, as SCADA tags are configured."""
    from asyncua import Client

    async def go():
        async with Client(endpoint, timeout=5) as c:
            ns = await c.get_namespace_index("urn:defectdet:station")
            return {name: await c.get_node(f"ns={ns};s=Station.{name}").read_value() for name in names}

    return asyncio.run(go())


def server(**kw):
    from defectdet.station.outputs.opcua import OpcUaServer

    return OpcUaServer(
        f"opc.tcp://127.0.0.1:{free_port()}/defectdet",
        update_s=0.1,
        info={"model": "m.onnx:abc", "source": "synthetic://"},
        **kw,
    )


def test_nodes_equal_the_counters():
    from defectdet.station.outputs.opcua import NODES

    ua = server()
    ua.open()
    try:
        for i, ng in enumerate([False, True, True, False, True, False, False]):
            ua.emit(make_result(i, ng=ng, trigger=ng))
        time.sleep(0.5)
        got = read_nodes(ua.endpoint, [n for n, _, _ in NODES])
        time.sleep(0.4)  # four more refreshes without a frame inspected
        later = read_by_string_id(ua.endpoint, ["Heartbeat", "Frames", "Ready"])
    finally:
        ua.close()
    assert later == {
        "Heartbeat": got["Heartbeat"],
        "Frames": 7,
        "Ready": False,
    }  # no frame, no beat; no loop: not ready
    assert (got["Frames"], got["OK"], got["NG"], got["NGParts"]) == (7, 4, 3, 3)
    assert (
        got["Yield"] == pytest.approx(4 / 7, abs=1e-4) and got["LastResult"] == "OK" and got["LastFrame"] == 6
    )
    assert (got["LastClass"], got["LastNGClass"], got["LastNGFrame"], got["LastNGConfidence"]) == (
        "",
        "spot",
        4,
        pytest.approx(0.9),
    )
    assert got["ModelId"] == "m.onnx:abc" and got["Source"] == "synthetic://" and got["Healthy"] is True
    assert (
        1 <= got["Heartbeat"] <= 2 and got["LatencyP50Ms"] == pytest.approx(12.5) and got["SinkErrors"] == 0
    )


def test_values_move_while_the_loop_runs_and_clients_cannot_write(tmp_path):
    from asyncua import Client, ua

    opc = server()
    loop = InspectionLoop(
        EveryThirdNg(),
        FrameSource("synthetic://?frames=160&seed=1&fps=40"),
        Decider(NAMES),
        [EventLog(tmp_path / "events.jsonl", fsync=False), opc],
        status_every=0,
    )
    opc.status, seen, refused = loop.summary, [], []

    def client():
        deadline = time.monotonic() + 20
        while not opc._running and time.monotonic() < deadline:  # the server is up once the loop opened it
            time.sleep(0.05)
        time.sleep(0.5)
        seen.append(read_nodes(opc.endpoint, ["Frames", "LastNGClass", "Fps"]))
        time.sleep(0.6)
        seen.append(read_nodes(opc.endpoint, ["Frames", "LastNGClass", "Fps"]))

        async def write():
            async with Client(opc.endpoint, timeout=5) as c:
                ns = await c.get_namespace_index("urn:defectdet:station")
                node = await c.nodes.objects.get_child([f"{ns}:Station", f"{ns}:Frames"])
                try:
                    await node.write_value(ua.Variant(0, ua.VariantType.UInt64))
                except Exception as e:
                    refused.append(type(e).__name__)

        asyncio.run(write())

    t = threading.Thread(target=client)
    t.start()
    summary = loop.run()
    t.join(20)
    assert 0 < seen[0]["Frames"] < seen[1]["Frames"] <= summary["frames"] and seen[1]["Fps"] > 10
    assert seen[1]["LastNGClass"] == NAMES[0] and refused and "Bad" in refused[0]
    assert len(list(read_events(tmp_path / "events.jsonl"))) == summary["ng"]


def test_port_in_use_is_one_line_and_the_loop_goes_on(tmp_path):
    from defectdet.station.outputs.opcua import OpcUaServer

    busy = BusyPort()
    try:
        with LogLines() as log:
            opc = OpcUaServer(f"opc.tcp://127.0.0.1:{busy.port}/defectdet")
            loop = InspectionLoop(
                EveryThirdNg(),
                FrameSource("synthetic://?frames=30&seed=1"),
                Decider(NAMES),
                [EventLog(tmp_path / "events.jsonl", fsync=False), opc],
                status_every=0,
            )
            summary = loop.run()
    finally:
        busy.close()
    lines = log.having("opcua")
    assert len(lines) == 1 and "is the port in use?" in lines[0] and str(busy.port) in lines[0]
    assert summary["frames"] == 30 and len(list(read_events(tmp_path / "events.jsonl"))) == 10


@pytest.mark.parametrize(
    "settings, message",
    [
        (
            {"opcua.endpoint": "opc.tcp://0.0.0.0:4840/x"},
            r"^opcua.endpoint on '0.0.0.0' \(beyond 127.0.0.1\) refuses anonymous access: set "
            r"opcua.security_policy",
        ),
        (
            {"opcua.security_policy": "Basic256Sha256_SignAndEncrypt"},
            r"^opcua.security_policy=Basic256Sha256_SignAndEncrypt: set opcua.certificate and "
            r"opcua.private_key",
        ),
        (
            {"opcua.security_policy": "tight"},
            r"^opcua.security_policy='tight': expected one of none, Basic256Sha256_Sign",
        ),
        (
            {"opcua.endpoint": "http://127.0.0.1:4840"},
            r"^opcua.endpoint='http://127.0.0.1:4840': expected opc.tcp://host:port/path",
        ),
    ],
)
def test_security_settings_are_one_line_config_errors(tmp_path, settings, message):
    cfg = merge_config(DEFAULTS, {"opcua.enabled": True, **settings}, "t")
    with pytest.raises(ConfigError, match=message):
        build_sinks(cfg, tmp_path)
