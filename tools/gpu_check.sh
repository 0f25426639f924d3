#!/usr/bin/env bash
# Every GPU test and benchmark in one pass, each step under its own time limit, logs in $LOG_DIR.
#
#   make gpu-check                                   # installs the cuda extra, then this
#   PY=python3 LOG_DIR=/tmp/gpu bash tools/gpu_check.sh   # an environment that already has jax[cuda]
#
# GPU_CHECK_QUICK=1 skips the 4D-LRM goal run (minutes) and shortens the benchmarks' repeats, for
# a short lease; GPU_CHECK_STEPS="maxsim splat" runs only those steps (GPU_CHECK_STEPS=none:
# only the tests). The pytest step runs beside the benchmarks (it needs little GPU time and
# memory); the benchmarks run one after another, so their timings do not overlap each other.
# The summary at the end lists each step's exit status (124 = hit its time limit).
set -u
PY=${PY:-python}
LOG_DIR=${LOG_DIR:-runs/gpu_check}
QUICK=${GPU_CHECK_QUICK:-0}
mkdir -p "$LOG_DIR"
export PYTHONUNBUFFERED=1
declare -A RC

step() {  # step NAME SECONDS CMD...: runs CMD with a time limit, tees its log, records its status
  local name=$1 limit=$2
  shift 2
  echo "== $name ($*), limit ${limit}s"
  local t0=$SECONDS
  timeout -k 5 "$limit" "$@" >"$LOG_DIR/$name.log" 2>&1
  RC[$name]=$?
  echo "   rc=${RC[$name]} in $((SECONDS - t0))s"
  tail -n 25 "$LOG_DIR/$name.log"
}

{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
  $PY -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
} 2>&1 | tee "$LOG_DIR/env.log"

# Correctness: the gpu-marked tests and the kernel folders (compiled Triton kernels on GPU).
XLA_PYTHON_CLIENT_PREALLOCATE=false timeout -k 5 300 $PY -m pytest -q -n 4 -p no:cacheprovider \
  -o addopts="-ra --strict-markers" -m "gpu or not slow" tests/kernels_pallas \
  tests/nn/test_attention.py >"$LOG_DIR/pytest_gpu.log" 2>&1 &
PYTEST_PID=$!

export XLA_PYTHON_CLIENT_MEM_FRACTION=0.75
# name: full-run limit (s), quick limit (s), command. GPU_CHECK_STEPS picks a subset by name.
# maxsim times both scan schedules (blocked, persistent) in one run: the issue-13 A/B; its quick
# limit was 110 s for one schedule and is 240 s for two (plus the sharded and segment rows).
declare -A LIMIT=([maxsim]=900 [clamr]=900 [splat]=600 [splat_sched]=600 [lrm4d]=600 [llm]=900
  [llm_sft]=900 [generate_decode]=600 [serve_load]=600 [lrm4d_goal]=3600)
declare -A QUICK_LIMIT=([maxsim]=240 [clamr]=200 [splat]=100 [splat_sched]=150 [lrm4d]=130
  [llm]=150 [llm_sft]=150 [generate_decode]=120)
declare -A CMD=(
  [maxsim]="benchmarks/maxsim.py"
  [clamr]="benchmarks/clamr.py"
  [splat]="benchmarks/splat.py"
  [splat_sched]="benchmarks/splat.py --schedule-only"  # per-view calls vs one grid vs work items
  [lrm4d]="benchmarks/lrm4d.py"
  [llm]="benchmarks/llm.py --skip-sft"
  [llm_sft]="benchmarks/llm.py --skip-train --skip-decode"
  [generate_decode]="benchmarks/generate_decode.py"
  [serve_load]="benchmarks/serve_load.py"
  [lrm4d_goal]="launch/lrm4d_goal.py --config=configs/lrm4d.py:small --workdir=$LOG_DIR/lrm4d_goal"
)
declare -A QUICK_ARGS=([maxsim]="--iters 3" [clamr]="--iters 2" [splat]="--reps 3" [splat_sched]="--reps 3" [lrm4d]="--iters 2"
  [llm]="--steps 4" [llm_sft]="--steps 4" [generate_decode]="--reps 1")
ALL="maxsim clamr splat splat_sched lrm4d llm llm_sft generate_decode serve_load lrm4d_goal"
[ "$QUICK" = 1 ] && ALL="maxsim clamr splat splat_sched lrm4d llm llm_sft generate_decode"  # no SmolLM2 package, no goal
for name in ${GPU_CHECK_STEPS:-$ALL}; do
  [ -n "${CMD[$name]:-}" ] || { echo "== $name: no such step, skipped"; continue; }
  if [ "$QUICK" = 1 ]; then
    # shellcheck disable=SC2086  # word-splitting the command line is intended
    step "$name" "${QUICK_LIMIT[$name]:-120}" $PY ${CMD[$name]} ${QUICK_ARGS[$name]:-}
  else
    # shellcheck disable=SC2086
    step "$name" "${LIMIT[$name]}" $PY ${CMD[$name]}
  fi
done

wait $PYTEST_PID
RC[pytest_gpu]=$?
echo "== pytest_gpu rc=${RC[pytest_gpu]}"
tail -n 30 "$LOG_DIR/pytest_gpu.log"
echo "== summary (exit status per step; 124 = time limit)"
for k in "${!RC[@]}"; do echo "$k ${RC[$k]}"; done | sort | tee "$LOG_DIR/summary.txt"
# GPU_CHECK_TAR=FILE also packs every log into one archive (a lease that returns few files).
if [ -n "${GPU_CHECK_TAR:-}" ]; then
  tar -czf "$GPU_CHECK_TAR" -C "$LOG_DIR" . && echo "logs packed into $GPU_CHECK_TAR"
fi
