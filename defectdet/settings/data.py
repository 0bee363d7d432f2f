"""The options of ``defectdet synth`` and ``defectdet data check|stats|convert|harvest``, declared once;
each (sub)command builds its argparse parser from its schema here."""

from __future__ import annotations

from . import Key, Range, Schema

_DATA = "data.yaml, COCO .json or VOC folder"
_PX = Range(int, 1, note="pixels")
_VAL_SHARE = Range(float, 0, 1, open_high=True)

SYNTH = Schema(
    "synth",
    [
        Key("out", None, "output folder (created)", kind=str, required=True),
        Key("images", 500, "number of parts", range=Range(int, 2, note="one train and one val part")),
        Key("defect_rate", 0.1, "fraction of defective parts", range=Range(float, 0, 1)),
        Key("imgsz", 320, "image side in pixels", range=Range(int, 32, note="pixels")),
        Key("seed", 0, "the generator's seed", range=Range(int, 0)),
        Key("val_fraction", 0.2, "share of the parts in val", range=_VAL_SHARE),
        Key("video_frames", 120, "conveyor video length (0: no video)", range=Range(int, 0)),
        Key(
            "defect_scale",
            1.0,
            "defect size multiplier (1.0: small defects)",
            range=Range(float, 0, open_low=True),
        ),
    ],
)

DATA_CHECK = Schema(
    "data check",
    [
        Key("data", None, _DATA, kind=str, positional=True),
        Key("imgsz", None, "training size: warn about boxes too small at it", range=_PX),
        Key("errors_only", False, "do not print warnings", kind=bool),
    ],
)

DATA_STATS = Schema(
    "data stats",
    [
        Key("data", None, _DATA, kind=str, positional=True),
        Key("imgsz", 640, "training image size", range=_PX),
        Key("strides", "8,16,32", "detection strides, comma-separated", kind=str),
        Key("out", None, "folder for stats.txt/json/png (default runs/data/<name>)", kind=str),
    ],
)

DATA_CONVERT = Schema(
    "data convert",
    [
        Key("src", None, "COCO json or folder, VOC folder, or data.yaml", kind=str, positional=True),
        Key("fmt", None, "source format", choices=("coco", "voc", "yolo"), flag="--from", required=True),
        Key("to", "yolo", "target format", choices=("yolo", "coco", "voc")),
        Key("out", None, "output folder (new or empty)", kind=str, required=True),
        Key("copy", False, "copy images instead of symlinking them", kind=bool),
        Key("images", None, "COCO: the folder file_name is relative to (auto-detected)", kind=str),
        Key("names", None, "VOC: class order, comma-separated (default classes.txt or A-Z)", kind=str),
        Key("val_fraction", 0.2, "val share when the source has no split", range=_VAL_SHARE),
    ],
)

DATA_HARVEST = Schema(
    "data harvest",
    [
        Key(
            "runs",
            None,
            "station run folders (defectdet inspect --review)",
            kind=str,
            flag="--from",
            nargs="+",
            required=True,
        ),
        Key(
            "out",
            None,
            "the harvested data set's folder (created; harvesting again appends)",
            kind=str,
            required=True,
        ),
        Key("merge", None, "an existing data.yaml: train on it plus the harvest, val on its val", kind=str),
        Key("merge_val", False, "with --merge: add the hash-chosen share to val too", kind=bool),
        Key("val_fraction", 0.2, "share of new images for val", range=_VAL_SHARE),
    ],
)
