"""Defect copy-paste onto good parts (numpy + OpenCV).

``paste=P``: with probability P, a defect-free training image receives 1 to ``paste_max`` defects
cut from the defective training images of the same data set (box plus a margin), blended with a
feathered alpha (1 on the box, falling linearly to 0 at the margin's edge) at the free position,
of several drawn, whose background best matches the patch's margin (no overlap with a box already
there; the box centre inside the optional ROI mask of where parts are) and at the source's scale times a
jitter in [0.8, 1.25], kept within the class's measured box-size range. The pasted boxes are added to the
image's labels; the image's own boxes are never touched. Only training images are pasted onto: the bank is
built from the train split and the hook is installed on the training dataset alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..errors import ConfigError, DataError

DEFAULT_PASTE_MAX = 3
DEFAULT_MARGIN = 0.3  # margin around the box, as a fraction of its larger side (at least 4 px)
JITTER = (0.8, 1.25)
MAX_CONTEXT_COST = 24.0  # mean absolute grey-level difference between a patch's margin and the target


def check_probability(key: str, p) -> None:
    """ConfigError naming ``key`` (``paste``, ``rot90``) unless ``p`` is a number in [0, 1] (a per-image
    augmentation probability: the range `defectdet train` declares)."""
    from ..settings.train import TRAIN

    TRAIN[key].check(p)


def check_paste(p, paste_max=None) -> None:
    check_probability("paste", p)
    from ..settings.train import TRAIN

    if paste_max is not None:
        TRAIN["paste_max"].check(paste_max)


@dataclass
class Patch:
    image: np.ndarray  # (h, w, C) uint8: the box plus its margin
    box: np.ndarray  # (4,) xyxy of the defect inside the patch, pixels
    cls: int
    src_side: int  # the source image's longer side, pixels (the patch's scale reference)


@dataclass
class DefectBank:
    patches: list[Patch]
    size_range: dict[int, tuple[float, float]] = field(
        default_factory=dict
    )  # class -> (min, max) box side / image side

    @classmethod
    def from_images(
        cls,
        images: Sequence[np.ndarray],
        boxes: Sequence[np.ndarray],
        classes: Sequence[np.ndarray],
        margin: float = DEFAULT_MARGIN,
    ) -> DefectBank:
        """Patches of every box of every image (boxes (K, 4) xyxy pixels, classes (K,))."""
        patches, sizes = [], {}
        for img, bx, cl in zip(images, boxes, classes):
            H, W = img.shape[:2]
            side = max(H, W)
            for (x1, y1, x2, y2), c in zip(np.asarray(bx, float).reshape(-1, 4), np.asarray(cl).reshape(-1)):
                m = max(4.0, margin * max(x2 - x1, y2 - y1))
                px1, py1 = int(max(0, np.floor(x1 - m))), int(max(0, np.floor(y1 - m)))
                px2, py2 = int(min(W, np.ceil(x2 + m))), int(min(H, np.ceil(y2 + m)))
                if px2 - px1 < 2 or py2 - py1 < 2 or x2 <= x1 or y2 <= y1:
                    continue
                patches.append(
                    Patch(
                        img[py1:py2, px1:px2].copy(),
                        np.array([x1 - px1, y1 - py1, x2 - px1, y2 - py1]),
                        int(c),
                        side,
                    )
                )
                sizes.setdefault(int(c), []).append(max(x2 - x1, y2 - y1) / side)
        return cls(patches, {c: (float(min(v)), float(max(v))) for c, v in sizes.items()})

    @classmethod
    def from_files(
        cls,
        files: Sequence[str],
        boxes_xywhn: Sequence[np.ndarray],
        classes: Sequence[np.ndarray],
        margin: float = DEFAULT_MARGIN,
    ) -> DefectBank:
        """Read the defective training images (normalised xywh boxes, as YOLO labels)."""
        import cv2

        imgs, bxs, cls_ = [], [], []
        for f, b, c in zip(files, boxes_xywhn, classes):
            b = np.asarray(b, float).reshape(-1, 4)
            if not len(b):
                continue
            img = cv2.imread(str(f), cv2.IMREAD_COLOR)
            if img is None:
                raise DataError(f"{f}: cannot read the image for the defect bank (paste)")
            H, W = img.shape[:2]
            xyxy = np.stack(
                [
                    (b[:, 0] - b[:, 2] / 2) * W,
                    (b[:, 1] - b[:, 3] / 2) * H,
                    (b[:, 0] + b[:, 2] / 2) * W,
                    (b[:, 1] + b[:, 3] / 2) * H,
                ],
                1,
            )
            imgs.append(img), bxs.append(xyxy), cls_.append(np.asarray(c).reshape(-1))
        bank = cls.from_images(imgs, bxs, cls_, margin)
        if not bank.patches:
            raise ConfigError(
                "paste: the training split has no labelled defect to copy (expected defective images)"
            )
        return bank


def load_roi(path: Optional[str]) -> Optional[np.ndarray]:
    """The ROI mask of where parts are (white = part), or None."""
    if not path:
        return None
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ConfigError(
            f"paste_roi={path}: cannot read the mask (expected an image file, white where parts are)"
        )
    return m > 127


def _feather(h: int, w: int, box: np.ndarray) -> np.ndarray:
    """(h, w) alpha: 1 on the box, linear to 0 at the patch border."""
    ys, xs = np.arange(h)[:, None] + 0.5, np.arange(w)[None, :] + 0.5
    x1, y1, x2, y2 = box
    dx = np.where(xs < x1, (xs) / max(x1, 1e-6), np.where(xs > x2, (w - xs) / max(w - x2, 1e-6), 1.0))
    dy = np.where(ys < y1, (ys) / max(y1, 1e-6), np.where(ys > y2, (h - ys) / max(h - y2, 1e-6), 1.0))
    return np.clip(np.minimum(dx, dy), 0, 1).astype(np.float32)


def _overlaps_any(cand: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """(N,) bool: candidate boxes (N, 4) that overlap any of ``boxes`` (K, 4), all xyxy."""
    if not len(boxes):
        return np.zeros(len(cand), dtype=bool)
    ix = np.minimum(cand[:, None, 2], boxes[None, :, 2]) - np.maximum(
        cand[:, None, 0], boxes[None, :, 0]
    )  # (N, K)
    iy = np.minimum(cand[:, None, 3], boxes[None, :, 3]) - np.maximum(
        cand[:, None, 1], boxes[None, :, 1]
    )  # (N, K)
    return ((ix > 0) & (iy > 0)).any(1)


def _scaled(patch: Patch, side: int, bank: DefectBank, rng: np.random.Generator):
    """The patch resized for a target image of longer side ``side``: (image, box)."""
    import cv2

    s = side / patch.src_side * rng.uniform(*JITTER)
    lo, hi = bank.size_range.get(patch.cls, (0.0, np.inf))
    bside = max(patch.box[2] - patch.box[0], patch.box[3] - patch.box[1])
    s = float(np.clip(s, lo * side / bside, hi * side / bside))  # the class's measured size range
    h, w = patch.image.shape[:2]
    nh, nw = max(2, int(round(h * s))), max(2, int(round(w * s)))
    img = cv2.resize(patch.image, (nw, nh), interpolation=cv2.INTER_LINEAR if s > 1 else cv2.INTER_AREA)
    return img, patch.box * np.array([nw / w, nh / h, nw / w, nh / h])


def paste_defects(
    img: np.ndarray,
    boxes: np.ndarray,
    bank: DefectBank,
    rng: np.random.Generator,
    max_n: int = DEFAULT_PASTE_MAX,
    roi: Optional[np.ndarray] = None,
    tries: int = 64,
    max_cost: float = MAX_CONTEXT_COST,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Paste 1..max_n defects onto ``img`` (H, W, C) uint8 whose boxes are ``boxes`` (K, 4) xyxy.

    Of ``tries`` random free positions, each defect goes where the target best matches the patch's
    margin (least mean absolute difference under the feathered ring), so the defect lands on a
    similar background (a trace on a trace, fabric on fabric) instead of a visible seam; a patch
    whose margin differs from every position by more than ``max_cost`` grey levels on average (a
    defect cut from another kind of surface) is not pasted, and another patch is drawn (at most
    ``3 * max_n`` patches are tried).
    Returns (new image, the added boxes (M, 4) xyxy pixels, their classes (M,)); the input is not modified.
    """
    out = img.copy()
    H, W = img.shape[:2]
    taken = np.asarray(boxes, float).reshape(-1, 4)
    added, added_cls = [], []
    want = int(rng.integers(1, max_n + 1))
    for _ in range(3 * max_n):
        if len(added) >= want:
            break
        patch = bank.patches[int(rng.integers(len(bank.patches)))]
        pimg, pbox = _scaled(patch, max(H, W), bank, rng)
        ph, pw = pimg.shape[:2]
        if ph > H or pw > W:
            continue
        a = _feather(ph, pw, pbox)[..., None]  # (ph, pw, 1)
        ring = (1 - a) * (a > 0)  # (ph, pw, 1) where the patch's context blends into the target
        xs, ys = rng.integers(0, W - pw + 1, tries), rng.integers(0, H - ph + 1, tries)  # (tries,) each
        cand = pbox[None] + np.stack([xs, ys, xs, ys], 1)  # (tries, 4)
        ok = ~_overlaps_any(cand, taken)  # (tries,)
        if roi is not None:
            cx, cy = ((cand[:, 0] + cand[:, 2]) / 2).astype(int), ((cand[:, 1] + cand[:, 3]) / 2).astype(int)
            ok &= np.array([_roi_at(roi, x, y, H, W) for x, y in zip(cx, cy)], dtype=bool)
        if not ok.any():
            continue
        xs, ys, cand = xs[ok], ys[ok], cand[ok]
        windows = np.lib.stride_tricks.sliding_window_view(
            out, (ph, pw), axis=(0, 1)
        )  # (H-ph+1, W-pw+1, C, ph, pw)
        regions = windows[ys, xs].astype(np.float32)  # (n, C, ph, pw) copies
        diff = np.abs(regions - pimg.transpose(2, 0, 1).astype(np.float32)[None])  # (n, C, ph, pw)
        weight = np.broadcast_to(ring[..., 0], regions.shape[1:]).ravel()  # (C * ph * pw,)
        costs = (
            diff.reshape(len(xs), -1) @ weight / max(weight.sum(), 1e-6)
        )  # (n,) mean |difference| on the ring
        i = int(np.argmin(costs))  # the first of equal costs
        if costs[i] > max_cost:
            continue
        x0, y0, box = int(xs[i]), int(ys[i]), cand[i]
        region = regions[i].transpose(1, 2, 0)  # (ph, pw, C)
        out[y0 : y0 + ph, x0 : x0 + pw] = np.clip(a * pimg + (1 - a) * region + 0.5, 0, 255).astype(np.uint8)
        taken = np.vstack([taken, box[None]])
        added.append(box), added_cls.append(patch.cls)
    return out, np.asarray(added, float).reshape(-1, 4), np.asarray(added_cls, dtype=int)


def _roi_at(roi: np.ndarray, cx: int, cy: int, H: int, W: int) -> bool:
    ry, rx = int(cy * roi.shape[0] / H), int(cx * roi.shape[1] / W)
    return bool(roi[min(ry, roi.shape[0] - 1), min(rx, roi.shape[1] - 1)])


def preview_grid(
    samples: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]], path: Path, cols: int = 4, tile: int = 320
) -> Path:
    """A JPEG grid of pasted samples (image, original boxes, pasted boxes): originals green, pasted
    red, so a user can judge whether the pasted defects look real."""
    import cv2

    from ..config import atomic_write_bytes

    tiles = []
    for img, orig, pasted in samples:
        t = img.copy()
        for b, colour in [(b, (0, 200, 0)) for b in orig] + [(b, (0, 0, 255)) for b in pasted]:
            x1, y1, x2, y2 = (int(round(v)) for v in b)
            cv2.rectangle(t, (x1 - 2, y1 - 2), (x2 + 2, y2 + 2), colour, 1)
        s = tile / max(t.shape[:2])
        t = cv2.resize(t, (int(t.shape[1] * s), int(t.shape[0] * s)))
        tiles.append(cv2.copyMakeBorder(t, 0, tile - t.shape[0], 0, tile - t.shape[1], cv2.BORDER_CONSTANT))
    while len(tiles) % cols:
        tiles.append(np.zeros_like(tiles[0]))
    grid = np.vstack([np.hstack(tiles[i : i + cols]) for i in range(0, len(tiles), cols)])
    ok, buf = cv2.imencode(".jpg", grid, [cv2.IMWRITE_JPEG_QUALITY, 90])
    return atomic_write_bytes(path, buf.tobytes(), fsync=False)
