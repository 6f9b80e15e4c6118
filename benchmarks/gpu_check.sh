#!/usr/bin/env bash
# The one-command check for a machine with a GPU (docs/design.md, "The GPU check"):
#   1. build flowam_fast._C with its CUDA kernels against the torch installed there
#      (no network: --no-build-isolation --no-deps; TORCH_CUDA_ARCH_LIST, MAX_JOBS as set below);
#   2. check that the package's core imports (optional packages such as plyfile and POT may be
#      missing) and that the extension has its CUDA kernels;
#   3. run the GPU tests: pytest -m cuda tests;
#   4. run the GPU benchmarks and one FlowAM run, into OUT_DIR/gpu.md (benchmarks/gpu_report.py), headed
#      by the machine and this command.
# Logs of each step go to OUT_DIR too. Without a GPU it runs as far as it can and stops, with
# "no CUDA device: ..." and a non-zero status, at the first step that needs one. The steps have
# time limits that keep the whole check within about 8 minutes on an H200.
#
#   benchmarks/gpu_check.sh OUT_DIR        (PYTHON=... to pick the interpreter; default python3)
set -uo pipefail

if [ $# -ne 1 ]; then
  echo "usage: benchmarks/gpu_check.sh OUT_DIR" >&2
  exit 64
fi
mkdir -p "$1" || exit 1
OUT=$(cd "$1" && pwd)
cd "$(dirname "$0")/.." || exit 1
PY=${PYTHON:-python3}
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0} MAX_JOBS=${MAX_JOBS:-16}
START=$SECONDS
BUDGET=${GPU_CHECK_BUDGET:-470}               # seconds for the whole check
BUILD_LIMIT=${GPU_CHECK_BUILD_TIMEOUT:-240}    # about 1 to 2 minutes on the H200 machine's 16 cores
TESTS_LIMIT=${GPU_CHECK_TESTS_TIMEOUT:-150}

say() { echo "[gpu_check +$((SECONDS - START))s] $*"; }
stop() { echo "gpu_check: $1" >&2; exit "${2:-1}"; }
# Seconds left of the budget, at least $1 and (given) at most $2.
left() {
  local l=$((BUDGET - (SECONDS - START)))
  [ "$l" -lt "$1" ] && l=$1
  [ $# -gt 1 ] && [ "$l" -gt "$2" ] && l=$2
  echo "$l"
}

say "python: $($PY -c 'import sys; print(sys.version.split()[0])' 2>&1), torch: $($PY -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' 2>&1)"
say "nvcc: $(command -v nvcc || echo 'not on PATH'); ninja: $($PY -c 'import ninja; print("yes")' 2>/dev/null || command -v ninja || echo 'no (the build falls back to one file at a time)')"

# 1. Build. A CPU-only torch or a missing nvcc still builds the C++ kernels (setup.py leaves the
# CUDA sources out); step 2 says so.
say "1/4 building flowam_fast._C (TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST MAX_JOBS=$MAX_JOBS), log: $OUT/build.log"
if ! timeout "$BUILD_LIMIT" "$PY" -m pip install --no-build-isolation --no-deps -e . >"$OUT/build.log" 2>&1; then
  tail -30 "$OUT/build.log" >&2
  stop "the build failed (or took over $BUILD_LIMIT s); see $OUT/build.log"
fi
say "built in $((SECONDS - START)) s"

# 2. Imports, the GPU, the CUDA kernels.
say "2/4 imports, GPU and CUDA kernels"
"$PY" - <<'PYEOF' || stop "the package's core does not import; see above"
import importlib
for name in ("flowam_fast", "flowam_fast.ops", "flowam_fast.models", "flowam_fast.am", "flowam_fast.am.engine",
             "flowam_fast.am.flows"):
    importlib.import_module(name)
from flowam_fast import FlowAM, compute_flows  # noqa: F401  (the main API)
print("core imports: ok")
PYEOF
"$PY" - <<'PYEOF'
import sys

import torch

if not torch.cuda.is_available():
    why = ("torch is a CPU build (torch.version.cuda is None)" if torch.version.cuda is None
           else f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU")
    print(f"gpu_check: no CUDA device: {why}; the GPU tests and benchmarks need one", file=sys.stderr)
    sys.exit(3)
from flowam_fast.ops import backend

if not backend.has_cuda_kernels():
    print("gpu_check: flowam_fast._C was built without its CUDA kernels (needs a CUDA torch and nvcc); "
          "see build.log", file=sys.stderr)
    sys.exit(4)
print(f"GPU: {torch.cuda.get_device_name(0)}; CUDA kernels: yes")
PYEOF
rc=$?
[ $rc -eq 0 ] || exit $rc

# 3. GPU tests.
say "3/4 GPU tests (pytest -m cuda tests), log: $OUT/pytest.log"
timeout "$(left 60 "$TESTS_LIMIT")" "$PY" -m pytest -q -m cuda tests >"$OUT/pytest.log" 2>&1
tests_rc=$?
tail -5 "$OUT/pytest.log"
[ $tests_rc -eq 124 ] && echo "gpu_check: the GPU tests ran out of time" | tee -a "$OUT/pytest.log" >&2

# 4. Benchmarks (they run whatever the tests said: a failure there is in the report).
say "4/4 GPU benchmarks into $OUT/gpu.md, log: $OUT/bench.log"
timeout "$(left 90)" "$PY" benchmarks/gpu_report.py --out "$OUT/gpu.md" --tests-log "$OUT/pytest.log" \
  --command "benchmarks/gpu_check.sh $1" >"$OUT/bench.log" 2>&1
bench_rc=$?
tail -3 "$OUT/bench.log"
[ $bench_rc -eq 124 ] && echo "gpu_check: the benchmarks ran out of time; gpu.md holds what they measured" >&2
say "done: tests rc=$tests_rc, benchmarks rc=$bench_rc; report: $OUT/gpu.md"
[ $tests_rc -eq 0 ] && [ $bench_rc -eq 0 ]
