"""``defectdet report`` over a run folder with rotated event logs and a tally: rejected parts, yield,
NG parts per class and per hour, --since/--until (also off the tally's minute boundaries), --tz, one
snapshot per part, the self-contained HTML report, runs kept apart, charts, and its one-line errors."""

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
    d = (
        Detections.from_arrays(np.array([[5, 6, 20, 30]], np.float32), [conf], [cls], NAMES)
        if ng
        else Detections.empty()
    )
    frame = Frame(np.zeros((48, 64, 3), np.uint8), i, t, time.perf_counter())
    return FrameResult(frame, d, Decision(ng, ng, ng, d), 5.0, "synthetic://", "m.onnx:abc", ng)


@pytest.fixture()
def run(tmp_path):
    """3 hours, a frame a minute: every 10th NG (spot every 30th, scratch otherwise); event files rotate."""
    run = tmp_path / "runs" / "line1"
    (run / "snapshots").mkdir(parents=True)
    log, tally = (
        EventLog(run / "events.jsonl", max_bytes=2000, fsync=False),
        Tally(run / "tally.jsonl", every_s=60),
    )
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
    assert main(["report", "--events", str(run.parent), "--out", str(out), "--top", "3", "--tz", "UTC"]) == 0
    md = (out / "report.md").read_text()
    assert (
        "| 18 | 0 | - | unknown (the station counts rejected parts, not every part" in md
    )  # 18 parts, one NG frame each
    assert "| 180 | 18 | 90.00 % |" in md and "Missed rejects: 0" in md and "Times in UTC (UTC+00:00)" in md
    assert "| scratch | 12 |" in md and "| spot | 6 |" in md
    assert (
        "| 2024-05-01 06:00 | 60 | - | 6 | 0 | 6 | 90.00 % |" in md
        and "| 2024-05-01 08:00 | 60 | - | 6 | 0 | 6 | 90.00 % |" in md
    )
    for i in (170, 160, 150):  # the most confident NG parts, their snapshots copied beside the report
        assert (
            f"](snapshots/s{i:03d}_annotated.jpg)" in md
            and (out / "snapshots" / f"s{i:03d}_annotated.jpg").is_file()
        )
    assert (out / "per_hour.png").read_bytes()[:4] == b"\x89PNG" and (
        out / "per_class.png"
    ).stat().st_size > 1000
    assert "162" not in capsys.readouterr().err


def test_since_until_keep_one_hour(run, tmp_path):
    out = tmp_path / "r"
    assert (
        main(
            [
                "report",
                "--events",
                str(run),
                "--since",
                "2024-05-01T07:00",
                "--until",
                "2024-05-01T10:00+02:00",
                "--out",
                str(out),
                "--no-charts",
                "--tz",
                "UTC",
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    assert "| 6 | 0 | - |" in md and "| 60 | 6 | 90.00 % |" in md
    assert "06:00" not in md.split("## Runs")[0].split("Per hour")[1]
    assert not (out / "per_hour.png").exists()


def test_a_window_off_the_tally_minutes_still_has_a_yield(run, tmp_path):
    out = tmp_path / "r"  # 07:00:30 to 07:02:30: cuts three one-minute tally intervals
    assert (
        main(
            [
                "report",
                "--events",
                str(run),
                "--since",
                "2024-05-01T07:00:30",
                "--until",
                "2024-05-01T07:02:30",
                "--out",
                str(out),
                "--no-charts",
                "--tz",
                "UTC",
            ]
        )
        == 0
    )
    md = (out / "report.md").read_text()
    assert (
        "no tally" not in md and "| 3 | 0 | 66.67 % |" in md
    )  # the intervals of frames 60-62; NG frame 60 at 07:00:05
    assert "count whole tally intervals that overlap the window" in md


def test_hours_in_the_zone_asked_for(run, tmp_path):
    out = tmp_path / "r"
    assert main(["report", "--events", str(run), "--out", str(out), "--no-charts", "--tz", "+02:00"]) == 0
    md = (out / "report.md").read_text()
    assert "| 2024-05-01 08:00 | 60 | - | 6 |" in md and "2024-05-01 06:00" not in md and "(UTC+02:00)" in md


def test_without_a_tally_the_yield_is_unknown(run, tmp_path):
    (run / "tally.jsonl").unlink()
    out = tmp_path / "r"
    assert main(["report", "--events", str(run), "--out", str(out), "--no-charts"]) == 0
    assert (
        "| 18 | 0 | - | unknown (no tally) | - | 18 | unknown (no tally.jsonl) |"
        in (out / "report.md").read_text()
    )


def test_errors_are_one_line(run, tmp_path, capsys, monkeypatch):
    assert main(["report", "--events", str(run), "--since", "yesterday", "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("defectdet report: error: --since='yesterday': expected an ISO 8601 time")
        and len(err.splitlines()) == 1
    )
    assert main(["report", "--events", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["report", "--events", str(run), "--tz", "Mars/Olympus", "--out", str(tmp_path / "r")]) == 2
    assert "--tz='Mars/Olympus': expected local, UTC, an IANA zone" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # matplotlib missing
    assert main(["report", "--events", str(run), "--out", str(tmp_path / "r")]) == 2
    assert "charts need matplotlib: pip install matplotlib" in capsys.readouterr().err


class ThreeNgFramesPerPart:
    """A detector seeing each defective part on three frames in a row, then an OK frame: NG frames = 3 x
    NG parts."""

    def __init__(self):
        self.calls = 0

    def __call__(self, img):
        self.calls += 1
        if self.calls % 4:
            conf = 0.5 + (self.calls % 97) / 200
            return Detections.from_arrays(
                np.array([[4, 4, 20, 20]], np.float32), [conf], [self.calls % 2], NAMES
            )
        return Detections.empty()


def test_report_counts_parts_not_frames_and_its_html_embeds_every_picture(tmp_path):
    import base64
    from html.parser import HTMLParser

    import cv2

    from defectdet.station.capture import FrameSource
    from defectdet.station.decisions import Decider
    from defectdet.station.loop import InspectionLoop
    from defectdet.station.snapshots import Snapshots

    images = tmp_path / "images"  # an image folder: frames that do not number their parts
    images.mkdir()
    for i in range(360):
        cv2.imwrite(str(images / f"{i:04d}.png"), np.full((32, 48, 3), i % 256, np.uint8))
    run = tmp_path / "line1"
    sinks = [
        Snapshots(run / "snapshots", raw=False, block=True),
        EventLog(run / "events.jsonl", fsync=False),
        Tally(run / "tally.jsonl"),
    ]
    summary = InspectionLoop(
        ThreeNgFramesPerPart(), FrameSource(str(images)), Decider(NAMES), sinks, status_every=0, out_dir=run
    ).run()
    assert summary["rejected_parts"] == 90 and summary["ng"] == 270
    out = tmp_path / "report"
    assert main(["report", "--events", str(run), "--out", str(out), "--tz", "UTC", "--top", "5"]) == 0
    md = (out / "report.md").read_text()
    assert "| 90 | 0 | - |" in md and "| 360 | 270 | 25.00 % |" in md  # 90 rejected parts; 270 NG frames
    top = md.split("## Top NG parts")[1]
    parts = [line.split(" | ")[2] for line in top.splitlines() if line.startswith("| 20")]
    assert len(parts) == 5 == len(set(parts)) and all(
        line.split(" | ")[3] == "3" for line in top.splitlines() if line.startswith("| 20")
    )  # one row per part, its 3 frames

    class Images(HTMLParser):
        srcs, links = [], []

        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if tag == "img":
                self.srcs.append(a["src"])
            if "href" in a or (tag in ("script", "link")):
                self.links.append(tag)

    page = Images()
    page.feed((out / "report.html").read_text())
    snaps = [s for s in page.srcs if s.startswith("data:image/jpeg;base64,")]
    charts = [s for s in page.srcs if s.startswith("data:image/png;base64,")]
    assert (
        len(snaps) == 5 and len(charts) == 2 and len(page.srcs) == 7 and not page.links
    )  # nothing outside the file
    assert all(base64.b64decode(s.split(",", 1)[1])[:2] == b"\xff\xd8" for s in snaps)
    assert "<td>90</td>" in (out / "report.html").read_text()
