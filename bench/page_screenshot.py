"""Refresh ``docs/img/operator-page.png``, the picture of the operator page in the README and
docs/station.md, from a real run: the browser test (``defectdet inspect --serve`` on ``synthetic://``,
headless chromium) copies its screenshot there.

    python bench/page_screenshot.py [--out docs/img/operator-page.png]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", default=str(ROOT / "docs" / "img" / "operator-page.png"), help="where the PNG goes"
    )
    a = ap.parse_args(argv)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "DEFECTDET_PAGE_SCREENSHOT": str(Path(a.out).resolve()), "PYTHONPATH": str(ROOT)}
    test = "tests/test_station_page.py::test_operator_page_in_a_real_browser"
    rc = subprocess.call([sys.executable, "-m", "pytest", "-q", "-rs", test], cwd=ROOT, env=env)
    if rc == 0 and Path(a.out).is_file():
        print(f"wrote {a.out}")
        return 0
    print("no screenshot: the browser test failed or skipped (see above)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
