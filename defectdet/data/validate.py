"""``defectdet data check``: a strict dataset checker whose every finding is one line naming the
file (and line) and what was expected.

Errors make the check fail (non-zero exit; ``defectdet train`` refuses the dataset unless
``strict=False``, which skips ``report.bad_files`` and prints their count). Warnings are printed
but do not fail. An image without a label file is a defect-free image: not a problem at all
(``defectdet data stats`` counts them).

Error kinds: ``names``, ``missing-split``, ``empty-split``, ``bad-list``, ``symlink-loop``
(dataset-level, in ``report.fatal``: skipping files cannot fix them), ``missing-image``, ``empty-image``,
``image-too-large``, ``unreadable-image``, ``corrupt-image``, ``format``, ``small-image``, ``16-bit``,
``encoding``, ``field-count``, ``non-numeric``, ``unreadable-label``, ``class-id``, ``class-range``,
``out-of-range``, ``degenerate-box``, ``duplicate-box``, ``mixed-rows``, ``orphan-label``. Warning kinds:
``grayscale``, ``exif-rotation``, ``edge-box``, ``tiny-box``, ``no-labels``, ``split-overlap``,
``shared-label``, ``duplicate-image``.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DataError
from .formats import NOT_LABELS, DataSpec, ImageRef, as_data_yaml, label_path, list_images, load_data_yaml
from .images import check_image, scan_images

FATAL_KINDS = frozenset({"names", "missing-split", "empty-split", "bad-list", "symlink-loop"})
FIELDS = ("class", "x_center", "y_center", "width", "height")
MIN_BOX_PX = 2  # ultralytics drops boxes under 2 px after resizing (augment.box_candidates, wh_thr=2)
EDGE_TOL = 1e-4  # boxes may poke this far past the border (6-decimal rounding) before a warning


@dataclass(frozen=True)
class Problem:
    """One finding; ``str(problem)`` is the one-line message ``file[:line]: message``."""

    path: Path
    line: int | None
    kind: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.message}"


@dataclass
class CheckReport:
    """What :func:`check_dataset` found."""

    data_yaml: Path
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    bad_files: set[Path] = field(default_factory=set)  # images to skip with strict=False
    images: dict[str, int] = field(default_factory=dict)  # split -> images it names
    paths: dict[str, list[Path]] = field(default_factory=dict)  # split -> its existing images, in order
    names: list[str] = field(default_factory=list)  # class names in id order (empty when unusable)

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def fatal(self) -> list[Problem]:
        """Dataset-level errors that skipping files cannot fix (names, missing or empty splits)."""
        return [p for p in self.errors if p.kind in FATAL_KINDS]

    def add(self, problem: Problem, *, error: bool = True, image: Path | None = None) -> None:
        """Record a finding; an error attached to an image marks that image bad."""
        (self.errors if error else self.warnings).append(problem)
        if error and image is not None:
            self.bad_files.add(image)

    def summary(self) -> str:
        """One line: errors and warnings counted by kind, images per split, images to skip."""

        def count(problems: list[Problem]) -> str:
            c = Counter(p.kind for p in problems)
            return ", ".join(f"{k}: {n}" for k, n in sorted(c.items(), key=lambda kv: (-kv[1], kv[0])))

        n_img = sum(self.images.values())
        splits = ", ".join(f"{k} {v}" for k, v in self.images.items())
        head = f"{len(self.errors)} error{'s' * (len(self.errors) != 1)}"
        head += f" ({count(self.errors)})" if self.errors else ""
        head += f", {len(self.warnings)} warning{'s' * (len(self.warnings) != 1)}"
        head += f" ({count(self.warnings)})" if self.warnings else ""
        tail = f"; {len(self.bad_files)} bad images (skipped with strict=False)" if self.bad_files else ""
        return f"{'FAILED' if self.errors else 'OK'}: {head} in {n_img} images ({splits}){tail}"


# ------------------------------------------------------------------------------------------ yaml level
def _check_names(spec: DataSpec, rep: CheckReport) -> int | None:
    """Class names vs nc; returns the class count to check ids against (None if unknown)."""
    names, raw_names, nc = spec.names, spec.raw.get("names"), spec.raw.get("nc")
    where = spec.yaml_path

    def err(key: str, msg: str) -> None:
        rep.add(Problem(where, spec.lines.get(key), "names", msg))

    if raw_names is None:
        err("names", "no 'names:', expected the class names as a list or {id: name} mapping")
    elif (
        isinstance(raw_names, dict)
        and names is not None
        and sorted(map(int, raw_names)) != list(range(len(names)))
    ):
        err(
            "names",
            f"'names' ids are {sorted(map(int, raw_names))}, expected 0..{len(names) - 1} without gaps",
        )
        return len(names)
    elif names is None:
        err(
            "names",
            f"'names' is {type(raw_names).__name__}, expected a list or {{id: name}} mapping with integer "
            "ids",
        )
    elif not names:
        err("names", "'names' is empty, expected at least one class name")
    elif len(set(names)) != len(names):
        dup = next(n for n, k in Counter(names).items() if k > 1)
        err("names", f"class name {dup!r} appears twice in 'names', expected unique names")
    if nc is not None and (not isinstance(nc, int) or isinstance(nc, bool) or nc < 1):
        err("nc", f"'nc: {nc}' is not a positive integer, expected the number of classes")
        nc = None
    if nc is not None and names and nc != len(names):
        err("nc", f"'nc: {nc}' but {len(names)} names, expected nc to equal the number of names")
    return len(names) if names else nc


def _split_images(spec: DataSpec, split: str, rep: CheckReport) -> list[ImageRef]:
    """Existing images of a split; missing sources/list entries and empty splits are reported."""
    refs: list[ImageRef] = []
    for src in spec.splits[split]:
        if not src.exists():
            rep.add(
                Problem(
                    spec.yaml_path,
                    spec.lines.get(split),
                    "missing-split",
                    f"split '{split}': {src} not found, expected a folder of images or a .txt list",
                )
            )
            continue
        try:
            listed = _folder_images(src, rep) if src.is_dir() else list_images(src)
        except DataError as e:  # an unreadable .txt list: name it, keep checking the rest
            rep.add(Problem(spec.yaml_path, spec.lines.get(split), "bad-list", f"split '{split}': {e}"))
            continue
        for r in listed:
            if r.path.is_file():
                refs.append(r)
            else:
                rep.add(
                    Problem(
                        r.listed_in or src,
                        r.line,
                        "missing-image",
                        f"image {r.path} not found, expected an existing image file",
                    ),
                    image=r.path,
                )
    if not refs and all(s.exists() for s in spec.splits[split]):
        rep.add(
            Problem(
                spec.yaml_path,
                spec.lines.get(split),
                "empty-split",
                f"split '{split}' has no images, "
                f"expected .jpg/.png/.bmp/.tif/.webp files in {', '.join(map(str, spec.splits[split]))}",
            )
        )
    return refs


def _folder_images(folder: Path, rep: CheckReport) -> list[ImageRef]:
    """A folder's images, each real file once; symlink loops are errors (ultralytics' glob would read
    the images over and over), files or folders reached twice through links are warnings."""
    scan = scan_images(folder)
    for link, target in scan.loops:
        rep.add(
            Problem(
                link,
                None,
                "symlink-loop",
                f"symlink loop: leads back to {target}, expected a folder "
                "tree without loops (ultralytics would read its images again and again); remove the link",
            )
        )
    for dup, kept in scan.repeats:
        rep.add(
            Problem(
                dup,
                None,
                "duplicate-image",
                f"same {'folder' if dup.is_dir() else 'file'} as {kept} "
                "(through a symlink): counted once, as that path",
            ),
            error=False,
        )
    return [ImageRef(f) for f in scan.files]


def _check_label_dirs(spec: DataSpec, splits: dict[str, list[ImageRef]], rep: CheckReport) -> None:
    """Orphan labels (a label no image uses) under the label folders of folder splits; splits with no
    label files at all; images shared by splits; two images sharing one label file."""
    expected: dict[Path, Path] = {}
    for split, refs in splits.items():
        for r in refs:
            lbl = label_path(r.path)
            other = expected.setdefault(lbl, r.path)
            if other != r.path:
                rep.add(
                    Problem(r.path, None, "shared-label", f"uses the same label file {lbl} as {other.name}"),
                    error=False,
                )
        if refs and not any(label_path(r.path).is_file() for r in refs):
            rep.add(
                Problem(
                    spec.yaml_path,
                    spec.lines.get(split),
                    "no-labels",
                    f"split '{split}': no label files (expected e.g. {label_path(refs[0].path)}); "
                    "every image counts as defect-free",
                ),
                error=False,
            )
    roots = {
        label_path(src / "x.png").parent for srcs in spec.splits.values() for src in srcs if src.is_dir()
    }
    for root in sorted(r for r in roots if r.is_dir()):
        for f in sorted(root.rglob("*.txt")):
            if f not in expected and f.name not in NOT_LABELS and f.is_file():
                img_dir = f"{os.sep}images{os.sep}".join(
                    f"{f.parent}{os.sep}".rsplit(f"{os.sep}labels{os.sep}", 1)
                )
                img_dir = img_dir.rstrip(os.sep)
                rep.add(
                    Problem(
                        f,
                        None,
                        "orphan-label",
                        f"label without image: no {f.stem}.jpg/.png/... in {img_dir}, expected the image "
                        "that this label describes (or delete the label)",
                    )
                )
    train, val = ({r.path for r in splits.get(k, [])} for k in ("train", "val"))
    for p in sorted(train & val):
        rep.add(
            Problem(
                p, None, "split-overlap", "image is in both train and val: val scores will be optimistic"
            ),
            error=False,
        )


# ------------------------------------------------------------------------------------------ labels
def _row_problem(parts: list[str], nc: int | None) -> tuple[str, str] | None:
    """(kind, message) for a label row that ultralytics would reject or misread, else None."""
    polygon = len(parts) >= 7 and len(parts) % 2 == 1
    if len(parts) != 5 and not polygon:
        return "field-count", f"{len(parts)} fields, expected 5: class x_center y_center width height"
    for i, tok in enumerate(parts):
        name = FIELDS[i] if i < 5 and not polygon else ("class" if i == 0 else f"point {(i + 1) // 2}")
        try:
            v = float(tok)
        except ValueError:
            return "non-numeric", f"field {i + 1} ({name}) is {tok!r}, expected a number"
        if not math.isfinite(v):
            return "non-numeric", f"field {i + 1} ({name}) is {tok!r}, expected a finite number"
    c = float(parts[0])
    if c != int(c):
        return "class-id", f"class id {parts[0]!r} is not an integer, expected 0..{(nc or 1) - 1}"
    if c < 0 or (nc is not None and c >= nc):
        return (
            "class-range",
            f"class id {int(c)} out of range, expected 0..{(nc or 1) - 1} ({nc} names in data.yaml)",
        )
    vals = [float(t) for t in parts[1:]]
    if not polygon and (vals[2] <= 0 or vals[3] <= 0):
        return (
            "degenerate-box",
            f"zero or negative box size (width {vals[2]:g}, height {vals[3]:g}), expected > 0",
        )
    for i, v in enumerate(vals):
        if not 0 <= v <= 1:
            hint = " (pixels? divide by the image size)" if v > 1.5 else ""
            name = FIELDS[i + 1] if not polygon else f"point {i // 2 + 1} {'xy'[i % 2]}"
            return "out-of-range", f"{name} = {v:g} outside [0, 1], expected normalized coordinates{hint}"
    return None


def _check_label(
    lbl: Path, nc: int | None, size: tuple[int, int] | None, imgsz: int | None
) -> list[tuple[str, int | None, str, bool]]:
    """[(kind, line, message, is_error)] for one label file (missing file: a defect-free image)."""
    try:
        text = lbl.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        return []
    except UnicodeDecodeError as e:
        return [
            (
                "encoding",
                None,
                f"label file is not UTF-8 text (byte {e.start}), expected plain text rows",
                True,
            )
        ]
    except OSError as e:
        return [
            ("unreadable-label", None, f"unreadable label file ({e.strerror}), expected a text file", True)
        ]
    out: list[tuple[str, int | None, str, bool]] = []
    seen: dict[tuple[str, ...], int] = {}
    kinds = set()
    for no, line in enumerate(text.splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        bad = _row_problem(parts, nc)
        if bad:
            out.append((bad[0], no, bad[1], True))
            continue
        kinds.add(len(parts) == 5)
        key = tuple(f"{float(t):.6f}" for t in parts)
        if key in seen:
            out.append(
                (
                    "duplicate-box",
                    no,
                    f"duplicate of line {seen[key]} (same class and box), expected each box once",
                    True,
                )
            )
            continue
        seen[key] = no
        if len(parts) == 5:
            out.extend(_box_warnings(no, [float(t) for t in parts[1:]], size, imgsz))
    if len(kinds) > 1:
        out.append(
            (
                "mixed-rows",
                None,
                "polygon rows mixed with box rows, expected all 5-field boxes "
                "(ultralytics drops such an image)",
                True,
            )
        )
    return out


def _box_warnings(no: int, box: list[float], size: tuple[int, int] | None, imgsz: int | None) -> list:
    x, y, w, h = box
    out = []
    if min(x - w / 2, y - h / 2) < -EDGE_TOL or max(x + w / 2, y + h / 2) > 1 + EDGE_TOL:
        out.append(
            (
                "edge-box",
                no,
                f"box extends past the image edge (x {x - w / 2:.4f}..{x + w / 2:.4f}, "
                f"y {y - h / 2:.4f}..{y + h / 2:.4f}), expected within [0, 1]; it will be clipped",
                False,
            )
        )
    if imgsz and size:
        r = imgsz / max(size)
        pw, ph = w * size[0] * r, h * size[1] * r
        if min(pw, ph) < MIN_BOX_PX:
            out.append(
                (
                    "tiny-box",
                    no,
                    f"box is {pw:.1f}x{ph:.1f} px at imgsz {imgsz}, expected >= {MIN_BOX_PX} px: "
                    "ultralytics drops it (use a larger imgsz or tiles)",
                    False,
                )
            )
    return out


def _check_pair(image: Path, nc: int | None, imgsz: int | None) -> list[tuple[Problem, bool]]:
    """Image then label findings for one image: [(problem, is_error)]."""
    img_found, size = check_image(image)
    out = [(Problem(image, None, k, m), e) for k, m, e in img_found]
    lbl = label_path(image)
    out += [(Problem(lbl, line, k, m), e) for k, line, m, e in _check_label(lbl, nc, size, imgsz)]
    return out


def check_dataset(data_yaml: str | os.PathLike, imgsz: int | None = None) -> CheckReport:
    """Check a YOLO data.yaml, its splits, every image and every label row (a COCO json or VOC
    folder is converted first, see :func:`~.formats.prepare_data`).

    Never raises for bad data (every finding is a :class:`Problem` in the report); raises
    :class:`~defectdet.errors.DataError` only when the data.yaml itself is missing or malformed
    (or a COCO/VOC description cannot be converted).
    ``imgsz`` (the training size) enables the tiny-box warning.
    """
    spec = load_data_yaml(as_data_yaml(data_yaml))
    rep = CheckReport(spec.yaml_path, names=spec.names or [])
    nc = _check_names(spec, rep)
    splits = {split: _split_images(spec, split, rep) for split in spec.splits}
    rep.images = {k: len(v) for k, v in splits.items()}
    rep.paths = {k: [r.path for r in v] for k, v in splits.items()}
    _check_label_dirs(spec, splits, rep)
    split_of = {r.path: split for split, refs in reversed(splits.items()) for r in refs}  # first split wins
    gray: dict[str, list[Path]] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # PIL decodes without the GIL
        for image, found in zip(split_of, pool.map(lambda p: _check_pair(p, nc, imgsz), split_of)):
            for problem, is_error in found:
                if problem.kind == "grayscale":
                    gray.setdefault(split_of[image], []).append(image)
                else:
                    rep.add(problem, error=is_error, image=image)
    for split, images in gray.items():  # one line per split, not thousands
        rep.add(
            Problem(
                images[0],
                None,
                "grayscale",
                f"{len(images)} of {rep.images[split]} images in split "
                f"'{split}' are grayscale (e.g. this one): trained as 3 equal channels, feed camera frames "
                "the same way",
            ),
            error=False,
        )
    return rep


def checked_data(
    data: str | os.PathLike,
    *,
    strict: bool = True,
    imgsz: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    log=print,
) -> Path:
    """What ``defectdet train`` runs first: prepare (COCO/VOC -> cached YOLO), check, then either
    refuse (``strict=True``, or dataset-level errors) with one DataError line, or skip the bad
    images (``strict=False``) saying how many. Every error line goes through ``log`` first.
    Returns the data.yaml to train on."""
    from .formats import prepare_data

    yaml_path = as_data_yaml(data, cache_dir)  # the user's yaml (messages name it), or the converted one
    rep = check_dataset(yaml_path, imgsz=imgsz)
    if rep.ok:
        return prepare_data(yaml_path, cache_dir)
    for p in rep.errors:
        log(f"error: {p}")
    hint = f"run 'defectdet data check {data}' to see them again"
    if strict or rep.fatal:
        why = "" if strict else f" ({len(rep.fatal)} dataset-level: skipping images cannot fix them)"
        more = "" if rep.fatal else f", or pass strict=False to skip the {len(rep.bad_files)} bad images"
        raise DataError(f"{data}: dataset has errors{why}: {rep.summary()}; {hint}{more}")
    log(
        f"strict=False: skipping {len(rep.bad_files)} bad images of {sum(rep.images.values())} "
        f"({len(rep.errors)} errors; {hint})"
    )
    return prepare_data(yaml_path, cache_dir, skip=rep.bad_files)
