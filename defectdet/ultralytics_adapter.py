"""Every touch of ultralytics' internals that training needs, in one place.

ultralytics has no public hook for a classification term, a sampler or a per-image transform, so
these reach into named internals; an ultralytics upgrade that moves them is fixed here alone:

* ``criterion.bce`` of ``v8DetectionLoss`` (and of the ``one2many``/``one2one`` branches of
  end-to-end criteria): the element-wise classification term;
* ``trainer.ema.ema``: the EMA copy the validator scores, which needs ``args`` for its criterion;
* ``trainer.get_dataloader`` / ``trainer.build_dataset``: the train loader is built here with
  defectdet's sampler (``InfiniteDataLoader``, ``seed_worker``, ``torch_distributed_zero_first``);
* ``dataset.get_image_and_label`` / ``dataset.load_image`` / ``dataset.labels``: per-image paste
  and native-resolution windows; ``BaseMixTransform.get_indexes``: the extra images that mosaic,
  mixup and cutmix draw outside any sampler follow the same weights.

Importing this module has no side effects; it imports ultralytics only inside functions.
"""

from __future__ import annotations

import os
import random
from copy import copy
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np


# --------------------------------------------------------------------------- the criterion
def replace_cls_term(model, make_term: Callable[[], Any]):
    """Give ``model`` (a DetectionModel with ``.args``) a fresh criterion whose element-wise
    classification term is ``make_term()``; returns the criterion."""
    from .errors import TrainingError

    criterion = model.init_criterion()
    branches = [getattr(criterion, b) for b in ("one2many", "one2one") if hasattr(criterion, b)] or [
        criterion
    ]
    if not all(hasattr(b, "bce") for b in branches):
        raise TrainingError(
            f"{type(criterion).__name__} has no element-wise classification term to replace; "
            "defectdet supports ultralytics detection models (v8/11/12/26 *.yaml)"
        )
    for b in branches:
        b.bce = make_term()
    model.criterion = criterion
    return criterion


def cls_term(criterion):
    """The element-wise classification term of a criterion (for logging)."""
    return getattr(criterion, "bce", None) or getattr(getattr(criterion, "one2many", None), "bce", None)


def training_models(trainer) -> list:
    """The live model and its EMA copy (the validator scores the EMA), EMA given the trainer's args."""
    from ultralytics.utils.torch_utils import unwrap_model

    models = [unwrap_model(trainer.model)]
    if getattr(trainer, "ema", None) is not None:
        trainer.ema.ema.args = trainer.args
        models.append(trainer.ema.ema)
    return models


def is_main_rank() -> bool:
    from ultralytics.utils import RANK

    return RANK in (-1, 0)


def default_cfg_keys() -> dict:
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return DEFAULT_CFG_DICT


# --------------------------------------------------------------------------- the training data
def _mix_transforms(t) -> list:
    """Every BaseMixTransform (Mosaic, MixUp, CutMix) inside a Compose tree."""
    from ultralytics.data.augment import BaseMixTransform

    out, stack = [], [t]
    while stack:
        x = stack.pop()
        if isinstance(x, BaseMixTransform):
            out.append(x)
            stack.append(getattr(x, "pre_transform", None))
        stack.extend(getattr(x, "transforms", None) or [])
    return [x for x in out if x is not None]


def weight_mix_draws(dataset, weights: np.ndarray) -> int:
    """Make the extra images of mosaic/mixup/cutmix follow ``weights`` (drawn with ``random``, which
    ultralytics seeds per worker); returns how many transforms were changed."""
    from ultralytics.data.augment import Mosaic

    cum = np.cumsum(weights).tolist()
    population = range(len(cum))
    changed = 0
    for t in _mix_transforms(dataset.transforms):
        k = t.n - 1 if isinstance(t, Mosaic) else 0

        def get_indexes(k=k):
            idx = random.choices(population, cum_weights=cum, k=max(k, 1))
            return idx if k else idx[0]

        t.get_indexes = get_indexes
        changed += 1
    return changed


def label_boxes(label: dict) -> tuple[np.ndarray, np.ndarray]:
    """(boxes (K, 4) xyxy pixels of label['img'], classes (K,)) of an ultralytics label dict as
    ``get_image_and_label`` returns it (instances normalised xywh)."""
    inst = label["instances"]
    h, w = label["img"].shape[:2]
    b = np.asarray(inst.bboxes, dtype=np.float64).reshape(-1, 4)
    if inst.normalized:
        b = b * np.array([w, h, w, h])
    if inst._bboxes.format == "xywh":
        b = np.concatenate([b[:, :2] - b[:, 2:] / 2, b[:, :2] + b[:, 2:] / 2], 1)
    return b, np.asarray(label["cls"]).reshape(-1)


def set_label_boxes(label: dict, img: np.ndarray, boxes: np.ndarray, classes: np.ndarray) -> dict:
    """Replace image, boxes (xyxy pixels of ``img``) and classes of an ultralytics label dict."""
    from ultralytics.utils.instance import Instances

    h, w = img.shape[:2]
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    xywhn = np.stack(
        [
            (b[:, 0] + b[:, 2]) / 2 / w,
            (b[:, 1] + b[:, 3]) / 2 / h,
            (b[:, 2] - b[:, 0]) / w,
            (b[:, 3] - b[:, 1]) / h,
        ],
        1,
    ).astype(np.float32)  # (K, 4)
    label["img"] = img
    label["resized_shape"] = img.shape[:2]
    label["instances"] = Instances(
        xywhn, np.zeros((0, 1000, 2), dtype=np.float32), None, bbox_format="xywh", normalized=True
    )
    label["cls"] = np.asarray(classes, dtype=np.float32).reshape(-1, 1)
    return label


def load_native(dataset) -> Callable:
    """A ``load_image`` for ``dataset`` that keeps the native resolution (no resize to imgsz).

    Like ultralytics' own ``BaseDataset.load_image`` it records each loaded index in
    ``dataset.buffer`` (the recently loaded images, at most ``max_buffer_length``): Mosaic draws its
    extra images from there whenever images are not cached in RAM and no sampler re-weights its draws.
    The pixels are not kept (``ims`` may hold RAM-cached images at the training size): a buffered
    index is read again from disk, at native resolution."""
    from ultralytics.data.utils import imread

    def load_image(i, rect_mode: bool = True, resize_short: bool = False):
        f = dataset.im_files[i]
        im = imread(f, flags=dataset.cv2_flag)
        if im is None:
            raise FileNotFoundError(f"Image Not Found {f}")
        if dataset.augment and dataset.cache != "ram":
            dataset.buffer.append(i)
            if 1 < len(dataset.buffer) >= dataset.max_buffer_length:
                dataset.buffer.pop(0)
        return im, im.shape[:2], im.shape[:2]

    return load_image


def hook_images(dataset, transform: Callable[[dict, np.random.Generator], dict], native: bool) -> None:
    """Run ``transform(label, rng)`` on every training image the dataset returns (mosaic's extra
    images included); ``native`` loads images at full resolution first. ``rng`` is seeded from
    ``random`` (ultralytics seeds it per worker), so runs are deterministic per seed."""
    orig = dataset.get_image_and_label
    if native:
        dataset.load_image = load_native(dataset)

    def get_image_and_label(index):
        return transform(orig(index), np.random.default_rng(random.getrandbits(64)))

    dataset.get_image_and_label = get_image_and_label


def train_loader(trainer, dataset_path: str, batch_size: int, rank: int, prepare: Callable):
    """ultralytics' train loader, with ``prepare(dataset, rank, world_size)`` run on the dataset
    first; it returns defectdet's sampler, or None for ultralytics' own loader (its shuffle, or its
    DistributedSampler under multi-GPU training)."""
    import torch
    from ultralytics.data import build_dataloader
    from ultralytics.data.build import InfiniteDataLoader, seed_worker
    from ultralytics.utils import RANK
    from ultralytics.utils.torch_utils import torch_distributed_zero_first

    with torch_distributed_zero_first(rank):
        dataset = trainer.build_dataset(dataset_path, "train", batch_size)
    sampler = prepare(dataset, max(RANK, 0), max(int(getattr(trainer, "world_size", 1) or 1), 1))
    if sampler is None:
        return build_dataloader(
            dataset,
            batch=batch_size,
            workers=trainer.args.workers,
            shuffle=True,
            rank=rank,
            drop_last=trainer.args.compile,
            device=trainer.device,
        )
    batch = min(batch_size, len(dataset))
    batches = -(-len(sampler) // max(batch, 1))
    nd = torch.cuda.device_count() if trainer.device.type == "cuda" else 0
    nw = min(os.cpu_count() // max(nd, 1), trainer.args.workers, 0 if batches <= 1 else batches)
    generator = torch.Generator()
    generator.manual_seed((6148914691236517205 + RANK + int(trainer.args.seed)) % (1 << 64))
    return InfiniteDataLoader(
        dataset=dataset,
        batch_size=batch,
        shuffle=False,
        num_workers=nw,
        sampler=sampler,
        prefetch_factor=4 if nw > 0 else None,
        pin_memory=nd > 0,
        collate_fn=getattr(dataset, "collate_fn", None),
        worker_init_fn=seed_worker,
        generator=generator,
        drop_last=False,
    )


def val_loader_at(trainer, dataset_path: str, batch_size: int, rank: int, imgsz: int):
    """ultralytics' val loader, letterboxing to ``imgsz`` instead of the training size."""
    from ultralytics.data import build_dataloader, build_yolo_dataset
    from ultralytics.utils.torch_utils import torch_distributed_zero_first, unwrap_model

    args = copy(trainer.args)
    args.imgsz = int(imgsz)
    gs = max(int(unwrap_model(trainer.model).stride.max()), 32)
    with torch_distributed_zero_first(rank):
        dataset = build_yolo_dataset(
            args, dataset_path, batch_size, trainer.data, mode="val", rect=True, stride=gs
        )
    return build_dataloader(
        dataset,
        batch=batch_size,
        workers=trainer.args.workers * 2,
        shuffle=False,
        rank=rank,
        device=trainer.device,
    )


def dataset_classes(dataset) -> list[np.ndarray]:
    return [np.asarray(lb["cls"]).reshape(-1) for lb in dataset.labels]


def dataset_boxes(dataset) -> list[np.ndarray]:
    """Per image: (K, 4) normalised xywh boxes."""
    return [np.asarray(lb["bboxes"]).reshape(-1, 4) for lb in dataset.labels]


def save_dir(trainer) -> Optional[Path]:
    return Path(trainer.save_dir) if getattr(trainer, "save_dir", None) else None
