"""``defectdet report --events runs/inspect/line1 [--since ISO] [--until ISO] --out report/``: a shift report.

Reads every ``events.jsonl`` (with its rotated ``events.NNNNNN.jsonl``) and ``tally.jsonl`` under
``--events`` (one run folder, or a folder of runs), keeps what falls in ``[since, until)`` (UTC;
``2024-05-01T06:00``, a trailing ``Z`` or an offset also work), and writes into ``--out``:
``report.md`` (frames, OK, NG, yield; NG per class; per hour: frames, NG, yield; the top NG
snapshots, copied beside it), ``per_hour.png`` and ``per_class.png`` (matplotlib, from the
``train`` extra; ``--no-charts`` without it). Frames and yield come from the tally (the event log
holds NG frames only); without a tally the report gives NG counts and says the yield is unknown.
"""

from __future__ import annotations

import argparse
import collections
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Optional

from ..config import atomic_write_text
from ..errors import ConfigError, DefectdetError
from .sinks import read_events
from .tally import read_tally


def parse_time(key: str, text: Optional[str]) -> Optional[datetime]:
    """An ISO 8601 time (naive = UTC) -> an aware datetime; a bad one is a one-line ConfigError."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{key}={text!r}: expected an ISO 8601 time, e.g. 2024-05-01T06:00 (UTC) or 2024-05-01T08:00+02:00") from None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


def _in(ts: str, since: Optional[datetime], until: Optional[datetime]) -> bool:
    t = parse_time("ts", ts)
    return (since is None or t >= since) and (until is None or t < until)


def collect(folder: Path, since: Optional[datetime], until: Optional[datetime]) -> dict[str, Any]:
    """Events and tally intervals under ``folder`` in the window, each event with its run folder."""
    if not folder.is_dir():
        raise ConfigError(f"--events {folder}: no such folder (expected a run folder of defectdet inspect, or a folder of runs)")
    logs = sorted({p.parent for p in folder.rglob("events*.jsonl")})
    events = [(run, e) for run in logs for e in read_events(run / "events.jsonl") if _in(e["ts"], since, until)]
    tally = [t for p in sorted(folder.rglob("tally.jsonl")) for t in read_tally(p) if _in(t["ts"], since, until)]
    if not logs and not tally:
        raise ConfigError(f"--events {folder}: no events.jsonl or tally.jsonl found under it")
    return {"events": events, "tally": tally, "runs": len({*logs, *(p.parent for p in folder.rglob("tally.jsonl"))})}


def summarise(data: dict[str, Any]) -> dict[str, Any]:
    """Totals, NG per class, per-hour rows, from collected events and tally."""
    events, tally = [e for _, e in data["events"]], data["tally"]
    per_class = collections.Counter(c for e in events for c in {d["class_name"] for d in e["detections"]})
    hours: dict[str, dict[str, int]] = collections.defaultdict(lambda: {"frames": 0, "ok": 0, "ng": 0, "events": 0})
    for t in tally:
        h = hours[t["ts"][:13]]
        h["frames"] += t["frames"]
        h["ok"] += t["ok"]
        h["ng"] += t["ng"]
    for e in events:
        hours[e["ts"][:13]]["events"] += 1
    frames = sum(t["frames"] for t in tally) if tally else None
    ok = sum(t["ok"] for t in tally) if tally else None
    ng = sum(t["ng"] for t in tally) if tally else len(events)
    return {"frames": frames, "ok": ok, "ng": ng, "yield": (ok / frames) if frames else None, "ng_events": len(events),
            "per_class": dict(per_class.most_common()), "hours": dict(sorted(hours.items())), "runs": data["runs"]}


def _top(event: dict[str, Any]) -> float:
    return max((d["confidence"] for d in event["detections"]), default=0.0)


def top_snapshots(data: dict[str, Any], out: Path, n: int) -> list[tuple[dict[str, Any], Optional[str]]]:
    """The ``n`` most confident NG events; their annotated snapshot copied to ``out/snapshots`` when it still exists."""
    ranked = sorted(data["events"], key=lambda re: -_top(re[1]))[:n]
    rows = []
    for run, e in ranked:
        name = next((s for s in e.get("snapshots", []) if "_annotated" in s), None)
        src = run / "snapshots" / name if name else None
        if src is not None and src.is_file():
            (out / "snapshots").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / "snapshots" / name)
            rows.append((e, f"snapshots/{name}"))
        else:
            rows.append((e, None))  # deleted by the snapshot quota, or snapshots were off
    return rows


def _pct(v: Optional[float]) -> str:
    return "unknown (no tally.jsonl)" if v is None else f"{100 * v:.2f} %"


def markdown(s: dict[str, Any], window: str, tops: Iterable[tuple[dict[str, Any], Optional[str]]], charts: bool) -> str:
    lines = [f"# Shift report: {window}", "", f"{s['runs']} run folder(s).", "",
             "| frames | OK | NG | yield |", "|---|---|---|---|",
             f"| {s['frames'] if s['frames'] is not None else '-'} | {s['ok'] if s['ok'] is not None else '-'} | {s['ng']} | {_pct(s['yield'])} |",
             "", "## NG per class", "", "NG frames with a defect of the class (a frame may count for several).", "",
             "| class | NG frames |", "|---|---|", *[f"| {c} | {n} |" for c, n in s["per_class"].items()], "",
             "## Per hour (UTC)", "", "| hour | frames | NG | yield | NG events |", "|---|---|---|---|---|"]
    for hour, h in s["hours"].items():
        y = f"{100 * h['ok'] / h['frames']:.2f} %" if h["frames"] else "-"
        lines.append(f"| {hour}:00 | {h['frames'] or '-'} | {h['ng'] if h['frames'] else h['events']} | {y} | {h['events']} |")
    if charts:
        lines += ["", "![NG and yield per hour](per_hour.png)", "", "![NG per class](per_class.png)"]
    lines += ["", "## Top NG snapshots", "", "| time | frame | classes | top confidence | snapshot |", "|---|---|---|---|---|"]
    for e, path in tops:
        classes = ", ".join(sorted({d["class_name"] for d in e["detections"]}))
        pic = f"![{e['frame']}]({path})" if path else "(not kept)"
        lines.append(f"| {e['ts']} | {e['frame']} | {classes} | {_top(e):.3f} | {pic} |")
    return "\n".join(lines) + "\n"


def charts(s: dict[str, Any], out: Path) -> None:
    """per_hour.png (NG bars, yield line) and per_class.png, with matplotlib's Agg backend."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DefectdetError("charts need matplotlib: pip install matplotlib (or 'defectdet[train]'), or pass --no-charts") from None
    hours = list(s["hours"])
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(range(len(hours)), [h["ng"] if h["frames"] else h["events"] for h in s["hours"].values()], color="#d9534f")
    ax.set_xticks(range(len(hours)), [h[11:13] + ":00" for h in hours], rotation=45)
    ax.set_ylabel("NG frames")
    ax.set_title("NG and yield per hour (UTC)")
    if s["frames"]:
        ax2 = ax.twinx()
        ax2.plot(range(len(hours)), [100 * h["ok"] / h["frames"] if h["frames"] else float("nan") for h in s["hours"].values()],
                 color="#2b7bba", marker="o")
        ax2.set_ylabel("yield %")
    fig.tight_layout()
    fig.savefig(out / "per_hour.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(s["per_class"])[::-1], list(s["per_class"].values())[::-1], color="#d9534f")
    ax.set_xlabel("NG frames")
    ax.set_title("NG per class")
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=100)
    plt.close(fig)


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet report``."""
    ap = argparse.ArgumentParser(prog="defectdet report", description=__doc__.split("\n\n")[1].split(". ")[0] + ".")
    ap.add_argument("--events", required=True, help="a run folder of defectdet inspect (or a folder of runs)")
    ap.add_argument("--since", help="start of the shift, ISO 8601 (UTC unless an offset is given)")
    ap.add_argument("--until", help="end of the shift (exclusive)")
    ap.add_argument("--out", default="report", help="output folder (default report/)")
    ap.add_argument("--top", type=int, default=8, help="NG snapshots shown (most confident first)")
    ap.add_argument("--no-charts", action="store_true", help="Markdown only (no matplotlib needed)")
    a = ap.parse_args(argv)
    since, until = parse_time("--since", a.since), parse_time("--until", a.until)
    data = collect(Path(a.events), since, until)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    s = summarise(data)
    if not a.no_charts:
        charts(s, out)
    window = f"{a.since or 'start'} to {a.until or 'end'} (UTC)"
    atomic_write_text(out / "report.md", markdown(s, window, top_snapshots(data, out, a.top), not a.no_charts))
    print(f"{out / 'report.md'}: {s['frames'] if s['frames'] is not None else '?'} frames, {s['ng']} NG, yield {_pct(s['yield'])}")
    return 0
