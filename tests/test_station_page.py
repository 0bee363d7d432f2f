"""The operator page: its state and routes against the loop, read-only, the token rule, a port in
use, a stream client that never reads; and, in a real headless chromium (Debian's, driven by
selenium), `defectdet inspect --serve` on synthetic:// with counters changing, the stream and NG
pictures arriving, and a screenshot kept as a test artefact."""

import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import benchscripts
import pytest
from lineservers import BusyPort, Inspect, LogLines, free_port, get
from test_inspect_sinks import NAMES
from test_station_sinks import EveryThirdNg

from defectdet.station.capture import FrameSource
from defectdet.station.decisions import Decider
from defectdet.station.loop import InspectionLoop
from defectdet.station.sinks import EventLog, read_events

pytest.importorskip("aiohttp")


def page_run(tmp_path, during=None, uri="synthetic://?frames=90&seed=1&fps=45", **kw):
    """The loop with an event log and the page; ``during(page)`` runs on a thread while the loop runs."""
    from defectdet.station.outputs.page import OperatorPage

    page = OperatorPage(
        port=0, info={"model": "m.onnx:abc", "thresholds": {NAMES[0]: 0.5}, "conf": 0.25}, **kw
    )
    loop = InspectionLoop(
        EveryThirdNg(),
        FrameSource(uri),
        Decider(NAMES),
        [EventLog(tmp_path / "events.jsonl", fsync=False), page],
        status_every=0,
    )
    page.status, seen = loop.summary, []

    def work():
        deadline = time.monotonic() + 10
        while page.server.port == 0 and time.monotonic() < deadline:  # until the loop opened the page
            time.sleep(0.01)
        seen.append(during(page))

    worker = threading.Thread(target=work) if during else None
    if worker:
        worker.start()
    summary = loop.run()
    if worker:
        worker.join(30)
    assert len(list(read_events(tmp_path / "events.jsonl"))) == summary["ng"] > 0, (
        "every NG frame is in the events"
    )
    return summary, page, seen


def test_state_routes_and_pictures_follow_the_loop(tmp_path):
    def during(page):
        time.sleep(0.8)
        state = json.loads(get(page.server.url + "/api/state")[1])
        part = state["ng_parts"][0]
        return (
            state,
            get(page.server.url + "/"),
            get(page.server.url + f"/ng/{part['id']}.jpg"),
            get(page.server.url + "/ng/0.jpg"),
        )

    summary, page, [(state, html, picture, missing)] = page_run(tmp_path, during)
    assert 0 < state["frames"] < summary["frames"] and state["ok"] + state["ng"] == state["frames"]
    assert (
        state["model"] == "m.onnx:abc"
        and state["thresholds"] == {NAMES[0]: 0.5}
        and state["health"]["sink_errors"] == 0
    )
    assert (
        state["per_class"] == {NAMES[0]: state["ng"]}
        and state["fps"] > 0
        and state["latency_p99_ms"] is not None
    )
    assert (
        html[0] == 200 and b"stream.mjpg" in html[1] and picture[0] == 200 and picture[1][:2] == b"\xff\xd8"
    )
    assert missing[0] == 404 and len(state["ng_parts"]) <= 8
    final = page.state()
    assert (final["frames"], final["ok"], final["ng"]) == (summary["frames"], summary["ok"], summary["ng"])


def test_the_page_is_read_only(tmp_path):
    import urllib.error
    import urllib.request

    def during(page):
        time.sleep(0.3)
        try:
            urllib.request.urlopen(
                urllib.request.Request(page.server.url + "/api/state", data=b"{}", method="POST"), timeout=5
            )
        except urllib.error.HTTPError as e:
            return e.code

    assert page_run(tmp_path, during)[2] == [405]


def test_port_in_use_is_one_line_and_the_loop_goes_on(tmp_path):
    from defectdet.station.outputs.page import OperatorPage

    busy = BusyPort()
    log_path = tmp_path / "events.jsonl"
    try:
        with LogLines() as log:
            loop = InspectionLoop(
                EveryThirdNg(),
                FrameSource("synthetic://?frames=30&seed=1"),
                Decider(NAMES),
                [EventLog(log_path, fsync=False), OperatorPage(port=busy.port)],
                status_every=0,
            )
            summary = loop.run()
    finally:
        busy.close()
    lines = log.having("page: open failed")
    assert len(lines) == 1 and f"127.0.0.1:{busy.port}" in lines[0] and "is the port in use?" in lines[0]
    assert summary["frames"] == 30 and len(list(read_events(log_path))) == summary["ng"] == 10


def test_a_stream_client_that_never_reads_is_dropped_and_never_slows_the_loop(tmp_path):
    def during(page):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", page.server.port))
        s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")  # and never read
        time.sleep(4.0)
        s.close()

    with LogLines() as log:
        summary, page, _ = page_run(
            tmp_path,
            during,
            uri="synthetic://?frames=240&seed=1&fps=50&width=1280&height=960",
            stream_fps=30,
            stream_width=1280,
            jpeg_quality=95,
            write_timeout_s=1.0,
        )
    lines = log.having("read nothing")
    assert len(lines) == 1 and "disconnected" in lines[0] and page.slow_clients == 1
    # 4.8 s of frames at 50 fps; a loop that waited on the stalled client (1 s write timeout) would take >=
    # 240 s
    assert summary["frames"] == 240 and summary["seconds"] < 60.0


# --------------------------------------------------------------------------- the browser
CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """The stand-in yolo11n of the inspect tests (boxes on a share of conveyor frames at conf 0.5)."""
    return benchscripts.stand_in_model(tmp_path_factory.mktemp("model"), "conveyor128")


def chrome():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium + chromedriver here (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (pip install 'defectdet[dev]')"
    )
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1400,1000",
    ):
        opts.add_argument(arg)
    try:
        return webdriver.Chrome(service=Service(DRIVER), options=opts)
    except Exception as e:  # a chromium that cannot start here (sandbox, libraries) is an environment matter
        pytest.skip(f"chromium did not start: {e.__class__.__name__}: {str(e).splitlines()[0]}")


def test_operator_page_in_a_real_browser(model, tmp_path):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'defectdet[dev]')")
    from selenium.webdriver.support.ui import WebDriverWait

    port, out = free_port(), tmp_path / "run"
    run = Inspect(
        [
            "--model",
            str(model),
            "--source",
            "synthetic://?width=640&height=480&fps=15&live=1",
            "--out",
            str(out),
            "--serve",
            f"127.0.0.1:{port}",
            "--duration",
            "90",
            "conf=0.5",
            "status_every=0",
            "page.stream_fps=10",
        ],
        tmp_path,
    )
    driver = None
    try:
        run.wait_for(f"http://127.0.0.1:{port}/api/state")
        driver = chrome()
        driver.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        text = lambda id_: driver.find_element("id", id_).text  # noqa: E731
        wait.until(lambda d: text("frames").isdigit() and int(text("frames")) > 0)
        first = int(text("frames"))
        wait.until(lambda d: int(text("frames")) > first)  # the counters change
        js = (
            "const i = document.getElementById(arguments[0]); "
            "return i !== null && i.complete && i.naturalWidth;"
        )
        assert (
            wait.until(lambda d: d.execute_script(js, "stream")) > 0
        )  # the live stream's first frame arrived
        ng = (
            "return Array.from(document.querySelectorAll('#ng img'))"
            ".filter(i => i.complete && i.naturalWidth > 0).length"
        )
        wait.until(lambda d: d.execute_script(ng) >= 3)  # NG pictures arrived
        wait.until(lambda d: "model.onnx:" in text("model") and "%" in text("yield"))
        time.sleep(1.0)  # one more frame on the stream and one more poll before the picture
        shot = tmp_path / "operator-page.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        if os.environ.get("DEFECTDET_PAGE_SCREENSHOT"):  # bench/page_screenshot.py: the README's picture
            shutil.copyfile(shot, os.environ["DEFECTDET_PAGE_SCREENSHOT"])
    finally:
        if driver is not None:
            driver.quit()
        summary = run.stop()
    assert summary["stop_reason"] == "SIGTERM" and summary["sinks"]["page"]["streamed"] > 0
    assert len(list(read_events(out / "events.jsonl"))) == summary["ng"] > 0
    assert Path(shot).exists()


def test_review_view_in_a_real_browser(model, tmp_path):
    """The review view (defectdet/station/review_page.py), reached by the main view's link: no token, a
    refused write; the run's token, a missed defect drawn on the picture with a new class and saved,
    then a false reject."""
    pytest.importorskip("selenium", reason="selenium is not installed (pip install 'defectdet[dev]')")
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.support.ui import WebDriverWait

    port, out = free_port(), tmp_path / "run"
    source = "synthetic://?width=640&height=480&fps=10&live=1"
    run = Inspect(
        [
            "--model",
            str(model),
            "--source",
            source,
            "--out",
            str(out),
            "--serve",
            f"127.0.0.1:{port}",
            "--review",
            "--duration",
            "90",
            "conf=0.5",
            "status_every=0",
            "review.audit_rate=0.2",
            "snapshots.enabled=false",
        ],
        tmp_path,
    )
    driver, log = None, out / "review" / "review.jsonl"
    try:
        run.wait_for(f"http://127.0.0.1:{port}/api/state")
        token = (out / "review" / "token").read_text().strip()
        driver = chrome()
        wait = WebDriverWait(driver, 30, poll_frequency=0.2)
        driver.get(f"http://127.0.0.1:{port}/")  # the operator's main view links to the review view
        driver.find_element("id", "review-link").click()
        wait.until(lambda d: d.current_url == f"http://127.0.0.1:{port}/review")
        items = "return document.querySelectorAll('#list .item').length"
        wait.until(lambda d: d.execute_script(items) >= 2)
        driver.find_element("css selector", "#list .item").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('cv').width") > 0)
        driver.find_element("id", "ok").click()  # no token typed: refused
        said = lambda text: lambda d: text in d.find_element("id", "msg").text  # noqa: E731
        wait.until(said("401"), "the write without a token was not refused")
        assert not log.exists()
        driver.get(f"http://127.0.0.1:{port}/review?token={token}")
        wait.until(lambda d: d.execute_script(items) >= 2)
        driver.find_element("css selector", "#list .item").click()
        wait.until(lambda d: d.execute_script("return document.getElementById('cv').width") > 0)
        canvas = driver.find_element("id", "cv")
        (
            ActionChains(driver)
            .move_to_element_with_offset(canvas, -60, -40)
            .click_and_hold()
            .move_by_offset(50, 40)
            .release()
            .perform()
        )  # a box drawn round a missed defect
        cls = driver.find_elements("css selector", "#boxes input.cls")[-1]
        cls.clear()
        cls.send_keys("glue_blob\n")
        driver.find_element("id", "defect").click()
        wait.until(said("saved: defect"), "the drawn box was not saved")
        driver.find_element("id", "ok").click()  # the next item: a false reject, or a good audit frame
        wait.until(said("saved: ok"), "the false reject was not saved")
    finally:
        if driver is not None:
            driver.quit()
        summary = run.stop()
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["verdict"] for r in lines] == ["defect", "ok"] and lines[1]["item"] != lines[0]["item"]
    drawn = [b for b in lines[0]["boxes"] if b["origin"] == "drawn"]
    assert len(drawn) == 1 and drawn[0]["class"] == "glue_blob" and drawn[0]["xyxy"][2] > drawn[0]["xyxy"][0]
    assert summary["sinks"]["review"]["written"] >= 2 and summary["sinks"]["review"]["failed"] == 0


def test_shift_report_html_opens_in_a_real_browser_with_its_images(tmp_path):
    """report.html opened from disk (file://, as from a USB stick): every image decoded, nothing fetched."""
    import cv2
    import numpy as np
    from test_inspect_sinks import make_result

    from defectdet.cli import main
    from defectdet.station.snapshots import Snapshots
    from defectdet.station.tally import Tally

    run = tmp_path / "line1"
    sinks = [
        Snapshots(run / "snapshots", raw=False, queue=0),
        EventLog(run / "events.jsonl", fsync=False),
        Tally(run / "tally.jsonl"),
    ]
    for i in range(6):
        r = make_result(
            i,
            ng=i % 2 == 0,
            trigger=i % 2 == 0,
            image=cv2.resize(np.random.default_rng(i).integers(0, 255, (48, 64, 3), np.uint8), (320, 240)),
        )
        r.run_id, r.part = "20240501T060000Z-abcdef", i // 2 + 1
        for s in sinks:
            s.emit(r)
    for s in sinks:
        s.close()
    assert main(["report", "--events", str(run), "--out", str(tmp_path / "report")]) == 0
    driver = chrome()  # skips without chromium
    try:
        driver.get((tmp_path / "report" / "report.html").as_uri())
        js = "return Array.from(document.images).map(i => i.complete && i.naturalWidth > 0)"
        loaded = driver.execute_script(js)
        assert len(loaded) == 3 + 2 and all(loaded)  # three parts' snapshots, two charts
        assert "rejected parts" in driver.find_element("tag name", "body").text
    finally:
        driver.quit()
