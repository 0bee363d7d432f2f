"""The station tells its supervisor when it is failing: degraded runs (events not written, a full disk,
a file that ended early, an unwritable output) exit 3 with the reasons in summary.json; on a filling disk
snapshots are dropped first and no NG event is lost; events.jsonl exists from the start; a live source
that does not open at start-up is retried; every numeric inspect key is range-checked."""

import collections
import errno
import logging
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_inspect_loop import NAMES, FakeDetector, Recorder, ScriptedReader, file_source, is_defective

from defectdet.cli import main
from defectdet.errors import ConfigError
from defectdet.station import snapshots as snapshots_module
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.health import EXIT_DEGRADED, EXIT_OK, EXIT_SOURCE_FAILED, degraded_reasons, exit_status
from defectdet.station.inspect_cli import DEFAULTS
from defectdet.station.loop import InspectionLoop
from defectdet.station.settings import DETECTOR_KEYS, RANGES, check_numbers
from defectdet.station.sink import BaseSink
from defectdet.station.sinks import EventLog, read_events
from defectdet.station.snapshots import Snapshots
from defectdet.station.sources import SourceError, parse_source

MB = 2**20


# ----------------------------------------------------------------------------------- exit status
def test_exit_status_says_ok_source_failed_or_degraded():
    clean = {"ng": 3, "events_written": 3, "sinks": {"events": {"written": 3, "errors": 0}}}
    assert degraded_reasons(clean) == [] and exit_status({**clean, "degraded": False}) == EXIT_OK
    lost = {
        "ng": 3,
        "events_written": 1,
        "sinks": {"events": {"errors": 2, "last_error": "events: emit failed: ENOSPC"}},
    }
    assert degraded_reasons(lost) == [
        "events: 2 of 3 NG event(s) not written to the event log",
        "events: 2 failure(s), the last: events: emit failed: ENOSPC",
    ]
    assert exit_status({"degraded": True}) == EXIT_DEGRADED
    assert exit_status({"degraded": True, "source_error": "cam: gone"}) == EXIT_SOURCE_FAILED


def test_help_states_the_exit_statuses(capsys):
    with pytest.raises(SystemExit):
        main(["inspect", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "exit status: 0 ok: the run ended" in text and "1 the source failed for good" in text
    assert "2 bad input: a config key or value" in text and "3 degraded: the run ended but" in text


# ----------------------------------------------------------------------------------- events.jsonl
class FileProbe(BaseSink):
    """Placed before the event log: records whether events.jsonl existed when the first frame arrived."""

    name = "probe"

    def __init__(self, path):
        self.path, self.seen = path, []

    def emit(self, result):
        self.seen.append(self.path.exists())


def test_events_file_exists_from_the_first_frame_even_without_ng(tmp_path):
    path = tmp_path / "out/events.jsonl"
    probe = FileProbe(path)
    loop = InspectionLoop(
        FakeDetector(), file_source(3), Decider(NAMES), [probe, EventLog(path)], out_dir=tmp_path
    )
    summary = loop.run()  # frames 0..2 are all OK
    assert summary["ng"] == 0 and probe.seen == [True, True, True]
    assert path.read_bytes() == b"" and summary["degraded"] is False and exit_status(summary) == EXIT_OK


# ----------------------------------------------------------------------------------- a filling disk
class NoisyReader(ScriptedReader):
    """ScriptedReader's numbered frames, enlarged with noise, so snapshots are large (PNG ~ raw size)."""

    def read(self):
        img, info = super().read()
        if img is None:
            return img, info
        big = np.random.default_rng(self.counter[0]).integers(0, 256, (200, 300, 3), np.uint8)  # (H, W, 3)
        big[:2, :2] = img[:2, :2]  # the defect marker and the frame number
        return big, info


@pytest.fixture
def tmpfs(tmp_path):
    """A 3 MB filesystem (mount -t tmpfs, root only), unmounted afterwards."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    out = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if out.returncode:
        pytest.skip(
            f"cannot mount a small tmpfs here ({out.stderr.strip() or 'not root'}); the simulated disk "
            "covers it"
        )
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def simulated_disk(tmp_path, monkeypatch):
    """A 3 MB disk in accounting only: snapshot files and event lines count against it, ENOSPC past it."""
    used, cap = [0], 3 * MB
    real_write, real_atomic = snapshots_module.os.write, snapshots_module.atomic_write_bytes

    def charge(n):
        if used[0] + n > cap:
            raise OSError(errno.ENOSPC, "No space left on device")
        used[0] += n

    def write(fd, data):
        charge(len(data))
        return real_write(fd, data)

    def atomic(path, data, **kw):
        charge(len(data))
        return real_atomic(path, data, **kw)

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(snapshots_module.os, "write", write)  # os.write: what EventLog appends with
    monkeypatch.setattr(snapshots_module, "atomic_write_bytes", atomic)
    monkeypatch.setattr(snapshots_module.shutil, "disk_usage", lambda p: usage(cap, used[0], cap - used[0]))
    return tmp_path / "disk"


def _fill(out: Path, min_free_mb: float) -> tuple:
    counter, n = [0], 80
    src = FrameSource(parse_source("synthetic://"), opener=lambda spec: NoisyReader(counter, limit=n))
    rec, snaps = Recorder(), Snapshots(out / "snapshots", queue=0, min_free_mb=min_free_mb)
    loop = InspectionLoop(
        FakeDetector(), src, Decider(NAMES), [snaps, EventLog(out / "events.jsonl"), rec], out_dir=out
    )
    summary = loop.run()
    assert rec.ng == [i for i in range(n) if is_defective(i)]  # 24 NG frames, decided whatever the disk does
    return summary, [e["frame"] for e in read_events(out / "events.jsonl")], rec.ng


@pytest.mark.parametrize("disk", ["tmpfs", "simulated_disk"])
def test_filling_disk_drops_snapshots_first_and_loses_no_ng_event(disk, request, caplog):
    out = request.getfixturevalue(disk)
    with caplog.at_level(logging.WARNING, "defectdet.inspect"):
        summary, events, ng = _fill(out / "floor", min_free_mb=0.5)
    assert events == ng and summary["events_written"] == len(ng)  # every NG event is in events.jsonl
    snaps = summary["sinks"]["snapshots"]
    assert snaps["written"] > 0 and snaps["dropped_low_disk"] > 0 and snaps["errors"] == 0
    assert snaps["written"] / 2 + snaps["dropped_low_disk"] == len(ng)  # two files per NG frame, or none
    assert "under snapshots.min_free_mb=0.5" in caplog.text and "kept for the event log" in caplog.text
    assert summary["degraded"] and exit_status(summary) == EXIT_DEGRADED
    assert any(
        "not saved: free disk space under snapshots.min_free_mb" in r for r in summary["degraded_reasons"]
    )


def test_without_the_floor_events_can_be_lost_and_the_run_says_so(tmpfs):
    """The control: snapshots alone take the disk, snapshot writes fail and NG events can be lost (how many
    depends on page-sized free space left between files) — which the summary reports."""
    summary, events, ng = _fill(tmpfs / "no-floor", min_free_mb=0)
    assert (
        summary["sinks"]["snapshots"]["errors"] > 0
        and summary["degraded"]
        and exit_status(summary) == EXIT_DEGRADED
    )
    lost = f"events: {len(ng) - len(events)} of {len(ng)} NG event(s) not written to the event log"
    assert (lost in summary["degraded_reasons"]) == (len(events) < len(ng))


# ----------------------------------------------------------------------------------- sources
def _avi(path: Path, frames: int) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for i in range(frames):
        writer.write(np.full((48, 64, 3), i * 4, np.uint8))
    writer.release()
    return path


def test_a_truncated_video_ends_early_and_degraded(tmp_path):
    whole = _avi(tmp_path / "whole.avi", 50)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    for video, frames in ((whole, 50), (cut, None)):
        loop = InspectionLoop(FakeDetector(), FrameSource(str(video)), Decider(NAMES), out_dir=tmp_path)
        summary = loop.run()
        if frames:
            assert (
                summary["frames"] == 50 and summary["source_ended_early"] is None and not summary["degraded"]
            )
            continue
        assert 0 < summary["frames"] < 50 and summary["stop_reason"] == "source ended early"
        assert summary["source_ended_early"].startswith(
            f"{cut}: source ended early: {summary['frames']} of 50 frames"
        )
        assert (
            summary["degraded_reasons"] == [summary["source_ended_early"]]
            and exit_status(summary) == EXIT_DEGRADED
        )


def test_a_live_source_that_does_not_open_at_start_is_retried_with_backoff(caplog):
    counter, attempts = [0], []

    def opener(spec):
        attempts.append(1)
        if len(attempts) <= 3:
            raise SourceError(f"{spec.uri}: cannot open the camera")
        return ScriptedReader(counter)

    src = FrameSource(parse_source("0"), opener=opener, backoff_s=0.01, stall_s=0)
    with caplog.at_level(logging.WARNING, "defectdet.inspect"):
        summary = InspectionLoop(FakeDetector(), src, Decider(NAMES), max_frames=20).run()
    assert summary["frames"] == 20 and len(attempts) == 4 and summary["reconnects"] == 0
    assert (
        "0: cannot open the camera; retrying in the background" in caplog.text
        and "opened after 4 attempt(s)" in caplog.text
    )


def test_a_live_source_that_never_opens_gives_up_with_exit_1():
    def opener(spec):
        raise SourceError(f"{spec.uri}: cannot open the camera")

    src = FrameSource(
        parse_source("0"), opener=opener, backoff_s=0.01, backoff_max_s=0.02, give_up_s=0.3, stall_s=0
    )
    summary = InspectionLoop(FakeDetector(), src, Decider(NAMES), duration=5).run()
    assert summary["stop_reason"] == "source gave up" and "giving up" in summary["source_error"]
    assert summary["seconds"] < 3 and exit_status(summary) == EXIT_SOURCE_FAILED


def test_a_file_source_that_does_not_open_fails_at_once_naming_the_file(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(SourceError, match=f"^{bad}: OpenCV cannot decode this video file$"):
        FrameSource(str(bad)).start()


# ----------------------------------------------------------------------------------- numeric keys
def _numeric_keys(d, prefix=""):
    for key, value in d.items():
        if isinstance(value, dict):
            yield from _numeric_keys(value, f"{prefix}{key}.")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield prefix + key


def test_every_numeric_default_has_a_range():
    assert set(_numeric_keys(DEFAULTS)) - set(DETECTOR_KEYS) <= set(RANGES), (
        "add the key's range to station/settings.py RANGES"
    )
    assert check_numbers(DEFAULTS) == DEFAULTS  # the defaults are in range


def _bad_values(key):
    rng = RANGES[key]
    bad = ["abc", True, float("nan"), rng.low - 1]
    if rng.high is not None:
        bad.append(rng.high + 1)
    if rng.open_low:
        bad.append(rng.low)
    if rng.kind is int:
        bad.append(rng.low + 1.5)
    return bad


@pytest.mark.parametrize("key, value", [(k, v) for k in RANGES for v in _bad_values(k)])
def test_a_bad_numeric_value_is_a_one_line_error_naming_the_key_and_range(key, value):
    *parents, leaf = key.split(".")
    cfg = check_numbers(DEFAULTS)
    node = cfg
    for part in parents:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ConfigError) as e:
        check_numbers(cfg)
    msg = str(e.value)
    assert msg.startswith(f"{key}={value!r}: expected {RANGES[key].describe()}") and "\n" not in msg


@pytest.mark.parametrize(
    "override, message",
    [
        ("snapshots.quota_mb=abc", "snapshots.quota_mb='abc': expected a number >= 0"),
        ("capture.backoff_s=0", "capture.backoff_s=0: expected a number > 0"),
        ("signals.mqtt.qos=3", "signals.mqtt.qos=3: expected an integer in [0, 2]"),
        ("threads=0", "threads=0: expected null or an integer >= 1"),
    ],
)
def test_cli_overrides_out_of_range_exit_2_with_one_line(override, message, tmp_path, capsys):
    assert main(["inspect", "--model", str(tmp_path / "m.onnx"), "--source", "synthetic://", override]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_in_range_values_are_typed():
    cfg = check_numbers({**DEFAULTS, "max_frames": 10.0, "threads": None, "duration": 1})
    assert (
        cfg["max_frames"] == 10 and isinstance(cfg["max_frames"], int) and isinstance(cfg["duration"], float)
    )
