"""The backend contract: allocate once in ``__init__``, ``input_spec()``, ``infer(batch)``, free in
``close()``.

A backend only moves tensors: the image batch in the model's input form ((B, 3, H, W) float32, or
uint8 (B, H, W, 3) / (B, 3, H, W) for a model that normalises in its graph) in, the model's raw outputs out
(each with the leading batch axis). Static-batch models are fed in chunks of their batch size (the last chunk
padded); pre/post-processing live in ``defectdet.runtime``, not here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import DefectdetError


class BackendError(DefectdetError):
    """An inference backend cannot load or run the model."""


class BackendUnavailable(BackendError):
    """The backend's library is not installed here; the message says what to install."""


@dataclass(frozen=True)
class TensorSpec:
    """Name, shape (None for a dynamic axis) and numpy dtype of one model input/output."""

    name: str
    shape: tuple[int | None, ...]
    dtype: np.dtype

    @property
    def static_batch(self) -> int | None:
        """The fixed batch size, or None when the batch axis is dynamic."""
        return self.shape[0] if self.shape and isinstance(self.shape[0], int) else None


class Backend(ABC):
    """Base class of the inference backends."""

    name = "base"

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    @abstractmethod
    def input_spec(self) -> TensorSpec:
        """The image input."""

    @abstractmethod
    def output_specs(self) -> list[TensorSpec]:
        """The outputs, in the order :meth:`infer` returns them."""

    def embedded_metadata(self) -> dict[str, str]:
        """Metadata stored inside the model file (ONNX metadata_props, engine header); {} if none."""
        return {}

    @abstractmethod
    def _run(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Run one chunk whose batch size the model accepts; returns the outputs."""

    max_batch: int | None = None  # dynamic-batch engines: the optimisation profile's largest batch

    def infer(self, batch: np.ndarray) -> list[np.ndarray]:
        """(B, ...) batch in the model's input form -> the model's outputs for all B images (axis 0: B)."""
        spec = self.input_spec()
        want = tuple(spec.shape[1:])
        if (
            batch.ndim != 4
            or len(want) != 3
            or any(w is not None and w != g for w, g in zip(want, batch.shape[1:]))
        ):
            shape = ", ".join("?" if w is None else str(w) for w in want)
            raise BackendError(f"{self.name}: input {spec.name!r} expects (B, {shape}), got {batch.shape}")
        static = spec.static_batch
        step = static or self.max_batch or batch.shape[0]
        if batch.shape[0] == step:
            return self._run(batch)
        outs: list[list[np.ndarray]] = []
        for i in range(0, batch.shape[0], step):
            chunk = batch[i : i + step]  # (<=step, 3, H, W)
            n = chunk.shape[0]
            if (
                static and n < static
            ):  # a static graph rejects short batches: pad with zeros, drop the padding after
                chunk = np.concatenate([chunk, np.zeros((static - n, *chunk.shape[1:]), chunk.dtype)])
            outs.append([o[:n] for o in self._run(chunk)])
        return [np.concatenate(parts) for parts in zip(*outs)] if len(outs) > 1 else outs[0]

    @abstractmethod
    def close(self) -> None:
        """Free everything; safe to call twice."""
