#!/usr/bin/env bash
# The GPU checks, for a machine with an NVIDIA GPU (sm_90), the CUDA toolkit in
# /usr/local/cuda and the Debian packages of scripts/install-deps:
#   1. configures build-gpu for sm_90 only (one architecture keeps nvcc fast),
#   2. builds kernels_test, core_test and gpu_bench,
#   3. runs kernels_test (every op on cuda:0 against the CPU backend, the CUDA backend's
#      memory, copies and errors), core_test (models moved to cuda:0 against the CPU), and
#      gpu_bench (GEMM TFLOP/s of the backend against raw cuBLAS, float32 and bfloat16; the
#      seed CNN and the large MLP in GPU memory against the CPU's answers, cuBLAS and,
#      where the interop environment exists, PyTorch CUDA),
#   4. prints a summary; exits non-zero when any step failed or CUDA cases were skipped.
# Meant to finish within five minutes on a fresh machine.
#
#   tests/gpu/run.sh            environment: BUILD_DIR (build-gpu), JOBS (nproc)
set -uo pipefail

cd "$(dirname "$0")/../.."
export PATH="/usr/local/cuda/bin:${PATH}"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
JOBS="${JOBS:-$(nproc)}"
LOGS="${BUILD_DIR}/gpu-logs"
START=$SECONDS
declare -a SUMMARY=()
FAILED=0

step() {  # step NAME TIMEOUT_S COMMAND...: runs and logs one step, records its outcome
  local name="$1" limit="$2"
  shift 2
  local began=$SECONDS
  echo "== ${name}"
  timeout "${limit}" "$@" >"${LOGS}/${name}.log" 2>&1
  local rc=$?
  local outcome="ok"
  if [[ ${rc} -ne 0 ]]; then
    outcome="FAILED (exit ${rc}; ${LOGS}/${name}.log)"
    FAILED=1
    tail -n 30 "${LOGS}/${name}.log"
  fi
  SUMMARY+=("$(printf '%-14s %4ds  %s' "${name}" $((SECONDS - began)) "${outcome}")")
  return ${rc}
}

mkdir -p "${LOGS}"
if ! nvidia-smi -L; then
  echo "tests/gpu/run.sh: no GPU is visible (nvidia-smi failed); nothing to check" >&2
  exit 1
fi

step configure 120 cmake -S . -B "${BUILD_DIR}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CUDA_ARCHITECTURES=90 &&
  step build 420 cmake --build "${BUILD_DIR}" -j "${JOBS}" --target kernels_test core_test gpu_bench
if [[ ${FAILED} -eq 0 ]]; then
  step kernels_test 300 "${BUILD_DIR}/tests/unit/kernels_test"
  step core_test 300 "${BUILD_DIR}/tests/unit/core_test"
  step gpu_bench 180 "${BUILD_DIR}/bench/gpu_bench"
  # Every op family is implemented on CUDA, so a skipped CUDA case means the GPU went unused.
  skipped=$(grep -cE '^\[  SKIPPED \] (.*cuda0|CudaBackendTest\..*) \([0-9]+ ms\)$' \
    "${LOGS}/kernels_test.log" || true)
  ran=$(grep -cE '^\[       OK \] .*cuda0 \([0-9]+ ms\)$' "${LOGS}/kernels_test.log" || true)
  SUMMARY+=("$(printf '%-14s %d CUDA op cases passed, %d CUDA cases skipped' cuda-cases "${ran}" "${skipped}")")
  if [[ ${skipped} -ne 0 ]]; then
    FAILED=1
    grep -B1 -E '^\[  SKIPPED \] .* \([0-9]+ ms\)$' "${LOGS}/kernels_test.log" | head -n 20
  fi
fi

echo
echo "== summary ($((SECONDS - START))s, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1))"
printf '%s\n' "${SUMMARY[@]}"
if [[ -f "${LOGS}/gpu_bench.log" ]]; then
  sed -n '/^dtype/,$p' "${LOGS}/gpu_bench.log"
fi
grep -h '^\[  PASSED  \]\|^\[  FAILED  \]' "${LOGS}"/*_test.log 2>/dev/null
if [[ ${FAILED} -ne 0 ]]; then
  echo "tests/gpu/run.sh: FAILED"
  exit 1
fi
echo "tests/gpu/run.sh: PASS"
