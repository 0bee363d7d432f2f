"""``defectdet train``: the keys defectdet adds to ultralytics' training arguments, and the ultralytics
arguments whose values defectdet checks, declared once.

Every other ultralytics training argument (``hsv_h``, ``mosaic``, ``device``, ...) is passed through
as ultralytics documents it; an unknown key is refused by ``defectdet.train.split_settings``.
``defectdet.train`` checks the ultralytics keys below through :data:`TRAIN` (one-line errors:
``epochs=0: expected an integer >= 1``); the loss and recipe keys are checked where they are used
(``train.check_loss_args``, ``recipe.check_recipe``), against the same ranges.
``tests/test_settings_schema.py`` keeps this list, the keys ``train`` accepts, the recipe's defaults and
``docs/settings.md`` in step.
"""

from __future__ import annotations

from typing import Any

from . import ULTRALYTICS, Key, Range, Schema


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _batch(v: Any) -> bool:
    return (_int(v) and (v >= 1 or v == -1)) or (isinstance(v, float) and 0 < v < 1)


_P = Range(float, 0, 1, note="a probability, 0 = off")

# ultralytics' arguments whose bad values would otherwise end in a traceback or be silently bent
# (imgsz=-5 trains at 32), and the two whose defaults defectdet sets.
ULTRALYTICS_KEYS = [
    Key(
        "model",
        "yolo11n.yaml",
        "a model yaml (from scratch), a .pt to fine-tune, or a defectdet model "
        "by name (defectdet-pico.yaml: configs/models/)",
        kind=str,
    ),
    Key("project", "runs/train", "where run folders go (<project>/<name>)", kind=str),
    Key("epochs", ULTRALYTICS, "training epochs", range=Range(int, 1)),
    Key(
        "imgsz",
        ULTRALYTICS,
        "training image size (the window size under crop=native)",
        range=Range(int, 32, note="pixels, a multiple of 32"),
    ),
    Key(
        "batch",
        ULTRALYTICS,
        "images per batch",
        test=_batch,
        expected="a whole number >= 1, -1 (auto) or a GPU memory fraction in (0, 1)",
    ),
    Key("workers", ULTRALYTICS, "data-loader workers", range=Range(int, 0)),
    Key("seed", ULTRALYTICS, "training seed", range=Range(int, 0)),
    Key(
        "lr0",
        ULTRALYTICS,
        "initial learning rate (ignored by optimizer=auto, as in ultralytics)",
        range=Range(float, 0, open_low=True),
    ),
    Key("patience", ULTRALYTICS, "epochs without improvement before stopping early", range=Range(int, 0)),
    Key(
        "optimizer",
        ULTRALYTICS,
        "auto: on a short from-scratch run, AdamW at lr0 0.003 with a step every "
        "batch (nbs = batch); else ultralytics' own choice",
        kind=str,
    ),
]

# The keys defectdet adds (defectdet.train.DEFECTDET_KEYS).
DEFECTDET_KEYS = [
    Key(
        "cls_loss",
        "auto",
        "the classification loss; auto: the focal preset the data's anchor imbalance calls for",
        choices=("auto", "bce", "focal", "qfl", "vfl"),
    ),
    Key(
        "gamma",
        None,
        "focusing exponent; null: the loss's (or auto's preset's) default",
        range=Range(float, 0, nullable=True),
    ),
    Key(
        "alpha",
        None,
        "weight of positives; null: the loss's (or auto's preset's) default",
        range=Range(float, 0, 1, nullable=True),
    ),
    Key("strict", True, "refuse a dataset with errors; false: skip bad images and count them", kind=bool),
    Key(
        "threads",
        None,
        "CPU training threads; null or auto: every core",
        expected="a whole number >= 1 (CPU training threads) or auto",
    ),
    Key(
        "sampling",
        "auto",
        "which images an epoch draws; auto: defect when defective images are fewer than "
        "defect_fraction, else uniform",
        choices=("auto", "uniform", "defect", "repeat"),
    ),
    Key(
        "defect_fraction",
        0.5,
        "share of defective images per epoch under sampling=defect",
        range=Range(float, 0, 1, open_low=True, open_high=True, note="e.g. 0.5"),
    ),
    Key(
        "repeat_thresh",
        None,
        "LVIS repeat-factor threshold under sampling=repeat; null: 0.1",
        range=Range(float, 0, 1, open_low=True, nullable=True, note="e.g. 0.1"),
    ),
    Key("paste", 0.0, "probability that a defect-free training image receives pasted defects", range=_P),
    Key(
        "paste_max",
        3,
        "most defects pasted onto one image",
        range=Range(int, 1, note="defects pasted per image"),
    ),
    Key("paste_roi", None, "mask image, white where defects may be pasted; null: anywhere", kind=str),
    Key(
        "crop",
        "auto",
        "native: train on imgsz windows cut at native scale; auto: native when the images' "
        "median longer side is >= 1.5 x imgsz",
        choices=("auto", "off", "native"),
    ),
    Key("rot90", 0.0, "probability of a random quarter turn of a training image", range=_P),
]

TRAIN = Schema("train", ULTRALYTICS_KEYS + DEFECTDET_KEYS)
