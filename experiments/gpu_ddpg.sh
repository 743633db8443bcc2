#!/usr/bin/env bash
# DDPG on a GPU machine in one go (wheels in .whl/ for packages its Python lacks, e.g. gymnasium):
#   1. the cuda-marked DDPG tests (graph vs eager after 100 updates, while the buffer fills, same seed twice),
#   2. the side-by-side speed benchmark against SB3 on the GPU (graph; overlap_env_step=False and eager too;
#      a kernel profile of the update),
#   3. after the timed runs (so they have the GPU alone), the 5-seed Pendulum-v1 learning benchmark with the
#      preset, 20k steps each, 5 processes at once (LEARN_SET="--set overlap_env_step=false" for SB3's order).
# Logs go to $OUT (or ./gpu_out). Usage: bash experiments/gpu_ddpg.sh
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, gymnasium; print('torch', torch.__version__, 'gymnasium', gymnasium.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.txt"
timeout 90 python3 -m pytest -q -m cuda -p no:cacheprovider tests/agents/test_ddpg.py 2>&1 | tail -40 | tee "$OUT/cuda_tests.log"
timeout ${SPEED_TIMEOUT:-200} python3 experiments/speed_ddpg_vs_sb3.py --device cuda --steps ${RLKIT_STEPS:-20000} \
  --sb3-steps ${SB3_STEPS:-2000} --reps 2 --eager --sb3-order --profile 2>&1 | tee "$OUT/speed_cuda.log"
timeout ${LEARN_TIMEOUT:-170} python3 experiments/bench_learning.py --algo ddpg --env Pendulum-v1 --seeds 5 --steps 20000 \
  --target -150 --jobs 5 --device cuda --out /tmp/ddpg_learning ${LEARN_SET:-} 2>&1 | tail -30 | tee "$OUT/learning.log"
tail -15 /tmp/ddpg_learning/Pendulum-v1/ddpg/seed0/stdout.log 2>/dev/null | tee -a "$OUT/learning.log"
