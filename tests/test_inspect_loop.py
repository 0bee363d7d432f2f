"""The inspection loop's bookkeeping and fault behaviour, with a fake detector and scripted sources, for
both loops (sequential and pipelined): k failures -> k reconnects and events == NG frames; a read-only or
full output folder -> clear error, the loop keeps deciding and signalling; limits, stop requests, status
lines, latency percentiles; the pipeline's channels, a failing stage and a failing sink."""

import errno
import json
import logging
import threading
import time

import numpy as np
import pytest

from defectdet.runtime.detections import Detections
from defectdet.station import sinks as sinks_module
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.loop import InspectionLoop, LatencyStats
from defectdet.station.pipeline import CLOSED, Channel, PipelinedLoop
from defectdet.station.sink import BaseSink, emit_order
from defectdet.station.sinks import EventLog, read_events
from defectdet.station.snapshots import Snapshots
from defectdet.station.sources import parse_source

NAMES = {0: "scratch", 1: "spot"}


@pytest.fixture(params=[InspectionLoop, PipelinedLoop], ids=["sequential", "pipelined"])
def Loop(request):
    """Each loop test runs once per loop."""
    return request.param


def is_defective(i: int) -> bool:
    """The scripted line: parts 3..5, 11, 17..18 of every 20 frames are defective."""
    return i % 20 in (3, 4, 5, 11, 17, 18)


def marked(i: int) -> np.ndarray:
    img = np.zeros((40, 60, 3), np.uint8)  # (H, W, 3)
    img[0, 0] = 255 if is_defective(i) else 0
    img[1, 0, 0], img[1, 1, 0] = i % 256, i // 256  # the frame's number, for the checks
    return img


def frame_number(img: np.ndarray) -> int:
    return int(img[1, 0, 0]) + 256 * int(img[1, 1, 0])


class FakeDetector:
    """A 'defect' wherever pixel (0, 0) is bright; counts calls; optional per-call delay."""

    def __init__(self, delay: float = 0.0):
        self.calls, self.delay = 0, delay

    def __call__(self, img):
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if img[0, 0, 0] > 128:
            return Detections.from_arrays(np.array([[10, 10, 30, 30]], np.float32), [0.9], [0], NAMES)
        return Detections.empty()


class ScriptedReader:
    """Numbered frames from a shared counter; ``fail_after`` reads, the connection breaks."""

    fps = None

    def __init__(self, counter, fail_after=None, limit=None, period=0.0):
        self.counter, self.fail_after, self.limit, self.period, self.reads = (
            counter,
            fail_after,
            limit,
            period,
            0,
        )

    def read(self):
        self.reads += 1
        if self.period:
            time.sleep(self.period)
        if (self.fail_after is not None and self.reads > self.fail_after) or (
            self.limit and self.counter[0] >= self.limit
        ):
            return None, {}
        img = marked(self.counter[0])
        self.counter[0] += 1
        return img, {}

    def release(self):
        pass


class Recorder(BaseSink):
    """A sink remembering what it saw (frame numbers of NG frames and of triggers)."""

    name = "recorder"

    def __init__(self):
        self.ng, self.triggers = [], []

    def emit(self, result):
        if result.decision.ng:
            self.ng.append(frame_number(result.frame.image))
        if result.trigger:
            self.triggers.append(frame_number(result.frame.image))


def file_source(n):
    counter = [0]
    return FrameSource(parse_source("synthetic://"), opener=lambda spec: ScriptedReader(counter, limit=n))


def test_every_frame_decided_and_every_ng_frame_logged_once(Loop, tmp_path):
    rec, n = Recorder(), 60
    loop = Loop(
        FakeDetector(),
        file_source(n),
        Decider(NAMES),
        [Snapshots(tmp_path / "snaps", queue=n), EventLog(tmp_path / "events.jsonl"), rec],
        out_dir=tmp_path,
    )
    summary = loop.run()
    expected_ng = [i for i in range(n) if is_defective(i)]
    assert (
        summary["frames"] == n and summary["ng"] == len(expected_ng) and summary["ok"] == n - len(expected_ng)
    )
    assert rec.ng == expected_ng
    assert [e["frame"] for e in read_events(tmp_path / "events.jsonl")] == expected_ng
    assert summary["events_written"] == len(expected_ng)
    assert len(list((tmp_path / "snaps").iterdir())) == 2 * len(expected_ng)
    assert rec.triggers == [i for i in expected_ng if not is_defective(i - 1)]  # first NG frame of each part
    assert summary["triggers"] == len(rec.triggers) == 9
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["stop_reason"] == "end of source" and summary["dropped_frames"] == 0


def test_the_event_names_its_snapshots_whatever_order_the_sinks_are_given_in(Loop, tmp_path):
    """Snapshots declares what it adds to the frame's result, the event log what it reads: the loop
    emits in that order, so a list with the event log first still writes events naming their files."""
    log, snaps = EventLog(tmp_path / "events.jsonl"), Snapshots(tmp_path / "snaps", queue=60, block=True)
    summary = Loop(FakeDetector(), file_source(20), Decider(NAMES), [log, snaps], out_dir=tmp_path).run()
    events = list(read_events(tmp_path / "events.jsonl"))
    assert [e["frame"] for e in events] == [i for i in range(20) if is_defective(i)]
    assert all(len(e["snapshots"]) == 2 and "snapshots_missing" not in e for e in events)
    assert sorted(n for e in events for n in e["snapshots"]) == sorted(
        p.name for p in (tmp_path / "snaps").iterdir()
    )
    assert list(summary["sinks"]) == ["snapshots", "events"]


def test_emit_order_puts_what_adds_before_what_reads_and_refuses_a_circle_or_a_typo():
    class Adds(BaseSink):
        name, adds = "adds", frozenset({"snapshots"})

    class Reads(BaseSink):
        name, reads = "reads", frozenset({"snapshots"})

    class Both(BaseSink):
        name, adds, reads = "both", frozenset({"part"}), frozenset({"snapshots"})

    class Other(BaseSink):
        name, adds, reads = "other", frozenset({"snapshots"}), frozenset({"part"})

    class Typo(BaseSink):
        adds = frozenset({"snapshot"})

    r, a, plain = Reads(), Adds(), BaseSink()
    assert emit_order([r, plain, a]) == [plain, a, r]  # the reader after the adder, the rest in order
    assert emit_order([a, plain, r]) == [a, plain, r]
    with pytest.raises(TypeError, match="^sinks Both, Other read what each other adds"):
        emit_order([Both(), Other()])
    with pytest.raises(TypeError, match="^Typo.adds: snapshot is not a FrameResult field$"):
        emit_order([Typo()])


def test_source_failing_k_times_mid_run_reconnects_k_times_and_loses_no_event(Loop, tmp_path):
    counter, k, conns = [0], 4, []

    def opener(spec):
        conns.append(ScriptedReader(counter, fail_after=13 if len(conns) < k else None, period=0.001))
        return conns[-1]

    src = FrameSource(parse_source("0"), opener=opener, backoff_s=0.01, stall_s=0)  # a live camera
    rec = Recorder()
    loop = Loop(
        FakeDetector(),
        src,
        Decider(NAMES),
        [EventLog(tmp_path / "events.jsonl"), rec],
        max_frames=120,
        out_dir=tmp_path,
    )
    summary = loop.run()
    events = [e["frame"] for e in read_events(tmp_path / "events.jsonl")]
    assert summary["reconnects"] == k and len(conns) == k + 1
    assert summary["frames"] == 120
    assert summary["events_written"] == summary["ng"] == len(events) == len(rec.ng)
    assert len(set(rec.ng)) == len(rec.ng)  # nothing duplicated
    assert all(is_defective(i) for i in rec.ng)  # NG exactly where the line had defects ...
    assert (
        summary["frames"] + summary["dropped_frames"] <= counter[0]
    )  # ... and frames never seen are counted as dropped


def _unwritable(tmp_path):
    """A folder that cannot be created (its parent is a file): what a read-only mount looks like to the loop,
    and unlike chmod it also holds for root."""
    blocker = tmp_path / "blocker"
    blocker.write_text("a file, not a folder")
    return blocker / "out"


def test_read_only_output_keeps_deciding_and_signalling(Loop, tmp_path, caplog):
    out, rec, n = _unwritable(tmp_path), Recorder(), 40
    sinks = [Snapshots(out / "snaps"), EventLog(out / "events.jsonl"), rec]
    loop = Loop(FakeDetector(), file_source(n), Decider(NAMES), sinks, out_dir=out)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary = loop.run()
    assert summary["frames"] == n and rec.ng == [i for i in range(n) if is_defective(i)]
    assert len(rec.triggers) == summary["triggers"] == 6  # the reject output still fired for every part
    assert summary["events_written"] == 0
    assert (
        summary["sinks"]["events"]["errors"] == summary["ng"] + 1
    )  # creating the file at start, then every NG frame
    text = caplog.text
    assert "events: open failed: NotADirectoryError" in text and str(out) in text
    assert "snapshots: emit failed" in text and "summary: cannot write" in text
    assert text.count("events: ") == 1  # logged once, not once per frame
    assert summary["degraded"] is True  # ... and the supervisor is told
    reasons = summary["degraded_reasons"]
    assert f"events: {summary['ng']} of {summary['ng']} NG event(s) not written to the event log" in reasons
    assert any(r.startswith("summary.json not written: NotADirectoryError") for r in reasons)


def test_disk_full_mid_run_recovers_when_space_returns(Loop, tmp_path, monkeypatch, caplog):
    real_write, state = sinks_module.os.write, {"full": False}

    def write(fd, data):
        if state["full"] and data.startswith(b"{"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    class FillDisk(BaseSink):
        name = "filler"

        def emit(self, result):  # the disk fills up at frame 20 and is cleaned at frame 40
            state["full"] = 20 <= frame_number(result.frame.image) < 40

    monkeypatch.setattr(sinks_module.os, "write", write)
    rec, log = Recorder(), EventLog(tmp_path / "events.jsonl")
    loop = Loop(FakeDetector(), file_source(60), Decider(NAMES), [FillDisk(), log, rec])
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary = loop.run()
    logged = [e["frame"] for e in read_events(tmp_path / "events.jsonl")]
    lost = [i for i in rec.ng if 20 <= i < 40]
    assert logged == [i for i in rec.ng if not 20 <= i < 40] and lost
    assert summary["sinks"]["events"]["errors"] == len(lost) and summary["events_written"] == len(logged)
    assert "No space left on device" in caplog.text and summary["frames"] == 60


def test_limits_and_status_lines(Loop, caplog):
    counter = [0]
    src = FrameSource(parse_source("0"), opener=lambda spec: ScriptedReader(counter, period=0.002), stall_s=0)
    loop = Loop(FakeDetector(delay=0.005), src, Decider(NAMES), max_frames=0, duration=0.6, status_every=0.2)
    with caplog.at_level(logging.INFO, "defectdet.inspect"):
        summary = loop.run()
    assert summary["stop_reason"] == "duration" and 0.6 <= summary["seconds"] < 1.5
    status = [r.getMessage() for r in caplog.records if "fps |" in r.getMessage()]
    assert len(status) >= 2
    assert all(
        "latency p50" in s and "dropped" in s and "reconnects 0" in s and " ok " in s and " ng " in s
        for s in status
    )
    assert status[-1].startswith("done: ")
    loop2 = Loop(FakeDetector(), file_source(1000), Decider(NAMES), max_frames=25)
    assert loop2.run()["frames"] == 25


def test_stop_request_ends_the_run_promptly(Loop):
    counter = [0]
    src = FrameSource(parse_source("0"), opener=lambda spec: ScriptedReader(counter, period=0.005), stall_s=0)
    loop = Loop(FakeDetector(), src, Decider(NAMES))
    threading.Timer(0.3, loop.request_stop, args=("SIGTERM",)).start()
    t = time.monotonic()
    summary = loop.run()
    assert time.monotonic() - t < 0.3 + 1.0 and summary["stop_reason"] == "SIGTERM" and summary["frames"] > 0


def test_latency_percentiles_within_one_percent():
    rng = np.random.default_rng(0)
    values = rng.lognormal(3.0, 0.6, 5000)  # ms
    stats = LatencyStats(window=100)
    for v in values:
        stats.add(float(v))
    for q in (50, 90, 99):
        assert stats.percentile(q) == pytest.approx(
            np.percentile(values, q, method="inverted_cdf"), rel=0.011
        )
    assert stats.recent_percentile(50) == pytest.approx(np.percentile(values[-100:], 50))
    assert LatencyStats().percentile(50) is None


def test_a_failing_frame_is_skipped_but_a_failing_detector_ends_the_run(Loop, tmp_path, caplog):
    class Flaky(FakeDetector):
        def __init__(self, bad):
            super().__init__()
            self.bad = bad

        def __call__(self, img):
            if self.bad(frame_number(img)):
                raise ValueError("Detections.confidence: expected values in [0, 1]")
            return super().__call__(img)

    loop = Loop(Flaky(lambda i: i in (5, 6, 30)), file_source(40), Decider(NAMES), max_detector_errors=3)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary = loop.run()
    assert (
        summary["frames"] == 37
        and summary["detector_errors"] == 3
        and "frame 5: detector failed" in caplog.text
    )
    loop = Loop(
        Flaky(lambda i: i >= 10), file_source(40), Decider(NAMES), max_detector_errors=3, out_dir=tmp_path
    )
    with pytest.raises(ValueError, match="expected values"):
        loop.run()
    summary = json.loads((tmp_path / "summary.json").read_text())  # still written by the finally
    assert summary["frames"] == 10 and summary["detector_errors"] == 3 and summary["stop_reason"] == "error"


def test_frames_decided_before_a_fatal_detector_error_still_reach_the_sinks(tmp_path):
    """The pipelined loop: when the detector fails for good, the frames already decided and waiting for
    the sinks (slow ones here) are still delivered: counted, their events and rejects out, none lost."""
    from defectdet.station.sink import BaseSink

    class Slow(BaseSink):
        name = "slow"

        def __init__(self):
            self.seen = []

        def emit(self, result):
            time.sleep(0.05)
            self.seen.append(result.frame.index)

    class Failing(FakeDetector):
        def __call__(self, img):
            if frame_number(img) >= 10:
                raise ValueError("Detections.confidence: expected values in [0, 1]")
            return super().__call__(img)

    slow = Slow()
    loop = PipelinedLoop(
        Failing(), file_source(40), Decider(NAMES), [slow], max_detector_errors=3, out_dir=tmp_path
    )
    with pytest.raises(ValueError, match="expected values"):
        loop.run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert slow.seen == list(range(10)) and summary["frames"] == 10 and summary["stop_reason"] == "error"


# -- the pipeline -------------------------------------------------------------------------------
def run_joined(loop, timeout=30.0):
    """``loop.run()`` in a thread joined with a timeout, so a hang fails the test instead of blocking it:
    (summary or None, exception or None)."""
    box = {}

    def target():
        try:
            box["summary"] = loop.run()
        except BaseException as e:
            box["error"] = e

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "the loop did not end"
    return box.get("summary"), box.get("error")


def stage_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("inspect-") and t.is_alive()]


class StagedFake(FakeDetector):
    """FakeDetector's verdicts split into pre / forward / decode like a Detector, each stage with its own
    jitter; every frame's input goes through a reused buffer, so a buffer overwritten while its frame is
    still in flight shows up as a wrong frame number in ``decoded``."""

    stageable = True

    def __init__(self, seed=0):
        super().__init__()
        self.rng, self.decoded = np.random.default_rng(seed), []

    def _jitter(self):
        time.sleep(float(self.rng.uniform(0, 0.003)))

    def new_preprocessor(self):
        buf = np.zeros((1, 2), np.int64)  # (1, [frame number, defective])

        def pre(frames):
            self._jitter()
            buf[0] = frame_number(frames[0]), frames[0][0, 0, 0] > 128
            return buf, [frames[0].shape]

        return pre

    def forward(self, batch):
        self._jitter()
        return batch.copy()

    def decode(self, out, params):
        self._jitter()
        self.decoded.append(int(out[0]))
        return super().__call__(marked(int(out[0])))


def test_pipeline_stages_keep_frame_order_and_buffers_intact(tmp_path):
    det, rec, n = StagedFake(), Recorder(), 80
    loop = PipelinedLoop(
        det, file_source(n), Decider(NAMES), [EventLog(tmp_path / "events.jsonl"), rec], out_dir=tmp_path
    )
    summary, error = run_joined(loop)
    assert error is None and det.decoded == list(range(n))
    expected_ng = [i for i in range(n) if is_defective(i)]
    assert (
        rec.ng == expected_ng and [e["frame"] for e in read_events(tmp_path / "events.jsonl")] == expected_ng
    )
    assert summary["pipeline"] is True and set(summary["stages_ms"]) == {
        "pre",
        "infer",
        "post",
        "decide",
        "sinks",
    }
    assert all(v["p50"] is not None and v["p99"] >= v["p50"] for v in summary["stages_ms"].values())
    assert not stage_threads()


def test_a_sink_that_raises_is_counted_and_the_run_goes_on(Loop, tmp_path, caplog):
    class Broken(BaseSink):
        name = "broken"

        def emit(self, result):
            if result.decision.ng:
                raise ConnectionError("PLC unreachable")

    rec, n = Recorder(), 60
    loop = Loop(StagedFake(), file_source(n), Decider(NAMES), [Broken(), rec], out_dir=tmp_path)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary, error = run_joined(loop)
    assert error is None and summary["frames"] == n and rec.ng == [i for i in range(n) if is_defective(i)]
    assert summary["sinks"]["broken"]["errors"] == summary["ng"] > 0
    assert "broken: emit failed: ConnectionError: PLC unreachable" in caplog.text and not stage_threads()


def test_a_stage_that_raises_ends_the_run_with_its_error_and_joins_every_thread(Loop, tmp_path, caplog):
    class BadDecider(Decider):
        def __call__(self, dets, shape):
            if self.calls == 10:
                raise RuntimeError("decider bug")
            self.calls += 1
            return super().__call__(dets, shape)

    decider = BadDecider(NAMES)
    decider.calls = 0
    loop = Loop(StagedFake(), file_source(1000), decider, [Recorder()], out_dir=tmp_path)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary, error = run_joined(loop)
    assert isinstance(error, RuntimeError) and str(error) == "decider bug" and summary is None
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["frames"] == 10 and written["stop_reason"] == "error"
    assert not stage_threads()
    if Loop is PipelinedLoop:
        assert "stage 'post' failed (RuntimeError: decider bug); stopping the run" in caplog.text


def test_a_stop_mid_run_finishes_the_frames_inside_and_joins_every_thread(tmp_path):
    counter = [0]
    src = FrameSource(parse_source("0"), opener=lambda spec: ScriptedReader(counter, period=0.002), stall_s=0)
    loop = PipelinedLoop(
        StagedFake(), src, Decider(NAMES), [EventLog(tmp_path / "events.jsonl")], out_dir=tmp_path
    )
    threading.Timer(0.4, loop.request_stop, args=("SIGTERM",)).start()
    summary, error = run_joined(loop)
    assert (
        error is None
        and summary["stop_reason"] == "SIGTERM"
        and summary["frames"] > 0
        and not stage_threads()
    )
    assert summary["events_written"] == summary["ng"] == len(list(read_events(tmp_path / "events.jsonl")))


def test_a_live_source_drops_frames_instead_of_queueing_them():
    class Slow(StagedFake):
        def forward(self, batch):
            time.sleep(0.02)  # a model slower than the camera
            return batch.copy()

    counter, rec = [0], Recorder()
    src = FrameSource(parse_source("0"), opener=lambda spec: ScriptedReader(counter, period=0.001), stall_s=0)
    det = Slow()
    summary, error = run_joined(PipelinedLoop(det, src, Decider(NAMES), [rec], max_frames=15))
    assert error is None and summary["frames"] == 15 and summary["dropped_frames"] > 0
    assert summary["frames"] + summary["dropped_frames"] <= counter[0]
    assert det.decoded == sorted(set(det.decoded))  # increasing: in order, nothing twice
    assert loop_capacities(PipelinedLoop(det, FrameSource(parse_source("0")), Decider(NAMES))) == [1, 1, 1]
    assert loop_capacities(PipelinedLoop(det, file_source(5), Decider(NAMES))) == [2, 2, 2]


def loop_capacities(loop):
    return [ch.capacity for ch in (loop._to_infer, loop._to_post, loop._to_sinks)]


def test_channel_is_fifo_bounded_and_close_wakes_waiters():
    ch = Channel(2)
    assert ch.put(1) and ch.put(2) and not ch.wait_room(0.01)
    assert ch.get() == 1 and ch.wait_room(0.01) and ch.put(3)
    assert [ch.get(), ch.get(), ch.get(0.01)] == [2, 3, None]
    got = []
    waiter = threading.Thread(target=lambda: got.append(ch.get()))
    waiter.start()
    ch.close()
    waiter.join(5)
    assert not waiter.is_alive() and got == [CLOSED] and not ch.put(4) and not ch.wait_room(0.01)


class OverlapFake(StagedFake):
    """StagedFake with a two-slot submit/collect like a static TensorRT engine: ``submit`` copies the
    input (as the backend copies into its page-locked buffer), the result is made at ``collect``;
    ``log`` records the order of the calls, ``most`` the most frames ever in flight.
    ``fail_submit`` / ``fail_collect``: frame numbers whose submit / collect raises."""

    in_flight = 2
    device_s = 0.005

    def __init__(self, seed=0, fail_submit=(), fail_collect=()):
        super().__init__(seed)
        self.pending, self.log, self.most, self.tickets = [], [], 0, 0
        self.fail_submit, self.fail_collect = set(fail_submit), set(fail_collect)

    def submit(self, batch):
        self._jitter()
        n = int(batch[0, 0])
        if n in self.fail_submit:
            raise ValueError(f"frame {n}: enqueue failed")
        assert len(self.pending) < self.in_flight, "more frames submitted than slots"
        self.tickets += 1
        self.pending.append((self.tickets, batch.copy()))
        self.most = max(self.most, len(self.pending))
        self.log.append(("submit", n))
        return self.tickets

    def collect(self):
        self._jitter()
        time.sleep(self.device_s)  # the device's time: slower than the pre stage, so frames queue for it
        ticket, out = self.pending.pop(0)
        self.log.append(("collect", int(out[0, 0])))
        if int(out[0, 0]) in self.fail_collect:
            raise ValueError(f"frame {int(out[0, 0])}: CUDA failed to wait for the inference")
        return ticket, out

    def forward(self, batch):
        raise AssertionError("a two-slot detector is run through submit/collect")


def test_two_slot_detector_overlaps_frames_and_keeps_order_and_events(tmp_path):
    """Frame n+1 is submitted before frame n is collected, never more than two in flight, and the events
    are those of the sequential loop, in the same order."""
    n = 80
    (tmp_path / "seq").mkdir()
    ref = InspectionLoop(
        StagedFake(),
        file_source(n),
        Decider(NAMES),
        [EventLog(tmp_path / "seq" / "events.jsonl")],
        out_dir=tmp_path / "seq",
    )
    ref.run()
    det, rec = OverlapFake(), Recorder()
    loop = PipelinedLoop(
        det, file_source(n), Decider(NAMES), [EventLog(tmp_path / "events.jsonl"), rec], out_dir=tmp_path
    )
    summary, error = run_joined(loop)
    assert error is None and summary["frames"] == n and summary["in_flight"] == 2
    assert det.decoded == list(range(n)) and det.most == 2
    overlapped = [i for i in range(n - 1) if det.log.index(("submit", i + 1)) < det.log.index(("collect", i))]
    assert len(overlapped) > n // 2  # the pre stage keeps up with this fake, so most frames overlap
    strip = ("ts", "latency_ms", "run")  # when it happened, how long it took, which run; the rest must match
    events = [{k: v for k, v in e.items() if k not in strip} for e in read_events(tmp_path / "events.jsonl")]
    reference = [
        {k: v for k, v in e.items() if k not in strip} for e in read_events(tmp_path / "seq" / "events.jsonl")
    ]
    assert events == reference and [e["frame"] for e in events] == [i for i in range(n) if is_defective(i)]
    assert summary["stages_ms"]["infer"]["p50"] is not None and not stage_threads()


def test_two_slot_detector_failures_are_counted_in_frame_order(tmp_path, caplog):
    det = OverlapFake(fail_submit={5}, fail_collect={6, 30})
    loop = PipelinedLoop(det, file_source(40), Decider(NAMES), max_detector_errors=3)
    with caplog.at_level(logging.ERROR, "defectdet.inspect"):
        summary, error = run_joined(loop)
    assert error is None and summary["frames"] == 37 and summary["detector_errors"] == 3
    assert det.decoded == [i for i in range(40) if i not in (5, 6, 30)]
    assert (
        "frame 5: detector failed (ValueError: frame 5: enqueue failed)" in caplog.text
        and not stage_threads()
    )
    # failures in a row are counted in frame order: a submit failure (5) then two collect failures (6, 7)
    det = OverlapFake(fail_submit={5}, fail_collect={6, 7})
    summary, error = run_joined(PipelinedLoop(det, file_source(40), Decider(NAMES), max_detector_errors=3))
    assert isinstance(error, ValueError) and "frame 7" in str(error) and det.decoded == list(range(5))
    assert not stage_threads()


def test_a_live_source_on_a_two_slot_detector_does_not_wait_for_the_next_frame():
    """With no next frame waiting, the infer stage collects at once: a part's verdict never waits for
    the next part (latency stays near the model time, not the camera period)."""
    counter, rec = [0], Recorder()
    src = FrameSource(parse_source("0"), opener=lambda spec: ScriptedReader(counter, period=0.05), stall_s=0)
    det = OverlapFake()
    summary, error = run_joined(PipelinedLoop(det, src, Decider(NAMES), [rec], max_frames=8))
    assert error is None and summary["frames"] == 8 and det.decoded == sorted(set(det.decoded))
    assert det.most == 1  # one frame every 50 ms, a 3 ms model: each is collected before the next arrives
    assert summary["latency_ms"]["p50"] < 40
