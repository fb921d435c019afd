#!/usr/bin/env bash
# The GPU check, in one run, on a machine with an NVIDIA GPU and no network (Python with
# numpy, scipy, Cython, meson, ninja, pytest, CuPy and a CUDA build of PyTorch already
# installed; nothing is fetched):
#
#   1. versions (GPU, driver, CUDA, CuPy, PyTorch, NumPy);
#   2. build cyconv with meson on every core, installed into a private folder on
#      PYTHONPATH (no pip, no build isolation, so no network);
#   3. an NVRTC smoke test: every kernel family compiled, one conv per direction,
#      dtype and algorithm, the pools;
#   4. the GPU tests: the CPU grids on CuPy arrays (-k cupy), tests/test_gpu.py without
#      its two heaviest tests, then those two (a 2**31-element float16 input, a batch
#      of 70,000);
#   5. python -m cyconv demo --device cuda;
#   6. the benchmark against cuDNN (benchmarks/bench_gpu.py, TF32 off and on columns).
#
# Usage: bash benchmarks/gpu_check.sh [OUTDIR]     (default: $OUT, else ./gpu-check-out)
# Logs and results go to OUTDIR: gpu-check.log (everything), versions.txt, tests-*.txt,
# demo.txt, gpu-bench.md/.json, summary.txt.  GPU_CHECK_LIMIT (seconds, default 470)
# bounds the whole run: each step gets the time that is left, a step cut short is
# reported as such, and everything written so far is kept.  Without a GPU the build,
# the smoke test's import and the test selection still run (the GPU tests skip), which
# is how the script is checked on CPU-only machines.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-gpu-check-out}}
mkdir -p "$out"
out=$(cd "$out" && pwd)
limit=${GPU_CHECK_LIMIT:-470}
python=${PYTHON:-python3}
start=$(date +%s)
export PYTHONUNBUFFERED=1
exec > >(tee -a "$out/gpu-check.log") 2>&1

status=()
step() { echo; echo "== [$(( $(date +%s) - start )) s of $limit] $*"; }
left() { echo $(( limit - ($(date +%s) - start) )); }
# run NAME LOG CMD...: CMD with the time that is left, its output shown and kept in
# OUTDIR/LOG; its outcome goes into the summary.
run() {
    local name=$1 log=$2; shift 2
    local t; t=$(left)
    if [ "$t" -le 10 ]; then
        status+=("$name: not run (time limit)"); return 0
    fi
    timeout --signal=INT --kill-after=15 "$t" "$@" 2>&1 | tee "$out/$log"
    local rc=${PIPESTATUS[0]}
    case $rc in
        0) status+=("$name: ok") ;;
        124|130|137) status+=("$name: cut short at the time limit (rc $rc)") ;;
        *) status+=("$name: FAILED (rc $rc)") ;;
    esac
    return 0
}
# gpu_only NAME: true when a GPU is usable, else records NAME as skipped.
gpu_only() {
    [ "$gpu" = 1 ] && return 0
    status+=("$1: skipped (no usable GPU)"); return 1
}
summary() {
    step "summary"
    printf '%s\n' "${status[@]}" | tee "$out/summary.txt"
}
trap summary EXIT

step "1. versions"
{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader \
        || echo "nvidia-smi: none (no GPU here)"
    command -v nvcc >/dev/null && nvcc --version | tail -n 2
    "$python" - <<'EOF'
import platform, sys
print("python", platform.python_version(), sys.executable)
for name in ("numpy", "scipy", "Cython", "cupy", "torch", "pytest"):
    try:
        mod = __import__(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as exc:
        print(name, "not importable:", type(exc).__name__, exc)
try:
    import cupy
    n = cupy.cuda.runtime.getDeviceCount()
    print("CUDA devices", n, "runtime", cupy.cuda.runtime.runtimeGetVersion(),
          "driver", cupy.cuda.runtime.driverGetVersion())
except Exception as exc:
    print("CUDA: not usable:", exc)
try:
    import torch
    print("torch CUDA", torch.version.cuda, "available", torch.cuda.is_available(),
          "cuDNN", torch.backends.cudnn.version())
except Exception as exc:
    print("torch:", exc)
EOF
} | tee "$out/versions.txt"

step "2. build (meson, $(nproc) cores) into a private site folder"
build=$(mktemp -d)
site="$build/site"
run "build" build.txt bash -c "meson setup '$build/b' . -Dbuildtype=release \
        -Db_ndebug=if-release -Dpython.platlibdir='$site' -Dpython.purelibdir='$site' \
    && ninja -C '$build/b' -j '$(nproc)' && meson install -C '$build/b' --quiet"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
if ! "$python" -c "import cyconv" 2>/dev/null; then
    echo "cyconv did not build or import; see $out/build.txt"
    exit 1
fi
"$python" -m cyconv info | tee "$out/info.txt"

gpu=0
"$python" -c "from cyconv import _cuda; _cuda.require_cupy()" 2>/dev/null && gpu=1
echo "GPU usable: $gpu"

step "3. NVRTC smoke test"
gpu_only "smoke" && run "smoke" smoke.txt "$python" - <<'EOF'
import numpy as np
import cyconv
from cyconv import _cuda
try:
    cp = _cuda.require_cupy("gpu_check")
except _cuda.CUDAUnavailableError as exc:
    raise SystemExit(f"no GPU: {exc}")
for family in _cuda.SIGNATURES:
    _cuda.module(family)
    print("compiled", family)
rng = np.random.default_rng(0)
for dtype in ("float16", "float32", "float64"):
    for alg in ("im2col", "direct"):
        x = cp.asarray(rng.standard_normal((2, 8, 9, 9)), dtype)
        w = cp.asarray(rng.standard_normal((8, 8, 3, 3)), dtype)
        y = cyconv.conv2d(x, w, padding=1, algorithm=alg)
        cyconv.grad.conv2d_input(x.shape, w, y, padding=1, algorithm=alg)
        cyconv.grad.conv2d_weight(x, w.shape, y, padding=1, algorithm=alg)
        print(cyconv.plan("conv2d", x.shape, w.shape, dtype=dtype, device="cuda",
                          padding=1, algorithm=alg).kernel, dtype, "ok")
    cyconv.max_pool2d(x, 2)
    cyconv.avg_pool2d(x, 2)
cp.cuda.Device().synchronize()
print("smoke test passed")
EOF

HEAVY="test_input_past_2_31_elements_uses_64_bit_indices or test_batch_of_70000_and_depthwise_past_65535_planes"
step "4a. GPU tests: the CPU grids on CuPy arrays"
run "tests: grids on CuPy" tests-grids.txt "$python" -m pytest -q -p no:cacheprovider -x \
    -k cupy tests/test_conv.py tests/test_conv_grad.py tests/test_conv_transpose.py \
    tests/test_pool.py tests/test_pad.py tests/test_relu_linear.py tests/test_nn.py \
    tests/test_errors.py --tb=short
step "4b. tests/test_gpu.py without its two heaviest tests"
run "tests: test_gpu" tests-gpu.txt "$python" -m pytest -q -p no:cacheprovider \
    tests/test_gpu.py -k "not ($HEAVY)" --tb=short
step "4c. the two heaviest tests"
gpu_only "tests: heavy" && run "tests: heavy" tests-heavy.txt "$python" -m pytest -q \
    -p no:cacheprovider tests/test_gpu.py -k "$HEAVY" --tb=short

step "5. the demo on the GPU"
gpu_only "demo --device cuda" && run "demo --device cuda" demo.txt \
    "$python" -m cyconv demo --device cuda --out "$out/demo.png"

step "6. benchmark against cuDNN (batch 64, TF32 off; TF32-on column for reference)"
gpu_only "benchmark" && run "benchmark" gpu-bench.txt \
    "$python" benchmarks/bench_gpu.py --rounds 7 --out "$out/gpu-bench.md"
