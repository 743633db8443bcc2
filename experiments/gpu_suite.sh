#!/usr/bin/env bash
# Everything that needs a CUDA GPU, in one go (wheels in .whl/ for packages the machine lacks):
#   the `cuda`-marked tests, then the GPU benchmarks. Logs go to $OUT (or ./gpu_out).
# The GPU image has torch but not gymnasium: wheels in .whl/ are installed to /tmp/site first.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, gymnasium; print('torch', torch.__version__, 'gymnasium', gymnasium.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/cuda_tests.log"
for b in "$@"; do
  echo "=== $b" | tee -a "$OUT/bench.log"
  bash -c "$b" 2>&1 | tee -a "$OUT/bench.log"
done
