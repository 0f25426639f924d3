#!/usr/bin/env bash
# Run a jaxmm experiment on this machine (all local accelerators, or CPU).
#   launch/local.sh configs/toy.py:tiny runs/toy [--config.num_steps=500 ...]
# NPROC=2 launch/local.sh ... starts 2 CPU processes on localhost (tests the multi-host path).
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
workdir=${2:?usage: launch/local.sh CONFIG WORKDIR [overrides...]}
shift 2
PY=${PYTHON:-.venv/bin/python}
NPROC=${NPROC:-1}
if [ "$NPROC" -eq 1 ]; then
  exec "$PY" launch/train.py --config="$config" --workdir="$workdir" "$@"
fi
port=${PORT:-$((20000 + RANDOM % 20000))}
pids=()
for ((i = 0; i < NPROC; i++)); do
  JAX_PLATFORMS=cpu JAX_COORDINATOR_ADDRESS="127.0.0.1:$port" JAX_NUM_PROCESSES="$NPROC" \
    JAX_PROCESS_ID="$i" "$PY" launch/train.py --config="$config" --workdir="$workdir" "$@" &
  pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=$?; done
exit $status
