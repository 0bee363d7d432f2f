"""The shift report's text: times in a zone, the tables shared by ``report.md`` and ``report.html``,
the Markdown and the charts (:mod:`.report` collects and counts; :mod:`.report_html` writes the HTML)."""

from __future__ import annotations

import importlib
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any, Optional

from ..errors import ConfigError, DefectdetError


def parse_zone(text: Optional[str]) -> Optional[tzinfo]:
    """``--tz``: None (this machine's zone), ``UTC``, an IANA name (``Europe/Berlin``) or an offset
    (``+02:00``)."""
    if text is None or text == "local":
        return None
    if text.upper() in ("UTC", "Z"):
        return timezone.utc
    if text[:1] in "+-":
        try:
            return datetime.fromisoformat("2000-01-01T00:00" + text).tzinfo
        except ValueError:
            pass
    else:
        try:
            # zoneinfo is Python 3.9+: on 3.8 (JetPack 5) --tz takes local, UTC or an offset
            return importlib.import_module("zoneinfo").ZoneInfo(text)
        except (ImportError, ValueError, KeyError, OSError):
            pass
    raise ConfigError(
        f"--tz={text!r}: expected local, UTC, an IANA zone such as Europe/Berlin, or an offset such as +02:00"
    )


def local(t: datetime, zone: Optional[tzinfo]) -> datetime:
    return t.astimezone(zone) if zone is not None else t.astimezone()


def zone_name(zone: Optional[tzinfo]) -> str:
    now = local(datetime.now(timezone.utc), zone)
    name = str(getattr(zone, "key", "") or now.tzname() or "")
    offset = now.strftime("%z")
    return f"{name} (UTC{offset[:3]}:{offset[3:]})" + ("" if zone is not None else ", this machine's zone")


def parse_time(key: str, text: Optional[str], zone: Optional[tzinfo] = timezone.utc) -> Optional[datetime]:
    """An ISO 8601 time (naive: in ``zone``; None: this machine's) -> an aware datetime;
    a bad one is a one-line ConfigError."""
    if text is None:
        return None
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{key}={text!r}: expected an ISO 8601 time, e.g. 2024-05-01T06:00 or 2024-05-01T08:00+02:00"
        ) from None
    if t.tzinfo:
        return t
    return t.replace(tzinfo=zone) if zone is not None else t.astimezone()


def utc_time(ts: str) -> datetime:
    return parse_time("ts", ts)


def rate(good: Optional[int], total: Optional[int]) -> Optional[float]:
    return good / total if good is not None and total else None


def pct(v: Optional[float], unknown: str = "unknown") -> str:
    return unknown if v is None else f"{100 * v:.2f} %"


def yield_notes(s: dict[str, Any]) -> tuple[str, str]:
    """(yield in parts, yield in frames) as text, saying why when unknown."""
    frames = pct(
        s["yield"],
        "unknown (no tally.jsonl)" if not s["tally_files"] else "unknown (no tally line in the window)",
    )
    if s["yield_parts"] is not None and s["yield_parts"] >= 0:
        return pct(s["yield_parts"]), frames
    if s["yield_parts"] is not None:  # one part seen as several NG stretches (a flickering verdict)
        return "unknown (more rejected parts than parts seen: set decision.debounce_k/debounce_n)", frames
    if s["frames"] is None:
        return "unknown (no tally)", frames
    return "unknown (the station counts rejected parts, not every part: see docs/line-safety.md)", frames


def when(ts: str, zone: Optional[tzinfo]) -> str:
    return local(utc_time(ts), zone).strftime("%Y-%m-%d %H:%M:%S") if ts else "-"


def _n(v: Any) -> str:
    return "-" if v is None else str(v)


def tables(
    s: dict[str, Any], tops: list[dict[str, Any]], zone: Optional[tzinfo]
) -> list[tuple[str, list[str], list[list[str]]]]:
    """The report's tables: (title, header, rows), shared by the Markdown and the HTML."""
    y_parts, y_frames = yield_notes(s)
    out = [
        (
            "",
            [
                "rejected parts",
                "missed rejects",
                "parts inspected",
                "yield (parts)",
                "frames",
                "NG frames",
                "yield (frames)",
            ],
            [
                [
                    str(s["rejected"]),
                    str(s["missed"]),
                    _n(s["parts"]),
                    y_parts,
                    _n(s["frames"]),
                    str(s["ng_frames"]),
                    y_frames,
                ]
            ],
        ),
        ("NG parts per class", ["class", "NG parts"], [[c, str(n)] for c, n in s["per_class"].items()]),
    ]
    hours = [
        [
            h,
            _n(r["frames"] or None),
            str(r["parts"]) if r["parts_known"] and r["frames"] else "-",
            str(r["rejected"]),
            str(r["missed"]),
            str(r["ng_frames"]),
            pct(rate(r["ok"], r["frames"]), "-"),
        ]
        for h, r in s["hours"].items()
    ]
    out.append(
        (
            f"Per hour ({zone_name(zone)})",
            ["hour", "frames", "parts", "rejected parts", "missed rejects", "NG frames", "yield (frames)"],
            hours,
        )
    )
    runs = [
        [
            run,
            when(r["first"], zone),
            when(r["last"], zone),
            _n(r["frames"] or None),
            str(r["rejected"]),
            str(r["missed"]),
            str(r["ng_frames"]),
        ]
        for run, r in s["runs"].items()
    ]
    out.append(
        ("Runs", ["run", "from", "to", "frames", "rejected parts", "missed rejects", "NG frames"], runs)
    )
    if s["missed_records"]:
        out.append(
            (
                "Missed rejects (NG parts that may be in the OK bin)",
                ["time", "run", "part", "frame", "reason", "output"],
                [
                    [
                        when(m["ts"], zone),
                        m["run"],
                        str(m.get("part", "")),
                        str(m.get("frame", "")),
                        str(m.get("reason", "")),
                        str(m.get("output", "")),
                    ]
                    for m in s["missed_records"]
                ],
            )
        )
    out.append(
        (
            "Top NG parts (one snapshot per part)",
            ["time", "run", "part", "NG frames", "classes", "top confidence", "snapshot"],
            [
                [
                    when(r["event"]["ts"], zone),
                    r["run"],
                    str(r["event"].get("part", "-")),
                    str(r["frames"]),
                    ", ".join(r["classes"]),
                    f"{r['confidence']:.3f}",
                    r["path"] or "(not kept)",
                ]
                for r in tops
            ],
        )
    )
    return out


def headline(s: dict[str, Any], window: str, zone: Optional[tzinfo]) -> list[str]:
    """The lines above the tables."""
    lines = [
        f"Window: {window}. Times in {zone_name(zone)}. {len(s['runs'])} run(s) in {s['folders']} folder(s)."
    ]
    if s["missed"]:
        lines.append(
            f"MISSED REJECTS: {s['missed']} NG part(s) whose reject the PLC never got: "
            "they may be in the OK bin (listed below)."
        )
    else:
        lines.append(
            "Missed rejects: 0 (every rejected part's reject reached the PLC, as far as the event log says)."
        )
    if s.get("torn"):
        lines.append(
            f"{len(s['torn'])} torn event line(s) skipped (a run killed mid-write): "
            f"{', '.join(s['torn'][:3])}"
        )
    if s["tally_cut"]:
        lines.append(
            "Frames, parts and yield count whole tally intervals that overlap the window (tally.every_s)."
        )
    return lines


def markdown(
    s: dict[str, Any], window: str, tops: list[dict[str, Any]], charts_: bool, zone: Optional[tzinfo]
) -> str:
    lines = [f"# Shift report: {window}", ""]
    for line in headline(s, window, zone):
        lines += [f"**{line}**" if line.startswith("MISSED") else line, ""]
    for title, header, rows in tables(s, tops, zone):
        if title:
            lines += [f"## {title}", ""]
        if title.startswith("Top") and charts_:
            lines[-2:-2] = [
                "![NG parts and yield per hour](per_hour.png)",
                "",
                "![NG parts per class](per_class.png)",
                "",
            ]
        if title.startswith("Top"):
            rows = [
                r[:-1] + [f"![{r[2]}]({r[-1]})" if r[-1].startswith("snapshots/") else r[-1]] for r in rows
            ]
        lines += [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
            "",
        ]
    return "\n".join(lines)


def charts(s: dict[str, Any], out: Path, zone: Optional[tzinfo]) -> None:
    """per_hour.png (rejected parts and missed rejects as bars, frame yield as a line) and per_class.png."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise DefectdetError(
            "charts need matplotlib: pip install matplotlib (or 'defectdet[train]'), or pass --no-charts"
        ) from None
    hours, rows = list(s["hours"]), list(s["hours"].values())
    x = list(range(len(hours)))
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.bar(x, [r["rejected"] for r in rows], color="#d9534f", label="rejected parts")
    ax.bar(x, [r["missed"] for r in rows], color="#000000", label="missed rejects")
    ax.set_xticks(x, [h[11:] for h in hours], rotation=45)
    ax.set_ylabel("NG parts")
    ax.legend(loc="upper left")
    ax.set_title(f"NG parts and yield per hour ({zone_name(zone)})")
    if s["frames"]:
        ax2 = ax.twinx()
        ax2.plot(
            x,
            [100 * r["ok"] / r["frames"] if r["frames"] else float("nan") for r in rows],
            color="#2b7bba",
            marker="o",
        )
        ax2.set_ylabel("yield (frames) %")
    fig.tight_layout()
    fig.savefig(out / "per_hour.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.barh(list(s["per_class"])[::-1], list(s["per_class"].values())[::-1], color="#d9534f")
    ax.set_xlabel("NG parts")
    ax.set_title("NG parts per class")
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=100)
    plt.close(fig)
