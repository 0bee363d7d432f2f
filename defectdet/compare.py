"""``defectdet compare RUN [--candidate model.bundle|model.onnx]``: the live model against its shadow.

Reads a run of ``defectdet inspect --shadow CANDIDATE --review`` and reports

* agreement: of the frames the candidate shadowed, the share where both gave the same verdict
  (and classes), the frames only the live model rejected, only the candidate rejected, and those
  both rejected for different classes (from ``shadow.json``); how many frames it skipped;
* on the reviewed frames (the operators' verdicts in ``review/review.jsonl``): for each model,
  the defective frames it rejected (caught), the ones it would have let through (escapes) and the
  good frames it would have rejected (overkill); per true class, the frames where it found that
  class (``found``) or rejected the frame at all (``rejected``); and the frames where the two differ.

The live verdict on an item is the one recorded with it. The candidate's is its line in
``shadow.jsonl``; a frame without one was an agreeing OK when the shadow skipped nothing; else it is
computed now by running ``--candidate`` (default: the shadow's model file, if it is still there)
on the item's saved frame, so every reviewed frame gets a verdict. Writes ``<run>/compare.json``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Optional

from .config import atomic_write_text
from .errors import DataError

MODELS = ("live", "candidate")


def _shadow(run: Path) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    meta_path, log_path = run / "shadow.json", run / "shadow.jsonl"
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    records: dict[int, dict[str, Any]] = {}
    if log_path.is_file():
        for line in log_path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line torn by a power cut
            records[int(rec["frame"])] = rec
    return meta, records


def _candidate_verdict(
    folder: Path, meta: dict[str, Any], detect: Callable[[Any], dict[str, Any]]
) -> dict[str, Any]:
    import cv2

    image = cv2.imread(str(folder / "items" / meta["image"]), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"{folder / 'items' / meta['image']}: cannot read the item's frame")
    return detect(image)


def candidate_runner(
    detector: Any, roi: Optional[Any] = None, roi_units: str = "fraction"
) -> Callable[[Any], dict]:
    """A frame -> the candidate's per-frame verdict, as ``shadow.jsonl`` records it."""
    from .station.decisions import Decider
    from .station.shadow import verdict

    decider = Decider(detector.names, thresholds=detector.thresholds, roi=roi, roi_units=roi_units)
    return lambda image: verdict(decider(detector(image), image.shape))


def _outcome(truth: set[str], v: dict[str, Any]) -> str:
    if truth:
        return "caught" if v["ng"] else "escape"
    return "overkill" if v["ng"] else "pass"


def compare_run(
    run: str | Path, candidate: Optional[Callable[[Any], dict[str, Any]]] = None
) -> dict[str, Any]:
    """``run`` compared (module docstring); ``candidate``: image -> verdict (:func:`candidate_runner`)."""
    from .data.harvest import review_folders, reviewed_items

    run = Path(run)
    meta, records = _shadow(run)
    if not meta and candidate is None:
        raise DataError(
            f"{run}: no shadow.json (run defectdet inspect --shadow CANDIDATE) and no --candidate given"
        )
    every_frame = (
        bool(meta) and int(meta.get("skipped", 1)) == 0 and int(meta.get("candidate_errors", 0)) == 0
    )
    folders = review_folders([run]) if (run / "review").is_dir() or (run / "items").is_dir() else []
    rows, sources = [], {"shadow_log": 0, "agreeing_ok": 0, "rerun": 0, "unseen": 0}
    for folder in folders:
        for item, review in reviewed_items(folder):
            if review.get("verdict") not in ("defect", "ok") or item.get("image") is None:
                continue
            truth = (
                {b["class"] for b in review.get("boxes") or []} if review["verdict"] == "defect" else set()
            )
            live = {
                "ng": bool(item.get("raw_ng")),
                "classes": sorted({d["class_name"] for d in item.get("defects", [])}),
            }
            rec, cand = records.get(int(item["frame"])), None
            if rec is not None:
                cand, how = rec["candidate"], "shadow_log"
            elif every_frame and not live["ng"]:
                cand, how = {"ng": False, "classes": []}, "agreeing_ok"
            elif candidate is not None:
                cand, how = _candidate_verdict(folder, item, candidate), "rerun"
            else:
                how = "unseen"
            sources[how] += 1
            rows.append(
                {
                    "item": item["id"],
                    "kind": item.get("kind"),
                    "frame": item["frame"],
                    "truth": sorted(truth),
                    "live": _outcome(truth, live),
                    "live_classes": live["classes"],
                    "candidate": _outcome(truth, cand) if cand else None,
                    "candidate_classes": cand["classes"] if cand else None,
                }
            )
    return {
        "run": str(run),
        "live_model": meta.get("live_model"),
        "candidate": meta.get("candidate"),
        "agreement": _agreement(meta),
        "reviewed": _tally(rows),
        "verdict_sources": sources,
        "differences": [r for r in rows if r["candidate"] is not None and r["live"] != r["candidate"]],
    }


def _agreement(meta: dict[str, Any]) -> dict[str, Any]:
    keys = ("shadowed", "skipped", "agree", "live_only", "candidate_only", "class_differs")
    out = {k: meta.get(k) for k in keys}
    out["rate"] = round(meta["agree"] / meta["shadowed"], 4) if meta.get("shadowed") else None
    return out


def _tally(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per model: caught / escape / overkill / pass over the reviewed frames, and per true class."""
    out: dict[str, Any] = {"frames": len(rows)}
    for model in MODELS:
        seen = [r for r in rows if r[model] is not None]
        counts = {k: sum(r[model] == k for r in seen) for k in ("caught", "escape", "overkill", "pass")}
        per_class: dict[str, dict[str, int]] = {}  # found: NG for that class; rejected: NG at all
        for r in seen:
            for cls in r["truth"]:
                c = per_class.setdefault(cls, {"frames": 0, "found": 0, "rejected": 0})
                c["frames"] += 1
                c["found"] += cls in r[f"{model}_classes"]
                c["rejected"] += r[model] == "caught"
        out[model] = {**counts, "frames": len(seen), "per_class": per_class}
    return out


def format_report(rep: dict[str, Any]) -> str:
    a, r = rep["agreement"], rep["reviewed"]
    lines = [f"run {rep['run']}: live {rep['live_model'] or '?'} vs candidate {rep['candidate'] or '?'}"]
    if a.get("shadowed"):
        lines.append(
            f"agreement: {a['agree']}/{a['shadowed']} shadowed frames ({a['rate']:.1%}); only live NG "
            f"{a['live_only']}, only candidate NG {a['candidate_only']}, other classes {a['class_differs']}; "
            f"skipped {a['skipped']}"
        )
    lines.append(f"reviewed frames: {r['frames']}")
    for model in MODELS:
        m = r[model]
        classes = (
            ", ".join(f"{k} {v['found']}/{v['frames']}" for k, v in sorted(m["per_class"].items())) or "-"
        )
        lines.append(
            f"  {model:<9} caught {m['caught']}, escapes {m['escape']}, overkill {m['overkill']}, "
            f"correct OK {m['pass']} (of {m['frames']}); found per class: {classes}"
        )
    for d in rep["differences"]:
        lines.append(
            f"  {d['item']} ({', '.join(d['truth']) or 'good'}): live {d['live']}, candidate {d['candidate']}"
        )
    return "\n".join(lines)


def cli(argv: list[str]) -> int:
    from .settings.options import parser
    from .settings.tools import COMPARE

    ap = parser(COMPARE, __doc__.split("\n\n")[0], [(0, "compared (compare.json written)")])
    a = ap.parse_args(argv)
    run = Path(a.run)
    if not run.is_dir():
        raise DataError(f"{run}: not a run folder")
    meta, _ = _shadow(run)
    path = a.candidate or (str(meta.get("model_path")) if meta.get("model_path") else None)
    runner = None
    if path and Path(path).is_file():
        from .runtime import Detector
        from .station.bundled import resolve_model

        res = resolve_model(Path(path), a.backend)  # a bundle: its model for this device, verified

        queue = run / "review" / "queue.json"
        decision = (
            json.loads(queue.read_text(encoding="utf-8")).get("decision", {}) if queue.is_file() else {}
        )
        # the thresholds the shadow decided with (shadow.json), else the candidate's own
        thresholds = dict(zip(meta["names"], meta["thresholds"])) if meta.get("thresholds") else None
        detector = Detector(res.model, backend=res.backend, thresholds=thresholds)
        runner = candidate_runner(detector, decision.get("roi"), decision.get("roi_units", "fraction"))
    elif a.candidate:
        raise DataError(f"--candidate {a.candidate}: no such model file")
    rep = compare_run(run, runner)
    print(format_report(rep))
    atomic_write_text(run / "compare.json", json.dumps(rep, indent=1) + "\n")
    return 0
