#!/usr/bin/env bash
# deploy/jetson/build_engine.sh — build the TensorRT engine ON the Jetson, then self-check it.
#
#   deploy/jetson/build_engine.sh MODEL.onnx [--fp16] [--int8] [--dla-core N] [--workspace MB]
#       [--calib-cache FILE] [--calib-data data.yaml] [--shape NxCxHxW] [--out ENGINE] [--force] [--verbose]
#       [--runs N] [--warmup N] [--image IMG] [--no-check] [--no-compare]
#   deploy/jetson/build_engine.sh --self-check-only MODEL(.engine|.onnx) [--runs N] [--warmup N] [--image IMG]
#       [--compare-with REFERENCE.onnx]
#
# MODEL.onnx is what the workstation produced: model.int8.onnx (Q/DQ, from `defectdet quantize`,
# gate passed) or model.onnx (FP32), with its sidecar model.int8.json / model.json beside it.
# The build is `defectdet build-engine` (TensorRT's Python API; it prints the trtexec equivalent):
#   INT8 Q/DQ model:   --int8 --fp16          (the layers kept in float run in FP16)
#   FP32 model:        --fp16                 (or --int8 --calib-data data.yaml for implicit INT8)
#   DLA (AGX/NX Orin, Xavier): FP32 model + --fp16 --dla-core 0  (the DLA does not run Q/DQ networks;
#                      TensorRT 11.4.1+ on AGX Orin: an FP16-typed model from `export --half`)
#   An ONNX with dynamic input dims (not from defectdet export) needs --shape, e.g. 1x3x640x640.
# It writes <model>.engine and adds an "engine" section to the sidecar. The self-check then loads
# the engine with defectdet.runtime.Detector, runs --warmup + --runs inferences on one frame
# (--image, or a grey noise frame) and prints median/p90 latency and frames/s, and (unless
# --no-compare) compares the engine's class scores with ONNX Runtime's on the same input
# (the ONNX it was built from, or --compare-with).
#
# Environment: DEFECTDET_VENV (default <repo>/.venv-jetson, made by setup.sh).
set -euo pipefail

# shellcheck source=paths.sh
source "$(dirname "${BASH_SOURCE[0]}")/paths.sh"  # SCRIPT_DIR, REPO_ROOT, VENV
MODEL=""
ENGINE=""
BUILD_ARGS=()
RUNS=200
WARMUP=20
IMAGE=""
CHECK=1
COMPARE=1
REFERENCE=""
BUILD=1

say() { printf 'build_engine: %s\n' "$*"; }
die() { printf 'build_engine: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

need_value() { [[ $1 -ge 2 ]] || die "$2 needs a value"; }

is_count() { [[ "$1" =~ ^[0-9]+$ ]] || die "$2 $1: expected a whole number"; }

parse_args() {
    while (($#)); do
        case "$1" in
            --fp16 | --int8 | --force | --verbose) BUILD_ARGS+=("$1") ;;
            --dla-core | --workspace | --calib-cache | --calib-data | --calib-images | --shape)
                need_value $# "$1"; BUILD_ARGS+=("$1" "$2"); shift ;;
            --out) need_value $# "$1"; ENGINE="$2"; shift ;;
            --runs) need_value $# "$1"; is_count "$2" "$1"; RUNS="$2"; shift ;;
            --warmup) need_value $# "$1"; is_count "$2" "$1"; WARMUP="$2"; shift ;;
            --image) need_value $# "$1"; IMAGE="$2"; shift ;;
            --no-check) CHECK=0 ;;
            --no-compare) COMPARE=0 ;;
            --compare-with) need_value $# "$1"; REFERENCE="$2"; shift ;;
            --self-check-only) BUILD=0 ;;
            -h | --help) usage; exit 0 ;;
            -*) die "unknown option '$1' (see --help)" ;;
            *) [[ -z "$MODEL" ]] || die "one model expected, got '$MODEL' and '$1'"; MODEL="$1" ;;
        esac
        shift
    done
    [[ -n "$MODEL" ]] || die "no model given; usage: $0 models/model.int8.onnx --int8 --fp16 (see --help)"
    ((RUNS > 0)) || die "--runs 0: expected at least one timed run"
    [[ -z "$IMAGE" || -f "$IMAGE" ]] || die "--image $IMAGE: file not found"
    [[ -z "$REFERENCE" || -f "$REFERENCE" ]] || die "--compare-with $REFERENCE: file not found"
}

check_inputs() {
    [[ -x "$VENV/bin/python" ]] || die "$VENV/bin/python not found: run deploy/jetson/setup.sh first (or set DEFECTDET_VENV)"
    [[ -f "$MODEL" ]] || die "$MODEL: model not found; copy model.int8.onnx and model.int8.json from the workstation"
    local sidecar="${MODEL%.*}.json"
    [[ -f "$sidecar" ]] || die "$sidecar: missing; copy the sidecar JSON along with $(basename "$MODEL") (class names, input size, gate result)"
    if ((BUILD)); then
        [[ "$MODEL" == *.onnx ]] || die "$MODEL: expected an .onnx to build from (use --self-check-only for an existing engine)"
        [[ -n "$ENGINE" ]] || ENGINE="${MODEL%.onnx}.engine"
    else
        ENGINE="$MODEL"
    fi
}

build() {
    say "building $ENGINE from $MODEL with this Jetson's TensorRT (engines do not move between devices or TensorRT versions)"
    if ! "$VENV/bin/defectdet" build-engine --model "$MODEL" --out "$ENGINE" "${BUILD_ARGS[@]}"; then
        die "engine build failed (message above). Engines must be built here, on the target Jetson, with JetPack's TensorRT; check deploy/jetson/setup.sh --check"
    fi
    [[ -s "$ENGINE" ]] || die "$ENGINE was not written"
}

power_mode() {
    if command -v nvpmodel >/dev/null; then
        say "power mode: $(nvpmodel -q 2>/dev/null | tr '\n' ' ' || echo unknown) (latency depends on it; sudo nvpmodel -m 0 && sudo jetson_clocks for the maximum)"
    fi
}

# The self-check: Detector on the engine (or any model the runtime loads), median latency over RUNS.
self_check() {
    local onnx="$REFERENCE"
    if ((COMPARE)) && ((BUILD)) && [[ -z "$onnx" ]]; then onnx="$MODEL"; fi
    ((COMPARE)) || onnx=""
    "$VENV/bin/python" - "$ENGINE" "$RUNS" "$WARMUP" "$IMAGE" "$onnx" <<'PY'
import sys
import time

import cv2
import numpy as np

from defectdet.artifact import ModelCard
from defectdet.runtime import Detector
from defectdet.runtime.preprocess import Preprocessor

model, runs, warmup, image, onnx = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
with Detector(model, conf=0.25) as det:
    h, w = det.imgsz
    if image:
        frame = cv2.imread(image, cv2.IMREAD_COLOR)
        if frame is None:
            sys.exit(f"build_engine: error: {image}: OpenCV cannot read this image")
    else:  # mid-grey with noise, the network's input size: exercises every layer
        frame = np.random.default_rng(0).normal(114, 20, (h, w, 3)).clip(0, 255).astype(np.uint8)  # (h, w, 3)
    print(f"build_engine: self-check {det!r} on {image or f'a {w}x{h} noise frame'}")
    for _ in range(warmup):
        det(frame)
    infer, total = [], []
    t_start = time.perf_counter()
    for _ in range(runs):
        dets = det(frame)
        infer.append(det.timings.infer)
        total.append(det.timings.total)
    wall = time.perf_counter() - t_start
    q = lambda xs, p: float(np.percentile(xs, p))  # noqa: E731
    print(f"build_engine: latency over {runs} runs (after {warmup} warm-up): inference median {q(infer, 50):.2f} ms, "
          f"p90 {q(infer, 90):.2f} ms; pre+infer+post median {q(total, 50):.2f} ms; {runs / wall:.1f} frames/s")
    print(f"build_engine: {len(dets)} detection(s) on the check frame")
    engine_meta = ModelCard.load(model, missing_ok=True).engine
    if engine_meta:
        print(f"build_engine: engine {engine_meta.get('precision')} TensorRT {engine_meta.get('tensorrt')} "
              f"dla_core={engine_meta.get('dla_core')} built {engine_meta.get('built')}")
    if onnx:
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            print("build_engine: onnxruntime not installed: output comparison skipped")
            sys.exit(0)
        batch, _ = Preprocessor(det.imgsz, det.metadata.preprocess)([frame])  # (1, 3, H, W) float32
        ours = det.backend.infer(batch)[0].astype(np.float32)  # (1, 4+nc, A)
        with Detector(onnx, backend="onnxruntime") as ref_det:
            ref = ref_det.backend.infer(batch)[0].astype(np.float32)  # (1, 4+nc, A)
        if ours.shape != ref.shape:
            sys.exit(f"build_engine: error: engine output {ours.shape} != ONNX output {ref.shape}")
        if det.metadata.end2end:  # (1, N, 6) rows x1 y1 x2 y2 score cls, sorted by score
            ours_s, ref_s = np.sort(ours[..., 4], axis=-1), np.sort(ref[..., 4], axis=-1)  # (1, N)
        else:  # (1, 4+nc, A): rows 4.. are the class scores of each anchor
            ours_s, ref_s = ours[:, 4:], ref[:, 4:]  # (1, nc, A)
        diff = float(np.abs(ours_s - ref_s).max()) if ours_s.size else 0.0
        verdict = "ok" if diff <= 0.05 else "LARGE: check the precision flags, and run `defectdet gate` on the workstation"
        print(f"build_engine: engine vs ONNX Runtime on the same input: max score difference {diff:.4f} ({verdict})")
PY
}

main() {
    parse_args "$@"
    check_inputs
    if ((BUILD)); then
        build
    fi
    if ((CHECK)); then
        power_mode
        self_check || die "self-check failed: the engine does not load or run (message above)"
    fi
    say "done: $ENGINE. Next: $VENV/bin/defectdet inspect --model $ENGINE --source csi://0 --max-frames 300"
}

# Run unless sourced (tests and debugging source the functions).
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    main "$@"
fi
