"""``Detections``: what the runtime returns for one frame — a validated dataclass of numpy arrays.

Framework-free on purpose: :meth:`Detections.from_ultralytics` reads an ultralytics ``Results``
object by duck typing, without importing ultralytics (or torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections in original-frame pixels, sorted as produced (by confidence, highest first).

    Attributes:
        xyxy: (N, 4) float32 boxes ``x1, y1, x2, y2`` in pixels of the frame given to the detector.
        confidence: (N,) float32 scores in [0, 1].
        class_id: (N,) int32 class indices.
        class_name: (N,) str class names (numpy unicode array), ``names[class_id]``.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    class_name: np.ndarray

    def __post_init__(self) -> None:
        """Coerce dtypes and check shapes/values; a malformed array raises ``ValueError`` saying which."""
        xyxy = np.asarray(self.xyxy, dtype=np.float32)
        if xyxy.size == 0:
            xyxy = xyxy.reshape(0, 4)
        conf = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        cls = np.asarray(self.class_id).reshape(-1)
        name = np.asarray(self.class_name, dtype=str).reshape(-1)
        if xyxy.ndim != 2 or xyxy.shape[1] != 4:
            raise ValueError(f"Detections.xyxy: expected shape (N, 4), got {xyxy.shape}")
        n = xyxy.shape[0]
        for field, arr in (("confidence", conf), ("class_id", cls), ("class_name", name)):
            if arr.shape[0] != n:
                raise ValueError(
                    f"Detections.{field}: expected {n} entries (one per box), got {arr.shape[0]}"
                )
        if n and not np.issubdtype(cls.dtype, np.integer):
            if not np.all(np.mod(cls, 1) == 0):
                raise ValueError("Detections.class_id: expected integer class indices")
        if not np.all(np.isfinite(xyxy)) or not np.all(np.isfinite(conf)):
            raise ValueError("Detections: boxes and confidences must be finite")
        if n and (np.any(xyxy[:, 2] < xyxy[:, 0]) or np.any(xyxy[:, 3] < xyxy[:, 1])):
            raise ValueError("Detections.xyxy: expected x2 >= x1 and y2 >= y1 for every box")
        if n and (conf.min() < 0.0 or conf.max() > 1.0):
            raise ValueError(
                f"Detections.confidence: expected values in [0, 1], got [{conf.min()}, {conf.max()}]"
            )
        if n and cls.min() < 0:
            raise ValueError("Detections.class_id: expected non-negative class indices")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", conf)
        object.__setattr__(self, "class_id", cls.astype(np.int32))
        object.__setattr__(self, "class_name", name)

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def empty(cls) -> Detections:
        """No detections."""
        return cls(
            np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32), np.zeros(0, str)
        )

    @classmethod
    def from_arrays(
        cls,
        xyxy: np.ndarray,
        confidence: np.ndarray,
        class_id: np.ndarray,
        names: Mapping[int, str] | np.ndarray,
    ) -> Detections:
        """Build from arrays and class names: a ``{class_id: name}`` map (unknown ids are named by their
        number) or a (nc,) str array indexed by id (the fast path the runtime uses)."""
        class_id = np.asarray(class_id).reshape(-1).astype(np.int32)
        if isinstance(names, np.ndarray):
            class_name = names[class_id]
        else:
            class_name = np.array([names.get(int(c), str(int(c))) for c in class_id], dtype=str)
        return cls(xyxy, confidence, class_id, class_name)

    @classmethod
    def concat(cls, parts: Iterable[Detections]) -> Detections:
        """Stack several Detections into one (order kept)."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            np.concatenate([p.xyxy for p in parts]),
            np.concatenate([p.confidence for p in parts]),
            np.concatenate([p.class_id for p in parts]),
            np.concatenate([p.class_name for p in parts]),
        )

    @classmethod
    def from_ultralytics(cls, result: Any) -> Detections:
        """Read an ultralytics ``Results`` (``result.boxes``, ``result.names``) without importing it."""
        boxes = result.boxes

        def numpy(x: Any) -> np.ndarray:
            return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)

        # ultralytics' float32 scores can exceed 1 by an ulp (1.0000001): clip, they are probabilities
        return cls.from_arrays(
            numpy(boxes.xyxy), np.clip(numpy(boxes.conf), 0.0, 1.0), numpy(boxes.cls), dict(result.names)
        )

    # -- access -------------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray) -> Detections:
        """Select by index, slice, index array or boolean mask; always returns Detections."""
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return Detections(
            self.xyxy[index], self.confidence[index], self.class_id[index], self.class_name[index]
        )

    def sorted(self) -> Detections:
        """Highest confidence first (stable)."""
        return self[np.argsort(-self.confidence, kind="stable")]

    def to_list(self) -> list[dict[str, Any]]:
        """Plain Python records (JSON-serialisable) — one dict per detection."""
        return [
            {
                "xyxy": [round(float(v), 2) for v in box],
                "confidence": round(float(c), 5),
                "class_id": int(k),
                "class_name": str(n),
            }
            for box, c, k, n in zip(self.xyxy, self.confidence, self.class_id, self.class_name)
        ]

    def __repr__(self) -> str:
        head = ", ".join(f"{n}@{c:.2f}" for n, c in zip(self.class_name[:5], self.confidence[:5]))
        more = ", ..." if len(self) > 5 else ""
        return f"Detections(n={len(self)}{': ' + head + more if len(self) else ''})"
