#!/usr/bin/env bash
# The Box2D/MuJoCo benchmark grids (docs/benchmarks.md) on the 16-core GPU machine, in sittings of at most
# BUDGET seconds (default 480). Every grid lives in /tmp/grids; at the end the whole of it is packed into
# $OUT/grids.tgz.part* (results, logs, the newest checkpoint of unfinished runs). To continue in a later sitting,
# copy those parts into .grids/ of the checkout on the machine;
# the same command then resumes every interrupted run from its newest checkpoint and skips finished ones
# (rlkit bench is idempotent). Runs still going when BUDGET runs out get SIGINT: they write a checkpoint and stop.
# Usage (repo root; wheels in .whl/ and .whl-mujoco/):
#   bash experiments/device_run.sh 'bash experiments/device_suites.sh 480'
set -uo pipefail
OUT=${OUT:-gpu_out}; BUDGET=${1:-480}; G=/tmp/grids
mkdir -p "$OUT" "$G"
ls .grids/grids.tgz.part* >/dev/null 2>&1 && cat .grids/grids.tgz.part* | tar -xz -C "$G"
export OMP_NUM_THREADS=1  # (no MUJOCO_GL: nothing renders; MUJOCO_GL=egl breaks gymnasium's import there)
MUJOCO=HalfCheetah-v5,Hopper-v5,Walker2d-v5
bench() { timeout -s INT --kill-after=60 "$BUDGET" python3 -m rlkit.cli bench "$@"; }
# DDPG on the GPU (one run at a time: runs sharing a GPU time-slice it), on its own core; DDPG=0 skips it
[[ ${DDPG:-1} == 1 ]] && taskset -c 15 bash -c "$(declare -f bench); BUDGET=$BUDGET; bench --algos ddpg --envs LunarLanderContinuous-v3 \
  --seeds 3 --device cuda --out $G/ddpg_box2d" > "$OUT/ddpg.log" 2>&1 &
# TRPO and A2C with their presets: MuJoCo and LunarLander-v3, 5 seeds, one run per core
taskset -c 0-${LAST_CORE:-11} bash -c "$(declare -f bench); BUDGET=$BUDGET; bench --algos trpo,a2c --envs $MUJOCO,LunarLander-v3 \
  --seeds 5 --jobs $((${LAST_CORE:-11} + 1)) --pin-cores --out $G/presets" > "$OUT/presets.log" 2>&1 &
# A2C, the second candidate for MuJoCo (Tianshou's mujoco_a2c.py settings), 5 seeds
taskset -c $((${LAST_CORE:-11} + 1))-$((${LAST_CORE:-11} + 3)) bash -c "$(declare -f bench); BUDGET=$BUDGET; bench --algos a2c --envs $MUJOCO --seeds 5 --jobs 3 \
  --pin-cores --out $G/a2c_tianshou --set n_envs=16 --set n_steps=5 --set gae_lambda=0.95 --set vf_coef=0.5 \
  --set learning_rate=0.0007 --set lr_schedule=linear --set use_sde=false --set log_std_init=0.0 \
  --set ortho_init=true --set normalize_obs=true --set normalize_reward=true" > "$OUT/a2c_tianshou.log" 2>&1 &
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -25 "$f"; done
find "$G" -name result.json | wc -l
# What a later sitting needs, split into parts of at most 15 MiB (easy to copy back): every run's results and
# logs, and only the newest checkpoint (with its env state) of runs still unfinished.
(cd "$G" && { find . -type f ! -path '*/checkpoints/*'
  for ck in $(find . -type d -name checkpoints); do
    [[ -e $ck/../result.json ]] && continue
    newest=$(ls -t "$ck"/*.pt 2>/dev/null | head -1); [[ -n $newest ]] && ls "${newest%.pt}"* ; done; } \
  | tar -czf - -T - ) | split -b 15m - "$OUT/grids.tgz.part"
ls -la "$OUT"
