"""The line teaches the model: review queue -> review on the page's HTTP API -> harvest -> shadow -> compare.

End to end on the synthetic conveyor. The models are oracles reading the conveyor's ground truth
(looked up by the frame's pixels): the live one was never taught ``crack`` (it sees a crack as a
faint ``scratch``, under its threshold: a near miss) and rejects two good parts; the candidate, with
the harvested data set's class list, knows every class. Training a detector that learns a class
from a handful of frames does not fit in a unit test on this CPU; the data flow around it does.
"""

import hashlib
import json
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

from defectdet.cli import main
from defectdet.compare import compare_run, format_report
from defectdet.data.harvest import harvest
from defectdet.data.synthetic import CLASSES, conveyor_frame, make_dataset
from defectdet.data.validate import check_dataset
from defectdet.runtime.detections import Detections
from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.loop import InspectionLoop
from defectdet.station.review import ReviewQueue
from defectdet.station.shadow import ShadowSink
from defectdet.station.sink import BaseSink
from defectdet.station.sinks import EventLog, read_events

pytest.importorskip("aiohttp")

SEED, W, H, RATE, SCALE, FRAMES = 4, 192, 160, 0.5, 2.0, 384  # 16 parts; parts 6 and 15 carry a crack only
URI = f"synthetic://?frames={FRAMES}&seed={SEED}&width={W}&height={H}&defect_rate={RATE}&defect_scale={SCALE}"
LIVE_NAMES = {0: "scratch", 1: "spot", 2: "dent"}  # never saw a crack
FALSE_REJECT_PARTS = (0, 5)  # good parts the live model rejects (a spot that is not there)


def _truth(frame):
    """The conveyor frame's defects wholly in view: [(class name, x1, y1, x2, y2)], and its part."""
    img, info = conveyor_frame(SEED, frame, W, H, defect_rate=RATE, defect_scale=SCALE)
    boxes = [(CLASSES[c], x1, y1, x2, y2) for c, x1, y1, x2, y2 in info["boxes"] if x1 >= 0 and x2 <= W]
    return img, boxes, info


@pytest.fixture(scope="module")
def truth():
    """Frame pixels' hash -> (frame index, boxes wholly in view, part info)."""
    table = {}
    for f in range(FRAMES):
        img, boxes, info = _truth(f)
        table[hashlib.sha1(img.tobytes()).hexdigest()] = (f, boxes, info)
    return table


class Oracle:
    """A detector reading the ground truth; ``knows``: the classes it detects, by name -> its class id."""

    def __init__(self, truth, names, live=False):
        self.truth, self.names, self.live = truth, dict(names), live
        self.ids = {n: i for i, n in self.names.items()}

    def __call__(self, image):
        f, boxes, info = self.truth[hashlib.sha1(image.tobytes()).hexdigest()]
        xyxy, conf, cls = [], [], []
        for name, *box in boxes:
            if name in self.ids:
                xyxy.append(box), conf.append(0.9), cls.append(self.ids[name])
            elif self.live:  # an unknown defect: a faint scratch, under the threshold
                xyxy.append(box), conf.append(0.45), cls.append(self.ids["scratch"])
        if self.live and info["part"] in FALSE_REJECT_PARTS and info["in_view"]:
            (
                xyxy.append([W / 2 - 8, H / 2 - 8, W / 2 + 8, H / 2 + 8]),
                conf.append(0.8),
                cls.append(self.ids["spot"]),
            )
        if not xyxy:
            return Detections.empty()
        return Detections.from_arrays(np.array(xyxy, np.float32), conf, cls, self.names)


class Gate(BaseSink):
    """Holds the run open after the review queue is flushed, until ``during`` (on a thread) is done."""

    def __init__(self, during):
        self.during, self.result, self.closing = during, None, threading.Event()

    def emit(self, result):
        pass

    def close(self):
        self.closing.set()
        self.thread.join(60)

    def open(self):
        self.thread = threading.Thread(target=lambda: setattr(self, "result", self._run()))
        self.thread.start()

    def _run(self):
        self.closing.wait(120)
        return self.during()


def request(url, body=None, token=None, content_type="application/json", method=None):
    headers = {"Content-Type": content_type} if body is not None else {}
    if token:
        headers["X-Defectdet-Token"] = token
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    req = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def review_all(url, token):
    """The operator: every queued item judged against the ground truth, through the HTTP API."""
    status, body = request(url + "/api/review/items")
    assert status == 200
    items, judged = json.loads(body)["items"], []
    for item in items:
        _, boxes, _ = _truth(item["frame"])
        verdict = {
            "verdict": "defect" if boxes else "ok",
            "who": "ana",
            "boxes": [
                {"class": n, "xyxy": b, "origin": "model" if n in LIVE_NAMES.values() else "drawn"}
                for n, *b in boxes
            ],
        }
        status, body = request(url + f"/api/review/{item['id']}", verdict, token)
        assert status == 200, body
        judged.append((item, verdict))
    return judged


def station_run(truth, out, shadow=None):
    """Live model + event log + review queue + page (review attached); the operator reviews at the end."""
    from defectdet.station.outputs.page import OperatorPage
    from defectdet.station.review_page import attach_review

    queue = ReviewQueue(
        out / "review",
        LIVE_NAMES,
        [0.5] * 3,
        budget_mb=50,
        near_band=0.1,
        audit_rate=0.02,
        seed=0,
        block=True,
        info={"model": "live.onnx:aaa"},
    )
    page = OperatorPage(port=0, info={"model": "live.onnx:aaa"})
    view = attach_review(page.server, out / "review", list(LIVE_NAMES.values()))

    def during():
        url, checks = page.server.url, {}
        some = json.loads(request(url + "/api/review/items")[1])["items"][0]["id"]
        good = {"verdict": "ok", "who": "eve"}
        checks["none"] = request(url + f"/api/review/{some}", good)[0]
        checks["wrong"] = request(url + f"/api/review/{some}", good, "not-the-token")[0]
        checks["form"] = request(
            url + f"/api/review/{some}", b"verdict=ok", view.token, "application/x-www-form-urlencoded"
        )[0]
        checks["get"] = request(url + f"/api/review/{some}?verdict=ok&token={view.token}")[0]
        checks["bad"] = request(url + f"/api/review/{some}", {"verdict": "defect", "boxes": []}, view.token)[
            0
        ]
        checks["html"] = request(url + "/review")
        checks["main"] = request(url + "/")
        image = request(url + f"/review/img/{some}")
        return checks, image, review_all(url, view.token)

    gate = Gate(during)
    sinks = [EventLog(out / "events.jsonl", fsync=False), queue, *([shadow] if shadow else []), gate, page]
    summary = InspectionLoop(
        Oracle(truth, LIVE_NAMES, live=True),
        FrameSource(URI),
        Decider(LIVE_NAMES, conf=0.5),
        sinks,
        status_every=0,
        model_id="live.onnx:aaa",
        out_dir=out,
    ).run()
    return summary, gate.result, view


def test_the_line_teaches_the_model(truth, tmp_path):
    run1 = tmp_path / "run1"
    summary, (checks, image, judged), view = station_run(truth, run1)
    assert summary["frames"] == FRAMES and len(list(read_events(run1 / "events.jsonl"))) == summary["ng"] > 0
    assert (checks["none"], checks["wrong"], checks["form"], checks["get"], checks["bad"]) == (
        401,
        403,
        415,
        405,
        400,
    )
    assert checks["html"][0] == 200 and b"X-Defectdet-Token" in checks["html"][1]
    assert checks["main"][0] == 200 and b'<a id="review-link" href="review">' in checks["main"][1]
    assert image[0] == 200 and image[1][:4] == b"\x89PNG"
    kinds = {item["kind"] for item, _ in judged}
    assert {"ng", "near_miss", "audit"} <= kinds and all(
        item["run_id"] and item["model"] for item, _ in judged
    )
    near = [v for item, v in judged if item["kind"] == "near_miss"]
    assert near and all(b["class"] == "crack" for v in near for b in v["boxes"])  # the escapes, drawn
    assert sum(v["verdict"] == "ok" for item, v in judged if item["kind"] == "ng") == len(FALSE_REJECT_PARTS)
    log = [json.loads(line) for line in (run1 / "review" / "review.jsonl").read_text().splitlines()]
    assert (
        len(log) == len(judged)
        and {r["who"] for r in log} == {"ana"}
        and all(r["ts"] and r["remote"] for r in log)
    )

    data = tmp_path / "harvested"
    rep = harvest([run1], data)
    assert rep.names == ["scratch", "spot", "dent", "crack"] and rep.boxes.get("crack", 0) >= 2
    assert (
        rep.hard_negatives >= len(FALSE_REJECT_PARTS)
        and sum(rep.added.values()) == len(judged) - rep.duplicates
    )
    check = check_dataset(data / "data.yaml")
    assert check.ok, [str(p) for p in check.errors]
    again = harvest([run1], data)
    assert sum(again.added.values()) == 0 and again.duplicates == sum(rep.added.values())
    assert len((data / "provenance.jsonl").read_text().splitlines()) == sum(rep.added.values())

    # "retrained": a candidate with the harvested data set's classes, run in shadow on the same line
    names = dict(enumerate(rep.names))
    shadow = ShadowSink(
        Oracle(truth, names),
        names,
        [0.5] * len(names),
        tmp_path / "run2" / "shadow.jsonl",
        "candidate.onnx:bbb",
        block=True,
    )
    summary2, (_, _, judged2), _ = station_run(truth, tmp_path / "run2", shadow)
    assert summary2["ng"] == summary["ng"], "the shadow drives nothing"
    assert (
        summary2["sinks"]["shadow"]["shadowed"] == FRAMES
        and summary2["sinks"]["shadow"]["candidate_only"] > 0
    )
    cmp = compare_run(tmp_path / "run2")
    live, cand = cmp["reviewed"]["live"], cmp["reviewed"]["candidate"]
    assert cand["per_class"]["crack"]["found"] == cand["per_class"]["crack"]["frames"] >= 2
    assert live["per_class"]["crack"]["found"] == 0 and live["escape"] >= 2 and cand["escape"] == 0
    assert live["overkill"] == len(FALSE_REJECT_PARTS) and cand["overkill"] == 0
    assert 0 < cmp["agreement"]["rate"] < 1 and cmp["verdict_sources"]["unseen"] == 0
    text = format_report(cmp)
    assert "crack 0/" in text and "candidate" in text


def test_the_main_view_links_to_the_review_view_only_when_review_is_on(tmp_path):
    from defectdet.station.outputs.page import OperatorPage
    from defectdet.station.review_page import attach_review

    pages = {"off": OperatorPage(port=0), "on": OperatorPage(port=0)}
    attach_review(pages["on"].server, tmp_path / "review", list(LIVE_NAMES.values()))
    html = {}
    for key, page in pages.items():
        page.open()
        try:
            status, html[key] = request(page.server.url + "/")
            assert status == 200
        finally:
            page.close()
    assert b'id="review-link" href="review"' in html["on"] and b"review-link" in html["off"]  # the script
    assert b'<a id="review-link"' not in html["off"] and b"<!--review-->" not in html["on"]


def test_merge_adds_to_train_only_and_keeps_ids(truth, tmp_path):
    run = tmp_path / "run"
    station_run(truth, run)
    base = make_dataset(tmp_path / "base", images=6, defect_rate=0.5, imgsz=64, video_frames=0)
    rep = harvest([run], tmp_path / "merged", merge=base)
    assert rep.names == list(CLASSES) and rep.added["val"] == 0 and rep.added["train"] > 0
    import yaml

    doc = yaml.safe_load((tmp_path / "merged" / "data.yaml").read_text())
    assert len(doc["train"]) == 2 and len(doc["val"]) == 1 and doc["names"][2] == "crack"
    crack_rows = [
        line
        for p in (tmp_path / "merged" / "labels" / "train").glob("*.txt")
        for line in p.read_text().splitlines()
        if line.startswith("2 ")
    ]
    assert crack_rows, "the harvested cracks keep the base data set's id for crack"
    assert check_dataset(tmp_path / "merged" / "data.yaml").ok


def test_queue_stays_within_its_disk_budget_and_never_costs_an_event(tmp_path):
    from defectdet.station.snapshots import Snapshots

    class Noisy:  # NG every fourth frame, a near miss on the others
        names = {0: "scratch"}

        def __init__(self):
            self.n = 0

        def __call__(self, image):
            self.n += 1
            return Detections.from_arrays(
                np.array([[4, 4, 30, 30]], np.float32), [0.9 if self.n % 4 == 0 else 0.45], [0], self.names
            )

    budget_mb = 0.25
    queue = ReviewQueue(
        tmp_path / "review", Noisy.names, [0.5], budget_mb=budget_mb, audit_rate=0.0, block=True
    )
    sinks = [
        Snapshots(tmp_path / "snaps", quota_mb=100, block=True),
        EventLog(tmp_path / "events.jsonl", fsync=False),
        queue,
    ]
    sizes = []

    class Watch(BaseSink):
        def emit(self, result):
            if result.frame.index % 25 == 0:
                sizes.append(sum(p.stat().st_size for p in (tmp_path / "review" / "items").glob("*")))

    summary = InspectionLoop(
        Noisy(),
        FrameSource("synthetic://?frames=400&seed=2&width=160&height=120"),
        Decider(Noisy.names, conf=0.5),
        [*sinks, Watch()],
        status_every=0,
    ).run()
    stats = summary["sinks"]["review"]
    on_disk = sum(p.stat().st_size for p in (tmp_path / "review" / "items").glob("*"))
    largest = max(p.stat().st_size for p in (tmp_path / "review" / "items").glob("*.png"))
    assert stats["deleted"] > 0 and stats["dropped"] == 0 and stats["queued"]["ng"] == summary["ng"] == 100
    assert on_disk <= budget_mb * 2**20 + 2 * largest and max(sizes) <= budget_mb * 2**20 + 2 * largest
    assert len(list(read_events(tmp_path / "events.jsonl"))) == summary["ng"]
    assert summary["sinks"]["snapshots"]["written"] == 2 * summary["ng"]


def test_a_live_source_drops_review_items_rather_than_wait(tmp_path):
    class SlowDisk(ReviewQueue):
        def _write(self, part):
            time.sleep(0.2)
            super()._write(part)

    queue = SlowDisk(tmp_path / "review", {0: "scratch"}, [0.5], audit_rate=1.0, queue=2, block=False)
    t0 = time.perf_counter()
    summary = InspectionLoop(
        lambda img: Detections.empty(),
        FrameSource("synthetic://?frames=40&seed=1&width=64&height=48"),
        Decider({0: "scratch"}),
        [queue],
        status_every=0,
    ).run()
    emit_time = time.perf_counter() - t0
    assert summary["frames"] == 40 and queue.dropped > 0 and queue.written + queue.dropped == 40
    assert emit_time < 0.2 * 40, "the loop never waited for the writer"


def test_verdict_bodies_are_checked():
    from defectdet.station.review_page import BadVerdict, check_verdict

    meta = {"width": 100, "height": 80}
    ok = check_verdict(
        {"verdict": "defect", "boxes": [{"class": "new one", "xyxy": [-5, 2, 50, 90], "origin": "drawn"}]},
        meta,
    )
    assert ok["boxes"][0]["xyxy"] == [0.0, 2.0, 50.0, 80.0] and ok["who"] == "operator"
    for body, words in (
        ({"verdict": "maybe"}, "expected one of"),
        ({"verdict": "ok", "boxes": [{"class": "a", "xyxy": [1, 1, 9, 9]}]}, "takes no boxes"),
        ({"verdict": "defect", "boxes": [{"class": "<b>", "xyxy": [1, 1, 9, 9]}]}, "class"),
        ({"verdict": "defect", "boxes": [{"class": "a", "xyxy": [9, 1, 2, 9]}]}, "x2 > x1"),
        ([], "JSON object"),
    ):
        with pytest.raises(BadVerdict, match=words):
            check_verdict(body, meta)


def test_near_misses_are_counted_inside_the_roi_only(tmp_path):
    from defectdet.runtime.detections import Detections as D
    from defectdet.station.decisions import Decision
    from defectdet.station.sinks import FrameResult
    from defectdet.station.sources import Frame

    queue = ReviewQueue(tmp_path, {0: "scratch"}, [0.5], near_band=0.1)
    roi = np.array([[[0, 0]], [[50, 0]], [[50, 50]], [[0, 50]]], np.float32)  # (K, 1, 2) pixels

    def kind(box, conf):
        dets = D.from_arrays(np.array([box], np.float32), [conf], [0], {0: "scratch"})
        frame = Frame(np.zeros((100, 100, 3), np.uint8), 0, time.time(), time.perf_counter(), {})
        result = FrameResult(frame, dets, Decision(False, False, False, D.empty()), 1.0, roi=roi)
        return queue.classify(result)[0]

    assert kind([10, 10, 20, 20], 0.45) == "near_miss" and kind([70, 70, 90, 90], 0.45) is None
    assert kind([10, 10, 20, 20], 0.3) is None  # further under its threshold than the band


def test_review_command_serves_a_finished_run(truth, tmp_path):
    from defectdet.station.review_cli import serve

    run = tmp_path / "run"
    station_run(truth, run)
    first = (run / "review" / "review.jsonl").read_text().splitlines()
    stop, urls = threading.Event(), []
    kwargs = {"stop": stop, "on_ready": urls.append}
    thread = threading.Thread(target=serve, args=(run, "127.0.0.1:0"), kwargs=kwargs)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not urls and time.monotonic() < deadline:
            time.sleep(0.05)
        item = json.loads(request(urls[0] + "/api/review/items")[1])["items"][-1]
        assert item["review"] is not None, "the verdicts given during the run are shown"
        token = (run / "review" / "token").read_text().strip()
        assert request(urls[0] + f"/api/review/{item['id']}", {"verdict": "skip"})[0] == 401
        body = {"verdict": "skip", "who": "bo"}
        assert request(urls[0] + f"/api/review/{item['id']}", body, token)[0] == 200
    finally:
        stop.set()
        thread.join(10)
    log = (run / "review" / "review.jsonl").read_text().splitlines()
    assert len(log) == len(first) + 1 and json.loads(log[-1])["who"] == "bo"
    assert main(["review", str(tmp_path / "nothing")]) == 2


def test_a_slow_shadow_on_a_live_line_shadows_a_share_and_says_so(tmp_path):
    from lineservers import LogLines

    from defectdet.station.decisions import Decision
    from defectdet.station.sinks import FrameResult
    from defectdet.station.sources import Frame

    names = {0: "scratch"}

    def slow(image):
        time.sleep(0.05)
        return Detections.from_arrays(np.array([[1, 1, 9, 9]], np.float32), [0.9], [0], names)

    shadow = ShadowSink(slow, names, [0.5], tmp_path / "shadow.jsonl", "slow.onnx:ccc", block=False)
    ok = Decision(False, False, False, Detections.empty())
    with LogLines() as log:
        shadow.open()
        t0 = time.perf_counter()
        for i in range(40):
            frame = Frame(np.zeros((16, 16, 3), np.uint8), i, time.time(), time.perf_counter(), {})
            shadow.emit(FrameResult(frame, Detections.empty(), ok, 1.0, model_id="live.onnx:aaa"))
            time.sleep(0.002)
        emitting = time.perf_counter() - t0
        shadow.close()
    s = shadow.stats()
    assert emitting < 40 * 0.05 / 2, "the line never waited for the candidate"
    assert s["skipped"] > 0 and s["shadowed"] + s["skipped"] == 40 and s["candidate_only"] == s["shadowed"]
    assert len(log.having("cannot keep up")) == 1
    meta = json.loads((tmp_path / "shadow.json").read_text())
    assert meta["skipped"] == s["skipped"] and meta["live_model"] == "live.onnx:aaa"
    assert (
        len((tmp_path / "shadow.jsonl").read_text().splitlines()) == s["shadowed"]
    )  # each one a disagreement
