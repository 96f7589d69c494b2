#!/usr/bin/env bash
# One prepared GPU check under Keras's JAX backend, at most 5 minutes, wheels included:
#   bench/gpu_check.sh [--wheels DIR] [--tiny] [--out DIR] [--weights W --x X.npy]
# --wheels DIR installs requirements.txt and requirements-gpu.txt from carried wheels
# (pip download -d DIR -r requirements.txt -r requirements-gpu.txt on a machine with the
# registry; the GPU host needs no network). --tiny runs it on the CPU at a tiny size (make test).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --wheels) wheels=$2; shift 2 ;;
    --tiny) tiny=1; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
if [ -n "${wheels:-}" ]; then
  start=$(date +%s)
  "$PY" -m pip install -q --no-index --find-links "$wheels" \
      -r requirements.txt -r requirements-gpu.txt
  echo "installed the carried wheels in $(( $(date +%s) - start )) s" >&2
fi
export KERAS_BACKEND=jax TF_CPP_MIN_LOG_LEVEL=3
if [ -n "${tiny:-}" ]; then
  # On the CPU at a tiny size XLA's compile dominates: trade its optimisation for compile time.
  export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
  export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
fi
exec timeout 300 "$PY" bench/gpu_check.py "${args[@]}"
