"""``defectdet data check|stats|convert``.

  defectdet data check DATA [--imgsz 640]          every problem, one line each; exit 1 on errors
  defectdet data stats DATA [--imgsz 640] [--out DIR]
                                                   statistics + recommended focal preset;
                                                   writes DIR/stats.txt, stats.json, stats.png
  defectdet data convert --from coco|voc|yolo SRC --out DIR [--to yolo|coco|voc] [--copy]
  defectdet data harvest --from RUN... --out DIR [--merge data.yaml]
                                                   reviewed station frames -> YOLO images + labels

DATA is a data.yaml, a COCO json or a VOC folder (COCO/VOC are converted into the cache first).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad option is one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    """``check``, ``stats`` and ``convert``, each built from its schema (defectdet/settings/data.py)."""
    from ..errors import exit_statuses
    from ..settings.data import DATA_CHECK, DATA_CONVERT, DATA_STATS
    from ..settings.options import add_options

    p = _Parser(
        prog="defectdet data",
        description="dataset check, statistics and conversion",
        **exit_statuses((0, "done (check: no errors)"), (1, "check or harvest: the data set has errors")),
    )
    sub = p.add_subparsers(
        dest="action", required=True, metavar="{check,stats,convert,harvest}", parser_class=_Parser
    )
    for schema, help_, exits in (
        (
            DATA_CHECK,
            "strict check: every problem with file:line, exit 1 on errors",
            [(0, "no errors (warnings allowed)"), (1, "the data set has errors")],
        ),
        (
            DATA_STATS,
            "statistics, anchor-level imbalance and the recommended focal preset",
            [(0, "stats.txt, stats.json and stats.png written")],
        ),
        (
            DATA_CONVERT,
            "convert COCO / VOC to a YOLO dataset (or YOLO to COCO / VOC)",
            [
                (0, "converted"),
                (2, "a bad option or source, or --from and --to the same (one line on stderr)"),
            ],
        ),
    ):
        name = schema.command.split()[1]
        add_options(sub.add_parser(name, help=help_, **exit_statuses(*exits)), schema)
    return p


def _check(args: argparse.Namespace) -> int:
    from .validate import check_dataset

    rep = check_dataset(args.data, imgsz=args.imgsz)
    for p in rep.errors:
        print(f"error: {p}")
    if not args.errors_only:
        for p in rep.warnings:
            print(f"warning: {p}")
    print(rep.summary())
    return 0 if rep.ok else 1


def _stats(args: argparse.Namespace) -> int:
    from ..config import atomic_write_text
    from ..errors import ConfigError
    from .stats import dataset_stats, format_stats, plot_stats, public

    try:
        strides = tuple(int(s) for s in args.strides.split(","))
    except ValueError:
        strides = ()
    if not strides or min(strides) < 1:
        raise ConfigError(f"--strides {args.strides!r}: expected comma-separated integers like 8,16,32")
    stats = dataset_stats(args.data, imgsz=args.imgsz, strides=strides)
    out = Path(args.out) if args.out else Path("runs") / "data" / (Path(args.data).stem or "data")
    text = format_stats(stats)
    print(text)
    atomic_write_text(out / "stats.txt", text + "\n")
    atomic_write_text(out / "stats.json", json.dumps(public(stats), indent=1) + "\n")
    png = plot_stats(stats, out / "stats.png")
    print(f"wrote {out / 'stats.txt'}, {out / 'stats.json'}, {png}")
    return 0


def _convert(args: argparse.Namespace) -> int:
    from . import coco, voc
    from .formats import read_yolo, write_yolo

    if args.fmt == args.to:
        print(f"defectdet data convert: --from and --to are both {args.fmt}; nothing to do", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.names.split(",")] if args.names else None
    if args.fmt == "coco":
        col = coco.read_coco(args.src, images=args.images, val_fraction=args.val_fraction)
    elif args.fmt == "voc":
        col = voc.read_voc(args.src, names=names, val_fraction=args.val_fraction)
    else:
        col = read_yolo(args.src)
    writer = {"yolo": write_yolo, "coco": coco.write_coco, "voc": voc.write_voc}[args.to]
    out = writer(col, args.out, copy=args.copy)
    for note in col.notes:
        print(f"note: {note}")
    splits: dict[str, int] = {}
    for s in col.samples:
        splits[s.split] = splits.get(s.split, 0) + 1
    boxes = sum(len(s.boxes) for s in col.samples)
    print(
        f"wrote {out}: {len(col.samples)} images ({', '.join(f'{k} {v}' for k, v in splits.items())}), "
        f"{boxes} boxes, {len(col.names)} classes: {', '.join(col.names)}"
    )
    return 0


def cli(argv: list[str]) -> int:
    """Entry point for ``defectdet data``."""
    if argv[:1] == ["harvest"]:  # its own parser: defectdet/data/harvest.py
        from .harvest import cli as harvest_cli

        return harvest_cli(argv[1:])
    args = _parser().parse_args(argv)
    return {"check": _check, "stats": _stats, "convert": _convert}[args.action](args)
