#!/usr/bin/env bash
# Data-parallel training on several machines: run this same command on every node.
#
#   NNODES=2 NPROC_PER_NODE=4 RDZV_ENDPOINT=node0.example:29400 \
#       scripts/train_multinode.sh --config configs/lstm.yaml [--set train.epochs=5 ...]
#
# RDZV_ENDPOINT is host:port of any one node that all nodes can reach (the rendezvous server
# runs there); nodes join in any order and ranks are assigned by torchrun. RDZV_ID names the job,
# so two jobs sharing an endpoint do not mix. Everything after the variables goes to
# `rnnkit train`. Every node needs the data (same paths) and its own cache; only global rank 0
# writes the run folder. To continue a run (`--resume RUN_DIR`) every node reads that folder, so keep
# it on storage all nodes can see (NFS, ...).
set -euo pipefail

: "${RDZV_ENDPOINT:?set RDZV_ENDPOINT=host:port of one node reachable by all nodes}"
NNODES="${NNODES:-2}"
NPROC_PER_NODE="${NPROC_PER_NODE:-gpu}"   # "gpu" = one process per visible GPU
RDZV_ID="${RDZV_ID:-rnnkit}"
PYTHON="${PYTHON:-python}"

exec "$PYTHON" -m torch.distributed.run \
    --nnodes="$NNODES" \
    --nproc_per_node="$NPROC_PER_NODE" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$RDZV_ENDPOINT" \
    --rdzv_id="$RDZV_ID" \
    -m rnnkit train "$@"
