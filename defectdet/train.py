"""Training: ultralytics' DetectionTrainer with a focal-family classification loss.

The only module that wires into ultralytics' training. It keeps ultralytics' task-aligned
assigner, box/DFL losses and normalisation (sum over anchors and classes / sum of target scores)
and swaps the element-wise classification term (`criterion.bce`) for one of:

    bce    ultralytics' own BCE on the IoU-aligned soft targets t in [0, IoU] (the baseline; exact).
    focal  sigmoid focal loss, with p_t = s t + (1 - s)(1 - t) and a_t = a t + (1 - a)(1 - t)
           interpolated linearly in the soft target (torchvision semantics; with 0/1 targets the
           textbook FL). A heuristic for soft targets: an anchor with t = 0.4 is partly
           "positive" and partly "negative".
    qfl    quality focal loss |t - s|^gamma * BCE(s, t): the principled focal form for soft targets
           (the score learns the IoU; the factor focuses on badly estimated scores). alpha unused.
    vfl    varifocal loss: positives (t > 0) weighted by t, negatives by alpha * s^gamma; only the
           (abundant) negatives are down-weighted.

Everything else is a callback, so it survives ultralytics' multi-GPU re-launch (the DDP worker
unpickles the trainer's callbacks with cloudpickle, and these are plain importable classes):
``ClsLossCallback`` installs the criterion, ``NonFiniteLossGuard`` stops on a non-finite loss,
``RunInfoCallback`` writes ``<run>/defectdet.yaml`` (a :class:`defectdet.artifact.RunInfo`: the
loss and the recipe resolved once in :func:`prepare`, plus the optimizer as built). Checkpoints
hold a plain ultralytics ``DetectionModel`` (the criterion is stripped before saving), so
``YOLO("best.pt")`` loads them on a machine without defectdet.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from . import losses
from . import ultralytics_adapter as ad
from .artifact import RunInfo
from .config import config_file, load_yaml, merged, parse_overrides, resolve_config
from .errors import ConfigError, TrainingError
from .offline import setup_ultralytics
from .recipe import RECIPE_KEYS, TrainDataCallback, check_recipe, resolve_recipe
from .settings.train import TRAIN

CLS_LOSSES = losses.CLS_LOSSES  # the registry: losses.CLS_LOSS_SPECS (function, defaults, gain)
DEFAULT_CLS_LOSS = "auto"
DEFECTDET_KEYS = ("cls_loss", "gamma", "alpha", "strict", "threads", *RECIPE_KEYS)
DEFAULTS = {"model": "yolo11n.yaml", "project": "runs/train"}


# --------------------------------------------------------------------------- the loss swap
class ClsLoss(nn.Module):
    """The element-wise classification loss, with the call signature of ultralytics' ``self.bce``."""

    def __init__(self, kind: str, gamma: Optional[float] = None, alpha: Optional[float] = None):
        super().__init__()
        self.kind, self.gamma, self.alpha = kind, gamma, alpha

    def forward(
        self, logits: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:  # (B, A, nc) -> (B, A, nc)
        return losses.cls_loss_spec(self.kind).fn(logits, targets, self.gamma, self.alpha)

    def extra_repr(self) -> str:
        return f"kind={self.kind}, gamma={self.gamma}, alpha={self.alpha}"


def install_cls_loss(model, cls_loss: str, gamma: Optional[float] = None, alpha: Optional[float] = None):
    """Give ``model`` (an ultralytics DetectionModel with ``.args`` set) a criterion whose
    classification term is ``cls_loss``; returns the criterion. Works for v8-style criteria and for
    end-to-end ones (one2many / one2one branches)."""
    check_loss_args(cls_loss, gamma, alpha)
    return ad.replace_cls_term(model, lambda: ClsLoss(cls_loss, gamma, alpha))


def check_loss_args(cls_loss: str, gamma, alpha) -> None:
    if cls_loss not in CLS_LOSSES:
        raise ConfigError(f"cls_loss={cls_loss!r}: expected one of {', '.join(CLS_LOSSES)} (or auto)")
    TRAIN["gamma"].check(gamma)  # null: the loss's default
    TRAIN["alpha"].check(alpha)
    spec = losses.CLS_LOSS_SPECS[cls_loss]
    if spec.needs_alpha and alpha is None:
        raise ConfigError(f"cls_loss={cls_loss} needs alpha in [0, 1] (default {spec.alpha})")


# --------------------------------------------------------------------------- callbacks
class ClsLossCallback:
    """on_pretrain_routine_end: install the criterion on the live model and on its EMA copy
    (the validator computes its loss with the EMA)."""

    def __init__(self, cls_loss: str, gamma: Optional[float], alpha: Optional[float]):
        self.cls_loss, self.gamma, self.alpha = cls_loss, gamma, alpha

    def __call__(self, trainer) -> None:
        crits = [
            install_cls_loss(m, self.cls_loss, self.gamma, self.alpha) for m in ad.training_models(trainer)
        ]
        print(f"defectdet: {type(crits[0]).__name__} classification term = {ad.cls_term(crits[0])!r}")


class NonFiniteLossGuard:
    """Stop at the first non-finite training loss with a message naming epoch, batch and likely
    causes (ultralytics would otherwise retry from last.pt at the epoch's end)."""

    def __init__(self):
        self.batch = 0

    def on_epoch_start(self, trainer) -> None:
        self.batch = 0

    def on_batch_end(self, trainer) -> None:
        self.batch += 1
        loss = getattr(trainer, "loss", None)
        if loss is None or bool(loss.isfinite()):
            return
        a = trainer.args
        items = getattr(trainer, "loss_items", None)
        parts = ", ".join(f"{k}={float(v):.4g}" for k, v in items.items()) if isinstance(items, dict) else ""
        raise TrainingError(
            f"non-finite training loss at epoch {trainer.epoch + 1}/{trainer.epochs}, batch {self.batch}"
            f"{' (' + parts + ')' if parts else ''}; likely causes: learning rate too high (lr0={a.lr0}), "
            f"focusing too strong for this data (gamma) or cls gain too large (cls={a.cls}), fp16 overflow "
            f"(amp={a.amp}); try a lower lr0, a milder preset (--config focal_mild) or amp=False"
        )


class CpuThreads:
    """on_pretrain_routine_start: train on the CPU with ``n`` torch threads. ultralytics sets
    ``os.cpu_count() - 1`` (and no data-loader workers), which leaves one of two cores idle."""

    def __init__(self, n: int):
        self.n = n

    def __call__(self, trainer) -> None:
        if trainer.device.type == "cpu":  # runs after ultralytics' own torch.set_num_threads
            torch.set_num_threads(self.n)
            print(f"defectdet: training on the CPU with {self.n} thread(s)")


def check_numbers(ul_args: dict[str, Any]) -> dict[str, Any]:
    """``ul_args`` with the training keys defectdet checks typed (``epochs=10.0`` -> 10); ConfigError naming
    the first one out of range or not a number (the ranges: defectdet.settings.train)."""
    return TRAIN.check(ul_args)


def check_threads(value) -> int:
    """threads=N (N >= 1), or None/"auto": every core (ultralytics itself takes os.cpu_count() - 1,
    which leaves one of two cores idle; measured in docs/training.md)."""
    if value is None or value == "auto":
        return max(os.cpu_count() or 1, 1)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"threads={value!r}: expected a whole number >= 1 (CPU training threads) or auto")
    return value


class RunInfoCallback:
    """Write ``<run>/defectdet.yaml``: the :class:`~defectdet.artifact.RunInfo` resolved before training
    (loss, recipe, imgsz, CPU threads) plus the optimizer, lr0 and nbs as built (``optimizer=auto``
    resolved, see defectdet.trainer)."""

    def __init__(self, info: RunInfo):
        self.info = info

    def __call__(self, trainer) -> None:
        if ad.is_main_rank():
            a = trainer.args  # as built
            self.info.replace(optimizer=str(a.optimizer), lr0=float(a.lr0), nbs=int(a.nbs)).save(
                RunInfo.path(trainer.save_dir)
            )


# --------------------------------------------------------------------------- settings
def split_settings(settings: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate defectdet's keys from ultralytics' training arguments; unknown keys are an error."""
    ul = setup_ultralytics()
    DEFAULT_CFG_DICT = ad.default_cfg_keys()
    ours = {k: settings[k] for k in DEFECTDET_KEYS if k in settings}
    theirs = {k: v for k, v in settings.items() if k not in DEFECTDET_KEYS}
    unknown = sorted(k for k in theirs if k not in DEFAULT_CFG_DICT)
    if unknown:
        import difflib

        hints = [
            f"{k} (did you mean {m[0]}?)" if (m := difflib.get_close_matches(k, DEFAULT_CFG_DICT, 1)) else k
            for k in unknown
        ]
        raise ConfigError(
            f"unknown training key(s): {', '.join(hints)}; expected ultralytics {ul.__version__} training "
            f"arguments or {', '.join(DEFECTDET_KEYS)}"
        )
    return ours, theirs


def resolve_loss(
    ours: dict[str, Any], ul_args: dict[str, Any], stats: Optional[dict] = None
) -> dict[str, Any]:
    """cls_loss/gamma/alpha with per-loss defaults, and the default `cls` gain when not given.
    ``stats``: the data as training sees it (``recipe.resolve_recipe``), for ``cls_loss=auto``."""
    # Default auto: the preset that `defectdet data stats` recommends for the data as training sees it
    # (why this default: docs/quality.md, "Quality benchmark").
    cls_loss = ours.get("cls_loss", DEFAULT_CLS_LOSS)
    if cls_loss == "auto":
        cls_loss, ours = _auto_preset(ul_args.get("data"), training_imgsz(ul_args), ours, ul_args, stats)
    if cls_loss not in CLS_LOSSES:
        raise ConfigError(f"cls_loss={cls_loss!r}: expected one of {', '.join(CLS_LOSSES)} or auto")
    spec = losses.CLS_LOSS_SPECS[cls_loss]
    gamma = ours["gamma"] if ours.get("gamma") is not None else spec.gamma
    alpha = ours["alpha"] if "alpha" in ours else spec.alpha
    check_loss_args(cls_loss, gamma, alpha)
    ul_args.setdefault("cls", spec.gain)
    return {"cls_loss": cls_loss, "gamma": gamma, "alpha": alpha, "cls": ul_args["cls"]}


def _auto_preset(data, imgsz, ours, ul_args, stats=None):
    """cls_loss=auto: the preset that the dataset statistics recommend (`defectdet data stats`),
    read from configs/train/ so its `cls` gain comes along; the user's own gamma/alpha/cls win."""
    if not data and stats is None:
        raise ConfigError("cls_loss=auto needs data=... to measure the imbalance")
    from .data.stats import dataset_stats, recommend_preset

    rec = recommend_preset(stats if stats is not None else dataset_stats(data, imgsz=int(imgsz)))
    preset = load_yaml(resolve_config(rec["config"], "train"))
    print(f"cls_loss=auto -> {rec['config']}: {preset} ({rec['rule']})")
    if "cls" in preset:
        ul_args.setdefault("cls", preset["cls"])
    given = {k: v for k, v in ours.items() if k in ("gamma", "alpha") and v is not None}
    return preset["cls_loss"], {**ours, **{k: preset[k] for k in ("gamma", "alpha") if k in preset}, **given}


def training_imgsz(ul_args: dict[str, Any]) -> int:
    """The training size: ``imgsz=``, else ultralytics' default (the one place it is read)."""
    size = ul_args.get("imgsz")
    return int(size if size is not None else ad.default_cfg_keys()["imgsz"])


def data_summary(stats: Optional[dict]) -> Optional[dict[str, Any]]:
    """The train split's facts the loss choice and the sampler went by, for ``defectdet.yaml``
    (plain numbers: YAML cannot hold numpy scalars)."""
    if stats is None:
        return None
    train = stats["splits"]["train"]
    facts = {
        "imgsz": stats.get("imgsz"),
        "images": train.get("images"),
        "defect_free_fraction": train.get("defect_free_fraction"),
        "negatives_per_positive": (train.get("anchors") or {}).get("negatives_per_positive"),
    }
    return {
        k: None if v is None else (int(v) if k in ("imgsz", "images") else float(v)) for k, v in facts.items()
    }


def model_path(model: Any) -> str:
    """``model=``: a path as given (a user's .pt or .yaml, an ultralytics name such as yolo11n.yaml), or
    one of defectdet's model yamls by name (``defectdet-pico.yaml``: ``configs/models/``)."""
    name = str(model)
    preset = config_file("models") / name
    if not Path(name).exists() and len(Path(name).parts) == 1 and preset.is_file():
        return str(preset)
    return name


# --------------------------------------------------------------------------- entry points
def prepare(callbacks: Optional[dict[str, list]] = None, **settings: Any):
    """Validate settings and data, build the model and attach defectdet's callbacks.

    Returns ``(yolo, ul_args, loss)``: ``yolo.train(trainer=DefectdetTrainer, **ul_args)`` runs the training
    (``defectdet.trainer``; the recipe's sampler needs that trainer class).
    """
    ours, ul_args = split_settings(merged(DEFAULTS, settings))
    if ul_args.get("data") is None:
        raise ConfigError(
            "data=... is required (a data.yaml; try `defectdet synth --out data/synth` for a demo set)"
        )
    ul_args = check_numbers(ul_args)  # bad values fail before the data check
    threads = check_threads(ours.pop("threads", None))
    checked = check_recipe({k: ours.pop(k) for k in RECIPE_KEYS if k in ours})
    from .data.paste import load_roi

    roi = load_roi(checked["paste_roi"])  # read once; a bad mask fails now, not in a data-loader worker
    ul_args["data"] = _check_data(ul_args["data"], bool(ours.pop("strict", True)), ul_args.get("imgsz"))
    imgsz = training_imgsz(ul_args)
    recipe, stats = resolve_recipe(
        checked, ul_args["data"], imgsz, need_stats=ours.get("cls_loss", DEFAULT_CLS_LOSS) == "auto"
    )
    loss = resolve_loss(ours, ul_args, stats)
    ul_args.setdefault("name", loss["cls_loss"])
    device = str(
        ul_args.get("device")
        if ul_args.get("device") is not None
        else ("0" if torch.cuda.is_available() else "cpu")
    )
    ul_args.setdefault("amp", device.lower() not in ("cpu", "mps"))  # explicit: no AMP self-check download
    from ultralytics import YOLO

    yolo = YOLO(model_path(ul_args.pop("model")), task="detect")
    guard = NonFiniteLossGuard()
    yolo.add_callback(
        "on_pretrain_routine_end", ClsLossCallback(loss["cls_loss"], loss["gamma"], loss["alpha"])
    )
    info = RunInfo(
        cls_loss=loss["cls_loss"],
        gamma=loss["gamma"],
        alpha=loss["alpha"],
        cls=loss["cls"],
        data=str(ul_args["data"]),
        imgsz=imgsz,
        recipe=recipe,
        data_stats=data_summary(stats),
        threads=threads if device.lower() == "cpu" else None,
    )  # CPU training threads (CpuThreads)
    yolo.add_callback("on_pretrain_routine_end", RunInfoCallback(info))
    yolo.add_callback("on_pretrain_routine_start", CpuThreads(threads))
    yolo.add_callback("on_pretrain_routine_start", TrainDataCallback(recipe, roi))
    yolo.add_callback("on_train_epoch_start", guard.on_epoch_start)
    yolo.add_callback("on_train_batch_end", guard.on_batch_end)
    for event, fns in (callbacks or {}).items():
        for fn in fns:
            yolo.add_callback(event, fn)
    return yolo, ul_args, loss


def train(callbacks: Optional[dict[str, list]] = None, **settings: Any) -> Path:
    """Train a detector; keys are ultralytics training arguments plus cls_loss, gamma, alpha, strict,
    threads.

    ``callbacks`` maps ultralytics callback events to extra functions (logging, early stops).
    Returns the run folder (``weights/best.pt``, ``weights/last.pt``, ``results.csv``,
    ``defectdet.yaml``).
    """
    yolo, ul_args, loss = prepare(callbacks, **settings)
    print(
        f"defectdet train: cls_loss={loss['cls_loss']} gamma={loss['gamma']} alpha={loss['alpha']} "
        f"cls={loss['cls']}"
    )
    from .trainer import DefectdetTrainer

    yolo.train(trainer=DefectdetTrainer, **ul_args)
    return Path(yolo.trainer.save_dir)


def _check_data(data, strict: bool, imgsz) -> str:
    """Validate the dataset first (as `defectdet data check` does) and return a YOLO data.yaml that
    ultralytics reads as the user meant (COCO/VOC converted, relative paths resolved, bad images
    skipped only with strict=False)."""
    from .data.validate import checked_data

    p = Path(str(data))
    if not p.exists():
        raise ConfigError(f"{p}: dataset not found (expected a data.yaml, a COCO json or a VOC folder)")
    return str(Path(checked_data(p.resolve(), strict=strict, imgsz=imgsz)).resolve())


def load_settings(config: Optional[str], overrides: list[str]) -> dict[str, Any]:
    """--config file (or preset name from configs/train/) overlaid with key=value overrides."""
    base = load_yaml(resolve_config(config, "train")) if config else {}
    return merged(base, parse_overrides(overrides))


def final_metrics(run: Path) -> dict[str, float]:
    """The last row of ``results.csv`` as {column: value}."""
    import csv

    with open(run / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {k.strip(): float(v) for k, v in rows[-1].items()} if rows else {}


def cli(argv: list[str]) -> int:
    from .errors import exit_statuses
    from .settings.options import key_help

    ap = argparse.ArgumentParser(
        prog="defectdet train",
        description="Train with a focal-family loss. Keys are ultralytics training arguments (model, data, "
        "imgsz, epochs, batch, device, seed, ...) plus defectdet's loss and rare-defect recipe keys, listed "
        "below with their defaults (values and ranges: docs/settings.md).",
        **exit_statuses(
            (0, "trained (the run folder and its final metrics printed)"),
            before="keys defectdet adds or checks (key=default):\n" + key_help(TRAIN),
        ),
    )
    ap.add_argument(
        "--config", help="YAML file or preset name in configs/train/ (bce, focal, focal_mild, ...)"
    )
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    a = ap.parse_args(argv)
    run = train(**load_settings(a.config, a.overrides))
    m = final_metrics(run)
    print(f"run: {run}")
    print("  ".join(f"{k.split('/')[-1]}={m[k]:.4f}" for k in m if k.startswith("metrics/")))
    return 0
