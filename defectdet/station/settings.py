"""The valid range of every numeric key of ``configs/inspect.yaml``, checked once after the layers merge.

``defectdet inspect`` calls :func:`check_numbers` on the merged config, so a bad value from the file,
a ``key=value`` override or a flag is one line naming the key and what was expected
(``snapshots.quota_mb='abc': expected a number >= 0``), before anything is opened. The ranges come from
the settings schema (:mod:`defectdet.settings.inspect`), where an output added to the sink registry
declares its keys (a test checks that every numeric default has a range); ``conf``, ``iou`` and
``max_det`` are the Detector's, which checks them too, against the same ranges.
"""

from __future__ import annotations

from typing import Any, Mapping

from ..settings import INT, POSITIVE, Range
from ..settings.inspect import INSPECT

__all__ = ["DETECTOR_KEYS", "INT", "POSITIVE", "RANGES", "Range", "check_numbers"]


# The detector's own settings, range-checked here and by defectdet.runtime.Detector itself (same ranges).
DETECTOR_KEYS = ("conf", "iou", "max_det")

# Every other numeric key of configs/inspect.yaml (dotted), with its range: declared once, with its default
# and doc, in defectdet/settings/inspect.py.
RANGES: dict[str, Range] = INSPECT.ranges()


def check_numbers(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the merged config with every key of :data:`RANGES` checked and typed (ConfigError on the
    first bad one): :meth:`defectdet.settings.Schema.check` of the inspect schema."""
    return INSPECT.check(cfg)
