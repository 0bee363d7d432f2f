"""The one place that prepares ultralytics for offline use.

ultralytics reaches for the network in several places: settings sync / analytics, the Arial.ttf
font check during train/val (even with plots=False), auto-install of missing requirements and,
on CUDA, the AMP check that downloads weights. Call :func:`setup_ultralytics` before the first
``import ultralytics`` anywhere in defectdet; it is idempotent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_DONE = False


def config_dir() -> Path:
    """Where ultralytics keeps settings and fonts: ``$YOLO_CONFIG_DIR`` if the user set one, else
    ``$DEFECTDET_HOME/ultralytics`` (default ``~/.cache/defectdet/ultralytics``)."""
    if os.environ.get("YOLO_CONFIG_DIR"):
        return Path(os.environ["YOLO_CONFIG_DIR"])
    home = Path(os.environ.get("DEFECTDET_HOME", Path.home() / ".cache" / "defectdet"))
    return home / "ultralytics"


def _install_font(cfg: Path) -> None:
    """ultralytics checks for Arial.ttf in its config dir and downloads it when missing.
    matplotlib ships DejaVuSans.ttf; a copy under that name satisfies the check offline."""
    target = cfg / "Arial.ttf"
    if target.exists():
        return
    try:
        import matplotlib
    except ImportError:  # plots are then impossible anyway; ultralytics will log, not crash
        return
    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if src.exists():
        tmp = target.with_suffix(".ttf.tmp")
        shutil.copyfile(src, tmp)
        os.replace(tmp, target)


def setup_ultralytics():
    """Set the environment so ultralytics never touches the network, then import and return it."""
    global _DONE
    if not _DONE:
        cfg = config_dir()
        cfg.mkdir(parents=True, exist_ok=True)
        os.environ["YOLO_CONFIG_DIR"] = str(cfg)
        os.environ.setdefault("YOLO_OFFLINE", "1")
        os.environ.setdefault("YOLO_AUTOINSTALL", "False")
        os.environ.setdefault("YOLO_VERBOSE", os.environ.get("YOLO_VERBOSE", "True"))
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
        _install_font(cfg)
    import ultralytics
    from ultralytics.utils import SETTINGS

    if not _DONE:
        updates = {k: v for k, v in (("sync", False), ("hub", False)) if k in SETTINGS and SETTINGS[k] != v}
        if updates:
            SETTINGS.update(updates)
        _DONE = True
    return ultralytics
