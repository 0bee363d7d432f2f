"""The options of ``defectdet export``, ``quantize``, ``gate``, ``build-engine`` and ``package``, declared
once: each command builds its argparse parser from its schema here
(:func:`defectdet.settings.options.parser`), and ``docs/settings.md`` lists them."""

from __future__ import annotations

from . import Key, Range, Schema

_INT1 = Range(int, 1)
_POINTS = Range(float, 0, note="percentage points")
_RATE = Range(float, 0, 1, open_high=True, note="an escape rate")

EXPORT = Schema(
    "export",
    [
        Key(
            "model",
            None,
            "ultralytics .pt checkpoint (e.g. runs/detect/focal/weights/best.pt)",
            kind=str,
            required=True,
        ),
        Key(
            "imgsz",
            None,
            "input size N or H W (default: the training size stored in the checkpoint)",
            range=Range(int, 1, note="pixels"),
            nargs="+",
            metavar="N",
        ),
        Key("opset", 17, "ONNX opset (TensorRT 8.5/8.6 parse <= 17)", kind=int),
        Key("half", False, "FP16-typed graph (FP32 I/O) for TensorRT 11's strongly typed FP16", kind=bool),
        Key(
            "out",
            None,
            "output .onnx (default: model.onnx / model.fp16.onnx next to the checkpoint)",
            kind=str,
        ),
        Key(
            "input_dtype",
            "float32",
            "image input type: float32 (RGB in [0, 1], what ultralytics exports) or uint8 (the letterboxed "
            "BGR frame as it is; /255, channel order and layout change in the graph)",
            choices=("float32", "uint8"),
            flag="--input",
        ),
        Key(
            "input_layout",
            "nhwc",
            "with --input uint8: NHWC (B, H, W, 3), the OpenCV image, or NCHW planes",
            choices=("nhwc", "nchw"),
        ),
        Key("simplify", True, "skip onnxslim", kind=bool),
        Key("parity", True, "skip the ONNX vs PyTorch comparison", kind=bool),
    ],
)

# The accuracy gate's options: `defectdet gate` and `defectdet quantize` (its last step).
GATE_KEYS = [
    Key("max_drop", 1.0, "largest mAP50 drop, points", range=_POINTS, group="accuracy gate"),
    Key(
        "max_class_drop",
        2.0,
        "largest per-class recall drop (AP50 with --recalibrate), points",
        range=_POINTS,
        group="accuracy gate",
    ),
    Key(
        "max_escape_rise", 1.0, "largest part escape-rate rise, points", range=_POINTS, group="accuracy gate"
    ),
    Key(
        "max_overkill_rise",
        2.0,
        "largest part overkill-rate rise with --recalibrate, points",
        range=_POINTS,
        group="accuracy gate",
    ),
    Key(
        "gate_confidence",
        0.9,
        "refuse a loss over its limit only when this paired-bootstrap interval over the val images lies "
        "above zero (0 = the point estimates alone)",
        kind=float,
        expected="0 or a level in [0.5, 1)",
        group="accuracy gate",
    ),
    Key(
        "thresholds",
        None,
        "thresholds YAML (defectdet val --target-escape or --target-overkill) for both models",
        kind=str,
        group="accuracy gate",
    ),
    Key(
        "recalibrate",
        None,
        "calibrate each model's own thresholds on val for this escape rate (e.g. 0.01) and compare there; "
        "the INT8 thresholds go to <int8>.thresholds.yaml and its sidecar",
        kind=float,
        expected="null or a target escape rate in [0, 1)",
        metavar="ESCAPE",
        group="accuracy gate",
    ),
    Key(
        "recalibrate_overkill",
        None,
        "instead of --recalibrate: each model's one part threshold set from the val good parts for this "
        "overkill rate (defectdet val --target-overkill), compared there",
        range=Range(float, 0, 1, open_low=True, open_high=True, note="an overkill rate"),
        metavar="OVERKILL",
        group="accuracy gate",
    ),
    Key(
        "recalibrate_confidence",
        None,
        "with --recalibrate-overkill: meet it with this confidence (e.g. 0.9)",
        range=Range(float, 0.5, 1, open_high=True, note="a probability"),
        group="accuracy gate",
    ),
    Key(
        "escape_rule",
        "box",
        "what catches a defective part in the escape rate and the calibration: box (a correct detection) "
        "or any (any detection, as the inspection loop rejects)",
        choices=("box", "any"),
        group="accuracy gate",
    ),
    Key(
        "max_images",
        None,
        "evaluate an evenly spaced subset of val (quick check)",
        range=_INT1,
        group="accuracy gate",
    ),
    Key(
        "force",
        False,
        "accept the INT8 model even when the gate refuses it",
        kind=bool,
        group="accuracy gate",
    ),
]

GATE = Schema(
    "gate",
    [
        Key("fp32", None, "the FP32 model.onnx", kind=str, required=True),
        Key("int8", None, "the INT8 model.int8.onnx", kind=str, required=True),
        Key("data", None, "data.yaml (its val split is evaluated)", kind=str, required=True),
        *GATE_KEYS,
    ],
)

QUANTIZE = Schema(
    "quantize",
    [
        Key("model", None, "FP32 model.onnx from `defectdet export`", kind=str, required=True),
        Key("data", None, "data.yaml: calibration from --split, gate on val", kind=str, required=True),
        Key("calib_images", 500, "calibration images", range=_INT1),
        Key(
            "method",
            "entropy",
            "activation range calibration",
            choices=("entropy", "minmax", "percentile"),
        ),
        Key(
            "target",
            "tensorrt",
            "tensorrt: Q/DQ on conv inputs (what TensorRT builds from); cpu: onnxruntime's integer-kernel "
            "form for CPU deployment",
            choices=("tensorrt", "cpu"),
        ),
        Key(
            "keep_float",
            "auto",
            "nodes left in float: auto (detection head outputs), none, or names",
            kind=str,
        ),
        Key(
            "float_sensitive",
            0,
            "also keep in float the N convs whose quantized input is noisiest on the calibration images "
            "(mixed precision; docs/export.md)",
            range=Range(int, 0),
        ),
        Key("split", "train", "split the calibration images come from", kind=str),
        Key("defect_fraction", 0.5, "share of defective calibration images", range=Range(float, 0, 1)),
        Key("seed", 0, "calibration sampling seed", range=Range(int, 0)),
        Key("out", None, "output (default: <model>.int8.onnx beside the model)", kind=str),
        Key("gate", True, "skip the accuracy gate (not for deployment)", kind=bool),
        *GATE_KEYS,
    ],
)

_BUNDLE = "bundle"
BUILD_ENGINE = Schema(
    "build-engine",
    [
        Key(
            "bundle",
            None,
            "a model.bundle from `defectdet package` (instead of --model)",
            kind=str,
            positional=True,
            nargs="?",
        ),
        Key("model", None, "model.onnx, model.fp16.onnx or model.int8.onnx (Q/DQ)", kind=str),
        Key("out", None, "engine path (default: <model stem>.engine beside the model)", kind=str),
        Key("fp16", False, "FP16 kernels (8.5-10.x flag; 11.x: needs export --half)", kind=bool),
        Key("int8", False, "INT8: explicit from a Q/DQ model, or implicit calibration (<= 10.x)", kind=bool),
        Key("workspace", 1024, "builder workspace limit in MiB", range=_INT1),
        Key(
            "dla_core",
            None,
            "run on this DLA core with GPU fallback (AGX/NX Orin, Xavier)",
            range=Range(int, 0),
        ),
        Key("calib_cache", None, "implicit INT8 calibration cache (read if present, else written)", kind=str),
        Key("calib_data", None, "implicit INT8: data.yaml whose train images calibrate", kind=str),
        Key("calib_images", 500, "implicit INT8 calibration images", range=_INT1),
        Key("shape", None, "NxCxHxW: the input shape of an ONNX with dynamic dims (its profile)", kind=str),
        Key("force", False, "build a Q/DQ model that has not passed the accuracy gate", kind=bool),
        Key("verbose", False, "TensorRT verbose log", kind=bool),
        Key("dry_run", False, "validate and print the plan and trtexec line; build nothing", kind=bool),
        Key("trt_version", None, "with --dry-run: plan for this TensorRT version (e.g. 10.3)", kind=str),
        Key(
            "precision",
            "auto",
            "auto (INT8 when the bundle has it, else FP16), int8, fp16, fp32",
            kind=str,
            group=_BUNDLE,
        ),
        Key(
            "cache_dir",
            None,
            "device cache folder (default <bundle>.cache beside the bundle)",
            kind=str,
            flag="--cache",
            group=_BUNDLE,
        ),
        Key("rebuild", False, "build even when the device cache has this engine", kind=bool, group=_BUNDLE),
    ],
)

PACKAGE = Schema(
    "package",
    [
        Key("model", None, "the trained checkpoint (runs/.../weights/best.pt)", kind=str, required=True),
        Key(
            "data",
            None,
            "data.yaml: val calibrates and gates; train calibrates INT8",
            kind=str,
            required=True,
        ),
        Key(
            "target_escape",
            None,
            "per-class thresholds calibrated on val for this escape rate under the line's rule, e.g. 0.01 "
            "(neither rate given: 0.01 where val has 100 defective parts or more, else --target-overkill "
            "0.05 --confidence 0.9, else 0.01 where val has fewer than 45 good parts)",
            range=Range(float, 0, 1, open_high=True, note="an escape rate"),
        ),
        Key(
            "target_overkill",
            None,
            "one part threshold set from the val good parts so that at most this share of them is rejected "
            "(defectdet val --target-overkill); neither rate given, 0.05 at 90% confidence where val has "
            "fewer than 100 defective parts and at least 45 good ones",
            range=Range(float, 0, 1, open_low=True, open_high=True, note="an overkill rate"),
        ),
        Key(
            "confidence",
            None,
            "with --target-overkill: meet it with this confidence, e.g. 0.9 (fewer good parts flagged on "
            "val, a margin for the line; without it, the split-conformal bound)",
            range=Range(float, 0.5, 1, open_high=True, note="a probability"),
        ),
        Key("int8", False, "also quantize to INT8 and gate it; it deploys if it passes", kind=bool),
        Key("out", None, "the bundle to write (default <checkpoint stem>.bundle beside it)", kind=str),
        Key("imgsz", None, "export size (default: the model's own)", range=Range(int, 1, note="pixels")),
        Key("calib_images", 200, "INT8 calibration images from train", range=_INT1),
        Key("method", "minmax", "INT8 activation ranges", choices=("entropy", "minmax", "percentile")),
        Key(
            "float_sensitive",
            0,
            "INT8: also keep in float the N convs whose quantized input is noisiest (defectdet quantize)",
            range=Range(int, 0),
        ),
    ],
)
