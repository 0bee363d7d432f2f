"""``defectdet <command> [args]``: a thin dispatcher with lazy imports.

Each command lives in its own module and exposes ``cli(argv: list[str]) -> int``; this file only
maps names to modules, so ``defectdet --help`` and the edge commands never import torch.
"""

from __future__ import annotations

import importlib
import sys

from .errors import DefectdetError

# name -> (module exposing cli(argv), one-line help). Keep in workflow order.
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("defectdet.demo", "synthetic rare-defect data -> focal training -> validation, end to end"),
    "synth": ("defectdet.data.synthetic", "write a synthetic rare-defect YOLO dataset (+ a video of parts)"),
    "data": (
        "defectdet.data.cli",
        "check a dataset (every problem, file:line), stats + focal preset, convert COCO/VOC",
    ),
    "train": ("defectdet.train", "train a detector with a focal-family classification loss"),
    "val": (
        "defectdet.evaluate",
        "mAP + part KPIs (escape, overkill) of a .pt/.onnx model; calibrate thresholds",
    ),
    "export": (
        "defectdet.export.onnx",
        "checkpoint -> static ONNX with metadata + sidecar JSON, parity vs PyTorch",
    ),
    "quantize": (
        "defectdet.export.quantize",
        "ONNX -> INT8 Q/DQ ONNX calibrated on defect images, then the accuracy gate",
    ),
    "gate": (
        "defectdet.export.gate",
        "FP32 vs INT8 ONNX on the CPU: refuse an mAP50 / per-class recall / escape drop",
    ),
    "package": (
        "defectdet.package",
        "best.pt -> export, calibrated thresholds, INT8 + gate -> one verified model.bundle",
    ),
    "checks": (
        "defectdet.checks",
        "can this machine run the station? versions, GPU/DLA, GStreamer, camera, disk (✔/✘)",
    ),
    "build-engine": (
        "defectdet.export.tensorrt",
        "bundle or ONNX -> TensorRT .engine on the Jetson (FP16 / INT8, DLA)",
    ),
    "inspect": (
        "defectdet.station.inspect_cli",
        "live inspection: camera/video/folder -> OK/NG, events, snapshots, reject signals",
    ),
    "review": (
        "defectdet.station.review_cli",
        "the review view of a finished run (confirm, correct, mark false rejects)",
    ),
    "compare": (
        "defectdet.compare",
        "a shadow model against the live one: agreement, escapes and overkill on reviewed frames",
    ),
    "report": (
        "defectdet.station.report",
        "shift report from inspection runs: yield, NG per class and per hour, top NG snapshots",
    ),
}

# What runs on Python 3.8 (JetPack 5): the torch-free station (inspect, its shift report), the engine
# builder and the device checks; the rest needs 3.9+. .ci/py38.sh runs their tests under a 3.8 interpreter.
PY38_COMMANDS = ("inspect", "report", "build-engine", "checks")


def _python() -> tuple[int, int]:
    return sys.version_info[:2]


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [
        "usage: defectdet <command> [options]   (defectdet <command> --help for details)",
        "",
        "commands:",
    ]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from . import __version__

        print(f"defectdet {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"defectdet: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    if _python() < (3, 9) and name not in PY38_COMMANDS:
        print(
            f"defectdet {name}: needs Python 3.9 or newer (this is {'.'.join(map(str, _python()))}); on "
            f"Python 3.8 (JetPack 5) defectdet runs {', '.join(PY38_COMMANDS[:-1])} and {PY38_COMMANDS[-1]} "
            "only — train, validate and export on a workstation",
            file=sys.stderr,
        )
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.cli(rest) or 0)
    except DefectdetError as e:
        print(f"defectdet {name}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"defectdet {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
