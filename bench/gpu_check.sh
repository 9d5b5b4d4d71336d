#!/usr/bin/env bash
# GPU check in under 5 minutes: a fresh virtual environment with the `gpu` extra, which ONNX Runtime
# providers load (TensorRT, CUDA), the shipped model at float32 and float16 on 512x512 and 2048x2048
# inputs, PSNR against the CPU's output, GFLOP/s against the GPU's dense peak (bench/gpu_check.py).
#
#   bench/gpu_check.sh                      # from the repository root, network to PyPI
#   GPU_CHECK_WHEELS=/path/to/wheels bench/gpu_check.sh   # offline: pip install --no-index from a folder
#   GPU_CHECK_TENSORRT=0 bench/gpu_check.sh # skip TensorRT (its engine builds take most of the time)
#
# Environment: GPU_CHECK_VENV (default: a new temporary folder, removed at the end), GPU_CHECK_PYTHON
# (default python3), GPU_CHECK_SIZES (default 512,2048), GPU_CHECK_JSON (write the report there too).
# Exit status: 0 when at least one GPU provider loaded and ran, 1 when none did, 2 on a setup error.
set -euo pipefail

say() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { say "ERROR: $*"; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${GPU_CHECK_PYTHON:-python3}"
SIZES="${GPU_CHECK_SIZES:-512,2048}"
TENSORRT="${GPU_CHECK_TENSORRT:-1}"
[[ -f model/weights/srresnet_x4.onnx ]] || die "model/weights/srresnet_x4.onnx is missing (run from a full checkout)"
command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set GPU_CHECK_PYTHON)"

if command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2 \
    || die "nvidia-smi is installed but fails: is the NVIDIA driver loaded?"
else
  say "WARNING: no nvidia-smi: the GPU name (and so its peak) will be unknown"
fi

CLEANUP=""
if [[ -n "${GPU_CHECK_VENV:-}" ]]; then
  VENV="$GPU_CHECK_VENV"
else
  VENV="$(mktemp -d "${TMPDIR:-/tmp}/srgan-gpu-check.XXXXXX")"
  CLEANUP="$VENV"
fi
cleanup() { if [[ -n "$CLEANUP" ]]; then rm -rf "$CLEANUP"; fi; }
trap cleanup EXIT

say "virtual environment in $VENV"
"$PYTHON" -m venv "$VENV" || die "cannot make a virtual environment with $PYTHON (python3-venv installed?)"
PIP=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)
if [[ -n "${GPU_CHECK_WHEELS:-}" ]]; then
  [[ -d "$GPU_CHECK_WHEELS" ]] || die "GPU_CHECK_WHEELS=$GPU_CHECK_WHEELS is not a folder"
  PIP+=(--no-index --find-links "$GPU_CHECK_WHEELS")
fi
# The gpu extra (onnxruntime-gpu), and CUDA 12 / cuDNN 9 runtime wheels for onnxruntime.preload_dlls():
# no system CUDA toolkit needed, only the driver.
EXTRA_PKGS=(nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 nvidia-cudnn-cu12 nvidia-cufft-cu12 nvidia-curand-cu12
            nvidia-cuda-nvrtc-cu12)
if [[ "$TENSORRT" == "1" ]]; then EXTRA_PKGS+=(tensorrt-cu12-libs); fi
say "installing .[gpu] and ${EXTRA_PKGS[*]} (a few minutes at most)"
timeout 150 "${PIP[@]}" -e ".[gpu]" "${EXTRA_PKGS[@]}" \
  || die "pip install failed or took over 150 s (offline? set GPU_CHECK_WHEELS to a folder of wheels)"

# TensorRT's libraries from the wheel, for ONNX Runtime's TensorRT provider.
if [[ "$TENSORRT" == "1" ]]; then
  TRT_LIBS="$("$VENV/bin/python" -c 'import tensorrt_libs, os; print(os.path.dirname(tensorrt_libs.__file__))' 2>/dev/null || true)"
  if [[ -n "$TRT_LIBS" ]]; then export LD_LIBRARY_PATH="$TRT_LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"; fi
  PROVIDERS="TensorrtExecutionProvider,CUDAExecutionProvider"
else
  PROVIDERS="CUDAExecutionProvider"
fi

ARGS=(--sizes "$SIZES" --providers "$PROVIDERS")
if [[ -n "${GPU_CHECK_JSON:-}" ]]; then ARGS+=(--json "$GPU_CHECK_JSON"); fi
say "running bench/gpu_check.py ${ARGS[*]}"
set +e
timeout 140 "$VENV/bin/python" -m cli.main bench gpu-check "${ARGS[@]}"
status=$?
set -e
if [[ $status -eq 124 ]]; then die "bench/gpu_check.py took over 140 s and was stopped (GPU_CHECK_TENSORRT=0 skips TensorRT's engine builds)"; fi
exit "$status"
