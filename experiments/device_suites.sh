#!/usr/bin/env bash
# The Box2D/MuJoCo benchmark grids and the Pong check (docs/benchmarks.md) on the 16-core GPU machine, in sittings
# of at most BUDGET seconds (default 480). Every run lives in /tmp/grids; at the end the whole of it is packed into
# $OUT/grids.tgz.part* (results, logs, the newest checkpoint of unfinished runs). To continue in a later sitting,
# copy those parts into .grids/ of the checkout on the machine; the same command then resumes every interrupted
# run from its newest checkpoint and skips finished ones (rlkit bench is idempotent). Runs still going when BUDGET
# runs out get SIGINT: they write a checkpoint and stop.
# Usage (repo root; wheels in .whl/ and .whl-mujoco/):
#   bash experiments/device_run.sh 'bash experiments/device_suites.sh 480 [GRID ...]'
# GRIDs (default: trpo_mujoco a2c_mujoco box2d ddpg_box2d):
#   pong         A2C PongNoFrameskip-v4 with its preset to 4M steps (experiments/atari_pong.py), GPU, normal priority;
#                PONG_SEED=1 runs seed 1 in pong_seed1 (default: seed 0, in pong); a variant:
#                PONG_TAG=name PONG_SET="vf_coef=0.25 ..." (--set values, in pong[_seedN]_name), PONG_BUDGET=10000000
#                (the run's budget, which a decaying learning rate decays over; default 4M)
#   trpo_mujoco  TRPO presets, HalfCheetah/Hopper/Walker2d-v5, 5 seeds      (CPU, one run per core, nice 10)
#   a2c_mujoco   A2C presets, HalfCheetah/Hopper/Walker2d-v5, 5 seeds       (CPU, nice 10)
#   box2d        TRPO and A2C presets, LunarLander-v3, 5 seeds              (CPU, nice 10)
#   ddpg_box2d   DDPG LunarLanderContinuous-v3, 5 seeds in one process     (GPU)
#   ddpg_mcc     DDPG MountainCarContinuous-v0, 5 seeds in one process      (GPU)
#   ddpg_llc_episode DDPG LunarLanderContinuous-v3 with rl-zoo3's schedule (train_freq_unit=episode,
#                gradient_steps=-1), 5 seeds in 5 processes: episode updates cannot run in lockstep (GPU)
#   ddpg_mujoco  DDPG HalfCheetah/Hopper/Walker2d-v5 ($MUJOCO), 5 seeds a process (GPU)
#   ddpg_bipedal DDPG BipedalWalker-v3, 5 seeds in one process             (GPU)
#   ddpg_ant     DDPG Ant-v5, 5 seeds in one process                       (GPU)
#   bipedal      TRPO and A2C presets, BipedalWalker-v3, 5 seeds           (CPU, nice 10)
#   ant          TRPO and A2C presets, Ant-v5, 5 seeds                     (CPU, nice 10)
#   qac_mujoco   QAC presets, HalfCheetah/Hopper/Walker2d-v5, 5 seeds       (CPU, nice 10)
# CPU grids share the cores given by CORES (default 0-15) and run at most JOBS (default 12) runs at once. The GPU
# grids (pong, ddpg_*) run one after another (processes sharing one GPU time-slice it), each until BUDGET is spent.
set -uo pipefail
OUT=${OUT:-gpu_out}; BUDGET=${1:-480}; shift || true; G=/tmp/grids
GRIDS=("$@"); ((${#GRIDS[@]})) || GRIDS=(trpo_mujoco a2c_mujoco box2d ddpg_box2d)
if [[ -z ${PONG_TAG:-} && -n ${PONG_SET:-}${PONG_BUDGET:-} ]]; then  # a Pong variant gets its own directory
  echo "device_suites.sh: PONG_SET/PONG_BUDGET need PONG_TAG (the variant's directory name)" >&2; exit 2
fi
mkdir -p "$OUT" "$G"
export OMP_NUM_THREADS=1  # (no MUJOCO_GL: nothing renders; MUJOCO_GL=egl breaks gymnasium's import there)
MUJOCO=${MUJOCO:-HalfCheetah-v5,Hopper-v5,Walker2d-v5}  # MUJOCO=Hopper-v5 runs one env
CORES=${CORES:-0-15}; JOBS=${JOBS:-12}
bench() { timeout -s INT --kill-after=60 "$BUDGET" python3 -m rlkit.cli bench "$@"; }
START=$SECONDS
gpu_bench() { local name=$1 left=$((BUDGET - (SECONDS - START))); shift
  ((left > 30)) || { echo "no time left for $name" > "$OUT/$name.log"; return; }
  timeout -s INT --kill-after=60 "$left" python3 -m rlkit.cli bench "$@" --seeds 5 --seeds-per-process 5 \
    --device cuda --out "$G/$name" > "$OUT/$name.log" 2>&1; }
gpu_procs() { local name=$1 left=$((BUDGET - (SECONDS - START))); shift  # one process per seed, sharing the GPU
  ((left > 30)) || { echo "no time left for $name" > "$OUT/$name.log"; return; }
  timeout -s INT --kill-after=60 "$left" python3 -m rlkit.cli bench "$@" --seeds 5 --runs-per-gpu 5 \
    --device cuda --out "$G/$name" > "$OUT/$name.log" 2>&1; }
GPU_GRIDS=()
cpu_bench() { local name=$1; shift
  taskset -c "$CORES" nice -n 10 bash -c "$(declare -f bench); BUDGET=$BUDGET; bench $* --jobs $JOBS --out $G/$name" \
    > "$OUT/$name.log" 2>&1 & }
for grid in "${GRIDS[@]}"; do
  case $grid in
    pong|ddpg_box2d|ddpg_mcc|ddpg_llc_episode|ddpg_mujoco|ddpg_bipedal|ddpg_ant) GPU_GRIDS+=("$grid") ;;
    trpo_mujoco|a2c_mujoco|box2d|bipedal|ant|qac_mujoco) ;;
    *) echo "device_suites.sh: unknown grid '$grid'" >&2; exit 2 ;;
  esac
done
IN=${IN:-.grids}  # the parts of earlier sittings to continue from (a warm machine keeps its newer files)
ls "$IN"/grids.tgz.part* >/dev/null 2>&1 && cat "$IN"/grids.tgz.part* \
  | tar -xz --keep-newer-files --warning=no-ignore-newer -C "$G"
for grid in "${GPU_GRIDS[@]}"; do  # in the background, one after another, while the CPU grids run
  case $grid in
    pong) left=$((BUDGET - (SECONDS - START)))
          if ((left > 60)); then
            seed=${PONG_SEED:-0}; dir=pong; ((seed == 0)) || dir=pong_seed$seed
            [[ -z ${PONG_TAG:-} ]] || dir=${dir}_$PONG_TAG
            sets=()  # a variant's values start a run; a later sitting continues it with the values it started with
            if ! compgen -G "$G/$dir/checkpoints/*.pt" > /dev/null; then
              for kv in ${PONG_SET:-}; do sets+=(--set "$kv"); done
              [[ -z ${PONG_BUDGET:-} ]] || sets+=(--budget "$PONG_BUDGET")
            fi
            python3 experiments/atari_pong.py --steps 4000000 --run-dir "$G/$dir" --seed "$seed" \
              --time-limit $((left - 20)) "${sets[@]}" > "$OUT/pong.log" 2>&1
          else echo "no time left for pong" > "$OUT/pong.log"; fi ;;
    # (DDPG resumes exactly only with its replay buffer in the checkpoints; a MuJoCo one is 168 MB a seed, so a
    # resumed ddpg_mujoco sitting needs the previous one's /tmp/grids on the same machine, not carried parts)
    ddpg_box2d) gpu_bench ddpg_box2d --algos ddpg --envs LunarLanderContinuous-v3 --set save_replay_buffer=true ;;
    ddpg_mcc) gpu_bench ddpg_mcc --algos ddpg --envs MountainCarContinuous-v0 --set save_replay_buffer=true ;;
    ddpg_llc_episode) gpu_procs ddpg_llc_episode --algos ddpg --envs LunarLanderContinuous-v3 \
      --set train_freq_unit=episode --set gradient_steps=-1 --set save_replay_buffer=true ;;
    ddpg_mujoco) gpu_bench ddpg_mujoco --algos ddpg --envs "$MUJOCO" --set save_replay_buffer=true ;;
    ddpg_bipedal) gpu_bench ddpg_bipedal --algos ddpg --envs BipedalWalker-v3 --set save_replay_buffer=true ;;
    ddpg_ant) gpu_bench ddpg_ant --algos ddpg --envs Ant-v5 --set save_replay_buffer=true ;;
  esac
done &
for grid in "${GRIDS[@]}"; do
  case $grid in
    trpo_mujoco) cpu_bench trpo_mujoco --algos trpo --envs "$MUJOCO" --seeds 5 ;;
    a2c_mujoco) cpu_bench a2c_mujoco --algos a2c --envs "$MUJOCO" --seeds 5 ;;
    box2d) cpu_bench box2d --algos trpo,a2c --envs LunarLander-v3 --seeds 5 ;;
    bipedal) cpu_bench bipedal --algos trpo,a2c --envs BipedalWalker-v3 --seeds 5 ;;
    ant) cpu_bench ant --algos trpo,a2c --envs Ant-v5 --seeds 5 ;;
    qac_mujoco) cpu_bench qac_mujoco --algos qac --envs "$MUJOCO" --seeds 5 ;;
  esac
done
wait
for f in "$OUT"/*.log; do echo "== $f"; tail -25 "$f"; done
find "$G" -name result.json | wc -l
# What a later sitting needs, split into parts of at most 15 MiB (easy to copy back): every run's results and
# logs, and only the newest checkpoint (with its env state) of runs still unfinished.
(cd "$G" && { find . -type f ! -path '*/checkpoints/*'
  for ck in $(find . -type d -name checkpoints); do
    [[ -e $ck/../result.json ]] && continue
    case $ck in ./ddpg_mujoco/*|./ddpg_bipedal/*|./ddpg_ant/*) continue ;; esac  # replay buffers of 40-170 MB a
    # seed: these resume only on the same (warm) machine
    newest=$(ls -t "$ck"/*.pt 2>/dev/null | head -1); [[ -n $newest ]] && ls "${newest%.pt}"* ; done; } \
  | tar -czf - -T - ) | split -b 15m - "$OUT/grids.tgz.part"
ls -la "$OUT"
