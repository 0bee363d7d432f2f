"""K-fold cross-validation for ``bench/quality.py --kfold K``: every defective part counted once, held out.

A small rare-defect set (KolektorSDD: 52 defective images, 10 in its val split) cannot give part-level
KPIs from one split: one escape is 10 %. Here the train and val splits are pooled and dealt into ``K``
folds, stratified (defective and defect-free parts each sorted by the md5 of their file name and dealt
round-robin, so every fold holds ~1/K of the defective parts and no file moves between folds when the
set grows elsewhere). Fold ``f`` trains on the other folds and is scored on its own parts.

Part KPIs are pooled over the folds and cross-fitted: the thresholds that count fold ``f`` are calibrated
on the held-out parts of the other folds (each scored by its own model), so no part is counted at a
threshold fitted on it. Besides thresholds calibrated for an escape target on the defective parts, one
rule sets the part threshold from the other folds' good parts for the line's overkill bound
(:func:`defectdet.part_rule.calibrate_overkill_threshold`); escape is then counted, not calibrated.
``operating_curve`` adds the whole escape/overkill trade-off of the pooled part
scores (descriptive: fitted on the parts it counts).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from defectdet import metrics as M
from defectdet.config import atomic_write_text


def _md5(p: Path) -> str:
    return hashlib.md5(p.name.encode()).hexdigest()


def deal_folds(images: list[Path], defective: list[bool], k: int) -> list[int]:
    """Fold index of each image: defective and defect-free parts each sorted by md5 of the name and dealt
    round-robin (stratified; deterministic)."""
    if k < 2:
        raise ValueError(f"k={k}: expected at least 2 folds")
    fold = [0] * len(images)
    for want in (True, False):
        idx = sorted((i for i, d in enumerate(defective) if d == want), key=lambda i: _md5(images[i]))
        for j, i in enumerate(idx):
            fold[i] = j % k
    return fold


def make_fold_yamls(data: str, k: int, out: Path) -> list[str]:
    """Write ``out/fold<f>/{train,val}.txt`` and ``data.yaml`` for each fold of ``data``'s train + val
    images (absolute paths; ultralytics finds the labels beside ``/images/`` as usual). Returns the yamls."""
    from defectdet.data.formats import label_path
    from defectdet.evaluate import read_split

    names, train = read_split(data, "train")
    _, val = read_split(data, "val")
    images = sorted({p.resolve() for p in train + val})
    defective = [label_path(p).is_file() and bool(label_path(p).read_text().strip()) for p in images]
    fold = deal_folds(images, defective, k)
    yamls = []
    for f in range(k):
        d = out / f"fold{f}"
        held = [str(p) for p, g in zip(images, fold) if g == f]
        rest = [str(p) for p, g in zip(images, fold) if g != f]
        atomic_write_text(d / "train.txt", "\n".join(rest) + "\n")
        atomic_write_text(d / "val.txt", "\n".join(held) + "\n")
        body = [
            f"# fold {f} of {k} of {data}: trains on the other folds, scored on this one",
            f"train: {d / 'train.txt'}",
            f"val: {d / 'val.txt'}",
            "names:",
        ]
        body += [f"  {i}: {n}" for i, n in enumerate(names)]
        atomic_write_text(d / "data.yaml", "\n".join(body) + "\n")
        yamls.append(str(d / "data.yaml"))
    return yamls


def save_detections(path: Path, images: list[M.ImageDetections]) -> Path:
    """Held-out detections of one fold as gzipped JSON (pixels rounded to 0.1, confidences to 1e-5): what
    pooling needs, so that a later session pools without the fold's weights."""
    import gzip

    rows = [
        {
            "name": im.name,
            "boxes": np.round(im.boxes, 1).tolist(),
            "conf": np.round(im.conf, 5).tolist(),
            "cls": im.cls.tolist(),
            "gt_boxes": np.round(im.gt_boxes, 1).tolist(),
            "gt_cls": im.gt_cls.tolist(),
        }
        for im in images
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    with gzip.open(tmp, "wt", encoding="utf-8") as f:
        json.dump(rows, f)
    tmp.replace(path)
    return path


def load_detections(path: Path) -> list[M.ImageDetections]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [M.ImageDetections(**row) for row in json.load(f)]


def fit_thresholds(
    images: list[M.ImageDetections],
    names: list[str],
    target_escape: float | None,
    rule: str = "any",
    threshold_rule: str = "per-class",
    confidence: float | None = None,
    target_overkill: float | None = None,
) -> tuple[dict[str, float], bool]:
    """({class: threshold}, target reached) calibrated on ``images``: per class (``defectdet val
    --target-escape``) or one threshold on the part score (:mod:`defectdet.part_rule`, optionally with a
    bootstrap ``confidence``); with ``target_overkill``, one part threshold from the good parts
    (``defectdet val --threshold-rule part --target-overkill``)."""
    from defectdet.evaluate import build_report
    from defectdet.part_rule import calibrate_overkill_threshold, calibrate_part_threshold

    if target_overkill is not None:
        s = M.PartScores.from_images(images, len(names), rule)
        cal = calibrate_overkill_threshold(s, target_overkill, confidence)
        return {n: float(t) for n, t in zip(names, cal.thresholds)}, cal.reachable
    if threshold_rule == "per-class":
        rep = build_report(images, names, target_escape=target_escape, escape_rule=rule)
        return dict(rep.thresholds), bool(rep.calibration["reachable"])
    cal = calibrate_part_threshold(
        M.PartScores.from_images(images, len(names), rule), target_escape, confidence
    )
    return {n: float(t) for n, t in zip(names, cal.thresholds)}, cal.reachable


def cross_fitted(
    fold_images: list[list[M.ImageDetections]],
    names: list[str],
    target_escape: float | None,
    rule: str = "any",
    threshold_rule: str = "per-class",
    confidence: float | None = None,
    target_overkill: float | None = None,
) -> dict[str, Any]:
    """Escapes/overkills of every fold at thresholds calibrated (:func:`fit_thresholds`) on the held-out
    parts of the other folds; counts summed over the folds."""
    from defectdet.evaluate import build_report

    tot = {"escapes": 0, "n_defective": 0, "overkills": 0, "n_clean": 0}
    per_fold, reachable = [], True
    for f, test in enumerate(fold_images):
        cal = [im for g, ims in enumerate(fold_images) if g != f for im in ims]
        th, ok = fit_thresholds(cal, names, target_escape, rule, threshold_rule, confidence, target_overkill)
        reachable &= ok
        rep = build_report(test, names, thresholds=th, escape_rule=rule)
        per_fold.append({"thresholds": th, "reachable": ok, **{k: getattr(rep, k) for k in tot}})
        for k in tot:
            tot[k] += getattr(rep, k)
    return {
        **tot,
        "reachable": reachable,
        "target_escape": target_escape,
        "target_overkill": target_overkill,
        "rule": rule,
        "threshold_rule": threshold_rule,
        "confidence": confidence,
        "per_fold": per_fold,
        "escape": tot["escapes"] / tot["n_defective"] if tot["n_defective"] else None,
        "overkill": tot["overkills"] / tot["n_clean"] if tot["n_clean"] else None,
    }


def operating_curve(
    images: list[M.ImageDetections], nc: int, max_escapes: int = 2, max_overkill: float = 0.05
) -> dict[str, Any]:
    """The pooled trade-off of one part score and one threshold: the overkill at the lowest threshold
    that lets at most ``max_escapes`` defective parts through (``escapes_for`` of them, fewer on tied
    scores), and the escapes at the highest overkill <= ``max_overkill``. Fitted on the parts it counts:
    a description of the scores, not a KPI."""
    from defectdet.part_rule import part_scores

    s = M.PartScores.from_images(images, nc, "any")  # the line's rule: any detection rejects
    score, defective = part_scores(s)[1], s.defective  # (P,) a part's highest confidence, (P,)
    pos, neg = np.sort(score[defective])[::-1], score[~defective]  # (D,) descending, (G,)
    n_def, n_clean = len(pos), len(neg)
    out: dict[str, Any] = {"n_defective": n_def, "n_clean": n_clean}
    if n_def > max_escapes:
        t = pos[n_def - 1 - max_escapes]  # catches all but max_escapes defective parts
        ok = bool(np.isfinite(t))  # -inf: more parts than that have no detection at all
        out.update(
            max_escapes=max_escapes,
            reachable=ok,
            overkill_at=float((neg >= t).mean()) if ok and n_clean else None,
            overkills_at=int((neg >= t).sum()) if ok else None,
            escapes_for=int((pos < t).sum()) if ok else None,  # at that threshold: <= max_escapes (ties)
        )
    if n_clean:
        allowed = int(np.floor(max_overkill * n_clean + 1e-9))
        t = np.sort(neg)[::-1][allowed] if allowed < n_clean else -np.inf  # the first clean score not allowed
        t = np.nextafter(t, np.inf) if np.isfinite(t) else t
        esc = int(((pos < t) | ~np.isfinite(pos)).sum())  # a part without any detection always escapes
        out.update(max_overkill=max_overkill, escapes_at=esc, escape_at=esc / n_def if n_def else None)
    return out


def pooled_result(
    fold_results: list[dict],
    fold_images: list[list[M.ImageDetections]],
    names: list[str],
    line_escape: float,
    target_escape: float,
    line_overkill: float = 0.05,
) -> dict[str, Any]:
    """The k-fold row of one arm/seed: per-fold mAP50, mAP50 of the pooled held-out detections, and the
    part KPIs of the line's rule (any detection rejects) cross-fitted at ``line_escape`` and
    ``target_escape``, and with the part threshold set from the good parts at ``line_overkill`` (90 %
    confidence), with the pooled operating curve."""
    from defectdet.evaluate import build_report

    pooled = [im for ims in fold_images for im in ims]
    rep = build_report(pooled, names)
    folds_map = [r["map50"] for r in fold_results]
    return {
        "folds": len(fold_results),
        "map50_folds": folds_map,
        "map50_median": float(np.median(folds_map)),
        "map50_pooled": rep.map50,
        "map50_95_pooled": rep.map50_95,
        "per_class": rep.per_class,
        "line": cross_fitted(fold_images, names, line_escape, "any"),
        "target": cross_fitted(fold_images, names, target_escape, "any"),
        "line_part": cross_fitted(fold_images, names, line_escape, "any", "part"),
        "line_part90": cross_fitted(fold_images, names, line_escape, "any", "part", 0.9),
        "target_part90": cross_fitted(fold_images, names, target_escape, "any", "part", 0.9),
        "overkill_part90": cross_fitted(fold_images, names, None, "any", "part", 0.9, line_overkill),
        "curve": operating_curve(pooled, len(names)),
        "images_per_s": [r.get("images_per_s") for r in fold_results],
        "load_1m": [r.get("load_1m") for r in fold_results],
        "wall_s": sum(r.get("wall_s") or 0 for r in fold_results),
    }


def _pct(n, d) -> str:
    return f"{n}/{d} ({n / d:.1%})" if d else "n/a"


RULES = (
    ("line", "per-class @1%"),
    ("line_part", "part score @1%"),
    ("line_part90", "part score @1%, 90% conf."),
    ("target", "per-class @5%"),
    ("target_part90", "part score @5%, 90% conf."),
    ("overkill_part90", "part score from good parts, overkill @5%, 90% conf."),
)


def kfold_table(rows: list[dict]) -> str:
    """Markdown: per (data, arm, seed) k-fold result, one line per decision rule (cross-fitted line-rule
    escape and overkill), then the pooled operating curve."""
    head = (
        "| data | arm | seed | mAP50 per fold (median) | mAP50 pooled | thresholds calibrated | escape "
        "| overkill |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        k, cv = r["kfold"], r["kfold"]["curve"]
        first = (
            f"| {r['data_tag']} | {r['arm']} | {r['seed']} | "
            f"{' '.join(f'{m:.3f}' for m in k['map50_folds'])} ({k['map50_median']:.3f}) | "
            f"{k['map50_pooled']:.3f} |"
        )
        for key, label in RULES:
            if key in k:
                lines.append(
                    f"{first} {label} | {_pct(k[key]['escapes'], k[key]['n_defective'])} | "
                    f"{_pct(k[key]['overkills'], k[key]['n_clean'])} |"
                )
                first = "| | | | | |"
        ovk = _pct(cv["overkills_at"], cv["n_clean"]) if cv.get("overkills_at") is not None else "unreachable"
        lines.append(f"{first} pooled curve: ≤ {cv.get('max_escapes')} escapes | | {ovk} |")
        lines.append(
            f"| | | | | | pooled curve: ≤ {cv.get('max_overkill', 0):.0%} overkill | "
            f"{_pct(cv['escapes_at'], cv['n_defective'])} | |"
        )
    ips = [v for r in rows for v in r["kfold"]["images_per_s"] if v]
    loads = [v for r in rows for v in r["kfold"].get("load_1m", []) if v is not None]
    if ips:
        lines.append(
            f"\ntrain img/s (median over folds and runs): {np.median(ips):.1f}"
            + (
                f" at a median 1-minute load of {np.median(loads):.1f} (2 = this run alone on 2 cores)"
                if loads
                else ""
            )
        )
    return "\n".join(lines) + "\n"


def repool(kfold_json: Path, line_overkill: float = 0.05) -> dict[str, Any]:
    """Recompute a finished k-fold's pooled result (``kfold.json``) from its folds' kept ``result.json``
    and ``dets.json.gz`` (``<set>-kfold<K>-fold<f>/<arm>/<seed>/`` beside ``<set>-kfold<K>/``), at the
    escape targets it was made with: a new decision rule is scored on old runs without training. Written
    back atomically; the new result is returned."""
    res = json.loads(kfold_json.read_text())
    seed_dir, arm_dir = kfold_json.parent, kfold_json.parent.parent
    set_dir = arm_dir.parent
    k = res["kfold"]
    fold_dirs = [
        set_dir.parent / f"{set_dir.name}-fold{f}" / arm_dir.name / seed_dir.name for f in range(k["folds"])
    ]
    missing = [
        str(d) for d in fold_dirs if not (d / "dets.json.gz").is_file() or not (d / "result.json").is_file()
    ]
    if missing:
        raise FileNotFoundError(f"{kfold_json}: fold results missing, expected {missing[0]}/dets.json.gz")
    results = [json.loads((d / "result.json").read_text()) for d in fold_dirs]
    images = [load_detections(d / "dets.json.gz") for d in fold_dirs]
    res["kfold"] = pooled_result(
        results,
        images,
        list(k["per_class"]),
        k["line"]["target_escape"],
        k["target"]["target_escape"],
        line_overkill,
    )
    atomic_write_text(kfold_json, json.dumps(res, indent=1) + "\n")
    return res
