"""Sinks of the inspection loop: JSONL event log (append, fsync, rotation, torn lines, disk full), snapshot
quota, annotated video, headless window, the error guard, and the reject/alarm outputs."""

import errno
import http.server
import json
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from defectdet.runtime.detections import Detections
from defectdet.station import sinks as sinks_module
from defectdet.station.decisions import Decision
from defectdet.station.outputs.gpio import GpioSignal
from defectdet.station.outputs.mqtt import MqttSignal
from defectdet.station.outputs.signals import SignalError, StdoutSignal
from defectdet.station.outputs.webhook import WebhookSignal
from defectdet.station.result import FrameResult
from defectdet.station.sink import BaseSink, Guard
from defectdet.station.sinks import (
    EventLog,
    VideoRecorder,
    Window,
    display_available,
    read_events,
    rotated_files,
)
from defectdet.station.snapshots import Snapshots
from defectdet.station.sources import Frame

NAMES = {0: "scratch", 1: "spot"}


def make_result(index=0, ng=True, trigger=True, image=None, seed=0):
    if image is None:
        image = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    d = (
        Detections.from_arrays(np.array([[5, 6, 20, 30]], np.float32), [0.9], [1], NAMES)
        if ng
        else Detections.empty()
    )
    frame = Frame(image, index, time.time(), time.perf_counter(), {"part": index // 3})
    return FrameResult(
        frame, d, Decision(ng, ng, trigger, d), 12.5, "synthetic://", "model.onnx:abc", trigger
    )


# --------------------------------------------------------------------------- event log
def test_event_record_has_the_issue_fields():
    rec = make_result(7).event()
    assert {"ts", "frame", "source", "detections", "latency_ms", "model"} <= set(rec)
    assert rec["ts"].endswith("Z") and rec["frame"] == 7 and rec["decision"] == "NG"
    assert rec["detections"] == [
        {"xyxy": [5.0, 6.0, 20.0, 30.0], "confidence": 0.9, "class_id": 1, "class_name": "spot"}
    ]


def test_event_log_appends_only_ng_frames_and_keeps_earlier_runs(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"from": "an earlier run"}\n')
    log = EventLog(path)
    for i in range(6):
        log.emit(make_result(i, ng=i % 2 == 0))
    log.close()
    events = list(read_events(path))
    assert events[0] == {"from": "an earlier run"}
    assert [e["frame"] for e in events[1:]] == [0, 2, 4] and log.written == 3


def test_event_log_rotates_by_size_and_never_loses_a_line(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path, max_bytes=1000)
    n = 40
    for i in range(n):
        log.emit(make_result(i))
    log.close()
    rotated = rotated_files(path)
    assert len(rotated) >= 3 and [p.name for p in rotated[:2]] == [
        "events.000001.jsonl",
        "events.000002.jsonl",
    ]
    assert all(p.stat().st_size <= 1000 for p in [*rotated, path])
    assert [e["frame"] for e in read_events(path)] == list(range(n))  # oldest file first, nothing lost
    log2 = EventLog(path, max_bytes=1000)  # a restart continues numbering, never overwrites
    for i in range(n, n + 20):
        log2.emit(make_result(i))
    log2.close()
    assert [e["frame"] for e in read_events(path)] == list(range(n + 20))


def test_event_log_after_a_torn_line_starts_on_a_new_line(tmp_path):
    path = tmp_path / "events.jsonl"
    path.write_text('{"frame": 1}\n{"frame": 2, "detec')  # power cut mid-line
    log = EventLog(path)
    log.emit(make_result(3))
    log.close()
    lines = path.read_text().splitlines()
    assert lines[:2] == ['{"frame": 1}', '{"frame": 2, "detec'] and json.loads(lines[2])["frame"] == 3


def test_disk_full_mid_line_leaves_valid_jsonl_and_the_log_recovers(tmp_path, monkeypatch):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.emit(make_result(0))
    real_write, calls = os.write, []

    def full_disk(fd, data):
        if calls == [] and str(os.readlink(f"/proc/self/fd/{fd}")) == str(path):
            calls.append(fd)
            real_write(fd, data[: len(data) // 2])  # half the line reaches the disk ...
            raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full
        return real_write(fd, data)

    monkeypatch.setattr(sinks_module.os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        log.emit(make_result(1))
    monkeypatch.undo()
    log.emit(make_result(2))
    log.close()
    assert [e["frame"] for e in read_events(path)] == [0, 2]  # the half line was cut back; every line parses
    assert log.written == 2


# --------------------------------------------------------------------------- snapshots
@pytest.mark.parametrize("queue", [0, 8], ids=["in-loop", "writer-thread"])
def test_snapshot_quota_deletes_the_oldest_first(tmp_path, queue):
    folder = tmp_path / "snaps"
    folder.mkdir()
    old = folder / "20000101T000000.000Z_f00000000_raw.png"  # a previous run's snapshot counts too
    old.write_bytes(os.urandom(20_000))
    snaps = Snapshots(folder, quota_mb=0.1, raw=True, annotated=True, queue=queue)
    names = []
    for i in range(12):
        r = make_result(i, seed=i)  # noise frames: ~9 KB PNG each
        snaps.emit(r)
        assert snaps.flush(10)
        names += r.snapshots
        time.sleep(0.002)
        on_disk = sorted(p.name for p in folder.iterdir())
        assert sum(p.stat().st_size for p in folder.iterdir()) <= snaps.quota
        assert on_disk == sorted([old.name, *names])[-len(on_disk) :]  # what is left is the newest
    assert not old.exists() and snaps.deleted > 1
    assert {Path(n).suffix for n in names} == {".png", ".jpg"} and len(names) == 24
    raw = cv2.imread(str(folder / on_disk[-1])) if on_disk[-1].endswith("raw.png") else None
    assert raw is None or np.array_equal(raw, make_result(11, seed=11).frame.image)
    snaps.close()
    assert snaps.written == 24 and snaps.failed == snaps.dropped == 0


def _blocked_writer(monkeypatch):
    """Make Snapshots._write wait for the returned event (a disk that has stalled)."""
    gate, real = threading.Event(), Snapshots._write

    def slow(self, path, img):
        assert gate.wait(10), "test gate never opened"
        real(self, path, img)

    monkeypatch.setattr(Snapshots, "_write", slow)
    return gate


def test_snapshot_writer_thread_never_holds_up_the_loop(tmp_path, monkeypatch):
    gate = _blocked_writer(monkeypatch)
    snaps = Snapshots(tmp_path / "s", queue=4)
    results = [make_result(i, seed=i) for i in range(6)]
    t = time.perf_counter()
    snaps.emit(results[0])
    while snaps._queue.qsize():  # the writer has taken frame 0 and waits on the stalled disk
        assert time.perf_counter() - t < 5.0
        time.sleep(0.001)
    for r in results[1:5]:
        snaps.emit(r)  # the writer holds one job, the queue the next four
    assert time.perf_counter() - t < 2.0 and snaps.written == 0
    assert results[0].snapshots[0].endswith("_f00000000_annotated.jpg")  # the event already names the files
    with pytest.raises(OSError, match=r"4 frames behind .*frame 5 not saved \(1 dropped so far\)"):
        snaps.emit(results[5])
    assert results[5].snapshots == []  # a dropped frame's event names no file
    gate.set()
    snaps.close()
    written = sorted(p.name for p in (tmp_path / "s").iterdir())
    assert written == sorted(n for r in results[:5] for n in r.snapshots) and snaps.written == 10
    assert not snaps._thread


def test_snapshot_writer_blocks_instead_of_dropping_for_files(tmp_path, monkeypatch):
    gate = _blocked_writer(monkeypatch)
    snaps = Snapshots(tmp_path / "s", queue=1, block=True)
    done = threading.Event()

    def emit_three():
        for i in range(3):  # one in the writer, one queued, the third waits for room
            snaps.emit(make_result(i, seed=i))
        done.set()

    threading.Thread(target=emit_three, daemon=True).start()
    assert not done.wait(0.3)  # held up by the stalled disk, not dropped
    gate.set()
    assert done.wait(10)
    snaps.close()
    assert snaps.written == 6 and snaps.dropped == 0


def test_snapshot_write_failure_in_the_thread_reaches_the_guard(tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the snapshot folder should be")
    snaps = Snapshots(blocker / "snaps", queue=4)
    guard = Guard(snaps)
    with caplog.at_level(logging.ERROR, logger="defectdet.inspect"):
        guard.emit(make_result(0))
        assert snaps.flush(10) and snaps.failed == 1
        guard.emit(make_result(1))  # the writer's failure of frame 0 is reported here, on the loop's thread
        assert snaps.flush(10)
        guard.close()  # frame 1 failed too: reported by close
    assert guard.errors == 2 and snaps.failed == 2 and snaps.written == 0
    assert (
        "snapshots: emit failed: OSError:" in caplog.text and "snapshot not written: frame 0: " in caplog.text
    )
    assert "frame 1: " in guard.last_error and guard.last_error.startswith("snapshots: close failed")


def test_snapshot_close_gives_up_on_a_stalled_disk(tmp_path, monkeypatch):
    gate = _blocked_writer(monkeypatch)
    snaps = Snapshots(tmp_path / "s", queue=4, close_timeout_s=0.2)
    snaps.emit(make_result(0))
    snaps.emit(make_result(1))
    t = time.perf_counter()
    with pytest.raises(OSError, match=r"snapshot\(s\) still queued after 0.2 s"):
        snaps.close()
    assert time.perf_counter() - t < 2.0
    gate.set()


def test_snapshots_skip_ok_frames(tmp_path):
    snaps = Snapshots(tmp_path / "s")
    snaps.emit(make_result(0, ng=False))
    assert snaps.written == 0 and not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- video, window, guard
def test_annotated_video_is_complete_after_close(tmp_path):
    path = tmp_path / "annotated.avi"
    rec = VideoRecorder(path, fps=10, fourcc="MJPG")
    for i in range(8):
        rec.emit(make_result(i, ng=i % 2 == 0))
    assert not path.exists()  # written under a partial name until the end
    rec.close()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    assert n == 8 and not rec.tmp.exists()


def test_window_only_with_a_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    if os.name == "posix" and os.uname().sysname == "Linux":
        assert not display_available()
        with pytest.raises(OSError, match="no display"):
            Window()


def test_guard_logs_a_failing_sink_once_and_counts(caplog):
    class Broken(BaseSink):
        name = "events"

        def emit(self, result):
            raise PermissionError(13, "Permission denied", "/ro/events.jsonl")

    g = Guard(Broken(), log_every_s=60)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        for i in range(5):
            g.emit(make_result(i))
    assert g.errors == 5
    msgs = [r.getMessage() for r in caplog.records]
    assert (
        len(msgs) == 1 and "events: emit failed: PermissionError" in msgs[0] and "/ro/events.jsonl" in msgs[0]
    )
    assert "goes on deciding" in msgs[0]


# --------------------------------------------------------------------------- signals
def test_stdout_signal_only_on_trigger(capsys):
    s = StdoutSignal()
    s.emit(make_result(1, trigger=False))
    s.emit(make_result(2, trigger=True))
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("NG ") and json.loads(out[0][3:])["frame"] == 2


class FakeGPIO(types.SimpleNamespace):
    """The parts of the Jetson.GPIO API the output uses, recording (time, pin, level)."""

    BOARD, BCM, OUT, HIGH, LOW = "BOARD", "BCM", "OUT", 1, 0

    def __init__(self):
        super().__init__(log=[], mode=None, setups=[], cleaned=[])

    def setwarnings(self, flag):
        pass

    def setmode(self, mode):
        self.mode = mode

    def setup(self, pin, direction, initial):
        self.setups.append((pin, direction, initial))

    def output(self, pin, level):
        self.log.append((time.monotonic(), pin, level))

    def cleanup(self, pin):
        self.cleaned.append(pin)


def wait_until(cond, timeout=3.0):
    deadline = time.monotonic() + timeout
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.005)


def test_gpio_pulse_is_timed_and_does_not_block():
    gpio = FakeGPIO()
    s = GpioSignal(pin=12, pulse_ms=150, mode="BCM", gpio=gpio)
    assert gpio.mode == "BCM" and gpio.setups == [(12, "OUT", 0)]
    t0 = time.monotonic()
    s.emit(make_result(0, trigger=True))
    assert time.monotonic() - t0 < 0.02  # the loop is not held for the pulse
    s.emit(make_result(1, trigger=False))
    wait_until(lambda: len(gpio.log) >= 2)
    (t_on, _, on), (t_off, _, off) = gpio.log
    assert (on, off) == (1, 0) and 0.14 <= t_off - t_on < 0.6
    s.emit(make_result(2, trigger=True))
    time.sleep(0.04)
    s.emit(make_result(3, trigger=True))  # retrigger during the pulse extends it
    wait_until(lambda: len(gpio.log) >= 5)
    levels = [lv for _, _, lv in gpio.log[2:]]
    assert levels == [1, 1, 0] and gpio.log[-1][0] - gpio.log[-2][0] >= 0.14
    s.close()
    assert gpio.log[-1][2] == 0 and gpio.cleaned == [12] and s.pulses == 3


def test_gpio_active_low_and_bad_mode():
    gpio = FakeGPIO()
    s = GpioSignal(pin=7, pulse_ms=10, active_high=False, gpio=gpio)
    assert gpio.setups == [(7, "OUT", 1)]  # idles high
    s.pulse()
    wait_until(lambda: len(gpio.log) >= 2)
    assert [lv for _, _, lv in gpio.log] == [0, 1]
    with pytest.raises(SignalError, match="expected BOARD, BCM"):
        GpioSignal(pin=7, mode="WIRING", gpio=FakeGPIO())


def _jetson_gpio():
    try:
        import Jetson.GPIO  # noqa: F401
    except Exception as e:  # ImportError off a Jetson, RuntimeError on a non-Jetson board
        return str(e)
    return None


@pytest.mark.skipif(
    _jetson_gpio() is not None or not Path("/etc/nv_tegra_release").exists(),
    reason="no Jetson.GPIO / not a Jetson: the real pin pulse is tested on the device",
)
def test_real_jetson_gpio_pulse():
    s = GpioSignal(pin=int(os.environ.get("DEFECTDET_TEST_GPIO_PIN", "18")), pulse_ms=20)
    s.pulse()
    time.sleep(0.05)
    s.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _Hook(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_POST(self):
        n = int(self.headers["Content-Length"])
        type(self).bodies.append((self.headers["Content-Type"], self.rfile.read(n)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_webhook_posts_each_trigger_as_json():
    _Hook.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        s = WebhookSignal(f"http://127.0.0.1:{server.server_address[1]}/ng", timeout_s=2)
        for i in range(4):
            s.emit(make_result(i, trigger=i != 1))
        s.close(timeout=3)
    finally:
        server.shutdown()
    assert s.sent == 3 and s.failed == 0
    assert [json.loads(b)["frame"] for _, b in _Hook.bodies] == [0, 2, 3]
    assert {t for t, _ in _Hook.bodies} == {"application/json"}


def test_webhook_failures_never_reach_the_loop(caplog):
    s = WebhookSignal(
        f"http://127.0.0.1:{_free_port()}/ng", timeout_s=0.5, queue_size=2
    )  # nothing listens there
    s.emit(make_result(0))
    s.close(timeout=2)
    assert s.failed == 1 and s.sent == 0 and "POST failed" in caplog.text
    with pytest.raises(SignalError, match="http:// or https://"):
        WebhookSignal("ftp://x")


def _mosquitto_reason():
    if shutil.which("mosquitto") is None:
        return "no mosquitto broker (apt-get install -y mosquitto)"
    try:
        import paho.mqtt.client  # noqa: F401
    except ImportError:
        return "paho-mqtt not installed (pip install 'defectdet[edge]')"
    return None


@pytest.fixture
def broker(tmp_path):
    """A mosquitto on 127.0.0.1 only, on a free port; started by the test (``start()``), always stopped."""
    port, procs = _free_port(), []
    conf = tmp_path / "mosquitto.conf"
    conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")

    def start():
        procs.append(
            subprocess.Popen(
                ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    yield types.SimpleNamespace(port=port, start=start)
    for p in procs:
        p.terminate()
        p.wait(5)


def _subscriber(port, topic, got):
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-sub")
    c.on_message = lambda client, userdata, msg: got.append(json.loads(msg.payload))
    c.connect("127.0.0.1", port)
    c.subscribe(topic, qos=1)
    c.loop_start()
    time.sleep(0.3)
    return c


@pytest.mark.skipif(_mosquitto_reason() is not None, reason=str(_mosquitto_reason()))
def test_mqtt_publishes_triggers_and_queues_while_the_broker_is_down(broker):
    got: list = []
    s = MqttSignal(port=broker.port, topic="line1/ng", qos=1, client_id="defectdet-test")
    s.emit(make_result(0, trigger=True))  # broker not running yet: queued
    broker.start()
    sub = _subscriber(broker.port, "line1/ng", got)
    try:
        s.emit(make_result(1, trigger=False))
        s.emit(make_result(2, trigger=True))
        deadline = time.monotonic() + 8
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        s.close()
    finally:
        sub.loop_stop()
        sub.disconnect()
    assert sorted(m["frame"] for m in got) == [0, 2] and s.sent == 2
