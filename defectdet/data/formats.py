"""Dataset formats: the ultralytics YOLO layout, plus COCO/VOC through a common in-memory form.

* :func:`load_data_yaml` reads a ``data.yaml`` and resolves every path the way users expect: a
  missing or relative ``path:`` is the yaml's own folder (ultralytics would look under its global
  ``datasets_dir`` instead), split entries may be folders, ``.txt`` lists or lists of these.
* :func:`read_yolo` / :func:`write_yolo` convert to and from the common in-memory
  :class:`~.collection.Collection`, as :mod:`.coco` and :mod:`.voc` do for their formats.
* :func:`prepare_data` turns a data.yaml, a COCO json or a VOC folder into a data.yaml that
  ultralytics trains on as-is (converting into a cache folder on the fly).

Label rows are ``class x_center y_center width height``, normalized to [0, 1]; a label file
lives where ultralytics looks for it: the last ``/images/`` of the image path replaced by
``/labels/``, extension ``.txt``. No label file, or an empty one, means a defect-free image.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from ..config import atomic_write_text, dump_yaml, load_yaml
from ..errors import ConfigError, DataError
from . import coco, voc
from .collection import Collection, Sample, atomic_dir, place_image, unique_rel
from .images import image_size, is_image_name, scan_images

SPLITS = ("train", "val", "test")
# .txt files that sit among labels but are not label files (labelImg writes classes.txt).
NOT_LABELS = frozenset(
    {"classes.txt", "labels.txt", "predefined_classes.txt", "train.txt", "val.txt", "test.txt"}
)


def label_path(image: str | os.PathLike) -> Path:
    """Where ultralytics looks for an image's label file (``ultralytics.data.utils.img2label_paths``)."""
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    return Path(sb.join(os.fspath(image).rsplit(sa, 1)).rsplit(".", 1)[0] + ".txt")


def defectdet_home() -> Path:
    """``$DEFECTDET_HOME`` (default ``~/.cache/defectdet``): conversion caches live under ``data/``."""
    return Path(os.environ.get("DEFECTDET_HOME", Path.home() / ".cache" / "defectdet"))


# ----------------------------------------------------------------------------------------- data.yaml
@dataclass
class ImageRef:
    """One image named by a split: where it is, and the ``.txt`` list line that named it (if any)."""

    path: Path
    listed_in: Path | None = None
    line: int | None = None


@dataclass
class DataSpec:
    """A parsed data.yaml with every path resolved (absolute)."""

    yaml_path: Path
    root: Path  # the dataset root: ``path:`` resolved against the yaml's folder
    raw: dict[str, Any]  # the yaml as read
    lines: dict[str, int]  # top-level key -> 1-based line in the yaml
    splits: dict[str, list[Path]] = field(default_factory=dict)  # split -> its sources (folders / lists)

    def where(self, key: str) -> str:
        """``data.yaml:LINE`` for a top-level key (just the file when the key is absent)."""
        return f"{self.yaml_path}:{self.lines[key]}" if key in self.lines else str(self.yaml_path)

    @property
    def names(self) -> list[str] | None:
        """Class names in id order, or None when ``names`` is missing or not a list/dict."""
        names = self.raw.get("names")
        if isinstance(names, list):
            return [str(n) for n in names]
        if isinstance(names, dict):
            try:
                return [str(names[k]) for k in sorted(names, key=int)]
            except (TypeError, ValueError):
                return None
        return None


def _key_lines(text: str) -> dict[str, int]:
    """Top-level mapping key -> 1-based line, from the yaml node tree (empty if not a mapping)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {str(k.value): k.start_mark.line + 1 for k, _ in node.value}


def load_data_yaml(data_yaml: str | os.PathLike) -> DataSpec:
    """Parse and resolve a data.yaml; DataError (one line, file:line) when it is missing or malformed."""
    p = Path(os.path.abspath(Path(data_yaml).expanduser()))  # not resolve()d, as ultralytics
    try:
        raw = load_yaml(p, kind="data.yaml")
    except ConfigError as e:
        raise DataError(str(e)) from None
    spec = DataSpec(yaml_path=p, root=p.parent, raw=raw, lines=_key_lines(p.read_text(encoding="utf-8")))
    root = raw.get("path")
    if root is not None:
        if not isinstance(root, str) or not root.strip():
            raise DataError(f"{spec.where('path')}: 'path' must be a folder name, got {root!r}")
        spec.root = (p.parent / Path(root).expanduser()).resolve()  # absolute stays absolute
    if "val" not in raw and "validation" in raw:
        raw["val"] = raw.pop("validation")
        spec.lines["val"] = spec.lines.get("validation", 0)
    for split in SPLITS:
        if split not in raw or (split == "test" and raw[split] is None):
            if split != "test":
                raise DataError(
                    f"{p}: no '{split}:' key; expected '{split}: images/{split}' (a folder, .txt list or "
                    "list)"
                )
            continue
        entries = raw[split] if isinstance(raw[split], list) else [raw[split]]
        if not entries or not all(isinstance(e, str) and e.strip() for e in entries):
            raise DataError(
                f"{spec.where(split)}: '{split}' must be a path or a list of paths, got {raw[split]!r}"
            )
        spec.splits[split] = [_resolve_entry(spec.root, e) for e in entries]
    return spec


def _resolve_entry(root: Path, entry: str) -> Path:
    """A split entry against the dataset root, with ultralytics' ``../`` fallback."""
    x = (root / Path(entry).expanduser()).resolve()
    if not x.exists() and entry.startswith("../"):
        alt = (root / entry[3:]).resolve()
        x = alt if alt.exists() else x
    return x


def list_images(source: Path) -> list[ImageRef]:
    """Images a split source names: a folder (recursive) or a ``.txt`` list (one path a line; relative
    lines resolve against the list's folder). Listed files that do not exist are returned too, so a
    checker can report them; entries without an image extension are dropped (ultralytics ignores them)."""
    if source.is_dir():
        return [ImageRef(f) for f in scan_images(source).files]  # each real file once, loops not followed
    refs = []
    for i, line in enumerate(read_list_file(source), start=1):
        if line and is_image_name(line):
            # joined, not resolve()d: a symlinked image keeps its own path, so its label is found beside it
            refs.append(ImageRef(Path(os.path.normpath(os.path.join(source.parent, line))), source, i))
    return refs


def read_list_file(path: Path) -> list[str]:
    """Lines of a ``.txt`` image list, stripped (blank lines kept so line numbers stay right)."""
    try:
        return [s.strip() for s in path.read_text(encoding="utf-8-sig").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(
            f"{path}: cannot read image list ({e.__class__.__name__}); expected UTF-8 text"
        ) from None


def read_labels(path: Path) -> tuple[list[tuple[int, float, float, float, float]], int]:
    """Valid box rows of a label file (polygon rows become their bounding box) and the count of
    rows skipped as invalid; ``defectdet data check`` says why each one is invalid."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        return [], 0
    except (OSError, UnicodeDecodeError):
        return [], 1
    rows, bad = [], 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        try:
            vals = [float(v) for v in parts]
        except ValueError:
            vals = []
        if not vals or not all(map(math.isfinite, vals)):
            bad += 1
            continue
        if len(vals) >= 7 and len(vals) % 2 == 1:  # polygon: class x1 y1 x2 y2 ...
            xs, ys = vals[1::2], vals[2::2]
            vals = [
                vals[0],
                (min(xs) + max(xs)) / 2,
                (min(ys) + max(ys)) / 2,
                max(xs) - min(xs),
                max(ys) - min(ys),
            ]
        if (
            len(vals) != 5
            or vals[0] != int(vals[0])
            or not all(0 <= v <= 1 for v in vals[1:])
            or min(vals[3:]) <= 0
        ):
            bad += 1
            continue
        rows.append((int(vals[0]), *vals[1:]))
    return rows, bad


def read_yolo(data_yaml: str | os.PathLike) -> Collection:
    """A YOLO dataset as a Collection (for converting to COCO/VOC); invalid rows are skipped and noted."""
    spec = load_data_yaml(data_yaml)
    names = spec.names
    if not names:
        raise DataError(f"{spec.where('names')}: expected 'names:' as a list or {{id: name}} mapping")
    samples, bad = [], 0
    for split, sources in spec.splits.items():
        for src in sources:
            if not src.exists():
                raise DataError(
                    f"{spec.where(split)}: {src} not found; expected a folder of images or a .txt list"
                )
            for ref in list_images(src):
                rows, n_bad = read_labels(label_path(ref.path))
                bad += n_bad
                try:
                    w, h = image_size(ref.path)
                except OSError:
                    raise DataError(
                        f"{ref.path}: unreadable image; run 'defectdet data check {spec.yaml_path}'"
                    ) from None
                rel = os.path.relpath(ref.path, src) if src.is_dir() else ref.path.name
                samples.append(Sample(ref.path, w, h, rows, split, rel))
    notes = [f"skipped {bad} invalid label rows (see 'defectdet data check {spec.yaml_path}')"] if bad else []
    return Collection(names, samples, notes)


def write_yolo(col: Collection, out_dir: str | os.PathLike, copy: bool = False) -> Path:
    """Write ``out/images/<split>/``, ``out/labels/<split>/`` (an empty .txt for a defect-free image)
    and ``out/data.yaml`` (no ``path:``: it resolves to its own folder); returns the data.yaml."""
    out = Path(out_dir).resolve()
    with atomic_dir(out) as tmp:
        used: dict[str, set[str]] = {}
        for s in col.samples:
            rel = unique_rel(s, used.setdefault(s.split, set()))
            place_image(s.image, tmp / "images" / s.split / rel, copy)
            rows = "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in s.boxes)
            lbl = tmp / "labels" / s.split / Path(rel).with_suffix(".txt")
            lbl.parent.mkdir(parents=True, exist_ok=True)
            lbl.write_text(rows, encoding="utf-8")
        splits = {sp: f"images/{sp}" for sp in SPLITS if sp in used}
        if "val" not in splits and "train" in splits:
            splits["val"] = splits["train"]  # ultralytics needs a val split (one image: nothing to split)
        dump_yaml(tmp / "data.yaml", {**splits, "names": dict(enumerate(col.names))})
    return out / "data.yaml"


# ------------------------------------------------------------------------------------ prepare_data
def detect_format(data: str | os.PathLike) -> str:
    """``"yolo"`` (a .yaml, or a folder holding data.yaml), ``"coco"`` (a .json, or a folder of COCO
    json files) or ``"voc"`` (a folder of VOC xml files); DataError otherwise."""
    p = Path(data)
    if p.is_file():
        if p.suffix.lower() in (".yaml", ".yml"):
            return "yolo"
        if p.suffix.lower() == ".json":
            return "coco"
    elif p.is_dir():
        if (p / "data.yaml").is_file():
            return "yolo"
        if any(p.glob("*.json")) or any(p.glob("annotations/*.json")):
            return "coco"
        if next(p.rglob("*.xml"), None) is not None:
            return "voc"
    elif not p.exists():
        raise DataError(f"{p}: dataset not found; expected a data.yaml, a COCO .json or a VOC folder")
    raise DataError(
        f"{p}: unknown dataset format; expected a data.yaml, a COCO .json or a VOC folder of .xml"
    )


def as_data_yaml(data: str | os.PathLike, cache_dir: str | os.PathLike | None = None) -> Path:
    """A data.yaml file as given (so messages name the user's file), else :func:`prepare_data`'s."""
    p = Path(data)
    return p if detect_format(p) == "yolo" and p.is_file() else prepare_data(p, cache_dir)


def _digest(*parts: Any) -> str:
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def _source_stamp(p: Path) -> list[tuple[str, int, int]]:
    """(file, size, mtime) of the annotation files a conversion reads: its cache key."""
    files = (
        [p]
        if p.is_file()
        else sorted(f for f in p.rglob("*") if f.suffix.lower() in (".json", ".xml", ".txt"))
    )
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def prepare_data(
    data: str | os.PathLike,
    cache_dir: str | os.PathLike | None = None,
    *,
    skip: Iterable[str | os.PathLike] | None = None,
) -> Path:
    """A data.yaml ultralytics can train on, from a data.yaml, a COCO json or a VOC folder.

    COCO/VOC are converted once into ``cache_dir`` (default ``$DEFECTDET_HOME/data``; images are
    linked) and reused while the annotation files are unchanged. A data.yaml with a relative or
    missing ``path:`` or relative list lines is rewritten there with absolute paths. With ``skip``
    (image paths, e.g. ``check_dataset(...).bad_files`` for strict=False), train/val/test become
    ``.txt`` lists without those images. The original dataset is never modified.
    """
    kind = detect_format(data)
    cache = Path(cache_dir) if cache_dir is not None else defectdet_home() / "data"
    src = Path(os.path.abspath(data))
    if kind == "yolo":
        yaml_path = src / "data.yaml" if src.is_dir() else src
    else:
        key = _digest(kind, str(src), _source_stamp(src))
        out = cache / f"{kind}-{src.stem}-{key}"
        yaml_path = out / "data.yaml"
        if not yaml_path.is_file():
            col = coco.read_coco(src) if kind == "coco" else voc.read_voc(src)
            try:
                write_yolo(col, out)
            except DataError:
                if not yaml_path.is_file():  # another process may have won the rename race
                    raise
    return _resolved_yaml(yaml_path, cache, set(map(os.fspath, skip or ())))


def _resolved_yaml(yaml_path: Path, cache: Path, skip: set[str]) -> Path:
    """The yaml itself when ultralytics reads it as we do, else a resolved copy (lists minus skip)."""
    spec = load_data_yaml(yaml_path)
    root = spec.raw.get("path")
    lists_relative = any(
        src.is_file()
        and any(ln and not os.path.isabs(ln) and not ln.startswith("./") for ln in read_list_file(src))
        for sources in spec.splits.values()
        for src in sources
    )
    tilde = any(
        str(e).startswith("~")
        for k in spec.splits
        for e in (spec.raw[k] if isinstance(spec.raw[k], list) else [spec.raw[k]])
    )
    if not skip and (root is None or os.path.isabs(str(root))) and not lists_relative and not tilde:
        return yaml_path  # ultralytics resolves this one exactly as we do
    skip_abs = {os.path.abspath(s) for s in skip}
    out = cache / f"yolo-{yaml_path.parent.name}-{_digest(str(yaml_path), spec.raw, sorted(skip_abs))}"
    data = dict(spec.raw, path=str(spec.root))
    for split, sources in spec.splits.items():
        if skip or any(s.is_file() for s in sources):
            kept = [
                str(r.path)
                for s in sources
                if s.exists()
                for r in list_images(s)
                if str(r.path) not in skip_abs
            ]
            data[split] = str(atomic_write_text(out / f"{split}.txt", "".join(f"{k}\n" for k in kept)))
        else:
            data[split] = [str(s) for s in sources] if len(sources) > 1 else str(sources[0])
    return dump_yaml(out / "data.yaml", data)
