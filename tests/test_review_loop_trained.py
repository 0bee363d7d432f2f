"""The line teaches the model, with real models (slow: two short trainings, ~105 s of one CPU core).

test_review_loop.py runs the loop's data flow with oracle models; here every model is a trained
defectdet-pico, exported to ONNX and run by ``defectdet inspect``:

1. the live model is trained on synthetic parts that never show a ``crack`` (classes scratch, spot,
   dent), exported, and inspects a synthetic conveyor whose parts do carry cracks, with the review
   queue on (near misses down to ``NEAR_BAND`` under the threshold, an audit share of OK frames);
2. an operator reviews the queue through the review view's HTTP API (``defectdet review RUN``, the
   page's routes): without the token a write is refused (401, 403 for a wrong one); with it, each
   item gets the conveyor's ground truth, the cracks drawn as a new class;
3. ``defectdet data harvest --merge base`` turns the verdicts into training images (``crack``
   appended as a fourth class), the live checkpoint is fine-tuned on them plus the base data,
   exported, and run beside the live model by ``inspect --shadow``; the operator reviews that run's
   queue too;
4. ``defectdet compare`` shows the candidate finding ``crack`` on the reviewed crack frames, which
   the live model cannot name (it escapes or mislabels them).

The claim is about the reviewed frames: the candidate has trained on them (a line's own escapes
are what it should learn first); a held-out accuracy is not what this measures. The parts are
drawn large and the defects at ``SCALE`` times the generator's default size so that a few hundred
optimizer steps on one CPU core learn them.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("aiohttp")
from test_review_loop import request  # noqa: E402  (urllib with the token header)

from defectdet.cli import main  # noqa: E402
from defectdet.data.synthetic import CLASSES, conveyor_frame, make_image  # noqa: E402

pytestmark = pytest.mark.slow

SIZE, SCALE = 64, 3.0  # the conveyor frame (W = H) and the parts' size; defects 3x the default size
SEED, RATE, PARTS = 0, 0.7, 10  # the conveyor: 7 of its 10 parts defective; parts 0, 6 and 9 a crack
FRAMES = PARTS * 24  # 24 frames per part
URI = (
    f"synthetic://?frames={FRAMES}&seed={SEED}&width={SIZE}&height={SIZE}"
    f"&defect_rate={RATE}&defect_scale={SCALE}"
)
BASE = ("scratch", "spot", "dent")  # the live model's classes: never a crack
BASE_IMAGES, BASE_SEED = 40, 100
MODEL = "defectdet-pico.yaml"  # about 10x fewer FLOPs than yolo11n
TRAIN = dict(  # a short CPU run: AdamW, a step per batch, no mosaic, no validation until the end
    imgsz=SIZE,
    batch=16,
    nbs=16,
    workers=0,
    device="cpu",
    plots=False,
    val=False,
    mosaic=0.0,
    warmup_epochs=1,
    cls_loss="bce",
    optimizer="AdamW",
    threads=1,
    seed=0,
    deterministic=True,
    exist_ok=True,
    verbose=False,
)
LIVE = dict(epochs=100, lr0=0.01)  # from scratch
# fine-tuned from the live checkpoint; images holding a rare class (the few cracks) drawn more often
CANDIDATE = dict(epochs=150, lr0=0.005, sampling="repeat", repeat_thresh=0.5)
CONF, NEAR_BAND, AUDIT = 0.25, 0.2, 0.05  # thresholds, and the review queue's near band and audit share


def base_dataset(root: Path) -> Path:
    """``BASE_IMAGES`` synthetic parts without a crack (a part drawn with one is left out)."""
    import cv2

    ids = {CLASSES.index(n): i for i, n in enumerate(BASE)}
    for sub in ("train", "val"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "labels" / sub).mkdir(parents=True)
    index = kept = 0
    while kept < BASE_IMAGES:
        img, boxes = make_image(BASE_SEED, index, SIZE, index % 4 != 0, SCALE)
        index += 1
        if any(c not in ids for c, *_ in boxes):
            continue
        sub = "val" if kept % 5 == 4 else "train"
        kept += 1
        cv2.imwrite(str(root / "images" / sub / f"part_{index:04d}.png"), img)
        rows = "".join(f"{ids[c]} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)
        (root / "labels" / sub / f"part_{index:04d}.txt").write_text(rows)
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(BASE))
    (root / "data.yaml").write_text(f"path: {root}\ntrain: images/train\nval: images/val\nnames:\n{names}")
    return root / "data.yaml"


def fit_and_export(model: str, data: Path, root: Path, name: str, **settings) -> Path:
    """``defectdet train`` (from ``model``), then ``export``: the ONNX file."""
    from defectdet.export.onnx import export_onnx
    from defectdet.train import train

    run = train(**{**TRAIN, **settings}, model=model, data=str(data), project=str(root), name=name)
    return export_onnx(run / "weights" / "best.pt", imgsz=SIZE, out=root / name / "model.onnx").onnx


def truth(frame: int) -> list[tuple[str, list[float]]]:
    """What the operator sees on a conveyor frame: each defect at least half in view, clipped to it."""
    _, info = conveyor_frame(SEED, frame, SIZE, SIZE, defect_rate=RATE, defect_scale=SCALE)
    out = []
    for c, x1, y1, x2, y2 in info["boxes"]:
        a, b = max(x1, 0.0), min(x2, float(SIZE))
        if b - a >= 0.5 * (x2 - x1):
            out.append((CLASSES[c], [a, max(y1, 0.0), b, min(y2, float(SIZE))]))
    return out


def inspect(model: Path, run: Path, *extra: str) -> dict:
    args = ["inspect", "--model", str(model), "--source", URI, "--out", str(run), "--review"]
    settings = [
        f"conf={CONF}",
        "status_every=0",
        f"review.near_band={NEAR_BAND}",
        f"review.audit_rate={AUDIT}",
    ]
    assert main([*args, *settings, *extra]) == 0
    return json.loads((run / "summary.json").read_text())


def review(run: Path) -> tuple[tuple, list]:
    """``defectdet review RUN`` on a free port; the operator judges every item over HTTP."""
    from defectdet.station.review_cli import serve

    stop, urls = threading.Event(), []
    thread = threading.Thread(
        target=serve, args=(run, "127.0.0.1:0"), kwargs={"stop": stop, "on_ready": urls.append}
    )
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not urls and time.monotonic() < deadline:
            time.sleep(0.05)
        url, token = urls[0], (run / "review" / "token").read_text().strip()
        status, body = request(url + "/api/review/items")
        assert status == 200
        items, judged = json.loads(body)["items"], []
        some = f"{url}/api/review/{items[0]['id']}"
        refused = (request(some, {"verdict": "ok"})[0], request(some, {"verdict": "ok"}, "wrong")[0])
        for item in items:
            boxes = truth(item["frame"])
            verdict = {
                "verdict": "defect" if boxes else "ok",
                "who": "ana",
                "boxes": [
                    {"class": n, "xyxy": b, "origin": "drawn" if n not in BASE else "model"} for n, b in boxes
                ],
            }
            status, body = request(f"{url}/api/review/{item['id']}", verdict, token)
            assert status == 200, body
            judged.append((item, verdict))
    finally:
        stop.set()
        thread.join(10)
    return refused, judged


def test_a_retrained_model_catches_the_class_the_line_taught_it(tmp_path, capsys):
    base = base_dataset(tmp_path / "base")
    live = fit_and_export(MODEL, base, tmp_path / "train", "live", **LIVE)
    run1 = tmp_path / "run1"
    s1 = inspect(live, run1)
    refused, judged = review(run1)
    assert refused == (401, 403), "a write without the token (or with a wrong one) is refused"
    cracks = [item["frame"] for item, v in judged if any(b["class"] == "crack" for b in v["boxes"])]
    assert cracks, f"no crack reached the review queue: {[(i['kind'], i['frame']) for i, _ in judged]}"

    data = tmp_path / "harvested"
    assert main(["data", "harvest", "--from", str(run1), "--out", str(data), "--merge", str(base)]) == 0
    assert main(["data", "check", str(data / "data.yaml")]) == 0
    best = tmp_path / "train" / "live" / "weights" / "best.pt"
    candidate = fit_and_export(str(best), data / "data.yaml", tmp_path / "train", "candidate", **CANDIDATE)

    run2 = tmp_path / "run2"
    s2 = inspect(live, run2, "--shadow", str(candidate))
    assert s2["ng"] == s1["ng"] and s2["sinks"]["shadow"]["shadowed"] == FRAMES, "the shadow drives nothing"
    review(run2)
    capsys.readouterr()
    assert main(["compare", str(run2)]) == 0
    report = capsys.readouterr().out
    print(report)  # shown with -s: what the line engineer reads
    rep = json.loads((run2 / "compare.json").read_text())
    live_r, cand_r = rep["reviewed"]["live"], rep["reviewed"]["candidate"]
    crack = cand_r["per_class"]["crack"]
    assert live_r["per_class"]["crack"]["found"] == 0, report  # the live model has no such class
    assert crack["found"] >= max(1, crack["frames"] // 2), report
    taught = [d for d in rep["differences"] if "crack" in d["truth"] and d["live"] == "escape"]
    assert any(d["candidate"] == "caught" and "crack" in d["candidate_classes"] for d in taught), report
    assert f"crack {crack['found']}/{crack['frames']}" in report
