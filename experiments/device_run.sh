#!/usr/bin/env bash
# Run commands on a GPU machine whose Python lacks some packages, from the repo root:
#   bash experiments/device_run.sh 'CMD 1' 'CMD 2' ...
# Installs the carried wheels (.whl/, and .whl-mujoco/ if present) into /tmp/site, prints GPU/torch/gymnasium
# versions to $OUT/env.txt, then runs each CMD in turn (bash -c), output teed to $OUT/log_N.txt.
# OUT defaults to ./gpu_out (set OUT to the folder whose files you want to keep).
# Exit status: the first nonzero one among the commands, else 0.
set -uo pipefail
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"; export OUT
wheels=(); for w in .whl/*.whl .whl-mujoco/*.whl; do [[ -e $w ]] && wheels+=("$w"); done
if ((${#wheels[@]})); then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${wheels[@]}" || exit 1
fi
export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  python3 - <<'PY'
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "gymnasium", "stable_baselines3", "sb3_contrib", "mujoco", "Box2D"):
    try:
        mod = importlib.import_module(name)
        print(name, getattr(mod, "__version__", "?"))
    except Exception as e:
        print(name, "-", type(e).__name__, e)
if "torch" in sys.modules:
    import torch
    print("cuda", torch.cuda.is_available(), torch.version.cuda, torch.cuda.device_count(), "device(s)")
PY
} 2>&1 | tee "$OUT/env.txt"
rc=0; n=0
for cmd in "$@"; do
  n=$((n + 1)); log="$OUT/log_$n.txt"
  echo "=== [$n] $cmd" | tee "$log"
  start=$SECONDS; bash -c "$cmd" 2>&1 | tee -a "$log"; s=${PIPESTATUS[0]}
  echo "=== [$n] exit $s after $((SECONDS - start)) s" | tee -a "$log"
  ((s != 0 && rc == 0)) && rc=$s
done
exit "$rc"
