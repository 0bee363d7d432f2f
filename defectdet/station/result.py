"""What a sink sees of one inspected frame: :class:`FrameResult` (the frame, its detections, the
decision, latency, trigger), its JSON event record and its annotated image, computed once and
shared by the sinks (:mod:`defectdet.station.sink` declares the sink contract around it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Optional

import cv2
import numpy as np

from ..runtime.detections import Detections
from .decisions import Decision
from .sources import Frame

OK_COLOUR, NG_COLOUR, ROI_COLOUR = (60, 200, 60), (40, 40, 235), (220, 160, 40)  # BGR


def utc_iso(t: float) -> str:
    """Epoch seconds -> ``2024-05-01T12:00:00.123Z``."""
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class SnapshotJob:
    """The snapshots planned for one NG frame: done once they are written, dropped or failed.

    The event log writes the frame's event only when its job is done, naming the files that were
    written (``written``) and, when some were not, why (``error``): an event never names a file
    that is not on disk."""

    def __init__(self, names: list[str]):
        self.names, self.written, self.error = list(names), [], ""
        self.done = threading.Event()

    def finish(self, written: Optional[list[str]] = None, error: str = "") -> None:
        """Mark the job done (from the writer thread or the loop's)."""
        self.written, self.error = list(written or []), error
        self.done.set()


@dataclass
class FrameResult:
    """One inspected frame, as the sinks see it."""

    frame: Frame
    detections: Detections  # everything the detector returned
    decision: Decision
    latency_ms: float  # detector + decision
    source: str = ""
    model_id: str = ""
    trigger: bool = False  # reject/alarm outputs fire (rising edge, or every NG frame)
    roi: Optional[np.ndarray] = None  # (K, 1, 2) ROI polygon in pixels, drawn on the overlay
    snapshots: list[str] = field(default_factory=list)  # filled by Snapshots, recorded in the event
    run_id: str = ""  # the run (safety.new_run_id), in every event
    part: int = 0  # NG frames: the run's NG part number (a reject trigger starts the next); OK frames: 0
    new_part: Optional[bool] = None  # this frame shows a new part (None: the station cannot tell)
    snapshot_job: Optional[SnapshotJob] = None  # set by Snapshots: the event waits for it
    _annotated: Optional[np.ndarray] = None

    def annotated(self) -> np.ndarray:
        """The frame with boxes, the ROI and the verdict drawn (computed once, shared by the sinks)."""
        if self._annotated is None:
            self._annotated = annotate(
                self.frame.image, self.detections, self.decision, self.roi, self.frame.index
            )
        return self._annotated

    def event(self) -> dict[str, Any]:
        """The JSON event record of this frame."""
        rec = {
            "ts": utc_iso(self.frame.timestamp),
            "frame": self.frame.index,
            "source": self.source,
            "decision": self.decision.label,
            "detections": self.decision.defects.to_list(),
            "latency_ms": round(self.latency_ms, 2),
            "model": self.model_id,
        }
        if self.run_id:
            rec["run"] = self.run_id
        if self.part:
            rec["part"], rec["trigger"] = self.part, bool(self.trigger)
        job = self.snapshot_job
        if job is not None and job.done.is_set():  # only the files written
            if job.written:
                rec["snapshots"] = list(job.written)
            if job.error:
                rec["snapshots_missing"] = job.error
        elif job is not None:
            rec["snapshots_missing"] = "not written before the run ended"
        elif self.snapshots:
            rec["snapshots"] = list(self.snapshots)
        if self.frame.info:
            rec["info"] = self.frame.info
        return rec


def annotate(
    image: np.ndarray,
    dets: Detections,
    decision: Decision,
    roi: Optional[np.ndarray] = None,
    frame_id: Optional[int] = None,
) -> np.ndarray:
    """A copy of ``image`` with the ROI, every detection (defects red, others green) and an OK/NG banner."""
    out = image.copy()  # (H, W, 3) BGR
    if roi is not None:
        cv2.polylines(out, [np.round(roi).astype(np.int32)], True, ROI_COLOUR, 1, cv2.LINE_AA)
    defect_boxes = {tuple(b) for b in np.round(decision.defects.xyxy).astype(int).tolist()}
    for box, conf, name in zip(np.round(dets.xyxy).astype(int).tolist(), dets.confidence, dets.class_name):
        colour = NG_COLOUR if tuple(box) in defect_boxes else OK_COLOUR
        cv2.rectangle(out, tuple(box[:2]), tuple(box[2:]), colour, 2)
        cv2.putText(
            out,
            f"{name} {conf:.2f}",
            (box[0], max(box[1] - 4, 10)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
    text = decision.label + (f"  #{frame_id}" if frame_id is not None else "")
    cv2.rectangle(out, (0, 0), (16 + 14 * len(text), 30), NG_COLOUR if decision.ng else OK_COLOUR, -1)
    cv2.putText(out, text, (8, 22), cv2.FONT_HERSHEY_SIMPLEX, 0.65, (255, 255, 255), 2, cv2.LINE_AA)
    return out
