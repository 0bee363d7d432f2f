"""``defectdet checks [--model model.bundle] [--source URI] [--out DIR] [--json] [--strict]``.

Can this machine run the station? One line per fact, ✔ or ✘ with the fix (– for what is only
informative): Python, numpy, OpenCV and whether it was built with GStreamer, ONNX Runtime and its
providers, TensorRT, pycuda, torch/ultralytics (present on a workstation, not needed on the
device), the JetPack/L4T release, the CUDA device and its DLA cores, the backend a model or bundle
will run on (``--model``), the GStreamer elements of each source kind, a camera or stream
(``--source``: one frame read), free disk for snapshots (``--out``), the power mode (``nvpmodel -q``).
``--json`` prints the same facts for fleet tooling. Exit 0 even with ✘ lines (a workstation lacks
a Jetson's parts), 1 with ``--strict`` when any line is ✘.

Torch-free; TensorRT and pycuda are asked through the TensorRT backend
(:func:`defectdet.runtime.backends.tensorrt.device_identity`). Commands and files are read through
:func:`_run` and :func:`_read`, so tests drive every probe with fakes.
"""

from __future__ import annotations

import importlib
import json
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, List, Optional, Tuple

TEGRA_RELEASE = "/etc/nv_tegra_release"
# L4T release -> JetPack (NVIDIA's JetPack archive); the major alone names the JetPack line.
JETPACK = {
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
}
JETPACK_LINE = {"35": "5.1.x", "36": "6.x", "38": "7.x"}
# source kind -> the GStreamer elements its pipeline needs (station/sources.py builds these pipelines)
GST_ELEMENTS = {
    "csi://": [("nvarguscamerasrc",), ("nvvidconv",), ("appsink",)],
    "rtsp://#backend=gstreamer": [
        ("rtspsrc",),
        ("rtph264depay",),
        ("h264parse",),
        ("nvv4l2decoder", "avdec_h264"),
        ("appsink",),
    ],
    "usb:// (GStreamer)": [("v4l2src",), ("videoconvert",), ("appsink",)],
}
MIN_FREE_MB = 600.0  # the default snapshots quota (500 MB) + the free space kept for the event log (100 MB)
PASS, FAIL, INFO = "✔", "✘", "–"


@dataclass
class Check:
    """One line: ``ok`` True (✔), False (✘) or None (– informative), what was found, and the fix."""

    name: str
    ok: Optional[bool]
    detail: str
    fix: str = ""

    def line(self, marks: Tuple[str, str, str] = (PASS, FAIL, INFO)) -> str:
        mark = marks[2] if self.ok is None else (marks[0] if self.ok else marks[1])
        return f"{mark} {self.name:<22} {self.detail}" + (
            f"  -> {self.fix}" if self.fix and self.ok is False else ""
        )


# ----------------------------------------------------------------------------- the machine, for fakes
def _run(cmd: List[str], timeout: float = 20.0) -> Optional[Tuple[int, str]]:
    """(exit status, stdout + stderr) of ``cmd``, or None when the program is not installed."""
    exe = shutil.which(cmd[0])
    if exe is None:
        return None
    try:
        p = subprocess.run([exe, *cmd[1:]], capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 124, str(e)
    return p.returncode, (p.stdout or "") + (p.stderr or "")


def _read(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def _module(name: str) -> Any:
    """The imported module, or None when it is not installed (or fails to import)."""
    try:
        return importlib.import_module(name)
    except Exception:  # a broken install is as good as none here  # noqa: BLE001
        return None


def _identity() -> dict:
    from .runtime.backends.tensorrt import device_identity

    return device_identity()


# ----------------------------------------------------------------------------- probes
def versions() -> List[Check]:
    py = sys.version_info
    out = [
        Check("python", py >= (3, 8), ".".join(map(str, py[:3])), "Python 3.8 or newer (JetPack 5 ships 3.8)")
    ]
    for name, fix in (
        ("numpy", "pip install numpy"),
        ("cv2", "JetPack's python3-opencv (with GStreamer), or pip install opencv-python-headless"),
        ("onnxruntime", "pip install onnxruntime (on a Jetson: the onnxruntime-gpu wheel for your JetPack)"),
    ):
        m = _module(name)
        label = {"cv2": "opencv"}.get(name, name)
        out.append(Check(label, m is not None, getattr(m, "__version__", "?") if m else "not installed", fix))
        if name == "onnxruntime" and m is not None and hasattr(m, "get_available_providers"):
            out[-1].detail += f" ({', '.join(m.get_available_providers())})"
    out.append(opencv_gstreamer(_module("cv2")))
    trt, cuda = _module("tensorrt"), _module("pycuda")
    out.append(
        Check(
            "tensorrt",
            trt is not None and _trt_supported(getattr(trt, "__version__", "0")),
            getattr(trt, "__version__", "?") if trt else "not importable",
            "on the Jetson: sudo apt install python3-libnvinfer (JetPack); a virtualenv needs "
            "--system-site-packages; TensorRT 8.5 or newer",
        )
    )
    out.append(
        Check(
            "pycuda",
            cuda is not None,
            getattr(cuda, "VERSION_TEXT", "present") if cuda else "not installed",
            "export PATH=/usr/local/cuda/bin:$PATH; pip install 'defectdet[jetson]'",
        )
    )
    for name in (
        "torch",
        "ultralytics",
    ):  # asked of the installed metadata: importing them is slow and chatty
        v = _dist_version(name)
        out.append(Check(name, None, f"{v} (training, export)" if v else "absent (not needed on the device)"))
    return out


def _dist_version(name: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _trt_supported(version: str) -> bool:
    m = re.match(r"(\d+)\.(\d+)", str(version))
    return bool(m) and (int(m.group(1)), int(m.group(2))) >= (8, 5)


def opencv_gstreamer(cv2: Any) -> Check:
    """Whether OpenCV was built with GStreamer (its build information says ``GStreamer: YES (1.20.3)``)."""
    fix = (
        "csi:// and rtsp://#backend=gstreamer need it: use JetPack's OpenCV (apt install python3-opencv, and "
        "uninstall pip's opencv-python, which has no GStreamer) or build OpenCV with -D WITH_GSTREAMER=ON"
    )
    if cv2 is None:
        return Check("opencv gstreamer", False, "OpenCV not installed", fix)
    m = re.search(r"GStreamer:\s*(\w+)(?:\s*\(([^)]*)\))?", cv2.getBuildInformation())
    yes = bool(m) and m.group(1).upper() == "YES"
    return Check(
        "opencv gstreamer", yes, (f"YES ({m.group(2)})" if m.group(2) else "YES") if yes else "NO", fix
    )


def jetpack() -> Check:
    """The L4T release in /etc/nv_tegra_release (``# R36 (release), REVISION: 4.3, ...``), its JetPack."""
    text = _read(TEGRA_RELEASE)
    if text is None:
        return Check(
            "jetpack / l4t",
            False,
            f"not a Jetson ({TEGRA_RELEASE} not found)",
            "fine on a workstation; on a Jetson flash JetPack 5.1.x or 6.x",
        )
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if not m:
        return Check(
            "jetpack / l4t",
            False,
            f"{TEGRA_RELEASE}: unrecognised ({text.strip()[:60]!r})",
            "expected '# R36 (release), REVISION: 4.3, ...'",
        )
    major, rev = m.group(1), m.group(2)
    full = f"{major}.{rev}" + (".0" if rev.count(".") == 0 else "")
    jp = JETPACK.get(full) or JETPACK_LINE.get(major)
    return Check(
        "jetpack / l4t",
        major in JETPACK_LINE,
        f"L4T R{major}.{rev}" + (f" (JetPack {jp})" if jp else ""),
        "defectdet supports JetPack 5.1.x (L4T R35) and 6.x (R36)",
    )


def cuda_device(identity: Optional[Callable[[], dict]] = None) -> Check:
    from .runtime.backends import BackendUnavailable

    try:
        d = (identity or _identity)()
    except BackendUnavailable as e:
        return Check(
            "cuda device / dla",
            False,
            f"none usable: {str(e).split(': the ')[0][:160]}",
            "on a Jetson: JetPack's TensorRT + pycuda; elsewhere the station runs on ONNX Runtime (CPU)",
        )
    return Check(
        "cuda device / dla",
        True,
        f"{d['gpu']} (compute {d['compute_capability']}), {d['dla_cores']} DLA "
        f"core(s), TensorRT {d['tensorrt']}",
    )


def model_backend(model: str, identity: Optional[Callable[[], dict]] = None) -> Check:
    """The file and backend ``inspect --model`` will run (a bundle: verified, its engine for this device)."""
    from .errors import DefectdetError
    from .station.bundled import resolve_model

    if not Path(model).is_file():
        return Check(
            "model backend", False, f"{model}: not found", "give the model.bundle `defectdet package` wrote"
        )
    try:
        r = resolve_model(model, "auto", build_engine=False, identity=identity or _identity)
    except DefectdetError as e:
        return Check(
            "model backend", False, str(e), "package the model again (defectdet package) and copy it whole"
        )
    if r.model.suffix not in (".onnx", ".engine", ".plan"):
        return Check(
            "model backend",
            False,
            f"{model}: neither a bundle nor an .onnx/.engine",
            "give the model.bundle `defectdet package` wrote",
        )
    if r.fix:
        return Check("model backend", False, r.note, r.fix)
    detail = (
        r.note
        or f"{r.model.name} on {'TensorRT' if r.model.suffix in ('.engine', '.plan') else 'ONNX Runtime'}"
    )
    return Check("model backend", True, detail)


def gstreamer() -> List[Check]:
    if _run(["gst-inspect-1.0", "--version"]) is None:
        return [
            Check(
                "gstreamer",
                False,
                "gst-inspect-1.0 not found",
                "sudo apt install gstreamer1.0-tools gstreamer1.0-plugins-good gstreamer1.0-plugins-bad",
            )
        ]
    from .station.gst import PROVIDERS

    out = []
    for kind, needs in GST_ELEMENTS.items():
        lacking = [
            alts
            for alts in needs
            if not any((_run(["gst-inspect-1.0", "--exists", e]) or (1, ""))[0] == 0 for e in alts)
        ]
        names = [" or ".join(a) for a in lacking]
        fix = "; ".join(sorted({PROVIDERS.get(a[0], "a GStreamer plugin package") for a in lacking}))
        out.append(
            Check(
                f"gstreamer {kind}",
                not lacking,
                "elements present" if not lacking else f"missing {', '.join(names)}",
                fix,
            )
        )
    return out


def camera(source: str, timeout: float = 15.0) -> Check:
    """Open ``source`` as ``inspect`` would and read one frame (given up after ``timeout`` seconds:
    a camera that never answers must not hang the checks)."""
    import threading

    from .errors import DefectdetError
    from .station.sources import open_reader, parse_source

    got: dict = {}

    def read() -> None:
        try:
            reader = open_reader(parse_source(source))
        except DefectdetError as e:
            got["error"] = e
            return
        try:
            got["image"] = reader.read()[0]
        finally:
            reader.release()

    t = threading.Thread(target=read, name="checks-camera", daemon=True)
    t.start()
    t.join(timeout)
    fix = "check the URI, the cable and the permissions (ls -l /dev/video*)"
    if t.is_alive():
        return Check("camera", False, f"{source}: no frame within {timeout:g} s", fix)
    if "error" in got:
        return Check("camera", False, str(got["error"]), fix)
    img = got.get("image")
    if img is None:
        return Check("camera", False, f"{source}: opened, but no frame came", "check the camera is streaming")
    return Check("camera", True, f"{source}: {img.shape[1]}x{img.shape[0]} frame read")


def disk(out: str, need_mb: float = MIN_FREE_MB) -> Check:
    p = Path(out).resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    free = shutil.disk_usage(str(p)).free / 2**20
    return Check(
        "disk for snapshots",
        free >= need_mb,
        f"{free / 1024:.1f} GiB free at {p}",
        f"free {need_mb:.0f} MB or more (snapshots.quota_mb + snapshots.min_free_mb), or lower the quota",
    )


def power_mode() -> Check:
    r = _run(["nvpmodel", "-q"])
    if r is None:
        return Check(
            "power mode", False, "nvpmodel not found (not a Jetson)", "on a Jetson: sudo nvpmodel -m 0 (MAXN)"
        )
    code, text = r
    m = re.search(r"NV Power Mode:\s*(\S+)", text)
    if code != 0 or not m:
        return Check("power mode", False, f"nvpmodel -q failed ({text.strip()[:80]})", "run it with sudo")
    return Check(
        "power mode",
        True,
        m.group(1) + ("" if "MAXN" in m.group(1) else " (not MAXN: sudo nvpmodel -m 0 for full speed)"),
    )


def run_checks(model: Optional[str] = None, source: Optional[str] = None, out: str = "runs") -> List[Check]:
    checks = versions() + [jetpack(), cuda_device()]
    if model:
        checks.append(model_backend(model))
    checks += gstreamer()
    if source:
        checks.append(camera(source))
    return checks + [disk(out), power_mode()]


def _marks() -> Tuple[str, str, str]:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        (PASS + FAIL + INFO).encode(enc)
    except (UnicodeEncodeError, LookupError):
        return "OK", "XX", "--"
    return PASS, FAIL, INFO


def cli(argv: List[str]) -> int:
    from .settings.options import parser
    from .settings.tools import CHECKS

    ap = parser(
        CHECKS,
        __doc__.split("\n\n")[1].strip(),
        [
            (0, "the checks ran (✘ lines included, unless --strict)"),
            (1, "--strict and at least one ✘ line"),
        ],
    )
    a = ap.parse_args(argv)
    checks = run_checks(a.model, a.source, a.out)
    failed = [c for c in checks if c.ok is False]
    if a.json:
        print(
            json.dumps(
                {"ok": not failed, "failed": len(failed), "checks": [asdict(c) for c in checks]}, indent=1
            )
        )
    else:
        marks = _marks()
        print("\n".join(c.line(marks) for c in checks))
        print(f"{len(failed)} of {len(checks)} checks failed" if failed else "all checks passed")
    return 1 if a.strict and failed else 0
