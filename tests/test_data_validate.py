"""The strict dataset checker: a generated corpus of malformed datasets, each asserting the exact
one-line message (file and line named) from ``defectdet data check`` run in-process, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from PIL import Image

from defectdet.cli import main
from defectdet.data.formats import prepare_data
from defectdet.data.validate import check_dataset, checked_data
from defectdet.errors import DataError

YAML = "# test dataset\npath: .\ntrain: images/train\nval: images/val\nnames: [scratch, spot, crack, dent]\n"


def img(path: Path, size=(32, 32), mode="RGB", fmt=None, **save) -> Path:
    """Write a small noise image (PIL); ``mode='I;16'`` writes 16-bit grayscale."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, size[::-1], dtype=np.uint16))
    else:
        im = Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).convert(mode)
    im.save(path, format=fmt, **save)
    return path


def lbl(d: Path, name: str, text: str | bytes, split: str = "train") -> Path:
    p = d / "labels" / split / f"{name}.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


@pytest.fixture
def ds(tmp_path, monkeypatch) -> Path:
    """A clean dataset: train a (1 box), b (no label = defect-free); val c (1 box), e (empty label)."""
    monkeypatch.setenv("DEFECTDET_HOME", str(tmp_path / "home"))  # conversion caches stay in tmp
    d = tmp_path / "ds"
    for split, name in (("train", "a"), ("train", "b"), ("val", "c"), ("val", "e")):
        img(d / "images" / split / f"{name}.png")
    lbl(d, "a", "0 0.5 0.5 0.25 0.25\n")
    lbl(d, "c", "1 0.5 0.5 0.5 0.5\n", "val")
    lbl(d, "e", "", "val")
    (d / "data.yaml").write_text(YAML)
    return d


def run_check(d: Path, capsys, *extra: str, data: str | None = None) -> tuple[int, list[str], str]:
    rc = main(["data", "check", data or str(d / "data.yaml"), *extra])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return rc, cap.out.splitlines(), cap.err


def test_clean_dataset_passes(ds, capsys):
    rc, out, _ = run_check(ds, capsys)
    assert rc == 0
    assert out == ["OK: 0 errors, 0 warnings in 4 images (train 2, val 2)"]
    rep = check_dataset(ds / "data.yaml")
    assert rep.ok and not rep.bad_files and rep.images == {"train": 2, "val": 2}


def _yaml(text: str):
    return lambda d: (d / "data.yaml").write_text(text)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _append(path: Path, extra: bytes) -> None:
    path.write_bytes(path.read_bytes() + extra)


def _exif_rotated(d: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    img(d / "images/train/r.jpg", fmt="JPEG", exif=exif)


def _gif_as_png(d: Path) -> None:
    Image.new("P", (32, 32)).save(d / "images/train/a.png", format="GIF")


def _list_file(d: Path) -> None:
    (d / "train.txt").write_text("./images/train/a.png\n./images/train/missing.png\n")
    (d / "data.yaml").write_text(YAML.replace("train: images/train", "train: train.txt"))


def _binary_list(d: Path) -> None:
    (d / "train.txt").write_bytes(b"\xff\xfe\x00images")
    (d / "data.yaml").write_text(YAML.replace("train: images/train", "train: train.txt"))


def _empty_val(d: Path) -> None:
    for f in (d / "images/val").iterdir():
        f.unlink()


def _overlap(d: Path) -> None:
    (d / "data.yaml").write_text(YAML.replace("val: images/val", "val: [images/val, images/train]"))


# (case id, mutation of the clean dataset, extra args, exit status, the exact line expected on stdout)
# {d} is the dataset folder. Errors exit 1; warnings alone exit 0.
CORPUS = [
    (
        "class-range",
        lambda d: lbl(d, "a", "7 0.5 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: class id 7 out of range, expected 0..3 (4 names in data.yaml)",
    ),
    (
        "class-negative",
        lambda d: lbl(d, "a", "-1 0.5 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: class id -1 out of range, expected 0..3 (4 names in data.yaml)",
    ),
    (
        "class-float",
        lambda d: lbl(d, "a", "1.5 0.5 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: class id '1.5' is not an integer, expected 0..3",
    ),
    (
        "class-word",
        lambda d: lbl(d, "a", "scratch 0.5 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: field 1 (class) is 'scratch', expected a number",
    ),
    (
        "four-fields",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: 4 fields, expected 5: class x_center y_center width height",
    ),
    (
        "six-fields",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2 0.2 0.9\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: 6 fields, expected 5: class x_center y_center width height",
    ),
    (
        "non-numeric",
        lambda d: lbl(d, "a", "0 0.5 0.5x 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: field 3 (y_center) is '0.5x', expected a number",
    ),
    (
        "nan",
        lambda d: lbl(d, "a", "0 nan 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: field 2 (x_center) is 'nan', expected a finite number",
    ),
    (
        "x-over-1",
        lambda d: lbl(d, "a", "0 1.2 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: x_center = 1.2 outside [0, 1], expected normalized coordinates",
    ),
    (
        "y-negative",
        lambda d: lbl(d, "a", "0 0.5 -0.1 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: y_center = -0.1 outside [0, 1], expected normalized coordinates",
    ),
    (
        "pixels",
        lambda d: lbl(d, "a", "0 16 16 8 8\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: x_center = 16 outside [0, 1], expected normalized coordinates "
        "(pixels? divide by the image size)",
    ),
    (
        "zero-width",
        lambda d: lbl(d, "a", "0 0.5 0.5 0 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: zero or negative box size (width 0, height 0.2), expected > 0",
    ),
    (
        "negative-height",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2 -0.1\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: zero or negative box size (width 0.2, height -0.1), expected > 0",
    ),
    (
        "duplicate",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2 0.2\n1 0.3 0.3 0.1 0.1\n0 0.50 0.5 0.2 0.2000\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:3: duplicate of line 1 (same class and box), expected each box once",
    ),
    (
        "blank-lines-keep-numbers",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2 0.2\n\n0 0.5 0.5 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:3: 4 fields, expected 5: class x_center y_center width height",
    ),
    (
        "mixed-rows",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.2 0.2\n1 0.1 0.1 0.3 0.1 0.2 0.3\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt: polygon rows mixed with box rows, expected all 5-field boxes "
        "(ultralytics drops such an image)",
    ),
    (
        "polygon-out-of-range",
        lambda d: lbl(d, "a", "1 0.1 0.1 1.3 0.1 0.2 0.3\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt:1: point 2 x = 1.3 outside [0, 1], expected normalized coordinates",
    ),
    (
        "not-utf8",
        lambda d: lbl(d, "a", b"0 0.5 0.5 0.2 0.2\n\xff\xfe\n"),
        (),
        1,
        "error: {d}/labels/train/a.txt: label file is not UTF-8 text (byte 18), expected plain text rows",
    ),
    (
        "label-is-a-folder",
        lambda d: (d / "labels/train/b.txt").mkdir(),
        (),
        1,
        "error: {d}/labels/train/b.txt: unreadable label file (Is a directory), expected a text file",
    ),
    (
        "list-not-text",
        _binary_list,
        (),
        1,
        "error: {d}/data.yaml:3: split 'train': {d}/train.txt: cannot read image list (UnicodeDecodeError); "
        "expected UTF-8 text",
    ),
    (
        "orphan-label",
        lambda d: lbl(d, "z", "0 0.5 0.5 0.2 0.2\n"),
        (),
        1,
        "error: {d}/labels/train/z.txt: label without image: no z.jpg/.png/... in {d}/images/train, "
        "expected the image that this label describes (or delete the label)",
    ),
    (
        "zero-byte-image",
        lambda d: (d / "images/train/a.png").write_bytes(b""),
        (),
        1,
        "error: {d}/images/train/a.png: zero-byte image file, expected image data",
    ),
    (
        "not-an-image",
        lambda d: (d / "images/train/a.png").write_text("hello"),
        (),
        1,
        "error: {d}/images/train/a.png: unreadable image (cannot identify image file), expected a png image",
    ),
    (
        "truncated-png",
        lambda d: _truncate(img(d / "images/train/a.png", size=(64, 64))),
        (),
        1,
        "error: {d}/images/train/a.png: truncated or corrupt PNG image (image file is truncated), "
        "expected a complete file",
    ),
    (
        "truncated-jpeg",
        lambda d: _truncate(img(d / "images/train/t.jpg", size=(64, 64), fmt="JPEG")),
        (),
        1,
        "error: {d}/images/train/t.jpg: truncated or corrupt JPEG image (image file is truncated), "
        "expected a complete file",
    ),
    (
        "jpeg-trailing-bytes",
        lambda d: _append(img(d / "images/train/t.jpg", fmt="JPEG"), b"\0\0"),
        (),
        1,
        "error: {d}/images/train/t.jpg: JPEG does not end with an end-of-image marker (cut short or "
        "trailing bytes), expected a complete file (ultralytics would rewrite it in place)",
    ),
    (
        "16-bit-gray",
        lambda d: img(d / "images/train/a.png", mode="I;16"),
        (),
        1,
        "error: {d}/images/train/a.png: 16-bit image, expected 8-bit: the trainer keeps only the high byte "
        "(12-bit data turns almost black); convert to 8-bit with your own scaling",
    ),
    (
        "16-bit-rgb",
        lambda d: cv2.imwrite(str(d / "images/train/a.png"), np.full((32, 32, 3), 4095, np.uint16)),
        (),
        1,
        "error: {d}/images/train/a.png: 16-bit image, expected 8-bit: the trainer keeps only the high byte "
        "(12-bit data turns almost black); convert to 8-bit with your own scaling",
    ),
    (
        "tiny-image",
        lambda d: img(d / "images/train/a.png", size=(8, 8)),
        (),
        1,
        "error: {d}/images/train/a.png: image is 8x8 px, expected at least 10x10",
    ),
    (
        "gif-data",
        _gif_as_png,
        (),
        1,
        "error: {d}/images/train/a.png: GIF image data, expected one of avif, bmp, dng, heic, heif, jp2, "
        "jpeg, jpg, mpo, png, tif, tiff, webp",
    ),
    (
        "nc-mismatch",
        _yaml(YAML + "nc: 5\n"),
        (),
        1,
        "error: {d}/data.yaml:6: 'nc: 5' but 4 names, expected nc to equal the number of names",
    ),
    (
        "names-missing",
        _yaml(YAML.replace("names: [scratch, spot, crack, dent]\n", "")),
        (),
        1,
        "error: {d}/data.yaml: no 'names:', expected the class names as a list or {{id: name}} mapping",
    ),
    (
        "names-gap",
        _yaml(YAML.replace("[scratch, spot, crack, dent]", "{0: scratch, 2: spot}")),
        (),
        1,
        "error: {d}/data.yaml:5: 'names' ids are [0, 2], expected 0..1 without gaps",
    ),
    (
        "names-duplicate",
        _yaml(YAML.replace("crack", "spot")),
        (),
        1,
        "error: {d}/data.yaml:5: class name 'spot' appears twice in 'names', expected unique names",
    ),
    (
        "missing-split",
        _yaml(YAML.replace("val: images/val", "val: images/nope")),
        (),
        1,
        "error: {d}/data.yaml:4: split 'val': {d}/images/nope not found, expected a folder of images or "
        "a .txt list",
    ),
    (
        "empty-split",
        _empty_val,
        (),
        1,
        "error: {d}/data.yaml:4: split 'val' has no images, expected .jpg/.png/.bmp/.tif/.webp files in "
        "{d}/images/val",
    ),
    (
        "list-missing-image",
        _list_file,
        (),
        1,
        "error: {d}/train.txt:2: image {d}/images/train/missing.png not found, expected an existing "
        "image file",
    ),
    # warnings only: exit 0
    (
        "grayscale",
        lambda d: img(d / "images/train/a.png", mode="L"),
        (),
        0,
        "warning: {d}/images/train/a.png: 1 of 2 images in split 'train' are grayscale (e.g. this one): "
        "trained as 3 equal channels, feed camera frames the same way",
    ),
    (
        "exif-rotation",
        _exif_rotated,
        (),
        0,
        "warning: {d}/images/train/r.jpg: EXIF orientation 6: the image is rotated on load, expected "
        "labels drawn on the rotated view",
    ),
    (
        "edge-box",
        lambda d: lbl(d, "a", "0 0.95 0.5 0.2 0.2\n"),
        (),
        0,
        "warning: {d}/labels/train/a.txt:1: box extends past the image edge (x 0.8500..1.0500, y "
        "0.4000..0.6000), expected within [0, 1]; it will be clipped",
    ),
    (
        "tiny-box",
        lambda d: lbl(d, "a", "0 0.5 0.5 0.02 0.03\n"),
        ("--imgsz", "64"),
        0,
        "warning: {d}/labels/train/a.txt:1: box is 1.3x1.9 px at imgsz 64, expected >= 2 px: ultralytics "
        "drops it (use a larger imgsz or tiles)",
    ),
    (
        "split-overlap",
        _overlap,
        (),
        0,
        "warning: {d}/images/train/a.png: image is in both train and val: val scores will be optimistic",
    ),
    (
        "no-labels",
        lambda d: [f.unlink() for f in (d / "labels/val").iterdir()],
        (),
        0,
        "warning: {d}/data.yaml:4: split 'val': no label files (expected e.g. {d}/labels/val/c.txt); "
        "every image counts as defect-free",
    ),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_malformed_corpus(ds, capsys, case):
    _, mutate, extra, rc_expected, line = case
    mutate(ds)
    rc, out, err = run_check(ds, capsys, *extra)
    expected = line.format(d=ds)
    assert expected in out, "\n".join(out)
    assert rc == rc_expected and err == ""
    kind = "error" if rc_expected else "warning"
    assert all(ln.startswith(("error: ", "warning: ")) for ln in out[:-1])  # every finding is one line
    assert out[-1].startswith("FAILED: " if rc_expected else "OK: 0 errors, "), out[-1]
    assert f"{kind}s (" in out[-1] or f"1 {kind} (" in out[-1]


# Cases where the dataset description itself is broken: one line on stderr, exit 2, no traceback.
def _coco(d: Path, text: str) -> str:
    (d / "coco.json").write_text(text)
    return str(d / "coco.json")


def _voc(d: Path, xml: str) -> str:
    (d / "voc").mkdir()
    img(d / "voc" / "JPEGImages" / "p1.png")
    (d / "voc" / "p1.xml").write_text(xml)
    return str(d / "voc")


VOC_XML = (
    "<annotation>\n  <filename>p1.png</filename>\n  <size><width>32</width><height>32</height></size>\n"
    "  <object>\n    <name>scratch</name>\n    <bndbox><xmin>{x}</xmin><ymin>1</ymin><xmax>9</xmax>"
    "<ymax>9</ymax></bndbox>\n  </object>\n</annotation>\n"
)
FATAL = [
    (
        "yaml-syntax",
        lambda d: _yaml("train: [images/train\nval: images/val\n")(d),
        None,
        "{d}/data.yaml:2: malformed YAML (expected ',' or ']', but got ':'); expected a mapping of key: "
        "value",
    ),
    (
        "yaml-list",
        lambda d: _yaml("- images/train\n- images/val\n")(d),
        None,
        "{d}/data.yaml: expected a mapping of key: value at the top level, got list",
    ),
    (
        "yaml-no-val",
        lambda d: _yaml("train: images/train\nnames: [a]\n")(d),
        None,
        "{d}/data.yaml: no 'val:' key; expected 'val: images/val' (a folder, .txt list or list)",
    ),
    (
        "yaml-train-type",
        lambda d: _yaml(YAML.replace("train: images/train", "train: 5"))(d),
        None,
        "{d}/data.yaml:3: 'train' must be a path or a list of paths, got 5",
    ),
    (
        "yaml-not-found",
        lambda d: None,
        "{d}/nope.yaml",
        "{d}/nope.yaml: dataset not found; expected a data.yaml, a COCO .json or a VOC folder",
    ),
    (
        "coco-json-syntax",
        lambda d: _coco(d, '{"images": [\n  {"id": 1\n   "file_name": "a.png"}]}'),
        "coco",
        "{d}/coco.json:3: malformed JSON (Expecting ',' delimiter); expected a COCO instances file",
    ),
    (
        "coco-structure",
        lambda d: _coco(d, '{"images": []}'),
        "coco",
        "{d}/coco.json: expected a COCO object with 'images', 'annotations' and 'categories' lists",
    ),
    (
        "coco-unknown-image",
        lambda d: _coco(
            d,
            json.dumps(
                {
                    "images": [{"id": 1, "file_name": "images/train/a.png", "width": 32, "height": 32}],
                    "annotations": [{"id": 9, "image_id": 2, "category_id": 1, "bbox": [1, 1, 4, 4]}],
                    "categories": [{"id": 1, "name": "scratch"}],
                }
            ),
        ),
        "coco",
        "{d}/coco.json: annotation #0 (id 9) names unknown image_id 2",
    ),
    (
        "voc-xml-syntax",
        lambda d: _voc(d, "<annotation>\n<filename>p1.png</filename>\n</annotationX>\n"),
        "voc",
        "{d}/voc/p1.xml:3: malformed XML (mismatched tag); expected a Pascal VOC <annotation>",
    ),
    (
        "voc-bndbox",
        lambda d: _voc(d, VOC_XML.format(x="abc")),
        "voc",
        "{d}/voc/p1.xml:4: <bndbox><xmin> is 'abc', expected a number of pixels",
    ),
]


@pytest.mark.parametrize("case", FATAL, ids=[c[0] for c in FATAL])
def test_malformed_description_is_one_line(ds, capsys, case):
    _, mutate, target, line = case
    mutate(ds)
    data = {None: None, "coco": str(ds / "coco.json"), "voc": str(ds / "voc")}.get(
        target, (target or "").format(d=ds)
    )
    rc, out, err = run_check(ds, capsys, data=data)
    assert rc == 2 and out == []
    assert err.splitlines() == ["defectdet data: error: " + line.format(d=ds)]


def test_corpus_is_large_enough():
    assert len(CORPUS) + len(FATAL) >= 30
    assert len({c[0] for c in CORPUS + FATAL}) == len(CORPUS) + len(FATAL)


def test_report_api_and_strict_false_skip(ds, tmp_path):
    """bad_files holds exactly the images with errors; prepare_data(skip=...) trains without them."""
    lbl(ds, "a", "9 0.5 0.5 0.2 0.2\n0 2 0.5 0.1 0.1\n")  # two errors, one image
    (ds / "images/val/c.png").write_bytes(b"")
    lbl(ds, "z", "0 0.5 0.5 0.1 0.1\n")  # orphan label: an error, but no image to skip
    rep = check_dataset(ds / "data.yaml")
    assert not rep.ok and not rep.fatal
    assert rep.bad_files == {ds / "images/train/a.png", ds / "images/val/c.png"}
    assert [str(p) for p in rep.errors if p.kind == "class-range"] == [
        f"{ds}/labels/train/a.txt:1: class id 9 out of range, expected 0..3 (4 names in data.yaml)"
    ]
    assert rep.summary() == (
        "FAILED: 4 errors (class-range: 1, empty-image: 1, orphan-label: 1, out-of-range: 1), "
        "0 warnings in 4 images (train 2, val 2); 2 bad images (skipped with strict=False)"
    )
    y = prepare_data(ds / "data.yaml", cache_dir=tmp_path / "cache", skip=rep.bad_files)
    again = check_dataset(y)  # .txt lists now: label folders are not scanned for orphans
    assert again.images == {"train": 1, "val": 1} and again.ok


def test_fatal_errors_are_dataset_level(ds):
    (ds / "data.yaml").write_text(YAML.replace("val: images/val", "val: images/nope"))
    rep = check_dataset(ds / "data.yaml")
    assert [p.kind for p in rep.fatal] == ["missing-split"] and not rep.bad_files


def test_accepted_variants_are_not_problems(ds, capsys):
    """Polygons, CRLF, a BOM, '2.0' as class id, an upper-case extension, COCO input: all clean."""
    lbl(ds, "a", "\ufeff1 0.1 0.1 0.3 0.1 0.2 0.3\r\n2 0.1 0.1 0.3 0.1 0.2 0.35\r\n".encode())
    img(ds / "images/train/U.PNG")
    lbl(ds, "U", "2.0 0.5 0.5 0.1 0.1\n")
    rc, out, _ = run_check(ds, capsys)
    assert (rc, out) == (0, ["OK: 0 errors, 0 warnings in 5 images (train 3, val 2)"])
    doc = {
        "images": [{"id": 1, "file_name": "a.png", "width": 32, "height": 32}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 1, 8, 8]}],
        "categories": [{"id": 5, "name": "scratch"}],
    }
    (ds / "images/train/coco.json").write_text(json.dumps(doc))
    rc, out, _ = run_check(ds, capsys, data=str(ds / "images/train/coco.json"))
    # one image cannot be split: val is train, and the check says so
    assert rc == 0 and out[-1] == "OK: 0 errors, 1 warning (split-overlap: 1) in 2 images (train 1, val 1)"


def test_checked_data_refuses_or_skips(ds, tmp_path):
    """The train-time policy: strict refuses in one line; strict=False skips and says how many."""
    lbl(ds, "a", "9 0.5 0.5 0.2 0.2\n")
    logged: list[str] = []
    with pytest.raises(DataError) as e:
        checked_data(ds / "data.yaml", cache_dir=tmp_path / "c", log=logged.append)
    assert str(e.value) == (
        f"{ds}/data.yaml: dataset has errors: FAILED: 1 error (class-range: 1), 0 warnings in "
        "4 images (train 2, val 2); 1 bad images (skipped with strict=False); run 'defectdet data "
        f"check {ds}/data.yaml' to see them again, or pass strict=False to skip the 1 bad images"
    )
    assert logged == [
        f"error: {ds}/labels/train/a.txt:1: class id 9 out of range, expected 0..3 (4 names in data.yaml)"
    ]
    logged.clear()
    y = checked_data(ds / "data.yaml", strict=False, cache_dir=tmp_path / "c", log=logged.append)
    assert logged[-1].startswith("strict=False: skipping 1 bad images of 4 (1 errors;")
    assert check_dataset(y).images == {"train": 1, "val": 2}
    (ds / "data.yaml").write_text(YAML + "nc: 3\n")  # dataset-level: strict=False cannot help
    with pytest.raises(
        DataError, match=r"dataset has errors \(1 dataset-level: skipping images cannot fix them\)"
    ):
        checked_data(ds / "data.yaml", strict=False, cache_dir=tmp_path / "c", log=logged.append)
    lbl(ds, "a", "0 0.5 0.5 0.2 0.2\n")
    (ds / "data.yaml").write_text(YAML)
    clean = checked_data(ds / "data.yaml", cache_dir=tmp_path / "c")  # 'path: .' -> a resolved copy, no lists
    assert yaml.safe_load(clean.read_text())["path"] == str(ds) and check_dataset(clean).images == {
        "train": 2,
        "val": 2,
    }


def test_unreadable_image_message_with_ultralytics_imported(tmp_path):
    """ultralytics wraps PIL.Image.open (retrying with an optional HEIF plugin); the checker must still
    report a non-image as unreadable, not crash on the missing plugin."""
    from defectdet.data.images import check_image
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    import ultralytics.utils.patches  # noqa: F401  (applies the wrapper)

    bad = tmp_path / "a.png"
    bad.write_bytes(b"this is not an image")
    problems, size = check_image(bad)
    assert size is None
    assert problems == [
        ("unreadable-image", "unreadable image (cannot identify image file), expected a png image", True)
    ]
