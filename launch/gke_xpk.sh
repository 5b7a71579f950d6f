#!/usr/bin/env bash
# Train on a GKE TPU cluster with XPK (github.com/AI-Hypercomputer/xpk): one workload, every host of every slice.
#   CLUSTER=my-cluster IMAGE=us-docker.pkg.dev/proj/repo/omnidirector:latest WORKDIR=gs://b/runs/r1 \
#     DATA=gs://b/datasets/clips bash launch/gke_xpk.sh configs/base_480p.yaml v5p-256 [NUM_SLICES]
# The image is this repository with `pip install -e ".[tpu]"`; XPK sets the TPU environment on every pod, so
# `jax.distributed.initialize()` finds the hosts as on a TPU VM. Preemption sends SIGTERM: the run saves a
# checkpoint and exits, and the restarted workload resumes from WORKDIR.
set -euo pipefail
CONFIG=${1:?usage: launch/gke_xpk.sh CONFIG TPU_TYPE [NUM_SLICES]}
TPU_TYPE=${2:?usage: launch/gke_xpk.sh CONFIG TPU_TYPE [NUM_SLICES]}
SLICES=${3:-1}
: "${CLUSTER:?set CLUSTER}" "${IMAGE:?set IMAGE}" "${WORKDIR:?set WORKDIR}" "${DATA:?set DATA}"
NAME=${WORKLOAD:-omni-$(date +%m%d-%H%M)}
xpk workload create --cluster "$CLUSTER" --workload "$NAME" --tpu-type "$TPU_TYPE" --num-slices "$SLICES" \
  --docker-image "$IMAGE" --max-restarts 10 \
  --command "omnidirector train --config $CONFIG --workdir $WORKDIR/$NAME --set data.dir=$DATA"
