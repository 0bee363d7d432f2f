"""Run identity: ``defectdet inspect`` killed with SIGKILL, then run again into the same folder — the
report keeps the two runs apart and no event names a snapshot that is not on disk; a refused start
leaves no folder behind; summary.json's page URL opens the page."""

import json
import time

import pytest
from lineservers import Inspect, free_port
from test_station_page import model  # noqa: F401 (the stand-in model fixture)

from defectdet.cli import main
from defectdet.station.sinks import read_events

SOURCE = "synthetic://?width=320&height=240&fps=30&live=1"


def test_sigkill_then_a_rerun_into_one_folder_stay_two_runs(model, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "line1"
    run = Inspect(
        [
            "--model",
            str(model),
            "--source",
            SOURCE,
            "--out",
            str(out),
            "conf=0.5",
            "status_every=0",
            "snapshots.queue=64",
        ],
        tmp_path,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "events.jsonl").exists() or (out / "events.jsonl").read_bytes().count(b"\n") < 6:
            assert run.proc.poll() is None and time.monotonic() < deadline, run.stderr()
            time.sleep(0.05)
        run.proc.kill()  # SIGKILL: no summary, snapshots in flight
        run.proc.wait(10)
    finally:
        run.err.close()
    killed = list(read_events(out / "events.jsonl", torn=[]))  # the last line may be torn by the kill
    assert len(killed) >= 6 and not (out / "summary.json").exists()
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                "synthetic://?width=320&height=240&frames=40",
                "--out",
                str(out),
                "conf=0.5",
                "status_every=0",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    torn = []
    events = list(read_events(out / "events.jsonl", torn=torn))
    runs = {e["run"] for e in events}
    assert len(runs) == 2 and summary["run_id"] in runs and killed[0]["run"] != summary["run_id"]
    for e in events:  # an event names only snapshots that exist
        assert all((out / "snapshots" / name).is_file() for name in e.get("snapshots", [])), e
        assert all(e["run"] in name for name in e.get("snapshots", []))
    capsys.readouterr()
    assert (
        main(
            ["report", "--events", str(out), "--out", str(tmp_path / "report"), "--no-charts", "--tz", "UTC"]
        )
        == 0
    )
    md = (tmp_path / "report" / "report.md").read_text()
    rows = [line for line in md.split("## Runs")[1].split("##")[0].splitlines() if line.startswith("| 2")]
    assert len(rows) == 2 and {r.split(" | ")[0][2:] for r in rows} == runs
    per_run = {r.split(" | ")[0][2:]: int(r.split(" | ")[6].rstrip(" |")) for r in rows}  # NG frames per run
    assert per_run[summary["run_id"]] == summary["ng"] and sum(per_run.values()) == len(events)
    assert len(torn) <= 1 and (not torn or "torn event line(s) skipped" in md)


def test_a_refused_start_leaves_no_folder_and_the_summary_url_opens(model, tmp_path, capsys):  # noqa: F811
    out = tmp_path / "never"
    assert (
        main(["inspect", "--model", str(model), "--source", SOURCE, "--out", str(out), "plc.on_failure=halt"])
        == 2
    )
    assert "plc.on_failure='halt': expected alarm" in capsys.readouterr().err and not out.exists()
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                SOURCE,
                "--out",
                str(out),
                "metrics.enabled=true",
                "metrics.bind=0.0.0.0:9108",
            ]
        )
        == 2
    )  # beyond loopback without a token
    assert "needs an access token" in capsys.readouterr().err and not out.exists()
    port = free_port()
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                "synthetic://?frames=3",
                "--out",
                str(out),
                "--serve",
                f"127.0.0.1:{port}",
            ]
        )
        == 0
    )
    assert (
        json.loads((out / "summary.json").read_text())["sinks"]["page"]["url"] == f"http://127.0.0.1:{port}/"
    )


def test_a_wildcard_bind_names_this_machine_in_its_url():
    import socket

    pytest.importorskip("aiohttp")
    from defectdet.station.outputs.web import HttpServer

    assert HttpServer("page", "0.0.0.0", 8080, {}, token="t").url == f"http://{socket.gethostname()}:8080"
