"""The code passes ``ruff check`` (E501 at 110 columns included) and ``ruff format --check`` with the
project's pyproject.toml, as ``make lint`` runs them. ruff comes with the ``dev`` extra."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["defectdet", "tests", "bench", "deploy"]


def _ruff() -> str:
    """The venv's ruff (beside this interpreter), else one on PATH; skips when there is none."""
    exe = Path(sys.executable).with_name("ruff.exe" if sys.platform == "win32" else "ruff")
    found = str(exe) if exe.is_file() else shutil.which("ruff")
    if found is None:
        pytest.skip("ruff is not installed (pip install -e '.[dev]')")
    return found


@pytest.mark.parametrize(
    "args",
    [["check", "--no-cache"], ["format", "--check", "--no-cache"]],
    ids=["check", "format"],
)
def test_ruff(args):
    cmd = [_ruff(), *args, "--config", str(ROOT / "pyproject.toml"), *PATHS]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd[1:])} failed:\n{out.stdout}{out.stderr}"
