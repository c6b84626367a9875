#!/usr/bin/env bash
# Issue 17 on the GPU machine, in one call (run_gpu.sh stage `firsthour`, or alone):
#   1. `sppquant build-plugin` from the installed wheel's packaged sources (sppquant/_cuda), outside
#      any checkout, into the user cache the loader searches; the library exports both creators
#      and the kernels' C API, and find_plugin_library() returns it;
#   2. the calibrator's device memory through cuda-python (`cuda.bindings`): round trips, the
#      BatchFeeder, leaks (check_cuda_python_memory.py), without and with pycuda installed;
#   3. the TensorRT calibrator (real cp312 bindings over stub libraries) on pycuda memory and on
#      cuda-python memory (check_trt_calibrator.py --memory ...).
# Needs in .device-kit/: the device-kit wheels (stage.sh), sppquant-*.whl (`pip wheel --no-deps .`),
# cuda_python / cuda_bindings / cuda_pathfinder cp312 wheels; TensorRT headers as $1 or $SPPQUANT_TRT_INCLUDE.
# Prints one RESULT line per step; exit 1 if any failed.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
KIT=$ROOT/.device-kit
TRT_INC=${1:-${SPPQUANT_TRT_INCLUDE:-}}
fail=0
result() { echo "RESULT $1: $2"; [[ $2 == PASS* ]] || fail=1; }
pipi() { python3 -m pip install -q --no-index --no-deps --no-compile --target "$@"; }

kitw=$(ls "$KIT"/*.whl | grep -vE '/(sppquant|cuda_python|cuda_bindings|cuda_pathfinder)-')
if pipi /tmp/kit $kitw && pipi /tmp/cudapy "$KIT"/cuda_python-*.whl "$KIT"/cuda_bindings-*.whl "$KIT"/cuda_pathfinder-*.whl \
   && pipi /tmp/sqwheel "$KIT"/sppquant-*.whl; then result install PASS; else result install FAIL; exit 1; fi
ls /tmp/sqwheel/sppquant/_cuda | head -20

# 1. build-plugin from the wheel (cwd and PYTHONPATH outside the checkout)
export XDG_CACHE_HOME=/tmp/xdg
( cd /tmp && PYTHONPATH=/tmp/sqwheel python3 -m sppquant build-plugin --tensorrt-include "$TRT_INC" --arch native --json ) > /tmp/bp.json 2> /tmp/bp.err
rc=$?
tail -5 /tmp/bp.err; cat /tmp/bp.json
lib=$(python3 -c 'import json,sys; print(json.load(open("/tmp/bp.json"))["library"])' 2>/dev/null)
if [[ $rc -eq 0 && -f "$lib" ]]; then
  syms=$(nm -D --defined-only "$lib" | grep -cE ' (getCreators|sppq_spp_forward|sppq_roi_spp_forward)$')
  found=$(cd /tmp && PYTHONPATH=/tmp/sqwheel python3 -c 'from sppquant.ops import plugin_library as p; print(p.find_plugin_library())' 2>&1)
  echo "library $lib ($(stat -c %s "$lib") bytes), exported symbols found: $syms/3, loader: $found"
  [[ $syms -eq 3 && "$found" == "$lib" ]] && result build_plugin "PASS ($lib)" || result build_plugin "FAIL (symbols $syms, loader $found)"
else
  result build_plugin "FAIL (exit $rc)"
fi
unset XDG_CACHE_HOME

# 2. cuda-python memory, without pycuda, then with pycuda (shared primary context)
out=$(cd /tmp && PYTHONPATH=/tmp/cudapy:$ROOT python3 "$ROOT/benchmarks/gpu/check_cuda_python_memory.py" 2>&1); rc=$?
echo "$out" | tail -3; result cudapy_memory "$([[ $rc -eq 0 ]] && echo PASS || echo FAIL) $(echo "$out" | tail -1)"
out=$(cd /tmp && PYTHONPATH=/tmp/cudapy:/tmp/kit:$ROOT python3 "$ROOT/benchmarks/gpu/check_cuda_python_memory.py" 2>&1); rc=$?
echo "$out" | tail -3; result cudapy_memory_with_pycuda "$([[ $rc -eq 0 ]] && echo PASS || echo FAIL) $(echo "$out" | tail -1)"

# 3. the calibrator on both memories
for m in pycuda cuda-python; do
  out=$(cd /tmp && PYTHONPATH=/tmp/cudapy:/tmp/kit:$ROOT python3 "$ROOT/benchmarks/gpu/check_trt_calibrator.py" --memory $m 2>&1); rc=$?
  echo "$out" | tail -2; result "calibrator_$m" "$([[ $rc -eq 0 ]] && echo PASS || echo FAIL) $(echo "$out" | tail -1)"
done
exit $fail
