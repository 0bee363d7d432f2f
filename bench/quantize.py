"""INT8 vs FP32 on the CPU: onnxruntime latency (median) and accuracy (mAP50, escape rate), one run.

    python bench/quantize.py --model runs/detect/bce/weights/best.pt          # DeepPCB val, 640
    python bench/quantize.py --train-epochs 10 --imgsz 320 --max-images 100   # train one first

Data: ``../shared/data/deeppcb/data_with_negatives.yaml`` by default (defective boards plus their
defect-free templates, so the escape rate has clean parts beside defective ones); skipped with a
message when absent. The checkpoint is exported (``defectdet export``) and quantized twice:
``--target tensorrt`` (the Q/DQ form the Jetson builds from; onnxruntime runs it as simulated
INT8) and ``--target cpu`` (onnxruntime's integer-kernel form). Latency: the same pre-processed
image, ``--threads`` intra-op threads, models interleaved in rounds so other processes' load hits
all alike. Accuracy: :func:`defectdet.evaluate.evaluate` on ``--max-images`` evenly spaced val
images, the INT8 models at the FP32 model's operating thresholds (as the gate does).
Targets: INT8 latency <= 0.6x FP32, mAP50 drop <= 1 point. Prints a markdown table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "deeppcb" / "data_with_negatives.yaml"


def train_model(data: Path, epochs: int, imgsz: int, fraction: float, out: Path) -> Path:
    """A checkpoint from the foundation tooling (``defectdet.train.train``, BCE baseline)."""
    from defectdet.train import train

    run = train(
        model="yolo11n.yaml",
        data=str(data),
        epochs=epochs,
        imgsz=imgsz,
        cls_loss="bce",
        device="cpu",
        project=str(out),
        name="bench",
        exist_ok=True,
        plots=False,
        workers=0,
        batch=16,
        fraction=fraction,
        val=False,
    )
    return run / "weights" / "last.pt"


def latency(models: dict[str, Path], image: Path, imgsz: int, threads: int, runs: int) -> dict[str, float]:
    """Median ms of ``session.run`` per model, interleaved in rounds of 5 runs."""
    import onnxruntime as ort

    from defectdet.export.calibration import load_images

    x = load_images([image], (imgsz, imgsz))  # (1, 3, H, W)
    sessions = {}
    for name, path in models.items():
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        sessions[name] = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    times = {name: [] for name in models}
    for s in sessions.values():  # warm-up
        for _ in range(3):
            s.run(None, {"images": x})
    for _ in range(max(1, runs // 5)):
        for name, s in sessions.items():
            for _ in range(5):
                t = time.perf_counter()
                s.run(None, {"images": x})
                times[name].append(1000 * (time.perf_counter() - t))
    return {name: statistics.median(v) for name, v in times.items()}


def accuracy(models: dict[str, Path], data: Path, imgsz: int, max_images: int) -> dict[str, dict]:
    """mAP50 / mAP50-95 / escape / overkill per model; INT8 at the FP32 thresholds."""
    from defectdet.evaluate import evaluate

    out, op = {}, None
    for name, path in models.items():
        r = evaluate(str(path), data, imgsz=imgsz, max_images=max_images, thresholds=op)
        op = op or r.thresholds
        out[name] = {
            "map50": r.map50,
            "map50_95": r.map50_95,
            "escape_rate": r.escape_rate,
            "overkill_rate": r.overkill_rate,
            "images": r.n_images,
        }
    return out


def table(rows: dict[str, dict], lat: dict[str, float], acc: dict[str, dict]) -> str:
    base_ms, base_map = lat["fp32"], acc["fp32"]["map50"]
    lines = [
        "| model | median ms | × FP32 | mAP50 | Δ mAP50 (pts) | mAP50-95 | escape | overkill |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name in rows:
        a = acc[name]
        lines.append(
            f"| {rows[name]['label']} | {lat[name]:.1f} | {lat[name] / base_ms:.2f} | {a['map50']:.3f} | "
            f"{100 * (a['map50'] - base_map):+.2f} | {a['map50_95']:.3f} | {a['escape_rate']:.1%} | "
            f"{a['overkill_rate']:.1%} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="trained .pt checkpoint (else --train-epochs trains one)")
    p.add_argument(
        "--train-epochs", type=int, default=0, help="train a BCE yolo11n for this many epochs first"
    )
    p.add_argument(
        "--train-fraction", type=float, default=1.0, help="share of the train split used by --train-epochs"
    )
    p.add_argument("--data", default=str(DEFAULT_DATA), help="data.yaml (default: DeepPCB with templates)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--calib-images", type=int, default=128)
    p.add_argument("--method", default="entropy")
    p.add_argument("--max-images", type=int, default=200, help="val images evaluated (evenly spaced)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runs", type=int, default=50, help="timed runs per model")
    p.add_argument("--out", default=str(ROOT / "runs" / "bench_quantize"))
    a = p.parse_args(argv)
    data, out = Path(a.data), Path(a.out)
    if not data.is_file():
        print(
            f"bench/quantize.py: {data} not found: skipped (the DeepPCB benchmark needs "
            "../shared/data/deeppcb)"
        )
        return 0
    if a.model is None and not a.train_epochs:
        print("bench/quantize.py: give --model best.pt or --train-epochs N")
        return 2
    from defectdet.export.calibration import split_images
    from defectdet.export.onnx import export_onnx
    from defectdet.export.quantize import quantize_onnx

    ckpt = Path(a.model) if a.model else train_model(data, a.train_epochs, a.imgsz, a.train_fraction, out)
    fp32 = export_onnx(ckpt, imgsz=a.imgsz, out=out / "model.onnx").onnx
    rows = {"fp32": {"label": "FP32 ONNX", "path": fp32}}
    for target in ("tensorrt", "cpu"):
        t = time.perf_counter()
        q = quantize_onnx(
            fp32,
            data,
            calib_images=a.calib_images,
            method=a.method,
            target=target,
            out=out / f"model.int8-{target}.onnx",
        )
        rows[target] = {
            "label": f"INT8 Q/DQ ({target} form)",
            "path": q.onnx,
            "quantize_s": time.perf_counter() - t,
            "output_error": q.report["output_error"],
        }
    models = {k: v["path"] for k, v in rows.items()}
    lat = latency(models, split_images(data, "val")[0], a.imgsz, a.threads, a.runs)
    acc = accuracy(models, data, a.imgsz, a.max_images)
    md = table(rows, lat, acc)
    print(
        f"\nDeepPCB val ({acc['fp32']['images']} images, {a.imgsz}px), onnxruntime CPU, {a.threads} threads, "
        f"checkpoint {ckpt}\n{md}"
    )
    result = {
        "args": vars(a),
        "checkpoint": str(ckpt),
        "latency_ms": lat,
        "accuracy": acc,
        "rows": {
            k: {kk: str(vv) if isinstance(vv, Path) else vv for kk, vv in v.items()} for k, v in rows.items()
        },
        "table": md,
    }
    from defectdet.config import atomic_write_text

    atomic_write_text(out / "bench_quantize.json", json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
