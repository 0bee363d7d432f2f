#!/usr/bin/env bash
# The torch-free tests (runtime, station, build-engine's plan, model files) under Python 3.8, the
# interpreter of JetPack 5 (Xavier NX / AGX Xavier), in a throwaway venv holding the edge packages
# only: no torch, no ultralytics. Skips (exit 0, saying why) where no 3.8 interpreter exists.
#   .ci/py38.sh [pytest args]      PY38=/path/to/python3.8 to choose the interpreter;
#   WORKSTATION_PY=.venv/bin/python exports the stand-in test models (ultralytics) once, into a cache.
set -euo pipefail
cd "$(dirname "$0")/.."

is_py38() { [ -n "$1" ] && "$1" -c 'import sys; assert sys.version_info[:2] == (3, 8)' >/dev/null 2>&1; }
find_py38() {  # $PY38, python3.8 on PATH (a pyenv shim may point nowhere), pyenv's versions/3.8.*
    local root p
    root="$(pyenv root 2>/dev/null || echo "${PYENV_ROOT:-$HOME/.pyenv}")"
    for p in "${PY38:-}" "$(command -v python3.8 || true)" "$root"/versions/3.8*/bin/python3.8; do
        if is_py38 "$p"; then echo "$p"; return; fi
    done
}
PY=$(find_py38)
if [ -z "$PY" ]; then
    echo "py38: skipped: no Python 3.8 interpreter (looked for \$PY38, python3.8 on PATH, pyenv versions/3.8.*)"
    exit 0
fi

WORK=$(mktemp -d -t defectdet-py38.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
start=$(date +%s)
"$PY" -m venv "$WORK/venv"
# The newest releases that still ship Python 3.8 wheels. pymodbus is left out: the station's Modbus
# client uses the pymodbus >= 3.10 API, which has no 3.8 release (its tests are not run here).
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check \
    "numpy==1.24.4" "opencv-python-headless==4.10.0.84" "pyyaml==6.0.2" "onnxruntime==1.19.2" "onnx==1.17.0" \
    "pytest==8.3.5" "asyncua==1.1.5" "aiohttp==3.10.11" "prometheus_client==0.21.1" "paho-mqtt==2.1.0" \
    "pillow==10.4.0" "tqdm==4.67.1" "matplotlib==3.7.5"
# the console script (deploy/jetson/build_engine.sh runs $VENV/bin/defectdet), without dependencies
"$WORK/venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
echo "py38: venv ready in $(( $(date +%s) - start )) s ($("$PY" --version))"

# The stand-in detectors some tests run are exported with ultralytics: build them once with the
# workstation interpreter; without it those tests skip, saying so.
export DEFECTDET_STANDIN_CACHE="$WORK/standins"
WPY=${WORKSTATION_PY:-.venv/bin/python}
[ -e "$WPY" ] && WPY="$(cd "$(dirname "$WPY")" && pwd)/$(basename "$WPY")"  # absolute: used from tests/ below
if [ -x "$WPY" ] && "$WPY" -c 'import ultralytics' 2>/dev/null; then
    (cd tests && PYTHONPATH="$PWD/..:$PWD" "$WPY" -c '
import sys, tempfile, benchscripts
for name in benchscripts.STANDINS:
    benchscripts.stand_in_model(tempfile.mkdtemp(), name)
')
    echo "py38: stand-in models exported by $WPY"
else
    echo "py38: no workstation interpreter with ultralytics ($WPY): the tests on stand-in models skip"
fi

TESTS=()
for t in tests/test_runtime_metadata.py tests/test_runtime_notorch.py tests/test_runtime_prepost.py \
         tests/test_runtime_tensorrt.py tests/test_export_tensorrt.py tests/test_model_files.py \
         tests/test_inspect_*.py tests/test_station_*.py tests/test_deploy.py; do
    [ -f "$t" ] || continue
    case "$t" in  # pymodbus >= 3.10 (above): the tests against a Modbus PLC do not run on 3.8
        tests/test_station_plc.py|tests/test_station_line.py|tests/test_station_safety.py) ;;
        *) TESTS+=("$t") ;;
    esac
done
PYTHONPATH="$PWD" OMP_WAIT_POLICY=PASSIVE ORT_DISABLE_TELEMETRY=1 "$WORK/venv/bin/python" -m pytest -q \
    -p no:cacheprovider -m "not slow" "${TESTS[@]}" "$@"
echo "py38: done in $(( $(date +%s) - start )) s"
