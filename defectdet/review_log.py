"""The operator's review log (``<run>/review/review.jsonl``): one JSON verdict a line, appended.

Read by the station's review view (:mod:`defectdet.station.review_page`) and by ``defectdet data harvest``
(:mod:`defectdet.data.harvest`); kept here, beside the config helpers, so that neither depends on the other's
package.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

from .config import read_jsonl


def read_log(path: Path) -> Dict[str, Dict[str, Any]]:
    """Item id -> its latest verdict line in a review log (a torn last line is skipped)."""
    return {str(rec["item"]): rec for rec in read_jsonl(path, "item")} if path.is_file() else {}
