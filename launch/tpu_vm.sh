#!/usr/bin/env bash
# Run the same command on every worker of a multi-host TPU VM slice.
#   launch/tpu_vm.sh TPU_NAME ZONE configs/lrm4d.py:large gs://bucket/runs/lrm4d_large
# Each worker needs this repo at ~/jaxmm with `pip install -e '.[tpu]'`; JAX detects the slice
# and launch/train.py calls jax.distributed.initialize() when TPU_WORKER_HOSTNAMES lists peers.
set -euo pipefail
tpu=${1:?usage: launch/tpu_vm.sh TPU_NAME ZONE CONFIG WORKDIR [overrides...]}
zone=${2:?zone}
config=${3:?config}
workdir=${4:?workdir}
shift 4
extra=$(printf ' %q' "$@")
gcloud compute tpus tpu-vm ssh "$tpu" --zone="$zone" --worker=all --command \
  "cd ~/jaxmm && python3 launch/train.py --config=$config --workdir=$workdir$extra"
