"""Calibration images for INT8: picked from a split, enriched in defects, pre-processed like the runtime.

Fed to ``defectdet quantize`` (onnxruntime's calibration data reader, :func:`make_reader`) and
``defectdet build-engine`` (TensorRT's implicit-INT8 calibrator, :func:`tensorrt_calibrator`). Images
are pre-processed with the model's recorded pre-processing (:class:`defectdet.artifact.Preprocess`,
from its metadata), exactly as :mod:`defectdet.runtime.preprocess` does on the line.

Every chosen image's header is read before calibration starts, and again before each decode, by the
data tools' check (:func:`defectdet.data.images.checked_size`): a header declaring e.g. 100000x100000
pixels, or a file that is not an image, is one DataError naming the file, never PIL's
DecompressionBombError or an OpenCV allocation. Up front matters for TensorRT: its calibrator wrapper
prints an exception raised in ``get_batch`` and treats it as the end of the data (NVIDIA/TensorRT
``python/src/infer/pyInt8.cpp``), so the engine would be calibrated on what came before; the
calibrator keeps such an error in ``failure`` instead, for the builder to raise before it writes.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..artifact import Preprocess, load_metadata
from ..config import atomic_write_bytes
from ..data.images import checked_size
from ..errors import ConfigError, DataError, DefectdetError
from .calib_cache import write_record

DEFAULT_PREPROCESS = Preprocess()  # letterbox, RGB, /255: what ultralytics trains with


def split_images(data_yaml: str | os.PathLike, split: str = "train") -> list[Path]:
    """Image paths of one split of a data.yaml (folders, .txt lists or lists of them)."""
    from ..data.formats import list_images, load_data_yaml

    spec = load_data_yaml(data_yaml)
    if split not in spec.splits:
        raise DataError(f"{spec.yaml_path}: no '{split}:' split; expected one of {sorted(spec.splits)}")
    images = [ref.path for src in spec.splits[split] for ref in list_images(src) if ref.path.is_file()]
    if not images:
        raise DataError(f"{spec.where(split)}: split '{split}' has no readable images")
    return images


def is_defective(image: Path) -> bool:
    """True when the image's YOLO label file has at least one valid box."""
    from ..data.formats import label_path, read_labels

    return bool(read_labels(label_path(image))[0])


def select_calibration(
    images: Sequence[Path], n: int, defect_fraction: float = 0.5, seed: int = 0
) -> tuple[list[Path], int]:
    """Pick ``n`` images, about ``defect_fraction`` of them defective when the split has that many
    (rare-defect sets would otherwise calibrate on clean parts only); returns (paths, n_defective)."""
    if n < 1:
        raise ConfigError(f"--calib-images {n}: expected at least 1")
    if not 0.0 <= defect_fraction <= 1.0:
        raise ConfigError(f"defect_fraction={defect_fraction}: expected a fraction in [0, 1]")
    rng = np.random.default_rng(seed)
    flags = [is_defective(p) for p in images]
    bad = [p for p, f in zip(images, flags) if f]
    good = [p for p, f in zip(images, flags) if not f]
    rng.shuffle(bad)
    rng.shuffle(good)
    n = min(n, len(images))
    k_bad = min(len(bad), max(math.ceil(n * defect_fraction), n - len(good)))
    chosen = bad[:k_bad] + good[: n - k_bad]
    order = rng.permutation(len(chosen))
    return [chosen[i] for i in order], k_bad


def calibration_images(
    data: str | os.PathLike, n: int, split: str = "train", defect_fraction: float = 0.5, seed: int = 0
) -> tuple[list[Path], int]:
    """:func:`select_calibration` over ``split`` of ``data``, every chosen header checked (hostile or
    unreadable: a DataError naming the file) before any calibration runs; returns (paths, n_defective)."""
    paths, n_bad = select_calibration(split_images(data, split), n, defect_fraction, seed)
    for p in paths:
        checked_size(p)
    return paths, n_bad


def load_images(
    paths: Sequence[Path], imgsz: tuple[int, int], preprocess: Preprocess = DEFAULT_PREPROCESS
) -> np.ndarray:
    """Read and pre-process images like the runtime (``preprocess``: the model's recorded settings;
    default letterbox, RGB, /255) -> (n, 3, H, W) float32, or the uint8 input form the model records."""
    import cv2

    from ..runtime.preprocess import Preprocessor

    pre = Preprocessor(imgsz, preprocess)
    out = np.empty(pre.input_shape(len(paths)), pre.settings.dtype)  # (n, 3, H, W) or (n, H, W, 3)
    for i, p in enumerate(paths):
        checked_size(p)  # the header first: OpenCV would try to allocate what a hostile one declares
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:  # its header was fine: the data after it is not
            raise DataError(
                f"{p}: OpenCV cannot decode the image (truncated or corrupt data); expected a complete "
                f"{p.suffix.lstrip('.') or 'jpg/png'} image"
            )
        out[i] = pre([img])[0][0]  # (3, H, W) float32 or the uint8 input form
    return out


def batches(
    paths: Sequence[Path], imgsz: tuple[int, int], size: int = 1, preprocess: Preprocess = DEFAULT_PREPROCESS
) -> Iterator[np.ndarray]:
    """Pre-processed images in batches of ``size`` in the model's input form (the last one may be smaller)."""
    for i in range(0, len(paths), size):
        yield load_images(paths[i : i + size], imgsz, preprocess)


class _Quiet:
    """A progress bar that shows nothing (tqdm missing, or progress off)."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress(total: int, desc: str, show: bool = True):
    """A tqdm bar over ``total`` images when tqdm is installed and ``show``, else a quiet stand-in."""
    if not show:
        return _Quiet()
    try:
        from tqdm import tqdm
    except ImportError:
        return _Quiet()
    return tqdm(total=total, desc=desc, unit="img")


def make_reader(
    paths: Sequence[Path],
    imgsz: tuple[int, int],
    input_name: str,
    show: bool = True,
    preprocess: Preprocess = DEFAULT_PREPROCESS,
):
    """An onnxruntime ``CalibrationDataReader`` over ``paths`` (one image per ``get_next``) with the
    ``__len__`` / ``set_range`` that quantize_static uses to calibrate chunk by chunk."""
    from onnxruntime.quantization import CalibrationDataReader

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.start, self.end, self.i = 0, len(paths), 0
            self.bar = progress(len(paths), "calibrating", show)

        def __len__(self) -> int:
            return len(paths)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.start, self.end, self.i = start_index, end_index, start_index

        def get_next(self):
            if self.i >= self.end:
                return None
            x = load_images([paths[self.i]], imgsz, preprocess)  # (1, 3, H, W) or the uint8 form
            self.i += 1
            self.bar.update(1)
            return {input_name: x}

    return Reader()


def tensorrt_calibrator(
    trt: Any,
    onnx: Path,
    input_shape: Sequence[int],
    data: Path | None,
    n: int,
    cache: Path | None,
    replay: bool = False,
    identity: dict | None = None,
) -> Any:
    """An ``IInt8EntropyCalibrator2`` over ``n`` of ``data``'s train images (pycuda device buffer),
    pre-processed as ``onnx``'s sidecar records, writing ``cache`` (and, given the model's
    ``identity``, its record: :mod:`.calib_cache`). TensorRT reads the cache before asking for
    batches: it is offered only when ``replay`` (:func:`.calib_cache.replay_cache` said it belongs
    to this model) or once this calibrator has written it."""
    import pycuda.autoinit  # noqa: F401  (a CUDA context for the device buffer)
    import pycuda.driver as cuda

    shape = tuple(
        int(d) for d in input_shape
    )  # (1, 3, H, W) or (1, H, W, 3) uint8: the static batch of the export
    paths = calibration_images(data, n)[0] if data else []
    cache = Path(cache) if cache else None
    meta = load_metadata(onnx, {})
    preprocess, itemsize = (
        meta.preprocess,
        np.dtype(meta.preprocess.dtype).itemsize,
    )  # as the runtime applies it

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.source = batches(paths, meta.imgsz, shape[0], preprocess)
            self.device = cuda.mem_alloc(int(np.prod(shape)) * itemsize)  # float32 or uint8 input buffer
            self.bar = progress(len(paths), "calibrating (TensorRT)")
            self.failure: DefectdetError | None = (
                None  # an image that failed mid-calibration (see the module doc)
            )
            self.replay = replay

        def get_batch_size(self) -> int:
            return shape[0]

        def get_batch(self, names):
            try:
                x = next(self.source, None)  # (B, 3, H, W) float32 or the uint8 input form
            except (
                DefectdetError
            ) as e:  # raised here, TensorRT would print it and build on the batches so far
                self.failure, x = e, None
            if x is None or x.shape[0] != shape[0]:
                self.bar.close()
                return None  # end of calibration data
            cuda.memcpy_htod(self.device, np.ascontiguousarray(x))
            self.bar.update(len(x))
            return [int(self.device)]

        def read_calibration_cache(self):
            return cache.read_bytes() if self.replay and cache and cache.is_file() else None

        def write_calibration_cache(self, data) -> None:
            if cache and self.failure is None:  # never a cache from an interrupted calibration
                atomic_write_bytes(cache, bytes(data))
                if identity is not None:
                    write_record(cache, identity)
                self.replay = True  # this model's cache now

    return EntropyCalibrator()
