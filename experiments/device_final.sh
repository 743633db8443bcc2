#!/usr/bin/env bash
# One GPU-machine sitting (16 cores, one H200) for this round's figures, printed in the log and kept under $OUT:
#   background (cores 6-15): every shipped preset's learning target, 5 seeds (experiments/check_presets.py);
#   foreground (cores 0-5): the cuda-marked tests, DDPG's GPU speed against SB3, the torch envs' throughput;
#   then, with the machine quiet: A2C and TRPO CPU speed against SB3 / sb3-contrib, and bench scaling on 16 cores.
# Usage (repo root, wheels in .whl/): bash experiments/device_run.sh 'bash experiments/device_final.sh'
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
taskset -c 6-15 python3 experiments/check_presets.py --jobs 10 --seeds 5 --timeout 420 --out /tmp/presets \
  > "$OUT/presets.log" 2>&1 &
presets=$!
taskset -c 0-5 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -15 | tee "$OUT/cuda_tests.log"
taskset -c 0-3 timeout 150 python3 experiments/speed_ddpg_vs_sb3.py --device cuda --steps 20000 --sb3-steps 2000 \
  --reps 2 2>&1 | tail -4 | tee "$OUT/speed_ddpg.log"
taskset -c 0-3 timeout 120 python3 experiments/torch_env_speed.py --devices cuda --envs CartPole-v1,Pendulum-v1 \
  --sizes 4096,1000000 --seconds 1 --out "$OUT/torch_env.json" 2>&1 | tail -10 | tee "$OUT/torch_env.log"
wait "$presets"
tail -10 "$OUT/presets.log"
cp /tmp/presets/presets.md "$OUT/" 2>/dev/null
taskset -c 1 timeout 120 python3 experiments/speed_a2c_vs_sb3.py --steps 60000 --reps 3 2>&1 | tail -4 \
  | tee "$OUT/speed_a2c.log"
taskset -c 1 timeout 120 python3 experiments/speed_trpo_vs_sb3.py --steps 20480 --reps 3 2>&1 | tail -4 \
  | tee "$OUT/speed_trpo.log"
timeout 150 python3 experiments/scaling_bench.py --algo trpo --env Pendulum-v1 --steps 30000 --jobs 16 \
  --out /tmp/scaling 2>&1 | tail -4 | tee "$OUT/scaling.log"
exit 0
