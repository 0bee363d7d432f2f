"""``defectdet inspect`` end to end with the real Detector on an ONNX model (ONNX Runtime, CPU): a video
file, an image folder and ``synthetic://``; the config file and its errors; SIGTERM during a run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import benchscripts
import cv2
import pytest
import yaml

from defectdet.cli import main
from defectdet.config import load_yaml
from defectdet.runtime import Detector
from defectdet.station.decisions import Decider
from defectdet.station.inspect_cli import DEFAULTS, merge_config
from defectdet.station.sinks import read_events

ROOT = Path(__file__).resolve().parents[1]
CONF = "conf=0.5"  # the stand-in model gives a mix of OK and NG conveyor frames at this threshold


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A yolo11n stand-in (random weights calibrated to give boxes) exported to ONNX at 128, with sidecar."""
    return benchscripts.stand_in_model(tmp_path_factory.mktemp("model"), "conveyor128")


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    from defectdet.data.synthetic import make_video

    return make_video(
        tmp_path_factory.mktemp("video") / "parts.mp4", frames=30, width=320, height=240, defect_rate=0.5
    )


def _frames(path):
    cap, out = cv2.VideoCapture(str(path)), []
    while True:
        ok, img = cap.read()
        if not ok:
            return out
        out.append(img)


def test_config_file_lists_every_key_with_its_default():
    doc = load_yaml(ROOT / "configs" / "inspect.yaml")
    assert merge_config(DEFAULTS, doc, "inspect.yaml") == DEFAULTS  # no unknown key, same values

    def keys(d, prefix=""):
        return {
            k
            for key, v in d.items()
            for k in (keys(v, f"{prefix}{key}.") if isinstance(v, dict) else {prefix + key})
        }

    assert keys(doc) == keys(DEFAULTS)


def test_unknown_keys_and_missing_source_are_one_line_errors(model, capsys):
    assert main(["inspect", "--model", str(model), "--source", "synthetic://", "snapshot.quota_mb=1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown key 'snapshot'" in err and "snapshots" in err and len(err.splitlines()) == 1
    assert main(["inspect", "--model", str(model), "--source", "synthetic://", "signals.gpio.pinn=3"]) == 2
    assert "unknown key 'signals.gpio.pinn'" in capsys.readouterr().err
    assert main(["inspect", "--model", str(model)]) == 2
    assert "--source is required" in capsys.readouterr().err


def test_video_file_every_frame_events_match_the_detector(model, video, tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "inspect",
            "--model",
            str(model),
            "--source",
            str(video),
            "--out",
            str(out),
            CONF,
            "record.enabled=true",
            "status_every=0",
        ]
    )
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(capsys.readouterr().out)  # printed too
    frames = _frames(video)
    with Detector(model, conf=0.5) as det:  # the same frames straight through the Detector
        decider = Decider(det.names, thresholds=det.thresholds)
        expected_ng = [i for i, f in enumerate(frames) if decider(det(f), f.shape).ng]
    assert summary["frames"] == len(frames) == 30 and summary["stop_reason"] == "end of source"
    assert 0 < len(expected_ng) < 30
    events = list(read_events(out / "events.jsonl"))
    assert (
        [e["frame"] for e in events] == expected_ng == [e["frame"] for e in events if e["decision"] == "NG"]
    )
    assert summary["ng"] == summary["events_written"] == len(events)
    assert all(
        e["model"].startswith("model.onnx:") and e["source"] == str(video) and e["detections"] for e in events
    )
    assert len(list((out / "snapshots").iterdir())) == 2 * len(events)
    assert len(_frames(out / "annotated.mp4")) == 30
    assert summary["latency_ms"]["p50"] > 0 and summary["fps"] > 0


def test_image_folder(model, video, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(_frames(video)[:8]):
        cv2.imwrite(str(folder / f"part_{i:03d}.png"), f)
    out = tmp_path / "run"
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                str(folder),
                "--out",
                str(out),
                CONF,
                "status_every=0",
            ]
        )
        == 0
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames"] == 8
    events = list(read_events(out / "events.jsonl"))
    assert len(events) == summary["ng"] and all(Path(e["info"]["path"]).parent == folder for e in events)


def test_synthetic_with_max_frames_and_a_config_file(model, tmp_path):
    cfg = tmp_path / "line.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "conf": 0.5,
                "status_every": 0,
                "snapshots": {"enabled": False},
                "decision": {"roi": [0.25, 0.0, 0.75, 1.0]},
                "signals": {"stdout": {"enabled": True}},
            }
        )
    )
    out = tmp_path / "run"
    rc = main(
        [
            "inspect",
            "--model",
            str(model),
            "--source",
            "synthetic://?width=320&height=240",
            "--out",
            str(out),
            "--config",
            str(cfg),
            "--max-frames",
            "24",
        ]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert rc == 0 and summary["frames"] == 24 and summary["stop_reason"] == "max_frames"
    assert not (out / "snapshots").exists() and summary["sinks"]["stdout"]["sent"] == summary["triggers"]
    for e in read_events(out / "events.jsonl"):  # the ROI: only boxes centred in the middle half count
        assert all(80 <= (d["xyxy"][0] + d["xyxy"][2]) / 2 <= 240 for d in e["detections"])


def test_an_unwritable_out_exits_3_saying_why_on_stderr(model, tmp_path, capsys):
    """--out under a file (what a read-only mount looks like, also to root): events, snapshots and
    summary.json all fail; the run still decides every frame, then exits 3 with the reasons on stderr and in
    the printed summary."""
    (tmp_path / "blocker").write_text("a file, not a folder")
    out = tmp_path / "blocker" / "out"
    rc = main(
        [
            "inspect",
            "--model",
            str(model),
            "--source",
            "synthetic://?width=320&height=240&defect_rate=1",
            "--out",
            str(out),
            "--max-frames",
            "12",
            CONF,
            "status_every=0",
        ]
    )
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert rc == 3 and summary["frames"] == 12 and summary["degraded"] is True
    line = next(x for x in captured.err.splitlines() if x.startswith("defectdet inspect: run degraded: "))
    assert f"events: {summary['ng']} of {summary['ng']} NG event(s) not written" in line and summary["ng"] > 0
    # the last NG events wait for their snapshots (an event names only files on disk): written, and
    # failing, at close
    assert any(f"events: {what} failed: NotADirectoryError" in line for what in ("emit", "close"))
    assert "summary.json not written" in line
    assert summary["degraded_reasons"][-1].startswith("summary.json not written: NotADirectoryError")


def test_sigterm_ends_the_run_within_2_s_with_valid_jsonl(model, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "ORT_DISABLE_TELEMETRY": "1"}
    cmd = [
        sys.executable,
        "-m",
        "defectdet.cli",
        "inspect",
        "--model",
        str(model),
        "--out",
        str(out),
        CONF,
        "--source",
        "synthetic://?width=320&height=240&fps=30&live=1",
        "status_every=0.5",
        "events.fsync=true",
    ]
    with open(tmp_path / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, env=env, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                if (out / "events.jsonl").exists() and (out / "events.jsonl").stat().st_size > 2000:
                    break
                time.sleep(0.05)
            assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
            t = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            stdout, _ = proc.communicate(timeout=10)
            took = time.monotonic() - t
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, (tmp_path / "stderr.txt").read_text()
    assert took < 2.0, f"exit took {took:.2f} s"
    text = (out / "events.jsonl").read_text()
    assert text.endswith("\n")
    events = [json.loads(line) for line in text.splitlines()]  # valid JSON to the last line
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(stdout)
    assert (
        summary["stop_reason"] == "SIGTERM" and summary["events_written"] == len(events) == summary["ng"] > 0
    )
    assert "SIGTERM: finishing the current frame" in (tmp_path / "stderr.txt").read_text()


def test_snapshots_wait_for_the_disk_on_files_and_drop_on_cameras(tmp_path):
    from defectdet.station.registry import build_sinks
    from defectdet.station.sources import parse_source

    cfg = merge_config(DEFAULTS, {"snapshots": {"queue": 3}}, "test")
    (tmp_path / "parts.mp4").write_bytes(b"")
    (tmp_path / "images").mkdir()
    files = (str(tmp_path / "parts.mp4"), True), (str(tmp_path / "images"), True)
    for uri, block in (*files, ("0", False), ("rtsp://cam/1", False), ("synthetic://?live=1", False)):
        snaps = build_sinks(cfg, tmp_path, live=parse_source(uri).live)[0]
        assert (snaps.name, snaps.queue_size, snaps.block) == ("snapshots", 3, block), uri


def _run_events(model, source, out, *overrides):
    assert (
        main(
            [
                "inspect",
                "--model",
                str(model),
                "--source",
                str(source),
                "--out",
                str(out),
                CONF,
                "status_every=0",
                *overrides,
            ]
        )
        == 0
    )
    events = [
        {
            k: v for k, v in e.items() if k not in ("ts", "latency_ms", "run")
        }  # time, timing, run id differ per run
        for e in read_events(out / "events.jsonl")
    ]
    return events, json.loads((out / "summary.json").read_text())


def test_pipelined_and_sequential_loops_give_identical_events_on_a_file_and_a_folder(model, video, tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, f in enumerate(_frames(video)[:12]):
        cv2.imwrite(str(folder / f"part_{i:03d}.png"), f)
    for source in (video, folder):
        seq, s_sum = _run_events(
            model, source, tmp_path / f"seq-{source.name}", "pipeline=off", "snapshots.enabled=false"
        )
        pipe, p_sum = _run_events(model, source, tmp_path / f"pipe-{source.name}", "snapshots.enabled=false")
        assert seq and pipe == seq  # content and order
        assert (s_sum["pipeline"], p_sum["pipeline"]) == (False, True)
        for key in ("frames", "ok", "ng", "triggers", "events_written", "dropped_frames", "detector_errors"):
            assert p_sum[key] == s_sum[key], key
        assert p_sum["frames"] == (30 if source == video else 12)
        for summary in (s_sum, p_sum):
            assert set(summary["stages_ms"]) == {"pre", "infer", "post", "decide", "sinks"}


def test_pipeline_setting_must_be_on_or_off(model, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["inspect", "--model", str(model), "--source", "synthetic://", "pipeline=sometimes"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pipeline='sometimes': expected on (true) or off (false)" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "runs").exists()  # refused before anything is written
