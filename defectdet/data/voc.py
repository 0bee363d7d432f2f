"""Pascal VOC xml (as NEU-DET and labelImg write it) <-> :class:`~.formats.Collection`.

A VOC folder holds ``*.xml`` annotations anywhere below it and the images anywhere below it
(``JPEGImages/``, ``IMAGES/``, ``train/images/<class>/``...), found by the xml's ``<filename>``.
Boxes are pixel edges ``xmin ymin xmax ymax`` (read as floats, clipped to the image, written back
rounded to integers). Class order: ``names`` if given, else ``classes.txt`` / ``labels.txt`` /
``predefined_classes.txt`` in the folder, else alphabetical. ``difficult`` objects are kept.
Splits: ``ImageSets/Main/{train,val,test}.txt``, else a ``train``/``val``/``test`` folder on the
xml's path, else a stratified deterministic train/val split.
"""

from __future__ import annotations

import math
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from ..config import atomic_write_text
from ..errors import DataError
from .collection import Collection, Sample, atomic_dir, place_image, stratified_split, unique_rel
from .images import image_size, is_image_name

CLASS_FILES = ("classes.txt", "labels.txt", "predefined_classes.txt")
FOLDER_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


def _parse(xml: Path) -> tuple[ET.Element, list[int]]:
    """The xml root and the line of each ``<object>``; DataError with file:line when malformed."""
    try:
        text = xml.read_text(encoding="utf-8-sig")
        root = ET.fromstring(text)
    except ET.ParseError as e:
        raise DataError(
            f"{xml}:{e.position[0]}: malformed XML ({str(e).split(':')[0]}); "
            "expected a Pascal VOC <annotation>"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{xml}: cannot read ({e.__class__.__name__}); expected UTF-8 XML") from None
    if root.tag != "annotation":
        raise DataError(f"{xml}:1: root element <{root.tag}>, expected a Pascal VOC <annotation>")
    return root, [text.count("\n", 0, m.start()) + 1 for m in re.finditer(r"<object[\s>]", text)]


def _find_image(xml: Path, root: ET.Element, index: dict[str, list[Path]]) -> Path:
    """The image an xml describes: ``<filename>`` (or its stem, or the xml's stem) looked up among the
    images below the folder; on a name clash the one sharing the longest path with the xml wins."""
    fname = (root.findtext("filename") or "").strip()
    keys = [fname.lower(), Path(fname).stem.lower(), xml.stem.lower()]
    for key in keys:
        cands = index.get(key)
        if cands:
            return max(cands, key=lambda c: (len(os.path.commonpath([c, xml])), -len(str(c))))
    raise DataError(f"{xml}: image {fname or xml.stem!r} (<filename>) not found below the VOC folder")


def _num(xml: Path, line: int, box: ET.Element | None, tag: str) -> float:
    text = box.findtext(tag) if box is not None else None
    try:
        v = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        v = math.nan
    if not math.isfinite(v):
        raise DataError(f"{xml}:{line}: <bndbox><{tag}> is {text!r}, expected a number of pixels")
    return v


def _read_xml(
    xml: Path, index: dict[str, list[Path]], names: list[str] | None, found: set[str], col: Collection
) -> Sample:
    """One annotation file -> a Sample (classes by name; the caller maps names to ids)."""
    root, obj_lines = _parse(xml)
    image = _find_image(xml, root, index)
    try:
        w, h = int(float(root.findtext("size/width") or 0)), int(float(root.findtext("size/height") or 0))
        if w <= 0 or h <= 0:
            w, h = image_size(image)
    except (ValueError, OSError) as e:
        raise DataError(f"{xml}: bad <size> and unreadable image {image} ({e})") from None
    boxes: list = []
    for obj, line in zip(root.iter("object"), obj_lines):
        name = (obj.findtext("name") or "").strip()
        if not name or (names is not None and name not in names):
            raise DataError(f"{xml}:{line}: class {name!r} is not in the class list {names}")
        bb = obj.find("bndbox")
        x0, y0, x1, y1 = (_num(xml, line, bb, t) for t in ("xmin", "ymin", "xmax", "ymax"))
        if x1 < x0 or y1 < y0:  # inverted, not empty: a defect must not vanish as "zero-area"
            raise DataError(
                f"{xml}:{line}: <bndbox> xmin {x0:g} xmax {x1:g} ymin {y0:g} ymax {y1:g}; "
                "expected xmin <= xmax and ymin <= ymax (pixel edges)"
            )
        x0, y0, x1, y1 = max(x0, 0.0), max(y0, 0.0), min(x1, w), min(y1, h)
        if x1 <= x0 or y1 <= y0:
            col.notes.append(f"{xml}:{line}: zero-area box skipped (after clipping to {w}x{h})")
            continue
        found.add(name)
        boxes.append((name, (x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h))
    return Sample(image, w, h, boxes, "", image.name)


def _class_list(src: Path, names: list[str] | None) -> list[str] | None:
    if names:
        return list(names)
    for f in CLASS_FILES:
        if (src / f).is_file():
            return [ln.strip() for ln in (src / f).read_text(encoding="utf-8-sig").splitlines() if ln.strip()]
    return None


def _assign_splits(
    src: Path, samples: list[Sample], xmls: list[Path], val_fraction: float, col: Collection
) -> None:
    """ImageSets/Main lists, else a split folder on the xml path, else a stratified split."""
    sets = src / "ImageSets" / "Main"
    listed = {}
    for split in ("train", "val", "test"):
        if (sets / f"{split}.txt").is_file():
            listed.update(
                {
                    ln.split()[0]: split
                    for ln in (sets / f"{split}.txt").read_text().splitlines()
                    if ln.strip()
                }
            )
    for s, xml in zip(samples, xmls):
        parts = [FOLDER_SPLITS.get(p.lower()) for p in xml.relative_to(src).parts[:-1]]
        s.split = listed.get(xml.stem) or next((p for p in parts if p), "")
    if all(s.split for s in samples) and any(s.split == "val" for s in samples):
        return
    stratified_split([s for s in samples if s.split != "test"], val_fraction)
    col.notes.append(
        f"no complete train/val assignment in {src}: split train/val "
        f"{1 - val_fraction:.0%}/{val_fraction:.0%} (stratified by defect/defect-free)"
    )


def read_voc(src: str | os.PathLike, names: list[str] | None = None, val_fraction: float = 0.2) -> Collection:
    """Read a VOC folder into a Collection (see the module docstring for the conventions)."""
    src = Path(src).resolve()
    if not src.is_dir():
        raise DataError(f"{src}: not found or not a folder; expected a Pascal VOC folder of .xml annotations")
    xmls = sorted(src.rglob("*.xml"))
    if not xmls:
        raise DataError(f"{src}: no .xml annotations found; expected a Pascal VOC folder")
    index: dict[str, list[Path]] = {}
    for f in sorted(src.rglob("*")):
        if is_image_name(f.name) and f.is_file():
            for key in (f.name.lower(), f.stem.lower()):
                index.setdefault(key, []).append(f)
    given = _class_list(src, names)
    col, found = Collection([], []), set()
    samples = [_read_xml(x, index, given, found, col) for x in xmls]
    col.names = given or sorted(found)
    ids = {n: i for i, n in enumerate(col.names)}
    for s in samples:
        s.boxes = [(ids[n], *rest) for n, *rest in s.boxes]
    _assign_splits(src, samples, xmls, val_fraction, col)
    col.samples = samples
    return col


def _xml(s: Sample, rel: str, names: list[str]) -> str:
    """A VOC <annotation> for one sample (integer pixel edges)."""
    ann = ET.Element("annotation")
    ET.SubElement(ann, "filename").text = rel
    size = ET.SubElement(ann, "size")
    for tag, v in (("width", s.width), ("height", s.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(v)
    for c, cx, cy, bw, bh in s.boxes:
        obj = ET.SubElement(ann, "object")
        ET.SubElement(obj, "name").text = names[c]
        ET.SubElement(obj, "difficult").text = "0"
        bb = ET.SubElement(obj, "bndbox")
        edges = (
            (cx - bw / 2) * s.width,
            (cy - bh / 2) * s.height,
            (cx + bw / 2) * s.width,
            (cy + bh / 2) * s.height,
        )
        for tag, v in zip(("xmin", "ymin", "xmax", "ymax"), edges):
            ET.SubElement(bb, tag).text = str(round(v))
    ET.indent(ann)
    return ET.tostring(ann, encoding="unicode") + "\n"


def write_voc(col: Collection, out_dir: str | os.PathLike, copy: bool = False) -> Path:
    """Write ``JPEGImages/`` (linked or copied), ``Annotations/*.xml``, ``ImageSets/Main/<split>.txt``
    and ``classes.txt`` (the class order). Returns the output folder."""
    out = Path(out_dir).resolve()
    with atomic_dir(out) as tmp:
        used: set[str] = set()
        lists: dict[str, list[str]] = {}
        for s in col.samples:
            rel = unique_rel(s, used, flat=True)
            place_image(s.image, tmp / "JPEGImages" / rel, copy)
            (tmp / "Annotations").mkdir(exist_ok=True)  # inside atomic_dir: plain writes are enough
            (tmp / "Annotations" / f"{Path(rel).stem}.xml").write_text(
                _xml(s, rel, col.names), encoding="utf-8"
            )
            lists.setdefault(s.split, []).append(Path(rel).stem)
        for split, stems in lists.items():
            atomic_write_text(tmp / "ImageSets" / "Main" / f"{split}.txt", "".join(f"{x}\n" for x in stems))
        atomic_write_text(tmp / "classes.txt", "".join(f"{n}\n" for n in col.names))
    return out
