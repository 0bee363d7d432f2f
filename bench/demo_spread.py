"""Does `make demo`'s outcome hold? The demo over seeds x CPU thread counts, one table of the spread.

    python bench/demo_spread.py                                   # seeds 0 1 2 x threads 1 2 (~6 demo runs)
    python bench/demo_spread.py --page docs/demo.md --readme README.md   # also rewrite the two pages' blocks
    python bench/demo_spread.py --seeds 0 --threads 1 -- --epochs 40   # `defectdet demo` options after --

A demo result that hinges on the CPU's kernels is not a result: each run is ``defectdet demo --seed S
--threads T`` in ``<out>/seed<S>-threads<T>/`` (resumable: a run with a ``summary.yaml`` made with the
same extra options is read, not re-run; one run at a time, ``OMP_WAIT_POLICY=PASSIVE``). The outcome
class of a run: every class learnt (AP50 >= ``LEARNT_AP50`` on val), the INT8 gate passed, no good part
rejected on the conveyor. The table gives every run and the range of each number.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_report import update_page  # noqa: E402
from defectdet.config import atomic_write_text, load_yaml  # noqa: E402
from defectdet.errors import ConfigError  # noqa: E402

MARKER = "demo-spread"
README_MARKER = "demo-range"  # the README's short form: the range over the runs
LEARNT_AP50 = 0.3  # a class counts as learnt at this val AP50 or above


def outcome(summary: dict[str, Any]) -> dict[str, Any]:
    """The numbers of one run that the table shows, and whether it reached the demo's outcome class."""
    aps = {n: float(c["ap50"]) for n, c in summary["per_class"].items()}
    line = summary["inspect"]
    learnt = all(v >= LEARNT_AP50 for v in aps.values())
    return {
        "map50": float(summary["map50"]),
        "min_ap50": min(aps.values()),
        "weakest": min(aps, key=aps.get),
        "learnt": learnt,
        "escape": float(summary["escape_rate"]),
        "overkill": float(summary["overkill_rate"]),
        "gate": summary["gate"],
        "caught": f"{line['caught']}/{line['defective_parts']}",
        "false_rejects": int(line["false_rejects"]),
        "good_parts": int(line["good_parts"]),
        "seconds": float(summary["seconds"]),
        "ok": learnt and summary["gate"] == "pass" and int(line["false_rejects"]) == 0,
    }


def run_one(out: Path, seed: int, threads: int, extra: list[str]) -> dict[str, Any]:
    """One demo run (or its cached summary); returns its outcome."""
    run = out / f"seed{seed}-threads{threads}"
    stamp = run / "spread.json"
    if (
        (run / "summary.yaml").is_file()
        and stamp.is_file()
        and json.loads(stamp.read_text())["extra"] == extra
    ):
        print(f"demo_spread: cached {run}")
    else:
        cmd = [
            sys.executable,
            "-m",
            "defectdet.cli",
            "demo",
            "--out",
            str(run),
            "--seed",
            str(seed),
            "--threads",
            str(threads),
            *extra,
        ]
        print("demo_spread: " + " ".join(cmd), flush=True)
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        load0 = os.getloadavg()[0]
        if subprocess.run(cmd, env=env, cwd=ROOT).returncode != 0:
            raise ConfigError(f"{run}: `defectdet demo` failed (its output is above)")
        atomic_write_text(
            stamp,
            json.dumps(
                {
                    "extra": extra,
                    "load_1m_start": round(load0, 2),
                    "load_1m_end": round(os.getloadavg()[0], 2),
                }
            )
            + "\n",
        )
    res = outcome(load_yaml(run / "summary.yaml", kind="demo summary"))
    return {"seed": seed, "threads": threads, **res, **json.loads(stamp.read_text())}


def table(rows: list[dict[str, Any]]) -> str:
    """Every run, then the range of each number over the runs."""
    head = (
        "| seed | threads | mAP50 | weakest class AP50 | escape | overkill | INT8 gate | conveyor: defective "
        "rejected | good rejected | outcome | s |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(
            f"| {r['seed']} | {r['threads']} | {r['map50']:.3f} | {r['weakest']} {r['min_ap50']:.2f} | "
            f"{r['escape']:.1%} | {r['overkill']:.1%} | {r['gate']} | {r['caught']} | "
            f"{r['false_rejects']}/{r['good_parts']} | {'held' if r['ok'] else '**missed**'} | "
            f"{r['seconds']:.0f} |"
        )
    if rows:

        def rng(k, fmt):
            v = [r[k] for r in rows]
            return f"{format(min(v), fmt)}–{format(max(v), fmt)}"

        held = sum(r["ok"] for r in rows)
        lines.append(
            f"\n{held} of {len(rows)} runs reached the outcome (every class AP50 ≥ {LEARNT_AP50}, INT8 gate "
            f"passed, no good part rejected on the conveyor). Range: mAP50 {rng('map50', '.3f')}, weakest "
            f"class AP50 {rng('min_ap50', '.2f')}, escape {rng('escape', '.1%')}, overkill "
            f"{rng('overkill', '.1%')}, good parts rejected {rng('false_rejects', 'd')}."
        )
        extra = {
            " ".join(r["extra"]) for r in rows
        }  # the options every run was given besides seed and threads
        shown = f" {next(iter(extra))}" if len(extra) == 1 and extra != {""} else ""
        lines.append(
            f"Runs: `defectdet demo --seed S --threads T{shown}` (`python bench/demo_spread.py`), one at a "
            "time."
        )
    return "\n".join(lines) + "\n"


def readme_block(rows: list[dict[str, Any]]) -> str:
    """The README's view of the spread: how many runs held and the range of each number, no run listed."""

    def rng(k, fmt):
        v = [r[k] for r in rows]
        lo, hi = format(min(v), fmt), format(max(v), fmt)
        return lo if lo == hi else f"{lo}–{hi}"

    seeds = sorted({r["seed"] for r in rows})
    threads = sorted({r["threads"] for r in rows})
    gate = sum(r["gate"] == "pass" for r in rows)
    learnt = sum(r["learnt"] for r in rows)
    n = len(rows)
    lines = [
        f"| `make demo` over {n} runs (seeds {', '.join(map(str, seeds))} × "
        f"{' and '.join(map(str, threads))} training threads) | range |",
        "|---|---|",
        f"| reached the outcome (every class learnt, INT8 gate passed, no good part rejected) | "
        f"{sum(r['ok'] for r in rows)} of {n} |",
        f"| every class learnt (AP50 ≥ {LEARNT_AP50}) / INT8 gate passed | {learnt} of {n} / {gate} of {n} |",
        f"| mAP50 / weakest class AP50 | {rng('map50', '.3f')} / {rng('min_ap50', '.2f')} |",
        f"| escape / overkill at the 5% escape target | {rng('escape', '.1%')} / {rng('overkill', '.1%')} |",
        f"| good parts rejected on the conveyor | {rng('false_rejects', 'd')} "
        f"(of {rng('good_parts', 'd')}) |",
        f"| seconds per run (2 cores) | {rng('seconds', '.0f')} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--out", default=str(ROOT / "runs" / "demo_spread"))
    p.add_argument("--page", help="rewrite this docs page's demo-spread block (docs/demo.md)")
    p.add_argument("--readme", help="rewrite this page's demo-range block (README.md): the range only")
    a = p.parse_args(argv)
    try:
        rows = [run_one(Path(a.out), s, t, extra) for s in a.seeds for t in a.threads]
        text = table(rows)
        atomic_write_text(Path(a.out) / "demo_spread.md", text)
        if a.page:
            update_page(Path(a.page), MARKER, text)
        if a.readme:
            update_page(Path(a.readme), README_MARKER, readme_block(rows))
    except ConfigError as e:
        print(f"demo_spread: error: {e}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
