"""Synthetic rare-defect data: industrial surfaces where most parts are good and defects are small.

Surfaces: brushed metal, woven fabric, PCB-like traces. Defects (classes, in this order):
scratch, spot, crack, dent. Every image is drawn from its own RNG seeded by (seed, index), so a
dataset is identical for a seed whatever the number of images or the order of generation.

``defectdet synth --out DIR --images N --defect-rate 0.1 --imgsz 320 --seed 0`` writes
``DIR/images/{train,val}/*.png``, ``DIR/labels/{train,val}/*.txt`` (YOLO, empty for good parts),
``DIR/data.yaml`` and ``DIR/parts.mp4`` (a conveyor of passing parts for the camera-loop demo,
with ``DIR/parts.json`` giving which frames show a defective part).
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from ..config import atomic_write_bytes, atomic_write_text, dump_yaml

CLASSES = ("scratch", "spot", "crack", "dent")
SURFACES = ("metal", "fabric", "pcb")


# --------------------------------------------------------------------------- surfaces
def _metal(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Brushed metal: grey base, horizontal grain, a soft lighting gradient."""
    grain = rng.normal(0, 1, (h, w)).astype(np.float32)
    grain = cv2.blur(grain, (max(3, w // 6) | 1, 1)) * 18.0  # streaks along x
    base = rng.uniform(120, 175)
    light = np.linspace(-12, 12, w, dtype=np.float32)[None, :] * rng.choice([-1, 1])
    g = base + grain + light + rng.normal(0, 2.0, (h, w)).astype(np.float32)
    tint = np.array([1.0, 1.0, rng.uniform(0.97, 1.05)], np.float32)  # slight warm/cool cast
    return g[..., None] * tint


def _fabric(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Woven fabric: crossed sinusoidal warp and weft threads with jitter."""
    period = rng.uniform(5, 9)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, 2)
    weave = np.sin(2 * np.pi * xx / period + phase[0]) * np.sin(2 * np.pi * yy / period + phase[1])
    g = 110 + 30 * weave + rng.normal(0, 5, (h, w)).astype(np.float32)
    color = rng.uniform(0.6, 1.3, 3).astype(np.float32)
    return g[..., None] * color


def _pcb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """PCB-like: green solder mask, copper traces and pads."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = (40, 110 + rng.uniform(-15, 15), 45)  # BGR green
    img += rng.normal(0, 4, (h, w, 1)).astype(np.float32)
    copper = (70, 150, 200)
    for _ in range(int(rng.integers(6, 14))):
        x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            x1, y1 = int(rng.integers(0, w)), y0
        else:
            x1, y1 = x0, int(rng.integers(0, h))
        cv2.line(img, (x0, y0), (x1, y1), copper, int(rng.integers(2, 5)))
        cv2.circle(img, (x1, y1), int(rng.integers(3, 6)), copper, -1)
    return img


SURFACE_FNS: dict[str, Callable] = {"metal": _metal, "fabric": _fabric, "pcb": _pcb}


# --------------------------------------------------------------------------- defects
def _scratch(rng, img, mask, s, k):
    """A thin straight line, brighter or darker than the surface."""
    L = rng.uniform(0.08, 0.22) * k
    ang = rng.uniform(0, np.pi)
    cx, cy = rng.uniform(0.15, 0.85, 2) * s
    p0 = (int(cx - L / 2 * math.cos(ang)), int(cy - L / 2 * math.sin(ang)))
    p1 = (int(cx + L / 2 * math.cos(ang)), int(cy + L / 2 * math.sin(ang)))
    shade = float(rng.choice([-70.0, 80.0]))
    th = max(1, int(round(rng.integers(1, 3) * k / s)))  # line width grows with the defect scale
    cv2.line(mask, p0, p1, 1, th + 1)
    layer = np.zeros(img.shape[:2], np.float32)
    cv2.line(layer, p0, p1, 1.0, th, cv2.LINE_AA)
    img += layer[..., None] * shade


def _spot(rng, img, mask, s, k):
    """A dark stain or bright speck with soft edges."""
    r = rng.uniform(0.015, 0.04) * k
    cx, cy = rng.uniform(0.1, 0.9, 2) * s
    axes = (max(2, int(r)), max(2, int(r * rng.uniform(0.6, 1.0))))
    layer = np.zeros(img.shape[:2], np.float32)
    cv2.ellipse(layer, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1.0, -1)
    cv2.ellipse(mask, (int(cx), int(cy)), axes, 0, 0, 360, 1, -1)
    cv2.ellipse(mask, (int(cx), int(cy)), (max(axes), max(axes)), 0, 0, 360, 1, -1)
    layer = cv2.GaussianBlur(layer, (0, 0), max(0.8, r / 4))
    img += layer[..., None] * float(rng.choice([-90.0, 70.0]))


def _crack(rng, img, mask, s, k):
    """A dark jagged random walk with a branch."""
    n = int(rng.integers(6, 12))
    step = rng.uniform(0.012, 0.022) * k
    pt = rng.uniform(0.15, 0.85, 2) * s
    heading = rng.uniform(0, 2 * np.pi)
    pts = [pt.copy()]
    for _ in range(n):
        heading += rng.normal(0, 0.5)
        pt = pt + step * np.array([math.cos(heading), math.sin(heading)])
        pts.append(pt.copy())
    lines = [np.array(pts, np.int32)]
    fork = int(rng.integers(2, n))  # where the branch leaves the main walk
    branch = [pts[fork]]
    bh = heading + rng.choice([-1, 1]) * 0.9
    for _ in range(n // 3):
        branch.append(branch[-1] + step * np.array([math.cos(bh), math.sin(bh)]))
    lines.append(np.array(branch, np.int32))
    th = max(1, int(round(k / s)))  # line width grows with the defect scale
    cv2.polylines(mask, lines, False, 1, th + 1)
    layer = np.zeros(img.shape[:2], np.float32)
    cv2.polylines(layer, lines, False, 1.0, th, cv2.LINE_AA)
    img -= layer[..., None] * 85.0


def _dent(rng, img, mask, s, k):
    """A shallow circular dent: lit on one side, shadowed on the other."""
    r = rng.uniform(0.03, 0.06) * k
    cx, cy = rng.uniform(0.12, 0.88, 2) * s
    yy, xx = np.mgrid[0 : img.shape[0], 0 : img.shape[1]].astype(np.float32)
    dx, dy = (xx - cx) / r, (yy - cy) / r
    d2 = dx * dx + dy * dy
    ang = rng.uniform(0, 2 * np.pi)
    relief = (dx * math.cos(ang) + dy * math.sin(ang)) * np.exp(-d2 * 1.5)  # derivative of a bump
    img += relief[..., None] * 75.0
    cv2.circle(mask, (int(cx), int(cy)), int(r * 1.1), 1, -1)


DEFECT_FNS = (_scratch, _spot, _crack, _dent)


# --------------------------------------------------------------------------- one image
def make_image(
    seed: int,
    index: int,
    imgsz: int,
    defective: bool,
    defect_scale: float = 1.0,
) -> tuple[np.ndarray, list[tuple[int, float, float, float, float]]]:
    """One BGR uint8 image and its YOLO boxes (cls, cx, cy, w, h normalised), deterministic in (seed, index).

    ``defect_scale`` multiplies the defects' size relative to the part (1.0: small, a few % of the side).
    """
    rng = np.random.default_rng([seed, index])
    surface = SURFACES[int(rng.integers(len(SURFACES)))]
    img = SURFACE_FNS[surface](rng, imgsz, imgsz)  # (H, W, 3) float32
    boxes = []
    if defective:
        for _ in range(1 + int(rng.random() < 0.3)):  # 1, sometimes 2 defects
            cls = int(rng.integers(len(CLASSES)))
            mask = np.zeros((imgsz, imgsz), np.uint8)
            DEFECT_FNS[cls](rng, img, mask, imgsz, imgsz * defect_scale)
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            x0, x1 = max(xs.min() - 1, 0), min(xs.max() + 2, imgsz)
            y0, y1 = max(ys.min() - 1, 0), min(ys.max() + 2, imgsz)
            boxes.append(
                (cls, (x0 + x1) / 2 / imgsz, (y0 + y1) / 2 / imgsz, (x1 - x0) / imgsz, (y1 - y0) / imgsz)
            )
    return np.clip(img, 0, 255).astype(np.uint8), boxes


def _label_text(boxes) -> str:
    return "".join(f"{c} {x:.6f} {y:.6f} {w:.6f} {h:.6f}\n" for c, x, y, w, h in boxes)


def _write_image(path: Path, img: np.ndarray) -> None:
    ok, buf = cv2.imencode(path.suffix, img)
    if not ok:
        raise OSError(f"{path}: could not encode image")
    atomic_write_bytes(path, buf.tobytes())


def defect_flags(seed: int, images: int, defect_rate: float) -> np.ndarray:
    """Exactly round(images * defect_rate) defective parts (at least 2 when the rate is > 0), at random."""
    n_def = int(round(images * defect_rate))
    if defect_rate > 0:
        n_def = min(images, max(n_def, 2))
    flags = np.zeros(images, bool)
    flags[np.random.default_rng([seed, 10**9]).choice(images, n_def, replace=False)] = True
    return flags


def make_dataset(
    out_dir,
    images: int = 200,
    defect_rate: float = 0.1,
    imgsz: int = 320,
    seed: int = 0,
    val_fraction: float = 0.2,
    video_frames: int = 120,
    defect_scale: float = 1.0,
) -> Path:
    """Write a YOLO dataset of synthetic parts; returns the path of its data.yaml.

    The train/val split is stratified, so both splits keep the defect rate (val gets at least one
    defective and one good part whenever the dataset has them).
    """
    if images < 2:
        raise ValueError(f"images={images}: expected at least 2 (one train, one val)")
    if not 0.0 <= defect_rate <= 1.0:
        raise ValueError(f"defect_rate={defect_rate}: expected a fraction in [0, 1]")
    out = Path(out_dir)
    flags = defect_flags(seed, images, defect_rate)
    split = np.array(["train"] * images, dtype=object)
    rng = np.random.default_rng([seed, 10**9 + 1])
    for group in (np.flatnonzero(flags), np.flatnonzero(~flags)):  # stratified split
        n_val = int(round(len(group) * val_fraction))
        n_val = max(n_val, 1) if len(group) >= 2 else 0
        split[rng.choice(group, n_val, replace=False)] = "val"
    for sub in ("train", "val"):
        (out / "images" / sub).mkdir(parents=True, exist_ok=True)
        (out / "labels" / sub).mkdir(parents=True, exist_ok=True)
    for i in range(images):
        img, boxes = make_image(seed, i, imgsz, bool(flags[i]), defect_scale)
        name = f"part_{i:05d}"
        _write_image(out / "images" / split[i] / f"{name}.png", img)
        atomic_write_text(out / "labels" / split[i] / f"{name}.txt", _label_text(boxes))
    data_yaml = dump_yaml(
        out / "data.yaml",
        {
            "train": "images/train",
            "val": "images/val",
            "names": dict(enumerate(CLASSES)),
        },
    )
    if video_frames > 0:
        make_video(
            out / "parts.mp4",
            frames=video_frames,
            seed=seed,
            defect_rate=max(defect_rate, 0.1),
            defect_scale=defect_scale,
            part_imgsz=imgsz,
        )
    return data_yaml


# --------------------------------------------------------------------------- conveyor video
def conveyor_frame(
    seed: int,
    frame: int,
    width: int = 640,
    height: int = 480,
    part: int = 0,
    frames_per_part: int = 24,
    defect_rate: float = 0.1,
    defect_scale: float = 1.0,
    part_imgsz: int = 0,
    dwell: float = 1 / 3,
) -> tuple[np.ndarray, dict]:
    """Frame ``frame`` of an indexing conveyor: each part slides in over a dark belt, rests under the
    camera for ``dwell`` of its frames (centred), then slides out.

    Returns the BGR frame and {part, defective, in_view (wholly visible), in_position (at rest under
    the camera), boxes (pixel xyxy + cls)}. Deterministic in (seed, frame). ``part`` is the part's
    size in pixels (default: the frame height); ``part_imgsz`` draws the part at that size and
    scales it up, so a model trained at ``part_imgsz`` sees it at its own scale after letterboxing.
    """
    size = part or height
    k, t = divmod(frame, frames_per_part)  # part index, position within its pass
    defective = bool(np.random.default_rng([seed, 7, k]).random() < defect_rate)
    img, boxes = _part_image(seed + 1, k, size, defective, defect_scale, part_imgsz or size)
    belt = np.full((height, width, 3), 38, np.uint8)
    belt[:, ::40] = 55  # belt seams give motion cues
    n_move = max(1, int(round(frames_per_part * (1 - dwell) / 2)))  # frames to slide in (and out)
    centre = (width - size) // 2
    if t < n_move:  # sliding in from the left edge
        x0 = int(round(-size + (centre + size) * (t + 1) / (n_move + 1)))
    elif t >= frames_per_part - n_move:  # sliding out to the right
        x0 = int(round(centre + (width - centre) * (t - (frames_per_part - n_move) + 1) / (n_move + 1)))
    else:
        x0 = centre
    y0 = (height - size) // 2
    xa, xb = max(x0, 0), min(x0 + size, width)
    if xb > xa:
        belt[y0 : y0 + size, xa:xb] = img[:, xa - x0 : xb - x0]
    px = [
        (
            c,
            x0 + (x - w / 2) * size,
            y0 + (y - h / 2) * size,
            x0 + (x + w / 2) * size,
            y0 + (y + h / 2) * size,
        )
        for c, x, y, w, h in boxes
    ]
    return belt, {
        "part": k,
        "defective": defective,
        "in_view": x0 >= 0 and x0 + size <= width,
        "in_position": x0 == centre,
        "boxes": px,
    }


@functools.lru_cache(maxsize=4)
def _part_image(seed: int, index: int, size: int, defective: bool, defect_scale: float, drawn: int):
    """make_image at ``drawn`` px scaled to ``size``, cached: a part stays in view for many frames."""
    img, boxes = make_image(seed, index, drawn, defective, defect_scale)
    if drawn != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    img.flags.writeable = False
    return img, boxes


def make_video(
    path,
    frames: int = 120,
    seed: int = 0,
    defect_rate: float = 0.1,
    defect_scale: float = 1.0,
    fps: float = 15.0,
    width: int = 480,
    height: int = 480,
    frames_per_part: int = 24,
    part_imgsz: int = 0,
) -> Path:
    """Write a conveyor video (MP4, mp4v) and ``<stem>.json`` ground truth next to it.

    The default camera is square and framed on the inspection station, so a part at rest fills the
    frame as the training images do."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    if not writer.isOpened():
        raise OSError(f"{path}: OpenCV cannot write an mp4v video here")
    truth = []
    try:
        for f in range(frames):
            frame, info = conveyor_frame(
                seed,
                f,
                width,
                height,
                frames_per_part=frames_per_part,
                defect_rate=defect_rate,
                defect_scale=defect_scale,
                part_imgsz=part_imgsz,
            )
            writer.write(frame)
            truth.append(info)
    finally:
        writer.release()
    tmp.replace(path)
    parts = sorted({(t["part"], t["defective"]) for t in truth})
    atomic_write_text(
        path.with_suffix(".json"),
        json.dumps(
            {
                "fps": fps,
                "frames": frames,
                "size": [width, height],
                "frames_per_part": frames_per_part,
                "parts": [{"part": p, "defective": d} for p, d in parts],
                "ng_frames": [i for i, t in enumerate(truth) if t["defective"] and t["in_position"]],
                "in_position_frames": [
                    i for i, t in enumerate(truth) if t["in_position"]
                ],  # at rest under the camera
            },
            indent=1,
        ),
    )
    return path


# --------------------------------------------------------------------------- CLI
def cli(argv: list[str]) -> int:
    from ..settings.data import SYNTH
    from ..settings.options import parser

    ap = parser(SYNTH, __doc__.split("\n\n")[0], [(0, "the data set (and its video) written")])
    a = ap.parse_args(argv)
    data = make_dataset(
        a.out, a.images, a.defect_rate, a.imgsz, a.seed, a.val_fraction, a.video_frames, a.defect_scale
    )
    n_def = int(defect_flags(a.seed, a.images, a.defect_rate).sum())
    print(f"wrote {a.images} parts ({n_def} defective, {a.images - n_def} good) -> {data}")
    return 0
