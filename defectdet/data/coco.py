"""COCO detection json (``instances_*.json`` + an image folder) <-> :class:`~.formats.Collection`.

Class ids follow the order of ``categories`` sorted by their COCO ``id`` (ids need not be
contiguous); COCO ``bbox`` is ``[x_min, y_min, width, height]`` in pixels. Crowd annotations
(``iscrowd: 1``) are skipped and boxes are clipped to the image; both are noted, never silent.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..config import atomic_write_text, load_json_object
from ..errors import DataError
from .collection import Collection, Sample, atomic_dir, place_image, stratified_split, unique_rel
from .images import image_size


class _BadBox(ValueError):
    """A bbox with a negative width/height or a non-finite number."""


def split_of(name: str) -> str | None:
    """``instances_train2017`` -> ``train``; ``val``/``valid``/``test`` likewise; None if unknown."""
    low = name.lower()
    for key, split in (("train", "train"), ("val", "val"), ("test", "test")):
        if key in low:
            return split
    return None


def _load(path: Path) -> dict[str, Any]:
    """Read a COCO json; DataError naming file:line for malformed JSON or a wrong structure."""
    doc = load_json_object(path, "a COCO instances file", DataError, encoding="utf-8-sig")
    if not all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories")):
        raise DataError(f"{path}: expected a COCO object with 'images', 'annotations' and 'categories' lists")
    return doc


def _names(path: Path, cats: list[Any]) -> tuple[list[str], dict[int, int]]:
    """Class names by ascending category id, and category id -> class index."""
    try:
        cats = sorted(cats, key=lambda c: int(c["id"]))
        return [str(c["name"]) for c in cats], {int(c["id"]): i for i, c in enumerate(cats)}
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{path}: every category needs an integer 'id' and a 'name'") from None


def _image_dir(path: Path, images: list[dict[str, Any]], given: Path | None) -> Path:
    """The folder that ``file_name`` is relative to: ``given``, or the first candidate holding the
    first image (beside the json, ``images/``, ``../images/<split>``, ``../<json stem>`` ...)."""
    if given is not None or not images:
        return given or path.parent
    stem = path.stem.removeprefix("instances_")
    cands = [
        path.parent,
        path.parent / "images",
        path.parent.parent / "images",
        path.parent.parent / stem,
        path.parent / stem,
        path.parent.parent / "images" / (split_of(stem) or stem),
        path.parent.parent,
    ]
    first = str(images[0].get("file_name", ""))
    for c in cands:
        if (c / first).is_file():
            return c
    tried = ", ".join(str(c) for c in dict.fromkeys(cands))
    raise DataError(f"{path}: image {first!r} not found in {tried}; pass the image folder (--images DIR)")


def _box(ann: dict[str, Any], w: int, h: int) -> tuple[float, float, float, float, bool] | None:
    """COCO bbox -> normalized (cx, cy, bw, bh, clipped), or None when nothing is left after clipping;
    ValueError for a negative width/height or a non-finite number (a defect must not vanish)."""
    x, y, bw, bh = (float(v) for v in ann["bbox"])
    if not all(map(math.isfinite, (x, y, bw, bh))) or bw < 0 or bh < 0:
        raise _BadBox
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + bw, w), min(y + bh, h)
    if x1 <= x0 or y1 <= y0:
        return None
    clipped = (x0, y0, x1, y1) != (x, y, x + bw, y + bh)
    return (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h, clipped


def _read_one(path: Path, split: str, images_dir: Path | None, col: Collection) -> list[str]:
    """Append one json's samples to ``col``; returns its class names (checked against the others)."""
    doc = _load(path)
    names, cat_index = _names(path, doc["categories"])
    base = _image_dir(path, doc["images"], images_dir)
    by_id: dict[Any, Sample] = {}
    for im in doc["images"]:
        if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
            raise DataError(f"{path}: every image needs 'id' and 'file_name', got {str(im)[:80]}")
        f = base / str(im["file_name"])
        if not f.is_file():
            raise DataError(f"{path}: image id {im['id']}: {f} not found; expected it under {base}")
        try:
            w, h = (
                (int(im["width"]), int(im["height"]))
                if im.get("width") and im.get("height")
                else image_size(f)
            )
        except (TypeError, ValueError, OSError) as e:
            raise DataError(
                f"{path}: image id {im['id']}: bad size or unreadable image ({e}); "
                "expected integer 'width'/'height' and a readable image"
            ) from None
        by_id[im["id"]] = Sample(f, w, h, [], split, str(im["file_name"]))
    crowd = clipped = empty = 0
    for i, ann in enumerate(doc["annotations"]):
        s = by_id.get(ann.get("image_id")) if isinstance(ann, dict) else None
        try:
            cls = cat_index[int(ann["category_id"])]
            box = _box(ann, s.width, s.height) if s is not None else None
        except _BadBox:
            raise DataError(
                f"{path}: annotation #{i} (id {ann.get('id')}, image id {ann.get('image_id')}): bbox "
                f"{ann['bbox']} has a negative width/height or a non-finite number; expected "
                "[x_min, y_min, width, height] in pixels with width, height >= 0"
            ) from None
        except (KeyError, TypeError, ValueError):
            raise DataError(
                f"{path}: annotation #{i} (id {ann.get('id')}) needs a known 'category_id' and "
                f"'bbox': [x, y, w, h]; got {str(ann)[:80]}"
            ) from None
        if s is None:
            raise DataError(
                f"{path}: annotation #{i} (id {ann.get('id')}) names unknown image_id {ann.get('image_id')!r}"
            )
        if ann.get("iscrowd"):
            crowd += 1
        elif box is None:
            empty += 1
        else:
            clipped += box[4]
            s.boxes.append((cls, *box[:4]))
    col.samples.extend(by_id.values())
    for n, what in (
        (crowd, "crowd annotations skipped"),
        (clipped, "boxes clipped to the image"),
        (empty, "zero-area boxes skipped"),
    ):
        if n:
            col.notes.append(f"{path}: {n} {what}")
    return names


def read_coco(
    src: str | os.PathLike, images: str | os.PathLike | None = None, val_fraction: float = 0.2
) -> Collection:
    """Read a COCO json, or a folder of them (``*.json`` / ``annotations/*.json``, the split taken
    from the name: ``instances_train.json``...). One json without a split name is split train/val
    (stratified, deterministic, ``val_fraction``); so is a dataset that has no val json."""
    src = Path(src)
    if not src.exists():
        raise DataError(f"{src}: not found; expected a COCO json file or a folder with annotations/*.json")
    files = [src] if src.is_file() else sorted(src.glob("*.json")) + sorted(src.glob("annotations/*.json"))
    if not files:
        raise DataError(
            f"{src}: no COCO .json found; expected a json file or a folder with annotations/*.json"
        )
    splits = [split_of(f.stem) for f in files]
    if len(files) > 1 and None in splits:
        bad = files[splits.index(None)]
        raise DataError(f"{bad}: cannot tell its split; expected a name containing train, val or test")
    col, names = Collection([], []), None
    for f, split in zip(files, splits):
        got = _read_one(f, split or "train", Path(images) if images else None, col)
        if names is not None and got != names:
            raise DataError(
                f"{f}: categories {got} differ from {names} in {files[0]}; expected the same classes"
            )
        names = got
    col.names = names or []
    if not any(s.split == "val" for s in col.samples):
        stratified_split([s for s in col.samples if s.split != "test"], val_fraction)
        col.notes.append(
            f"no val split in {src}: split train/val {1 - val_fraction:.0%}/{val_fraction:.0%} "
            "(stratified by defect/defect-free)"
        )
    return col


def write_coco(col: Collection, out_dir: str | os.PathLike, copy: bool = False) -> Path:
    """Write ``out/images/<split>/`` (linked or copied) and ``out/annotations/instances_<split>.json``;
    category ids are ``1..n`` in class order. Returns the output folder."""
    out = Path(out_dir).resolve()
    with atomic_dir(out) as tmp:
        docs: dict[str, dict[str, list[Any]]] = {}
        used: dict[str, set[str]] = {}
        for s in col.samples:
            doc = docs.setdefault(
                s.split,
                {
                    "images": [],
                    "annotations": [],
                    "categories": [
                        {"id": i + 1, "name": n, "supercategory": "defect"} for i, n in enumerate(col.names)
                    ],
                },
            )
            rel = unique_rel(s, used.setdefault(s.split, set()))
            place_image(s.image, tmp / "images" / s.split / rel, copy)
            im_id = len(doc["images"]) + 1
            doc["images"].append({"id": im_id, "file_name": rel, "width": s.width, "height": s.height})
            for c, cx, cy, bw, bh in s.boxes:
                box = [
                    round((cx - bw / 2) * s.width, 3),
                    round((cy - bh / 2) * s.height, 3),
                    round(bw * s.width, 3),
                    round(bh * s.height, 3),
                ]
                doc["annotations"].append(
                    {
                        "id": len(doc["annotations"]) + 1,
                        "image_id": im_id,
                        "category_id": c + 1,
                        "bbox": box,
                        "area": round(box[2] * box[3], 3),
                        "iscrowd": 0,
                    }
                )
        for split, doc in docs.items():
            atomic_write_text(tmp / "annotations" / f"instances_{split}.json", json.dumps(doc, indent=1))
    return out
