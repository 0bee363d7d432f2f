"""``defectdet demo``: the whole workflow on the embedded default, on a CPU, in minutes.

synthetic rare-defect parts -> focal-loss training -> validation with part-level KPIs and
calibrated thresholds -> ONNX export -> INT8 + accuracy gate -> the model bundle (docs/bundle.md)
-> live-inspection loop on a conveyor video, run from the bundle (ONNX Runtime) -> summary. Each step prints
what it does and what it measured; everything is written under ``--out`` (default ``runs/demo``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

from .config import dump_yaml
from .settings.demo import DEMO as _SCHEMA

# The embedded default, sized for 2 CPU cores: a rare-defect line (15% defective parts, defects at 1.5x
# the generator's default size, still a few % of the part) and the rare-defect recipe. The parts are drawn at
# 320 px and the model trains on 160 px windows cut at native scale (crop=auto -> native: half of them
# centred on a defect), so a defect keeps its pixels; validation, export and inspection run at 320.
# sampling=auto draws defective parts for half of every epoch, paste=0.5 pastes defects onto half the
# good parts drawn. defectdet-pico (10x fewer FLOPs than yolo11n) gets more optimizer steps per CPU
# minute. Thresholds are calibrated (and the INT8 gate compares) as the line decides: any detection
# rejects a part. cls_loss=auto: with the defect sampler on, the BCE-equivalent focal preset (gamma 0,
# alpha 0.5). At 1x defects and 30 epochs, thin scratches and cracks were learnt on one CPU and not on
# another (docs/demo.md): the outcome hinged on the kernels; bench/demo_spread.py measures it over
# seeds and thread counts. 1040 parts at 30 epochs: at 520 parts and 40 epochs one run in six left
# scratches unlearnt, and 7-13 val labels per class made the KPIs and the INT8 gate swing by a label.
# INT8 activation ranges are minmax (no method passes every seed's model; bench/int8_methods.py), with the
# 4 convs whose quantized input is noisiest kept in float (float_sensitive: mixed precision). What a
# run measures, and what the earlier settings gave, is in docs/demo.md: its tables are written by
# bench/demo_spread.py and bench/demo_table.py from the runs' summary.yaml, never typed here.
DEMO = {k.name: k.default for k in _SCHEMA if k.name != "out"}  # declared in defectdet/settings/demo.py
# Training settings for a short from-scratch CPU run: an optimizer step every batch (nbs = batch),
# one warm-up epoch, no mosaic, validation after the last epoch only (best.pt is the final model).
TRAIN_EXTRA = {
    "nbs": 16,
    "warmup_epochs": 1.0,
    "mosaic": 0.0,
    "workers": 2,
    "plots": False,
    "device": "cpu",
    "val": False,
}


class Steps:
    """Runs named steps, printing a header and the elapsed time of each."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.times: dict[str, float] = {}

    def run(self, name: str, fn: Callable[[], Any]) -> Any:
        print(f"\n=== {name} " + "=" * max(0, 70 - len(name)), flush=True)
        t = time.perf_counter()
        out = fn()
        self.times[name] = time.perf_counter() - t
        print(f"--- {name}: {self.times[name]:.1f} s", flush=True)
        return out

    @property
    def total(self) -> float:
        return time.perf_counter() - self.t0


def loss_settings(cls_loss: str) -> dict[str, Any]:
    """``auto``, or a preset of configs/train/ (``focal_mild``, ``bce``, ...): its gamma, alpha, cls gain."""
    from .config import load_yaml, resolve_config

    return {"cls_loss": "auto"} if cls_loss == "auto" else load_yaml(resolve_config(cls_loss, "train"))


def run_demo(
    out: Path,
    images: int,
    epochs: int,
    imgsz: int,
    cls_loss: str,
    seed: int,
    batch: int,
    defect_rate: float,
    defect_scale: float,
    target_escape: float,
    paste: float = 0.0,
    model: str = DEMO["model"],
    sampling: str = DEMO["sampling"],
    part_px: int = 0,
    val_fraction: float = 0.2,
    calib_images: int = DEMO["calib_images"],
    quant_method: str = DEMO["quant_method"],
    float_sensitive: int = DEMO["float_sensitive"],
    threads: int = DEMO["threads"],
) -> dict[str, Any]:
    settings = {
        k: v for k, v in locals().items() if k != "out"
    }  # the arguments (first line: nothing else yet)
    from .artifact import RunInfo
    from .data.synthetic import make_dataset
    from .evaluate import evaluate, write_thresholds
    from .train import train

    steps = Steps()
    part_px = part_px or imgsz
    data = steps.run(
        f"1. synthetic data: {images} parts, {defect_rate:.0%} defective, {part_px}px",
        lambda: make_dataset(
            out / "data",
            images=images,
            defect_rate=defect_rate,
            imgsz=part_px,
            seed=seed,
            video_frames=240,
            defect_scale=defect_scale,
            val_fraction=val_fraction,
        ),
    )
    run = steps.run(
        f"2. train {Path(model).stem} from scratch, cls_loss={cls_loss}, sampling={sampling}, {epochs} "
        "epochs on the CPU",
        lambda: train(
            **{
                **loss_settings(cls_loss),
                "model": model,
                "data": str(data),
                "epochs": epochs,
                "imgsz": imgsz,
                "batch": batch,
                "sampling": sampling,
                "paste": paste,
                "seed": seed,
                "project": str(out.resolve()),
                "name": "train",
                "exist_ok": True,
                "threads": threads or None,
                **TRAIN_EXTRA,
            }
        ),
    )
    best = run / "weights" / "best.pt"
    info = RunInfo.load(RunInfo.path(run))
    size = info.deploy_imgsz or imgsz  # crop=native: validated and exported at the parts' full size

    def validate():
        report = evaluate(best, data, imgsz=size, target_escape=target_escape, escape_rule="any")
        report.save(out / "val")
        print(report.summary())
        return report, write_thresholds(report, out / "val" / "thresholds.yaml")

    report, thresholds = steps.run(
        f"3. validate: part KPIs, thresholds calibrated for escape <= {target_escape:.0%} "
        "(a part is rejected by any detection, as on the line)",
        validate,
    )
    onnx, parity = steps.run(
        "4. export ONNX (static, metadata + sidecar), parity vs PyTorch",
        lambda: _export(best, size, thresholds),
    )
    deployed, gate, gate_json = steps.run(
        "5. INT8 Q/DQ (calibrated on train images, half defective) + accuracy gate",
        lambda: _quantize_and_gate(onnx, data, target_escape, calib_images, quant_method, float_sensitive),
    )
    bundle, bundle_id = steps.run(
        "6. bundle: models, thresholds, reports and run settings in one verified file",
        lambda: _bundle(out, onnx, gate_json, thresholds, run, target_escape),
    )
    line = steps.run(
        f"7. inspect the conveyor video with {bundle.name} ({deployed.name}, ONNX Runtime)",
        lambda: _inspect(bundle, data.parent / "parts.mp4", None, out / "inspect"),
    )  # its own thresholds

    summary = {
        "seconds": round(steps.total, 1),
        "steps": steps.times,
        "settings": settings,
        "model": str(best),
        "thresholds": str(thresholds),
        "train": {k: v for k, v in info.to_dict().items() if k != "data"},  # auto resolved
        "map50": report.map50,
        "map50_95": report.map50_95,
        "escape_rate": report.escape_rate,
        "overkill_rate": report.overkill_rate,
        "escapes": report.escapes,
        "overkills": report.overkills,
        "n_defective": report.n_defective,
        "n_clean": report.n_clean,
        "val_imgsz": size,
        "per_class": {
            name: {"ap50": c["ap50"], "labels": int(c["labels"])} for name, c in report.per_class.items()
        },
        "onnx": str(onnx),
        "parity": parity,
        "deployed": str(deployed),
        "gate": gate,
        "gate_report": str(gate_json),
        "bundle": str(bundle),
        "bundle_id": bundle_id,
        "inspect": line,
    }
    dump_yaml(out / "summary.yaml", summary)
    print("\n=== summary " + "=" * 60)
    print(f"  mAP50 {report.map50:.3f}   mAP50-95 {report.map50_95:.3f}")
    print(
        f"  escape   {report.escape_rate:6.1%}  ({report.escapes} of {report.n_defective} defective parts "
        "passed)"
    )
    print(
        f"  overkill {report.overkill_rate:6.1%}  ({report.overkills} of {report.n_clean} good parts "
        "rejected)"
    )
    print(f"  INT8 gate: {gate}; deployed model {deployed}")
    print(
        f"  bundle {bundle}  id {bundle_id}  (docs/bundle.md: copy it to the device, build-engine, inspect)"
    )
    print(
        f"  conveyor: {line['frames']} frames at {line['fps']:.1f} frames/s, {line['events_written']} NG "
        f"events; parts: {line['caught']} of {line['defective_parts']} defective rejected, "
        f"{line['false_rejects']} of {line['good_parts']} good rejected, judged on frames with the part in "
        f"position ({line['ng_while_moving_in_or_out']} NG frames while a part moved in or out)  "
        f"({out / 'inspect'})"
    )
    print(f"  checkpoint {best}\n  thresholds {thresholds}\n  plots {out / 'val'}/*.png")
    per_step = ", ".join(f"{name.split(':')[0]} {sec:.0f}s" for name, sec in steps.times.items())
    print(f"  total {steps.total:.0f} s  ({per_step})")
    return summary


def _export(best: Path, imgsz: int, thresholds: Path) -> tuple[Path, dict[str, Any]]:
    from .artifact import ModelCard
    from .export.onnx import export_onnx

    res = export_onnx(best, imgsz=imgsz)
    ModelCard.amend(res.onnx, thresholds=thresholds)  # the runtime's per-class operating points
    print(f"{res.onnx}  parity: {res.parity}")
    return res.onnx, dict(res.parity)


def _quantize_and_gate(
    onnx: Path, data: Path, target_escape: float, calib_images: int, method: str, float_sensitive: int = 0
) -> tuple[Path, str, Path]:
    """INT8 Q/DQ in the form a Jetson's TensorRT builds from, gated against FP32 with each model at
    its own thresholds calibrated for ``target_escape`` under the line's rule (an INT8 model that passes
    deploys with its own, written into its sidecar). A refused INT8 model is not deployed: the demo goes on
    with the FP32 ONNX, as a line would. Returns (deployed model, decision, the gate's report)."""
    from .export.gate import GateRefused, gate_report_path, run_gate
    from .export.quantize import quantize_onnx

    q = quantize_onnx(
        onnx,
        data,
        calib_images=calib_images,
        method=method,
        target="tensorrt",
        float_sensitive=float_sensitive,
    )
    try:
        result = run_gate(onnx, q.onnx, data, recalibrate=target_escape, escape_rule="any")
    except GateRefused as e:
        print(f"gate refused the INT8 model, deploying FP32: {e}")
        return onnx, "refused", gate_report_path(q.onnx)  # run_gate records before it refuses
    print(result.table())
    return q.onnx, result.decision, result.report_path


def _bundle(
    out: Path, onnx: Path, gate_json: Path, thresholds: Path, run: Path, target_escape: float
) -> tuple[Path, str]:
    """``out/model.bundle`` from what the steps wrote (as ``defectdet package`` bundles them); the INT8
    model goes in when it passed the gate. Returns (its path, its id)."""
    from .package import bundle_members, gate_summary, write_package_bundle

    gate = gate_summary(gate_json) if gate_json.is_file() else None
    int8 = gate_json.with_name(gate_json.name[: -len(".gate.json")] + ".onnx")
    from .artifact import RunInfo

    info = RunInfo.path(run)
    files = bundle_members(onnx, out / "val", thresholds, int8, gate, info if info.is_file() else None)
    b = write_package_bundle(out / "model.bundle", files, gate, target_escape)
    print(f"{b.path}: {', '.join(b.members())}")
    return b.path, b.id


def _inspect(model: Path, video: Path, thresholds: Path | None, out: Path) -> dict[str, Any]:
    """Run the live-inspection loop on the conveyor video, then score it per part against the
    video's ground truth (a part is rejected when any of its frames is NG)."""
    import json

    from .station.inspect_cli import load_config, run

    cfg = load_config(
        None,
        [],
        {
            "model": str(model),
            "source": str(video),
            "out": str(out),
            "thresholds": str(thresholds) if thresholds else None,
        },
    )
    summary = run(cfg)
    truth = json.loads(video.with_suffix(".json").read_text())
    per_part, in_view = truth["frames_per_part"], set(truth["in_position_frames"])
    ng_frames = set()
    events = out / "events.jsonl"
    if events.is_file():
        ng_frames = {int(json.loads(x)["frame"]) for x in events.read_text().splitlines() if x.strip()}
    # a triggered line camera sees the part in position: score parts on the frames where it is wholly in view
    ng_parts = {f // per_part for f in ng_frames & in_view}
    defective = {p["part"] for p in truth["parts"] if p["defective"]}
    good = {p["part"] for p in truth["parts"]} - defective
    keys = ("frames", "fps", "events_written", "latency_ms", "ng", "ok")
    return {
        **{k: summary.get(k) for k in keys},
        "defective_parts": len(defective),
        "good_parts": len(good),
        "caught": len(defective & ng_parts),
        "false_rejects": len(good & ng_parts),
        "ng_while_moving_in_or_out": len(ng_frames - in_view),
    }


def cli(argv: list[str]) -> int:
    from .settings.options import parser

    ap = parser(
        _SCHEMA,
        __doc__.split("\n\n")[0],
        [
            (0, "every step ran (a refused INT8 model is not a failure: the demo deploys the FP32 one)"),
            (2, "a step failed (one line on stderr)"),
        ],
    )
    a = ap.parse_args(argv)  # every number checked against its range (BadValue: exit 2)
    run_demo(Path(a.out), **{key: getattr(a, key) for key in DEMO})
    return 0
