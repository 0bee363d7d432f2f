"""deploy/jetson: the scripts, the systemd unit, the Dockerfile and the README, checked on a CPU machine.

Nothing here touches this machine's system: ``setup.sh`` runs against a fake root
(``DEFECTDET_FAKE_ROOT``, which also forces ``--check``) or fails its first check;
``install-service.sh`` stages into a temp folder (``--root``); ``build_engine.sh`` self-checks a
tiny ONNX model with the ONNX Runtime backend. Tools that may be missing (shellcheck,
systemd-analyze, TensorRT) skip with a reason.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "jetson"
SCRIPTS = ["setup.sh", "build_engine.sh", "install-service.sh"]
UNIT = DEPLOY / "defectdet-inspect.service"
ENV_FILE = DEPLOY / "defectdet.env"


def _run(args, env=None, timeout=120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=ROOT)


# ----------------------------------------------------------------------------------- shell quality
@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse_with_bash_n(name):
    out = _run(["bash", "-n", str(DEPLOY / name)])
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_are_strict_and_executable(name):
    text = (DEPLOY / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.access(DEPLOY / name, os.X_OK), f"{name} is not executable (chmod +x)"


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_shellcheck_clean():
    scripts = [str(DEPLOY / s) for s in SCRIPTS] + [str(ROOT / ".ci" / "run"), str(ROOT / ".ci" / "py38.sh")]
    out = _run(
        ["shellcheck", "-x", "--source-path=SCRIPTDIR", "--severity=style", *scripts]
    )  # -x: follow paths.sh
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_help_prints_usage_and_unknown_options_fail(name):
    ok = _run(["bash", str(DEPLOY / name), "--help"])
    assert ok.returncode == 0 and f"deploy/jetson/{name}" in ok.stdout
    bad = _run(["bash", str(DEPLOY / name), "--no-such-option"], env={"DEFECTDET_FAKE_ROOT": "/nonexistent"})
    assert bad.returncode != 0 and "--no-such-option" in bad.stderr


# ----------------------------------------------------------------------------------- setup.sh
def test_setup_refuses_this_non_jetson_machine(tmp_path):
    """With an empty fake root the very first check fails: nothing is read or written elsewhere."""
    out = _run(
        ["bash", str(DEPLOY / "setup.sh")],
        env={"DEFECTDET_FAKE_ROOT": str(tmp_path / "empty"), "DEFECTDET_VENV": str(tmp_path / "venv")},
    )
    assert out.returncode == 1
    assert "not an NVIDIA Jetson" in out.stderr and "nv_tegra_release not found" in out.stderr
    assert not (tmp_path / "venv").exists()


@pytest.mark.skipif(Path("/etc/nv_tegra_release").exists(), reason="this machine is a Jetson")
def test_setup_refuses_without_fake_root(tmp_path):
    out = _run(["bash", str(DEPLOY / "setup.sh"), "--venv", str(tmp_path / "venv")])
    assert (
        out.returncode == 1 and "error: not an NVIDIA Jetson: /etc/nv_tegra_release not found" in out.stderr
    )
    assert not (tmp_path / "venv").exists()


def _fake_jetson(root: Path, l4t: str, trt: str = "10.3.0.30", gstreamer: bool = True) -> dict:
    """A fake Jetson under ``root``: release file, device-tree model, nvcc, g++, Python.h, and
    JetPack-located ``tensorrt`` / ``cv2`` modules. Returns the environment for setup.sh."""
    major, rev = l4t.lstrip("R").split(".", 1)
    (root / "etc").mkdir(parents=True)
    (root / "etc/nv_tegra_release").write_text(
        f"# R{major} (release), REVISION: {rev}, GCID: 1, BOARD: generic, EABI: aarch64, DATE: Wed Jan  8 "
        "2025\n"
    )
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    cuda_bin, tools = root / "usr/local/cuda/bin", root / "tools"
    cuda_bin.mkdir(parents=True)
    tools.mkdir()
    # all elements but these
    gst_inspect = 'for e in ${DEFECTDET_TEST_NO_GST:-}; do [ "$e" = "$2" ] && exit 1; done; exit 0'
    for exe, text in (
        (cuda_bin / "nvcc", 'echo "Cuda compilation tools, release 12.6, V12.6.68"'),
        (tools / "g++", "exit 0"),
        (tools / "gst-inspect-1.0", gst_inspect),
    ):
        exe.write_text(f"#!/bin/sh\n{text}\n")
        exe.chmod(0o755)
    include = root / sysconfig.get_paths()["include"].lstrip("/")
    include.mkdir(parents=True)
    (include / "Python.h").write_text("")
    site = root / "usr/lib/python3/dist-packages"
    _fake_module(site / "tensorrt", trt)
    _fake_cv2(site / "cv2", gstreamer)
    return {
        "DEFECTDET_FAKE_ROOT": str(root),
        "DEFECTDET_PYTHON": sys.executable,
        "PYTHONPATH": str(site),
        "PATH": f"{tools}:{os.environ['PATH']}",
        "DEFECTDET_VENV": str(root / "venv"),
    }


def _fake_module(folder: Path, version: str, body: str = "") -> None:
    folder.mkdir(parents=True)
    (folder / "__init__.py").write_text(f"__version__ = {version!r}\n{body}")


def _fake_cv2(folder: Path, gstreamer: bool) -> None:
    info = (
        "General configuration\n  Video I/O:\n"
        f"    GStreamer:                   {'YES (1.20.3)' if gstreamer else 'NO'}\n"
    )
    _fake_module(folder, "4.8.0", f"def getBuildInformation():\n    return {info!r}\n")


def _readme_jetpack_table() -> list[dict]:
    """Rows of the README's JetPack -> TensorRT table."""
    lines = (DEPLOY / "README.md").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| JetPack |"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, (c.strip() for c in line.strip("|").split("|")))))
    return rows


def test_readme_jetpack_table_is_the_issue_table():
    table = {r["JetPack"]: r["TensorRT"] for r in _readme_jetpack_table()}
    assert table == {
        "5.1": "8.5.2",
        "5.1.1": "8.5.2",
        "5.1.2": "8.5.2",
        "6.0": "8.6.2",
        "6.1": "10.3",
        "6.2": "10.3",
    }


@pytest.mark.parametrize("row", _readme_jetpack_table(), ids=lambda r: f"JetPack{r['JetPack']}")
def test_setup_routes_l4t_to_the_readme_jetpack_and_tensorrt(tmp_path, row):
    l4t = row["L4T (`/etc/nv_tegra_release`)"]
    l4t = l4t if l4t.count(".") == 2 else l4t + ".0"  # R36.3 -> R36.3.0 as the release file writes it
    env = _fake_jetson(tmp_path / "root", l4t, trt=row["TensorRT"] + ".0")
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 0, out.stderr
    assert re.search(
        rf"JetPack +{re.escape(row['JetPack'])} \(ships TensorRT {re.escape(row['TensorRT'])}\)", out.stdout
    )
    assert "checks passed (--check: nothing installed)" in out.stdout
    assert "warning" not in out.stderr, out.stderr  # the fake TensorRT is the one that JetPack ships
    assert not (tmp_path / "root/venv").exists()  # a fake root forces --check


def test_setup_probes_nvidias_gstreamer_elements_and_warns_with_the_package(tmp_path):
    env = _fake_jetson(tmp_path / "root", "R36.4.3")
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 0 and "nvarguscamerasrc, nvvidconv, nvv4l2decoder present" in out.stdout
    out = _run(
        ["bash", str(DEPLOY / "setup.sh")],
        env={**env, "DEFECTDET_TEST_NO_GST": "nvarguscamerasrc nvvidconv avdec_h264"},
    )
    assert out.returncode == 0, out.stderr  # a USB camera needs none of them: warnings, not problems
    assert (
        "GStreamer has no nvarguscamerasrc nvvidconv: CSI cameras" in out.stderr
        and "nvidia-l4t-gstreamer" in out.stderr
    )
    assert "no avdec_h264" in out.stderr and "gstreamer1.0-libav" in out.stderr
    assert "missing nvarguscamerasrc nvvidconv" in out.stdout


def test_setup_warns_when_tensorrt_is_not_the_jetpack_one(tmp_path):
    env = _fake_jetson(tmp_path / "root", "R36.4.3", trt="10.7.0.23")
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 0 and "JetPack 6.2 ships 10.3" in out.stderr


def test_setup_refuses_a_pypi_tensorrt(tmp_path):
    env = _fake_jetson(tmp_path / "root", "R36.4.0")
    pip_site = tmp_path / "home/.local/lib/python3.10/site-packages"
    _fake_module(pip_site / "tensorrt", "10.3.0")
    env["PYTHONPATH"] = f"{pip_site}:{env['PYTHONPATH']}"
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 1
    assert f"tensorrt 10.3.0 at {pip_site}/tensorrt/__init__.py is not JetPack's" in out.stderr
    assert "sudo apt install python3-libnvinfer" in out.stderr and "nothing was changed" in out.stderr


def test_setup_names_a_pip_opencv_that_shadows_jetpacks(tmp_path):
    env = _fake_jetson(tmp_path / "root", "R36.4.3")
    pip_site = tmp_path / "usr/local/lib/python3.10/dist-packages"
    _fake_cv2(pip_site / "cv2", gstreamer=False)
    env["PYTHONPATH"] = f"{pip_site}:{env['PYTHONPATH']}"
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 1
    assert "has no GStreamer and shadows JetPack's OpenCV" in out.stderr
    assert "pip uninstall -y opencv-python" in out.stderr


def test_setup_lists_every_missing_piece_with_its_fix(tmp_path):
    """JetPack's own OpenCV without GStreamer, no tensorrt, no nvcc: all three reported at once."""
    env = _fake_jetson(tmp_path / "root", "R36.3.0", gstreamer=False)
    shutil.rmtree(tmp_path / "root/usr/lib/python3/dist-packages/tensorrt")
    (tmp_path / "root/usr/local/cuda/bin/nvcc").unlink()
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 1 and "3 problem(s)" in out.stderr
    for fix in (
        "sudo apt install python3-libnvinfer",
        "sudo apt install --reinstall nvidia-opencv",
        "nvidia-jetpack",
    ):
        assert fix in out.stderr
    out = _run(["bash", str(DEPLOY / "setup.sh"), "--no-pycuda"], env=env)  # nvcc only matters for pycuda
    assert "2 problem(s)" in out.stderr


def _fake_apt(root: Path, env: dict) -> Path:
    """An apt-get stand-in: logs its arguments; `install` puts JetPack's tensorrt module and nvcc
    into the fake root, as python3-libnvinfer and nvidia-jetpack do. Returns the log file."""
    log, site = root / "apt.log", root / "usr/lib/python3/dist-packages"
    apt = root / "tools" / "fake-apt"
    apt.write_text(f"""#!/bin/sh
echo "$*" >> {log}
case "$*" in *python3-libnvinfer*) mkdir -p {site}/tensorrt &&
  echo "__version__ = '10.3.0.30'" > {site}/tensorrt/__init__.py ;; esac
case "$*" in *nvidia-jetpack*)
  printf '#!/bin/sh\necho "Cuda compilation tools, release 12.6"\n' > {root}/usr/local/cuda/bin/nvcc &&
  chmod +x {root}/usr/local/cuda/bin/nvcc ;; esac
""")
    apt.chmod(0o755)
    env["DEFECTDET_APT"] = str(apt)
    return log


def test_setup_installs_the_apt_prerequisites_it_prints_and_checks_again(tmp_path):
    """A fresh image (no TensorRT bindings, no CUDA toolkit): one run with --install-prerequisites
    installs both apt packages with one apt-get line, checks again and passes."""
    root = tmp_path / "root"
    env = _fake_jetson(root, "R36.4.3")
    shutil.rmtree(root / "usr/lib/python3/dist-packages/tensorrt")
    (root / "usr/local/cuda/bin/nvcc").unlink()
    log = _fake_apt(root, env)
    out = _run(
        ["bash", str(DEPLOY / "setup.sh")], env=env
    )  # without the flag, not on a terminal: printed only
    assert out.returncode == 1 and not log.exists()
    assert "install -y nvidia-jetpack python3-libnvinfer" in out.stdout
    assert "setup.sh --install-prerequisites" in out.stderr
    out = _run(["bash", str(DEPLOY / "setup.sh"), "--install-prerequisites"], env=env)
    assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == ["update", "install -y nvidia-jetpack python3-libnvinfer"]
    assert "checking again" in out.stdout and "checks passed" in out.stdout


@pytest.mark.parametrize(
    "l4t, jetpack, trt", [("R35.1.0", "5.0.2", "8.4.1.5"), ("R32.7.4", "4.x", "8.2.1.8")]
)
def test_setup_refuses_jetpack_5_0_and_older(tmp_path, l4t, jetpack, trt):
    env = _fake_jetson(tmp_path / "root", l4t, trt=trt)
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 1
    assert f"JetPack {jetpack} (L4T {l4t}) is not supported" in out.stderr
    assert "TensorRT >= 8.5 (JetPack 5.1 or newer)" in out.stderr and "nothing was changed" in out.stderr


@pytest.mark.parametrize("l4t, jetpack", [("R35.5.0", "5.1.3"), ("R35.6.1", "5.1.5")])
def test_setup_accepts_jetpack_5_1_on_a_xavier(tmp_path, l4t, jetpack):
    env = _fake_jetson(tmp_path / "root", l4t, trt="8.5.2.2")
    (tmp_path / "root/proc/device-tree/model").write_bytes(b"NVIDIA Jetson Xavier NX Developer Kit\0")
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 0, out.stderr
    assert (
        f"JetPack {jetpack} (ships TensorRT 8.5.2)" in " ".join(out.stdout.split())
        and "warning" not in out.stderr
    )


def test_setup_refuses_tensorrt_older_than_8_5(tmp_path):
    env = _fake_jetson(tmp_path / "root", "R35.4.1", trt="8.4.1.5")
    out = _run(["bash", str(DEPLOY / "setup.sh")], env=env)
    assert out.returncode == 1 and "TensorRT 8.4.1.5: defectdet build-engine needs >= 8.5" in out.stderr


def test_setup_upgrades_a_pip_too_old_for_editable_installs(tmp_path):
    """ensure_pip upgrades a pip too old for editable pyproject installs (JetPack 5: 20.x), not a new one."""
    bin_ = tmp_path / "venv/bin"
    bin_.mkdir(parents=True)
    log = tmp_path / "calls"
    for version in ("20.0.2", "23.0"):
        (bin_ / "python").write_text(
            f'#!/bin/sh\nif [ "$3" = "--version" ]; then echo "pip {version} from x"; '
            f'else echo "$@" >>{log}; fi\n'
        )
        (bin_ / "python").chmod(0o755)
        script = (
            f"source {shlex.quote(str(DEPLOY / 'setup.sh'))}; VENV={shlex.quote(str(tmp_path / 'venv'))}; "
            'ensure_pip "$VENV/bin/python"'
        )
        out = _run(["bash", "-c", script])
        assert out.returncode == 0, out.stderr
    assert log.read_text().splitlines() == [
        "-m pip install -q --upgrade pip>=21.3"
    ]  # only the old pip was upgraded


def test_setup_summary_reports_the_venvs_packages():
    """The summary's Python part runs in a venv (here: the test's own) and names what it found."""
    venv = Path(sys.executable).parent.parent
    script = (
        f"source {shlex.quote(str(DEPLOY / 'setup.sh'))}; VENV={shlex.quote(str(venv))}; "
        'FOUND[model]="Jetson AGX Orin"; FOUND[l4t]=36.4.3; FOUND[jetpack]=6.2; FOUND[trt_expected]=10.3; '
        'summary "$VENV/bin/python"'
    )
    out = _run(["bash", "-c", script])
    assert out.returncode == 0, out.stderr
    from defectdet import __version__

    assert re.search(rf"defectdet +{re.escape(__version__)} \(", out.stdout), out.stdout
    assert re.search(r"DLA cores +", out.stdout) and f"venv         {venv}" in out.stdout


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _bash_array(text: str, name: str) -> list[str]:
    m = re.search(rf"^{name}=\((.*?)\)$", text, re.M)
    assert m, f"{name}=(...) not found"
    return shlex.split(m.group(1))


def _tighter(spec: str, want: str) -> bool:
    """``spec`` is ``want``, maybe with a tighter upper bound (numpy < 2), markers kept."""
    req, _, marker = want.partition(";")
    got, _, got_marker = spec.partition(";")
    return got.startswith(req.strip()) and got_marker.strip() == marker.strip()


def test_setup_installs_pyprojects_edge_requirements_without_opencv():
    project = _pyproject()["project"]
    want = [
        r
        for r in project["dependencies"] + project["optional-dependencies"]["edge"]
        if not r.startswith("opencv-python")
    ]
    assert len(want) < len(
        project["dependencies"] + project["optional-dependencies"]["edge"]
    )  # the Jetson gets no pip OpenCV
    text = (DEPLOY / "setup.sh").read_text()
    edge, jetson = _bash_array(text, "EDGE_REQUIREMENTS"), _bash_array(text, "JETSON_REQUIREMENTS")
    assert len(edge) == len(want) and all(_tighter(e, w) for e, w in zip(edge, want)), (edge, want)
    assert jetson == project["optional-dependencies"]["jetson"]
    docker = (DEPLOY / "Dockerfile").read_text()
    docker_reqs = re.findall(r'"([A-Za-z0-9_.-]+[<>=][^"]*)"', docker)
    assert sorted(docker_reqs) == sorted(edge + jetson)


# ----------------------------------------------------------------------------------- the unit
def _unit() -> configparser.ConfigParser:
    cp = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",))
    cp.optionxform = str  # keys are case-sensitive in systemd
    cp.read_string(UNIT.read_text())
    return cp


def _env_values(path: Path) -> dict[str, str]:
    return {m.group(1): m.group(2) for m in re.finditer(r'^([A-Z_]+)="([^"]*)"$', path.read_text(), re.M)}


def test_unit_key_fields():
    u = _unit()
    s = u["Service"]
    assert s["Restart"] == "always"
    assert s["EnvironmentFile"] == "/etc/defectdet/defectdet.env"
    assert s["StandardOutput"] == "journal" and s["StandardError"] == "journal"
    assert "PYTHONUNBUFFERED=1" in s["Environment"].split()
    assert s["ExecStart"].startswith("@VENV@/bin/defectdet inspect ")
    assert u["Unit"]["StartLimitIntervalSec"] == "0"  # restarts are never rate-limited away
    assert u["Install"]["WantedBy"] == "multi-user.target"
    assert "PrivateTmp" not in s  # Argus' socket lives in /tmp


def test_env_file_defines_every_variable_the_unit_uses_each_commented():
    used = set(re.findall(r"\$\{?([A-Z_]+)\}?", _unit()["Service"]["ExecStart"]))
    lines = ENV_FILE.read_text().splitlines()
    defined = {}
    for i, line in enumerate(lines):
        if line and not line.startswith("#"):
            m = re.fullmatch(r'([A-Z_]+)="([^"$`\\]*)"', line)
            assert m, f'{ENV_FILE.name}:{i + 1}: expected KEY="value", got {line!r}'
            assert lines[i - 1].startswith("#"), (
                f"{ENV_FILE.name}:{i + 1}: {m.group(1)} has no comment above it"
            )
            defined[m.group(1)] = m.group(2)
    assert set(defined) == used
    assert all(defined[k] for k in used - {"DEFECTDET_ARGS"})


@pytest.fixture
def staged(tmp_path):
    """install-service.sh --root: the unit and settings staged in a temp folder, with a fake venv."""
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin/defectdet").write_text("#!/bin/sh\n")
    (venv / "bin/defectdet").chmod(0o755)
    user = _run(["id", "-un"]).stdout.strip()
    args = [
        "bash",
        str(DEPLOY / "install-service.sh"),
        "--root",
        str(tmp_path / "root"),
        "--venv",
        str(venv),
        "--user",
        user,
    ]
    out = _run(args + ["--model", "models/m.engine", "--source", "usb://0?width=1280&height=720&fourcc=MJPG"])
    assert out.returncode == 0, out.stderr
    return {"root": tmp_path / "root", "venv": venv, "args": args, "user": user}


def test_install_service_renders_unit_and_settings(staged):
    unit = staged["root"] / "etc/systemd/system/defectdet-inspect.service"
    text = unit.read_text()
    assert "@" not in text.replace("network-online", "")
    assert f"ExecStart={staged['venv']}/bin/defectdet inspect" in text and f"User={staged['user']}" in text
    env = _env_values(staged["root"] / "etc/defectdet/defectdet.env")
    assert env["DEFECTDET_MODEL"] == str(ROOT / "models/m.engine")  # made absolute
    assert env["DEFECTDET_SOURCE"] == "usb://0?width=1280&height=720&fourcc=MJPG"
    assert (staged["root"] / "etc/defectdet/inspect.yaml").read_text() == (
        ROOT / "configs/inspect.yaml"
    ).read_text()


def test_install_service_keeps_user_edits_on_rerun(staged):
    env_path = staged["root"] / "etc/defectdet/defectdet.env"
    env_path.write_text(env_path.read_text().replace('DEFECTDET_ARGS=""', 'DEFECTDET_ARGS="status_every=60"'))
    out = _run(staged["args"] + ["--source", "/dev/video1"])
    assert out.returncode == 0, out.stderr
    env = _env_values(env_path)
    assert env["DEFECTDET_ARGS"] == "status_every=60" and env["DEFECTDET_SOURCE"] == "/dev/video1"
    assert env["DEFECTDET_MODEL"] == str(ROOT / "models/m.engine")


def test_install_service_refuses_values_the_env_file_cannot_hold(staged):
    out = _run(staged["args"] + ["--source", 'rtsp://a"b'])
    assert out.returncode != 0 and "DEFECTDET_SOURCE" in out.stderr and "quote" in out.stderr


def test_install_service_needs_root_without_stage_folder(tmp_path):
    fake_id = tmp_path / "bin/id"  # a non-root user, even when the tests run as root
    fake_id.parent.mkdir()
    fake_id.write_text('#!/bin/sh\n[ "$1" = -u ] && echo 1000 && exit 0\nexec /usr/bin/id "$@"\n')
    fake_id.chmod(0o755)
    out = _run(
        ["bash", str(DEPLOY / "install-service.sh"), "--model", "x.engine"],
        env={"PATH": f"{fake_id.parent}:{os.environ['PATH']}"},
    )
    assert out.returncode != 0 and "needs root: sudo" in out.stderr and "--model x.engine" in out.stderr


def test_install_service_uninstall_keeps_settings(staged):
    out = _run(staged["args"] + ["--uninstall"])
    assert out.returncode == 0, out.stderr
    assert not (staged["root"] / "etc/systemd/system/defectdet-inspect.service").exists()
    assert (staged["root"] / "etc/defectdet/defectdet.env").exists()


def _systemd_argv(exec_start: str, env: dict[str, str]) -> list[str]:
    """ExecStart as systemd expands it: ${VAR} is one argument, $VAR alone is split at whitespace."""
    argv = []
    for word in exec_start.split():
        m = re.fullmatch(r"\$\{([A-Z_]+)\}|\$([A-Z_]+)", word)
        if m and m.group(1):
            argv.append(env[m.group(1)])
        elif m:
            argv += env[m.group(2)].split()
        else:
            argv.append(word)
    return argv


def test_service_command_line_parses_with_defectdet_inspect(staged):
    """The unit's ExecStart, expanded with the env file, is a valid `defectdet inspect` command."""
    from defectdet.station.inspect_cli import _parser, load_config

    root = staged["root"]
    env_path = root / "etc/defectdet/defectdet.env"
    env = _env_values(env_path)
    env["DEFECTDET_CONFIG"] = str(root / "etc/defectdet/inspect.yaml")  # the staged copy
    env["DEFECTDET_ARGS"] = "--backend tensorrt signals.gpio.enabled=true snapshots.quota_mb=100"
    unit = (root / "etc/systemd/system/defectdet-inspect.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    argv = _systemd_argv(exec_start, env)
    assert argv[:2] == [f"{staged['venv']}/bin/defectdet", "inspect"]
    a = _parser().parse_args(argv[2:])
    assert (a.model, a.source, a.out, a.backend) == (
        env["DEFECTDET_MODEL"],
        env["DEFECTDET_SOURCE"],
        env["DEFECTDET_OUT"],
        "tensorrt",
    )
    cfg = load_config(a.config, a.overrides, {"model": a.model, "source": a.source})
    assert cfg["signals"]["gpio"]["enabled"] is True and cfg["snapshots"]["quota_mb"] == 100


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_accepts_the_rendered_unit(staged):
    unit = staged["root"] / "etc/systemd/system/defectdet-inspect.service"
    out = _run(["systemd-analyze", "verify", str(unit)])
    complaints = [line for line in (out.stdout + out.stderr).splitlines() if "defectdet-inspect" in line]
    assert out.returncode == 0 and not complaints, out.stdout + out.stderr


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_catches_a_broken_unit(staged, tmp_path):
    """The check above can fail: a relative ExecStart is rejected."""
    unit = staged["root"] / "etc/systemd/system/defectdet-inspect.service"
    broken = tmp_path / "defectdet-inspect.service"
    broken.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=relative/defectdet", unit.read_text(), flags=re.M))
    out = _run(["systemd-analyze", "verify", str(broken)])
    assert out.returncode != 0


# ----------------------------------------------------------------------------------- build_engine.sh
def _tiny_model(path: Path, seed: int = 0, nc: int = 2) -> Path:
    """A 64x64 two-class 'detector' with one stride-32 level (4 anchors): pool -> 1x1 conv -> sigmoid."""
    np = pytest.importorskip("numpy")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    c = 4 + nc
    w = numpy_helper.from_array(
        np.random.default_rng(seed).normal(0, 1, (c, 3, 1, 1)).astype(np.float32), "w"
    )
    shape = numpy_helper.from_array(np.array([1, c, 4], dtype=np.int64), "shape")
    nodes = [
        helper.make_node(
            "AveragePool", ["images"], ["p"], kernel_shape=[32, 32], strides=[32, 32]
        ),  # (1, 3, 2, 2)
        helper.make_node("Conv", ["p", "w"], ["c"]),  # (1, 4+nc, 2, 2)
        helper.make_node("Sigmoid", ["c"], ["s"]),
        helper.make_node("Reshape", ["s", "shape"], ["output0"]),  # (1, 4+nc, 4)
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 64, 64])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, c, 4])],
        [w, shape],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    names = {str(i): n for i, n in enumerate(["scratch", "spot", "crack", "dent"][:nc])}
    path.with_suffix(".json").write_text(json.dumps({"names": names, "imgsz": [64, 64], "strides": [32]}))
    return path


def _build_engine(*args) -> subprocess.CompletedProcess:
    venv = Path(sys.executable).parent.parent  # the test's venv stands in for .venv-jetson
    return _run(["bash", str(DEPLOY / "build_engine.sh"), *map(str, args)], env={"DEFECTDET_VENV": str(venv)})


def test_build_engine_self_check_times_the_model(tmp_path):
    model = _tiny_model(tmp_path / "model.onnx")
    out = _build_engine("--self-check-only", model, "--runs", 7, "--warmup", 1)
    assert out.returncode == 0, out.stderr
    m = re.search(
        r"latency over 7 runs \(after 1 warm-up\): inference median ([0-9.]+) ms, p90 ([0-9.]+) ms",
        out.stdout,
    )
    assert m, out.stdout
    assert 0 < float(m.group(1)) <= float(m.group(2))
    assert "backend=onnxruntime" in out.stdout and re.search(r"\d+ detection\(s\)", out.stdout)


def test_build_engine_compares_scores_with_onnx_runtime(tmp_path):
    model = _tiny_model(tmp_path / "a/model.onnx", seed=0)
    other = _tiny_model(tmp_path / "b/model.onnx", seed=5)
    same = _build_engine("--self-check-only", model, "--runs", 2, "--warmup", 0, "--compare-with", model)
    assert same.returncode == 0 and "max score difference 0.0000 (ok)" in same.stdout, (
        same.stdout + same.stderr
    )
    diff = _build_engine("--self-check-only", model, "--runs", 2, "--warmup", 0, "--compare-with", other)
    assert diff.returncode == 0 and "(LARGE" in diff.stdout, diff.stdout + diff.stderr


def test_build_engine_needs_the_sidecar(tmp_path):
    model = _tiny_model(tmp_path / "model.int8.onnx")
    model.with_suffix(".json").unlink()
    out = _build_engine(model, "--int8", "--fp16")
    assert out.returncode == 1 and "model.int8.json: missing; copy the sidecar JSON" in out.stderr


def test_build_engine_rejects_bad_counts(tmp_path):
    out = _build_engine(_tiny_model(tmp_path / "model.onnx"), "--runs", "many")
    assert out.returncode == 1 and "--runs many: expected a whole number" in out.stderr


def test_build_engine_without_tensorrt_fails_clearly_and_writes_nothing(tmp_path):
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is importable here: the build would run")
    except ImportError:
        pass
    model = _tiny_model(tmp_path / "model.onnx")
    out = _build_engine(model, "--fp16")
    assert out.returncode == 1
    assert "tensorrt is not importable" in out.stderr and "engine build failed" in out.stderr
    assert "trtexec --onnx=" in out.stdout  # what to run on the device instead
    assert not (tmp_path / "model.engine").exists()


# ----------------------------------------------------------------------------------- versions, Docker
@pytest.mark.parametrize("row", _readme_jetpack_table(), ids=lambda r: f"JetPack{r['JetPack']}")
def test_builder_routes_every_readme_tensorrt_to_the_flag_based_path(row):
    """JetPack's TensorRT (8.5 / 8.6 / 10.3) builds with precision flags, INT8 Q/DQ and the DLA — not the
    strongly typed TensorRT 11 path, which has neither flags nor DLA."""
    from defectdet.export.tensorrt import EngineOptions, ModelInfo, plan_build

    trt = row["TensorRT"]
    fp16_dla = plan_build(EngineOptions(onnx=Path("model.onnx"), fp16=True, dla_core=0), ModelInfo(), trt)
    assert fp16_dla.builder_flags == ["FP16", "GPU_FALLBACK"] and fp16_dla.dla_core == 0
    qdq = plan_build(
        EngineOptions(onnx=Path("model.int8.onnx"), int8=True, fp16=True),
        ModelInfo(qdq=True, gate="pass"),
        trt,
    )
    assert qdq.quantization == "explicit" and set(qdq.builder_flags) == {"INT8", "FP16"}
    assert ("EXPLICIT_BATCH" in fp16_dla.network_flags) == trt.startswith("8.")


def test_dockerfile_uses_the_readme_tags_and_jetpacks_tensorrt_and_opencv():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM nvcr\.io/nvidia/l4t-jetpack:\$\{L4T_TAG\}$", text, re.M)
    default = re.search(r"^ARG L4T_TAG=(\S+)$", text, re.M).group(1)
    readme_tags = {r["container tag (`nvcr.io/nvidia/l4t-jetpack`)"] for r in _readme_jetpack_table()}
    assert default in readme_tags and set(re.findall(r"\br36\.\d\.\d\b", text)) <= readme_tags | {"r36.4.3"}
    for line in re.findall(r"pip install[^\n]*", text):
        assert not re.search(r"tensorrt|opencv", line), line
    assert "--system-site-packages" in text and "pip install --no-deps -e ." in text


def test_dockerfile_build_check_is_valid_python():
    """The RUN python -c '...' check, joined as Docker joins continuation lines, compiles."""
    text = (DEPLOY / "Dockerfile").read_text()
    m = re.search(r"^RUN python -c '(.*?)'$", text, re.M | re.S)
    assert m, "RUN python -c '...' not found"
    code = m.group(1).replace("\\\n", "")
    compile(code, "Dockerfile-check", "exec")
    assert 'find_spec("tensorrt")' in code and "GStreamer:" in code
