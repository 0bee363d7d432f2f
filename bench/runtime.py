"""Edge-runtime speed benchmark: the same ONNX model, frames and thread count, four ways, in one run.

    python bench/runtime.py                      # stand-in yolo11n at 320, 300 frames 640x480, 2 threads
    python bench/runtime.py --model runs/x/model.onnx --frames 300 --threads 2
    python bench/runtime.py --inputs --imgsz 320 640   # Detector: float32- vs uint8-input export

(a) raw ``session.run`` on already pre-processed tensors (the model alone),
(b) ``defectdet.runtime.Detector`` (letterbox + model + decode/NMS, no torch),
(c) ultralytics ``YOLO(model.onnx).predict(frame, stream=True)`` (its ORT session rebuilt with the
    same SessionOptions, torch limited to the same thread count),
(d) ``Detector.stream(frames)``: (b) with frame n+1 letterboxed on a helper thread while the model
    runs frame n (targets d/c >= 1.2 and d/a >= 0.95, as for (b)).
Each path lives in its own interpreter (so thread pools and torch do not disturb each other, and
the Detector's process never imports torch); they take turns on blocks of frames, rotating who goes
first, so load from other processes hits all of them alike. Reported: frames/s, per-frame medians,
the b/c and b/a ratios (targets >= 1.2 and >= 0.95), each process's peak RSS, and the import time
of ``defectdet.runtime`` in a fresh interpreter (target < 0.5 s).

``--inputs`` instead runs the Detector (and (a), the model alone) on two exports of one stand-in
checkpoint, ``defectdet export`` with ``--input float32`` and ``--input uint8`` (NHWC), in four
interpreters taking turns the same way, at each ``--imgsz``: frames/s, per-frame medians and the
uint8/float32 ratios.

Without ``--model`` a stand-in model is built: yolo11n from yaml with random weights whose
BatchNorm statistics and class logits are calibrated on synthetic frames, so the head emits a
realistic spread of confidences (an untrained yolo11n emits one constant ~0.003 score).
:func:`make_model` is also what the runtime tests use.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("scratch", "spot", "crack", "dent")


def write_card(onnx_path: Path, names, imgsz, **extra) -> Path:
    """The model card ``model.json`` beside a stand-in ONNX (the runtime's metadata contract);
    ``extra``: other card fields (e.g. ``output_layout``)."""
    from defectdet.artifact import ModelCard, Preprocess

    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    card = ModelCard(
        names=dict(enumerate(names)),
        imgsz=(h, w),
        strides=(8, 16, 32),
        preprocess=Preprocess(),
        input_name="images",
        output_layout=f"xywh+cls (1, {4 + len(names)}, A)",
        cls_loss="bce",
    )
    return card.replace(**extra).save(onnx_path)


def _calibrate(net, x, logit_mean: float, logit_std: float) -> None:
    """Give a random-weight detector realistic statistics from one batch ``x`` (B, 3, H, W).

    BatchNorm running statistics are set from ``x`` (else activations fade through 100 random layers
    and every anchor emits the same score); then each class-logit conv is rescaled so its logits on
    ``x`` have the given mean and standard deviation.
    """
    import torch

    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: one pass sets the statistics
            m.reset_running_stats()
    head = net.model[-1]
    convs = [
        seq[-1] for seq in [*head.cv3, *(getattr(head, "one2one_cv3", None) or [])]
    ]  # Conv2d(c, nc, 1) per level
    z: dict[int, torch.Tensor] = {}
    hooks = [
        c.register_forward_hook(
            lambda m, i, o, k=k: z.__setitem__(k, o - m.bias.view(1, -1, 1, 1))
        )  # W.f, (B, nc, h, w)
        for k, c in enumerate(convs)
    ]
    with torch.no_grad():
        net.train()
        net(x)
        net.eval()
        net(x)
        for k, conv in enumerate(convs):
            if k not in z:  # a branch eval mode does not run (one-to-many head of an end-to-end model)
                continue
            scale = logit_std / float(z[k].std().clamp_min(1e-6))
            conv.weight.mul_(scale)
            conv.bias.fill_(logit_mean - scale * float(z[k].mean()))
    for h in hooks:
        h.remove()


def make_model(
    out_dir,
    imgsz=320,
    names=CLASSES,
    seed: int = 0,
    logit_mean: float = -6.0,
    logit_std: float = 1.2,
    sidecar: bool = True,
    cfg: str = "yolo11n.yaml",
    save_pt: bool = False,
) -> Path:
    """Export a stand-in yolo11n (random weights, calibrated on synthetic parts) to ``out_dir/model.onnx``.

    ``imgsz`` is an int or (H, W). Class logits get mean ``logit_mean`` and spread ``logit_std``
    (the defaults give a few boxes per frame at conf 0.25). Writes the sidecar too unless
    ``sidecar=False`` (class names are then only in the ONNX metadata_props, as ultralytics writes them).
    ``cfg`` is any ultralytics detect yaml of scale n ("yolo26n.yaml" gives an NMS-free (1, 300, 6) head).
    ``save_pt`` also writes the checkpoint ``out_dir/model.pt`` (for ``defectdet export``).
    """
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.nn.tasks import yaml_model_load

    from defectdet.data.synthetic import conveyor_frame, make_image
    from defectdet.runtime.preprocess import letterbox

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = {k: v for k, v in yaml_model_load(cfg).items() if k != "yaml_file"} | {"nc": len(names)}
    cfg_path = out / f"{Path(cfg).stem}-bench.yaml"  # ultralytics reads the scale ("n") from the file name
    e2e = bool(spec.get("end2end"))
    cfg_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    torch.manual_seed(seed)
    yolo = YOLO(str(cfg_path), task="detect")
    h, w = (imgsz, imgsz) if isinstance(imgsz, int) else imgsz
    parts = [make_image(seed, i, max(h, w), i % 2 == 0)[0] for i in range(4)] + [
        conveyor_frame(seed, 5 * i)[0] for i in range(4)
    ]
    imgs = np.stack([letterbox(im, (h, w))[0] for im in parts])  # (8, h, w, 3) BGR
    x = torch.from_numpy(imgs[..., ::-1].copy()).permute(0, 3, 1, 2).float() / 255  # (8, 3, h, w) RGB
    _calibrate(yolo.model, x, logit_mean, logit_std)
    yolo.model.names = dict(enumerate(names))
    if save_pt:
        yolo.save(out / "model.pt")
    yolo.model.pt_path = str(out / "model.pt")  # ultralytics names the export after this: out/model.onnx
    e2e_kw = {"nms": False} if e2e else {}  # ultralytics 8.4 exports the one-to-one head only when nms=False
    onnx_path = Path(
        yolo.export(format="onnx", imgsz=[h, w], opset=17, simplify=True, verbose=False, **e2e_kw)
    )
    if sidecar:
        layout = {"output_layout": "xyxy+conf+cls (1, 300, 6)"} if e2e else {}
        write_card(onnx_path, names, (h, w), **layout)
    return onnx_path


def conveyor_frames(n: int, seed: int = 0) -> list[np.ndarray]:
    """n BGR 640x480 frames of parts sliding along a conveyor (the synthetic generator's video)."""
    from defectdet.data.synthetic import conveyor_frame

    return [conveyor_frame(seed, i)[0] for i in range(n)]


# -- the three paths, each in its own interpreter ---------------------------------------------------
def _session(model: Path, threads: int):
    """An ORT CPU session with exactly the Detector's SessionOptions (threads, optimisation, spinning)."""
    import onnxruntime as ort

    from defectdet.runtime.backends.onnxruntime import session_options

    return ort.InferenceSession(str(model), session_options(threads), providers=["CPUExecutionProvider"])


def _runner_raw(model: Path, frames: list[np.ndarray], threads: int, conf: float, iou: float):
    """(a): the model alone, on tensors pre-processed beforehand (untimed)."""
    from defectdet.runtime import Detector

    with Detector(model) as det:  # only for its pre-processing
        tensors = [det._pre([f])[0].copy() for f in frames]  # (1, 3, H, W) each
    sess = _session(model, threads)
    name = sess.get_inputs()[0].name

    def run(i: int) -> tuple[float, ...]:
        t0 = time.perf_counter()
        sess.run(None, {name: tensors[i]})
        ms = (time.perf_counter() - t0) * 1e3
        return ms, 0.0, ms, 0.0, -1

    return run


def _same_conf(model: Path, conf: float) -> dict[int, float]:
    """Every class at ``conf``: the operating point ultralytics gets, over any calibrated thresholds
    in the model's sidecar (those would make the Detector keep and NMS other boxes)."""
    from defectdet.runtime import load_metadata

    return dict.fromkeys(range(load_metadata(model).nc), conf)


def _runner_detector(model: Path, frames: list[np.ndarray], threads: int, conf: float, iou: float):
    """(b): defectdet's Detector, frame in, Detections out."""
    from defectdet.runtime import Detector

    det = Detector(model, conf=conf, iou=iou, threads=threads, thresholds=_same_conf(model, conf))

    def run(i: int) -> tuple[float, ...]:
        t0 = time.perf_counter()
        n = len(det(frames[i]))
        ms = (time.perf_counter() - t0) * 1e3
        t = det.timings
        return ms, t.pre, t.infer, t.post, n

    return run


def _runner_ultralytics(model: Path, frames: list[np.ndarray], threads: int, conf: float, iou: float):
    """(c): ultralytics predict(stream=True); its ORT session rebuilt with the same SessionOptions."""
    from defectdet.offline import setup_ultralytics
    from defectdet.runtime import load_metadata

    kw = dict(conf=conf, iou=iou, imgsz=list(load_metadata(model).imgsz), verbose=False)
    setup_ultralytics()
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(threads)
    yolo = YOLO(str(model), task="detect")
    list(yolo.predict(frames[0], stream=True, **kw))  # builds the predictor and its backend
    yolo.predictor.model.backend.session = _session(model, threads)

    def run(i: int) -> tuple[float, ...]:
        t0 = time.perf_counter()
        for r in yolo.predict(frames[i], stream=True, **kw):
            n = len(r.boxes)
        ms = (time.perf_counter() - t0) * 1e3
        return ms, r.speed["preprocess"], r.speed["inference"], r.speed["postprocess"], n

    return run


def _runner_stream(model: Path, frames: list[np.ndarray], threads: int, conf: float, iou: float):
    """(d): ``Detector.stream`` over a block of frames (frame n+1 letterboxed while the model runs n);
    a frame's wall time is the time between two results, the first one's from the block's start."""
    from defectdet.runtime import Detector

    det = Detector(model, conf=conf, iou=iou, threads=threads, thresholds=_same_conf(model, conf))

    def block(lo: int, hi: int) -> list[tuple[float, ...]]:
        out, t0 = [], time.perf_counter()
        for dets in det.stream(frames[i] for i in range(lo, hi)):
            t1 = time.perf_counter()
            t = det.timings
            out.append(((t1 - t0) * 1e3, t.pre, t.infer, t.post, len(dets)))
            t0 = t1
        return out

    def run(i: int) -> tuple[float, ...]:
        return block(i, i + 1)[0]

    run.block = block
    return run


RUNNERS = {"a": _runner_raw, "b": _runner_detector, "c": _runner_ultralytics, "d": _runner_stream}


def _serve(kind: str, model: Path, n: int, threads: int, conf: float, iou: float, warmup: int, conn) -> None:
    """Worker: build one path, warm it up, run the frame ranges the parent sends; finally report peak RSS."""
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    frames = conveyor_frames(n)
    base = _vm_rss_mib()  # interpreter + numpy/OpenCV + the frames: common to all three
    run = RUNNERS[kind](model, frames, threads, conf, iou)
    for i in range(min(warmup, n)):
        run(i)
    conn.send("ready")
    while (job := conn.recv()) is not None:
        conn.send(run.block(*job) if hasattr(run, "block") else [run(i) for i in range(*job)])
    conn.send((_vm_hwm_mib(), _vm_hwm_mib() - base))


def throughput(
    model: Path,
    n: int,
    threads: int,
    conf: float,
    iou: float,
    warmup: int,
    block: int,
    paths: dict[str, tuple[str, Path]] | None = None,
):
    """Run each path in its own interpreter, taking turns on blocks of frames (rotating who goes first)
    so load from other processes hits all alike; only one computes at a time. ``paths``: label ->
    (runner kind, model); default (a), (b), (c) on ``model``. Returns per-path rows (wall, pre,
    infer, post, boxes) and each worker's peak RSS (MiB)."""
    import multiprocessing as mp

    paths = paths or {kind: (kind, model) for kind in RUNNERS}
    ctx = mp.get_context("spawn")  # fresh interpreters: the Detector's never imports torch
    pipes, procs = {}, []
    for label, (kind, path) in paths.items():
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=_serve, args=(kind, path, n, threads, conf, iou, warmup, child), daemon=True
        )
        proc.start()
        pipes[label], procs = parent, procs + [proc]
    try:
        for label, pipe in pipes.items():
            if pipe.recv() != "ready":
                raise RuntimeError(f"benchmark worker {label} failed to start")
        labels = list(paths)
        rows: dict[str, list] = {k: [] for k in labels}
        for b, lo in enumerate(range(0, n, block)):
            k = b % len(labels)
            for label in labels[k:] + labels[:k]:
                pipes[label].send((lo, min(lo + block, n)))
                rows[label] += pipes[label].recv()
        rss = {}
        for label, pipe in pipes.items():
            pipe.send(None)
            rss[label] = pipe.recv()
    finally:
        for proc in procs:
            proc.join(timeout=30)
    return rows, rss


# -- fresh-interpreter import time --------------------------------------------------------------
_IMPORT = (
    "import time; t = time.perf_counter(); import defectdet.runtime, sys; dt = time.perf_counter() - t; "
    "print(dt, 'torch' in sys.modules, 'ultralytics' in sys.modules)"
)


def import_time(repeats: int = 3) -> tuple[float, bool]:
    """Median seconds to import defectdet.runtime in a fresh interpreter; and whether torch came along."""
    runs = []
    for _ in range(repeats):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT], capture_output=True, text=True, cwd=ROOT, check=True
        )
        dt, torch_in, ul_in = out.stdout.split()
        runs.append((float(dt), torch_in == "True" or ul_in == "True"))
    return statistics.median(r[0] for r in runs), any(r[1] for r in runs)


def _status_mib(key: str) -> float:
    """A memory figure of this process from /proc/self/status (Linux), in MiB; NaN elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _vm_hwm_mib() -> float:
    """Peak resident memory (VmHWM; unlike ru_maxrss it is not inherited across fork+exec)."""
    return _status_mib("VmHWM")


def _vm_rss_mib() -> float:
    return _status_mib("VmRSS")


# -- report ---------------------------------------------------------------------------------------
def summarise(times: dict[str, list[tuple[float, ...]]]) -> dict[str, dict[str, float]]:
    """Per path: frames/s over the whole run and per-frame medians of wall, pre, infer, post (ms)."""
    out = {}
    for k, rows in times.items():
        arr = np.array(rows)[:, :4]  # (N, 4): wall, pre, infer, post
        out[k] = {
            "fps": len(arr) / (arr[:, 0].sum() / 1e3),
            **dict(zip(("wall", "pre", "infer", "post"), np.median(arr, 0))),
        }
    return out


def table(s: dict[str, dict[str, float]]) -> str:
    label = {
        "a": "(a) raw session.run (model only)",
        "b": "(b) defectdet Detector",
        "c": "(c) ultralytics predict(stream=True)",
        "d": "(d) defectdet Detector.stream (next letterbox overlapped)",
    }
    lines = [
        "| path | frames/s | pre ms | infer ms | post ms | per-frame ms |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for k in (k for k in ("a", "b", "c", "d") if k in s):
        r = s[k]
        pre = "-" if k == "a" else f"{r['pre']:.2f}"
        post = "-" if k == "a" else f"{r['post']:.2f}"
        lines.append(f"| {label[k]} | {r['fps']:.1f} | {pre} | {r['infer']:.2f} | {post} | {r['wall']:.2f} |")
    return "\n".join(lines)


def _ratios(s: dict, k: str) -> tuple[float, float]:
    """Path ``k``'s frames/s over ultralytics (c) and over the model alone (a)."""
    return s[k]["fps"] / s["c"]["fps"], s[k]["fps"] / s["a"]["fps"]


def _target_line(k: str, kc: float, ka: float) -> str:
    return (
        f"{k}/c = {kc:.2f} (target >= 1.2: {'met' if kc >= 1.2 else 'MISSED'})   "
        f"{k}/a = {ka:.3f} (target >= 0.95: {'met' if ka >= 0.95 else 'MISSED'})   [frames/s ratios]"
    )


def report(s: dict, rows: dict, rss: dict, imp: float, torch_in: bool, header: str) -> dict:
    """Print the table and the target checks; return the numbers."""
    bc, ba = _ratios(s, "b")
    bc_med, ba_med = s["c"]["wall"] / s["b"]["wall"], s["a"]["wall"] / s["b"]["wall"]
    nb, nc = (np.array(rows[k])[:, 4] for k in ("b", "c"))
    print(f"\n{header}\n")
    print(table(s))
    print("\n" + _target_line("b", bc, ba))
    print(f"from per-frame medians: b/c = {bc_med:.2f}, b/a = {ba_med:.3f}")
    extra = {}
    if "d" in s:
        dc, da = _ratios(s, "d")
        print(_target_line("d", dc, da))
        extra = {"d_over_c": dc, "d_over_a": da}
    print(
        f"same box count (b vs c) on {int((nb == nc).sum())}/{len(nb)} frames; mean boxes/frame "
        f"{nb.mean():.1f}"
    )
    print(f"import defectdet.runtime: {imp:.3f} s (target < 0.5 s), torch/ultralytics imported: {torch_in}")
    (pb, db), (pc, dc) = rss["b"], rss["c"]
    print(
        f"peak RSS: Detector process {pb:.0f} MiB ({db:.0f} above the frames + numpy/OpenCV baseline), "
        f"ultralytics process {pc:.0f} MiB ({dc:.0f} above it)"
    )
    return {
        "paths": s,
        "b_over_c": bc,
        "b_over_a": ba,
        "b_over_c_median": bc_med,
        "b_over_a_median": ba_med,
        "import_s": imp,
        "rss_mib": {
            "detector": pb,
            "ultralytics": pc,
            "detector_above_base": db,
            "ultralytics_above_base": dc,
        },
        "same_count_frames": int((nb == nc).sum()),
        "boxes_per_frame": float(nb.mean()),
        **extra,
    }


def input_models(out_dir: Path, imgsz: int) -> dict[str, Path]:
    """One stand-in checkpoint exported by ``defectdet export`` twice: float32 input and uint8 NHWC input."""
    from defectdet.export.onnx import export_onnx

    pt = make_model(Path(out_dir) / "src", imgsz, save_pt=True).with_suffix(".pt")
    return {
        dtype: export_onnx(
            pt, imgsz=imgsz, out=Path(out_dir) / dtype / "model.onnx", check_parity=False, input_dtype=dtype
        ).onnx
        for dtype in ("float32", "uint8")
    }


def input_table(results: dict[int, dict[str, dict[str, float]]]) -> str:
    """Detector with float32 vs uint8 input, per size: frames/s, per-frame medians, uint8/float32 ratios."""
    lines = [
        "| imgsz | input | frames/s | pre ms | infer ms | post ms | per-frame ms |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for size, s in results.items():
        for k in ("float32", "uint8"):
            r = s[k]
            lines.append(
                f"| {size} | {k}: Detector | {r['fps']:.1f} | {r['pre']:.2f} | {r['infer']:.2f} | "
                f"{r['post']:.2f} | {r['wall']:.2f} |"
            )
        for k in ("float32", "uint8"):
            r = s[f"{k} model only"]
            lines.append(
                f"| {size} | {k}: session.run only | {r['fps']:.1f} | - | {r['infer']:.2f} | - | "
                f"{r['wall']:.2f} |"
            )
        f, u = s["float32"], s["uint8"]
        fa, ua = s["float32 model only"], s["uint8 model only"]
        lines.append(
            f"| {size} | **Detector uint8/float32 = {u['fps'] / f['fps']:.3f}** (frames/s), "
            f"{f['wall'] / u['wall']:.3f} (medians); session.run {ua['fps'] / fa['fps']:.3f}, "
            f"{fa['wall'] / ua['wall']:.3f} | | | | | |"
        )
    return "\n".join(lines)


def compare_inputs(a: argparse.Namespace) -> dict:
    """``--inputs``: the Detector, and the bare ``session.run``, on the float32 and the uint8-input export
    of one model, per size, interleaved."""
    results = {}
    for size in a.imgsz:
        with tempfile.TemporaryDirectory(prefix="defectdet-bench-") as tmp:
            models = input_models(Path(tmp), size)
            rows, _ = throughput(
                models["float32"],
                a.frames,
                a.threads,
                a.conf,
                a.iou,
                a.warmup,
                a.block,
                paths={
                    **{k: ("b", m) for k, m in models.items()},
                    **{f"{k} model only": ("a", m) for k, m in models.items()},
                },
            )
        results[size] = summarise(rows)
    print(
        f"\nDetector, stand-in yolo11n exported with --input float32 / uint8 (NHWC), {a.frames} conveyor "
        f"frames 640x480 BGR, {a.threads} threads, ORT CPU; each in its own process, alternating blocks of "
        f"{a.block} frames\n"
    )
    print(input_table(results))
    return {
        "inputs": {str(k): v for k, v in results.items()},
        "uint8_over_float32": {str(k): v["uint8"]["fps"] / v["float32"]["fps"] for k, v in results.items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--model", type=Path, help="ONNX model with its sidecar (default: build a stand-in yolo11n)"
    )
    ap.add_argument(
        "--imgsz", type=int, nargs="+", default=[320], help="stand-in model input size(s) (default 320)"
    )
    ap.add_argument(
        "--inputs",
        action="store_true",
        help="compare the Detector on float32- and uint8-input exports of the stand-in, at each --imgsz",
    )
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument(
        "--threads", type=int, default=2, help="ORT intra-op threads and torch threads (default 2)"
    )
    ap.add_argument("--conf", type=float, default=0.25)
    ap.add_argument("--iou", type=float, default=0.7)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--block", type=int, default=10, help="frames per turn when the paths alternate")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args(argv)
    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    result = compare_inputs(a) if a.inputs else compare_paths(a)
    if a.json:
        from defectdet.config import atomic_write_text

        atomic_write_text(a.json, json.dumps({**result, "frames": a.frames, "threads": a.threads}, indent=1))
    return 0


def compare_paths(a: argparse.Namespace) -> dict:
    """(a) raw session.run, (b) Detector, (c) ultralytics on a model (the first --imgsz for the stand-in)."""
    size = a.imgsz[0]
    with tempfile.TemporaryDirectory(prefix="defectdet-bench-") as tmp:
        model = a.model or make_model(tmp, size)
        rows, rss = throughput(model, a.frames, a.threads, a.conf, a.iou, a.warmup, a.block)
    imp, torch_in = import_time()
    name = model.name if a.model else f"stand-in yolo11n {size}x{size}"
    header = (
        f"model {name}, {a.frames} conveyor frames 640x480 BGR, {a.threads} threads, ORT CPU, "
        f"conf {a.conf}, iou {a.iou}; each path in its own process, alternating blocks of {a.block} frames"
    )
    return report(summarise(rows), rows, rss, imp, torch_in, header)


if __name__ == "__main__":
    sys.exit(main())
