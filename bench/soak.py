"""Soak benchmark of the inspection loop: memory growth and loop overhead over a long run.

    python bench/soak.py                                  # stand-in yolo11n at 320, 10,000 frames 640x480
    python bench/soak.py --model runs/x/model.onnx --frames 10000 --threads 2

Runs ``InspectionLoop`` (capture thread, Detector on ONNX Runtime, decisions, JSONL events with
fsync, NG snapshots under a quota) over ``synthetic://`` frames and samples the process RSS every
``--every`` frames. Prints and writes (``--json``) the RSS growth after warm-up (target < 5 MB) and
the loop's frames/s against a bare Detector on the same frames, timed in short turns interleaved
with the loop (every ``--bare-every`` frames, so load from other processes hits both alike;
the turns are excluded from the loop's time) (target >= 0.95x). The detector threshold is set so that about
``--ng-rate`` of the frames are NG (a line's realistic reject rate: each NG frame writes an event
and two snapshots). The benchmark process never imports torch; without ``--model`` a stand-in
model is built in a child process (``bench/runtime.py: make_model``). ``--pipeline off`` soaks the
sequential loop instead of the pipelined one; the report has the loop's per-stage p50 (``stages_ms``).

    python bench/soak.py --compare --imgsz 320 640 --threads 1 --rounds 5

``--compare`` measures throughput instead: per round and image size, in rotating order, (a) the model
alone (``session.run`` on prepared tensors), (s) the sequential loop and (p) the pipelined loop, the
loops over the same in-memory frames (a file-like source: every frame inspected) with the event log
and snapshots on; it prints the markdown table of medians over rounds and the per-round ratios' medians
(target p/a >= 0.95), and writes them to ``--json``. With ``--threads 1`` ONNX Runtime computes on one
core and leaves the other free, a stand-in for a Jetson whose model runs on its own device.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")


def rss_mib() -> float:
    """Resident set size of this process (Linux /proc), MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class Probe:
    """A sink (defectdet.station.sink.Sink) sampling (frames seen, time, RSS, detector ms, bare seconds) every
    ``every`` frames and, every ``bare_every`` frames, timing ``bare_n`` calls of a second, bare Detector on
    the same frames: loop and bare Detector interleave, so load from other processes hits both alike."""

    name = "probe"

    def __init__(self, every: int, bare_det=None, frames=(), bare_every: int = 200, bare_n: int = 20):
        self.every, self.n, self.samples, self.detector_ms = int(every), 0, [], 0.0
        self.bare_det, self.frames, self.bare_every, self.bare_n = (
            bare_det,
            list(frames),
            int(bare_every),
            int(bare_n),
        )
        self.bare_s, self.bare_frames = 0.0, 0

    def emit(self, result) -> None:
        self.n += 1
        self.detector_ms += result.latency_ms  # detector + decision time of this frame
        if self.bare_det is not None and self.n % self.bare_every == 0:
            t = time.perf_counter()
            for i in range(self.bare_n):
                self.bare_det(self.frames[(self.bare_frames + i) % len(self.frames)])
            self.bare_s += time.perf_counter() - t
            self.bare_frames += self.bare_n
        if self.n % self.every == 0:
            self.samples.append((self.n, time.perf_counter(), rss_mib(), self.detector_ms, self.bare_s))

    def open(self) -> None:
        pass

    def close(self) -> None:
        pass

    def stats(self) -> dict:
        return {}  # its samples go into the soak report, not the loop's summary


def build_model(out: Path, imgsz: int) -> Path:
    """The stand-in model, built in a child process so that torch never enters this one."""
    code = (
        "import importlib.util, sys; from pathlib import Path; "
        f"s = importlib.util.spec_from_file_location('b', {str(ROOT / 'bench' / 'runtime.py')!r}); "
        "b = importlib.util.module_from_spec(s); s.loader.exec_module(b); "
        f"print(b.make_model(Path({str(out)!r}), {imgsz}))"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return Path(res.stdout.strip().splitlines()[-1])


def conf_for_ng_rate(model: Path, frames: list[np.ndarray], rate: float, threads: int) -> float:
    """The confidence threshold at which about ``rate`` of ``frames`` have a detection."""
    from defectdet.runtime import Detector

    with Detector(model, conf=0.0, threads=threads) as det:
        best = np.array([float(det(f).confidence.max(initial=0.0)) for f in frames])  # (n,)
    return min(float(np.quantile(best, 1.0 - rate)), 0.999)  # saturated scores: the NG rate comes out higher


def soak(model: Path, a: argparse.Namespace, conf: float, frames: list[np.ndarray], out: Path):
    """Run the loop over ``a.frames`` synthetic frames; returns (summary, probe)."""
    from defectdet.artifact import model_id
    from defectdet.runtime import Detector
    from defectdet.station.capture import FrameSource
    from defectdet.station.decisions import Decider
    from defectdet.station.loop import InspectionLoop
    from defectdet.station.pipeline import PipelinedLoop
    from defectdet.station.sinks import EventLog
    from defectdet.station.snapshots import Snapshots

    with Detector(model, conf=conf, threads=a.threads) as det, Detector(
        model, conf=conf, threads=a.threads
    ) as bare:
        for f in frames[:5]:
            bare(f)
        probe = Probe(a.every, bare, frames, a.bare_every, a.bare_n)
        src = FrameSource(f"synthetic://?width={a.width}&height={a.height}&frames={a.frames}")
        sinks = [Snapshots(out / "snapshots", quota_mb=50, queue=a.snapshot_queue)] if a.snapshots else []
        sinks += [EventLog(out / "events.jsonl"), probe]
        loop = (PipelinedLoop if a.pipeline == "on" else InspectionLoop)(
            det,
            src,
            Decider(det.names, thresholds=det.operating),
            sinks,
            status_every=15,
            out_dir=out,
            model_id=model_id(model),
        )
        summary = loop.run()
    return summary, probe


class MemoryReader:
    """A file-like source over in-memory frames (cycled; capture costs nothing): ``n`` frames, then end."""

    fps = None

    def __init__(self, frames: list[np.ndarray], n: int):
        self.frames, self.n, self.i = frames, int(n), 0

    def read(self):
        if self.i >= self.n:
            return None, {}
        self.i += 1
        return self.frames[(self.i - 1) % len(self.frames)], {}

    def release(self) -> None:
        pass


def model_only_fps(model: Path, frames: list[np.ndarray], n: int, threads: int) -> float:
    """(a): ``session.run`` on tensors letterboxed beforehand (untimed), ``n`` runs; frames/s."""
    import onnxruntime as ort

    from defectdet.runtime import Detector
    from defectdet.runtime.backends.onnxruntime import session_options

    with Detector(model) as det:
        pre = det.new_preprocessor()
        tensors = [pre([f])[0].copy() for f in frames]  # (1, 3, H, W) each
    sess = ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    sess.run(None, {name: tensors[0]})
    t = time.perf_counter()
    for i in range(n):
        sess.run(None, {name: tensors[i % len(tensors)]})
    return n / (time.perf_counter() - t)


def loop_run(det, loop_class, frames: list[np.ndarray], n: int, out: Path) -> dict:
    """(s) or (p): one inspection run over ``n`` in-memory frames with event log and snapshots; summary."""
    from defectdet.station.capture import FrameSource
    from defectdet.station.decisions import Decider
    from defectdet.station.sinks import EventLog
    from defectdet.station.snapshots import Snapshots
    from defectdet.station.sources import parse_source

    src = FrameSource(parse_source("synthetic://"), opener=lambda spec: MemoryReader(frames, n))
    sinks = [Snapshots(out / "snapshots", quota_mb=50), EventLog(out / "events.jsonl")]
    return loop_class(
        det, src, Decider(det.names, thresholds=det.operating), sinks, status_every=0, out_dir=out
    ).run()


def compare(a: argparse.Namespace) -> dict:
    """Rounds of (a) model only, (s) sequential loop, (p) pipelined loop per image size, in rotating order."""
    from defectdet.runtime import Detector
    from defectdet.station.loop import InspectionLoop
    from defectdet.station.pipeline import PipelinedLoop
    from defectdet.station.sources import SyntheticReader

    reader = SyntheticReader(width=a.width, height=a.height)
    frames = [reader.frame(i)[0] for i in range(240)]
    results = {}
    for imgsz in a.imgsz:
        model = a.model or build_model(a.out / f"model{imgsz}", imgsz)
        conf = conf_for_ng_rate(model, frames, a.ng_rate, a.threads)
        rows: dict[str, list] = {"a": [], "s": [], "p": []}
        stages: list[dict] = []
        with Detector(model, conf=conf, threads=a.threads) as det:
            loop_run(
                det, PipelinedLoop, frames, 20, Path(tempfile.mkdtemp(prefix="warm-", dir=a.out))
            )  # warm-up
            for r in range(a.rounds):
                for arm in ["a", "s", "p"][r % 3 :] + ["a", "s", "p"][: r % 3]:
                    if arm == "a":
                        rows["a"].append(model_only_fps(model, frames, a.frames, a.threads))
                        continue
                    summary = loop_run(
                        det,
                        PipelinedLoop if arm == "p" else InspectionLoop,
                        frames,
                        a.frames,
                        Path(tempfile.mkdtemp(prefix=f"{arm}-", dir=a.out)),
                    )
                    rows[arm].append(summary["fps"])
                    if arm == "p":
                        stages.append({k: v["p50"] for k, v in summary["stages_ms"].items()})
        fps = {k: np.array(v) for k, v in rows.items()}
        results[imgsz] = {
            "fps": {k: round(float(np.median(v)), 1) for k, v in fps.items()},
            "p_over_a": round(float(np.median(fps["p"] / fps["a"])), 3),
            "s_over_a": round(float(np.median(fps["s"] / fps["a"])), 3),
            "p_over_s": round(float(np.median(fps["p"] / fps["s"])), 3),
            "stages_p50_ms": {k: round(float(np.median([st[k] for st in stages])), 2) for k in stages[0]},
            "rounds": {k: [round(float(x), 1) for x in v] for k, v in fps.items()},
        }
    return results


def compare_table(results: dict, a: argparse.Namespace) -> str:
    """The README table of :func:`compare`'s results."""
    lines = [
        f"ONNX Runtime CPU, {a.threads} intra-op thread(s), {a.frames} frames {a.width}x{a.height} per arm "
        f"and round, {a.rounds} rounds (arms interleaved, medians; ratios: median of the per-round ratios), "
        f"NG rate ~{a.ng_rate:g}, events + snapshots on",
        "",
        "| imgsz | (a) model only fps | (s) sequential loop fps | (p) pipelined loop fps | s/a | **p/a** | "
        "p/s | pipelined stage p50 ms: pre / infer / post / decide / sinks |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for imgsz, r in results.items():
        f, st = r["fps"], r["stages_p50_ms"]
        stage = " / ".join(f"{st[k]:.2f}" for k in ("pre", "infer", "post", "decide", "sinks"))
        lines.append(
            f"| {imgsz} | {f['a']:.1f} | {f['s']:.1f} | {f['p']:.1f} | {r['s_over_a']:.2f} | "
            f"**{r['p_over_a']:.2f}** | {r['p_over_s']:.2f} | {stage} |"
        )
    return "\n".join(lines)


def analyse(probe: Probe, warmup: int) -> dict:
    """RSS growth and steady-state frames/s (loop, and bare Detector interleaved) after ``warmup`` frames."""
    samples = probe.samples
    steady = [s for s in samples if s[0] >= warmup]
    k = max(1, len(steady) // 10)
    first, last = np.median([s[2] for s in steady[:k]]), np.median([s[2] for s in steady[-k:]])
    (n0, t0, _, d0, b0), (n1, t1, _, d1, b1) = steady[0], steady[-1]
    loop_s = (t1 - t0) - (b1 - b0)  # wall time minus the bare Detector's turns
    fps = (n1 - n0) / loop_s
    bare = probe.bare_frames / probe.bare_s if probe.bare_s else float("nan")
    return {
        "rss_mib_after_warmup": round(float(first), 2),
        "rss_mib_end": round(float(last), 2),
        "rss_mib_max": round(max(s[2] for s in samples), 2),
        "rss_growth_mib": round(float(last - first), 2),
        "loop_fps": round(float(fps), 2),
        "bare_detector_fps": round(float(bare), 2),
        "loop_vs_bare": round(float(fps / bare), 3),
        "detector_share_of_loop_time": round(float((d1 - d0) / 1e3 / loop_s), 3),
        "rss_trace_mib": [round(s[2], 1) for s in samples[:: max(1, len(samples) // 20)]],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, help="ONNX model with its sidecar (default: build a stand-in yolo11n)"
    )
    ap.add_argument(
        "--imgsz",
        type=int,
        nargs="+",
        default=[320],
        help="stand-in model input size(s) (default 320; soak: the first)",
    )
    ap.add_argument(
        "--pipeline",
        choices=("on", "off"),
        default="on",
        help="soak the pipelined (on) or sequential (off) loop",
    )
    ap.add_argument(
        "--compare",
        action="store_true",
        help="frames/s of model only vs sequential vs pipelined loop (see above)",
    )
    ap.add_argument("--rounds", type=int, default=5, help="--compare: rounds (arms interleaved)")
    ap.add_argument(
        "--frames",
        type=int,
        help="frames of the soak (default 10,000) / per arm and round of --compare (default 300)",
    )
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=480)
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument(
        "--ng-rate", type=float, default=0.1, help="fraction of NG frames to set the threshold for"
    )
    ap.add_argument(
        "--bare-every", type=int, default=200, help="loop frames between turns of the bare Detector"
    )
    ap.add_argument("--bare-n", type=int, default=20, help="bare Detector frames per turn")
    ap.add_argument("--snapshots", type=int, default=1, help="1: NG snapshots (raw + annotated) on, 0: off")
    ap.add_argument(
        "--snapshot-queue",
        type=int,
        default=8,
        help="frames the snapshot writer thread may fall behind (0: write in the loop's thread)",
    )
    ap.add_argument("--every", type=int, default=100, help="frames between RSS samples")
    ap.add_argument("--warmup", type=int, default=500, help="frames before RSS growth is measured")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_soak")
    ap.add_argument("--json", type=Path, help="write the numbers here (default <out>/soak.json)")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    a.frames = a.frames or (300 if a.compare else 10_000)
    if a.compare:
        results = compare(a)
        text = compare_table(results, a)
        print(text)
        (a.json or a.out / "compare.json").write_text(
            json.dumps({"table": text, "results": results}, indent=1) + "\n"
        )
        return 0
    model = a.model or build_model(a.out / "model", a.imgsz[0])
    from defectdet.station.sources import SyntheticReader

    reader = SyntheticReader(width=a.width, height=a.height)
    frames = [reader.frame(i)[0] for i in range(240)]  # ten parts, the source's first frames
    conf = conf_for_ng_rate(model, frames, a.ng_rate, a.threads)
    run_dir = Path(tempfile.mkdtemp(prefix="soak-", dir=a.out))
    summary, probe = soak(model, a, conf, frames, run_dir)
    res = analyse(probe, a.warmup)
    res.update(
        {
            "frames": summary["frames"],
            "ng": summary["ng"],
            "ng_rate": round(summary["ng"] / max(summary["frames"], 1), 3),
            "events_written": summary["events_written"],
            "detector_errors": summary["detector_errors"],
            "snapshots": bool(a.snapshots),
            "snapshot_queue": a.snapshot_queue,
            "snapshots_dropped": summary["sinks"].get("snapshots", {}).get("dropped"),
            "conf": round(conf, 4),
            "latency_ms": summary["latency_ms"],
            "pipeline": summary["pipeline"],
            "stages_p50_ms": {k: v["p50"] for k, v in summary["stages_ms"].items()},
            "model": str(model),
            "frame_size": [a.width, a.height],
            "threads": a.threads,
            "torch_imported": "torch" in sys.modules,
            "targets": {"rss_growth_mib": "< 5", "loop_vs_bare": ">= 0.95"},
        }
    )
    text = json.dumps(res, indent=1)
    print(text)
    (a.json or a.out / "soak.json").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
