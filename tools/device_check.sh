#!/usr/bin/env bash
# tools/device_check.sh: on a machine with an NVIDIA GPU and CuPy, build pho, run the GPU backend's
# tests against the cpu backend and the reference, and time the peers' three scenes and a
# 100-source field on the GPU beside the cpu backend, printing one table (tools/bench_device.py).
# Budget: under 5 minutes (each step has its own timeout). Run from anywhere:
#
#     bash tools/device_check.sh
#
# Exit status: 0 all passed; 2 no usable GPU here (the reason is printed); 1 a step failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python}
start=$(date +%s)
fail() { echo "device_check: $1" >&2; exit "${2:-1}"; }   # fail MESSAGE [STATUS]
step() { echo "device_check: [$(( $(date +%s) - start )) s] $*"; }

# 1. a GPU and CuPy, or a clear refusal
command -v nvidia-smi >/dev/null 2>&1 \
    || fail "no NVIDIA GPU here: nvidia-smi is not on PATH (this check needs a machine with an NVIDIA GPU and its driver)" 2
nvidia-smi -L 2>/dev/null | grep -q "GPU" \
    || fail "no NVIDIA GPU here: nvidia-smi lists no device" 2
"$PY" -c "import cupy" 2>/dev/null \
    || fail "CuPy is not importable by $PY: install the wheel matching the CUDA driver (pip install cupy-cuda12x)" 2
"$PY" -c "import cupy, sys; sys.exit(0 if cupy.cuda.runtime.getDeviceCount() > 0 else 1)" 2>/dev/null \
    || fail "CuPy sees no CUDA device (driver or CUDA_VISIBLE_DEVICES?)" 2
step "GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1)"

# 2. build pho in place
step "building (python setup.py build_ext --inplace)"
timeout 180 "$PY" setup.py build_ext --inplace >/tmp/pho_device_build.log 2>&1 \
    || fail "build failed; see /tmp/pho_device_build.log"
"$PY" -c "from pho._backends import get_backend; get_backend('gpu'); get_backend('cpu')" \
    || fail "the gpu or cpu backend does not start after the build"

# 3. the GPU backend's tests (against the reference; the likelihood against the reference and cpu)
step "tests: pytest -k 'gpu and not absent' tests/test_backends.py"
out=$(timeout 120 "$PY" -m pytest -q -p no:cacheprovider -rs -k "gpu and not absent" tests/test_backends.py 2>&1)
rc=$?
echo "$out" | tail -15
[ $rc -eq 0 ] || fail "GPU backend tests failed (pytest exit $rc)"
echo "$out" | grep -q " passed" || fail "no GPU test ran (all skipped?)"
echo "$out" | grep -q "SKIPPED" && fail "some GPU tests were skipped on a GPU machine (see above)"

# 4. timings, one table
step "timing and GPU vs cpu: tools/bench_device.py --backends cpu gpu --max-diff 1e-9"
timeout 150 "$PY" tools/bench_device.py --backends cpu gpu --max-diff 1e-9 \
    || fail "timing failed, or the GPU's lnL or gradient differs from the cpu backend's by more than 1e-9"
step "done"
