#!/usr/bin/env bash
# Everything that needs a GPU, in one run on the lent device machine (see the device README):
#   bash ../shared/device/prepare.sh   (here, once: copies pydantic's wheels into .device/)
#   run(command="bash benchmarks/gpu_check.sh", carry=[".device"], timeout_s=540)
# Writes its outputs under $OUT (or ./gpu-results) for benchmarks/RESULTS.md.
set -uo pipefail
OUT=${OUT:-gpu-results}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --target .device/site .device/wheels/*.whl
export PYTHONPATH=$PWD/.device/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" \
  | tee -a "$OUT/gpu.txt"
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/kernels 2>&1 | tail -30 \
  | tee "$OUT/pytest-gpu.txt"
timeout 120 python3 benchmarks/kernels.py 2>&1 | tee "$OUT/kernels.txt"
timeout 150 python3 benchmarks/vs_pytorch.py --device cuda --steps 40 --rounds 3 --compile 2>&1 \
  | tee "$OUT/vs_pytorch_cuda.txt"
