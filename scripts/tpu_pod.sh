#!/usr/bin/env bash
# Train on a Cloud TPU VM pod slice: every host runs the same `musicvae train`.
#
#   scripts/tpu_pod.sh create     # make the TPU VM slice
#   scripts/tpu_pod.sh install    # install jax[tpu] and this repository on every host
#   scripts/tpu_pod.sh data       # build the dataset on every host (or copy it from GCS)
#   scripts/tpu_pod.sh train      # start training on all hosts at once
#   scripts/tpu_pod.sh resume     # after a preemption: continue from the latest checkpoint
#   scripts/tpu_pod.sh delete
#
# jax.distributed.initialize() auto-detects the slice (mesh.distributed=true), each
# host reads its own shard of the records, only process 0 writes logs, and orbax
# saves checkpoints collectively. WORKDIR must be a filesystem path shared by all hosts,
# e.g. a bucket mounted with gcsfuse at /gcs/BUCKET (gs:// URLs are not supported yet).
set -euo pipefail

NAME=${NAME:-musicvae-pod}
ZONE=${ZONE:-us-central2-b}
TYPE=${TYPE:-v4-32}                      # 4 hosts x 4 chips
VERSION=${VERSION:-tpu-ubuntu2204-base}
REPO=${REPO:-https://github.com/OWNER/jax-musicvae.git}
CONFIG=${CONFIG:-hierdec_mel_16bar}
DATA=${DATA:-/tmp/lakh16}                # local copy on every host
SOURCE=${SOURCE:-corpus:folk}
WORKDIR=${WORKDIR:-/gcs/BUCKET/runs/hierdec_mel_16bar}
EXTRA=${EXTRA:-}                         # e.g. "--set mesh.model=4 --set mesh.shard_params=true"

on_all() { gcloud compute tpus tpu-vm ssh "$NAME" --zone "$ZONE" --worker=all --command "$1"; }

case "${1:-}" in
  create)
    gcloud compute tpus tpu-vm create "$NAME" --zone "$ZONE" \
      --accelerator-type "$TYPE" --version "$VERSION" ;;
  install)
    on_all "pip install -U 'jax[tpu]' && git clone $REPO jax-musicvae && pip install -e jax-musicvae" ;;
  data)
    on_all "cd jax-musicvae && musicvae data build $SOURCE --out $DATA --representation melody90 --bars 16" ;;
  train | resume)
    flag=""; [[ $1 == resume ]] && flag="--resume"
    on_all "cd jax-musicvae && musicvae train --config $CONFIG --data $DATA --workdir $WORKDIR \
      --set mesh.distributed=true --set logging.progress_bar=false $EXTRA $flag" ;;
  delete)
    gcloud compute tpus tpu-vm delete "$NAME" --zone "$ZONE" --quiet ;;
  *)
    sed -n '2,14p' "$0"; exit 2 ;;
esac
