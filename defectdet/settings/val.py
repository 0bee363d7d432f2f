"""The options of ``defectdet val``, declared once: its argparse parser is built from :data:`VAL`, and its
``key=value`` overrides (``target_escape=0.01``) are these keys, checked the same way."""

from __future__ import annotations

from . import Key, Range, Schema

VAL = Schema(
    "val",
    [
        Key("model", None, "a .pt checkpoint or an .onnx model (FP32 or INT8 Q/DQ)", kind=str),
        Key("data", None, "data.yaml", kind=str),
        Key("split", "val", "split of data.yaml to evaluate", kind=str),
        Key("imgsz", None, "inference size (default: the model's own)", range=Range(int, 1, note="pixels")),
        Key("conf", 0.001, "confidence floor for collecting detections", range=Range(float, 0, 1)),
        Key("iou", 0.7, "NMS IoU", range=Range(float, 0, 1)),
        Key("device", "cpu", "cpu, 0, ...", kind=str),
        Key("max_images", None, "evaluate an evenly spaced subset of this many images", range=Range(int, 1)),
        Key(
            "thresholds",
            None,
            "operating thresholds: a thresholds YAML or one conf for all classes (default: each class at its "
            "max-F1 confidence)",
            kind=str,
        ),
        Key(
            "target_escape",
            None,
            "calibrate thresholds to this escape rate, e.g. 0.01",
            range=Range(float, 0, 1, open_high=True, note="an escape rate"),
        ),
        Key(
            "target_overkill",
            None,
            "with --threshold-rule part: set the one threshold from the good parts so that at most this "
            "share of them is rejected, e.g. 0.05 (escape is then measured, not calibrated)",
            range=Range(float, 0, 1, open_low=True, open_high=True, note="an overkill rate"),
        ),
        Key(
            "escape_rule",
            "box",
            "what catches a defective part in the escape count and the calibration: box (a correct "
            "detection: right class, IoU >= 0.5) or any (any detection, as the inspection loop rejects a "
            "part)",
            choices=("box", "any"),
        ),
        Key(
            "threshold_rule",
            "per-class",
            "with --target-escape: per-class thresholds or part (one threshold for every class on a part's "
            "highest score; few labels per class); --target-overkill needs part",
            choices=("per-class", "part"),
        ),
        Key(
            "confidence",
            None,
            "with --threshold-rule part: meet the target with this confidence (e.g. 0.9): an escape target "
            "over bootstrap resamples of the defective parts, an overkill target by a binomial bound over "
            "the good parts; a margin, paid in the other rate",
            range=Range(float, 0.5, 1, open_high=True, note="a probability, e.g. 0.9"),
        ),
        Key(
            "tta",
            "none",
            "test-time flips, as defectdet inspect's tta key: none, hflip (2 passes) or hvflip (3); an "
            ".onnx/.engine runs on the station's runtime, a .pt on ultralytics",
            choices=("none", "hflip", "hvflip"),
        ),
        Key(
            "tiles",
            None,
            "tiles, as defectdet inspect's tiles key: native (tiles of the model input's size) or "
            "ROWSxCOLS (e.g. 2x3); default off",
            kind=str,
        ),
        Key("tile_overlap", 0.2, "tile overlap, a fraction of a tile", range=Range(float, 0, 0.9)),
        Key("out", None, "report folder (default runs/val/<model name>)", kind=str),
        Key("thresholds_out", None, "thresholds YAML to write (default <out>/thresholds.yaml)", kind=str),
        Key(
            "write_sidecar",
            None,
            "also write the operating thresholds into this exported model's sidecar MODEL.json "
            "(the runtime's)",
            kind=str,
            metavar="MODEL.onnx",
        ),
    ],
)
