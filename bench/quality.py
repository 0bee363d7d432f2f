"""Focal family vs BCE at an equal, documented budget: mAP, rare-class recall and part KPIs, one table.

    python bench/quality.py                                   # CPU budget, DeepPCB rare + balanced, seed 0
    python bench/quality.py --seeds 0 1 2                     # more seeds (each arm ~1 h on 2 CPU cores)
    python bench/quality.py --budget gpu --device 0 --seeds 0 1 2   # a GPU: yolo11n at 640, 100 epochs
    python bench/quality.py --report-only                     # table + PNGs again from the cached JSON
    python bench/quality.py --data synthetic --arms bce qfl --epochs 1 --imgsz 64   # smoke run
    python bench/quality.py --data synthetic --synthetic-defect-rate 0.1 --synthetic-px 640 \\
        --synthetic-images 500 --arms bce recipe

**Arms**: ``bce`` (ultralytics' loss, the baseline), ``focal`` (standard preset), ``qfl``, ``vfl``
and the preset that ``defectdet data stats`` recommends for the dataset at the budget's imgsz
(left out when it equals an arm already listed). Settings come from ``configs/train/<arm>.yaml``.
**Datasets**: ``../shared/data/deeppcb/data_rare.yaml`` (91% defect-free training images; val =
defective boards + their templates) and ``data.yaml`` (defective images only, so overkill is n/a).
**Budget** (equal for every arm; fixed seeds, ``deterministic``; optimizer ``auto``, which picks the
same AdamW for every arm at this iteration count; per-epoch validation off — the last epoch's
weights are evaluated, so no arm is selected on the val set it is scored on):

* ``cpu`` (default): ``configs/models/defectdet-pico.yaml`` at imgsz 320, batch 16, 30 epochs.
  Measured here (2 cores shared with other jobs): pico trains at 10-11 images/s at load ~3-4 (yolo11n:
  5.6), mosaic on or off alike; one full epoch of the rare set (1314 images) took 165 s at load ~4.5
  (8 images/s), plus ~100 s per arm for setup and evaluation -> 30 epochs = 1 h at 11 images/s,
  ~85 min at 8. Why: the lead's yolo11n run learnt nothing in 20 epochs at 320 (mAP50 < 0.05), so
  the hour goes to the model with the most optimizer steps per hour (pico: 10x fewer FLOPs than
  yolo11n, 2x its throughput here, where augmentation costs as much as the model). imgsz 320 keeps
  DeepPCB's median defect (~34 px at 640) at ~17 px, above the P3 stride of 8; 640 costs 4x per
  step, and crops would change what a "part" is for the escape KPI. This is what a CPU hour buys,
  not a budget known to suffice: the script warns when BCE's mAP50 stays below 0.3 (deltas are
  noise then) — expect it on the rare set, where 119 of 1314 training images have a defect.
* ``gpu``: yolo11n.yaml at imgsz 640 (native resolution), batch 32, 100 epochs, 3 seeds.

**Metrics** per arm and seed (val split; detections at conf >= 0.001 with :mod:`defectdet.evaluate`):
mAP50, mAP50-95; **recall of the rarest class** (fewest training boxes) **at 0.1 false positives per
image** (FROC-style: the lowest threshold of that class whose false detections of that class stay
<= 0.1 x images; it compares ranking at equal false-alarm cost, so it is blind to the score
re-scaling focal losses cause — QFL traded recall for precision at conf 0.25 — and 0.1 FP/image is
where an inspection line operates: one false alarm every ten parts, from one class); **escape at
thresholds calibrated for 5% escape, with the overkill they cost**, cross-fitted: thresholds are
calibrated on half the val parts (even/odd index) and counted on the other half, both ways, so the
numbers are not fitted on the parts they count (5%, not 1%: ~150 defective parts per half allow 7
escapes, 1% would hinge on one part); **training images/s** (the train loop only, from per-epoch
timings). The table shows the median and ± half the min-max range over seeds, and the paired
per-seed mAP50 delta to BCE.

**Resumable**: each arm/seed is ``<out>/<data>/<arm>/seed<k>/`` (the ultralytics run) with its
``result.json``; a rerun skips finished arms, resumes an interrupted training from ``last.pt`` and
refuses a cache made with another budget. ``--archive DIR`` keeps a copy of each ``result.json`` (no
weights) in the same layout, small enough to commit, so ``--report-only --out DIR`` rebuilds the
table after the runs' folder is gone, and a rerun with the same ``--archive`` reads an arm kept there as
cached (a later session, with another ``--out``, trains only what is missing). Writes
``<out>/quality.md``, ``quality.json``, ``quality_pr.png`` (PR curves of all arms overlaid) and
``quality_bars.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.quality_report import (  # noqa: E402,F401  (aggregate & co. are this script's API too)
    COLUMNS,
    FINGERPRINT,
    FP_PER_IMAGE,
    LOSS_ARMS,
    MIN_BASELINE_MAP50,
    aggregate,
    baseline_warnings,
    markdown_table,
    plot_bars,
    plot_pr,
    report,
    update_page,
)
from defectdet import metrics as M  # noqa: E402  (numpy only)
from defectdet.artifact import RunInfo  # noqa: E402  (torch-free)
from defectdet.config import atomic_write_text  # noqa: E402
from defectdet.errors import ConfigError  # noqa: E402

DEEPPCB = ROOT.parent / "shared" / "data" / "deeppcb"
DEFAULT_DATA = [str(DEEPPCB / "data_rare.yaml"), str(DEEPPCB / "data.yaml")]
BUDGETS = {  # the equal budget every arm gets; see the module docstring for why
    "cpu": {
        "model": str(ROOT / "configs" / "models" / "defectdet-pico.yaml"),
        "imgsz": 320,
        "batch": 16,
        "epochs": 30,
        "workers": 2,
        "seeds": [0],
    },
    "gpu": {
        "model": "yolo11n.yaml",
        "imgsz": 640,
        "batch": 32,
        "epochs": 100,
        "workers": 8,
        "seeds": [0, 1, 2],
    },
}
TARGET_ESCAPE = 0.05  # escape target of the threshold calibration
LINE_ESCAPE = (
    0.01  # a line's escape target: reported beside TARGET_ESCAPE (one escape in ~150 parts per half)
)
LINE_OVERKILL = 0.05  # a line's overkill bound: the k-fold's part threshold set from the good parts
BASELINE_RECIPE = {
    "sampling": "uniform",
    "crop": "off",
    "paste": 0.0,
}  # the data recipe before defectdet had one
FEATURES = {
    "defect": {"sampling": "defect"},
    "repeat": {"sampling": "repeat"},
    "native": {"crop": "native"},
    "paste": {"paste": 0.5},
    "defect80": {"sampling": "defect", "defect_fraction": 0.8},
    "flip": {"flipud": 0.5},
    "rot": {"rot90": 0.75},
    **{
        f"lr{n}": {"optimizer": "AdamW", "lr0": n / 1000, "momentum": 0.9, "warmup_bias_lr": 0.0}
        for n in (3, 5, 1)
    },
    "nomosaic": {"mosaic": 0.0},
    "nbs16": {"nbs": 16},
    # the sampler x focal grid (bench/grid.py): defect share per epoch, and focal gamma at alpha 0.5 with
    # the cls gain of the preset for that gamma (focal_balanced, focal_mild; gamma 2 as focal, alpha 0.5)
    **{f"df{n}": {"sampling": "defect", "defect_fraction": n / 100} for n in (10, 25, 50)},
    **{
        f"g{g}": {"cls_loss": "focal", "gamma": float(g), "alpha": 0.5, "cls": 1.0 if g == 0 else 4.0}
        for g in (0, 1, 2)
    },
}


# ----------------------------------------------------------------------------- metrics (numpy)
def recall_at_fp_rate(
    images: list[M.ImageDetections], c: int, nc: int, fp_per_image: float
) -> dict[str, Any]:
    """Box recall (IoU 0.5) of class ``c`` at the lowest confidence threshold whose false positives of
    class ``c`` number at most ``fp_per_image * len(images)``; ties in confidence are kept together."""
    stats = M.BoxStats.from_images(images, nc)
    tp, conf = stats.sorted_class(c)  # (K, T), (K,) descending confidence
    n_gt, budget = int(stats.n_gt[c]), fp_per_image * len(images) + 1e-9  # no float shortfall
    tp50 = tp[:, 0] if len(tp) else np.zeros(0, dtype=bool)  # (K,)
    ctp, cfp = np.cumsum(tp50), np.cumsum(~tp50)  # (K,) each
    group_end = np.r_[conf[1:] != conf[:-1], True] if len(conf) else np.zeros(0, dtype=bool)  # (K,)
    ok = np.flatnonzero(group_end & (cfp <= budget))
    if not ok.size or not n_gt:
        return {"recall": 0.0, "threshold": float("inf"), "fp": 0, "n_gt": n_gt}
    k = int(ok[-1])  # cfp is non-decreasing: the last admissible cut has the highest recall
    return {"recall": float(ctp[k] / n_gt), "threshold": float(conf[k]), "fp": int(cfp[k]), "n_gt": n_gt}


KPI_KEYS = ("escapes", "n_defective", "overkills", "n_clean", "reachable", "escape", "overkill")


def _dealt_kpis(images: list[M.ImageDetections], names: list[str], folds: int, *args: Any) -> dict[str, Any]:
    """:func:`bench.kfold.cross_fitted` (``args`` after the names) over ``images`` dealt to fold
    ``index % folds``, reduced to :data:`KPI_KEYS`."""
    from bench.kfold import cross_fitted

    r = cross_fitted([images[f::folds] for f in range(folds)], names, *args)
    return {k: r[k] for k in KPI_KEYS}


def cross_calibrated_kpis(
    images: list[M.ImageDetections], names: list[str], target_escape: float, folds: int = 2, rule: str = "box"
) -> dict[str, Any]:
    """Escape/overkill at thresholds calibrated (``defectdet val --target-escape``) on the other folds;
    parts go to fold ``index % folds`` and the counts of all folds are summed
    (:func:`bench.kfold.cross_fitted`). ``rule``: what catches a defective part, in the calibration and the
    count (``defectdet.metrics.ESCAPE_RULES``)."""
    return _dealt_kpis(images, names, folds, target_escape, rule)


def good_part_kpis(
    images: list[M.ImageDetections], names: list[str], target_overkill: float, folds: int = 2
) -> dict[str, Any]:
    """Escape/overkill under the line's rule with one part threshold set from the other folds' good parts
    for ``target_overkill`` at 90 % confidence (``defectdet val --threshold-rule part --target-overkill
    --confidence 0.9``), parts dealt as :func:`cross_calibrated_kpis` deals them."""
    return _dealt_kpis(images, names, folds, None, "any", "part", 0.9, target_overkill)


def rarest_class(stats: dict) -> int:
    """The class with the fewest boxes in the train split (lowest id on ties) of ``dataset_stats``."""
    counts = list(stats["splits"]["train"]["instances_per_class"].values())
    return int(np.argmin(counts))


# ----------------------------------------------------------------------------- arms and data
def data_tag(data: str) -> str:
    """A short folder name for a dataset: ``<parent>-<yaml stem>`` (``synthetic`` for the generated set;
    ``<set>-kfold<K>-fold<f>`` for a fold that ``--kfold`` made)."""
    p = Path(data)
    if len(p.parts) >= 3 and p.parts[-2].startswith("fold") and "-kfold" in p.parts[-3]:
        return f"{p.parts[-3]}-{p.parts[-2]}"
    synthetic = len(p.parts) >= 3 and p.parts[-2] == "data" and p.parts[-3].startswith("synthetic")
    return p.parts[-3] if synthetic else f"{p.parent.name}-{p.stem}"


def arms_for(stats: dict, wanted: list[str] | None = None) -> dict[str, dict]:
    """{arm name: settings}: the loss arms plus the recommended preset, unless it equals one of
    them (then that arm is marked); ``wanted`` picks arms by name, ``recommended`` standing for it.

    Loss arms train on today's data recipe pinned (``BASELINE_RECIPE``: uniform sampling, whole
    images, no paste), whatever the defaults. ``<arm>+<feature>[+...]`` adds recipe features
    (``FEATURES``: defect, defect80 = defect sampling at defect_fraction 0.8, repeat, native, paste,
    flip = vertical flips too (ultralytics' ``flipud=0.5`` beside its default ``fliplr=0.5``), rot = quarter
    turns (``rot90=0.75``: each of the four turns equally often; with flip, all eight orientations), lr3 =
    AdamW at lr0 0.003, the default from scratch since defectdet.trainer.SCRATCH_LR0 (lr5: 0.005; lr1: 0.001,
    ultralytics' own ``optimizer=auto`` choice for these short runs and what arms without an lr feature
    trained with before; momentum and bias warm-up as auto sets them), nomosaic = ``mosaic=0`` (one native
    window per sample, ultralytics' other augmentations kept), nbs16 = ``nbs=16`` (an optimizer step every
    batch of 16 instead of ultralytics' gradient accumulation to 64: 4x the steps at the same images seen;
    the sampler x focal grid of bench/grid.py: df10, df25, df50 = ``sampling=defect`` at
    ``defect_fraction`` 0.1 / 0.25 / 0.5, and g0, g1, g2 = ``cls_loss=focal`` at gamma 0 / 1 / 2, alpha 0.5
    and the cls gain of the preset for that gamma: cls 1 (gamma 0 = focal_balanced, BCE-equivalent), cls 4
    (gamma 1 = focal_mild; gamma 2 = the focal preset's gamma and gain at alpha 0.5, not its 0.25))
    to a loss arm; ``recipe`` is ``defectdet train``'s defaults (every key auto: loss, sampling, crop), so
    ``recipe+df25+g1`` differs from the defaults in the sampler's share and the loss alone. A feature's
    keys override the base arm's; two features that set one key to different values are an error."""
    from defectdet.data.stats import recommend_preset
    from defectdet.train import load_settings

    key = lambda s: tuple(s.get(k) for k in ("cls_loss", "gamma", "alpha", "cls"))  # noqa: E731
    arms = {name: {**load_settings(name, []), **BASELINE_RECIPE} for name in LOSS_ARMS}
    rec = recommend_preset(stats)["config"]
    rec_settings = {**load_settings(rec, []), **BASELINE_RECIPE}
    rec = next((n for n, s in arms.items() if key(s) == key(rec_settings)), rec)
    arms[rec] = {**arms.get(rec, rec_settings), "recommended": True}
    pick = [rec if w == "recommended" else w for w in (wanted or arms)]
    out = {}
    for w in pick:
        base, *features = w.split("+")
        base = rec if base == "recommended" else base
        bad = [f for f in features if f not in FEATURES]
        if (base not in arms and base != "recipe") or bad:
            raise ConfigError(
                f"--arms {w}: expected one of {', '.join(arms)}, 'recommended' or 'recipe', optionally "
                f"followed by +feature ({', '.join(FEATURES)})"
            )
        out["+".join([base, *features])] = _with_features(w, {} if base == "recipe" else arms[base], features)
    return out


def _with_features(arm: str, base: dict, features: list[str]) -> dict:
    """``base`` settings with each feature's keys laid over them (ConfigError on a key set twice)."""
    if not features:
        return dict(base)  # a bare arm keeps its "recommended" mark
    settings, set_by = {k: v for k, v in base.items() if k != "recommended"}, {}
    for f in features:
        for k, v in FEATURES[f].items():
            if k in set_by and FEATURES[set_by[k]][k] != v:
                raise ConfigError(
                    f"--arms {arm}: features {set_by[k]} and {f} both set {k} ({FEATURES[set_by[k]][k]} vs "
                    f"{v}); expected at most one feature per key"
                )
            set_by[k] = f
        settings.update(FEATURES[f])
    return settings


def loss_label(s: dict) -> str:
    """``qfl γ=2 cls=4`` — the loss settings of an arm in one short string."""
    parts = [s.get("cls_loss", "auto")] + [
        f"{g}={s[k]:g}" for k, g in (("gamma", "γ"), ("alpha", "α"), ("cls", "cls")) if s.get(k) is not None
    ]
    parts += [f"{k}={s[k]}" for k in ("sampling", "crop") if s.get(k) not in (None, "uniform", "off")]
    parts += [
        f"defect_fraction={s['defect_fraction']:g}" for _ in [0] if s.get("defect_fraction") is not None
    ]
    parts += [f"{k}={s[k]:g}" for k in ("paste", "flipud", "rot90", "lr0") if s.get(k)]
    parts += [f"mosaic={s['mosaic']:g}" for _ in [0] if s.get("mosaic") is not None]
    parts += [f"nbs={s['nbs']}" for _ in [0] if s.get("nbs") is not None]
    return " ".join(parts)


# ----------------------------------------------------------------------------- one arm
class EpochTimer:
    """Callbacks timing the training loop of each epoch (validation excluded) into
    ``<run>/epoch_times.json``, kept across resumes."""

    def __init__(self, run_dir: Path):
        self.path, self.t0 = run_dir / "epoch_times.json", 0.0

    def start(self, trainer) -> None:
        self.t0 = time.perf_counter()

    def end(self, trainer) -> None:
        rows = json.loads(self.path.read_text()) if self.path.exists() else {}
        rows[str(trainer.epoch)] = {
            "seconds": time.perf_counter() - self.t0,
            "images": len(trainer.train_loader.dataset),
            "load_1m": round(os.getloadavg()[0], 2),
        }  # other jobs slow this epoch
        atomic_write_text(self.path, json.dumps(rows, indent=1))

    def load(self) -> float | None:
        """The median 1-minute load average at the epochs' ends (2 = both cores busy with this run alone)."""
        rows = json.loads(self.path.read_text()).values() if self.path.exists() else []
        loads = [r["load_1m"] for r in rows if "load_1m" in r]
        return float(np.median(loads)) if loads else None

    def images_per_s(self) -> float | None:
        rows = json.loads(self.path.read_text()).values() if self.path.exists() else []
        secs = sum(r["seconds"] for r in rows)
        return sum(r["images"] for r in rows) / secs if secs else None


def _checkpoint_state(last: Path) -> str:
    """'none', 'resumable' (epoch >= 0 with optimizer state), 'finished' (stripped) or 'corrupt'."""
    if not last.is_file():
        return "none"
    import torch

    try:
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
    except Exception:  # a checkpoint cut off mid-write
        return "corrupt"
    return "resumable" if ckpt.get("epoch", -1) >= 0 and ckpt.get("optimizer") is not None else "finished"


def train_arm(
    run_dir: Path,
    data: str,
    settings: dict,
    budget: dict,
    seed: int,
    device: str,
    callbacks: dict | None = None,
) -> Path:
    """Train one arm/seed into ``run_dir`` (resuming from ``last.pt``); returns the final weights."""
    from defectdet.train import train

    last = run_dir / "weights" / "last.pt"
    state = _checkpoint_state(last)
    if state == "finished" and (run_dir / "epoch_times.json").exists():
        return last
    timer = EpochTimer(run_dir)
    cbs = {"on_train_epoch_start": [timer.start], "on_train_epoch_end": [timer.end]}
    for event, fns in (callbacks or {}).items():
        cbs.setdefault(event, []).extend(fns)
    args = {k: v for k, v in settings.items() if k != "recommended"}
    args.update(
        data=data,
        imgsz=budget["imgsz"],
        batch=budget["batch"],
        epochs=budget["epochs"],
        workers=budget["workers"],
        seed=seed,
        deterministic=True,
        device=device,
        val=False,
        plots=False,
        project=str(run_dir.parent),
        name=run_dir.name,
        exist_ok=True,
        verbose=False,
    )
    if state == "resumable":
        print(f"quality: resuming {run_dir} from {last}")
        train(callbacks=cbs, **args, model=str(last), resume=True)
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # a half-written start: begin again
        train(callbacks=cbs, **args, model=budget["model"])
    return last


def evaluate_arm(
    weights: Path,
    data: str,
    imgsz: int,
    device: str,
    rarest: int,
    fp_per_image: float,
    target_escape: float,
    max_images: int | None = None,
) -> dict[str, Any]:
    """Every metric of the table for one trained arm (one inference pass over the val split)."""
    from defectdet.evaluate import build_report, collect_detections, read_split

    names, images = read_split(data, "val")
    if max_images is not None and max_images < len(images):
        images = [images[i] for i in np.linspace(0, len(images) - 1, max_images).round().astype(int)]
    dets, _ = collect_detections(str(weights), images, len(names), imgsz=imgsz, device=device)
    rep = build_report(dets, names)
    labelled = [n for n, v in rep.per_class.items() if v["labels"] > 0]
    pr_mean = (
        np.mean([rep.pr_curves[n]["precision"] for n in labelled], 0) if labelled else np.zeros(101)
    )  # (101,)
    cal = cross_calibrated_kpis(dets, names, target_escape)
    line = cross_calibrated_kpis(dets, names, LINE_ESCAPE)
    line_any = cross_calibrated_kpis(
        dets, names, LINE_ESCAPE, rule="any"
    )  # a part is rejected by any detection
    good = good_part_kpis(dets, names, LINE_OVERKILL)  # one part threshold from the good parts
    rare = recall_at_fp_rate(dets, rarest, len(names), fp_per_image)
    return {
        "map50": rep.map50,
        "map50_95": rep.map50_95,
        "rare_recall": rare["recall"],
        "rare": rare,
        "escape": cal["escape"],
        "overkill": cal["overkill"],
        "calibration": cal,
        "escape_line": line["escape"],
        "overkill_line": line["overkill"],
        "calibration_line": line,
        "imgsz": imgsz,
        "escape_line_any": line_any["escape"],
        "overkill_line_any": line_any["overkill"],
        "calibration_line_any": line_any,
        "escape_line_good": good["escape"],
        "overkill_line_good": good["overkill"],
        "calibration_line_good": good,
        "max_f1": {"escape": rep.escape_rate, "overkill": rep.overkill_rate if rep.n_clean else None},
        "per_class": rep.per_class,
        "n_images": len(dets),
        "pr": {
            "recall": M.RECALL_GRID.round(4).tolist(),
            "mean": pr_mean.round(5).tolist(),
            "rarest": rep.pr_curves[names[rarest]]["precision"],
        },
    }


FOLD_YAML = re.compile(r"[^/]+-kfold\d+/fold\d+/data\.yaml$")  # written by bench/kfold.py under --out


def portable(fingerprint: dict) -> dict:
    """``fingerprint`` with a model yaml of this project named from ``configs/`` and a fold's data.yaml
    (written under ``--out``) from its ``<data>-kfold<K>/fold<f>/`` folder, whatever checkout or output
    folder ran it: the same budget on the same fold."""
    out = dict(fingerprint)
    tail = str(out.get("model", "")).replace("\\", "/").rpartition("/configs/models/")
    if tail[1]:
        out["model"] = f"configs/models/{tail[2]}"
    fold = FOLD_YAML.search(str(out.get("data", "")).replace("\\", "/"))
    if fold:
        out["data"] = fold.group(0)
    return out


def run_arm(
    out: Path,
    data: str,
    arm: str,
    settings: dict,
    budget: dict,
    seed: int,
    opts: argparse.Namespace,
    stats: dict,
    callbacks: dict | None = None,
) -> dict[str, Any]:
    """Train + evaluate one arm/seed, or load its cached ``result.json`` (same budget required)."""
    run_dir = out / data_tag(data) / arm / f"seed{seed}"
    fingerprint = {
        **{k: budget[k] for k in FINGERPRINT},
        "seed": seed,
        "data": str(data),
        "settings": {k: v for k, v in settings.items() if k != "recommended"},
    }
    eval_cfg = {
        "fp_per_image": opts.fp_per_image,
        "target_escape": opts.target_escape,
        "max_val_images": opts.max_val_images,
        "escape_rules": list(M.ESCAPE_RULES),
    }
    cached = run_dir / "result.json"
    if cached.exists():
        res = json.loads(cached.read_text())
        if portable(res["fingerprint"]) != portable(fingerprint):
            raise ConfigError(
                f"{cached}: made with another budget ({res['fingerprint']}); expected {fingerprint}: "
                "use another --out or delete it"
            )
        if res["eval"] == eval_cfg:
            print(f"quality: cached {cached}")
            return res
        print(f"quality: re-evaluating {run_dir} ({res['eval']} -> {eval_cfg})")
    t0 = time.time()
    weights = train_arm(run_dir, data, settings, budget, seed, opts.device, callbacks)
    rarest = rarest_class(stats)
    run_info = RunInfo.load(RunInfo.path(run_dir))  # what auto keys became, and the native size
    resolved = run_info.to_dict()
    res = evaluate_arm(
        weights,
        data,
        int(run_info.deploy_imgsz or budget["imgsz"]),
        opts.device,
        rarest,
        opts.fp_per_image,
        opts.target_escape,
        opts.max_val_images,
    )
    res.update(
        fingerprint=fingerprint,
        eval=eval_cfg,
        data_tag=data_tag(data),
        arm=arm,
        seed=seed,
        loss=loss_label({**settings, **resolved}),
        resolved=resolved,
        recommended=bool(settings.get("recommended")),
        rarest_class=stats["names"][rarest],
        images_per_s=EpochTimer(run_dir).images_per_s(),
        load_1m=EpochTimer(run_dir).load(),
        omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
        wall_s=round(time.time() - t0, 1),
        budget=budget,
        device=str(opts.device),
    )
    atomic_write_text(cached, json.dumps(res, indent=1) + "\n")
    print(
        f"quality: {data_tag(data)} {arm} seed {seed}: mAP50 {res['map50']:.3f}  R_rare "
        f"{res['rare_recall']:.3f}  ({res['wall_s']:.0f} s)"
    )
    return res


# ----------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench/quality.py", description=__doc__.split("\n")[0])
    p.add_argument(
        "--data", nargs="+", default=DEFAULT_DATA, help="data.yaml files, or 'synthetic' (smoke runs)"
    )
    p.add_argument("--arms", nargs="+", help=f"subset of {', '.join(LOSS_ARMS)}, recommended (default: all)")
    p.add_argument("--budget", choices=sorted(BUDGETS), default="cpu", help="equal per-arm budget preset")
    p.add_argument("--seeds", nargs="+", type=int, help="training seeds (default: the budget's)")
    for k in ("epochs", "imgsz", "batch", "workers"):
        p.add_argument(f"--{k}", type=int, help=f"override the budget's {k}")
    p.add_argument("--model", help="override the budget's model yaml")
    p.add_argument("--device", default="cpu", help="cpu, 0, ... (a GPU for larger budgets)")
    p.add_argument(
        "--out", default=str(ROOT / "runs" / "bench_quality"), help="results cache and report folder"
    )
    p.add_argument(
        "--report-only", action="store_true", help="rebuild the table and plots from the cached JSON"
    )
    p.add_argument(
        "--archive",
        help="also copy every arm's result.json into this folder, in the cache's layout "
        "(small, to commit: --report-only --out ARCHIVE rebuilds the table without the runs)",
    )
    p.add_argument(
        "--page",
        "--readme",
        dest="page",
        help="also write the table into this docs page (docs/quality.md) between the "
        "<!-- MARKER:start/end --> lines",
    )
    p.add_argument("--marker", default="quality-table", help="the marker in --page (default: quality-table)")
    p.add_argument(
        "--fp-per-image", type=float, default=FP_PER_IMAGE, help="FP budget of the rare-class recall"
    )
    p.add_argument(
        "--target-escape", type=float, default=TARGET_ESCAPE, help="escape target of the calibration"
    )
    p.add_argument("--max-val-images", type=int, help="evaluate an evenly spaced val subset (smoke runs)")
    p.add_argument(
        "--kfold",
        type=int,
        help="K-fold cross-validation: pool train+val, deal K stratified folds, train "
        "one model per fold and pool the held-out part KPIs (bench/kfold.py)",
    )
    p.add_argument("--synthetic-images", type=int, default=200, help="size of the --data synthetic set")
    p.add_argument("--synthetic-defect-rate", type=float, default=0.3, help="share of defective parts in it")
    p.add_argument(
        "--synthetic-px",
        type=int,
        help="its parts' image size (default: the budget's imgsz; larger "
        "sizes make crop=auto train on native-scale windows)",
    )
    return p


def _resolve_data(data: str, out: Path, opts: argparse.Namespace, imgsz: int) -> str | None:
    """A data.yaml path, making the synthetic set on demand; None (with a message) when absent."""
    if data == "synthetic":
        from defectdet.data.synthetic import make_dataset

        rate, px, n = opts.synthetic_defect_rate, max(opts.synthetic_px or imgsz, 64), opts.synthetic_images
        if not 0 < rate < 1:
            raise ConfigError(f"--synthetic-defect-rate {rate}: expected a fraction in (0, 1)")
        name = (
            "synthetic"
            if (rate, opts.synthetic_px) == (0.3, None)
            else f"synthetic-{rate * 100:g}pct-{px}px-{n}"
        )
        yaml_path = out / name / "data" / "data.yaml"  # one folder per set: no stale reuse
        if not yaml_path.exists():
            make_dataset(yaml_path.parent, images=n, defect_rate=rate, imgsz=px, seed=0, video_frames=0)
        return str(yaml_path)
    if not Path(data).is_file():
        print(f"quality: skipping {data}: not found (DeepPCB lives in ../shared/data/deeppcb)")
        return None
    return str(Path(data).resolve())


def _restore(run_dir: Path, kept: Path | None, names: tuple[str, ...]) -> None:
    """Copy the files ``names`` that an earlier session kept in ``--archive`` (``kept``) into ``run_dir``
    where it lacks them, so that a finished arm is read as cached, not trained again."""
    for name in names:
        if kept is not None and (kept / name).is_file() and not (run_dir / name).is_file():
            run_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(kept / name, run_dir / name)


def _kfold_fold(
    out: Path,
    data: str,
    arm: str,
    settings: dict,
    budget: dict,
    seed: int,
    opts: argparse.Namespace,
    stats: dict,
) -> tuple[dict, list]:
    """One fold of ``--kfold``: its result.json and held-out detections (``dets.json.gz``) from ``--out``,
    else from ``--archive`` (what an earlier session kept), else trained and evaluated here; both are
    archived as soon as they exist."""
    from bench import kfold as KF
    from defectdet.evaluate import collect_detections, read_split

    rel = Path(data_tag(data)) / arm / f"seed{seed}"
    run_dir, kept = out / rel, (Path(opts.archive) / rel if opts.archive else None)
    _restore(run_dir, kept, ("result.json", "dets.json.gz"))
    res = run_arm(out, data, arm, settings, budget, seed, opts, stats)
    dets_path = run_dir / "dets.json.gz"
    if not dets_path.is_file():
        names, images = read_split(data, "val")
        imgsz = int(res["resolved"].get("eval_imgsz") or budget["imgsz"])
        dets = collect_detections(
            str(run_dir / "weights" / "last.pt"), images, len(names), imgsz=imgsz, device=opts.device
        )[0]
        KF.save_detections(dets_path, dets)
    if kept is not None:
        atomic_write_text(kept / "result.json", json.dumps(res, indent=1) + "\n")
        if not (kept / "dets.json.gz").is_file():
            shutil.copyfile(dets_path, kept / "dets.json.gz")
    return res, KF.load_detections(dets_path)


def run_kfold(opts: argparse.Namespace, out: Path, budget: dict, datasets: list[str], stats: dict) -> int:
    """``--kfold K``: each arm/seed trains one model per fold (resumable like any arm, and across sessions
    through ``--archive``), then the held-out detections of all folds are pooled into
    ``<out>/<set>-kfold<K>/<arm>/seed<s>/kfold.json``."""
    from bench import kfold as KF
    from defectdet.evaluate import read_split

    rows = []
    for seed in opts.seeds or budget["seeds"]:
        for d in datasets:
            base = out / f"{data_tag(d)}-kfold{opts.kfold}"
            yamls = KF.make_fold_yamls(d, opts.kfold, base)
            names, _ = read_split(yamls[0], "val")
            for arm, settings in arms_for(stats[d], opts.arms).items():
                folds = [_kfold_fold(out, y, arm, settings, budget, seed, opts, stats[d]) for y in yamls]
                res = {
                    "data_tag": f"{data_tag(d)}-kfold{opts.kfold}",
                    "arm": arm,
                    "seed": seed,
                    "loss": folds[0][0]["loss"],
                    "budget": budget,
                    "data": d,
                    "kfold": KF.pooled_result(
                        [r for r, _ in folds],
                        [x for _, x in folds],
                        names,
                        LINE_ESCAPE,
                        opts.target_escape,
                        LINE_OVERKILL,
                    ),
                }
                for where in [base] + ([Path(opts.archive) / res["data_tag"]] if opts.archive else []):
                    atomic_write_text(
                        where / arm / f"seed{seed}" / "kfold.json", json.dumps(res, indent=1) + "\n"
                    )
                rows.append(res)
    text = KF.kfold_table(rows)
    atomic_write_text(out / "quality_kfold.md", text)
    print(text)
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    return 0


def main(argv: list[str] | None = None) -> int:
    # Beside another CPU job, torch's OpenMP workers spin-wait for descheduled peers (10x slower per
    # iteration measured on 2 cores); passive waiting avoids it. Read when OpenMP starts: set it before torch.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    opts = _parser().parse_args(argv)
    out = Path(opts.out).resolve()
    if not opts.report_only:
        budget = {
            **BUDGETS[opts.budget],
            **{
                k: getattr(opts, k)
                for k in ("epochs", "imgsz", "batch", "workers", "model")
                if getattr(opts, k) is not None
            },
        }
        from defectdet.data.stats import dataset_stats

        datasets = [d for d in (_resolve_data(d, out, opts, budget["imgsz"]) for d in opts.data) if d]
        if not datasets:
            raise ConfigError(f"none of {' '.join(opts.data)} found; expected data.yaml files or 'synthetic'")
        stats = {d: dataset_stats(d, imgsz=budget["imgsz"]) for d in datasets}
        if opts.kfold:
            return run_kfold(opts, out, budget, datasets, stats)
        for seed in opts.seeds or budget["seeds"]:  # seed-major: an interrupted run has whole comparisons
            for d in datasets:
                for arm, settings in arms_for(stats[d], opts.arms).items():
                    rel = Path(data_tag(d)) / arm / f"seed{seed}"
                    kept = Path(opts.archive) / rel if opts.archive else None
                    _restore(out / rel, kept, ("result.json",))  # kept by an earlier session: cached
                    res = run_arm(out, d, arm, settings, budget, seed, opts, stats[d])
                    if kept is not None:
                        atomic_write_text(kept / "result.json", json.dumps(res, indent=1) + "\n")
    text = report(out)
    print(text)
    if opts.page:
        print(f"written: {update_page(Path(opts.page), opts.marker, text)} ({opts.marker})")
    print(f"written: {out / 'quality.md'}, quality.json, quality_pr.png, quality_bars.png")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"bench/quality.py: error: {e}", file=sys.stderr)
        sys.exit(2)
