"""The accuracy gate: evaluate the FP32 and the INT8 ONNX on the validation split, on the CPU
(onnxruntime executes Q/DQ graphs), and refuse the INT8 model when it loses accuracy.

Compared: mAP50, mAP50-95, per-class recall and the part escape rate (defective parts with no
correct detection), in percentage points. Recall and escape depend on the operating thresholds:
both models use the deployment thresholds when known (``--thresholds``, else ``thresholds`` in the
FP32 sidecar), so INT8 score compression shows up as missed defects; otherwise each model is taken
at its own max-F1 thresholds (FP32's max-F1 threshold sits exactly on its weakest true positive,
so reusing it for INT8 would flag score jitter of 0.01 as lost defects). Refused, unless ``force``:

* mAP50 drop > ``max_drop`` (default 1.0 point);
* any class's recall drop > ``max_class_drop`` (default 2.0 points; classes without val labels skipped);
* escape-rate rise > ``max_escape_rise`` (default 1.0 point);

and, when the reports carry their detections (the default evaluator), only where the loss is real:
the 90% interval of a paired bootstrap over the val images (:mod:`defectdet.export.gate_bootstrap`)
lies above zero. With 7-13 labels in a class one label moves its AP50 by several points; a loss
over the limit whose interval includes no loss is reported, not refused (``confidence=0`` gates
the point estimates alone).

``recalibrate=T`` (``--recalibrate 0.01``) instead gives each model its own thresholds, calibrated on
val for escape <= T (as ``defectdet val --target-escape`` does), and compares the two operating
points: escape, overkill (refused above ``max_overkill_rise``, default 2.0 points), mAP50 and
per-class AP50 (threshold-free; per-class recall at two re-fitted operating points is not
comparable). INT8 moves scores a little, and on a real dataset that shifts recall at the FP32
thresholds by several points while mAP stays put; the INT8 model then deploys with its own
thresholds, written to ``<int8 stem>.thresholds.yaml`` and into its sidecar.

The report goes to ``<int8 stem>.gate.json`` beside the INT8 model, and its decision into the INT8
sidecar (``gate``), which ``defectdet build-engine`` checks before building from a Q/DQ model.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from ..artifact import GateVerdict, ModelCard, load_onnx, sidecar_path
from ..config import atomic_write_text
from ..errors import ConfigError
from ..settings.export import GATE
from . import GateRefused

# What `defectdet gate` and `defectdet quantize` exit with (their --help lists it).
GATE_EXITS = (
    (0, "the INT8 model passed the gate (or was refused and --force accepted it)"),
    (2, "the gate refused the INT8 model (the reasons on one line), or a bad option, file or value"),
)
VACUOUS_MAP50 = 0.05  # below this the FP32 model detects (almost) nothing and no drop can be seen


@dataclass(frozen=True)
class Limits:
    """Largest accepted losses, in percentage points (a recall of 0.80 -> 0.78 is 2 points)."""

    # the defaults: defectdet gate's (defectdet.settings.export.GATE_KEYS)
    max_drop: float = GATE["max_drop"].default  # mAP50
    max_class_drop: float = GATE["max_class_drop"].default  # per-class recall (AP50 when recalibrated)
    max_escape_rise: float = GATE["max_escape_rise"].default  # part escape rate
    max_overkill_rise: float = GATE["max_overkill_rise"].default  # part overkill rate (recalibrated only)
    # a loss over its limit refuses only when this bootstrap interval is above 0; 0 = off
    confidence: float = GATE["gate_confidence"].default

    def __post_init__(self):
        for k, v in asdict(self).items():
            if k == "confidence":
                if not (v == 0 or 0.5 <= v < 1):
                    raise ConfigError(
                        f"gate-confidence={v}: expected 0 (point estimates) or a level in [0.5, 1)"
                    )
            else:  # a number >= 0 (NaN too is refused)
                GATE[k].range.check(k.replace("_", "-"), v)


@dataclass
class Check:
    """One compared metric: values as fractions, ``loss`` in points (positive = INT8 worse)."""

    metric: str
    fp32: float
    int8: float
    loss: float
    limit: float | None  # None: reported, not gated
    ok: bool
    interval: tuple[float, float] | None = None  # bootstrap interval of the loss, points (None: not measured)


@dataclass
class GateResult:
    """The decision, every check, and where the report was written."""

    passed: bool
    forced: bool
    checks: list[Check]
    reasons: list[str]
    warnings: list[str] = field(default_factory=list)
    report_path: Path | None = None

    @property
    def decision(self) -> str:
        """``pass``, ``forced`` (refused but --force) or ``refused``."""
        return "pass" if self.passed else ("forced" if self.forced else "refused")

    def table(self) -> str:
        """Printable comparison."""
        rows = [f"{'metric':<24}{'FP32':>8}{'INT8':>8}{'loss':>8}{'limit':>8}{'interval':>16}  ok"]
        for c in self.checks:
            limit = "-" if c.limit is None else f"{c.limit:.2f}"
            ci = "-" if c.interval is None else f"{c.interval[0]:.1f}..{c.interval[1]:.1f}"
            rows.append(
                f"{c.metric:<24}{c.fp32:>8.4f}{c.int8:>8.4f}{c.loss:>8.2f}{limit:>8}{ci:>16}  "
                f"{'yes' if c.ok else 'NO'}"
            )
        return "\n".join(rows)


def _get(report: Any, key: str) -> Any:
    """Attribute or mapping access, so EvalReport objects and plain dicts both work."""
    return report.get(key) if isinstance(report, dict) else getattr(report, key, None)


def _check(
    metric: str,
    a: float,
    b: float,
    limit: float | None,
    rise: bool = False,
    intervals: dict[str, tuple[float, float]] | None = None,
) -> Check:
    loss = 100.0 * ((b - a) if rise else (a - b))  # points
    ci = (intervals or {}).get(metric)
    real = ci is None or ci[0] > 0  # without an interval every loss over the limit counts
    return Check(
        metric, float(a), float(b), loss, limit, limit is None or loss <= limit + 1e-9 or not real, ci
    )


def compare(
    fp32: Any,
    int8: Any,
    limits: Limits = Limits(),
    recalibrated: bool = False,
    intervals: dict[str, tuple[float, float]] | None = None,
) -> GateResult:
    """The gate's decision from two evaluation reports (``map50``, ``map50_95``, ``escape_rate``,
    ``per_class[name]["recall"]`` as fractions); pure, so it is testable without models.
    ``recalibrated``: each report at its own calibrated thresholds: per-class ``ap50`` is gated
    instead of recall, and ``overkill_rate`` too. ``intervals`` ({metric: (low, high)} loss in
    points, :func:`defectdet.export.gate_bootstrap.paired_intervals`): a loss over its limit is
    refused only when its interval lies above zero."""
    key = "ap50" if recalibrated else "recall"
    iv = intervals
    checks = [
        _check("mAP50", _get(fp32, "map50"), _get(int8, "map50"), limits.max_drop, intervals=iv),
        _check("mAP50-95", _get(fp32, "map50_95"), _get(int8, "map50_95"), None),
    ]
    pc32, pc8 = _get(fp32, "per_class") or {}, _get(int8, "per_class") or {}
    for name, row in pc32.items():
        if row.get("labels", 1) == 0:
            continue  # no val instances: recall is undefined
        r8 = (pc8.get(name) or {}).get(key, 0.0)  # a class the INT8 report lacks was never found
        checks.append(
            _check(
                f"{'AP50' if recalibrated else 'recall'}[{name}]",
                row[key],
                r8,
                limits.max_class_drop,
                intervals=iv,
            )
        )
    e32, e8 = _get(fp32, "escape_rate"), _get(int8, "escape_rate")
    warnings = []
    if e32 is not None and e8 is not None:
        checks.append(_check("escape_rate", e32, e8, limits.max_escape_rise, rise=True, intervals=iv))
    else:
        warnings.append("escape rate not measured by the evaluator: only mAP and recall were gated")
    o32, o8 = _get(fp32, "overkill_rate"), _get(int8, "overkill_rate")
    if recalibrated and o32 is not None and o8 is not None:
        checks.append(_check("overkill_rate", o32, o8, limits.max_overkill_rise, rise=True, intervals=iv))
    if _get(fp32, "map50") < VACUOUS_MAP50:
        warnings.append(
            f"FP32 mAP50 is {_get(fp32, 'map50'):.3f}: the model detects almost nothing, "
            "so the gate cannot see an INT8 accuracy loss; train longer before trusting it"
        )
    reasons = [
        f"{c.metric} {'rose' if c.metric.endswith('_rate') else 'dropped'} {c.loss:.2f} points "
        f"(limit {c.limit:.2f}"
        + (f"; interval {c.interval[0]:.1f} to {c.interval[1]:.1f})" if c.interval else ")")
        for c in checks
        if not c.ok
    ]
    warnings += [
        f"{c.metric}: a loss of {c.loss:.2f} points is over its limit ({c.limit:.2f}) but its interval "
        f"({c.interval[0]:.1f} to {c.interval[1]:.1f}) includes no loss: not refused"
        for c in checks
        if c.ok and c.limit is not None and c.loss > c.limit + 1e-9
    ]
    return GateResult(passed=not reasons, forced=False, checks=checks, reasons=reasons, warnings=warnings)


# ----------------------------------------------------------------------------- running it
def _default_evaluator() -> Callable[..., Any]:
    from ..evaluate import evaluate

    return evaluate


def _compact(report: Any) -> dict[str, Any]:
    """A report as a dict without its curves (they live in `defectdet val`'s own report)."""
    d = report.to_dict() if hasattr(report, "to_dict") else dict(report)
    return {k: v for k, v in d.items() if k not in ("pr_curves", "kpi_curve")}


def gate_report_path(int8: str | os.PathLike) -> Path:
    """``model.int8.onnx`` -> ``model.int8.gate.json``."""
    return Path(int8).with_suffix(".gate.json")


def _record(result: GateResult, int8: Path, doc: dict[str, Any], thresholds: dict | None = None) -> None:
    """Write the gate report and put the decision (and the INT8 model's own ``thresholds``, when
    recalibrated) into the INT8 sidecar (atomically)."""
    result.report_path = atomic_write_text(
        gate_report_path(int8), json.dumps(doc, indent=1, default=str) + "\n"
    )
    mapc = next(c for c in result.checks if c.metric == "mAP50")
    gate = GateVerdict(
        decision=result.decision,
        report=result.report_path.name,
        date=doc["date"],
        map50_fp32=mapc.fp32,
        map50_int8=mapc.int8,
        reasons=tuple(result.reasons),
    )
    ModelCard.amend(int8, thresholds=thresholds, gate=gate)


def thresholds_path(int8: str | os.PathLike) -> Path:
    """``model.int8.onnx`` -> ``model.int8.thresholds.yaml``."""
    return Path(int8).with_suffix(".thresholds.yaml")


def operating_point(fp32: Path, thresholds: Any) -> tuple[Any, str]:
    """(thresholds for both models, where they came from): the given ones, the FP32 sidecar's
    ``thresholds`` (as names), or None = each model's own max-F1. Given ones are parsed by the
    evaluator, under the same rules as the sidecar's (:mod:`defectdet.artifact.thresholds`)."""
    if thresholds is not None:
        return thresholds, f"given ({thresholds})" if isinstance(thresholds, (str, os.PathLike)) else "given"
    deployed = ModelCard.load(fp32, missing_ok=True).thresholds
    if deployed:
        return deployed.by_name(), sidecar_path(fp32).name
    return None, "each model's own max-F1 (pass --thresholds to gate at the deployed ones)"


def run_gate(
    fp32: str | os.PathLike,
    int8: str | os.PathLike,
    data: str | os.PathLike,
    limits: Limits = Limits(),
    force: bool = False,
    imgsz: Any = None,
    max_images: int | None = None,
    thresholds: Any = None,
    evaluator: Callable[..., Any] | None = None,
    recalibrate: Any = None,
    escape_rule: str = "box",
) -> GateResult:
    """Evaluate both models on ``data``'s val split, compare, record; raise :class:`GateRefused`
    when refused and not ``force``. ``thresholds`` (a thresholds YAML / {class: conf}) sets both
    models' operating point (see :func:`operating_point`); ``recalibrate`` (a target escape rate, or a
    :class:`~defectdet.part_rule.OperatingTarget`) gives each model its own calibrated thresholds instead
    (module docstring). ``escape_rule``: what
    catches a defective part in the part KPIs and the calibration (``defectdet val --escape-rule``)."""
    from ..metrics import check_escape_rule

    check_escape_rule(escape_rule, f"--escape-rule {escape_rule}")
    fp32, int8 = Path(fp32), Path(int8)
    for p in (fp32, int8):
        load_onnx(p, weights=False)  # a missing, empty, text, truncated or wrong-opset file: one line, now
    evaluate = evaluator or _default_evaluator()
    kw = {
        "imgsz": imgsz,
        "conf": 0.001,
        "device": "cpu",
        "max_images": max_images,
        "escape_rule": escape_rule,
    }
    if recalibrate is not None:
        from ..part_rule import OperatingTarget

        if not isinstance(recalibrate, OperatingTarget):
            if not 0 <= recalibrate < 1:
                raise ConfigError(
                    f"--recalibrate {recalibrate}: expected a target escape rate in [0, 1), e.g. 0.01"
                )
            recalibrate = OperatingTarget(escape=recalibrate)
        if thresholds is not None:
            raise ConfigError(
                "--thresholds and --recalibrate exclude each other: recalibrating fits each "
                "model's own thresholds"
            )
        kw.update(recalibrate.evaluate_kwargs())
        source = f"each model's own, calibrated on val for {recalibrate.describe()}"
    else:
        kw["thresholds"], source = operating_point(fp32, thresholds)
    print(
        f"defectdet gate: evaluating {fp32.name} (FP32) and {int8.name} (INT8) on {data} (val, CPU; "
        f"thresholds: {source})"
    )
    r32 = evaluate(str(fp32), data, **kw)
    r8 = evaluate(str(int8), data, **kw)
    intervals = {}
    if limits.confidence:
        from .gate_bootstrap import paired_intervals

        names = list(_get(r32, "per_class") or {})
        intervals = paired_intervals(r32, r8, names, escape_rule, level=limits.confidence)
    result = compare(r32, r8, limits, recalibrated=recalibrate is not None, intervals=intervals)
    result.forced = force and not result.passed
    own = None
    if recalibrate is not None:
        from ..evaluate import write_thresholds

        own = {str(k): float(v) for k, v in (_get(r8, "thresholds") or {}).items()}
        write_thresholds(r8, thresholds_path(int8))  # the same YAML `defectdet val --target-escape` writes
    doc = {
        "decision": result.decision,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "limits": asdict(limits),
        "bootstrap": {"level": limits.confidence, "intervals": intervals},
        "thresholds": source,
        "data": str(data),
        "fp32_model": str(fp32),
        "int8_model": str(int8),
        "checks": [asdict(c) for c in result.checks],
        "reasons": result.reasons,
        "warnings": result.warnings,
        "fp32": _compact(r32),
        "int8": _compact(r8),
    }
    _record(result, int8, doc, own)
    print(result.table())
    for w in result.warnings:
        print(f"defectdet gate: warning: {w}")
    if result.decision == "refused":
        raise GateRefused(
            f"{int8.name} refused: {'; '.join(result.reasons)}; report {result.report_path} "
            "(--force accepts it anyway)"
        )
    verdict = "passed" if result.passed else f"refused but forced ({'; '.join(result.reasons)})"
    print(f"defectdet gate: {int8.name} {verdict}; report {result.report_path}")
    if own is not None:
        print(
            f"defectdet gate: {int8.name} deploys with its own thresholds: {thresholds_path(int8)} (also in "
            "its sidecar)"
        )
    return result


# ----------------------------------------------------------------------------- CLI
def gate_from_args(fp32: Path, int8: Path, data: str, a: argparse.Namespace) -> int:
    """Run the gate with parsed arguments; 0 when passed or forced (refusal raises)."""
    limits = Limits(a.max_drop, a.max_class_drop, a.max_escape_rise, a.max_overkill_rise, a.gate_confidence)
    run_gate(
        fp32,
        int8,
        data,
        limits,
        force=a.force,
        max_images=a.max_images,
        thresholds=a.thresholds,
        recalibrate=recalibration(a),
        escape_rule=a.escape_rule,
    )
    return 0


def recalibration(a: argparse.Namespace) -> Any:
    """The gate's calibration target from ``--recalibrate`` / ``--recalibrate-overkill`` /
    ``--recalibrate-confidence``: None, an escape rate, or an overkill
    :class:`~defectdet.part_rule.OperatingTarget`; a conflicting combination is one line."""
    from ..part_rule import OperatingTarget

    over, conf = getattr(a, "recalibrate_overkill", None), getattr(a, "recalibrate_confidence", None)
    if over is not None and a.recalibrate is not None:
        raise ConfigError(
            f"--recalibrate {a.recalibrate} and --recalibrate-overkill {over}: expected one of them (an "
            "escape rate from the defective parts, or an overkill rate from the good parts)"
        )
    if conf is not None and over is None:
        raise ConfigError(f"--recalibrate-confidence {conf}: expected together with --recalibrate-overkill")
    return OperatingTarget(overkill=over, confidence=conf) if over is not None else a.recalibrate


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet gate``."""
    from ..settings.options import parser

    p = parser(
        GATE,
        "Compare FP32 and INT8 ONNX models on the validation split (CPU) and refuse the INT8 model when it "
        "loses accuracy.",
        GATE_EXITS,
    )
    a = p.parse_args(argv)
    return gate_from_args(Path(a.fp32), Path(a.int8), a.data, a)
