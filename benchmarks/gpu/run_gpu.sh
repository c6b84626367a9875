#!/usr/bin/env bash
# Build, check and time the sppquant CUDA ops (SPP + RoI SPP) and plugins on a GPU machine.
#
#   benchmarks/gpu/run_gpu.sh [STAGE...]     (default: check sanitize bench ncu sweep; stages run in the
#                                             order below: check sanitize firsthour bench lane ncu sweep)
#   STAGE: check     kernels vs the NumPy references (1000 random cases per dtype and op, 2 poison
#                    patterns each; SPP once with the choice rule, once with the stream kernel on
#                    every map) + knob variants (multi-span stream warps, v4 kernels only, RoI
#                    one channel per block / no derived levels); both plugin harnesses
#          sanitize  compute-sanitizer memcheck + racecheck on both harnesses (default plan and
#                    a stream plan with many spans per warp)
#          bench     RoI SPP vs torchvision (+compile), fixed SPP shapes vs floor / torch, stream A/B
#          sweep     SPP sweep: ours + floor on every row; torch.compile on a priority subset
#          lane      A/B on tiny maps (H*W <= 256): sweep rows, ours only, lane kernel off / forced
#          firsthour issue 17 on the GPU: `sppquant build-plugin` from the wheel in .device-kit, the
#                    calibrator's device memory through pycuda and through cuda-python
#                    (.device-kit: stage.sh wheels + sppquant-*.whl + cuda_python/cuda_bindings wheels)
#          ncu       Nsight Compute on chosen kernels
# Needs nvcc, cmake, python3 with torch/torchvision/numpy, and TensorRT headers for the plugins
# (SPPQUANT_TRT_INCLUDE, else cuda/build/trt-include, carried by the caller). Logs: $OUT/logs.tgz
# (+ summary.md); a short table is printed last. Env: CASES (default 1000), FIXED_CASES (fixed-kernel
# check, default CASES), SKIP_BUILD (use a carried build in SPPQ_BUILD_DIR when it loads), SWEEP_MAX_HW
# (sweep only maps with H*W <= this), SWEEP_BUDGET,
# COMPILE_BUDGET (seconds), BENCH_VARIANTS (0: no knob variants in `bench`), BENCH_ROI / BENCH_SPP (0: no RoI / SPP bench), LANE_VARIANTS / ROI_VARIANTS
# (the runs of `lane`), LANE_MAX_HW / LANE_MAX_NC (its rows), FIXED_WARPS_CHECK (fixed-kernel checks and sanitizer
# runs with SPPQ_FIXED_WARPS set to each listed value), FIXED_I8_CHECK (likewise with the int8 body SPPQ_FIXED_I8
# forced to each listed value: 0, 1, 2), ROWS_CASES / SANITIZE_ROWS_CASES (rows-kernel checks, v9),
# OTHER_CASES (RoI, stream and lane checks; default CASES), LANE_MIN_HW / SWEEP_MIN_HW (only maps with H*W >= this in `lane` / `sweep`), NCU_VARIANTS (knob sets for `ncu`).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/sppq_out}
LOGS=$(mktemp -d /tmp/sppq_logs.XXXX)
BUILD=${SPPQ_BUILD_DIR:-$ROOT/cuda/build/gpu}
ARCH=${SPPQ_CUDA_ARCH:-90}
CASES=${CASES:-1000}
STAGES=("$@")
[[ ${#STAGES[@]} -eq 0 ]] && STAGES=(check sanitize bench ncu sweep)
mkdir -p "$OUT" "$BUILD"
TRT_INC=${SPPQUANT_TRT_INCLUDE:-}
for d in "$ROOT/cuda/build/trt-include" "$ROOT/../shared/tensorrt-10.16-include"; do
  [[ -z "$TRT_INC" && -f "$d/NvInferRuntime.h" ]] && TRT_INC=$d
done
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
status=0
SUMMARY=$OUT/summary.md   # written as it goes: it comes back even if the call is cut off
: > "$SUMMARY"
DEADLINE=${DEADLINE:-560}  # seconds; later steps are skipped or cut to fit
left() { echo $(( DEADLINE - SECONDS > 5 ? DEADLINE - SECONDS : 5 )); }
step() { echo; echo "=== $* ($(date +%T)) ==="; }
note() { echo "$*" | tee -a "$SUMMARY"; }
has() { [[ " ${STAGES[*]} " == *" $1 "* ]] && { (( SECONDS < DEADLINE - 20 )) || { note "- stage $1 skipped: deadline"; false; }; }; }
finish() {
  ls "$LOGS"/FAILED_* > /dev/null 2>&1 && status=1
  tar czf "$OUT/logs.tgz" -C "$LOGS" . 2>/dev/null
  echo; echo "===== summary ====="; cat "$SUMMARY"
  echo "overall: $([[ $status -eq 0 ]] && echo PASS || echo FAIL)"
}
trap finish EXIT
PY=python3
KLIB=$BUILD/libsppquant_spp_kernels.so

step "device"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem --format=csv | tee "$LOGS/device.txt"
nvcc --version | tail -1 | tee -a "$LOGS/device.txt"
note "# run $(date -u +%FT%TZ) stages: ${STAGES[*]}"
note "device: $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader); $(nvcc --version | tail -1)"

step "build (sm_$ARCH)"
if [[ -n "${SKIP_BUILD:-}" && -f "$KLIB" ]] && $PY -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$KLIB"; then
  # a build carried from elsewhere (same sources): saves the device the compile; harnesses find the libraries here
  note "build: carried ($BUILD), not rebuilt"
  export LD_LIBRARY_PATH=$BUILD${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
else
args=(-S "$ROOT/cuda" -B "$BUILD" -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DSPPQ_PTXAS_VERBOSE=ON)
[[ -n "$TRT_INC" ]] && args+=(-DTENSORRT_INCLUDE_DIR="$TRT_INC" -DSPPQ_BUILD_HARNESS=ON)
{ cmake "${args[@]}" && cmake --build "$BUILD" -j"$(nproc)"; } > "$LOGS/build.log" 2>&1 || { tail -30 "$LOGS/build.log"; status=1; exit 1; }
grep -iE "spill stores|warning" "$LOGS/build.log" | grep -v " 0 bytes spill" | sort | uniq -c | head -5
grep -A2 -E "Compiling entry function.*(stream_kernel|lane_kernel|roi_spp_kernel)" "$LOGS/build.log" | grep -E "registers|spill" | sort | uniq -c | head -8
fi

run_check() {  # name, command...: logs to $LOGS/name.log, RESULT line to the summary
  local name=$1; shift
  timeout "$(left)" "$@" > "$LOGS/$name.log" 2>&1; local rc=$?
  note "- $name: exit $rc; $(grep -E '^RESULT|plugin harness:|ERROR SUMMARY|RACECHECK SUMMARY' "$LOGS/$name.log" | tail -1)"
  grep -E "^\| (fp32|fp16|int8) " "$LOGS/$name.log" | sed 's/^/    /' | tee -a "$SUMMARY" > /dev/null
  [[ $rc -eq 0 ]] || { touch "$LOGS/FAILED_$name"; grep -E "^FAIL" "$LOGS/$name.log" | head -5; }
}

if has check; then
  step "checks: kernels vs references, knob variants, plugin harnesses"
  run_check spp_check $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "$CASES" &
  run_check roi_check $PY "$ROOT/benchmarks/gpu/check_roi_spp_kernels.py" "$KLIB" --cases "${OTHER_CASES:-$CASES}" &
  SPPQ_STREAM=2 run_check spp_check_stream $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${OTHER_CASES:-$CASES}" --seed 4 &
  SPPQ_STREAM=2 SPPQ_STREAM_TILE=512 SPPQ_STREAM_BLOCKS=3 run_check spp_check_multispan $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 150 --seed 1 &
  SPPQ_STREAM=0 run_check spp_check_v4 $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 100 --seed 2 &
  SPPQ_LANE=2 run_check spp_check_lane $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${OTHER_CASES:-$CASES}" --seed 5 &
  SPPQ_LANE=2 SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check spp_check_lane_multispan $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 300 --seed 6 &
  SPPQ_LANE=2 SPPQ_LANE_STAGES=2 SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check spp_check_lane2_multispan $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 300 --seed 8 &
  SPPQ_LANE=2 SPPQ_LANE_STAGES=2 run_check spp_check_lane2 $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 300 --seed 9 &
  SPPQ_FIXED=2 run_check spp_check_fixed $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${FIXED_CASES:-$CASES}" --seed 10 --fixed --require-kernel 4 &
  SPPQ_FIXED=2 SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check spp_check_fixed_multispan $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 300 --seed 11 --fixed --require-kernel 4 &
  for w in ${FIXED_WARPS_CHECK:-}; do  # the fixed kernel with SPPQ_FIXED_WARPS=w (1, 2, 4 or 0 = rule), one and many spans per warp
    SPPQ_FIXED=2 SPPQ_FIXED_WARPS=$w run_check spp_check_fixed_w$w $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${FIXED_CASES:-$CASES}" --seed $((20 + w)) --fixed --require-kernel 4 &
    SPPQ_FIXED=2 SPPQ_FIXED_WARPS=$w SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check spp_check_fixed_multispan_w$w $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 200 --seed $((30 + w)) --fixed --require-kernel 4 &
  done
  for b in ${FIXED_I8_CHECK:-}; do  # the fixed kernel with its int8 body forced (SPPQ_FIXED_I8=b: 0, 1, 2), one and many spans per warp
    SPPQ_FIXED=2 SPPQ_FIXED_I8=$b run_check spp_check_fixed_i8_$b $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${FIXED_CASES:-$CASES}" --seed $((50 + b)) --fixed --require-kernel 4 &
    SPPQ_FIXED=2 SPPQ_FIXED_I8=$b SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check spp_check_fixed_multispan_i8_$b $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 200 --seed $((55 + b)) --fixed --require-kernel 4 &
  done
  # the rows kernel (v9): on its own maps (drawn until it is chosen) and on the general random cases wherever it fits
  SPPQ_ROWS=2 run_check spp_check_rows $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${ROWS_CASES:-$CASES}" --seed 50 --rows --require-kernel 5 &
  SPPQ_ROWS=2 SPPQ_ROWS_WARPS=0 run_check spp_check_rows_nochunk $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases 300 --seed 53 --rows --require-kernel 5 &
  SPPQ_ROWS=2 run_check spp_check_rows_anywhere $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${ROWS_CASES:-$CASES}" --seed 51 &
  SPPQ_ROI_FASTDIV=0 run_check roi_check_intdiv $PY "$ROOT/benchmarks/gpu/check_roi_spp_kernels.py" "$KLIB" --cases 200 --seed 7 &
  SPPQ_ROI_CC=1 SPPQ_ROI_DERIVE=0 run_check roi_check_cc1_noderive $PY "$ROOT/benchmarks/gpu/check_roi_spp_kernels.py" "$KLIB" --cases 100 --seed 3 &
  if [[ -x "$BUILD/sppq_plugin_harness" ]]; then
    run_check spp_harness "$BUILD/sppq_plugin_harness" --require-gpu &
    run_check roi_harness "$BUILD/sppq_roi_plugin_harness" --require-gpu &
    SPPQ_ROWS=2 run_check spp_harness_rows "$BUILD/sppq_plugin_harness" --require-gpu &
  else
    note "- plugin harnesses not built (no TensorRT headers found)"
  fi
  wait
  cat "$SUMMARY" | tail -25
fi

if has sanitize && command -v compute-sanitizer > /dev/null && [[ -x "$BUILD/sppq_plugin_harness" ]]; then
  step "compute-sanitizer"
  for tool in memcheck racecheck; do
    SPPQ_ROWS=2 run_check "${tool}_spp_rows" compute-sanitizer --tool "$tool" --error-exitcode 9 --kernel-regex kns=spp_rows_kernel \
      $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" --cases "${SANITIZE_ROWS_CASES:-24}" --seed 52 --rows --require-kernel 5 &
    [[ -n "${SANITIZE_ROWS_ONLY:-}" ]] && { wait; continue; }  # the rows kernel's runs only
    for h in sppq_plugin_harness sppq_roi_plugin_harness; do
      run_check "${tool}_$h" compute-sanitizer --tool "$tool" --error-exitcode 9 "$BUILD/$h" --require-gpu &
    done
    SPPQ_STREAM=2 SPPQ_STREAM_TILE=512 SPPQ_STREAM_BLOCKS=2 run_check "${tool}_spp_multispan" compute-sanitizer --tool "$tool" \
      --error-exitcode 9 "$BUILD/sppq_plugin_harness" --require-gpu &
    SPPQ_LANE=2 SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check "${tool}_spp_lane" compute-sanitizer --tool "$tool" \
      --error-exitcode 9 "$BUILD/sppq_plugin_harness" --require-gpu &
    SPPQ_LANE=2 SPPQ_LANE_STAGES=2 SPPQ_STREAM_BLOCKS=1 SPPQ_LANE_TILE=65536 run_check "${tool}_spp_lane2" compute-sanitizer \
      --tool "$tool" --error-exitcode 9 "$BUILD/sppq_plugin_harness" --require-gpu &
    # the fixed kernel (not reached by the harness's shapes): its own launches only, through the checker
    SPPQ_FIXED=2 SPPQ_STREAM_BLOCKS=2 SPPQ_LANE_TILE=16384 run_check "${tool}_spp_fixed" compute-sanitizer --tool "$tool" \
      --error-exitcode 9 --kernel-regex kns=spp_fixed_kernel $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" \
      --cases "${SANITIZE_FIXED_CASES:-24}" --seed 12 --fixed --require-kernel 4 &
    for b in ${FIXED_I8_CHECK:-}; do
      SPPQ_FIXED=2 SPPQ_FIXED_I8=$b SPPQ_STREAM_BLOCKS=2 SPPQ_LANE_TILE=16384 run_check "${tool}_spp_fixed_i8_$b" compute-sanitizer --tool "$tool" \
        --error-exitcode 9 --kernel-regex kns=spp_fixed_kernel $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" \
        --cases "${SANITIZE_FIXED_CASES:-24}" --seed $((60 + b)) --fixed --require-kernel 4 &
    done
    for w in ${FIXED_WARPS_CHECK:-}; do
      SPPQ_FIXED=2 SPPQ_FIXED_WARPS=$w SPPQ_STREAM_BLOCKS=2 SPPQ_LANE_TILE=16384 run_check "${tool}_spp_fixed_w$w" compute-sanitizer --tool "$tool" \
        --error-exitcode 9 --kernel-regex kns=spp_fixed_kernel $PY "$ROOT/benchmarks/gpu/check_spp_kernels.py" "$KLIB" \
        --cases "${SANITIZE_FIXED_CASES:-24}" --seed $((40 + w)) --fixed --require-kernel 4 &
    done
    wait
  done
fi

if has firsthour; then
  step "issue 17: build-plugin from the wheel, calibrator memory through pycuda and cuda-python"
  timeout "$(left)" bash "$ROOT/benchmarks/gpu/check_first_hour.sh" "$TRT_INC" > "$LOGS/firsthour.log" 2>&1 || touch "$LOGS/FAILED_firsthour"
  { echo; echo "## issue 17 (check_first_hour.sh)"; grep -E "^RESULT" "$LOGS/firsthour.log"; } >> "$SUMMARY"
fi

if has bench; then
  step "SPP fixed shapes"
  if [[ ${BENCH_SPP:-1} != 0 ]]; then
    timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_spp.py" "$KLIB" --legacy --overhead --json "$LOGS/bench_spp_legacy.json" > "$LOGS/bench_spp_legacy.log" 2>&1 || status=1
    { echo; echo "## SPP fixed shapes"; grep -E "^\||launch overhead" "$LOGS/bench_spp_legacy.log"; } >> "$SUMMARY"
  fi
  if [[ ${BENCH_VARIANTS:-1} != 0 ]]; then
    SPPQ_STREAM=2 timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_spp.py" "$KLIB" --legacy --ours-only > "$LOGS/bench_spp_stream.log" 2>&1
    { echo "stream kernel wherever it fits (SPPQ_STREAM=2), same run:"; grep -E "^\| [0-9]" "$LOGS/bench_spp_stream.log"; } >> "$SUMMARY"
  fi
  step "RoI SPP benchmark"
  if [[ ${BENCH_ROI:-1} != 0 ]]; then  # (an `a && b || status=1` here marked a skipped RoI bench as a failure)
    timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_roi_spp.py" "$KLIB" --json "$LOGS/bench_roi.json" > "$LOGS/bench_roi.log" 2>&1 || status=1
    { echo; echo "## RoI SPP"; grep -E "^\||equal" "$LOGS/bench_roi.log"; } >> "$SUMMARY"
  fi
  if [[ ${BENCH_VARIANTS:-1} != 0 ]]; then
    SPPQ_ROI_DERIVE=0 timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_roi_spp.py" "$KLIB" --ours-only > "$LOGS/bench_roi_noderive.log" 2>&1
    { echo "RoI variant SPPQ_ROI_DERIVE=0 (every level read from the window):"; grep -E "^\| (sppnet|frcnn|odd)" "$LOGS/bench_roi_noderive.log"; } >> "$SUMMARY"
  fi
fi

if has lane; then
  step "lane kernel A/B on tiny maps (ours only); RoI variants"
  # LANE_VARIANTS: space-separated runs, each a comma-separated list of VAR=VALUE knobs
  # LANE_MAX_HW / LANE_MAX_NC: only sweep rows with H*W / N*C up to these (defaults 256 / all); runs numbered
  i=0
  for v in ${LANE_VARIANTS:-SPPQ_LANE=0 SPPQ_LANE=2}; do
    i=$((i + 1)); tag=$i-$(echo "$v" | tr ',=' '__')
    env $(echo "$v" | tr ',' ' ') timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_spp.py" "$KLIB" --sweep --max-hw "${LANE_MAX_HW:-256}" \
      --max-nc "${LANE_MAX_NC:-0}" --min-hw "${LANE_MIN_HW:-0}" --ours-only \
      --json "$LOGS/bench_lane_$tag.json" > "$LOGS/bench_lane_$tag.log" 2>&1 || status=1
    cp "$LOGS/bench_lane_$tag.json" "$OUT/" 2>/dev/null
  done
  for v in ${ROI_VARIANTS-SPPQ_ROI_CC=0 SPPQ_ROI_CC=8 SPPQ_ROI_CC=16 SPPQ_ROI_CC=64 SPPQ_ROI_FASTDIV=0}; do
    env "$v" timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_roi_spp.py" "$KLIB" --ours-only > "$LOGS/bench_roi_$v.log" 2>&1
    { echo "RoI variant $v:"; grep -E "^\| (sppnet|frcnn|odd)" "$LOGS/bench_roi_$v.log"; } >> "$SUMMARY"
  done
fi

if has ncu && command -v ncu > /dev/null; then
  step "ncu"
  NCU_CASES=${NCU_CASES:-"spp:64,2048,7,7:4-2-1:fp32 spp:128,2048,7,7:6-3-2-1:int8 spp:128,2048,7,7:6-3-2-1:fp16 spp:128,256,13,13:6-3-2-1:int8 roi:sppnet:fp32 roi:sppnet:int8 roi:frcnn:fp16"}
  # NCU_VARIANTS: space-separated runs, each "default" or a comma-separated list of VAR=VALUE knobs (all cases each)
  for nv in ${NCU_VARIANTS:-default}; do
  nenv=(); [[ $nv != default ]] && read -r -a nenv <<< "$(echo "$nv" | tr ',' ' ')"
  echo "## ncu variant $nv" >> "$LOGS/ncu.log"
  # shellcheck disable=SC2086
  (cd "$ROOT/benchmarks/gpu" && env "${nenv[@]}" timeout "$(left)" ncu --clock-control none -k regex:"stream_kernel|lane_kernel|fixed_kernel|roi_spp_kernel|forward_kernel|small_kernel|rows_kernel" \
     --launch-skip 0 --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
     --section MemoryWorkloadAnalysis $PY profile_spp.py "$KLIB" $NCU_CASES) >> "$LOGS/ncu.log" 2>&1
  done
  { echo; echo "## ncu"; grep -E "## ncu variant|_kernel<|Duration|DRAM Throughput|Memory Throughput|Compute \(SM\) Throughput|L1/TEX Hit|L2 Hit|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit (Shared|Reg)|Warp Cycles Per Issued|Grid Size|Block Size" \
     "$LOGS/ncu.log" | sed 's/^ *//' | head -120; } >> "$SUMMARY"
fi

if has sweep; then
  step "SPP sweep"
  timeout "$(left)" $PY "$ROOT/benchmarks/gpu/bench_spp.py" "$KLIB" --sweep --max-hw "${SWEEP_MAX_HW:-0}" --min-hw "${SWEEP_MIN_HW:-0}" --sweep-budget "${SWEEP_BUDGET:-$(( $(left) - 40 - ${COMPILE_BUDGET:-60} ))}" \
    --compile-budget "${COMPILE_BUDGET:-60}" --json "$LOGS/bench_spp_sweep.json" > "$LOGS/bench_spp_sweep.log" 2>&1 || status=1
  cp "$LOGS/bench_spp_sweep.json" "$OUT/" 2>/dev/null
  { echo; echo "## SPP sweep"; sed -n '/torch.compile rows/,$p' "$LOGS/bench_spp_sweep.log" | grep -vE "^$"; } >> "$SUMMARY"
fi
