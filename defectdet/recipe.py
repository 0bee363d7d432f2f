"""The training-data recipe for rare defects: sampling, defect copy-paste, native-resolution windows.

Keys of ``defectdet train`` (recorded in ``<run>/defectdet.yaml``):

    sampling=auto|uniform|defect|repeat   how training images are drawn (defectdet.sampling);
                                           auto: ``defect`` when the train split has defect-free images
                                           and fewer than ``defect_fraction`` defective ones, else uniform
    defect_fraction=0.5                    target share of defective images per epoch (sampling=defect)
    repeat_thresh=0.1                      LVIS threshold t (sampling=repeat)
    paste=P                                probability that a defect-free image gets pasted defects (0 = off)
    paste_max=3                            defects pasted per image, at most
    paste_roi=mask.png                     where parts are (white); pasted defects are centred inside it
    rot90=P                                probability of a random quarter turn (90/180/270 degrees) per
                                           training image; with the flips, every orientation (0 = off)
    crop=auto|off|native                   native: train on imgsz windows at native scale (half of them
                                           centred on a defect); auto: native when the images' median
                                           longer side is >= 1.5 x imgsz. Validation then letterboxes to
                                           the images' native size (``eval_imgsz`` in defectdet.yaml),
                                           which is also the size to export and deploy at.

:func:`resolve_recipe` resolves them once, before training, into a frozen
:class:`defectdet.artifact.Recipe` (no ``auto`` left, the native ``eval_imgsz`` computed), which
``defectdet.yaml`` records (:class:`defectdet.artifact.RunInfo`); :class:`TrainDataCallback` only
applies it (to the trainer's data loaders) through :mod:`defectdet.ultralytics_adapter`; the
per-image work is in :mod:`defectdet.data.paste` and :mod:`defectdet.data.crops`, the weights in
:mod:`defectdet.sampling`.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import sampling as S
from . import ultralytics_adapter as ad
from .artifact import Recipe
from .data import crops as C
from .data import paste as P
from .errors import ConfigError

RECIPE_KEYS = (
    "sampling",
    "defect_fraction",
    "repeat_thresh",
    "paste",
    "paste_max",
    "paste_roi",
    "crop",
    "rot90",
)
RECIPE_DEFAULTS = {
    "sampling": "auto",
    "defect_fraction": S.DEFAULT_DEFECT_FRACTION,
    "repeat_thresh": None,
    "paste": 0.0,
    "paste_max": P.DEFAULT_PASTE_MAX,
    "paste_roi": None,
    "crop": "auto",
    "rot90": 0.0,
}
NATIVE_FACTOR = 1.5  # crop=auto trains on native windows when images are at least this much larger than imgsz


def check_recipe(r: dict[str, Any]) -> dict[str, Any]:
    """The recipe keys with defaults filled in; ConfigError naming the key on a bad value."""
    r = {**RECIPE_DEFAULTS, **{k: v for k, v in r.items() if k in RECIPE_KEYS}}
    if r["sampling"] != "auto":
        S.check_sampling(r["sampling"])
    S.check_sampling("defect", r["defect_fraction"], r["repeat_thresh"])
    P.check_paste(r["paste"], r["paste_max"])
    P.check_probability("rot90", r["rot90"])
    if r["crop"] not in ("auto", *C.CROP_MODES):
        raise ConfigError(f"crop={r['crop']!r}: expected one of auto, {', '.join(C.CROP_MODES)}")
    return r


def auto_crop(shapes: np.ndarray, imgsz: int) -> str:
    return "native" if len(shapes) and float(np.median(shapes.max(1))) >= NATIVE_FACTOR * imgsz else "off"


def train_image_sides(data_yaml, limit: Optional[int] = 200) -> np.ndarray:
    """(N, 2) (h, w) of up to ``limit`` evenly spaced train images (headers only; None: every one)."""
    from .data.formats import as_data_yaml, image_size, list_images, load_data_yaml

    spec = load_data_yaml(as_data_yaml(data_yaml))
    refs = [
        r
        for src in spec.splits.get("train", [])
        if src.exists()
        for r in list_images(src)
        if r.path.is_file()
    ]
    pick = [refs[i] for i in _spaced(len(refs), limit)]
    sizes = []
    for r in pick:
        try:
            w, h = image_size(r.path)
        except OSError:  # `defectdet data check` reports it
            continue
        sizes.append((h, w))
    return np.array(sizes, dtype=int).reshape(-1, 2)


def _spaced(n: int, limit: Optional[int]) -> np.ndarray:
    """Indices of up to ``limit`` evenly spaced items of ``n`` (every one for None)."""
    if not n:
        return np.zeros(0, int)
    return np.unique(np.linspace(0, n - 1, n if limit is None else min(limit, n)).astype(int))


AUTO_CROP_SAMPLE = 200  # crop=auto decides on the median of this many evenly spaced train images


def resolve_recipe(checked: dict[str, Any], data_yaml, imgsz: int, need_stats: bool = False):
    """Resolve the recipe once, before training: ``sampling=auto`` and ``crop=auto`` from the data's
    statistics (``defectdet data stats`` of the train split, image headers), and under
    ``crop=native`` the native size every train image fits (``eval_imgsz``). ``checked``: what
    :func:`check_recipe` returned. Returns (:class:`~defectdet.artifact.Recipe`, the stats of the
    data as training will see it, or None when nothing asked for them): the stats are measured at
    the native size under ``crop=native`` and count the defect-free share that the sampler leaves,
    so the loss recommendation (``cls_loss=auto``) follows the sampled data, not the raw one."""
    r = dict(checked)
    eval_imgsz, stats = None, None
    if r["crop"] in ("auto", "native"):
        sides = train_image_sides(data_yaml, limit=None)  # headers, read once
        if r["crop"] == "auto":
            r["crop"] = auto_crop(sides[_spaced(len(sides), AUTO_CROP_SAMPLE)], imgsz)
        eval_imgsz = C.native_size(sides, 32, imgsz) if r["crop"] == "native" else None
    if r["sampling"] == "auto" or need_stats:
        from .data.stats import dataset_stats

        stats = dataset_stats(data_yaml, imgsz=eval_imgsz or imgsz)
        free = stats["splits"]["train"]["defect_free_fraction"] or 0.0
        if r["sampling"] == "auto":
            r["sampling"] = "defect" if 0 < free < 1 and 1 - free < r["defect_fraction"] else "uniform"
        if r["sampling"] == "defect" and 0 < free < 1:
            stats = sampled_stats(stats, max(r["defect_fraction"], 1 - free))
    mode = r["sampling"]
    recipe = Recipe(
        sampling=mode,
        defect_fraction=r["defect_fraction"] if mode == "defect" else None,
        repeat_thresh=r["repeat_thresh"] if mode == "repeat" else None,
        paste=float(r["paste"]),
        paste_max=int(r["paste_max"]),
        paste_roi=str(r["paste_roi"]) if r["paste_roi"] else None,
        crop=r["crop"],
        rot90=float(r["rot90"]),
        eval_imgsz=eval_imgsz,
    )
    return recipe, stats


def sampled_stats(stats: dict, defect_share: float) -> dict:
    """``stats`` with the train split's defect-free fraction and anchor imbalance as a sampler that
    draws ``defect_share`` defective images leaves them (positive fraction = share x positive
    fraction in defect images), and a ``sampler`` entry saying so (``cls_loss=auto`` reads it)."""
    train = dict(stats["splits"]["train"])
    a = dict(train["anchors"])
    pos = defect_share * a["positive_fraction_in_defect_images"]
    a.update(
        positive_fraction=round(pos, 8), negatives_per_positive=round((1 - pos) / pos, 1) if pos else None
    )
    train.update(anchors=a, defect_free_fraction=round(1 - defect_share, 6))
    return {
        **stats,
        "splits": {**stats["splits"], "train": train},
        "sampler": {"sampling": "defect", "defect_share": round(defect_share, 6)},
    }


class TrainDataCallback:
    """The resolved recipe, carried in the trainer's callbacks (so ultralytics' multi-GPU launcher
    hands it to every worker); :class:`defectdet.trainer.DefectdetTrainer` finds it and builds its
    train loader (and, for native windows, its val loader at ``eval_imgsz``) through
    :meth:`dataloader`. It decides nothing: every value comes from the :class:`Recipe`
    (:func:`resolve_recipe`). As an ``on_pretrain_routine_start`` callback it does nothing.
    ``roi``: the recipe's ``paste_roi`` mask, loaded once by the caller
    (:func:`defectdet.data.paste.load_roi`)."""

    def __init__(self, recipe: Recipe, roi: Optional[np.ndarray] = None):
        if recipe.paste_roi and roi is None:
            raise ValueError(
                f"TrainDataCallback: paste_roi={recipe.paste_roi} needs its mask (data.paste.load_roi)"
            )
        self.recipe, self.roi = recipe, roi

    def __call__(self, trainer) -> None:
        pass

    def dataloader(self, trainer, default, dataset_path, batch_size, rank, mode):
        if mode == "train":
            return ad.train_loader(
                trainer, dataset_path, batch_size, rank, lambda ds, r, w: self.prepare(trainer, ds, r, w)
            )
        if self.recipe.eval_imgsz:
            return ad.val_loader_at(trainer, dataset_path, batch_size, rank, self.recipe.eval_imgsz)
        return default(dataset_path, batch_size, rank, mode)

    # ----------------------------------------------------------------------- per dataset
    def prepare(self, trainer, dataset, rank: int, world: int) -> Optional[S.WeightedEpochSampler]:
        """Install paste/windows/turns on the train dataset, return the sampler (or None)."""
        r, imgsz = self.recipe, int(trainer.args.imgsz)
        native = r.crop == "native"
        bank = self._bank(dataset) if r.paste > 0 else None
        shown = {
            "sampling": r.sampling,
            "crop": r.crop,
            "eval_imgsz": r.eval_imgsz,
            "paste": r.paste,
            "rot90": r.rot90,
            "defect_fraction": r.defect_fraction,
            "repeat_thresh": r.repeat_thresh,
        }
        print("defectdet: training data " + ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None))
        if bank is not None or native or r.rot90 > 0:
            ad.hook_images(dataset, self._transform(bank, imgsz, native), native=native)
            if bank is not None and rank == 0 and ad.is_main_rank() and ad.save_dir(trainer):
                self._preview(
                    dataset, bank, ad.save_dir(trainer) / "paste_preview.jpg", int(trainer.args.seed)
                )
        if r.sampling == "uniform":
            return None
        classes = ad.dataset_classes(dataset)
        nc = len(trainer.data["names"])
        w = S.image_weights(classes, nc, r.sampling, r.defect_fraction, r.repeat_thresh)
        ad.weight_mix_draws(dataset, w)
        return S.WeightedEpochSampler(w, seed=int(trainer.args.seed), rank=rank, world_size=world)

    def _bank(self, dataset) -> P.DefectBank:
        classes, boxes = ad.dataset_classes(dataset), ad.dataset_boxes(dataset)
        if all(len(c) for c in classes):
            raise ConfigError(
                f"paste={self.recipe.paste}: the train split has no defect-free image to "
                "paste onto "
                "(expected some images without boxes; use paste=0)"
            )
        idx = [i for i, c in enumerate(classes) if len(c)]
        return P.DefectBank.from_files(
            [dataset.im_files[i] for i in idx], [boxes[i] for i in idx], [classes[i] for i in idx]
        )

    def _transform(self, bank: Optional[P.DefectBank], imgsz: int, native: bool):
        p, n_max, p_turn, roi = self.recipe.paste, self.recipe.paste_max, self.recipe.rot90, self.roi

        def transform(label: dict, rng: np.random.Generator) -> dict:
            boxes, cls = ad.label_boxes(label)
            img, changed = label["img"], native
            if bank is not None and not len(boxes) and rng.random() < p:
                img, boxes, cls = P.paste_defects(img, boxes, bank, rng, n_max, roi)
                changed = True
            if native:
                img, boxes, keep, _ = C.native_window(img, boxes, imgsz, rng)
                cls = cls[keep]
            if p_turn > 0 and rng.random() < p_turn:
                img, boxes = C.rotate90(img, boxes, int(rng.integers(1, 4)))
                changed = True
            return ad.set_label_boxes(label, img, boxes, cls) if changed else label

        return transform

    def _preview(self, dataset, bank: P.DefectBank, path, seed: int, n: int = 8) -> None:
        import cv2

        clean = [i for i, c in enumerate(ad.dataset_classes(dataset)) if not len(c)]
        rng = np.random.default_rng(seed)
        samples = []
        for i in rng.choice(clean, size=min(n, len(clean)), replace=False):
            img = cv2.imread(str(dataset.im_files[int(i)]), cv2.IMREAD_COLOR)
            if img is not None:
                out, added, _ = P.paste_defects(
                    img, np.zeros((0, 4)), bank, rng, self.recipe.paste_max, self.roi
                )
                samples.append((out, np.zeros((0, 4)), added))
        if samples:
            P.preview_grid(samples, path)
            print(f"defectdet: pasted samples -> {path}")
