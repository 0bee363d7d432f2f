"""``defectdet report`` over a run folder with rotated event logs and a tally: yield, NG per class
and per hour, --since/--until, the top snapshots copied, charts, and its one-line errors."""

import sys
import time
from datetime import datetime, timezone

import numpy as np
import pytest
from test_inspect_sinks import NAMES

from defectdet.cli import main
from defectdet.runtime.detections import Detections
from defectdet.station.decisions import Decision
from defectdet.station.result import FrameResult
from defectdet.station.sinks import EventLog, rotated_files
from defectdet.station.sources import Frame
from defectdet.station.tally import Tally, read_tally

T0 = datetime(2024, 5, 1, 6, 0, tzinfo=timezone.utc).timestamp()  # a shift starting 06:00 UTC


def result(i, t, ng, cls=0, conf=0.9):
    d = Detections.from_arrays(np.array([[5, 6, 20, 30]], np.float32), [conf], [cls], NAMES) if ng else Detections.empty()
    frame = Frame(np.zeros((48, 64, 3), np.uint8), i, t, time.perf_counter())
    return FrameResult(frame, d, Decision(ng, ng, ng, d), 5.0, "synthetic://", "m.onnx:abc", ng)


@pytest.fixture()
def run(tmp_path):
    """3 hours, one frame a minute: every 10th NG (spot on every 30th, scratch otherwise); small event files rotate."""
    run = tmp_path / "runs" / "line1"
    (run / "snapshots").mkdir(parents=True)
    log, tally = EventLog(run / "events.jsonl", max_bytes=2000, fsync=False), Tally(run / "tally.jsonl", every_s=60)
    for i in range(180):
        ng = i % 10 == 0
        r = result(i, T0 + 60 * i + 5, ng, cls=1 if i % 30 == 0 else 0, conf=0.5 + i / 400)
        if ng:
            r.snapshots = [f"s{i:03d}_annotated.jpg"]
            (run / "snapshots" / r.snapshots[0]).write_bytes(b"\xff\xd8 jpeg")
        log.emit(r)
        tally.emit(r)
    log.close()
    tally.close()
    assert rotated_files(run / "events.jsonl") and len(list(read_tally(run / "tally.jsonl"))) == 180
    return run


def test_report_counts_yield_classes_hours_and_top_snapshots(run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--events", str(run.parent), "--out", str(out), "--top", "3"]) == 0
    md = (out / "report.md").read_text()
    assert "| 180 | 162 | 18 | 90.00 % |" in md
    assert "| scratch | 12 |" in md and "| spot | 6 |" in md
    assert "| 2024-05-01T06:00 | 60 | 6 | 90.00 % | 6 |" in md and "| 2024-05-01T08:00 | 60 | 6 | 90.00 % | 6 |" in md
    for i in (170, 160, 150):  # the most confident NG frames, their snapshots copied beside the report
        assert f"](snapshots/s{i:03d}_annotated.jpg)" in md and (out / "snapshots" / f"s{i:03d}_annotated.jpg").is_file()
    assert (out / "per_hour.png").read_bytes()[:4] == b"\x89PNG" and (out / "per_class.png").stat().st_size > 1000
    assert "162" not in capsys.readouterr().err


def test_since_until_keep_one_hour(run, tmp_path):
    out = tmp_path / "r"
    assert main(["report", "--events", str(run), "--since", "2024-05-01T07:00", "--until", "2024-05-01T10:00+02:00",
                 "--out", str(out), "--no-charts"]) == 0
    md = (out / "report.md").read_text()
    assert "| 60 | 54 | 6 | 90.00 % |" in md and "06:00" not in md.split("## Top")[0].split("Per hour")[1]
    assert not (out / "per_hour.png").exists()


def test_without_a_tally_the_yield_is_unknown(run, tmp_path):
    (run / "tally.jsonl").unlink()
    out = tmp_path / "r"
    assert main(["report", "--events", str(run), "--out", str(out), "--no-charts"]) == 0
    assert "| - | - | 18 | unknown (no tally.jsonl) |" in (out / "report.md").read_text()


def test_errors_are_one_line(run, tmp_path, capsys, monkeypatch):
    assert main(["report", "--events", str(run), "--since", "yesterday", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("defectdet report: error: --since='yesterday': expected an ISO 8601 time") and len(err.splitlines()) == 1
    assert main(["report", "--events", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "no such folder" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # matplotlib missing
    assert main(["report", "--events", str(run), "--out", str(tmp_path / "r")]) == 2
    assert "charts need matplotlib: pip install matplotlib" in capsys.readouterr().err
