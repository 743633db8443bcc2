#!/usr/bin/env bash
# One GPU-machine sitting for the "one source of truth" checks: every shipped preset's learning target (5 seeds,
# in the background on cores 5-15), the cuda-marked tests, then the side-by-side speed scripts on cores 0-3.
# Usage (repo root, wheels in .whl/): bash experiments/device_run.sh 'bash experiments/device_issue14.sh'
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
taskset -c 5-15 python3 experiments/check_presets.py --jobs 11 --seeds 5 --timeout 480 --out /tmp/presets \
  > "$OUT/presets.log" 2>&1 &
presets=$!
taskset -c 0-3 python3 -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tail -25 | tee "$OUT/cuda_tests.log"
taskset -c 0-3 timeout 200 python3 experiments/speed_ddpg_vs_sb3.py --device cuda --steps 20000 --sb3-steps 2000 \
  --reps 2 2>&1 | tail -6 | tee "$OUT/speed_ddpg.log"
taskset -c 1 timeout 150 python3 experiments/speed_a2c_vs_sb3.py --steps 60000 --reps 3 2>&1 | tail -5 | tee "$OUT/speed_a2c.log"
taskset -c 1 timeout 150 python3 experiments/speed_trpo_vs_sb3.py --steps 20480 --reps 3 2>&1 | tail -5 | tee "$OUT/speed_trpo.log"
wait "$presets"
tail -12 "$OUT/presets.log"
cp /tmp/presets/presets.md /tmp/presets/presets.json "$OUT/" 2>/dev/null
exit 0
