#!/usr/bin/env bash
# README command 1: set up, then run the main job, `ferrisbench benchmark`.
# Without a GPU it runs the whole DAG on the embedded defaults (the `reference` source on
# HumanEval-Rust: the harness's self-check) and says that no model was benchmarked and how to.
# With a GPU (nvidia-smi lists one) and no --config given, it benchmarks the models of
# configs/nightly.yaml. Extra arguments go to `ferrisbench benchmark` (e.g. --config FILE --out DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
args=("$@")
if [[ " $* " != *" --config "* ]] && command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
    echo "GPU found: benchmarking the models of configs/nightly.yaml"
    args=(--config configs/nightly.yaml "${args[@]}")
fi
exec .venv/bin/ferrisbench benchmark "${args[@]}"
