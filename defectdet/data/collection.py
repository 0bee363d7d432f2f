"""The common in-memory form of a dataset (:class:`Collection` of :class:`Sample`) that every reader
(:mod:`.formats` for YOLO, :mod:`.coco`, :mod:`.voc`) returns and every writer takes, and the
helpers the writers share: a deterministic stratified split, unique names, linked/copied images,
an output folder that appears whole or not at all.
"""

from __future__ import annotations

import os
import shutil
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import DataError


@dataclass
class Sample:
    """One image and its boxes: (class, x_center, y_center, width, height), normalized."""

    image: Path
    width: int
    height: int
    boxes: list[tuple[int, float, float, float, float]]
    split: str = "train"
    rel: str = ""  # the name to write it under (may hold sub-folders), defaults to the file name


@dataclass
class Collection:
    """A dataset in memory: class names in id order and samples; ``notes`` lists what a reader had
    to change or skip (printed by the converter: nothing is dropped silently)."""

    names: list[str]
    samples: list[Sample]
    notes: list[str] = field(default_factory=list)


def stratified_split(samples: list[Sample], val_fraction: float = 0.2) -> None:
    """Assign train/val in place, deterministically (crc32 of the file name), separately for images
    with and without boxes so a rare-defect val split still holds defects; >=1 each when possible."""
    for group in ([s for s in samples if s.boxes], [s for s in samples if not s.boxes]):
        group.sort(key=lambda s: (zlib.crc32(str(s.rel or s.image.name).encode()), str(s.image)))
        n_val = round(len(group) * val_fraction)
        n_val = min(max(n_val, 1 if len(group) >= 2 else 0), max(len(group) - 1, 0))
        for i, s in enumerate(group):
            s.split = "val" if i < n_val else "train"


def place_image(src: Path, dst: Path, copy: bool) -> None:
    """Symlink (default) or copy an image; falls back to a copy where links are not allowed."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not copy:
        try:
            os.symlink(src.resolve(), dst)
            return
        except OSError:
            pass
    shutil.copy2(src, dst)


def unique_rel(sample: Sample, used: set[str], flat: bool = False) -> str:
    """The sample's relative name (just the file name when ``flat``), made unique within ``used``
    (``name_1.jpg`` on a clash); ``..`` and absolute parts are dropped."""
    rel = Path(sample.image.name if flat else (sample.rel or sample.image.name))
    parts = [p for p in rel.parts if p not in ("..", ".") and not Path(p).is_absolute()]
    rel = Path(*parts) if parts else Path(sample.image.name)
    cand, n = rel.as_posix(), 0
    while cand in used:
        n += 1
        cand = rel.with_name(f"{rel.stem}_{n}{rel.suffix}").as_posix()
    used.add(cand)
    return cand


@contextmanager
def atomic_dir(out_dir: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp folder beside ``out_dir``; on success it is renamed to ``out_dir`` (which must be
    new or empty), on failure removed: a converted dataset appears whole or not at all."""
    out = Path(out_dir).resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out}: output folder exists and is not empty; expected a new or empty folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
