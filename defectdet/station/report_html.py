"""The shift report as one self-contained HTML file: the same tables as ``report.md``, the charts and
each NG part's snapshot embedded as ``data:`` URIs, no script, no external file or font, so it opens
from a USB stick in any browser and can be mailed as one attachment."""

from __future__ import annotations

import base64
import html as html_lib
from pathlib import Path

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#1d232a;
padding:0 1em}
h1{font-size:22px}h2{font-size:16px;margin-top:1.6em;border-bottom:1px solid #ccd;padding-bottom:.2em}
table{border-collapse:collapse;margin:.4em 0}
td,th{border:1px solid #ccd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eef1f5}
.alarm{background:#b71c1c;color:#fff;font-weight:bold;padding:.6em 1em;border-radius:4px}
img.snap{max-width:320px;display:block}img.chart{max-width:100%}"""

MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def data_uri(path: Path) -> str:
    """A file as a ``data:`` URI (what keeps the report one file)."""
    return (
        f"data:{MIME.get(path.suffix.lower(), 'application/octet-stream')};base64,"
        + base64.b64encode(path.read_bytes()).decode()
    )


def _table(header: list[str], rows: list[list[str]], out: Path, pictures: bool) -> list[str]:
    esc = html_lib.escape
    lines = ["<table>", "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            if pictures and i == len(row) - 1 and cell.startswith("snapshots/") and (out / cell).is_file():
                cells.append(f'<td><img class="snap" alt="{esc(cell)}" src="{data_uri(out / cell)}"></td>')
            else:
                cells.append(f"<td>{esc(cell)}</td>")
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return lines + ["</table>"]


def html(
    title: str, lines: list[str], tables: list[tuple[str, list[str], list[list[str]]]], out: Path
) -> str:
    """``report.html``'s text from the report's headline ``lines`` and ``tables`` ((title, header, rows));
    the charts and snapshots are read from ``out`` and embedded."""
    esc = html_lib.escape
    body = [f"<h1>{esc(title)}</h1>"]
    for line in lines:
        body.append(
            f'<p class="alarm">{esc(line)}</p>' if line.startswith("MISSED") else f"<p>{esc(line)}</p>"
        )
    for name, header, rows in tables:
        if name.startswith("Top"):
            for chart, alt in (
                ("per_hour.png", "NG parts and yield per hour"),
                ("per_class.png", "NG parts per class"),
            ):
                if (out / chart).is_file():
                    body.append(f'<p><img class="chart" alt="{alt}" src="{data_uri(out / chart)}"></p>')
        if name:
            body.append(f"<h2>{esc(name)}</h2>")
        body += _table(header, rows, out, pictures=name.startswith("Top"))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>defectdet shift report</title>\n'
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
