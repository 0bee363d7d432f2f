"""The operator's review log (``<run>/review/review.jsonl``): one JSON verdict a line, appended.

Read by the station's review view (:mod:`defectdet.station.review_page`) and by ``defectdet data harvest``
(:mod:`defectdet.data.harvest`); kept here, stdlib only, so that neither depends on the other's package.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def read_log(path: Path) -> Dict[str, Dict[str, Any]]:
    """Item id -> its latest verdict line in a review log (a torn last line is skipped)."""
    latest: Dict[str, Dict[str, Any]] = {}
    if not path.is_file():
        return latest
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and "item" in rec:
                latest[str(rec["item"])] = rec
    return latest
