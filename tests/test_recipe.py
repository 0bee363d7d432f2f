"""The rare-defect recipe inside ultralytics' trainer: the train loader's sampler and mosaic draws
follow the weights, paste and native windows touch training images only, val runs at the native
size, the run records what auto resolved to, and bad values are one-line errors."""

import dataclasses
import random
from types import SimpleNamespace

import numpy as np
import pytest

from defectdet.artifact import Recipe, RunInfo
from defectdet.config import load_yaml
from defectdet.errors import ConfigError
from defectdet.offline import setup_ultralytics
from defectdet.recipe import (
    TrainDataCallback,
    auto_crop,
    check_recipe,
    resolve_recipe,
    sampled_stats,
)

TINY = dict(model="yolo11n.yaml", epochs=1, imgsz=128, batch=8, workers=0, plots=False, device="cpu", seed=0)


@pytest.fixture(scope="module")
def rare_data(tmp_path_factory):
    from defectdet.data.synthetic import make_dataset

    # 40 parts at 256 px, 20% defective: rare, and twice the training size (native windows apply)
    return make_dataset(
        tmp_path_factory.mktemp("rare"), images=40, defect_rate=0.2, imgsz=256, seed=1, video_frames=0
    )


def _trainer(data, tmp_path, **recipe):
    setup_ultralytics()
    from defectdet.trainer import DefectdetTrainer

    overrides = {**TINY, "data": str(data), "project": str(tmp_path), "name": "t", "mode": "train"}
    trainer = DefectdetTrainer(overrides=overrides)
    resolved, _ = resolve_recipe(check_recipe(recipe), str(data), TINY["imgsz"])
    trainer.add_callback("on_pretrain_routine_start", TrainDataCallback(resolved))
    trainer.recipe = resolved  # for the tests' checks
    trainer.model = trainer.get_model(cfg="yolo11n.yaml", weights=None)
    return trainer


def test_train_loader_and_mosaic_draw_half_defective_images(rare_data, tmp_path):
    trainer = _trainer(rare_data, tmp_path, sampling="defect", defect_fraction=0.5)
    loader = trainer.get_dataloader(trainer.data["train"], batch_size=8, rank=-1, mode="train")
    ds = loader.dataset
    defective = np.array([len(lb["cls"]) > 0 for lb in ds.labels])
    assert 0.1 < defective.mean() < 0.35  # the data is rare...
    draws = np.concatenate([list(loader.sampler) for _ in range(200)])
    assert len(loader.sampler) == len(ds)  # ...the epoch length is unchanged...
    assert defective[draws].mean() == pytest.approx(
        0.5, abs=0.03
    )  # ...and half of what is drawn is defective
    from ultralytics.data.augment import Mosaic

    mosaic = next(t for t in _walk(ds.transforms) if isinstance(t, Mosaic))
    random.seed(0)
    extra = np.concatenate([mosaic.get_indexes() for _ in range(2000)])
    assert defective[extra].mean() == pytest.approx(0.5, abs=0.03)  # mosaic's extra images follow the sampler
    assert trainer.recipe.sampling == "defect"


def _walk(t):
    stack = [t]
    while stack:
        x = stack.pop()
        yield x
        stack.extend(getattr(x, "transforms", None) or [])


def test_paste_and_windows_touch_training_images_only(rare_data, tmp_path):
    trainer = _trainer(rare_data, tmp_path, sampling="uniform", paste=1.0, crop="native")
    train = trainer.get_dataloader(trainer.data["train"], batch_size=8, rank=-1, mode="train").dataset
    val = trainer.get_dataloader(trainer.data["val"], batch_size=8, rank=-1, mode="val").dataset
    assert "get_image_and_label" in vars(train) and "get_image_and_label" not in vars(val)  # val never pasted
    assert val.imgsz == 256 == trainer.recipe.eval_imgsz  # val letterboxes to the native size
    clean = [i for i, lb in enumerate(train.labels) if not len(lb["cls"])]
    random.seed(3)
    a = train.get_image_and_label(clean[0])
    random.seed(3)
    b = train.get_image_and_label(clean[0])
    assert np.array_equal(a["img"], b["img"])  # deterministic for the seeded stream
    assert a["img"].shape[:2] == (128, 128)  # a native-scale window, not the image downscaled
    counts = []
    for k, i in enumerate(clean[:10]):
        random.seed(k)
        lb = train.get_image_and_label(i)
        boxes = lb["instances"].bboxes
        assert ((boxes >= 0) & (boxes <= 1)).all() and len(lb["cls"]) == len(boxes)
        counts.append(len(boxes))
    assert sum(counts) > 0  # paste=1: defect-free images come back with defects (unless cropped away)


def test_quarter_turns_turn_training_images_and_their_boxes_only(rare_data, tmp_path):
    from defectdet import ultralytics_adapter as ad
    from defectdet.data import crops as C

    trainer = _trainer(rare_data, tmp_path, sampling="uniform", crop="off", rot90=1.0)
    train = trainer.get_dataloader(trainer.data["train"], batch_size=8, rank=-1, mode="train").dataset
    val = trainer.get_dataloader(trainer.data["val"], batch_size=8, rank=-1, mode="val").dataset
    assert trainer.recipe.rot90 == 1.0 and "get_image_and_label" not in vars(val)
    i = next(i for i, lb in enumerate(train.labels) if len(lb["cls"]))
    plain = type(train).get_image_and_label(train, i)  # the image as ultralytics loads it
    img0, boxes0 = plain["img"], ad.label_boxes(plain)[0]
    turns = set()
    for seed in range(12):
        random.seed(seed)
        lb = train.get_image_and_label(i)
        k = next(k for k in (1, 2, 3) if np.array_equal(lb["img"], np.rot90(img0, k)))  # always turned (p=1)
        assert np.allclose(ad.label_boxes(lb)[0], C.rotate90(img0, boxes0, k)[1], atol=1e-3)
        turns.add(k)
    assert turns == {1, 2, 3}


def test_native_windows_with_uniform_sampling_feed_mosaic_from_its_buffer(rare_data, tmp_path):
    """crop=native with ultralytics' own shuffle (sampling=uniform): mosaic picks its extra images from
    the dataset's buffer of recently loaded images, which the native loader must keep filled."""
    trainer = _trainer(rare_data, tmp_path, sampling="uniform", crop="native")
    ds = trainer.get_dataloader(trainer.data["train"], batch_size=8, rank=-1, mode="train").dataset
    from ultralytics.data.augment import Mosaic

    mosaic = next(t for t in _walk(ds.transforms) if isinstance(t, Mosaic))
    assert mosaic.buffer_enabled and mosaic.p > 0
    random.seed(0)
    for i in range(12):
        item = ds[i]  # through every transform, mosaic included
        assert tuple(item["img"].shape[1:]) == (128, 128)
    assert 0 < len(ds.buffer) <= ds.max_buffer_length and set(ds.buffer) <= set(range(12))


def test_a_run_records_the_resolved_recipe_and_a_paste_preview(rare_data, tmp_path, capsys):
    from defectdet.train import train

    run = train(data=str(rare_data), project=str(tmp_path), name="run", paste=0.5, **TINY)
    info = load_yaml(run / "defectdet.yaml")
    assert info["sampling"] == "defect" and info["crop"] == "native" and info["eval_imgsz"] == 256
    assert info["paste"] == 0.5 and info["cls_loss"] in ("focal", "bce")
    assert (run / "paste_preview.jpg").stat().st_size > 1000
    best = run / "weights" / "best.pt"
    ri = RunInfo.find(best)
    assert ri.deploy_imgsz == 256 and ri.imgsz == 128  # export and val default to the native size...
    assert ri.recipe.card_entry()["crop"] == "native"  # ...and the export metadata carries the recipe
    assert ri.data_stats["imgsz"] == 256  # cls_loss=auto measured the data at the native size
    assert "training data sampling=defect, crop=native" in capsys.readouterr().out


@pytest.mark.parametrize(
    "key, value, match",
    [
        ("sampling", "foo", r"sampling='foo': expected one of uniform, defect, repeat"),
        ("paste", 2, r"paste=2: expected a number in \[0, 1\] \(a probability"),
        ("rot90", 2, r"rot90=2: expected a number in \[0, 1\] \(a probability"),
        ("crop", "tiles", r"crop='tiles': expected one of auto, off, native"),
        ("defect_fraction", 1.5, r"defect_fraction=1.5"),
        ("paste_roi", "/nonexistent/mask.png", r"paste_roi=/nonexistent/mask.png: cannot read the mask"),
        ("epochs", 0, r"epochs=0: expected an integer >= 1"),
        ("imgsz", -5, r"imgsz=-5: expected an integer >= 32 \(pixels"),
    ],
)
def test_bad_recipe_values_fail_before_training(rare_data, tmp_path, key, value, match):
    from defectdet.train import train

    with pytest.raises(ConfigError, match=match):
        train(data=str(rare_data), project=str(tmp_path), name="bad", **{**TINY, key: value})


def test_paste_needs_defect_free_images():
    cb = TrainDataCallback(Recipe(paste=0.5))
    every_image_defective = SimpleNamespace(
        labels=[{"cls": np.zeros((1, 1)), "bboxes": np.full((1, 4), 0.5)}] * 3,
        im_files=["a.jpg", "b.jpg", "c.jpg"],
    )
    with pytest.raises(ConfigError, match="no defect-free image to paste onto"):
        cb._bank(every_image_defective)


def test_auto_rules():
    assert (
        auto_crop(np.array([[640, 640]] * 3), 320) == "native"
        and auto_crop(np.array([[400, 400]]), 320) == "off"
    )
    assert check_recipe({})["sampling"] == "auto"


def test_sampled_stats_count_the_share_the_sampler_leaves():
    stats = {
        "splits": {
            "train": {
                "defect_free_fraction": 0.9,
                "anchors": {
                    "positive_fraction_in_defect_images": 0.01,
                    "positive_fraction": 0.001,
                    "negatives_per_positive": 999.0,
                },
            }
        }
    }
    s = sampled_stats(stats, 0.5)["splits"]["train"]
    assert s["defect_free_fraction"] == 0.5 and s["anchors"]["positive_fraction"] == 0.005
    assert s["anchors"]["negatives_per_positive"] == pytest.approx(199.0)  # (1 - 0.005) / 0.005
    assert stats["splits"]["train"]["defect_free_fraction"] == 0.9  # the input is not modified
    assert sampled_stats(stats, 0.5)["sampler"] == {"sampling": "defect", "defect_share": 0.5}
    assert "sampler" not in stats


def test_resolve_recipe_on_a_rare_set(rare_data):
    r, stats = resolve_recipe(check_recipe({}), str(rare_data), 128, need_stats=True)
    assert (r.sampling, r.crop, r.eval_imgsz, r.defect_fraction, r.repeat_thresh) == (
        "defect",
        "native",
        256,
        0.5,
        None,
    )
    assert stats["imgsz"] == 256 and stats["splits"]["train"]["defect_free_fraction"] == 0.5
    assert stats["sampler"]["sampling"] == "defect"  # cls_loss=auto then recommends the BCE-equivalent preset
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.sampling = "uniform"  # frozen: resolved once, then only applied


def test_resolve_recipe_keeps_given_keys_and_reads_no_stats_when_none_are_auto(rare_data):
    r, stats = resolve_recipe(check_recipe({"sampling": "repeat", "crop": "off"}), str(rare_data), 128)
    assert stats is None
    assert (r.sampling, r.crop, r.eval_imgsz, r.defect_fraction) == ("repeat", "off", None, None)
    balanced, _ = resolve_recipe(check_recipe({"defect_fraction": 0.1}), str(rare_data), 128)
    assert balanced.sampling == "uniform"  # 20% defective is above the 10% asked for: no re-weighting


def test_the_callback_takes_the_paste_roi_mask_it_is_given_and_loads_none_itself():
    mask = np.full((8, 8), 255, np.uint8)
    assert TrainDataCallback(Recipe(paste=0.5, paste_roi="mask.png"), mask).roi is mask
    with pytest.raises(ValueError, match="paste_roi=mask.png needs its mask"):
        TrainDataCallback(Recipe(paste=0.5, paste_roi="mask.png"))  # loaded once, by train(): not here
