#!/usr/bin/env bash
# deploy/jetson/setup.sh — set up defectdet on an NVIDIA Jetson (JetPack 5.1.x or 6.x), idempotently.
#
#   deploy/jetson/setup.sh [--check] [--install-prerequisites] [--venv DIR] [--no-pycuda]
#
# 1. Checks this is a Jetson (/etc/nv_tegra_release, /proc/device-tree/model) and maps the L4T
#    release to its JetPack and the TensorRT that JetPack ships (5.1.x -> 8.5.2, 6.0 -> 8.6.2,
#    6.1/6.2 -> 10.3). JetPack 5.0 (TensorRT 8.4) and 4.x are refused.
# 2. Checks the system Python (>= 3.8: JetPack 5's 3.8 runs inspect and build-engine), TensorRT's Python bindings *from JetPack* (a PyPI
#    `tensorrt` is refused: it is a different build, or a placeholder), OpenCV with GStreamer
#    (JetPack's; pip's opencv-python has none and, when installed, shadows JetPack's), the CUDA
#    toolkit (nvcc) and what pycuda needs to compile. Every problem is listed with its fix, and
#    nothing is changed until all checks pass (--check stops there). Fixes that are apt packages
#    are collected into one `apt-get install` line: --install-prerequisites runs it (with sudo
#    unless root) and checks again, so a fresh JetPack image goes through in one command; without
#    the flag, an interactive run asks first and a non-interactive one prints the line.
# 3. Creates a virtualenv with --system-site-packages, so JetPack's tensorrt and cv2 are visible.
# 4. Installs defectdet into it WITHOUT pip's opencv-python: `pip install --no-deps -e .`, then the
#    core + edge requirements listed below minus opencv-python (kept in step with pyproject.toml by
#    tests/test_deploy.py). We chose --no-deps + an explicit list over a constraints file because pip
#    constraints can pin a version but cannot exclude a package an extra asks for.
# 5. Builds pycuda (+ tqdm and pillow, the `jetson` extra) against JetPack's CUDA (CUDA_ROOT, PATH, CPATH).
# 6. Verifies the venv sees JetPack's tensorrt and GStreamer-enabled cv2, and prints a summary.
#
# Re-running skips what is done (venv, editable install, pycuda). Environment overrides:
#   DEFECTDET_VENV    venv folder (default: <repo>/.venv-jetson)
#   DEFECTDET_PYTHON  the JetPack Python (default: /usr/bin/python3; JetPack's bindings are built for it)
#   CUDA_HOME         CUDA toolkit (default: /usr/local/cuda)
#   DEFECTDET_FAKE_ROOT  tests only: read /etc, /proc, /usr/... under this folder; implies --check
#   DEFECTDET_APT     tests only: the command run instead of `sudo apt-get` (with a fake root, the only one)
set -euo pipefail

# shellcheck source=paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"  # SCRIPT_DIR, REPO_ROOT, VENV
ROOT="${DEFECTDET_FAKE_ROOT:-}"
PY="${DEFECTDET_PYTHON:-/usr/bin/python3}"
CUDA_DIR="${CUDA_HOME:-/usr/local/cuda}"
CHECK_ONLY=0
WITH_PYCUDA=1
INSTALL_PREREQUISITES=0
MIN_PYTHON="3.8"   # pyproject.toml requires-python (training needs 3.9+, but not on the Jetson)
MIN_TENSORRT="8.5" # JetPack 5.1.x ships 8.5.2: name-based I/O and execute_async_v3, what the runtime uses

# pyproject.toml: [project] dependencies + the `edge` extra, minus opencv-python (JetPack's OpenCV
# is used instead). numpy stays below 2: JetPack's cv2 and tensorrt modules are built against numpy 1.x.
EDGE_REQUIREMENTS=("numpy>=1.23,<2" "pyyaml>=6.0" "onnxruntime>=1.17; python_version >= '3.9'" "onnxruntime>=1.16; python_version < '3.9'" "paho-mqtt>=1.6")
# pyproject.toml: the `jetson` extra (pycuda compiles here against JetPack's CUDA; pillow reads the headers of
# build-engine's calibration images, 10.4 on Python 3.8).
JETSON_REQUIREMENTS=("pycuda>=2022.2" "tqdm>=4.60" "pillow>=9.0")

PROBLEMS=()
FIXES=()
APT_PACKAGES=() # the apt packages among the fixes (problems and warnings), for one apt-get line
declare -A FOUND=()

say() { printf 'setup: %s\n' "$*"; }
warn() { printf 'setup: warning: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }
# problem TEXT [FIX] [APT PACKAGES...]
problem() {
    PROBLEMS+=("$1")
    [[ -n "${2:-}" ]] && FIXES+=("$2")
    shift $(($# < 2 ? $# : 2))
    apt_needs "$@"
}
# apt_needs PACKAGE...: fixed by installing these apt packages (kept once each, in order)
apt_needs() {
    local pkg have
    for pkg in "$@"; do
        for have in "${APT_PACKAGES[@]}"; do [[ "$have" == "$pkg" ]] && continue 2; done
        APT_PACKAGES+=("$pkg")
    done
    return 0
}
host() { printf '%s%s' "$ROOT" "$1"; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

parse_args() {
    while (($#)); do
        case "$1" in
            --check) CHECK_ONLY=1 ;;
            --install-prerequisites) INSTALL_PREREQUISITES=1 ;;
            --no-pycuda) WITH_PYCUDA=0 ;;
            --venv) [[ $# -ge 2 ]] || die "--venv needs a folder"; VENV="$2"; shift ;;
            -h | --help) usage; exit 0 ;;
            *) die "unknown option '$1'; expected --check, --install-prerequisites, --venv DIR, --no-pycuda or --help" ;;
        esac
        shift
    done
    if [[ -n "$ROOT" ]]; then
        CHECK_ONLY=1 # a fake root describes another machine: never install anything from it
    fi
}

# "3.10" >= "3.9" as versions (each dotted part compared as a number).
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# ------------------------------------------------------------------------------------ the device
detect_jetson() {
    local release model_file
    release="$(host /etc/nv_tegra_release)"
    model_file="$(host /proc/device-tree/model)"
    if [[ ! -r "$release" ]]; then
        die "not an NVIDIA Jetson: $release not found (this script sets up a Jetson running JetPack 5.1 or 6; on a workstation use 'make venv', on other ARM boards run the .onnx model with ONNX Runtime)"
    fi
    FOUND[model]="unknown Jetson"
    if [[ -r "$model_file" ]]; then
        FOUND[model]="$(tr -d '\0' <"$model_file")"
    fi
    case "${FOUND[model]}" in
        *Jetson* | *NVIDIA* | *Orin* | *Xavier* | *Thor*) ;;
        *) warn "device-tree model '${FOUND[model]}' does not name a Jetson; continuing because $release exists" ;;
    esac
    # "# R36 (release), REVISION: 4.3, GCID: ..." -> 36.4.3
    local first major rev
    first="$(head -n1 "$release")"
    major="$(sed -n 's/^# R\([0-9][0-9]*\) (release).*/\1/p' <<<"$first")"
    rev="$(sed -n 's/.*REVISION: \([0-9][0-9.]*\).*/\1/p' <<<"$first")"
    [[ -n "$major" && -n "$rev" ]] || die "$release: cannot read the L4T release from '$first'; expected '# R36 (release), REVISION: 4.3, ...'"
    FOUND[l4t]="$major.$rev"
}

# L4T release -> "JetPack|TensorRT it ships" (Jetson Linux release notes).
jetpack_of() {
    local l4t="$1"
    case "$l4t" in
        36.5 | 36.5.*) echo "6.2.2|10.3" ;;
        36.4.4*) echo "6.2.1|10.3" ;;
        36.4.3*) echo "6.2|10.3" ;;
        36.4 | 36.4.[0-2]*) echo "6.1|10.3" ;;
        36.4.*) echo "6.2.x|10.3" ;;
        36.3 | 36.3.*) echo "6.0|8.6.2" ;;
        36.2 | 36.2.*) echo "6.0 DP|8.6.2" ;;
        36.*) echo "6.x|unknown" ;;
        35.6.1*) echo "5.1.5|8.5.2" ;;
        35.6 | 35.6.*) echo "5.1.4|8.5.2" ;;
        35.5*) echo "5.1.3|8.5.2" ;;
        35.4*) echo "5.1.2|8.5.2" ;;
        35.3*) echo "5.1.1|8.5.2" ;;
        35.2*) echo "5.1|8.5.2" ;;
        35.1*) echo "5.0.2|8.4.1" ;;
        35.*) echo "5.x|8.5.2" ;;
        32.*) echo "4.x|8.2 or older" ;;
        38.*) echo "7.x|10.13 or newer" ;;
        *) echo "unknown|unknown" ;;
    esac
}

check_release() {
    local pair
    pair="$(jetpack_of "${FOUND[l4t]}")"
    FOUND[jetpack]="${pair%%|*}"
    FOUND[trt_expected]="${pair##*|}"
    case "${FOUND[jetpack]}" in
        4.* | 5.0*)
            problem "JetPack ${FOUND[jetpack]} (L4T R${FOUND[l4t]}) is not supported: it ships TensorRT ${FOUND[trt_expected]}; defectdet needs TensorRT >= $MIN_TENSORRT (JetPack 5.1 or newer)" \
                "update to JetPack 5.1.x (Xavier NX / AGX Xavier, and Orin) or 6.x (Orin); Nano/TX2 stop at JetPack 4: run the .onnx model with ONNX Runtime there (no TensorRT engine)" ;;
        7.* | unknown)
            warn "L4T R${FOUND[l4t]} (JetPack ${FOUND[jetpack]}) is newer or other than this script knows (known: JetPack 5.1-6.2); continuing" ;;
    esac
}

# ------------------------------------------------------------------------------------ components
check_python() {
    local ver include
    if ! ver="$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)"; then
        die "$PY not found or not runnable; set DEFECTDET_PYTHON to JetPack's python3 (JetPack's TensorRT bindings are built for it)"
    fi
    FOUND[python]="$ver ($PY)"
    if ! version_ge "$ver" "$MIN_PYTHON"; then
        problem "$PY is Python $ver; defectdet needs >= $MIN_PYTHON" "use JetPack 5.1.x (Ubuntu 20.04, Python 3.8) or 6 (Ubuntu 22.04, Python 3.10)"
        return
    fi
    if ! "$PY" -c 'import venv, ensurepip' 2>/dev/null; then
        problem "$PY cannot create virtualenvs (no venv/ensurepip module)" "sudo apt install python3-venv python3-pip" \
            python3-venv python3-pip
    fi
    include="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
    if ((WITH_PYCUDA)) && [[ ! -f "$(host "$include")/Python.h" ]]; then
        problem "$(host "$include")/Python.h is missing: pycuda cannot compile" "sudo apt install python3-dev" python3-dev
    fi
    if ((WITH_PYCUDA)) && ! command -v g++ >/dev/null; then
        problem "g++ not found: pycuda cannot compile" "sudo apt install build-essential" build-essential
    fi
}

check_cuda() {
    local nvcc out
    nvcc="$(host "$CUDA_DIR")/bin/nvcc"
    if [[ ! -x "$nvcc" ]]; then
        FOUND[cuda]="not found"
        if ((WITH_PYCUDA)); then
            problem "$nvcc not found: the CUDA toolkit is needed to build pycuda" \
                "sudo apt install nvidia-jetpack (the whole JetPack SDK), or set CUDA_HOME; --no-pycuda skips pycuda (ONNX Runtime backend only)" \
                nvidia-jetpack
        fi
        return
    fi
    out="$("$nvcc" --version 2>/dev/null | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p' | head -n1)"
    FOUND[cuda]="${out:-unknown} ($(host "$CUDA_DIR"))"
}

# Is a module file JetPack's (apt: /usr/lib/python3*/dist-packages), not pip's?
from_jetpack() {
    local file="$1" prefix
    prefix="$(host /usr/lib/python3)"
    [[ "$file" == "$prefix"*/dist-packages/* ]]
}

# Prints "<version>\t<file>" of a module, or the import error; returns 1 when the import fails.
probe_module() {
    local python="$1" module="$2"
    "$python" -c "import sys, $module as m; sys.stdout.write(m.__version__ + '\t' + m.__file__)" 2>&1 | tail -n1
    return "${PIPESTATUS[0]}"
}

# probe_or_report PYTHON MODULE KEY FIX [APT PACKAGES...]: sets MOD_VER and MOD_FILE; when the import
# fails, records FOUND[KEY]="not importable" and the problem with FIX, and returns 1.
probe_or_report() {
    local out
    if ! out="$(probe_module "$1" "$2")"; then
        FOUND[$3]="not importable"
        problem "$1 cannot import $2 ($out)" "$4" "${@:5}"
        return 1
    fi
    MOD_VER="${out%%$'\t'*}"
    MOD_FILE="${out#*$'\t'}"
}

check_tensorrt() {
    local python="$1" ver file
    probe_or_report "$python" tensorrt tensorrt \
        "sudo apt install python3-libnvinfer (JetPack's TensorRT Python bindings; never 'pip install tensorrt')" \
        python3-libnvinfer || return 0
    ver="$MOD_VER" file="$MOD_FILE"
    FOUND[tensorrt]="$ver ($file)"
    if ! from_jetpack "$file"; then
        problem "tensorrt $ver at $file is not JetPack's (a pip install?): its build does not match this Jetson's libraries" \
            "pip uninstall tensorrt (as the user that installed it; for $file), then use JetPack's: sudo apt install python3-libnvinfer"
        return
    fi
    if ! version_ge "$ver" "$MIN_TENSORRT"; then
        problem "TensorRT $ver: defectdet build-engine needs >= $MIN_TENSORRT" "use JetPack 5.1.x (8.5.2), 6.0 (8.6.2) or 6.1/6.2 (10.3)"
    elif [[ "${FOUND[trt_expected]}" =~ ^[0-9] && "$ver" != "${FOUND[trt_expected]}"* ]]; then
        warn "TensorRT $ver, but JetPack ${FOUND[jetpack]} ships ${FOUND[trt_expected]}: engines are tied to the TensorRT that builds them; build on this device"
    fi
}

check_opencv() {
    local python="$1" ver file gst jetpack_cv2
    probe_or_report "$python" cv2 opencv \
        "sudo apt install nvidia-opencv (JetPack's OpenCV, built with GStreamer); if the error names numpy, keep numpy < 2" \
        nvidia-opencv || return 0
    ver="$MOD_VER" file="$MOD_FILE"
    gst="$("$python" -c 'import cv2
for line in cv2.getBuildInformation().splitlines():
    if line.strip().startswith("GStreamer:"):
        print("YES" if "YES" in line else "NO")
        break
else:
    print("NO")')"
    FOUND[opencv]="$ver, GStreamer $gst ($file)"
    [[ "$gst" == YES ]] && return
    jetpack_cv2="$(compgen -G "$(host /usr/lib/python3)*/dist-packages/cv2" | head -n1 || true)"
    if ! from_jetpack "$file" && [[ -n "$jetpack_cv2" ]]; then
        problem "cv2 $ver at $file has no GStreamer and shadows JetPack's OpenCV ($jetpack_cv2): CSI cameras and GStreamer RTSP cannot open" \
            "$python -m pip uninstall -y opencv-python opencv-python-headless opencv-contrib-python opencv-contrib-python-headless (as the user that installed $file)"
    else
        problem "cv2 $ver at $file was built without GStreamer: CSI cameras (nvarguscamerasrc) and GStreamer RTSP cannot open" \
            "sudo apt install --reinstall nvidia-opencv (JetPack's OpenCV has GStreamer); remove any pip opencv-python"
    fi
}

report_problems() {
    ((${#PROBLEMS[@]})) || return 0
    printf 'setup: %d problem(s) found on %s (L4T R%s, JetPack %s):\n' "${#PROBLEMS[@]}" "${FOUND[model]}" "${FOUND[l4t]}" "${FOUND[jetpack]}" >&2
    local p f
    for p in "${PROBLEMS[@]}"; do printf '  - %s\n' "$p" >&2; done
    if ((${#FIXES[@]})); then
        printf 'setup: to fix:\n' >&2
        for f in "${FIXES[@]}"; do printf '  * %s\n' "$f" >&2; done
    fi
    if ((${#APT_PACKAGES[@]})); then
        printf 'setup: or let setup install the apt packages: %s --install-prerequisites\n' "$0" >&2
    fi
    printf 'setup: nothing was changed; re-run %s after fixing\n' "$0" >&2
    exit 1
}

# ------------------------------------------------------------------------------------ prerequisites
# The apt command line: DEFECTDET_APT (tests), else apt-get, with sudo unless root.
apt_command() {
    if [[ -n "${DEFECTDET_APT:-}" ]]; then
        echo "$DEFECTDET_APT"
    elif [[ "$(id -u)" -eq 0 ]]; then
        echo "apt-get"
    else
        echo "sudo apt-get"
    fi
}

# Offer (or, with --install-prerequisites, run) the one apt-get line for APT_PACKAGES; returns 0
# when it was run, so the checks are repeated.
offer_prerequisites() {
    ((${#APT_PACKAGES[@]})) || return 1
    local apt answer
    apt="$(apt_command)"
    say "apt packages that fix what the checks found: $apt install -y ${APT_PACKAGES[*]}"
    if [[ -n "$ROOT" && -z "${DEFECTDET_APT:-}" ]]; then
        return 1 # a fake root describes another machine: never install on this one
    fi
    if ((!INSTALL_PREREQUISITES)); then
        if [[ -t 0 && -t 1 ]]; then
            read -r -p "setup: install them now? [y/N] " answer || answer=""
            [[ "$answer" == [yY]* ]] || return 1
        else
            return 1
        fi
    fi
    say "running: $apt update && $apt install -y ${APT_PACKAGES[*]}"
    # shellcheck disable=SC2086  # $apt is a command and its prefix (sudo apt-get)
    $apt update || die "'$apt update' failed (network? see apt's message above)"
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $apt install -y "${APT_PACKAGES[@]}" ||
        die "'$apt install -y ${APT_PACKAGES[*]}' failed (see apt's message above)"
    return 0
}

run_checks() {
    PROBLEMS=()
    FIXES=()
    APT_PACKAGES=()
    detect_jetson
    check_release
    check_python
    check_cuda
    check_tensorrt "$PY"
    check_opencv "$PY"
    check_gstreamer
}

# ------------------------------------------------------------------------------------ installing
make_venv() {
    local cfg="$VENV/pyvenv.cfg"
    if [[ -f "$cfg" ]]; then
        grep -q '^include-system-site-packages *= *true' "$cfg" ||
            die "$VENV exists without --system-site-packages (it cannot see JetPack's tensorrt/cv2); remove it or pass --venv NEW_DIR"
        say "venv: $VENV exists (system site-packages visible) - kept"
        return
    fi
    say "venv: creating $VENV (--system-site-packages: JetPack's tensorrt and cv2 stay visible)"
    "$PY" -m venv --system-site-packages "$VENV" || die "cannot create $VENV with $PY -m venv (sudo apt install python3-venv)"
}

# An editable install from pyproject.toml alone needs pip >= 21.3; JetPack 5 (Ubuntu 20.04) venvs start with pip 20.
ensure_pip() {
    local vpy="$1" ver
    ver="$("$vpy" -m pip --version 2>/dev/null | sed -n 's/^pip \([0-9][0-9.]*\).*/\1/p')"
    if [[ -n "$ver" ]] && version_ge "$ver" "21.3"; then
        return
    fi
    say "pip ${ver:-?} in $VENV is older than 21.3 (editable installs from pyproject.toml): upgrading it"
    "$vpy" -m pip install -q --upgrade "pip>=21.3" || die "cannot upgrade pip in $VENV (network? see pip's message above)"
}

install_project() {
    local vpy="$VENV/bin/python" where
    where="$("$vpy" -c 'import defectdet, os; print(os.path.dirname(os.path.dirname(os.path.realpath(defectdet.__file__))))' 2>/dev/null || true)"
    if [[ "$where" == "$REPO_ROOT" && -x "$VENV/bin/defectdet" ]]; then
        say "defectdet: installed editable from $REPO_ROOT - kept"
    else
        ensure_pip "$vpy"
        say "defectdet: pip install --no-deps -e $REPO_ROOT (no opencv-python from PyPI)"
        "$vpy" -m pip install -q --no-deps -e "$REPO_ROOT" || die "pip could not install $REPO_ROOT into $VENV (see pip's message above)"
    fi
    say "requirements: ${EDGE_REQUIREMENTS[*]} (pip skips what is already satisfied)"
    "$vpy" -m pip install -q "${EDGE_REQUIREMENTS[@]}" || die "pip could not install ${EDGE_REQUIREMENTS[*]} into $VENV (network? see pip's message above)"
    # Anything that pulled pip's OpenCV or TensorRT into the venv would shadow JetPack's: remove it.
    local shadowing
    shadowing="$("$vpy" -m pip show opencv-python opencv-python-headless opencv-contrib-python \
        opencv-contrib-python-headless tensorrt tensorrt-lean tensorrt-dispatch 2>/dev/null |
        awk -v venv="$VENV" '/^Name: /{name=$2} /^Location: /{if (index($2, venv) == 1) print name}' || true)"
    if [[ -n "$shadowing" ]]; then
        say "removing pip's $(echo "$shadowing" | tr '\n' ' ')from $VENV (they shadow JetPack's)"
        # shellcheck disable=SC2086  # one package name per word
        "$vpy" -m pip uninstall -q -y $shadowing
    fi
}

install_pycuda() {
    local vpy="$VENV/bin/python" cuda log
    if ((!WITH_PYCUDA)); then
        say "pycuda: skipped (--no-pycuda): the TensorRT backend and build-engine's calibrator need it"
        return
    fi
    if "$vpy" -c 'import pycuda.driver' 2>/dev/null; then
        say "pycuda: $("$vpy" -c 'import pycuda; print(pycuda.VERSION_TEXT)') already built - kept"
        "$vpy" -m pip install -q "${JETSON_REQUIREMENTS[@]:1}" || die "pip could not install ${JETSON_REQUIREMENTS[*]:1}"
        return
    fi
    cuda="$CUDA_DIR"
    log="$VENV/pycuda-build.log"
    say "pycuda: building against $cuda (a few minutes; log: $log)"
    if ! CUDA_ROOT="$cuda" PATH="$cuda/bin:$PATH" CPATH="$cuda/include${CPATH:+:$CPATH}" \
        LIBRARY_PATH="$cuda/lib64:$cuda/lib64/stubs${LIBRARY_PATH:+:$LIBRARY_PATH}" \
        "$vpy" -m pip install --no-cache-dir "${JETSON_REQUIREMENTS[@]}" >"$log" 2>&1; then
        tail -n 25 "$log" >&2
        die "pycuda failed to build (full log: $log). Usual causes: nvcc not under $cuda/bin (set CUDA_HOME), Python.h missing (sudo apt install python3-dev), g++ missing (build-essential), the compiler killed for memory on a 4 GB board (add swap)"
    fi
    "$vpy" -c 'import pycuda.driver' || die "pycuda built but does not import in $VENV (see $log)"
}

verify_venv() {
    local vpy="$VENV/bin/python"
    PROBLEMS=()
    FIXES=()
    check_tensorrt "$vpy"
    check_opencv "$vpy"
    if ((${#PROBLEMS[@]})); then
        PROBLEMS+=("(in the venv $VENV: something installed there shadows JetPack's module)")
        report_problems
    fi
}

# NVIDIA's GStreamer elements, probed (not guessed from the release file): warnings, since a USB
# camera needs none of them.
check_gstreamer() {
    local element missing=()
    if ! command -v gst-inspect-1.0 >/dev/null; then
        warn "gst-inspect-1.0 not found: CSI/RTSP elements not checked (sudo apt install gstreamer1.0-tools)"
        apt_needs gstreamer1.0-tools
        return 0
    fi
    for element in nvarguscamerasrc nvvidconv nvv4l2decoder; do
        gst-inspect-1.0 --exists "$element" || missing+=("$element")
    done
    FOUND[gstreamer]="nvarguscamerasrc, nvvidconv, nvv4l2decoder present"
    if ((${#missing[@]})); then
        FOUND[gstreamer]="missing ${missing[*]}"
        warn "GStreamer has no ${missing[*]}: CSI cameras (nvarguscamerasrc, nvvidconv) and hardware RTSP decoding (nvv4l2decoder) need them: sudo apt install nvidia-l4t-gstreamer (in a container: --runtime nvidia)"
        apt_needs nvidia-l4t-gstreamer
    fi
    if ! gst-inspect-1.0 --exists avdec_h264; then
        warn "GStreamer has no avdec_h264: no software RTSP decoder to fall back on (sudo apt install gstreamer1.0-libav)"
        apt_needs gstreamer1.0-libav
    fi
}

# ------------------------------------------------------------------------------------ summary
summary() {
    local python="$1"
    printf '\nsetup: summary\n'
    printf '  %-12s %s\n' device "${FOUND[model]}" "L4T" "R${FOUND[l4t]}" JetPack "${FOUND[jetpack]} (ships TensorRT ${FOUND[trt_expected]})" \
        CUDA "${FOUND[cuda]:-?}" TensorRT "${FOUND[tensorrt]:-?}" OpenCV "${FOUND[opencv]:-?}" GStreamer "${FOUND[gstreamer]:-not checked}" Python "${FOUND[python]:-?}"
    if [[ "$python" == "$VENV/bin/python" ]]; then
        "$python" - <<'PY' || true
import importlib


def version(name):
    try:
        m = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - a summary line, not a failure
        return f"not importable ({e.__class__.__name__}: {e})"
    return f"{getattr(m, '__version__', getattr(m, 'VERSION_TEXT', '?'))} ({getattr(m, '__file__', '?')})"


for name in ("defectdet", "numpy", "onnxruntime", "pycuda"):
    print(f"  {name:<12} {version(name)}")
try:
    import tensorrt as trt

    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    print(f"  {'DLA cores':<12} {builder.num_DLA_cores} (AGX Xavier, Xavier NX, AGX/NX Orin: 2 or 1, Orin Nano: 0)")
except Exception as e:  # noqa: BLE001
    print(f"  {'DLA cores':<12} unknown ({e.__class__.__name__})")
PY
        printf '  %-12s %s\n' venv "$VENV"
    fi
    if command -v nvpmodel >/dev/null; then
        printf '  %-12s %s\n' "power mode" "$(nvpmodel -q 2>/dev/null | tr '\n' ' ' || echo '?')"
    fi
}

main() {
    parse_args "$@"
    run_checks
    if offer_prerequisites; then
        say "apt packages installed: checking again"
        run_checks
    fi
    report_problems
    if ((CHECK_ONLY)); then
        summary "$PY"
        say "checks passed (--check: nothing installed)"
        return 0
    fi
    if [[ "$(id -u)" -eq 0 && -n "${SUDO_USER:-}" ]]; then
        warn "running as root: $VENV will belong to root; run setup.sh as $SUDO_USER (no sudo) instead"
    fi
    make_venv
    install_project
    install_pycuda
    verify_venv
    summary "$VENV/bin/python"
    # the station's own probes, one line each (docs/bundle.md); informative here: ✘ lines do not fail setup
    if [[ -x "$VENV/bin/defectdet" ]]; then
        "$VENV/bin/defectdet" checks || warn "defectdet checks could not run"
    fi
    say "ready. Next: deploy/jetson/build_engine.sh models/model.int8.onnx --int8 --fp16"
    say "then: $VENV/bin/defectdet inspect --model models/model.int8.engine --source csi://0"
}

# Run unless sourced (tests and debugging source the functions).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
