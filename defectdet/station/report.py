"""``defectdet report --events RUNS [--since T] [--until T] [--tz ZONE] --out report/``: a shift report.

Reads every ``events.jsonl`` (with its rotated ``events.NNNNNN.jsonl``) and ``tally.jsonl`` under
``--events`` (one run folder, or a folder of runs), keeps what falls in ``[since, until)``, and
writes into ``--out`` ``report.md`` and ``report.html`` (one self-contained file, charts and
snapshots embedded: it opens from a USB stick), with ``per_hour.png``, ``per_class.png`` and the
snapshots beside the Markdown (``--no-charts``: no matplotlib needed, no charts).

It speaks in parts: a rejected part is one reject trigger (the first NG frame of a part, or each
NG frame with ``signals.trigger: frame``), which every NG event names (``part``); missed rejects
(NG parts whose reject the PLC never got) come from the event log's ``missed_reject`` lines. The
parts inspected, and so the yield in parts, are known when the station could count them (one frame
per part, or a source numbering its parts: the tally's ``parts``); frames and the frame yield come
from the tally (the event log holds NG frames only). Runs are told apart by their run id (a re-run
into the same folder is another run; logs from before run ids are split where frame numbers
restart). Hours are in ``--tz`` (default: this machine's zone), and naive ``--since``/``--until``
times too; a window that cuts a tally interval counts the intervals it overlaps, and says so.
"""

from __future__ import annotations

import collections
import shutil
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any, Optional, Tuple

from ..config import atomic_write_text
from ..errors import ConfigError
from .report_text import (
    charts,
    headline,
    local,
    markdown,
    parse_time,
    parse_zone,
    rate,
    tables,
    utc_time,
    when,
    yield_notes,
)
from .sinks import read_events
from .tally import read_tally

Part = Tuple[str, Any]  # (run id, part number)


def _in(t: datetime, since: Optional[datetime], until: Optional[datetime]) -> bool:
    return (since is None or t >= since) and (until is None or t < until)


def _run_ids(folder: Path, records: list[dict[str, Any]]) -> None:
    """Give records without a run id (logs from before run ids) one per stretch where frame numbers only
    grow."""
    k, last = 1, -1
    for r in records:
        if r.get("run"):
            continue
        frame = int(r.get("frame", 0))
        if frame < last:
            k += 1
        last = frame
        r["run"] = f"{folder.name}#{k} (no run id)"


def collect(folder: Path, since: Optional[datetime], until: Optional[datetime]) -> dict[str, Any]:
    """Events, missed-reject records and tally intervals under ``folder`` in the window, each with its
    run folder."""
    if not folder.is_dir():
        raise ConfigError(
            f"--events {folder}: no such folder (expected a run folder of defectdet inspect, or a folder of "
            "runs)"
        )
    logs = sorted({p.parent for p in folder.rglob("events*.jsonl")})
    tallies = sorted(folder.rglob("tally.jsonl"))
    if not logs and not tallies:
        raise ConfigError(f"--events {folder}: no events.jsonl or tally.jsonl found under it")
    events, missed, torn = [], [], []
    for run in logs:
        records = [
            r
            for r in read_events(run / "events.jsonl", records=True, torn=torn)
            if isinstance(r, dict) and "ts" in r
        ]
        _run_ids(run, records)
        for r in records:
            if not _in(utc_time(r["ts"]), since, until):
                continue
            if r.get("type") == "missed_reject":
                missed.append(r)
            elif "type" not in r:
                events.append((run, r))
    tally, cut = [], False
    for p in tallies:
        for t in read_tally(p):
            start, end = utc_time(t["ts"]), utc_time(t.get("until", t["ts"]))
            if (until is None or start < until) and (since is None or end > since):  # overlaps the window
                if not t.get("run"):  # a tally from before run ids
                    t["run"] = f"{p.parent.name}#1 (no run id)"
                tally.append(t)
                cut = cut or (since is not None and start < since) or (until is not None and end > until)
    return {
        "events": events,
        "missed": missed,
        "tally": tally,
        "tally_files": len(tallies),
        "tally_cut": cut,
        "torn": torn,
        "folders": len({*logs, *(p.parent for p in tallies)}),
    }


def parts_of(events: list[tuple[Path, dict[str, Any]]]) -> dict[Part, list[tuple[Path, dict[str, Any]]]]:
    """NG frames grouped by part: the part number events carry; for older logs, consecutive frame numbers."""
    parts: dict[Part, list] = collections.defaultdict(list)
    last: dict[str, tuple[int, Any]] = {}  # run -> (last frame, its part key) for logs without part numbers
    for run_dir, e in events:
        run = e["run"]
        if "part" in e:
            parts[(run, e["part"])].append((run_dir, e))
            continue
        frame = int(e["frame"])
        prev = last.get(run)
        key = prev[1] if prev is not None and frame == prev[0] + 1 else f"f{frame}"
        last[run] = (frame, key)
        parts[(run, key)].append((run_dir, e))
    return parts


def _classes(frames: list[tuple[Path, dict[str, Any]]]) -> set[str]:
    return {d["class_name"] for _, e in frames for d in e["detections"]}


def _hour(ts: str, zone: Optional[tzinfo]) -> str:
    return local(utc_time(ts), zone).strftime("%Y-%m-%d %H:00")


def summarise(data: dict[str, Any], zone: Optional[tzinfo] = None) -> dict[str, Any]:
    """Totals in parts and frames, NG parts per class, per-hour rows (in ``zone``) and per-run rows."""
    events, tally, missed = data["events"], data["tally"], data["missed"]
    parts = parts_of(events)
    first = {key: min(e["ts"] for _, e in frames) for key, frames in parts.items()}
    blank = {
        "frames": 0,
        "ok": 0,
        "parts": 0,
        "parts_known": True,
        "rejected": 0,
        "missed": 0,
        "ng_frames": 0,
    }
    hours: dict[str, dict[str, Any]] = collections.defaultdict(lambda: dict(blank))
    runs: dict[str, dict[str, Any]] = collections.defaultdict(lambda: {**blank, "first": "", "last": ""})
    for t in tally:
        for row in (hours[_hour(t["ts"], zone)], runs[t["run"]]):
            row["frames"] += t["frames"]
            row["ok"] += t["ok"]
            row["parts"] += t.get("parts") or 0
            row["parts_known"] = row["parts_known"] and t.get("parts") is not None
    for key, ts in first.items():
        hours[_hour(ts, zone)]["rejected"] += 1
        runs[key[0]]["rejected"] += 1
    for m in missed:
        hours[_hour(m["ts"], zone)]["missed"] += 1
        runs[m["run"]]["missed"] += 1
    for _, e in events:
        hours[_hour(e["ts"], zone)]["ng_frames"] += 1
        row = runs[e["run"]]
        row["ng_frames"] += 1
    for rec in [e for _, e in events] + missed + tally:
        row = runs[rec["run"]]
        row["first"] = min(row["first"] or rec["ts"], rec["ts"])
        row["last"] = max(row["last"], rec["ts"])
    frames = sum(t["frames"] for t in tally) if tally else None
    ok = sum(t["ok"] for t in tally) if tally else None
    parts_known = bool(tally) and all(t.get("parts") is not None for t in tally)
    inspected = sum(t["parts"] for t in tally) if parts_known else None
    per_class = collections.Counter(c for frames_ in parts.values() for c in _classes(frames_))
    return {
        "rejected": len(parts),
        "missed": len(missed),
        "parts": inspected,
        "yield_parts": rate(inspected - len(parts), inspected) if inspected else None,
        "frames": frames,
        "ok": ok,
        "ng_frames": len(events),
        "yield": rate(ok, frames),
        "per_class": dict(per_class.most_common()),
        "hours": dict(sorted(hours.items())),
        "runs": dict(sorted(runs.items(), key=lambda kv: kv[1]["first"])),
        "folders": data["folders"],
        "tally_files": data["tally_files"],
        "tally_cut": data["tally_cut"],
        "missed_records": missed,
        "torn": data.get("torn", []),
    }


def _top(event: dict[str, Any]) -> float:
    return max((d["confidence"] for d in event["detections"]), default=0.0)


def top_snapshots(data: dict[str, Any], out: Path, n: int) -> list[dict[str, Any]]:
    """One row per NG part, the ``n`` most confident parts: the part's most confident frame that has an
    annotated snapshot still on disk (copied to ``out/snapshots``), else its most confident frame."""
    rows = []
    for (run, _part), frames in parts_of(data["events"]).items():
        ranked = sorted(frames, key=lambda fe: -_top(fe[1]))
        pick, src = ranked[0], None
        for run_dir, e in ranked:
            name = next((s for s in e.get("snapshots", []) if "_annotated" in s), None)
            if name and (run_dir / "snapshots" / name).is_file():
                pick, src = (run_dir, e), run_dir / "snapshots" / name
                break
        rows.append(
            {
                "run": run,
                "event": pick[1],
                "frames": len(frames),
                "classes": sorted(_classes(frames)),
                "confidence": max(_top(e) for _, e in frames),
                "src": src,
                "path": None,
            }
        )
    rows = sorted(rows, key=lambda r: -r["confidence"])[:n]
    for r in rows:
        if r["src"] is not None:  # deleted by the snapshot quota, snapshots off, or never written: no picture
            (out / "snapshots").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(r["src"], out / "snapshots" / r["src"].name)
            r["path"] = f"snapshots/{r['src'].name}"
    return rows


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet report``."""
    from ..settings.options import parser
    from ..settings.tools import REPORT
    from .report_html import html

    ap = parser(REPORT, __doc__.split("\n\n")[1].split(". ")[0] + ".", [(0, "the report written")])
    a = ap.parse_args(argv)
    zone = parse_zone(a.tz)
    since, until = parse_time("--since", a.since, zone), parse_time("--until", a.until, zone)
    data = collect(Path(a.events), since, until)
    out = Path(a.out)
    s = summarise(data, zone)
    out.mkdir(parents=True, exist_ok=True)
    if not a.no_charts:
        charts(s, out, zone)
    start = when(since.isoformat(), zone) if since else "start"
    window = f"{start} to {when(until.isoformat(), zone) if until else 'end'}"
    tops = top_snapshots(data, out, a.top)
    atomic_write_text(out / "report.md", markdown(s, window, tops, not a.no_charts, zone))
    atomic_write_text(
        out / "report.html",
        html(f"Shift report: {window}", headline(s, window, zone), tables(s, tops, zone), out),
    )
    y_parts, y_frames = yield_notes(s)
    print(
        f"{out / 'report.md'}, {out / 'report.html'}: {s['rejected']} rejected part(s), "
        f"{s['missed']} missed reject(s), "
        f"yield {y_parts.split(' (')[0]} in parts, {y_frames.split(' (')[0]} in frames"
    )
    return 0
