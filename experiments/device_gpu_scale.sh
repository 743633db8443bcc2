#!/usr/bin/env bash
# One GPU-machine sitting for the GPU-scale figures (docs/performance.md), one GPU job at a time so no two share it:
# the cuda-marked tests, training throughput on the torch envs, the CartPole race, and many seeds per process.
# Usage (repo root; wheels in .whl/ and .whl-mujoco/): bash experiments/device_run.sh 'bash experiments/device_gpu_scale.sh'
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
export OMP_NUM_THREADS=1
timeout 170 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -30 | tee "$OUT/cuda_tests.log"
timeout 130 python3 experiments/gpu_throughput.py --sizes 4096,65536 --timed-iters 20 --out "$OUT/gpu_throughput.json" 2>&1 \
  | tail -30 | tee "$OUT/gpu_throughput.log"
timeout 60 python3 experiments/gpu_cartpole_race.py --out "$OUT/gpu_cartpole_race.json" 2>&1 | tail -15 \
  | tee "$OUT/race.log"
timeout 150 python3 experiments/seed_batching.py --device cuda --ddpg-env HalfCheetah-v5 --ddpg-seeds 8 \
  --ddpg-steps 5000 --a2c-seeds 256 --a2c-steps 20000 --out "$OUT/seed_batching.json" 2>&1 | tail -20 \
  | tee "$OUT/seed_batching.log"
exit 0
