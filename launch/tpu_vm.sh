#!/usr/bin/env bash
# Train on a Cloud TPU VM slice: the same command on every worker, started from your workstation.
#   TPU_NAME=my-v5p-256 ZONE=us-east5-a WORKDIR=gs://bucket/runs/r1 DATA=gs://bucket/datasets/clips \
#     bash launch/tpu_vm.sh configs/base_480p.yaml [--set key=value ...]
# Every worker runs `omnidirector train`; JAX finds the other hosts itself (TPU_WORKER_HOSTNAMES, set on TPU VMs),
# each host reads its own share of the data, process 0 logs and writes metrics. The repository must be checked out
# at $REPO on every worker with `pip install -e ".[tpu]"` done once (the setup line below does it).
set -euo pipefail
CONFIG=${1:?usage: launch/tpu_vm.sh CONFIG [--set key=value ...]}; shift
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${WORKDIR:?set WORKDIR}" "${DATA:?set DATA}"
REPO=${REPO:-\$HOME/omnidirector-jax}
SETUP=${SETUP:-0}
if [ "$SETUP" = 1 ]; then
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
    "cd $REPO && python3 -m venv .venv && .venv/bin/pip install -q -e '.[tpu]'"
fi
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone "$ZONE" --worker=all --command \
  "cd $REPO && .venv/bin/omnidirector train --config $CONFIG --workdir $WORKDIR --set data.dir=$DATA $* \
   2>&1 | tee -a /tmp/omnidirector-train.log"
