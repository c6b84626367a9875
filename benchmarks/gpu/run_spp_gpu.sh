#!/usr/bin/env bash
# Build, check and time the sppquant SPP kernels and plugin on a GPU machine, in one command.
#
#   benchmarks/gpu/run_spp_gpu.sh [--quick]
#
# Needs nvcc, cmake, python3 with torch + numpy, and TensorRT headers for the plugin parts
# (SPPQUANT_TRT_INCLUDE, default: ../shared/tensorrt-10.16-include or cuda/build/trt-include).
# Writes logs under $OUT (default /tmp/sppq_out); prints a short table last.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/sppq_out}
BUILD=${SPPQ_BUILD_DIR:-/tmp/sppq_build}
ARCH=${SPPQ_CUDA_ARCH:-90}
CASES=1000
[[ "${1:-}" == "--quick" ]] && CASES=100
mkdir -p "$OUT"
TRT_INC=${SPPQUANT_TRT_INCLUDE:-}
for d in "$ROOT/../shared/tensorrt-10.16-include" "$ROOT/shared/tensorrt-10.16-include" "$ROOT/cuda/build/trt-include"; do
  [[ -z "$TRT_INC" && -f "$d/NvInferRuntime.h" ]] && TRT_INC=$d
done
export PYTHONUNBUFFERED=1
status=0
step() { echo; echo "=== $* ==="; }

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$OUT/device.txt"
nvcc --version | tail -1 | tee -a "$OUT/device.txt"

step "build (sm_$ARCH)"
cmake_args=(-S "$ROOT/cuda" -B "$BUILD" -DCMAKE_CUDA_ARCHITECTURES="$ARCH")
[[ -n "$TRT_INC" ]] && cmake_args+=(-DTENSORRT_INCLUDE_DIR="$TRT_INC" -DSPPQ_BUILD_HARNESS=ON)
{ cmake "${cmake_args[@]}" && cmake --build "$BUILD" -j"$(nproc)"; } > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
grep -iE "spill|warning" "$OUT/build.log" | head -5
LIB=$BUILD/libsppquant_spp_kernels.so

step "kernels vs NumPy reference ($CASES random cases per dtype)"
python3 "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$LIB" --cases "$CASES" 2>&1 | tee "$OUT/check.log" | tail -12
[[ ${PIPESTATUS[0]} -eq 0 ]] || status=1

if [[ -x "$BUILD/sppq_plugin_harness" ]]; then
  step "plugin harness (configurePlugin / onShapeChange / enqueue)"
  "$BUILD/sppq_plugin_harness" --require-gpu > "$OUT/harness.log" 2>&1; rc=$?
  grep -E "FAIL|plugin harness" "$OUT/harness.log" | tail -8
  [[ $rc -eq 0 ]] || status=1
  if command -v compute-sanitizer > /dev/null; then
    step "compute-sanitizer memcheck + racecheck (plugin harness: every dtype, pooling, 5 shapes x 3 level sets)"
    for tool in memcheck racecheck; do
      compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/sppq_plugin_harness" --require-gpu > "$OUT/sanitizer_$tool.log" 2>&1
      rc=$?
      echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
      [[ $rc -eq 0 ]] || status=1
    done
  fi
else
  echo "plugin harness not built (no TensorRT headers found): plugin checks skipped"
fi

if [[ "${SPPQ_SKIP_BENCH:-0}" != "1" ]]; then
  step "benchmark"
  python3 "$ROOT/benchmarks/gpu/bench_spp.py" "$LIB" --json "$OUT/bench.json" > "$OUT/bench.log" 2>&1 || status=1
  tail -40 "$OUT/bench.log"
fi
if [[ "${SPPQ_SWEEP:-0}" == "1" ]]; then
  step "sweep: column strips per SM (SPPQ_THREADS_PER_SM), large shape"
  for tps in 512 1024 2048 4096; do
    echo "--- SPPQ_THREADS_PER_SM=$tps"
    SPPQ_THREADS_PER_SM=$tps SPPQ_BENCH_ONLY_LARGE=1 python3 "$ROOT/benchmarks/gpu/bench_spp.py" "$LIB" 2>&1 | grep "^| 32x512" | tee -a "$OUT/sweep.log"
  done
fi
if [[ "${SPPQ_NCU:-0}" == "1" ]] && command -v ncu > /dev/null; then
  step "ncu (large shape: int8 1,2,4; fp32 6,3,2,1; fp32 1,2,4)"
  (cd "$ROOT/benchmarks/gpu" && ncu --clock-control none -k regex:spp_forward --section SpeedOfLight --section Occupancy \
     --section WarpStateStats --section LaunchStats python3 profile_spp.py "$LIB") > "$OUT/ncu.log" 2>&1
  grep -E "spp_forward_kernel|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Block Limit|Duration|Registers Per|Stall|Warp Cycles Per Issued" "$OUT/ncu.log" | sed 's/^ *//' | head -60
fi
echo
echo "overall: $([[ $status -eq 0 ]] && echo PASS || echo FAIL)"
exit $status
