"""``defectdet inspect --model M --source S [--out DIR] [--config configs/inspect.yaml] [key=value ...]``.

The live inspection loop on the line. Settings come, later winning, from the built-in defaults
(:data:`DEFAULTS`, documented field by field in ``configs/inspect.yaml``), the ``--config`` file,
``key=value`` overrides (nested keys dotted: ``snapshots.quota_mb=100``) and the flags. Config ->
keyword arguments happens here and, for the outputs, in :mod:`.registry`; the library classes take plain
arguments.

Everything the run writes goes under ``--out`` (default ``runs/inspect/<UTC time>``):
``events.jsonl`` (created at start), ``snapshots/``, ``annotated.mp4`` when recording, and
``summary.json`` at the end (also printed). Exit status (:mod:`.health`): 0 ok; 1 the source failed
for good (``give_up_s``), so a service manager restarts the run; 2 bad input; 3 degraded — the run
ended but did not record everything (``summary.json``'s ``degraded_reasons``, also on stderr).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Mapping

from ..config import CONFIGS_DIR, load_yaml, parse_overrides
from ..errors import ConfigError, exit_statuses
from .bundled import resolve_model
from .health import EXIT_ROWS, exit_status
from .registry import build_sinks, sink_defaults
from .safety import LineSafety, check_policy, new_run_id
from .settings import check_numbers

LOG = logging.getLogger("defectdet.inspect")

# Every key of configs/inspect.yaml, with its default (keep the two in step: a test compares them).
# The outputs' sections (events, snapshots, record, display, signals.*) come from the sink registry.
DEFAULTS: dict[str, Any] = {
    "model": None,
    "source": None,
    "out": None,
    "backend": "auto",
    "build_engine": False,
    "threads": None,
    "conf": 0.25,
    "iou": 0.7,
    "max_det": 100,
    "thresholds": None,
    "tta": "none",
    "tiles": None,
    "tile_overlap": 0.2,
    "max_frames": 0,
    "duration": 0.0,
    "status_every": 5.0,
    "pipeline": True,
    "capture": {"queue": 4, "backoff_s": 0.5, "backoff_max_s": 10.0, "give_up_s": 60.0, "stall_s": 5.0},
    "decision": {"roi": None, "roi_units": "fraction", "debounce_k": 1, "debounce_n": 1},
    "plc": {
        "on_failure": "alarm"
    },  # a missed reject: alarm (keep inspecting) | stop (stop inspecting, drop ready)
    **sink_defaults(),
}
DEFAULTS["signals"] = {
    "trigger": "edge",
    **DEFAULTS["signals"],
}  # the loop's edge/frame rule, beside the outputs


def merge_config(
    base: Mapping[str, Any], layer: Mapping[str, Any], where: str, prefix: str = ""
) -> dict[str, Any]:
    """``base`` updated by ``layer`` recursively; a key ``base`` lacks raises ConfigError naming ``where``."""
    out = copy.deepcopy(dict(base))
    for key, value in layer.items():
        if not isinstance(key, str):
            raise ConfigError(
                f"{where}: key {key!r} under {prefix or 'the top level'!r} is not a name (quote it in YAML)"
            )
        if "." in key:  # dotted override: snapshots.quota_mb=100
            head, rest = key.split(".", 1)
            value, key = {rest: value}, head
        if key not in out:
            raise ConfigError(
                f"{where}: unknown key {prefix + key!r}; expected one of {', '.join(prefix + k for k in out)}"
            )
        if isinstance(out[key], dict):
            if not isinstance(value, Mapping):
                raise ConfigError(f"{where}: {prefix + key!r} must be a mapping of {', '.join(out[key])}")
            out[key] = merge_config(out[key], value, where, f"{prefix}{key}.")
        else:
            out[key] = value
    return out


def load_config(config: str | None, overrides: list[str], flags: Mapping[str, Any]) -> dict[str, Any]:
    """DEFAULTS <- config file <- key=value overrides <- flags that were given; numeric values checked."""
    cfg = DEFAULTS
    path = Path(config) if config else CONFIGS_DIR / "inspect.yaml"
    if config or path.is_file():
        cfg = merge_config(cfg, load_yaml(path, kind="inspect config"), str(path))
    cfg = merge_config(cfg, parse_overrides(overrides), "command line")
    cfg = check_numbers(merge_config(cfg, {k: v for k, v in flags.items() if v is not None}, "command line"))
    check_policy(cfg["plc"]["on_failure"])
    return cfg


def default_out() -> Path:
    base = Path("runs") / "inspect" / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="defectdet inspect", description=__doc__.split("\n\n")[1].strip(), **exit_statuses(*EXIT_ROWS)
    )
    ap.add_argument(
        "--model",
        help="model.bundle (defectdet package), or an exported .onnx (ONNX Runtime) / .engine (TensorRT)",
    )
    ap.add_argument(
        "--source",
        help="0, /dev/video0, csi://0?width=1920&height=1080&fps=30, rtsp://..., a video, a folder, synthetic://",
    )
    ap.add_argument("--out", help="output folder (default runs/inspect/<UTC time>)")
    ap.add_argument("--config", help="inspect YAML (default configs/inspect.yaml when present)")
    ap.add_argument("--max-frames", type=int, help="stop after this many frames")
    ap.add_argument("--duration", type=float, help="stop after this many seconds")
    ap.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"))
    ap.add_argument("--thresholds", help="per-class thresholds YAML (defectdet val --target-escape)")
    ap.add_argument(
        "--show", action="store_true", default=None, help="open a window (only when a display exists)"
    )
    ap.add_argument(
        "--serve",
        nargs="?",
        const="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="the operator page (default 127.0.0.1:8080; beyond loopback set page.token_env)",
    )
    ap.add_argument(
        "--review",
        action="store_true",
        default=None,
        help="queue NG parts, near misses and an audit sample for review (review.* settings)",
    )
    ap.add_argument(
        "--shadow",
        metavar="CANDIDATE",
        help="run a candidate model (model.bundle, .onnx or .engine) beside the live one, driving "
        "nothing (shadow.jsonl; defectdet compare <out>)",
    )
    ap.add_argument(
        "overrides",
        nargs="*",
        help="key=value settings, e.g. snapshots.quota_mb=100 signals.stdout.enabled=true",
    )
    return ap


def _setup_logging() -> None:
    if not LOG.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s inspect %(levelname)s %(message)s", "%H:%M:%S"))
        LOG.addHandler(handler)
        LOG.setLevel(logging.INFO)
        LOG.propagate = False


def cli(argv: list[str]) -> int:
    """Entry point of ``defectdet inspect``."""
    a = _parser().parse_intermixed_args(argv)  # key=value overrides may sit between the flags
    flags = {
        "model": a.model,
        "source": a.source,
        "out": a.out,
        "max_frames": a.max_frames,
        "duration": a.duration,
        "backend": a.backend,
        "thresholds": a.thresholds,
        "display": {"show": True} if a.show else None,
        "page": {"enabled": True, "bind": a.serve} if a.serve else None,
        "review": {"enabled": True} if a.review else None,
        "shadow": {"model": a.shadow} if a.shadow else None,
    }
    cfg = load_config(a.config, a.overrides, flags)
    for key in ("model", "source"):
        if cfg[key] in (None, ""):
            raise ConfigError(f"--{key} is required (or set '{key}:' in the config)")
    _setup_logging()
    summary = run(cfg)
    print(json.dumps(summary, indent=1, default=str))
    if summary.get("degraded"):
        print(f"defectdet inspect: run degraded: {'; '.join(summary['degraded_reasons'])}", file=sys.stderr)
    return exit_status(summary)


def run(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Build the detector, source, decider and sinks from a merged config and run the loop."""
    from ..runtime import Detector
    from .capture import FrameSource
    from .decisions import Decider
    from .loop import InspectionLoop, install_signal_handlers
    from .pipeline import PipelinedLoop

    for key in ("pipeline", "build_engine"):
        if not isinstance(cfg[key], bool):
            raise ConfigError(f"{key}={cfg[key]!r}: expected on (true) or off (false)")
    res = resolve_model(
        cfg["model"], cfg["backend"], cfg["build_engine"]
    )  # a bundle: its file for this device
    if res.note:
        (LOG.warning if res.backend == "onnxruntime" and cfg["backend"] != "onnxruntime" else LOG.info)(
            "%s", res.note
        )
    out = Path(cfg["out"]) if cfg["out"] else default_out()
    c, d = cfg["capture"], cfg["decision"]
    source = FrameSource(
        str(cfg["source"]),
        queue_size=c["queue"],
        backoff_s=c["backoff_s"],
        backoff_max_s=c["backoff_max_s"],
        give_up_s=c["give_up_s"],
        stall_s=c["stall_s"],
    )
    safety = LineSafety(cfg["plc"]["on_failure"], ready_s=c["stall_s"])
    extra = {"threads": int(cfg["threads"])} if cfg["threads"] else {}
    with Detector(
        res.model,
        backend=res.backend,
        conf=cfg["conf"],
        iou=cfg["iou"],  # it checks their ranges
        thresholds=cfg["thresholds"],
        max_det=cfg["max_det"],
        tta=cfg["tta"],  # test-time flips and tiles: it checks them too
        tiles=cfg["tiles"],
        overlap=cfg["tile_overlap"],
        **extra,
    ) as det:
        decider = Decider(
            det.names,
            thresholds=det.operating,
            roi=d["roi"],
            roi_units=d["roi_units"],
            debounce_k=d["debounce_k"],
            debounce_n=d["debounce_n"],
        )
        loop: Any = None  # the window's q/Esc stops the loop built just below; servers read its summary
        mid, run_id = (
            res.model_id,
            new_run_id(),
        )  # the run's id: events, tally, snapshots, review items, summary
        info = {
            "model": mid,
            "run_id": run_id,
            "source": source.spec.uri,
            "names": [det.names[i] for i in sorted(det.names)],
            "conf": float(cfg["conf"]),
            "thresholds": det.operating.by_name(ndigits=4),
            "decision": dict(d),
            "views": {"tta": det.tta, "tiles": _tiles_text(det.tiles), "tile_overlap": det.overlap},
            **res.info,
        }
        if cfg["review"][
            "enabled"
        ]:  # near misses must reach the review queue: the detector keeps them, the decider not
            from .review import detector_floor

            det.thresholds = detector_floor(decider.thresholds, cfg["review"]["near_band"])
        sinks = build_sinks(
            cfg,
            out,
            live=source.spec.live,
            stop=lambda reason: loop.request_stop(reason),
            status=lambda: loop.summary() if loop is not None else {},
            info=info,
            safety=safety,
            thresholds=det.operating,
        )
        _make_out(out)  # only now: a refused start (bad key, model, output setting) leaves no empty folder
        loop_class = PipelinedLoop if cfg["pipeline"] else InspectionLoop
        loop = loop_class(
            det,
            source,
            decider,
            sinks,
            signal_on=cfg["signals"]["trigger"],
            max_frames=int(cfg["max_frames"] or 0),
            duration=float(cfg["duration"] or 0),
            status_every=float(cfg["status_every"]),
            model_id=mid,
            out_dir=out,
            safety=safety,
            run_id=run_id,
        )
        LOG.info(
            "inspecting %s with %r -> %s (run %s, plc.on_failure=%s)",
            source.spec.uri,
            det,
            out,
            loop.run_id,
            safety.on_failure,
        )
        restore = install_signal_handlers(loop)
        try:
            return loop.run()
        finally:
            restore()


def _tiles_text(tiles: Any) -> Any:
    """The Detector's tiles as the settings write them: null, native or ROWSxCOLS."""
    return f"{tiles[0]}x{tiles[1]}" if isinstance(tiles, tuple) else tiles


def _make_out(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # keep inspecting: decisions and reject signals matter more than the log
        LOG.error(
            "output folder %s cannot be created (%s); events/snapshots will fail, inspection goes on", out, e
        )
