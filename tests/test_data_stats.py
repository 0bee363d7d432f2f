"""Dataset statistics: the anchor-level imbalance against its formula, the gamma/alpha rule, the
figure and the CLI; the real DeepPCB set against its stats.json when present (slow)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from defectdet.cli import main
from defectdet.data.stats import BANDS, dataset_stats, recommend_preset

DEEPPCB = Path(__file__).resolve().parents[2] / "shared" / "data" / "deeppcb"


def img(path: Path, size=(40, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(path)


@pytest.fixture
def ds(tmp_path) -> Path:
    """train: A (a small and a whole-image box), B (empty label), C (no label); val: D (one box),
    E (a row that `data check` refuses: left out)."""
    d = tmp_path / "ds"
    for split, name in (("train", "A"), ("train", "B"), ("train", "C"), ("val", "D"), ("val", "E")):
        img(d / "images" / split / f"{name}.png")
    (d / "labels/train").mkdir(parents=True)
    (d / "labels/val").mkdir(parents=True)
    (d / "labels/train/A.txt").write_text("0 0.5 0.5 0.25 0.2\n2 0.5 0.5 1 1\n")
    (d / "labels/train/B.txt").write_text("")
    (d / "labels/val/D.txt").write_text("1 0.5 0.5 0.1 0.1\n")
    (d / "labels/val/E.txt").write_text("0 0.5 0.5 0.1 0.1\nbad row\n")
    (d / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [scratch, spot, crack]\n")
    return d


def test_counts_and_anchor_imbalance_follow_the_formula(ds):
    s = dataset_stats(ds / "data.yaml", imgsz=64, strides=(8, 16, 32))
    tr = s["splits"]["train"]
    assert (tr["images"], tr["defect_images"], tr["defect_free_images"], tr["instances"]) == (3, 1, 2, 2)
    assert tr["defect_free_fraction"] == pytest.approx(2 / 3, abs=1e-6)
    assert tr["instances_per_class"] == {"scratch": 1, "spot": 0, "crack": 1}
    # 40x30 image letterboxed to 64: scale 1.6. Small box 10x6 px -> 16x9.6 px at imgsz.
    locations = 8 * 8 + 4 * 4 + 2 * 2  # (64/8)^2 + (64/16)^2 + (64/32)^2 = 84
    small = 16 * 9.6 * (1 / 64 + 1 / 256 + 1 / 1024)  # 3.15 anchor centres inside: all positive
    big = min(10, 64 * 48 * (1 / 64 + 1 / 256 + 1 / 1024))  # 63 inside, capped at topk=10
    a = tr["anchors"]
    assert a["locations_per_image"] == locations
    assert a["positives_per_image"] == pytest.approx((small + big) / 3, abs=1e-3)
    p = (small + big) / (3 * locations)
    assert a["positive_fraction"] == pytest.approx(p, rel=1e-5)
    assert a["negatives_per_positive"] == pytest.approx((1 - p) / p, abs=0.1)
    # the printed decomposition: positive fraction = (1 - defect-free) x positive fraction in defect images
    assert a["positive_fraction"] == pytest.approx(
        (1 - tr["defect_free_fraction"]) * a["positive_fraction_in_defect_images"], rel=1e-5
    )
    assert tr["box_min_side_px_p10_p50_p90"][1] == pytest.approx(
        (9.6 + 48) / 2
    )  # median of the two min sides
    val = s["splits"]["val"]
    assert (val["excluded_images"], val["images"], val["instances"], tr["excluded_images"]) == (1, 1, 1, 0)
    # val box: 4x3 px -> 6.4x4.8 px at 64, below the smallest stride, fewer than one anchor centre inside
    assert s["splits"]["val"]["boxes_below_min_stride"] == 1
    assert s["splits"]["val"]["anchors"]["boxes_with_no_anchor_inside"] == 1


def _split(ratio, f0=0.5, q=1e-3):
    return {
        "anchors": {"negatives_per_positive": ratio, "positive_fraction_in_defect_images": q},
        "defect_free_fraction": f0,
    }


@pytest.mark.parametrize(
    "ratio, preset, gamma, alpha",
    [
        (50.0, "balanced", 0.0, 0.5),
        (244.0, "balanced", 0.0, 0.5),
        (499.9, "balanced", 0.0, 0.5),
        (500.0, "mild", 1.0, 0.5),
        (1500.0, "mild", 1.0, 0.5),
        (5000.0, "standard", 2.0, 0.25),
        (2e4, "extreme", 4.0, 0.1),
        (None, "extreme", 4.0, 0.1),  # no positive at all
    ],
)
def test_recommendation_bands(ratio, preset, gamma, alpha):
    rec = recommend_preset({"splits": {"train": _split(ratio)}})
    assert (rec["preset"], rec["gamma"], rec["alpha"], rec["cls_loss"]) == (preset, gamma, alpha, "focal")
    assert (Path(__file__).resolve().parents[1] / "configs" / "train" / f"{rec['config']}.yaml").is_file()
    assert "Rule: " in rec["rule"] and "< 500:1 -> balanced (gamma=0" in rec["rule"]


@pytest.mark.parametrize("ratio", [50.0, 5000.0, 2e5, None])
def test_the_defect_sampler_makes_the_recommendation_bce_equivalent(ratio):
    """With sampling=defect on (a ``sampler`` entry, as recipe.sampled_stats writes it) the sampler has
    answered the imbalance: balanced (gamma 0, = BCE) at any anchor ratio; without it, the bands."""
    stats = {"splits": {"train": _split(ratio)}, "sampler": {"sampling": "defect", "defect_share": 0.5}}
    rec = recommend_preset(stats)
    assert (rec["preset"], rec["gamma"], rec["alpha"], rec["config"]) == (
        "balanced",
        0.0,
        0.5,
        "focal_balanced",
    )
    assert "sampling=defect draws 50% defective images" in rec["rule"]
    if ratio and ratio >= 500:
        assert recommend_preset({"splits": {"train": _split(ratio)}})["preset"] != "balanced"


def test_recommendation_is_monotonic_in_imbalance():
    """More negatives per positive never gives weaker focusing (gamma) or a larger alpha."""
    recs = [recommend_preset(_split(r)) for r in np.geomspace(10, 1e6, 40)]
    assert all(b["gamma"] >= a["gamma"] and b["alpha"] <= a["alpha"] for a, b in zip(recs, recs[1:]))
    assert [b[0] for b in BANDS] == sorted(b[0] for b in BANDS) and math.isinf(BANDS[-1][0])


def test_defect_free_images_raise_the_imbalance(ds):
    before = dataset_stats(ds / "data.yaml", imgsz=64)["splits"]["train"]["anchors"]
    for i in range(20):
        img(ds / "images/train" / f"clean{i}.png")
    after = dataset_stats(ds / "data.yaml", imgsz=64)["splits"]["train"]["anchors"]
    assert after["positive_fraction"] == pytest.approx(
        before["positive_fraction"] * 3 / 23, rel=1e-5
    )  # 3 -> 23 images
    assert after["positive_fraction_in_defect_images"] == before["positive_fraction_in_defect_images"]
    assert after["negatives_per_positive"] > before["negatives_per_positive"]


def test_stats_cli_writes_text_json_and_figure(ds, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["data", "stats", str(ds / "data.yaml"), "--imgsz", "64", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "recommended: cls_loss=focal preset=" in text and "  why: measured " in text
    assert (out / "stats.txt").read_text().rstrip() in text
    js = json.loads((out / "stats.json").read_text())
    assert js["splits"]["train"]["instances"] == 2 and "_min_side_px" not in js["splits"]["train"]
    with Image.open(out / "stats.png") as im:
        assert im.format == "PNG" and im.size[0] > 500


def test_stats_cli_bad_strides_is_one_line(ds, capsys):
    assert main(["data", "stats", str(ds / "data.yaml"), "--strides", "8,x"]) == 2
    assert capsys.readouterr().err.strip() == (
        "defectdet data: error: --strides '8,x': expected comma-separated integers like 8,16,32"
    )


@pytest.mark.slow
@pytest.mark.skipif(
    not (DEEPPCB / "stats.json").is_file(), reason="DeepPCB not present at ../shared/data/deeppcb"
)
def test_deeppcb_matches_its_stats_json(tmp_path, capsys):
    ref = json.loads((DEEPPCB / "stats.json").read_text())
    bal = dataset_stats(DEEPPCB / "data.yaml")["splits"]
    for split in ("train", "val"):
        assert bal[split]["instances_per_class"] == ref[split]["instances_per_class"]
        assert bal[split]["defect_free_fraction"] == ref[split]["frac_zero_box_images"]
        assert bal[split]["boxes_per_image"]["mean"] == pytest.approx(
            ref[split]["mean_boxes_per_image"], abs=1e-3
        )
        assert bal[split]["box_area_frac_p10_p50_p90"][1] == pytest.approx(
            ref[split]["median_box_area_frac"], rel=1e-3
        )
    neg = dataset_stats(DEEPPCB / "data_with_negatives.yaml")["splits"]
    assert neg["train"]["defect_free_fraction"] == ref["train"]["frac_zero_box_images_with_templates"]
    assert main(["data", "stats", str(DEEPPCB / "data_rare.yaml"), "--out", str(tmp_path / "rare")]) == 0
    capsys.readouterr()
    rare = json.loads((tmp_path / "rare/stats.json").read_text())
    assert rare["splits"]["val"]["instances_per_class"] == ref["val"]["instances_per_class"]
    assert rare["splits"]["val"]["defect_free_fraction"] == ref["val"]["frac_zero_box_images_with_templates"]
    train = rare["splits"]["train"]
    assert (
        train["defect_free_images"] == ref["train"]["template_neg_images"]
    )  # all templates + some defect images
    assert train["defect_free_fraction"] > 0.9
    assert rare["recommendation"]["gamma"] > 0  # rare regime: focusing recommended
    assert (tmp_path / "rare/stats.png").is_file()
