#!/usr/bin/env bash
# The GPU checks, for a lent machine with one NVIDIA GPU (sm_90: H100, H200), the CUDA
# toolkit, CMake, ninja, g++, compute-sanitizer and PyTorch CUDA, but none of the Debian
# packages the build needs and no network: those travel in the folder tests/gpu/bundle makes
# (carry it). Within about six minutes:
#   1. prints the driver, the CUDA runtime (nvcc) and the GPU's compute capability, and stops
#      with one line when they do not fit (no GPU, a driver older than the toolkit, not sm_90);
#   2. checks the bundle's MANIFEST and unpacks its packages with `dpkg -x` into PREFIX
#      (never into /);
#   3. configures the kernels-only build (PARAMD_KERNELS_ONLY) for sm_90 against PREFIX and
#      checks that every package was found there; builds kernels_test and gpu_bench with
#      every core;
#   4. runs kernels_test: every op on cuda:0 against the CPU backend (outputs poisoned with
#      NaN first, every dtype; the optimizer step bit for bit, CudaOptimizer*), the trigger
#      sizes by name (GpuTriggerSizes*: softmax and layer norm wider than 1024, more than
#      65,535 rows, more than 2^31 elements, an im2col of two chunks, plain and grouped,
#      softmax along non-last dimensions, a 16-bit GEMM epilogue staged in row blocks),
#      several threads at once (GpuThreads), and (last) a small filtered subset under
#      compute-sanitizer's memcheck, racecheck, synccheck and initcheck, each with its own
#      timeout;
#   5. runs gpu_bench: GEMM against cuBLAS's own rate, forwards against the machine's own
#      PyTorch CUDA (PARAMD_PEER_PYTHON, default python3), before the sanitizers, which take
#      what is left of the budget;
#   6. writes device.txt, summary.txt, gpu_bench.txt and logs.tar.gz (every log and gtest XML)
#      to OUT and exits non-zero when a step failed or a CUDA case was skipped.
#
# `--dry-run` (CI, no GPU needed) does everything but the GPU steps: checks and unpacks the
# bundle into a fresh prefix and configures the kernels-only build against it with /usr
# hidden from CMake's package search, so a package missing from the bundle fails here and not
# on the lent machine.
#
#   tests/gpu/run.sh [--dry-run]
#   environment: BUNDLE (.gpu-bundle), PREFIX (/tmp/paramd-gpu-prefix), BUILD_DIR (build-gpu),
#                OUT (BUILD_DIR/gpu-results), JOBS (nproc), CUDA_ARCH (90), BUDGET_S (330)
set -uo pipefail

cd "$(dirname "$0")/../.."
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then
  DRY_RUN=1
elif [[ $# -gt 0 ]]; then
  echo "usage: tests/gpu/run.sh [--dry-run]" >&2
  exit 2
fi
ROOT=$(pwd)
export PATH="/usr/local/cuda/bin:${PATH}"
BUNDLE="${BUNDLE:-.gpu-bundle}"
PREFIX="${PREFIX:-/tmp/paramd-gpu-prefix}"
BUILD_DIR="${BUILD_DIR:-build-gpu}"
OUT="${OUT:-${BUILD_DIR}/gpu-results}"
JOBS="${JOBS:-$(nproc)}"
CUDA_ARCH="${CUDA_ARCH:-90}"
BUDGET_S="${BUDGET_S:-330}"
LOGS="${BUILD_DIR}/gpu-logs"
START=$SECONDS
declare -a SUMMARY=()
FAILED=0

mkdir -p "${OUT}"
rm -rf "${LOGS}"
mkdir -p "${LOGS}"
OUT=$(cd "${OUT}" && pwd)
LOGS=$(cd "${LOGS}" && pwd)

stop() {  # one clear line, then out
  echo "tests/gpu/run.sh: $*" | tee -a "${OUT}/summary.txt" >&2
  exit 1
}

step() {  # step NAME TIMEOUT_S COMMAND...: runs and logs one step, records its outcome
  local name="$1" limit="$2"
  shift 2
  local began=$SECONDS
  local left=$((BUDGET_S - (SECONDS - START)))
  if ((left < 10)); then
    SUMMARY+=("$(printf '%-22s %4ds  SKIPPED (past the %ds budget)' "${name}" 0 "${BUDGET_S}")")
    FAILED=1
    return 1
  fi
  ((limit > left)) && limit=${left}  # no step runs past the budget
  echo "== ${name}"
  if declare -F "$1" >/dev/null; then
    # A function of this script: timeout runs it through bash (export -f below).
    timeout --kill-after=10 "${limit}" bash -c '"$@"' step "$@" >"${LOGS}/${name}.log" 2>&1
  else
    timeout --kill-after=10 "${limit}" "$@" >"${LOGS}/${name}.log" 2>&1
  fi
  local rc=$?
  local outcome="ok"
  if [[ ${rc} -ne 0 ]]; then
    outcome="FAILED (exit ${rc}$([[ ${rc} -eq 124 ]] && echo ", timed out after ${limit}s"); ${name}.log)"
    FAILED=1
    tail -n 30 "${LOGS}/${name}.log"
  fi
  SUMMARY+=("$(printf '%-22s %4ds  %s' "${name}" $((SECONDS - began)) "${outcome}")")
  return ${rc}
}

finish() {
  {
    echo "== summary ($((SECONDS - START))s$([[ ${DRY_RUN} -eq 1 ]] && echo ", dry run"))"
    printf '%s\n' "${SUMMARY[@]}"
    grep -h '^\[  PASSED  \]\|^\[  FAILED  \]' "${LOGS}"/*.log 2>/dev/null
    grep -h '^\[  FAILED  \] .*(' "${LOGS}"/*.log 2>/dev/null | head -n 40
  } | tee -a "${OUT}/summary.txt"
  if [[ -f "${LOGS}/gpu_bench.log" ]]; then cp "${LOGS}/gpu_bench.log" "${OUT}/gpu_bench.txt"; fi
  tar -czf "${OUT}/logs.tar.gz" -C "${LOGS}" . 2>/dev/null
  if [[ ${FAILED} -ne 0 ]]; then
    echo "tests/gpu/run.sh: FAILED"
    exit 1
  fi
  echo "tests/gpu/run.sh: PASS$([[ ${DRY_RUN} -eq 1 ]] && echo " (dry run: bundle unpacks, configure finds every package in the prefix)")"
  exit 0
}

: >"${OUT}/summary.txt"

# --- 1. The device, the driver and the toolkit.
if ! command -v nvcc >/dev/null; then
  stop "no nvcc on PATH or in /usr/local/cuda/bin; this needs the CUDA toolkit"
fi
runtime=$(nvcc --version | sed -n 's/.*release \([0-9]*\.[0-9]*\).*/\1/p')
if [[ ${DRY_RUN} -eq 0 ]]; then
  if ! info=$(nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total \
                --format=csv,noheader 2>&1 | head -n 1) || [[ -z "${info}" ]]; then
    stop "no GPU is visible (nvidia-smi: ${info:-no output}); nothing to check"
  fi
  driver_cuda=$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9]*\.[0-9]*\).*/\1/p' | head -n 1)
  IFS=',' read -r gpu_name driver capability memory <<<"${info}"
  capability=$(echo "${capability}" | tr -d ' ')
  {
    echo "gpu: ${gpu_name}, ${memory# }"
    echo "driver: ${driver# } (supports CUDA ${driver_cuda:-unknown})"
    echo "runtime: CUDA ${runtime} (nvcc)"
    echo "compute capability: ${capability}"
    command -v compute-sanitizer >/dev/null && compute-sanitizer --version | tail -n 1
    python3 -c 'import torch; print("pytorch:", torch.__version__, "cuda", torch.version.cuda)' 2>&1 | tail -n 1
  } | tee "${OUT}/device.txt"
  if [[ "${capability/./}" != "${CUDA_ARCH}" ]]; then
    stop "cuda:0 is compute capability ${capability}, this run builds for sm_${CUDA_ARCH} (set CUDA_ARCH=${capability/./})"
  fi
  if [[ -n "${driver_cuda}" ]] && [[ "$(printf '%s\n%s\n' "${runtime}" "${driver_cuda}" | sort -V | tail -n 1)" != "${driver_cuda}" ]]; then
    stop "the driver supports CUDA ${driver_cuda} but nvcc is CUDA ${runtime}; use a toolkit no newer than the driver"
  fi
else
  echo "runtime: CUDA ${runtime} (nvcc); dry run: no GPU needed" | tee "${OUT}/device.txt"
fi

# --- 2. The bundle, unpacked into PREFIX.
if [[ ! -f "${BUNDLE}/MANIFEST" ]]; then
  stop "no ${BUNDLE}/MANIFEST: run tests/gpu/bundle here, then carry ${BUNDLE}"
fi
unpack() {
  (cd "${BUNDLE}" && sha256sum --quiet -c MANIFEST) || return 1
  rm -rf "${PREFIX}"
  mkdir -p "${PREFIX}"
  local deb
  for deb in "${BUNDLE}"/*.deb; do dpkg -x "${deb}" "${PREFIX}" || return 1; done
  # OpenBLAS's .pc files name /usr outright; Debian's alternatives would link the generic
  # names, which dpkg -x does not run.
  local pc
  while IFS= read -r pc; do
    sed -i "s#=/usr/#=${PREFIX}/usr/#; s#^prefix=/usr\$#prefix=${PREFIX}/usr#" "${pc}"
  done < <(find "${PREFIX}" -name '*.pc')
  local lib="${PREFIX}/usr/lib/x86_64-linux-gnu"
  mkdir -p "${lib}/pkgconfig"
  ln -sf ../openblas-pthread/pkgconfig/openblas.pc "${lib}/pkgconfig/openblas.pc"
  ln -sf openblas-pthread/libopenblas.so.0 "${lib}/libopenblas.so.0"
  [[ -x "${PREFIX}/usr/bin/pkgconf" ]] || return 1
  echo "unpacked $(ls "${BUNDLE}"/*.deb | wc -l) packages into ${PREFIX} ($(du -sh "${PREFIX}" | cut -f1))"
}
export BUNDLE PREFIX BUILD_DIR LOGS CUDA_ARCH
export -f unpack
step unpack 60 unpack || finish
LIB="${PREFIX}/usr/lib/x86_64-linux-gnu"
# The loader and the linker (for libraries' own dependencies, e.g. oneDNN's OpenCL) look here.
export LD_LIBRARY_PATH="${LIB}:${LIB}/openblas-pthread${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}"
export PKG_CONFIG_LIBDIR="${LIB}/pkgconfig:${PREFIX}/usr/share/pkgconfig"
unset PKG_CONFIG_PATH

# cuDNN: the toolkit's own where it has one, else the one PyTorch brings (the nvidia.cudnn
# Python package: include/ and lib/); its libraries load their siblings from the path.
CUDNN_ROOT=$(python3 -c 'import nvidia.cudnn as m; print(list(m.__path__)[0])' 2>/dev/null)
if [[ -n "${CUDNN_ROOT}" && -d "${CUDNN_ROOT}/lib" ]]; then
  export LD_LIBRARY_PATH="${LD_LIBRARY_PATH}:${CUDNN_ROOT}/lib"
fi
export CUDNN_ROOT

# --- 3. Configure against the prefix only, then build.
configure() {
  local cuda=(-DCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCH}")
  if [[ -n "${CUDNN_ROOT}" ]]; then cuda+=(-DCUDNN_ROOT="${CUDNN_ROOT}"); fi
  rm -f "${BUILD_DIR}/CMakeCache.txt"
  # /usr is hidden from find_package and friends, so every package must come from PREFIX.
  # The lent image's g++ may be newer than Debian 12's, whose warnings CI gates: a new
  # warning must not cost the run. A CMake 4 there accepts the packages' old policy lines.
  cmake -S . -B "${BUILD_DIR}" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DPARAMD_KERNELS_ONLY=ON "${cuda[@]}" -DPARAMD_WERROR=OFF -DCMAKE_POLICY_VERSION_MINIMUM=3.5 \
    -DCMAKE_PREFIX_PATH="${PREFIX}/usr" -DCMAKE_IGNORE_PREFIX_PATH="/usr;/" \
    -DPKG_CONFIG_EXECUTABLE="${PREFIX}/usr/bin/pkgconf" || return 1
  local cache="${BUILD_DIR}/CMakeCache.txt" bad=0 key value
  grep -q '^PARAMD_WITH_CUDA:.*=ON\|paramd: CUDA backend ON' "${cache}" "${LOGS}/configure.log" ||
    { echo "configure: the CUDA backend is off (nvcc not usable)"; bad=1; }
  for key in absl_DIR GTest_DIR nlohmann_json_DIR dnnl_DIR OpenCL_LIBRARY OpenCL_INCLUDE_DIR \
             OPENBLAS_INCLUDEDIR OPENBLAS_LIBDIR; do
    value=$(grep -m 1 "^${key}:" "${cache}" | cut -d= -f2-)
    if [[ "${value}" != "${PREFIX}"/* ]]; then
      echo "configure: ${key} is '${value}', not under ${PREFIX}: the bundle lacks it"
      bad=1
    else
      echo "configure: ${key} = ${value}"
    fi
  done
  # Not a failure: without cuDNN, conv2d runs on im2col and cuBLASLt.
  value=$(grep -m 1 "^PARAMD_CUDNN_LIBRARY:" "${cache}" | cut -d= -f2-)
  echo "configure: cuDNN = ${value:-not found (conv2d on im2col and cuBLASLt)}"
  return ${bad}
}
export -f configure
step configure 120 configure || finish
if [[ ${DRY_RUN} -eq 1 ]]; then finish; fi
step build 300 cmake --build "${BUILD_DIR}" -j "${JOBS}" --target kernels_test gpu_bench || finish

# --- 4. The backend's tests.
TEST="${BUILD_DIR}/tests/unit/kernels_test"
gtest() {  # gtest NAME FILTER: kernels_test with XML results
  "${TEST}" --gtest_filter="$2" --gtest_output="xml:${LOGS}/$1.xml"
}
export TEST
export -f gtest
step backend_ops 120 gtest backend_ops '-*GpuTriggerSizes*:GpuThreads*'
step trigger_sizes 180 gtest trigger_sizes '*GpuTriggerSizes*'
step threads 60 gtest threads 'GpuThreads*'

# --- 5. The benchmark against cuBLAS and the machine's own PyTorch CUDA.
PARAMD_PEER_PYTHON="${PARAMD_PEER_PYTHON:-$(command -v python3)}" \
  step gpu_bench 120 "${BUILD_DIR}/bench/gpu_bench" --reps 3

# --- 6. The sanitizers, last: each is bounded, and what is left of the budget bounds them.
# Small cases only: the sanitizers slow kernels down 10-100 times.
SMALL='AllOps/BackendOpsTest.*cuda0:CudaBackendTest.*:CudaOptimizerSmallTest.*:-*large*:*onednn*'
for tool in memcheck racecheck synccheck initcheck; do
  # No leak check: the per-device contexts live for the process on purpose (context.h).
  step "sanitizer_${tool}" 45 compute-sanitizer --tool "${tool}" --error-exitcode 3 \
    "${TEST}" --gtest_filter="${SMALL}"
done
# Every op family is implemented on CUDA, so a skipped CUDA case means the GPU went unused.
skipped=$(grep -chE '^\[  SKIPPED \] (.*cuda0|CudaBackendTest\..*|.*CudaOptimizer.*|.*GpuTriggerSizes.*|GpuThreads.*) \([0-9]+ ms\)$' \
  "${LOGS}/backend_ops.log" "${LOGS}/trigger_sizes.log" "${LOGS}/threads.log" 2>/dev/null |
  paste -sd+ | bc)
ran=$(grep -cE '^\[       OK \] (.*cuda0|.*CudaOptimizer.*) \([0-9]+ ms\)$' "${LOGS}/backend_ops.log" || true)
SUMMARY+=("$(printf '%-22s %d CUDA op cases passed, %d CUDA cases skipped' cuda-cases "${ran}" "${skipped:-0}")")
if [[ ${skipped:-0} -ne 0 ]]; then FAILED=1; fi
finish
