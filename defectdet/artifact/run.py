"""``<run>/defectdet.yaml``: what a training run resolved, as the typed :class:`RunInfo`.

``defectdet train`` resolves everything once before the first batch — the loss (``cls_loss=auto``
included), the data recipe (``sampling=auto``, ``crop=auto``, the native ``eval_imgsz``), the CPU
threads — and its callback adds the optimizer, ``lr0`` and ``nbs`` as ultralytics built them. The
export (the model card's ``cls_loss`` / ``recipe``), ``defectdet val`` and the demo (the size a
``crop=native`` model is evaluated and exported at) read it back from here; nothing else parses
the file. Files written before a key existed load with that key absent (None).

Torch-free: stdlib and pyyaml only.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Mapping, Optional

from ..config import dump_yaml, load_yaml
from ..errors import ConfigError

RUN_INFO_NAME = "defectdet.yaml"
# the recipe keys the model card carries (``recipe`` in the sidecar and the graph's metadata)
CARD_RECIPE_KEYS = ("sampling", "defect_fraction", "repeat_thresh", "paste", "rot90", "crop", "eval_imgsz")


@dataclass(frozen=True)
class Recipe:
    """The training-data recipe, resolved (:func:`defectdet.recipe.resolve_recipe`): no ``auto`` left;
    ``defect_fraction`` / ``repeat_thresh`` only where the sampling uses them; ``eval_imgsz`` the
    native size validation, export and deployment use under ``crop=native`` (None otherwise)."""

    sampling: str = "uniform"  # uniform | defect | repeat
    defect_fraction: Optional[float] = None  # sampling=defect: target share of defective images
    repeat_thresh: Optional[float] = None  # sampling=repeat: LVIS threshold
    paste: float = 0.0  # probability of pasting defects onto a defect-free image
    paste_max: int = 3  # defects pasted per image, at most
    paste_roi: Optional[str] = None  # mask image of where parts are
    crop: str = "off"  # off | native
    rot90: float = 0.0  # probability of a quarter turn
    eval_imgsz: Optional[int] = None  # crop=native: the native size to validate and deploy at

    def card_entry(self) -> dict[str, Any]:
        """The recipe as the model card records it."""
        d = asdict(self)
        return {k: d[k] for k in CARD_RECIPE_KEYS}


_RUN_KEYS = (
    "cls_loss",
    "gamma",
    "alpha",
    "cls",
    "data",
    "imgsz",
    "threads",
    "optimizer",
    "lr0",
    "nbs",
    "data_stats",
)
# key -> (test, what was expected); None values always pass (a key absent from an older file)
_CHECKS = {
    "cls_loss": (lambda v: isinstance(v, str), "a loss name"),
    "gamma": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "alpha": (lambda v: _num(v) and 0 <= v <= 1, "a number in [0, 1]"),
    "cls": (lambda v: _num(v) and v >= 0, "a number >= 0"),
    "data": (lambda v: isinstance(v, str), "a path"),
    "imgsz": (lambda v: _int(v) and v >= 1, "a whole number of pixels"),
    "threads": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "optimizer": (lambda v: isinstance(v, str), "an optimizer name"),
    "lr0": (lambda v: _num(v) and v > 0, "a number > 0"),
    "nbs": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "data_stats": (lambda v: isinstance(v, Mapping), "a mapping"),
    "sampling": (lambda v: v in ("uniform", "defect", "repeat"), "uniform, defect or repeat"),
    "defect_fraction": (lambda v: _num(v) and 0 < v < 1, "a number in (0, 1)"),
    "repeat_thresh": (lambda v: _num(v) and 0 < v <= 1, "a number in (0, 1]"),
    "paste": (lambda v: _num(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    "paste_max": (lambda v: _int(v) and v >= 1, "a whole number >= 1"),
    "paste_roi": (lambda v: isinstance(v, str), "a mask image path"),
    "crop": (lambda v: v in ("off", "native"), "off or native"),
    "rot90": (lambda v: _num(v) and 0 <= v <= 1, "a probability in [0, 1]"),
    "eval_imgsz": (lambda v: _int(v) and v >= 1, "a whole number of pixels"),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


@dataclass(frozen=True)
class RunInfo:
    """What a training run resolved (``<run>/defectdet.yaml``)."""

    cls_loss: str = "unknown"  # bce | focal | qfl | vfl (auto resolved); unknown: not from defectdet train
    gamma: Optional[float] = None
    alpha: Optional[float] = None
    cls: Optional[float] = None  # the classification loss gain
    data: Optional[str] = None  # the data.yaml training read
    imgsz: Optional[int] = None  # the training size (native windows under crop=native)
    threads: Optional[int] = None  # CPU training threads (absent on a GPU)
    recipe: Optional[Recipe] = None  # None: a run from before the recipe
    optimizer: Optional[str] = None  # as built (optimizer=auto resolved)
    lr0: Optional[float] = None
    nbs: Optional[int] = None
    data_stats: Optional[Mapping[str, Any]] = None  # the train split as the loss choice saw it
    extra: Mapping[str, Any] = field(default_factory=dict)  # keys this version does not know, kept

    @property
    def deploy_imgsz(self) -> Optional[int]:
        """The size to validate, export and deploy at when it differs from the checkpoint's own:
        the native ``eval_imgsz`` of a ``crop=native`` run; None otherwise."""
        return self.recipe.eval_imgsz if self.recipe is not None and self.recipe.eval_imgsz else None

    def replace(self, **changes: Any) -> RunInfo:
        return replace(self, **changes)

    # -- dict and file -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """The flat mapping ``defectdet.yaml`` holds (recipe keys at the top level)."""
        d = {k: getattr(self, k) for k in ("cls_loss", "gamma", "alpha", "cls", "data", "imgsz")}
        if self.threads is not None:
            d["threads"] = self.threads
        if self.recipe is not None:
            d.update(asdict(self.recipe))
        d.update({k: getattr(self, k) for k in ("optimizer", "lr0", "nbs") if getattr(self, k) is not None})
        if self.data_stats is not None:
            d["data_stats"] = dict(self.data_stats)
        return {**d, **self.extra}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = RUN_INFO_NAME) -> RunInfo:
        """Parse a ``defectdet.yaml`` mapping; a bad value is one :class:`ConfigError` naming
        ``where`` and the key."""
        for key, (ok, expected) in _CHECKS.items():
            if d.get(key) is not None and not ok(d[key]):
                raise ConfigError(f"{where}: {key}={d[key]!r}: expected {expected}")
        recipe_keys = [f.name for f in fields(Recipe)]
        recipe = None
        if any(k in d for k in CARD_RECIPE_KEYS):
            base = Recipe()
            recipe = Recipe(**{k: d[k] if k in d else getattr(base, k) for k in recipe_keys})
        known = {k: d.get(k) for k in _RUN_KEYS}
        known["cls_loss"] = str(d.get("cls_loss") or "unknown")
        extra = {k: v for k, v in d.items() if k not in _RUN_KEYS and k not in recipe_keys}
        return cls(**known, recipe=recipe, extra=extra)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunInfo:
        """Read a ``defectdet.yaml``."""
        return cls.from_dict(load_yaml(path, kind="run info"), str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``defectdet.yaml`` atomically."""
        return dump_yaml(path, self.to_dict())

    @staticmethod
    def path(run_dir: str | os.PathLike) -> Path:
        """``<run>/defectdet.yaml``."""
        return Path(run_dir) / RUN_INFO_NAME

    @classmethod
    def locate(cls, checkpoint: str | os.PathLike) -> Optional[Path]:
        """The ``defectdet.yaml`` of the run a checkpoint (``<run>/weights/best.pt``) or a file beside it
        came from: ``<run>/defectdet.yaml``, else one in the checkpoint's own folder; None when neither is."""
        ckpt = Path(checkpoint).resolve()
        return next(
            (cls.path(run) for run in (ckpt.parent.parent, ckpt.parent) if cls.path(run).is_file()), None
        )

    @classmethod
    def find(cls, checkpoint: str | os.PathLike) -> Optional[RunInfo]:
        """The RunInfo at :meth:`locate`; None when there is none."""
        path = cls.locate(checkpoint)
        return cls.load(path) if path is not None else None
