"""The options of ``defectdet demo``, declared once: the embedded default (why each value: the comment
above ``defectdet.demo.DEMO`` and docs/demo.md), its ranges and its ``--help``."""

from __future__ import annotations

from . import Key, Range, Schema

_INT1, _P = Range(int, 1), Range(float, 0, 1)

DEMO = Schema(
    "demo",
    [
        Key("out", "runs/demo", "output folder", kind=str),
        Key("images", 1040, "synthetic parts", range=Range(int, 2, note="one train and one val part")),
        Key(
            "val_fraction",
            0.4,
            "share of the parts in val (enough defects per class for the KPIs and the INT8 gate)",
            range=Range(float, 0, 1, open_low=True, open_high=True),
        ),
        Key("defect_rate", 0.15, "share of defective parts: mostly good parts, as on a line", range=_P),
        Key(
            "defect_scale",
            1.5,
            "defect size multiplier (1.0: 1-2 px scratches on a 320 px part, too faint to learn reliably)",
            range=Range(float, 0, 10, open_low=True),
        ),
        Key(
            "part_px",
            320,
            "the parts' image size; larger than imgsz: crop=auto trains on native-scale windows",
            range=Range(int, 32, note="pixels"),
        ),
        Key("imgsz", 160, "training image size", range=Range(int, 32, note="pixels")),
        Key("epochs", 30, "training epochs", range=_INT1),
        Key("batch", 16, "images per batch", range=_INT1),
        Key("model", "defectdet-pico.yaml", "the model (configs/models/ or an ultralytics yaml)", kind=str),
        Key(
            "cls_loss",
            "auto",
            "the classification loss (defectdet train's default) or a preset of configs/train/ "
            "(focal_mild, bce, ...)",
            kind=str,
        ),
        Key("sampling", "auto", "which images an epoch draws (defectdet train sampling=)", kind=str),
        Key(
            "paste", 0.5, "probability that a good part gets defects pasted from the defective ones", range=_P
        ),
        Key(
            "target_escape",
            0.05,
            "calibrate thresholds for at most this share of escaped defective parts",
            range=_P,
        ),
        Key(
            "calib_images",
            64,
            "INT8 calibration images from the train split, half of them defective",
            range=_INT1,
        ),
        Key(
            "quant_method",
            "minmax",
            "INT8 activation ranges (defectdet quantize --method; why: docs/demo.md)",
            choices=("entropy", "minmax", "percentile"),
        ),
        Key(
            "float_sensitive",
            4,
            "INT8: convs with the noisiest quantized input kept in float (defectdet quantize "
            "--float-sensitive; why: docs/demo.md)",
            range=Range(int, 0),
        ),
        Key("seed", 0, "the seed of the data, the training and the calibration", range=Range(int, 0)),
        Key(
            "threads",
            0,
            "CPU training threads",
            range=Range(int, 0, note="0: every core, defectdet train's default"),
        ),
    ],
)
