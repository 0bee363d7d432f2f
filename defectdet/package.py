"""``defectdet package --model best.pt --data data.yaml [--target-overkill 0.05] [--int8] [--out M.bundle]``.

From a trained checkpoint to the one file the line needs: export the FP32 ONNX -> validate it and
calibrate its thresholds under the line's rule (any detection rejects a part; ``val --escape-rule any``):
by default per-class thresholds for 1 % escape where val has 100 defective parts or more, else one part
threshold set from the val good parts, so that at most 5 % of them are rejected with 90 % confidence and
escape is measured (``val --threshold-rule part --target-overkill 0.05 --confidence 0.9``; per-class
again where val has too few good parts to bound that); or as ``--target-escape`` / ``--target-overkill``
say -> with ``--int8``: quantize (INT8 Q/DQ) and gate it against FP32, each at its own calibrated
thresholds -> write the bundle (:mod:`defectdet.artifact.bundle`). One progress line per step; what the
steps print goes to ``<bundle>.log`` (kept beside the bundle and inside it); a final card says what was
measured and what deploys. A refused INT8 model leaves an FP32 bundle and the card says why (exit status
3). The workflow after it is in docs/bundle.md: copy the file, ``build-engine``, ``inspect``.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from .artifact import RunInfo
from .errors import ConfigError

EXIT_ROWS = (
    (0, "the bundle written, with the INT8 model when --int8 asked for it"),
    (
        1,
        "the bundle written, but the target (--target-overkill, --target-escape or the default) is not "
        "reachable on val: its thresholds are the best found (the card says the rates they reach)",
    ),
    (
        2,
        "no bundle: a bad option or file, or a step failed (one line on stderr; the steps' output in "
        "<bundle>.log)",
    ),
    (
        3,
        "the bundle written with the FP32 model only: the accuracy gate refused the INT8 model (the reasons "
        "on the card and in reports/gate.json)",
    ),
)
STEP_NAMES = (
    "export ONNX",
    "validate + calibrate thresholds",
    "quantize INT8",
    "gate INT8 vs FP32",
    "write bundle",
)


@dataclass
class Packaged:
    """What ``package`` wrote and measured."""

    bundle: Any  # the opened defectdet.artifact.bundle.Bundle
    val: Any  # the FP32 EvalReport
    gate: dict[str, Any] | None = None  # decision, reasons, the INT8 report's KPIs; None without --int8
    log: Path | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # why the default target was chosen (:func:`default_target`), else None

    @property
    def exit_status(self) -> int:
        if not (self.val.calibration or {}).get("reachable", True):
            return 1
        return 3 if self.gate is not None and self.gate["decision"] == "refused" else 0


class Progress:
    """``[i/n] step ... 3.1 s: what it measured``, one line per step; the step's own prints go to ``log``."""

    def __init__(self, steps: int, log: Path):
        self.n, self.i, self.log, self.seconds = steps, 0, log, {}
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("")

    def run(self, name: str, fn: Callable[[], Any], done: Callable[[Any], str] = lambda r: "") -> Any:
        self.i += 1
        print(f"[{self.i}/{self.n}] {name} ...", end="", flush=True)
        t = time.perf_counter()
        try:
            with open(self.log, "a") as f, contextlib.redirect_stdout(f), _logs_to(f):
                print(f"=== {name}")
                out = fn()
        except BaseException:
            print(" failed", flush=True)
            raise
        self.seconds[name] = round(time.perf_counter() - t, 1)
        text = done(out)
        print(f" {self.seconds[name]:.1f} s" + (f": {text}" if text else ""), flush=True)
        return out


@contextlib.contextmanager
def _logs_to(stream: Any):
    """ultralytics' log lines (its own stream handlers, made at import) go to ``stream`` meanwhile."""
    import logging

    handlers = [h for h in logging.getLogger("ultralytics").handlers if isinstance(h, logging.StreamHandler)]
    before = [h.stream for h in handlers]
    for h in handlers:  # not setStream(): it flushes the old stream, which may be closed (a finished capture)
        with h.lock:
            h.stream = stream
    try:
        yield
    finally:
        for h, old in zip(handlers, before):
            with h.lock:
                h.stream = old


def default_out(model: Path) -> Path:
    """``runs/x/weights/best.pt`` -> ``runs/x/weights/best.bundle``."""
    return model.with_suffix(".bundle")


# What ``package`` calibrates for when no rate is given, by what val's labels can support
# (docs/quality.md, "package's default"): with ESCAPE_PARTS or more defective val parts, per-class thresholds
# for the line's 1 % escape (1 % of fewer allows no escape at all, so each threshold would sit at one weakest
# defect; at ~150 defective calibration parts it held on unseen parts: 0.7-1.6 % on four DeepPCB models).
# With fewer, one part threshold from val's good parts, at most 5 % of them rejected (the line's overkill
# bound) with 90 % confidence, escape measured (it held where defects were few: demo, KolektorSDD). With
# too few good parts to bound that either, per-class thresholds for 1 % escape again.
DEFAULT_OVERKILL, DEFAULT_CONFIDENCE, DEFAULT_ESCAPE, ESCAPE_PARTS = 0.05, 0.9, 0.01, 100


def operating_target(
    target_escape: float | None, target_overkill: float | None = None, confidence: float | None = None
) -> Any:
    """The :class:`~defectdet.part_rule.OperatingTarget` of the options (an escape rate, or an overkill
    rate at an optional confidence), or None when neither rate is given (:func:`default_target` then
    picks it from the data); a conflict is one line."""
    from .part_rule import OperatingTarget

    if target_escape is not None and target_overkill is not None:
        raise ConfigError(
            f"--target-escape {target_escape} and --target-overkill {target_overkill}: expected one of them "
            "(escape from the defective parts, or overkill from the good parts)"
        )
    if confidence is not None and target_overkill is None:
        raise ConfigError(f"--confidence {confidence}: expected together with --target-overkill")
    if target_overkill is not None:
        if not 0 < target_overkill < 1:
            raise ConfigError(f"--target-overkill {target_overkill}: expected a rate in (0, 1), e.g. 0.05")
        if confidence is not None and not 0.5 <= confidence < 1:
            raise ConfigError(f"--confidence {confidence}: expected a probability in [0.5, 1), e.g. 0.9")
        return OperatingTarget(overkill=target_overkill, confidence=confidence)
    if target_escape is None:
        return None
    if not 0 <= target_escape < 1:
        raise ConfigError(f"--target-escape {target_escape}: expected a rate in [0, 1), e.g. 0.01")
    return OperatingTarget(escape=target_escape)


def good_parts_needed(target_overkill: float, confidence: float | None) -> int:
    """The fewest calibration good parts that bound ``target_overkill`` at ``confidence`` (45 for 5 % at
    90 %: with fewer, even a threshold above all of them is not known to keep overkill that low)."""
    from .part_rule import allowed_overkills

    n = 1
    while allowed_overkills(n, target_overkill, confidence) < 0:
        n += 1
    return n


def val_parts(data: Path) -> tuple[int, int]:
    """(good, defective) images of ``data``'s val split; good: no labelled defect (no label file, or an
    empty one)."""
    from .evaluate import read_split
    from .export.calibration import is_defective

    _, images = read_split(data, "val")
    n_def = sum(1 for im in images if is_defective(im))
    return len(images) - n_def, n_def


def default_target(data: Path) -> tuple[Any, str]:
    """What to calibrate for when no rate is given, and why (one line for the log and the card): escape <=
    :data:`DEFAULT_ESCAPE` with per-class thresholds where val has :data:`ESCAPE_PARTS` defective parts or
    more; else overkill <= :data:`DEFAULT_OVERKILL` of val's good parts at :data:`DEFAULT_CONFIDENCE`; else
    (too few good parts to bound that) escape again."""
    from .part_rule import OperatingTarget, allowed_overkills

    n_good, n_def = val_parts(data)
    need = good_parts_needed(DEFAULT_OVERKILL, DEFAULT_CONFIDENCE)
    escape = OperatingTarget(escape=DEFAULT_ESCAPE)
    other = "give --target-escape or --target-overkill to choose"
    if n_def >= ESCAPE_PARTS:
        return escape, (
            f"val has {n_def} defective parts (>= {ESCAPE_PARTS}): per-class thresholds calibrated for "
            f"escape <= {DEFAULT_ESCAPE:g} ({other})"
        )
    if n_good >= need:
        flags = allowed_overkills(n_good, DEFAULT_OVERKILL, DEFAULT_CONFIDENCE)
        flagged = (
            f"it rejects at most {flags} of them"
            if flags
            else "it rejects none of them, so the highest-scoring one sets it; more let it sit lower"
        )
        return OperatingTarget(overkill=DEFAULT_OVERKILL, confidence=DEFAULT_CONFIDENCE), (
            f"val has {n_def} defective parts, too few to calibrate {DEFAULT_ESCAPE:g} escape "
            f"({ESCAPE_PARTS} needed): one part threshold from its {n_good} good parts ({flagged}), overkill "
            f"<= {DEFAULT_OVERKILL:g} at {DEFAULT_CONFIDENCE:.0%} confidence, escape measured ({other})"
        )
    return escape, (
        f"val has {n_def} defective and {n_good} good parts; calibrating {DEFAULT_ESCAPE:g} escape needs "
        f"{ESCAPE_PARTS} defective, bounding overkill <= {DEFAULT_OVERKILL:g} at {DEFAULT_CONFIDENCE:.0%} "
        f"confidence {need} good: per-class thresholds for escape <= {DEFAULT_ESCAPE:g}, a weak calibration "
        "(add labelled val images, or give --target-escape / --target-overkill)"
    )


def _check(model: Path, data: Path, out: Path) -> None:
    if not model.is_file():
        raise ConfigError(f"{model}: checkpoint not found; expected the best.pt that `defectdet train` wrote")
    if model.suffix != ".pt":
        raise ConfigError(
            f"{model}: expected an ultralytics .pt checkpoint, got a {model.suffix or 'extensionless'} file"
        )
    if not data.is_file():
        raise ConfigError(f"{data}: data.yaml not found; its val split calibrates the thresholds")
    if out.is_dir():
        raise ConfigError(f"{out}: is a folder; expected the bundle file to write (e.g. model.bundle)")


def _kpis(r: Any) -> str:
    return (
        f"mAP50 {r.map50:.3f}, escape {r.escape_rate:.1%} ({r.escapes}/{r.n_defective}) at "
        f"{r.overkill_rate:.1%} overkill ({r.overkills}/{r.n_clean})"
    )


def _validate(onnx: Path, data: Path, target: Any, work: Path) -> Any:
    from .artifact import ModelCard
    from .evaluate import evaluate, write_thresholds

    report = evaluate(str(onnx), data, escape_rule="any", **target.evaluate_kwargs())
    report.save(work / "reports" / "val")
    print(report.summary())
    write_thresholds(report, work / "thresholds" / "fp32.yaml")
    ModelCard.amend(onnx, thresholds=work / "thresholds" / "fp32.yaml")  # the runtime's operating points
    return report


def _gate(onnx: Path, q: Path, data: Path, target: Any, limits: Any) -> dict[str, Any]:
    """Gate the INT8 model at its own calibrated thresholds; a refusal is a result here, not an error."""
    from .export import GateRefused
    from .export.gate import gate_report_path, run_gate

    try:
        run_gate(onnx, q, data, limits, recalibrate=target, escape_rule="any")
    except GateRefused as e:  # run_gate wrote its report before refusing
        print(f"refused: {e}")
    return gate_summary(gate_report_path(q))


def gate_summary(report: Path) -> dict[str, Any]:
    """decision, reasons, warnings, passed and the INT8 KPIs from a gate report (``<int8>.gate.json``)."""
    from .config import load_json_object

    doc = load_json_object(report, "the gate report `defectdet gate` writes")
    int8 = doc.get("int8") or {}
    return {
        "decision": doc["decision"],
        "reasons": list(doc.get("reasons") or []),
        "warnings": list(doc.get("warnings") or []),
        "map50": int8.get("map50"),
        "escape_rate": int8.get("escape_rate"),
        "overkill_rate": int8.get("overkill_rate"),
        "passed": doc["decision"] in ("pass", "forced"),
        "report": report,
    }


def bundle_members(
    fp32: Path,
    val_dir: Path,
    thresholds: Path,
    int8: Path | None = None,
    gate: dict[str, Any] | None = None,
    run_info: Path | None = None,
) -> dict[str, Path]:
    """Bundle member -> file: the FP32 ONNX + sidecar + thresholds, the validation report (JSON, PNGs),
    the gate's report, the INT8 ONNX + sidecar + thresholds when it passed, the run's settings."""
    files = {
        "fp32/model.onnx": fp32,
        "fp32/model.json": fp32.with_suffix(".json"),
        "thresholds/fp32.yaml": thresholds,
    }
    files.update(
        {f"reports/val/{p.name}": p for p in sorted(val_dir.iterdir()) if p.suffix in (".json", ".png")}
    )
    if gate is not None and int8 is not None:
        files["reports/gate.json"] = gate["report"]
        if gate["passed"]:
            files.update(
                {
                    "int8/model.int8.onnx": int8,
                    "int8/model.int8.json": int8.with_suffix(".json"),
                    "thresholds/int8.yaml": int8.with_suffix(".thresholds.yaml"),
                }
            )
    if run_info is not None:
        files["run/defectdet.yaml"] = run_info
    return files


def write_package_bundle(out: Path, files: dict[str, Path], gate: dict[str, Any] | None, target: Any) -> Any:
    """The bundle of ``files`` (:func:`bundle_members`): INT8 deploys when it passed the gate, else FP32;
    the card is the deployed model's sidecar. ``target``: what the thresholds were calibrated for (an
    :class:`~defectdet.part_rule.OperatingTarget`, or an escape rate). Returns it opened."""
    from .artifact.bundle import write_bundle
    from .part_rule import OperatingTarget

    if not isinstance(target, OperatingTarget):
        target = OperatingTarget(escape=target)
    deployed = "int8" if gate is not None and gate["passed"] else "fp32"
    models = {"fp32": "fp32/model.onnx", **({"int8": "int8/model.int8.onnx"} if deployed == "int8" else {})}
    extra = {
        **target.as_dict(),
        "escape_rule": "any",
        "gate": {k: gate[k] for k in ("decision", "reasons")} if gate else None,
    }
    return write_bundle(out, files, models, deployed, models[deployed].replace(".onnx", ".json"), extra=extra)


def package(
    model: str | Path,
    data: str | Path,
    target_escape: float | None = None,
    int8: bool = False,
    out: str | Path | None = None,
    calib_images: int = 200,
    method: str = "minmax",
    imgsz: int | None = None,
    limits: Any = None,
    float_sensitive: int = 0,
    target_overkill: float | None = None,
    confidence: float | None = None,
) -> Packaged:
    """Export, validate + calibrate, (quantize + gate), bundle; returns what was written (module doc).
    ``target_escape`` / ``target_overkill`` / ``confidence``: see :func:`operating_target`."""
    from .export.onnx import export_onnx

    model, data = Path(model), Path(data)
    out = Path(out) if out else default_out(model)
    target, note = operating_target(target_escape, target_overkill, confidence), None
    _check(model, data, out)
    if target is None:
        target, note = default_target(data)
        if note:
            print(f"package: {note}")
    from .offline import setup_ultralytics

    setup_ultralytics()
    import ultralytics  # noqa: F401  (imported here, so its log handlers hold the real streams, not a step's log)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".package-", dir=out.parent))
    steps = Progress(5 if int8 else 3, out.with_name(out.name + ".log"))
    try:
        onnx = steps.run(
            STEP_NAMES[0],
            lambda: export_onnx(model, imgsz=imgsz, out=work / "fp32" / "model.onnx").onnx,
            lambda p: f"{p.name}, parity checked",
        )
        val = steps.run(
            f"{STEP_NAMES[1]} ({target.describe()}, any detection rejects)",
            lambda: _validate(onnx, data, target, work),
            _kpis,
        )
        gate = (
            _int8_steps(steps, onnx, data, work, target, calib_images, method, limits, float_sensitive)
            if int8
            else None
        )
        bundle = steps.run(
            STEP_NAMES[4],
            lambda: _write(out, work, gate, RunInfo.locate(model), steps.log, target),
            lambda b: f"{b.path} (id {b.short_id})",
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return Packaged(bundle, val, gate, steps.log, steps.seconds, note)


def _int8_steps(
    steps: Progress,
    onnx: Path,
    data: Path,
    work: Path,
    target: Any,
    calib_images: int,
    method: str,
    limits: Any,
    float_sensitive: int = 0,
) -> dict[str, Any]:
    """Quantize, then gate; returns the gate's decision (see :func:`_gate`)."""
    from .export.gate import Limits
    from .export.quantize import quantize_onnx

    q = steps.run(
        STEP_NAMES[2],
        lambda: (
            quantize_onnx(
                onnx,
                data,
                calib_images=calib_images,
                method=method,
                out=work / "int8" / "model.int8.onnx",
                show_progress=False,
                float_sensitive=float_sensitive,
            ).onnx
        ),
        lambda p: p.name,
    )
    return steps.run(
        STEP_NAMES[3],
        lambda: _gate(onnx, q, data, target, limits or Limits()),
        lambda g: g["decision"] + (f" ({'; '.join(g['reasons'])})" if g["reasons"] else ""),
    )


def _write(
    out: Path, work: Path, gate: dict[str, Any] | None, run_info: Path | None, log: Path, target: Any
) -> Any:
    files = bundle_members(
        work / "fp32" / "model.onnx",
        work / "reports" / "val",
        work / "thresholds" / "fp32.yaml",
        work / "int8" / "model.int8.onnx",
        gate,
        run_info,
    )
    return write_package_bundle(out, {**files, "reports/package.log": log}, gate, target)


def card_text(p: Packaged) -> str:
    """The final card: what was measured and what deploys."""
    b, v = p.bundle, p.val
    side = b.card()
    lines = [
        f"=== {b.path.name}  id {b.id} " + "=" * 10,
        f"  classes    {', '.join(str(n) for n in (side.get('names') or {}).values())}   "
        f"imgsz {side.get('imgsz')}   cls_loss {side.get('cls_loss', '?')}",
        f"  FP32       {_kpis(v)}  (val, any detection rejects)",
    ]
    cal = v.calibration or {}
    if p.note:
        lines.append(f"  note       {p.note}")
    if not cal.get("reachable", True) and cal.get("target_overkill") is not None:
        lines.append(
            f"  warning    overkill <= {cal['target_overkill']:g} is not reachable on val: {v.n_clean} good "
            "parts are too few to bound it; the threshold rejects none of them"
        )
    elif not cal.get("reachable", True):
        lines.append(
            f"  warning    escape <= {cal.get('target_escape'):g} is not reachable on val: the thresholds "
            "are the best found"
        )
    elif cal.get("target_overkill") is not None and v.n_defective and v.escape_rate > DEFAULT_ESCAPE:
        lines.append(  # the threshold held its bound on good parts; what it let through must not go unseen
            f"  warning    {v.escapes} of {v.n_defective} defective val parts ({v.escape_rate:.1%}) pass "
            f"this threshold, over the {DEFAULT_ESCAPE:.0%} escape a line usually allows: the model scores "
            f"good parts as high as those defects. --target-escape {DEFAULT_ESCAPE:g} calibrates for escape "
            "instead, paid in overkill (docs/quality.md, decision rules)"
        )
    g = p.gate
    if g is not None:
        kp = (
            f"mAP50 {g['map50']:.3f}, escape {g['escape_rate']:.1%} at {g['overkill_rate']:.1%} overkill"
            if g.get("map50") is not None
            else ""
        )
        verdict = "passed the gate" if g["passed"] else "REFUSED by the gate: " + "; ".join(g["reasons"])
        lines.append(f"  INT8       {verdict}{'; ' + kp if kp else ''}")
        lines += [f"  warning    {w}" for w in g.get("warnings", [])]
    thr = side.get("thresholds") or {}
    lines.append(
        f"  deploys    {b.models[b.deployed]}  thresholds "
        + ", ".join(f"{k} {float(t):.3g}" for k, t in thr.items())
    )
    lines.append(
        f"  next       copy {b.path.name} to the device, then: defectdet build-engine {b.path.name}; "
        f"defectdet inspect --model {b.path.name} --source ..."
    )
    lines.append(f"  log        {p.log}")
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    from .settings.export import PACKAGE
    from .settings.options import parser

    ap = parser(PACKAGE, __doc__.split("\n\n")[1].strip(), EXIT_ROWS)
    a = ap.parse_args(argv)
    p = package(
        a.model,
        a.data,
        a.target_escape,
        a.int8,
        a.out,
        a.calib_images,
        a.method,
        a.imgsz,
        float_sensitive=a.float_sensitive,
        target_overkill=a.target_overkill,
        confidence=a.confidence,
    )
    print(card_text(p))
    return p.exit_status
