#!/usr/bin/env bash
# The test command (README command 2, and what .ci/run calls): set up, then run the suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash infra/setup.sh
export PREFECT_SERVER_ANALYTICS_ENABLED=false
exec .venv/bin/python -m pytest -q "$@"
