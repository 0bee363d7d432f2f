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


def _install_fonts(user_dir: Path) -> None:
    """ultralytics looks for Arial.ttf (Arial.Unicode.ttf for non-ASCII class names) in its user
    config dir and downloads it when missing. matplotlib ships DejaVuSans.ttf; a copy under each
    name satisfies the check offline."""
    try:
        import matplotlib
    except ImportError:  # no plots possible then; ultralytics logs and goes on
        return
    src = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    if not src.exists():
        return
    user_dir.mkdir(parents=True, exist_ok=True)
    for name in ("Arial.ttf", "Arial.Unicode.ttf"):
        target = user_dir / name
        if not target.exists():
            tmp = target.with_name(f".{name}.tmp")
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
        os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")
    import ultralytics
    from ultralytics.utils import SETTINGS, USER_CONFIG_DIR

    if not _DONE:
        _install_fonts(Path(USER_CONFIG_DIR))
        _patch_amp_check()
        updates = {k: v for k, v in (("sync", False), ("hub", False)) if k in SETTINGS and SETTINGS[k] != v}
        if updates:
            SETTINGS.update(updates)
        _DONE = True
    return ultralytics


def _offline_check_amp(model) -> bool:
    """Stand-in for ultralytics' check_amp, which downloads reference weights to compare FP32 and
    AMP outputs. Offline there is nothing to compare against: trust the user's ``amp`` setting on
    CUDA (ultralytics' own answer on CPU/MPS is False)."""
    import torch

    device = next(model.parameters()).device
    if device.type in {"cpu", "mps"}:
        return False
    print(f"AMP: enabled on {torch.cuda.get_device_name(device)} (offline: reference-weights check skipped)")
    return True


def _patch_amp_check() -> None:
    from ultralytics.engine import trainer

    trainer.check_amp = _offline_check_amp
