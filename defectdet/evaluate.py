"""``defectdet val``: run a detector over a dataset split and report mAP plus part-level KPIs.

One code path for every model ultralytics can load — a ``.pt`` checkpoint, an FP32 ONNX or an
INT8 Q/DQ ONNX (AutoBackend runs ONNX with onnxruntime on the CPU): ``YOLO(model).predict`` at a
low confidence floor collects raw detections, and everything after that is numpy in
:mod:`defectdet.metrics`. The export accuracy gate calls :func:`evaluate` on the FP32 and INT8
models and compares the reports.

``--target-escape 0.01`` calibrates per-class thresholds on the split
(:func:`defectdet.metrics.calibrate_thresholds`), ``--target-overkill 0.05 --threshold-rule part`` one part
threshold from the good parts (:mod:`defectdet.part_rule`), and either writes the thresholds YAML the
runtime reads;
``--write-sidecar model.onnx`` also puts them into that model's sidecar ``model.json``. Given
thresholds (``--thresholds``) follow :mod:`defectdet.artifact.thresholds`: names or ids, and
classes a file leaves out are taken at their max-F1 confidence.
"""

from __future__ import annotations

import argparse
import io
import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from . import metrics as M
from .artifact import ModelCard, RunInfo, Thresholds
from .config import atomic_write_bytes, atomic_write_text, parse_overrides
from .data.formats import detect_format, label_path, list_images, load_data_yaml, prepare_data
from .data.images import check_headers
from .errors import ConfigError, DataError
from .evaluate_io import load_model as _load_model  # noqa: F401  (the names tests and callers use)
from .evaluate_io import read_label_arrays as _read_labels


@dataclass
class EvalReport:
    """Box metrics and part KPIs of one model on one dataset split, at its operating thresholds."""

    map50: float
    map50_95: float
    per_class: dict[str, dict[str, float]]  # name -> ap50, ap50_95, precision, recall (at op), labels
    # defective parts not caught at the operating thresholds (escape_rule: by a correct box, or any detection)
    escape_rate: float
    overkill_rate: float  # clean parts with any detection at the operating thresholds
    escapes: int
    overkills: int
    n_images: int
    n_defective: int
    n_clean: int
    thresholds: dict[str, float]  # per-class operating confidence
    per_class_recall_at_op: dict[str, float]  # box recall (IoU 0.5) at the operating thresholds
    pr_curves: dict[str, dict[str, list[float]]]  # name -> recall (101 points), precision envelope
    kpi_curve: dict[str, list[float]] = field(default_factory=dict)  # one global conf -> escape/overkill
    threshold_source: str = "max-f1"  # max-f1 | given | given+max-f1 (a partial file) | calibrated
    calibration: dict[str, Any] | None = None  # target_escape or target_overkill, reachable, allowed_*
    model: str = ""
    data: str = ""
    split: str = "val"
    imgsz: int | list[int] | None = None
    escape_rule: str = (
        "box"  # what catches a defective part: a correct box, or any detection (the line's reject)
    )
    views: dict[str, Any] | None = None  # test-time views (tta, tiles, tile_overlap, path); None: off
    detections: list[M.ImageDetections] | None = field(default=None, repr=False)  # per image (not serialised)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (without the detections)."""
        d = asdict(replace(self, detections=None))
        del d["detections"]
        return d

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``val_report.json``, ``pr_curves.png`` and ``part_kpis.png`` atomically."""
        out = Path(out_dir)
        paths = {"json": out / "val_report.json", "pr": out / "pr_curves.png", "kpi": out / "part_kpis.png"}
        atomic_write_text(paths["json"], json.dumps(self.to_dict(), indent=1) + "\n")
        atomic_write_bytes(paths["pr"], _plot_pr(self))
        atomic_write_bytes(paths["kpi"], _plot_kpis(self))
        return paths

    def summary(self) -> str:
        """A printable table: per-class AP/P/R and the part KPIs, counted in parts."""
        rows = [f"{'class':<16}{'labels':>7}{'AP50':>8}{'AP50-95':>9}{'P':>7}{'R':>7}{'conf':>8}"]
        n_labels = sum(int(v["labels"]) for v in self.per_class.values())
        rows.append(f"{'all':<16}{n_labels:>7}{self.map50:>8.3f}{self.map50_95:>9.3f}")
        for name, v in self.per_class.items():
            rows.append(
                f"{name:<16}{int(v['labels']):>7}{v['ap50']:>8.3f}{v['ap50_95']:>9.3f}"
                f"{v['precision']:>7.3f}{v['recall']:>7.3f}{self.thresholds[name]:>8.3f}"
            )
        caught = "a correct box" if self.escape_rule == "box" else "any detection"
        rows.append(
            f"parts ({self.split}, thresholds: {self.threshold_source}, caught by {caught}): escape "
            f"{self.escape_rate:.1%} ({self.escapes} of {self.n_defective} defective), overkill "
            f"{self.overkill_rate:.1%} ({self.overkills} of {self.n_clean} clean)"
        )
        if self.calibration and not self.calibration["reachable"] and self.calibration.get("target_overkill"):
            cal = self.calibration
            conf = f" with {cal['confidence']:.0%} confidence" if cal.get("confidence") else ""
            rows.append(
                f"overkill target {cal['target_overkill']}{conf} is unreachable: {self.n_clean} good parts "
                "are too few to bound it; the threshold flags none of them"
            )
        elif self.calibration and not self.calibration["reachable"]:
            rows.append(
                f"escape target {self.calibration['target_escape']} is unreachable: {self.escapes} defective "
                f"parts have no {'correct detection' if self.escape_rule == 'box' else 'detection'} at any "
                f"confidence down to the --conf floor (allowed {self.calibration['allowed_escapes']})"
            )
        return "\n".join(rows)


# ----------------------------------------------------------------------------- dataset reading
def read_split(data: str | os.PathLike, split: str) -> tuple[list[str], list[Path]]:
    """Class names and image paths of ``split``, read by :mod:`defectdet.data.formats` as training
    does (folders, ``.txt`` lists, lists of both; a relative ``path:`` against the yaml's folder).
    A COCO json or VOC folder is converted once into the cache first."""
    if detect_format(data) != "yolo":
        data = prepare_data(data)
    spec = load_data_yaml(Path(data) / "data.yaml" if Path(data).is_dir() else data)
    if not spec.names:
        raise DataError(f"{spec.where('names')}: expected 'names:' as a list or an id -> name mapping")
    if split not in spec.splits:
        raise DataError(f"{spec.yaml_path}: no '{split}:' split; expected one of {list(spec.splits)}")
    refs = []
    for src in spec.splits[split]:
        if not src.exists():
            raise DataError(f"{spec.where(split)}: {src} not found; expected an image folder or a .txt list")
        refs += list_images(src)
    missing = next((r for r in refs if not r.path.is_file()), None)
    if missing is not None:
        where = f"{missing.listed_in}:{missing.line}" if missing.listed_in else str(missing.path)
        raise DataError(f"{where}: image {missing.path} not found")
    if not refs:
        raise DataError(f"{spec.where(split)}: split '{split}' has no images")
    check_headers(r.path for r in refs)  # a hostile header is one line naming the file, not PIL's traceback
    return spec.names, [r.path for r in refs]


# ----------------------------------------------------------------------------- running the model
def _onnx_imgsz(model: Path, graph: Path) -> list[int] | None:
    """(H, W) of an ONNX model: its card's ``imgsz``, else the static input of ``graph`` (the model,
    or its float view: (B, 3, H, W)), for models without a card or ultralytics metadata."""
    card = ModelCard.load(model, missing_ok=True)
    if card.imgsz:
        return list(card.imgsz)
    from .artifact import io_shapes, load_onnx

    hw = io_shapes(load_onnx(graph, weights=False, check=False))[1][2:4]
    return hw if len(hw) == 2 and all(hw) else None


def collect_detections(
    model: Any, images: list[Path], nc: int, imgsz=None, conf=0.001, iou=0.7, device="cpu"
) -> tuple[list[M.ImageDetections], list[int] | None]:
    """Predict every image and pair its detections with its labels (pixel xyxy); also returns the
    inference size used (H, W). A uint8-input ONNX runs as its float view (the same graph less the
    Cast/Transpose/Gather/Div it starts with, fed what ultralytics feeds: the same values)."""
    from .artifact.uint8_view import float_copy

    with float_copy(model) as runnable:  # a uint8-input ONNX: its float view, for ultralytics
        yolo = _load_model(runnable)
        model_nc = len(getattr(yolo, "names", None) or {})
        if (
            model_nc and model_nc != nc and model_nc != 999
        ):  # 999: ultralytics' names for an ONNX without metadata
            raise DataError(
                f"{model}: the model has {model_nc} classes but the data has {nc}; expected the same classes"
            )
        if imgsz is None and isinstance(model, (str, os.PathLike)) and str(model).endswith(".onnx"):
            imgsz = _onnx_imgsz(Path(str(model)), Path(str(runnable)))
        elif imgsz is None and isinstance(model, (str, os.PathLike)) and str(model).endswith(".pt"):
            run = RunInfo.find(model)  # a crop=native model: its run's native size, else the checkpoint's own
            imgsz = run.deploy_imgsz if run is not None else None
        kwargs = {"conf": conf, "iou": iou, "device": device, "verbose": False, "stream": True, "save": False}
        if imgsz is not None:
            kwargs["imgsz"] = imgsz
        out = []
        for img, r in zip(images, yolo.predict(source=[str(p) for p in images], **kwargs)):
            if Path(r.path).name != img.name:
                raise DataError(f"{img}: prediction order mismatch (got {r.path})")
            h, w = r.orig_shape
            gt_cls, gt_xyxyn = _read_labels(label_path(img), nc)
            cls = r.boxes.cls.cpu().numpy().astype(np.int64)  # (N,)
            if cls.size and cls.max() >= nc:
                raise DataError(f"{img}: the model predicts class {cls.max()} but the data has {nc} classes")
            out.append(
                M.ImageDetections(
                    boxes=r.boxes.xyxy.cpu().numpy(),  # (N, 4) pixels
                    conf=r.boxes.conf.cpu().numpy(),  # (N,)
                    cls=cls,
                    gt_boxes=gt_xyxyn * np.array([w, h, w, h]),  # (M, 4) pixels
                    gt_cls=gt_cls,
                    name=str(img),
                )
            )
        used = getattr(getattr(yolo, "predictor", None), "imgsz", None)
        return out, [int(v) for v in used] if used is not None else None


# ----------------------------------------------------------------------------- report
def operating_thresholds(thresholds: Any, names: list[str]) -> Thresholds | None:
    """The classes' given operating thresholds: None (none given: max-F1), one number for every
    class, a :class:`~defectdet.artifact.Thresholds`, or a thresholds YAML path / ``{class: conf}``
    mapping, parsed by :meth:`Thresholds.load` (names or ids; a partial file sets only its classes)."""
    if thresholds is None:
        return None
    classes = dict(enumerate(names))
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        if not 0.0 <= float(thresholds) <= 1.0:
            raise ConfigError(
                f"--thresholds {thresholds}: expected one confidence in [0, 1] or a thresholds YAML"
            )
        return Thresholds.uniform(classes, float(thresholds))
    return Thresholds.load(thresholds, classes)


def _kpi_curve(scores: M.PartScores, n: int = 101) -> dict[str, list[float]]:
    """Escape and overkill rates when one global confidence is used for every class."""
    grid = np.linspace(0.0, 1.0, n)  # (n,)
    rows = [M.part_kpis(scores, np.full(scores.hit.shape[1], g)) for g in grid]
    return {
        "conf": grid.round(4).tolist(),
        "escape_rate": [r["escape_rate"] for r in rows],
        "overkill_rate": [r["overkill_rate"] for r in rows],
    }


def build_report(
    images: list[M.ImageDetections],
    names: list[str],
    thresholds: Any = None,
    target_escape: float | None = None,
    escape_rule: str = "box",
    threshold_rule: str = "per-class",
    confidence: float | None = None,
    target_overkill: float | None = None,
) -> EvalReport:
    """Every metric of the report from collected detections (no model needed: testable alone).

    ``escape_rule`` (:data:`defectdet.metrics.ESCAPE_RULES`): what catches a defective part in the
    escape count and the calibration — a correct box ("box"), or any detection ("any", the line's reject).
    ``threshold_rule`` (with ``target_escape``): "per-class" thresholds
    (:func:`defectdet.metrics.calibrate_thresholds`) or one threshold on the part score, at an optional
    bootstrap ``confidence`` (:mod:`defectdet.part_rule`). ``target_overkill`` (the part rule only, not
    with ``target_escape``): one threshold from the good parts, overkill <= target at ``confidence``."""
    nc = len(names)
    stats = M.BoxStats.from_images(images, nc)
    ap, pr = M.ap_per_class(stats)  # (nc, T), (nc, 101)
    map50, map50_95 = M.mean_ap(ap, stats.n_gt)
    scores = M.PartScores.from_images(images, nc, escape_rule)
    given = thresholds if isinstance(thresholds, Thresholds) else operating_thresholds(thresholds, names)
    op, source, calibration = M.max_f1_thresholds(stats), "max-f1", None
    if given:
        op = np.asarray(op, np.float64).copy()
        op[list(given.given)] = list(given.given.values())
        source = "given" if given.complete else "given+max-f1"
    if target_escape is not None and target_overkill is not None:
        raise ConfigError("target_escape and target_overkill: expected one of them, not both")
    if target_overkill is not None:
        if threshold_rule != "part":
            raise ConfigError(
                f"target_overkill={target_overkill}: expected with threshold_rule part (one threshold on the "
                "part score, set from the good parts)"
            )
        from .part_rule import calibrate_overkill_threshold

        cal = calibrate_overkill_threshold(scores, target_overkill, confidence)
        op, source = cal.thresholds, "calibrated"
        calibration = {
            "target_escape": None,
            "target_overkill": target_overkill,
            "reachable": cal.reachable,
            "allowed_escapes": None,
            "allowed_overkills": cal.allowed_overkills,
            "threshold_rule": threshold_rule,
            "confidence": confidence,
        }
    elif target_escape is not None:
        if threshold_rule == "part":
            from .part_rule import calibrate_part_threshold

            cal = calibrate_part_threshold(scores, target_escape, confidence)
        else:
            cal = M.calibrate_thresholds(scores, op, target_escape, active=stats.n_gt > 0)
        op, source = cal.thresholds, "calibrated"
        calibration = {
            "target_escape": target_escape,
            "reachable": cal.reachable,
            "allowed_escapes": cal.allowed_escapes,
            "threshold_rule": threshold_rule,
            "confidence": confidence,
        }
    p, r = M.pr_at_thresholds(stats, op)
    kpis = M.part_kpis(scores, op)
    per_class = {
        n: {
            "ap50": float(ap[c, 0]),
            "ap50_95": float(ap[c].mean()),
            "precision": float(p[c]),
            "recall": float(r[c]),
            "labels": int(stats.n_gt[c]),
        }
        for c, n in enumerate(names)
    }
    return EvalReport(
        map50=map50,
        map50_95=map50_95,
        per_class=per_class,
        escape_rate=kpis["escape_rate"],
        overkill_rate=kpis["overkill_rate"],
        escapes=kpis["escapes"],
        overkills=kpis["overkills"],
        n_images=len(images),
        n_defective=kpis["n_defective"],
        n_clean=kpis["n_clean"],
        thresholds={n: float(op[c]) for c, n in enumerate(names)},
        per_class_recall_at_op={n: float(r[c]) for c, n in enumerate(names)},
        pr_curves={
            n: {"recall": M.RECALL_GRID.round(4).tolist(), "precision": pr[c].round(6).tolist()}
            for c, n in enumerate(names)
        },
        kpi_curve=_kpi_curve(scores),
        threshold_source=source,
        calibration=calibration,
        escape_rule=escape_rule,
    )


def evaluate(
    model: Any,
    data: str | os.PathLike,
    imgsz=None,
    conf: float = 0.001,
    iou: float = 0.7,
    device="cpu",
    thresholds: Any = None,
    split: str = "val",
    max_images: int | None = None,
    target_escape: float | None = None,
    escape_rule: str = "box",
    threshold_rule: str = "per-class",
    confidence: float | None = None,
    target_overkill: float | None = None,
    tta: str = "none",
    tiles: Any = None,
    tile_overlap: float = 0.2,
) -> EvalReport:
    """Evaluate a .pt / .onnx (FP32 or INT8 Q/DQ) model on a data.yaml split.

    ``thresholds``: None (each class at its max-F1 confidence), one float, {class_name_or_id: conf}
    or a thresholds YAML path (checked before the model runs). ``target_escape``: calibrate thresholds on this
    split to meet it (starting from ``thresholds``); ``target_overkill``: one part threshold from the
    split's good parts instead (:func:`build_report`). ``max_images``: an evenly spaced subset, for quick
    checks. ``escape_rule``: see :func:`build_report`. ``tta`` / ``tiles`` / ``tile_overlap``: test-time
    views, as ``defectdet inspect`` runs them (:mod:`defectdet.evaluate_views`: an .onnx/.engine on the
    runtime, a .pt on ultralytics).
    """
    from .evaluate_views import ViewDetector, check_views, collect_view_detections

    M.check_escape_rule(escape_rule, f"escape_rule={escape_rule!r}")
    tta, tiles, tile_overlap = check_views(tta, tiles, tile_overlap)
    if not hasattr(model, "predict") and not Path(model).is_file():
        raise ConfigError(f"{model}: model file not found; expected a .pt checkpoint or an .onnx model")
    if not hasattr(model, "predict") and str(model).endswith(".onnx"):
        from .artifact import load_onnx

        load_onnx(
            model, weights=False
        )  # empty, text, truncated, wrong opset: one line before any data is read
    names, images = read_split(data, split)
    thresholds = operating_thresholds(thresholds, names)  # a bad file fails here, not after the predictions
    if max_images is not None and max_images < len(images):
        images = [images[i] for i in np.linspace(0, len(images) - 1, max_images).round().astype(int)]
    seen = None  # the views' settings, for the report
    if tta != "none" or tiles is not None:
        kw = {"imgsz": imgsz, "conf": conf, "iou": iou, "device": device}
        with ViewDetector(model, len(names), tta, tiles, tile_overlap, **kw) as views:
            dets, used = collect_view_detections(views, images, len(names)), list(views.imgsz)
        seen = {"tta": tta, "tiles": tiles, "tile_overlap": tile_overlap, "path": views.path}
    else:
        dets, used = collect_detections(
            model, images, len(names), imgsz=imgsz, conf=conf, iou=iou, device=device
        )
    report = build_report(
        dets,
        names,
        thresholds=thresholds,
        target_escape=target_escape,
        escape_rule=escape_rule,
        threshold_rule=threshold_rule,
        confidence=confidence,
        target_overkill=target_overkill,
    )
    report.model, report.data, report.split, report.imgsz = str(model), str(data), split, used
    report.views = seen
    report.detections = dets  # for paired comparisons (the INT8 gate's bootstrap)
    return report


def write_thresholds(report: EvalReport, path: str | os.PathLike) -> Path:
    """The runtime's thresholds YAML: per-class conf, the target and what was achieved, in parts."""
    cal = report.calibration or {}
    values = dict(enumerate(report.thresholds.values()))
    return Thresholds.of(dict(enumerate(report.thresholds)), values).save(
        path,
        target_escape=cal.get("target_escape"),
        **({"target_overkill": cal["target_overkill"]} if cal.get("target_overkill") is not None else {}),
        **({"confidence": cal["confidence"]} if cal.get("confidence") is not None else {}),
        reachable=cal.get("reachable", True),
        escape_rule=report.escape_rule,
        achieved={
            "escape_rate": report.escape_rate,
            "overkill_rate": report.overkill_rate,
            "escapes": report.escapes,
            "overkills": report.overkills,
            "n_defective": report.n_defective,
            "n_clean": report.n_clean,
        },
        model=report.model,
        data=report.data,
        split=report.split,
    )


# ----------------------------------------------------------------------------- plots
def _figure_png(draw) -> bytes:
    """Render ``draw(ax)`` on a headless matplotlib figure and return PNG bytes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    draw(fig.subplots())
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _plot_pr(rep: EvalReport) -> bytes:
    """Per-class precision-recall envelopes at IoU 0.5."""

    def draw(ax):
        for name, curve in rep.pr_curves.items():
            ax.plot(
                curve["recall"], curve["precision"], label=f"{name} AP50 {rep.per_class[name]['ap50']:.3f}"
            )
        ax.set(
            xlabel="recall",
            ylabel="precision",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"PR curves (IoU 0.5), mAP50 {rep.map50:.3f}, mAP50-95 {rep.map50_95:.3f}",
        )
        ax.legend(fontsize=8, loc="lower left")

    return _figure_png(draw)


def _plot_kpis(rep: EvalReport) -> bytes:
    """Escape / overkill against one global confidence, with the per-class operating point marked."""

    def draw(ax):
        k = rep.kpi_curve
        ax.plot(k["conf"], k["escape_rate"], color="C3", label="escape rate (defective parts)")
        ax.plot(k["conf"], k["overkill_rate"], color="C0", label="overkill rate (clean parts)")
        ax.axhline(
            rep.escape_rate, color="C3", ls="--", lw=0.8, label=f"escape at op ({rep.threshold_source})"
        )
        ax.axhline(
            rep.overkill_rate, color="C0", ls="--", lw=0.8, label=f"overkill at op ({rep.threshold_source})"
        )
        ax.set(
            xlabel="one confidence threshold for all classes",
            ylabel="rate",
            xlim=(0, 1),
            ylim=(0, 1.02),
            title=f"part KPIs: {rep.n_defective} defective, {rep.n_clean} clean parts",
        )
        ax.legend(fontsize=8)

    return _figure_png(draw)


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    """Built from :data:`defectdet.settings.val.VAL` (each option declared there once), plus the key=value
    overrides."""
    from .settings.options import parser
    from .settings.val import VAL

    p = parser(
        VAL,
        "mAP and part-level KPIs (escape, overkill) of a .pt or .onnx model; --target-escape calibrates "
        "thresholds for an escape rate, --target-overkill one part threshold for an overkill rate.",
        [
            (0, "the report (and any thresholds) written"),
            (
                1,
                "the --target-escape or --target-overkill target is unreachable (the best thresholds found "
                "are still written)",
            ),
        ],
        before="--thresholds files: {thresholds: {class_name_or_id: conf}}; classes left out stay at max-F1.",
    )
    p.add_argument(
        "overrides", nargs="*", help="the same options as key=value (model=best.pt target_escape=0.01)"
    )
    return p


def _args(argv: list[str]) -> argparse.Namespace:
    """Options, then key=value overrides on top (checked as the options are); --model and --data are
    required."""
    from .settings.options import apply_overrides
    from .settings.val import VAL

    args = _parser().parse_args(argv)
    apply_overrides(args, VAL, parse_overrides(args.overrides))
    if not args.model or not args.data:
        raise ConfigError(
            "--model and --data are required (e.g. defectdet val --model best.pt --data data.yaml)"
        )
    calibrating = args.target_escape is not None or args.target_overkill is not None
    if args.confidence is not None and (args.threshold_rule != "part" or not calibrating):
        raise ConfigError(
            f"--confidence {args.confidence}: expected together with --target-escape or --target-overkill "
            "and --threshold-rule part"
        )
    if args.target_escape is not None and args.target_overkill is not None:
        raise ConfigError(
            f"--target-escape {args.target_escape} and --target-overkill {args.target_overkill}: expected "
            "one of them (escape from the defective parts, or overkill from the good parts)"
        )
    if args.target_overkill is not None and args.threshold_rule != "part":
        raise ConfigError(
            f"--target-overkill {args.target_overkill}: expected with --threshold-rule part (one threshold "
            "on the part score, set from the good parts)"
        )
    from .evaluate_views import check_views

    args.tta, args.tiles, args.tile_overlap = check_views(args.tta, args.tiles, args.tile_overlap)
    if args.write_sidecar:
        ModelCard.load(args.write_sidecar).with_thresholds(None)  # a missing sidecar or names fails now
    return args


def cli(argv: list[str]) -> int:
    """``defectdet val``: print and save the report; with a target (--target-escape or --target-overkill)
    write the thresholds YAML, with --write-sidecar the model's sidecar too. Exit statuses: see ``--help``."""
    args = _args(argv)
    thresholds = args.thresholds
    try:
        thresholds = float(thresholds) if thresholds is not None else None
    except ValueError:
        pass  # a YAML path
    report = evaluate(
        args.model,
        args.data,
        imgsz=args.imgsz,
        conf=args.conf,
        iou=args.iou,
        device=args.device,
        thresholds=thresholds,
        split=args.split,
        max_images=args.max_images,
        target_escape=args.target_escape,
        escape_rule=args.escape_rule,
        threshold_rule=args.threshold_rule,
        confidence=args.confidence,
        target_overkill=args.target_overkill,
        tta=args.tta,
        tiles=args.tiles,
        tile_overlap=args.tile_overlap,
    )
    out = Path(args.out or Path("runs") / "val" / Path(str(args.model)).stem)
    paths = report.save(out)
    print(report.summary())
    print(f"report: {paths['json']}  plots: {paths['pr'].name}, {paths['kpi'].name}")
    if args.write_sidecar:
        side = ModelCard.amend(args.write_sidecar, thresholds=report.thresholds)
        print(f"sidecar: {side} (thresholds: {report.threshold_source})")
    if args.target_escape is None and args.target_overkill is None:
        return 0
    written = write_thresholds(report, args.thresholds_out or out / "thresholds.yaml")
    print(f"thresholds: {written}")
    return 0 if report.calibration["reachable"] else 1
