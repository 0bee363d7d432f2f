"""The package as users install it: a wheel (and an editable install) built from a copy of the tree,
installed into a fresh virtual environment with no path of the repository on ``sys.path``, finds
every train preset, the model YAML and the inspect config; ``--config focal`` and
``cls_loss=auto``'s preset files resolve there. No network: ``--no-deps --no-build-isolation``."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+

# Run inside the fresh environment: prints one JSON object of what it found.
PROBE = r"""
import json, sys
from pathlib import Path
repo = Path(sys.argv[1]).resolve()
# a path of the source tree that could serve `import defectdet` (the repo's own .venv may hold the
# outer site-packages that the test venv borrows; it has no defectdet package)
on_path = [p for p in sys.path
           if p and Path(p).resolve().is_relative_to(repo) and (Path(p) / "defectdet").exists()]
import defectdet, defectdet.config as C
from defectdet.data.stats import BANDS
from defectdet.station import inspect_cli
from defectdet.train import _auto_preset, load_settings
presets = {p.stem: C.load_yaml(p) for p in sorted(C.config_file("train").glob("*.yaml"))}
auto = {band[4]: str(C.resolve_config(band[4], "train")) for band in BANDS}
loss, ours = _auto_preset(sys.argv[2], 64, {"gamma": None, "alpha": None}, ul_args := {})
print(json.dumps({
    "package": defectdet.__file__, "configs": str(C.configs_dir()), "repo_on_path": on_path,
    "presets": presets, "focal": load_settings("focal", []), "auto_files": auto,
    "auto": [loss, ours, ul_args], "model_yaml": C.load_yaml(C.config_file("models", "defectdet-pico.yaml")),
    "inspect_default": str(inspect_cli.CONFIGS_DIR / "inspect.yaml"),
    "inspect": sorted(inspect_cli.load_config(None, [], {})),
    "inspect_file": sorted(C.load_yaml(C.config_file("inspect.yaml"))),
}))
"""


def _run(*cmd, **kw) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(kw.pop("home")), "YOLO_OFFLINE": "1", "PIP_NO_INDEX": "1"}
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=300, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """What a release is built from, copied so that building leaves no build/ or egg-info in the repo."""
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("defectdet", "configs"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    return src


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    from PIL import Image

    d = tmp_path_factory.mktemp("data")
    for split in ("train", "val"):
        (d / "images" / split).mkdir(parents=True)
        (d / "labels" / split).mkdir(parents=True)
        Image.new("RGB", (64, 64), (90, 90, 90)).save(d / "images" / split / "a.png")
        (d / "labels" / split / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (d / "data.yaml").write_text("train: images/train\nval: images/val\nnames: [scratch]\n")
    return d


def _venv(tmp: Path) -> Path:
    """A fresh venv without pip whose only extra path is this interpreter's site-packages (numpy,
    torch...), appended by a .pth line; .pth files there (an editable defectdet) are not run."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    outer = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_outer.pth").write_text("".join(f"{p}\n" for p in sorted(outer)))
    return py


def _probe(py: Path, tmp: Path, dataset: Path) -> dict:
    out = _run(py, "-I", "-c", PROBE, ROOT, dataset / "data.yaml", cwd=tmp, home=tmp).stdout
    return json.loads(out.strip().splitlines()[-1])


def _assert_complete(found: dict, configs: Path) -> None:
    assert Path(found["configs"]) == configs and not found["repo_on_path"]
    assert set(found["presets"]) == {p.stem for p in (ROOT / "configs" / "train").glob("*.yaml")}
    assert found["focal"] == found["presets"]["focal"] and found["focal"]["cls_loss"] == "focal"
    assert all(Path(f).parent == configs / "train" for f in found["auto_files"].values())
    loss, ours, ul_args = found["auto"]
    assert loss in ("focal", "qfl", "vfl") and ours["gamma"] is not None and "cls" in ul_args
    assert found["model_yaml"]["nc"] >= 1
    assert Path(found["inspect_default"]) == configs / "inspect.yaml"
    assert found["inspect_file"] and set(found["inspect_file"]) <= set(found["inspect"])


def test_pyproject_lists_every_subpackage():
    """Packages are listed (configs/ is mapped into the package), so a new subpackage must be too."""
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    tree = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "defectdet").rglob("__init__.py")}
    assert listed == tree | {"defectdet.configs"}


def test_wheel_in_a_fresh_venv_finds_presets_and_inspect_config(source, dataset, tmp_path):
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        tmp_path / "dist",
        source,
        cwd=tmp_path,
        home=tmp_path,
    )
    wheel = next((tmp_path / "dist").glob("defectdet-*.whl"))
    py = _venv(tmp_path)
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        py,
        "install",
        "--no-deps",
        wheel,
        cwd=tmp_path,
        home=tmp_path,
    )
    found = _probe(py, tmp_path, dataset)
    assert Path(found["package"]).is_relative_to(tmp_path / "venv")
    _assert_complete(found, Path(found["package"]).parent / "configs")


def test_editable_install_reads_the_checkout_configs(source, dataset, tmp_path):
    py = _venv(tmp_path)
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        py,
        "install",
        "--no-deps",
        "--no-build-isolation",
        "-e",
        source,
        cwd=tmp_path,
        home=tmp_path,
    )
    found = _probe(py, tmp_path, dataset)
    assert Path(found["package"]) == source / "defectdet" / "__init__.py"
    _assert_complete(found, source / "configs")
