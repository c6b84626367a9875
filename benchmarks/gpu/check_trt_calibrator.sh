#!/usr/bin/env bash
# GPU machine: install the device kit (pycuda + cp312 TensorRT bindings), then check the
# calibrator with real device memory. Stage first, here: bash /work/shared/device-kit/stage.sh
# and pass carry [".device-kit"]. One command: bash benchmarks/gpu/check_trt_calibrator.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .device-kit/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 benchmarks/gpu/check_trt_calibrator.py "$@"
