"""The README (the front door) and docs/ (one page per stage, built by mkdocs): links resolve, the
tables the bench scripts write have their markers where the scripts write them, and the site builds
with --strict, so a broken link or anchor fails CI."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")

# marker -> the page its bench script writes (bench/demo_table.py and demo_spread.py --page, bench/quality.py
# --page --marker)
TABLES = {
    "demo-table": "demo.md",
    "demo-spread": "demo.md",
    "int8-methods": "demo.md",
    "demo-range": "README.md",  # bench/demo_spread.py --readme: the range over the demo's runs
    "quality-table": "quality.md",
    "quality-recipe-table": "quality.md",
    "quality-paste-table": "quality.md",
    "quality-kfold-table": "quality.md",
    "curve-table": "quality.md",
    "decision-rules": "quality.md",
    "grid-table": "quality.md",
    "tta-table": "tta.md",
}


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_readme_is_a_front_door_that_starts_with_the_two_commands():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 250
    block = lines[lines.index("```bash") + 1 :]
    assert block[0].startswith("make demo") and block[1].startswith("make test")
    assert "```bash" in lines[:4]  # the first thing after the title


@pytest.mark.parametrize("page", _pages(), ids=lambda p: p.name)
def test_relative_links_and_images_resolve(page):
    missing = []
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (page.parent / target.split("#", 1)[0]).resolve()
        if not path.exists():
            missing.append(target)
    assert not missing, f"{page.relative_to(ROOT)}: links to missing files {missing}"


def test_every_bench_table_has_its_markers_in_the_page_its_script_writes():
    for marker, page in TABLES.items():
        text = (ROOT / page if page == "README.md" else DOCS / page).read_text()
        start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
        assert text.count(start) == 1 and text.count(end) == 1, (page, marker)
        assert text.index(start) < text.index(end), (page, marker)
        for other in _pages():
            if other.name != page:
                assert start not in other.read_text(), f"{marker} is written into {page}, not {other.name}"


def test_the_workflow_is_the_same_in_the_readme_and_the_docs_home():
    def block(path):
        return path.read_text().split("<!-- workflow:start -->", 1)[1].split("<!-- workflow:end -->", 1)[0]

    assert block(ROOT / "README.md") == block(DOCS / "index.md")


def test_every_page_is_in_the_nav():
    nav = (ROOT / "mkdocs.yml").read_text()
    listed = set(re.findall(r":\s*(\S+\.md)\s*$", nav, re.M))
    assert listed == {p.name for p in DOCS.glob("*.md")}, "add the page to mkdocs.yml's nav"


HAVE_MKDOCS = all(importlib.util.find_spec(m) is not None for m in ("mkdocs", "material"))


@pytest.mark.skipif(not HAVE_MKDOCS, reason="mkdocs-material is not installed (pip install -e '.[dev]')")
def test_the_site_builds_strictly(tmp_path):
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    site = tmp_path / "site"
    run = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    warnings = [line for line in run.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert run.returncode == 0, "\n".join(warnings) or run.stderr[-2000:]
    assert (site / "index.html").is_file() and (site / "img" / "operator-page.png").is_file()
