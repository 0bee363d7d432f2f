"""Throughput of the inspection loop with the review queue on against off, side by side.

    python bench/review_overhead.py                          # stand-in yolo11n at 320, 5 rounds of 300 frames
    python bench/review_overhead.py --model runs/x/model.onnx --threads 1 --rounds 7 --audit-rate 0.01

Each round runs the pipelined loop twice over the same in-memory frames (a file-like source: every
frame inspected), arms in alternating order: (off) event log + snapshots, (on) the same plus the
review queue (``defectdet inspect --review``: NG parts, near misses within ``--near-band`` under
the threshold, with the detector's thresholds lowered by the band as the inspect command does, and
an audit sample at ``--audit-rate``). It prints the medians and the median of the per-round ratios
on/off (target >= 0.95) and writes them to ``--json``. The review queue's own counters (items
queued, written, dropped) are reported per arm: a writer that falls behind here waits (a file-like
source), so the ratio includes the PNG encoding it costs.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import soak  # noqa: E402  (bench/soak.py: the stand-in model, the NG-rate threshold, the in-memory source)


def run_arm(det, frames: list[np.ndarray], n: int, out: Path, review: dict | None) -> dict:
    """One pipelined run over ``n`` frames with events + snapshots (+ the review queue); its summary."""
    from defectdet.station.capture import FrameSource
    from defectdet.station.decisions import Decider
    from defectdet.station.pipeline import PipelinedLoop
    from defectdet.station.review import ReviewQueue, detector_floor
    from defectdet.station.sinks import EventLog
    from defectdet.station.snapshots import Snapshots
    from defectdet.station.sources import parse_source

    src = FrameSource(parse_source("synthetic://"), opener=lambda spec: soak.MemoryReader(frames, n))
    decider = Decider(det.names, thresholds=det.thresholds)
    sinks = [Snapshots(out / "snapshots", quota_mb=50), EventLog(out / "events.jsonl")]
    base = det.thresholds
    if review is not None:
        sinks.append(ReviewQueue(out / "review", det.names, base, block=True, seed=0, **review))
        det.thresholds = detector_floor(base, review["near_band"])
    try:
        return PipelinedLoop(det, src, decider, sinks, status_every=0, out_dir=out).run()
    finally:
        det.thresholds = base


def measure(a: argparse.Namespace) -> dict:
    from defectdet.runtime import Detector
    from defectdet.station.sources import SyntheticReader

    reader = SyntheticReader(width=a.width, height=a.height)
    frames = [reader.frame(i)[0] for i in range(240)]  # ten parts
    model = a.model or soak.build_model(a.out / "model", a.imgsz)
    conf = soak.conf_for_ng_rate(model, frames, a.ng_rate, a.threads)
    review = {"budget_mb": a.budget_mb, "near_band": a.near_band, "audit_rate": a.audit_rate}
    fps: dict[str, list[float]] = {"off": [], "on": []}
    queue_stats: list[dict] = []
    with Detector(model, conf=conf, threads=a.threads) as det:
        run_arm(det, frames, 20, Path(tempfile.mkdtemp(prefix="warm-", dir=a.out)), review)  # warm-up
        for r in range(a.rounds):
            for arm in ("off", "on") if r % 2 == 0 else ("on", "off"):
                out = Path(tempfile.mkdtemp(prefix=f"{arm}-", dir=a.out))
                summary = run_arm(det, frames, a.frames, out, review if arm == "on" else None)
                fps[arm].append(summary["fps"])
                if arm == "on":
                    queue_stats.append(summary["sinks"]["review"])
    ratio = np.array(fps["on"]) / np.array(fps["off"])
    return {
        "fps": {k: round(float(np.median(v)), 2) for k, v in fps.items()},
        "on_over_off": round(float(np.median(ratio)), 3),
        "rounds": fps,
        "review_last_round": {k: queue_stats[-1][k] for k in ("queued", "written", "dropped", "bytes")},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, help="ONNX model with its sidecar (default: build a stand-in yolo11n)"
    )
    ap.add_argument("--imgsz", type=int, default=320, help="stand-in model input size (default 320)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds, arms alternating (default 5)")
    ap.add_argument("--frames", type=int, default=300, help="frames per arm and round (default 300)")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument(
        "--ng-rate", type=float, default=0.1, help="fraction of NG frames to set the threshold for"
    )
    ap.add_argument("--near-band", type=float, default=0.1, help="review.near_band (default 0.1)")
    ap.add_argument("--audit-rate", type=float, default=0.002, help="review.audit_rate (default 0.002)")
    ap.add_argument("--budget-mb", type=float, default=200.0, help="review.budget_mb (default 200)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_review")
    ap.add_argument("--json", type=Path, help="write the numbers here (default <out>/review_overhead.json)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    res = measure(a)
    f = res["fps"]
    text = (
        f"pipelined loop, ONNX Runtime CPU, {a.threads} thread(s), {a.frames} frames {a.width}x{a.height} "
        f"per arm and round, {a.rounds} rounds, NG rate ~{a.ng_rate:g}, events + snapshots on in both arms\n"
        f"| review off fps | review on fps | **on/off** |\n|---:|---:|---:|\n"
        f"| {f['off']:.1f} | {f['on']:.1f} | **{res['on_over_off']:.3f}** |\n"
        f"review queue (last round): {res['review_last_round']}"
    )
    print(text)
    (a.json or a.out / "review_overhead.json").write_text(json.dumps({"table": text, **res}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
