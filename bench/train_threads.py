"""CPU training speed against torch's thread count (`defectdet train threads=N`), side by side.

    python bench/train_threads.py                # demo data and settings, threads: default 1 2, 3 rounds
    python bench/train_threads.py --threads 1 2 4 --rounds 5 --epochs 4

On the CPU ultralytics trains with ``os.cpu_count() - 1`` torch threads and no data-loader
workers (data loading and augmentation run in the training thread between steps). This script
trains yolo11n with the demo's loss on the demo's synthetic data (``defectdet.demo.DEMO``) once per setting
per round, the settings interleaved so that a change in machine load hits all of them alike, and
prints the median training images/s of each setting (epochs after the first, training loop only:
per-epoch validation is off) and its ratio to ultralytics' default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality import EpochTimer  # noqa: E402  (the quality benchmark's per-epoch timer)
from defectdet.demo import DEMO, TRAIN_EXTRA, loss_settings  # noqa: E402


def images_per_s(data: Path, project: Path, threads, epochs: int, name: str) -> float:
    """Median training images/s over the epochs after the first of one training run."""
    import torch

    from defectdet.train import train

    timer = EpochTimer(project / name)  # the run folder (exist_ok: ultralytics keeps the name)
    before = torch.get_num_threads()
    try:
        train(
            callbacks={"on_train_epoch_start": [timer.start], "on_train_epoch_end": [timer.end]},
            **loss_settings(DEMO["cls_loss"]),
            model="yolo11n.yaml",
            data=str(data),
            epochs=epochs,
            imgsz=DEMO["imgsz"],
            batch=DEMO["batch"],
            seed=DEMO["seed"],
            project=str(project),
            name=name,
            exist_ok=True,
            threads=threads,
            **{**TRAIN_EXTRA, "val": False},
        )
    finally:
        torch.set_num_threads(before)
    rows = json.loads(timer.path.read_text())
    return statistics.median(r["images"] / r["seconds"] for epoch, r in rows.items() if epoch != "0")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--threads",
        nargs="+",
        default=["auto", "1", "2"],
        help="settings to compare; auto = ultralytics' os.cpu_count() - 1",
    )
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (each setting once per round)")
    ap.add_argument("--epochs", type=int, default=3, help="epochs per run (the first is warm-up, not timed)")
    ap.add_argument("--images", type=int, default=DEMO["images"], help="synthetic parts")
    a = ap.parse_args(argv)
    if a.epochs < 2:
        ap.error("--epochs must be >= 2 (the first epoch is warm-up)")
    settings = [None if t == "auto" else int(t) for t in a.threads]
    from defectdet.data.synthetic import make_dataset

    with tempfile.TemporaryDirectory(prefix="defectdet-threads-") as tmp:
        data = make_dataset(
            Path(tmp) / "data",
            images=a.images,
            defect_rate=DEMO["defect_rate"],
            imgsz=DEMO["imgsz"],
            seed=DEMO["seed"],
            video_frames=0,
            defect_scale=DEMO["defect_scale"],
        )
        runs: dict = {t: [] for t in settings}
        for r in range(a.rounds):
            for t in settings:
                runs[t].append(images_per_s(data, Path(tmp) / "runs", t, a.epochs, f"r{r}_{t}"))
                print(
                    f"train_threads: round {r + 1}/{a.rounds} threads={t or 'auto'}: {runs[t][-1]:.1f} img/s",
                    flush=True,
                )
    default = max(1, min(8, (os.cpu_count() or 1) - 1))
    print(
        f"\nyolo11n, {a.images} parts at {DEMO['imgsz']} px, batch {DEMO['batch']}, {a.epochs} epochs x "
        f"{a.rounds} rounds, {os.cpu_count()} CPUs; medians over rounds, ratios paired per round"
    )
    print(f"| threads | train img/s (median) | min-max | vs {a.threads[0]} (paired) |\n|---|---|---|---|")
    for t in settings:
        v = runs[t]
        ratio = statistics.median(x / b for x, b in zip(v, runs[settings[0]]))
        label = f"auto ({default})" if t is None else str(t)
        print(f"| {label} | {statistics.median(v):.1f} | {min(v):.1f}-{max(v):.1f} | {ratio:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
