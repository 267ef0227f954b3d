#!/usr/bin/env bash
# README command 1: set up, then run the main job on its embedded defaults.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/python -m flows.selfcheck "$@"
