"""Formats: data.yaml path resolution, COCO / VOC converters (round trips on samples written here),
prepare_data (cache, resolved copies, skip lists) and that ultralytics reads what we prepare."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from defectdet.cli import main
from defectdet.data import coco, voc
from defectdet.data.collection import Sample, stratified_split
from defectdet.data.formats import (
    detect_format,
    label_path,
    list_images,
    load_data_yaml,
    prepare_data,
    read_labels,
    write_yolo,
)


def img(path: Path, size=(40, 30)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(path.name))
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(autouse=True)
def _cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DEFECTDET_HOME", str(tmp_path / "home"))


# ------------------------------------------------------------------------------- data.yaml paths
def test_label_path_replaces_last_images_folder():
    p = Path("/a/images/b/images/train/x.v1.png")
    assert label_path(p) == Path("/a/images/b/labels/train/x.v1.txt")
    assert label_path(Path("/flat/x.jpg")) == Path("/flat/x.txt")  # no images/ folder: beside the image


@pytest.mark.parametrize(
    "root_line, root", [("", "cfg"), ("path: ../data\n", "data"), ("path: {abs}\n", "data")]
)
def test_path_resolves_against_the_yaml_folder(tmp_path, root_line, root):
    (tmp_path / "data" / "images" / "train").mkdir(parents=True)
    (tmp_path / "cfg").mkdir()
    y = tmp_path / "cfg" / "data.yaml"
    y.write_text(
        root_line.format(abs=tmp_path / "data")
        + "train: images/train\nval: [images/train, v.txt]\nnames: [a]\n"
    )
    spec = load_data_yaml(y)
    assert spec.root == tmp_path / root
    assert spec.splits == {
        "train": [tmp_path / root / "images/train"],
        "val": [tmp_path / root / "images/train", tmp_path / root / "v.txt"],
    }
    assert spec.lines["names"] == (4 if root_line else 3)


def test_list_file_lines_resolve_against_the_list(tmp_path):
    a, b = img(tmp_path / "d/images/a.png"), img(tmp_path / "d/images/b.png")
    lst = tmp_path / "d" / "list.txt"
    lst.write_text(f"./images/a.png\n\nimages/b.png\n{a}\nnotes.md\n")
    refs = list_images(lst)
    assert [(r.path, r.line) for r in refs] == [
        (a, 1),
        (b, 3),
        (a, 4),
    ]  # non-image lines ignored, as ultralytics


def test_read_labels_polygons_become_boxes(tmp_path):
    f = tmp_path / "l.txt"
    f.write_text(
        "1 0.1 0.2 0.5 0.2 0.3 0.6\n0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0 0.2\nx 1 2 3 4\nnan .5 .5 .1 .1\n"
    )
    rows, bad = read_labels(f)
    assert bad == 3
    assert rows[1] == (0, 0.5, 0.5, 0.2, 0.2)
    assert rows[0][0] == 1 and np.allclose(rows[0][1:], [0.3, 0.4, 0.4, 0.4])  # bounds of the polygon


def test_stratified_split_keeps_defects_in_both_splits():
    samples = [
        Sample(Path(f"{i}.png"), 10, 10, [(0, 0.5, 0.5, 0.1, 0.1)] if i < 4 else [], rel=f"{i}.png")
        for i in range(20)
    ]
    stratified_split(samples, 0.25)
    split = {s.rel: s.split for s in samples}
    assert sum(v == "val" for v in split.values()) == 1 + 4  # round(4*.25)=1 defect, round(16*.25)=4 clean
    assert any(s.split == "val" and s.boxes for s in samples) and any(
        s.split == "train" and s.boxes for s in samples
    )
    stratified_split(samples, 0.25)
    assert {s.rel: s.split for s in samples} == split  # deterministic


# ------------------------------------------------------------------------------------ COCO
CATS = [{"id": 7, "name": "dent"}, {"id": 2, "name": "scratch"}, {"id": 3, "name": "spot"}]  # order by id


def coco_sample(root: Path) -> Path:
    """Two splits; non-contiguous category ids; a crowd box; a box poking out of the image."""
    for split, names in (("train", ["p1.png", "p2.png", "p3.png"]), ("val", ["v1.png", "v2.png"])):
        images = [{"id": i + 1, "file_name": n, "width": 40, "height": 30} for i, n in enumerate(names)]
        for n in names:
            img(root / "images" / split / n)
        anns = [
            {"id": 1, "image_id": 1, "category_id": 2, "bbox": [4, 3, 10, 6], "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [20.5, 10, 8, 12.5], "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [0, 0, 2, 2], "iscrowd": 1},
            {"id": 4, "image_id": 2, "category_id": 3, "bbox": [35, 25, 10, 10], "iscrowd": 0},
        ]
        doc = {"images": images, "annotations": anns, "categories": CATS}
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


def test_coco_to_yolo_and_back(tmp_path, capsys):
    src = coco_sample(tmp_path / "coco")
    assert main(["data", "convert", "--from", "coco", str(src), "--out", str(tmp_path / "yolo")]) == 0
    out = capsys.readouterr().out
    assert f"note: {src}/annotations/instances_train.json: 1 crowd annotations skipped" in out
    assert f"note: {src}/annotations/instances_train.json: 1 boxes clipped to the image" in out
    y = tmp_path / "yolo" / "data.yaml"
    data = yaml.safe_load(y.read_text())
    assert data == {
        "train": "images/train",
        "val": "images/val",
        "names": {0: "scratch", 1: "spot", 2: "dent"},
    }
    rows, bad = read_labels(tmp_path / "yolo/labels/train/p1.txt")
    assert bad == 0 and [r[0] for r in rows] == [0, 2]  # scratch (id 2) -> 0, dent (id 7) -> 2
    assert np.allclose(rows[0][1:], [(4 + 5) / 40, (3 + 3) / 30, 10 / 40, 6 / 30], atol=1e-6)
    assert np.allclose(rows[1][1:], [24.5 / 40, 16.25 / 30, 8 / 40, 12.5 / 30], atol=1e-6)
    clipped, _ = read_labels(tmp_path / "yolo/labels/train/p2.txt")  # [35, 25, 10, 10] cut at 40x30
    assert np.allclose(clipped[0][1:], [37.5 / 40, 27.5 / 30, 5 / 40, 5 / 30], atol=1e-6)
    assert (tmp_path / "yolo/labels/train/p3.txt").read_text() == ""  # defect-free image: empty label
    assert os.path.islink(tmp_path / "yolo/images/train/p1.png")  # linked by default

    assert (
        main(["data", "convert", "--from", "yolo", str(y), "--to", "coco", "--out", str(tmp_path / "back")])
        == 0
    )
    back = json.loads((tmp_path / "back/annotations/instances_train.json").read_text())
    assert [c["name"] for c in back["categories"]] == ["scratch", "spot", "dent"]
    by_name = {im["file_name"]: im["id"] for im in back["images"]}
    boxes = sorted(
        (a["bbox"], a["category_id"]) for a in back["annotations"] if a["image_id"] == by_name["p1.png"]
    )
    assert boxes == [([4.0, 3.0, 10.0, 6.0], 1), ([20.5, 10.0, 8.0, 12.5], 3)]


def test_single_coco_json_is_split_and_images_found(tmp_path):
    src = coco_sample(tmp_path / "coco")
    col = coco.read_coco(src / "annotations" / "instances_train.json")  # images in ../images/train
    assert sorted(s.split for s in col.samples) == ["train", "train", "val"]
    assert any("no val split" in n for n in col.notes)


def test_coco_missing_image_names_the_folder_option(tmp_path, capsys):
    src = coco_sample(tmp_path / "coco")
    (src / "images/train/p1.png").unlink()
    assert main(["data", "convert", "--from", "coco", str(src), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(
        f"defectdet data: error: {src}/annotations/instances_train.json: image 'p1.png' not found in "
    )
    assert err.rstrip().endswith("pass the image folder (--images DIR)") and not (tmp_path / "y").exists()


# ------------------------------------------------------------------------------------- VOC
def voc_xml(name: str, objects: list[tuple[str, int, int, int, int]], w=40, h=30) -> str:
    objs = "".join(
        f"<object><name>{c}</name><difficult>0</difficult><bndbox><xmin>{a}</xmin><ymin>{b}</ymin>"
        f"<xmax>{x}</xmax><ymax>{y}</ymax></bndbox></object>"
        for c, a, b, x, y in objects
    )
    return (
        f"<annotation><filename>{name}</filename><size><width>{w}</width><height>{h}</height><depth>3</depth>"
        f"</size>{objs}</annotation>"
    )


VOC_BOXES = {
    "a1": [("spot", 2, 3, 12, 9), ("crack", 20, 5, 39, 29)],
    "a2": [],
    "a3": [("crack", 0, 0, 40, 30)],
    "b1": [("spot", 5, 5, 9, 8)],
}


def voc_sample(root: Path) -> Path:
    for stem, objs in VOC_BOXES.items():
        img(root / "JPEGImages" / f"{stem}.png")
        (root / "Annotations").mkdir(parents=True, exist_ok=True)
        (root / "Annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.png", objs))
    (root / "ImageSets" / "Main").mkdir(parents=True)
    (root / "ImageSets/Main/train.txt").write_text("a1\na2\na3\n")
    (root / "ImageSets/Main/val.txt").write_text("b1\n")
    (root / "classes.txt").write_text("spot\ncrack\n")
    return root


def parse_voc(folder: Path) -> dict[str, list[tuple[str, int, int, int, int]]]:
    out = {}
    for f in sorted((folder / "Annotations").glob("*.xml")):
        root = ET.parse(f).getroot()
        out[f.stem] = [
            (o.findtext("name"), *(int(o.findtext(f"bndbox/{t}")) for t in ("xmin", "ymin", "xmax", "ymax")))
            for o in root.iter("object")
        ]
    return out


def test_voc_to_yolo_and_back_is_exact(tmp_path, capsys):
    src = voc_sample(tmp_path / "voc")
    assert (
        main(["data", "convert", "--from", "voc", str(src), "--out", str(tmp_path / "yolo"), "--copy"]) == 0
    )
    assert "wrote" in capsys.readouterr().out
    y = tmp_path / "yolo/data.yaml"
    assert yaml.safe_load(y.read_text())["names"] == {0: "spot", 1: "crack"}  # classes.txt order
    assert sorted(p.name for p in (tmp_path / "yolo/images/val").iterdir()) == ["b1.png"]
    assert not os.path.islink(tmp_path / "yolo/images/val/b1.png")  # --copy
    rows, _ = read_labels(tmp_path / "yolo/labels/train/a1.txt")
    assert np.allclose(rows[0][1:], [7 / 40, 6 / 30, 10 / 40, 6 / 30], atol=1e-6) and rows[1][0] == 1
    assert (
        main(["data", "convert", "--from", "yolo", str(y), "--to", "voc", "--out", str(tmp_path / "back")])
        == 0
    )
    assert parse_voc(tmp_path / "back") == VOC_BOXES
    assert (tmp_path / "back/classes.txt").read_text() == "spot\ncrack\n"
    assert (tmp_path / "back/ImageSets/Main/val.txt").read_text() == "b1\n"


def test_neu_det_layout(tmp_path):
    """NEU-DET: split folders, images in per-class sub-folders, <filename> without extension."""
    root = tmp_path / "NEU-DET"
    for split, stems in (("train", ["crazing_1", "patches_1", "crazing_2"]), ("validation", ["patches_2"])):
        for stem in stems:
            img(root / split / "images" / stem.split("_")[0] / f"{stem}.jpg", size=(50, 50))
            xml = root / split / "annotations" / f"{stem}.xml"
            xml.parent.mkdir(parents=True, exist_ok=True)
            xml.write_text(voc_xml(stem, [(stem.split("_")[0], 1, 1, 20, 20)], 50, 50))
    assert detect_format(root) == "voc"
    col = voc.read_voc(root)
    assert col.names == ["crazing", "patches"] and col.notes == []
    got = {s.image.name: (s.split, s.boxes[0][0]) for s in col.samples}
    assert got == {
        "crazing_1.jpg": ("train", 0),
        "patches_1.jpg": ("train", 1),
        "crazing_2.jpg": ("train", 0),
        "patches_2.jpg": ("val", 1),
    }


def test_voc_class_not_in_list(tmp_path, capsys):
    src = voc_sample(tmp_path / "voc")
    (src / "Annotations/a2.xml").write_text(voc_xml("a2.png", [("dent", 1, 1, 5, 5)]).replace("><", ">\n<"))
    assert main(["data", "convert", "--from", "voc", str(src), "--out", str(tmp_path / "y")]) == 2
    line = capsys.readouterr().err.strip()
    assert (
        line == f"defectdet data: error: {src}/Annotations/a2.xml:8: class 'dent' is not in the class list "
        "['spot', 'crack']"
    )


# ------------------------------------------------------------------------------- prepare_data
def test_prepare_data_converts_once_into_the_cache(tmp_path):
    src = coco_sample(tmp_path / "coco")
    y1 = prepare_data(src)
    assert y1.is_relative_to(tmp_path / "home" / "data") and y1.name == "data.yaml"
    stamp = y1.stat().st_mtime_ns
    assert prepare_data(src) == y1 and y1.stat().st_mtime_ns == stamp  # reused
    doc = json.loads((src / "annotations/instances_val.json").read_text())
    doc["annotations"] = []
    (src / "annotations/instances_val.json").write_text(json.dumps(doc))
    y2 = prepare_data(src)
    assert y2 != y1 and read_labels(y2.parent / "labels/val/v1.txt") == ([], 0)  # re-converted on change


def test_prepare_data_resolves_relative_root_and_lists(tmp_path):
    d = tmp_path / "ds"
    a, b = img(d / "images/train/a.png"), img(d / "images/val/b.png")
    (d / "cfg").mkdir()
    (d / "cfg/train.txt").write_text("../images/train/a.png\n")  # relative, not ./: rewritten absolute
    y = d / "cfg/data.yaml"
    y.write_text("path: ..\ntrain: cfg/train.txt\nval: images/val\nnames: [x]\n")
    out = prepare_data(y, cache_dir=tmp_path / "cache")
    assert out.is_relative_to(tmp_path / "cache")
    data = yaml.safe_load(out.read_text())
    assert data["path"] == str(d) and data["val"] == str(d / "images/val")
    assert Path(data["train"]).read_text() == f"{a}\n"
    plain = d / "plain.yaml"  # no path:, folders only: ultralytics reads it as we do -> returned as is
    plain.write_text("train: images/train\nval: images/val\nnames: [x]\n")
    assert prepare_data(plain, cache_dir=tmp_path / "cache") == plain
    skipped = yaml.safe_load(prepare_data(plain, cache_dir=tmp_path / "cache", skip={b}).read_text())
    assert Path(skipped["val"]).read_text() == "" and Path(skipped["train"]).read_text() == f"{a}\n"


def test_skip_list_keeps_symlinked_images_with_their_labels(tmp_path):
    """Lists name linked images by their own path (not the link target), so labels are still found."""
    from defectdet.data.stats import dataset_stats

    y = prepare_data(coco_sample(tmp_path / "coco"))  # images are symlinks into the COCO folder
    before = dataset_stats(y)["splits"]["train"]["instances"]
    skipped = prepare_data(y, skip={y.parent / "images/train/p1.png"})
    lines = Path(yaml.safe_load(skipped.read_text())["train"]).read_text().split()
    assert lines == [str(y.parent / "images/train/p2.png"), str(y.parent / "images/train/p3.png")]
    assert dataset_stats(skipped)["splits"]["train"]["instances"] == before - 2  # p1 held 2 boxes


def test_ultralytics_reads_all_three_formats(tmp_path):
    """check_det_dataset + YOLODataset on what prepare_data returns: same images and boxes per split."""
    from defectdet.offline import setup_ultralytics

    setup_ultralytics()
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import YOLODataset
    from ultralytics.data.utils import check_det_dataset, img2label_paths

    assert img2label_paths(["/a/images/b/images/t/x.png"]) == [str(label_path("/a/images/b/images/t/x.png"))]
    sources = {"coco": coco_sample(tmp_path / "coco"), "voc": voc_sample(tmp_path / "voc")}
    sources["yolo"] = write_yolo(coco.read_coco(sources["coco"]), tmp_path / "yolo")
    expected = {"coco": {"train": (3, 3), "val": (2, 3)}, "voc": {"train": (3, 3), "val": (1, 1)}}
    expected["yolo"] = expected["coco"]
    for fmt, src in sources.items():
        d = check_det_dataset(str(prepare_data(src)))
        for split in ("train", "val"):
            ds = YOLODataset(img_path=d[split], data=d, task="detect", imgsz=64, augment=False, hyp=get_cfg())
            assert (len(ds.labels), sum(len(lb["cls"]) for lb in ds.labels)) == expected[fmt][split], (
                fmt,
                split,
            )


@pytest.mark.slow
def test_all_three_formats_train(tmp_path):
    """One tiny epoch per format through ultralytics on the prepared data.yaml."""
    from defectdet.offline import setup_ultralytics

    YOLO = setup_ultralytics().YOLO
    sources = {"coco": coco_sample(tmp_path / "coco"), "voc": voc_sample(tmp_path / "voc")}
    sources["yolo"] = write_yolo(coco.read_coco(sources["coco"]), tmp_path / "yolo")
    for fmt, src in sources.items():
        YOLO("yolo11n.yaml").train(
            data=str(prepare_data(src)),
            epochs=1,
            imgsz=64,
            batch=2,
            device="cpu",
            plots=False,
            workers=0,
            amp=False,
            project=str(tmp_path / "runs"),
            name=fmt,
            val=True,
        )
        assert (tmp_path / "runs" / fmt / "weights" / "best.pt").is_file(), fmt


@pytest.mark.parametrize(
    "fmt, expected",
    [
        ("coco", "not found; expected a COCO json file or a folder with annotations/*.json"),
        ("voc", "not found or not a folder; expected a Pascal VOC folder of .xml annotations"),
    ],
)
def test_convert_missing_source_is_one_line(tmp_path, capsys, fmt, expected):
    assert main(["data", "convert", "--from", fmt, str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err == f"defectdet data: error: {tmp_path / 'nope'}: {expected}\n"
