"""Hostile or inconsistent datasets, by class: image headers declaring absurd sizes, symlink loops
and links to the same file, COCO/VOC boxes that are inverted, ``data stats`` against ``data check``'s
verdicts, bad numeric options, a corrupt checkpoint. Each ends in one line naming the file (or the
option) and a non-zero exit, never a traceback."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from defectdet.cli import main
from defectdet.data.formats import list_images
from defectdet.data.images import MAX_IMAGE_PIXELS, image_size, scan_images
from defectdet.data.stats import dataset_stats
from defectdet.data.validate import check_dataset, checked_data
from defectdet.errors import DataError
from defectdet.evaluate import read_split

YAML = "train: images/train\nval: images/val\nnames: [scratch, spot]\n"
BOMB = (
    "image header declares 10,000,000,000 pixels, expected at most 178,956,970 "
    "(a hostile or corrupt header; not decoded)"
)


def img(path: Path, size=(32, 32)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)
    return path


def bomb_png(path: Path, w: int = 100_000, h: int = 100_000) -> Path:
    """A 60-byte PNG whose IHDR declares w x h (valid chunks and CRCs)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    path.parent.mkdir(parents=True, exist_ok=True)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 16))
        + chunk(b"IEND", b"")
    )
    return path


def bad_png(path: Path, kind: str) -> tuple[Path, str]:
    """A .png no reader may start on, and the message naming it: ``bomb`` (IHDR declares 100000 x 100000),
    ``not-an-image`` (text), ``undecodable`` (a sane 32 x 32 header, far too little pixel data after it: only
    a decode finds it; the message is the calibration reader's, export/calibration.py)."""
    if kind == "bomb":
        return bomb_png(path), BOMB
    if kind == "not-an-image":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"plain text, not image data\n")
        return path, "unreadable image (cannot identify image file), expected a png image"
    assert kind == "undecodable", kind
    return bomb_png(
        path, 32, 32
    ), "OpenCV cannot decode the image (truncated or corrupt data); expected a complete png image"


def label(d: Path, split: str, name: str, text: str) -> None:
    p = d / "labels" / split / f"{name}.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


@pytest.fixture
def ds(tmp_path, monkeypatch) -> Path:
    """train a (1 box), b (defect-free); val c (1 box)."""
    monkeypatch.setenv("DEFECTDET_HOME", str(tmp_path / "home"))
    d = tmp_path / "ds"
    for split, name in (("train", "a"), ("train", "b"), ("val", "c")):
        img(d / "images" / split / f"{name}.png")
    label(d, "train", "a", "0 0.5 0.5 0.25 0.25\n")
    label(d, "val", "c", "1 0.5 0.5 0.5 0.5\n")
    (d / "data.yaml").write_text(YAML)
    return d


def run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        rc = main(list(argv))
    except SystemExit as e:  # argparse exits (the console script turns this into the exit status)
        rc = e.code
    cap = capsys.readouterr()
    assert "Traceback" not in cap.out + cap.err
    return rc, cap.out, cap.err


# ------------------------------------------------------------------------------- hostile headers
def test_a_bomb_header_is_refused_before_decoding(tmp_path):
    p = bomb_png(tmp_path / "bomb.png")
    with pytest.raises(DataError) as e:
        image_size(p)
    assert str(e.value) == f"{p}: {BOMB}"
    big = bomb_png(tmp_path / "big.png", 20_000, 10_000)  # 2e8 pixels: over the limit, under PIL's too
    assert 20_000 * 10_000 > MAX_IMAGE_PIXELS
    with pytest.raises(DataError, match="declares"):
        image_size(big)


def test_bomb_header_in_check_stats_train_and_val(ds, tmp_path, capsys):
    bomb = bomb_png(ds / "images" / "val" / "bomb.png")
    rc, out, _ = run(capsys, "data", "check", str(ds / "data.yaml"))
    assert rc == 1 and f"error: {bomb}: {BOMB}" in out.splitlines()
    rc, out, _ = run(
        capsys, "data", "stats", str(ds / "data.yaml"), "--imgsz", "64", "--out", str(tmp_path / "s")
    )
    assert rc == 0 and f"warning: {bomb}: {BOMB}" in out.splitlines()
    assert "1 images with errors left out" in out
    logged: list[str] = []
    with pytest.raises(DataError, match="dataset has errors"):  # what `defectdet train` runs first
        checked_data(ds / "data.yaml", cache_dir=tmp_path / "c", log=logged.append)
    assert logged == [f"error: {bomb}: {BOMB}"]
    with pytest.raises(DataError) as e:  # `defectdet val` reads the split before the model runs
        read_split(ds / "data.yaml", "val")
    assert str(e.value) == f"{bomb}: {BOMB}"
    from modelfiles import tiny_onnx

    model = tmp_path / "m.onnx"
    model.write_bytes(
        tiny_onnx()
    )  # a valid file (a bad one is refused first, tests/test_model_files.py): never run
    rc, _, err = run(capsys, "val", "--model", str(model), "--data", str(ds / "data.yaml"))
    assert rc == 2 and err.splitlines() == [f"defectdet val: error: {bomb}: {BOMB}"]


# ------------------------------------------------------------------------------- symlinks
def test_symlink_loop_and_links_to_one_file_count_each_real_file_once(ds, capsys):
    train = ds / "images" / "train"
    (train / "sub").mkdir()
    img(train / "sub" / "d.png")
    os.symlink(".", train / "loop")  # images/train/loop -> images/train
    os.symlink("a.png", train / "a_link.png")  # the same file twice
    os.symlink("sub", train / "sub_again")  # the same folder twice
    scan = scan_images(train)
    assert scan.files == [train / "a.png", train / "b.png", train / "sub" / "d.png"]
    assert scan.loops == [(train / "loop", train)]
    assert sorted(scan.repeats) == [
        (train / "a_link.png", train / "a.png"),
        (train / "sub_again", train / "sub"),
    ]
    assert [r.path for r in list_images(train)] == scan.files
    rep = check_dataset(ds / "data.yaml")
    assert rep.images == {"train": 3, "val": 1}
    assert [p.kind for p in rep.fatal] == ["symlink-loop"]
    assert str(rep.fatal[0]).startswith(f"{train / 'loop'}: symlink loop: leads back to {train}")
    assert sorted(p.kind for p in rep.warnings if p.kind == "duplicate-image") == ["duplicate-image"] * 2
    rc, _, err = run(capsys, "data", "stats", str(ds / "data.yaml"))
    assert rc == 2 and len(err.splitlines()) == 1 and "symlink loop" in err


# ------------------------------------------------------------------------------- foreign formats
def _coco(tmp_path: Path, bbox: list[float]) -> Path:
    img(tmp_path / "coco" / "images" / "p.png", (100, 80))
    doc = {
        "images": [{"id": 1, "file_name": "p.png", "width": 100, "height": 80}],
        "annotations": [{"id": 7, "image_id": 1, "category_id": 1, "bbox": bbox, "iscrowd": 0}],
        "categories": [{"id": 1, "name": "scratch"}],
    }
    (tmp_path / "coco" / "instances.json").write_text(json.dumps(doc))
    return tmp_path / "coco" / "instances.json"


@pytest.mark.parametrize("bbox", [[50, 40, -10, 5], [50, 40, 10, -5], [50, 40, float("nan"), 5]])
def test_coco_box_with_negative_size_is_an_error_in_check_and_convert(tmp_path, monkeypatch, capsys, bbox):
    monkeypatch.setenv("DEFECTDET_HOME", str(tmp_path / "home"))
    js = _coco(tmp_path, bbox)
    want = (
        f"{js}: annotation #0 (id 7, image id 1): bbox {bbox} has a negative width/height or a non-finite "
        "number; expected [x_min, y_min, width, height] in pixels with width, height >= 0"
    )
    rc, _, err = run(capsys, "data", "check", str(js))
    assert rc == 2 and err.splitlines() == [f"defectdet data: error: {want}"]
    rc, _, err = run(capsys, "data", "convert", "--from", "coco", str(js), "--out", str(tmp_path / "out"))
    assert (
        rc == 2 and err.splitlines() == [f"defectdet data: error: {want}"] and not (tmp_path / "out").exists()
    )


def test_coco_zero_size_box_is_still_skipped_with_a_note(tmp_path, capsys):
    js = _coco(tmp_path, [50, 40, 0, 5])
    rc, out, _ = run(capsys, "data", "convert", "--from", "coco", str(js), "--out", str(tmp_path / "out"))
    assert rc == 0 and "zero-area boxes skipped" in out


def test_voc_inverted_box_is_an_error(tmp_path, capsys):
    img(tmp_path / "voc" / "JPEGImages" / "p.png", (100, 80))
    (tmp_path / "voc" / "Annotations").mkdir()
    xml = tmp_path / "voc" / "Annotations" / "p.xml"
    xml.write_text(
        "<annotation><filename>p.png</filename><size><width>100</width><height>80</height></size>\n"
        "<object><name>scratch</name><bndbox><xmin>60</xmin><ymin>10</ymin><xmax>40</xmax>"
        "<ymax>30</ymax></bndbox></object></annotation>\n"
    )
    rc, _, err = run(
        capsys, "data", "convert", "--from", "voc", str(tmp_path / "voc"), "--out", str(tmp_path / "o")
    )
    assert rc == 2 and err.splitlines() == [
        f"defectdet data: error: {xml}:2: <bndbox> xmin 60 xmax 40 ymin 10 ymax 30; "
        "expected xmin <= xmax and ymin <= ymax (pixel edges)"
    ]


# ------------------------------------------------------------------------------- stats vs check
@pytest.mark.parametrize(
    "yaml_text, kind",
    [
        ("train: images/train\nval: images/val\nnames: {0: scratch, 2: spot}\n", "names"),  # a gap
        ("train: images/train\nval: images/val\n", "names"),  # no names
        ("train: images/nowhere\nval: images/val\nnames: [scratch, spot]\n", "missing-split"),
    ],
)
def test_stats_refuses_what_check_calls_dataset_level(ds, capsys, yaml_text, kind):
    (ds / "data.yaml").write_text(yaml_text)
    fatal = check_dataset(ds / "data.yaml").fatal
    assert [p.kind for p in fatal] == [kind]
    with pytest.raises(DataError) as e:
        dataset_stats(ds / "data.yaml")
    assert str(e.value).startswith(str(fatal[0])) and "inf" not in str(e.value)
    rc, out, err = run(capsys, "data", "stats", str(ds / "data.yaml"))
    assert rc == 2 and len(err.splitlines()) == 1 and "recommended" not in out


def test_stats_leaves_out_exactly_the_images_check_flags(ds):
    for name, text in (
        ("x", "5 0.5 0.5 0.2 0.2\n"),  # class id out of range
        ("y", "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n"),  # duplicate box
        ("z", "1 0.5 0.5 0.1 0.1\n"),
    ):  # clean
        img(ds / "images" / "train" / f"{name}.png")
        label(ds, "train", name, text)
    rep = check_dataset(ds / "data.yaml")
    flagged = {p.kind: p.path.stem for p in rep.errors}
    assert flagged == {"class-range": "x", "duplicate-box": "y"}
    s = dataset_stats(ds / "data.yaml", imgsz=64)
    tr = s["splits"]["train"]
    assert tr["excluded_images"] == len(rep.bad_files) == 2
    assert (tr["images"], tr["instances"], tr["instances_per_class"]) == (3, 2, {"scratch": 1, "spot": 1})
    assert s["check"] == rep.summary() and s["check"].startswith("FAILED: 2 errors")


# ------------------------------------------------------------------------------- numeric options
@pytest.mark.parametrize(
    "argv, option",
    [
        (["check", "D", "--imgsz", "abc"], "--imgsz"),
        (["check", "D", "--imgsz", "0"], "--imgsz"),
        (["stats", "D", "--imgsz", "-5"], "--imgsz"),
        (["stats", "D", "--imgsz", "1e3"], "--imgsz"),
        (["stats", "D", "--strides", "8,0"], "--strides"),
        (["stats", "D", "--strides", ""], "--strides"),
        (["convert", "--from", "coco", "D", "--out", "O", "--val-fraction", "1.5"], "--val-fraction"),
        (["convert", "--from", "coco", "D", "--out", "O", "--val-fraction", "nan"], "--val-fraction"),
        (["convert", "--from", "coco", "D", "--out", "O", "--val-fraction", "x"], "--val-fraction"),
    ],
)
def test_bad_numeric_options_are_one_line(ds, capsys, argv, option):
    argv = [str(ds / "data.yaml") if a == "D" else a for a in argv]
    rc, out, err = run(capsys, "data", *argv)
    assert rc == 2 and out == "" and len(err.splitlines()) == 1 and option in err


def test_dataset_stats_checks_its_numbers(ds):
    with pytest.raises(DataError, match=r"imgsz=0: expected a positive whole number"):
        dataset_stats(ds / "data.yaml", imgsz=0)
    with pytest.raises(DataError, match=r"strides=\(8, 0\): expected positive whole numbers"):
        dataset_stats(ds / "data.yaml", strides=(8, 0))


# ------------------------------------------------------------------------------- corrupt checkpoint
def test_export_of_a_corrupt_checkpoint_names_the_users_file(tmp_path, capsys):
    pt = tmp_path / "best.pt"
    pt.write_bytes(b"PK\x03\x04 truncated zip, not a checkpoint")
    rc, _, err = run(capsys, "export", "--model", str(pt))
    assert rc == 2 and len(err.splitlines()) == 1
    assert (
        err.startswith(f"defectdet export: error: {pt}: cannot load checkpoint (") and ".export-" not in err
    )
