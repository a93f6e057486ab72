#!/usr/bin/env bash
# Run a training job on every worker of a Cloud TPU VM pod.
#
#   ./launch_tpu.sh [--dry-run] compile ARGS…     # here, before create: python -m trainer.compile ARGS… for
#                                                 # ACCELERATOR_TYPE's topology (does the step fit its HBM?)
#   ./launch_tpu.sh [--dry-run] create            # create the TPU VM pod
#   ./launch_tpu.sh [--dry-run] setup             # copy this checkout to every worker, venv + pip install '.[tpu]'
#   ./launch_tpu.sh [--dry-run] run FAMILY ARGS…  # python -m FAMILY.train ARGS… on all workers, in the background
#   ./launch_tpu.sh [--dry-run] stop              # kill the run by the PID file it wrote
#   ./launch_tpu.sh [--dry-run] delete            # delete the pod
#
# Example:
#   ACCELERATOR_TYPE=v4-32 ./launch_tpu.sh compile --gin_file=mulan/ast.gin --gin.BATCH_SIZE=1024
#   TPU_NAME=n2m-v4-32 ZONE=us-central2-b ACCELERATOR_TYPE=v4-32 ./launch_tpu.sh create
#   ./launch_tpu.sh setup
#   ./launch_tpu.sh run trainer --gin_file=toy/tiny_cpu.gin --model_dir=gs://BUCKET/toy
#   ./launch_tpu.sh run mulan --gin_file=mulan/ast.gin --model_dir=gs://BUCKET/mulan_ast
#
# Settings (environment): TPU_NAME, ZONE, PROJECT (default: gcloud's), ACCELERATOR_TYPE
# (compile, create), PYTHON (compile; default .venv/bin/python, with the '[tpu]' extra),
# RUNTIME_VERSION (create; default tpu-ubuntu2204-base), REMOTE_DIR (default ~/noise2music-jax),
# GIT_REF (setup: check out this ref from GIT_URL instead of copying).
# No JAX_* variables are needed on TPU VMs: jax.distributed.initialize() discovers the pod.
set -euo pipefail

DRY_RUN=0
if [ "${1:-}" = "--dry-run" ]; then DRY_RUN=1; shift; fi
cmd="${1:-}"; shift || true

TPU_NAME="${TPU_NAME:-n2m-tpu}"
ZONE="${ZONE:-us-central2-b}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-8}"
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-noise2music-jax}"
PID_FILE="$REMOTE_DIR/run.pid"
LOG_FILE="$REMOTE_DIR/run.log"
PROJECT_FLAG=()
[ -n "${PROJECT:-}" ] && PROJECT_FLAG=(--project="$PROJECT")

quote() {  # Shell-quote an argument only where needed, so dry runs stay readable.
  if [[ "$1" =~ ^[A-Za-z0-9_./=:@,+%-]+$ ]]; then printf '%s' "$1"
  else printf "'%s'" "${1//\'/\'\\\'\'}"; fi
}
run() {
  if [ "$DRY_RUN" = 1 ]; then
    local a out=(); for a in "$@"; do out+=("$(quote "$a")"); done; echo "${out[*]}"
  else "$@"; fi
}
on_all() {  # on_all "remote shell command"
  run gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all --command="$1"
}

case "$cmd" in
  compile)
    run "${PYTHON:-.venv/bin/python}" -m trainer.compile --accelerator_type="$ACCELERATOR_TYPE" "$@"
    ;;
  create)
    run gcloud compute tpus tpu-vm create "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" \
      --accelerator-type="$ACCELERATOR_TYPE" --version="$RUNTIME_VERSION"
    ;;
  setup)
    if [ -n "${GIT_REF:-}" ]; then
      on_all "rm -rf $REMOTE_DIR && git clone ${GIT_URL:?set GIT_URL} $REMOTE_DIR && cd $REMOTE_DIR && git checkout $GIT_REF"
    else
      archive="$(mktemp -d)/n2m.tar.gz"
      run git archive --format=tar.gz -o "$archive" HEAD
      run gcloud compute tpus tpu-vm scp "$archive" "$TPU_NAME:n2m.tar.gz" --zone="$ZONE" "${PROJECT_FLAG[@]}" --worker=all
      on_all "rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar -xzf n2m.tar.gz -C $REMOTE_DIR"
    fi
    on_all "cd $REMOTE_DIR && python3 -m venv .venv && .venv/bin/pip install -q --upgrade pip && .venv/bin/pip install -q -e '.[tpu]'"
    ;;
  run)
    family="${1:?usage: launch_tpu.sh run FAMILY [flags...]}"; shift
    case "$family" in trainer) module=trainer.main ;; *) module="$family.train" ;; esac
    args=""; for a in "$@"; do args+="$(quote "$a") "; done
    on_all "cd $REMOTE_DIR && nohup .venv/bin/python -m $module $args > run.log 2>&1 & echo \$! > run.pid; echo started \$(cat run.pid) on \$(hostname); true"
    echo "logs: gcloud compute tpus tpu-vm ssh $TPU_NAME --zone=$ZONE --worker=0 --command='tail -f $LOG_FILE'"
    ;;
  stop)
    on_all "if [ -f $PID_FILE ]; then kill -TERM \$(cat $PID_FILE) 2>/dev/null || true; rm -f $PID_FILE; fi"
    ;;
  delete)
    run gcloud compute tpus tpu-vm delete "$TPU_NAME" --zone="$ZONE" "${PROJECT_FLAG[@]}" --quiet
    ;;
  *)
    sed -n '2,24p' "$0"; exit 2 ;;
esac
