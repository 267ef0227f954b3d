"""Execution throughput: the per-sample path, the batched path and the predecessor, same samples.

    .venv/bin/python bench/throughput.py [--samples 1184] [--seed 7] [--sandbox firejail]
        [--batch-size 128] [--hang-fraction 0.025] [--per-task 8] [--run-timeout 5] [--batch-deadline S]
        [--runs per_sample,batched,batched_bwrap,predecessor,hangs]

The default mix covers the whole benchmark once: 8 samples for each of HumanEval-Rust's 148
evaluable tasks (programs differ a lot in size between tasks, so a mix over fewer tasks measures
those tasks, not the benchmark).

Every run is its own process, started and timed from here (whole-process wall time: imports,
sandbox self-check and all), one after another on this machine. Printed per run: samples/s,
CPU seconds per sample (the run's whole process tree), the peak RSS of the Python process and of
the largest process under it; then the ratios, and the verdict agreement of the batched path
with the per-sample path (status, tests passed, error codes: must be identical) and of ours with
the predecessor's (pass/fail, by category of sample). Nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORK = ROOT / "bench" / ".work"
RUNS = ("per_sample", "batched", "batched_bwrap", "predecessor", "hangs")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    child = sub.add_parser("child", help="(internal) one measured run")
    child.add_argument("--samples-file", type=Path, required=True)
    child.add_argument("--out", type=Path, required=True)
    child.add_argument("--sandbox", required=True)
    child.add_argument("--batch-size", type=int, required=True)
    child.add_argument("--run-timeout", type=float, required=True)
    child.add_argument("--predecessor", action="store_true")
    child.add_argument("--workers", type=int, default=0)
    child.add_argument("--batch-deadline", type=float, default=0.0)
    for target in (parser,):
        target.add_argument("--samples", type=int, default=1184)
        target.add_argument("--seed", type=int, default=7)
        target.add_argument("--sandbox", default="firejail", choices=["firejail", "bubblewrap"])
        target.add_argument("--batch-size", type=int, default=128)
        target.add_argument("--run-timeout", type=float, default=5.0)
        target.add_argument("--hang-fraction", type=float, default=0.025)
        target.add_argument("--per-task", type=int, default=8, help="consecutive samples per task (as models write them)")
        target.add_argument("--workers", type=int, default=0, help="ferrisbench workers (default: cores)")
        target.add_argument("--batch-deadline", type=float, default=0.0,
                            help="a batched test run's deadline before it is rerun alone (default: the config's)")
        target.add_argument("--runs", default=",".join(RUNS))
    args = parser.parse_args()
    if args.command == "child":
        return run_child(args)
    return drive(args)


# ----------------------------------------------------------------------------- the driver


def drive(args: argparse.Namespace) -> int:
    from bench.mix import make_mix
    from tasks.problems import load_benchmark

    runs = [r for r in args.runs.split(",") if r]
    unknown = set(runs) - set(RUNS)
    if unknown:
        raise SystemExit(f"unknown runs {sorted(unknown)}; choose from {RUNS}")
    out = WORK / time.strftime("run-%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    problems = [p for p in load_benchmark("humaneval-rust").problems if not p.structural_problem]
    mix = make_mix(problems, args.samples, args.seed, per_task=args.per_task)
    samples = _write_samples(out / "samples.jsonl", mix)
    print(f"mix: {len(mix)} samples, {args.per_task} per task over {len({s.task_id for s in mix})} tasks, "
          f"seed {args.seed}: "
          + ", ".join(f"{k} {v}" for k, v in Counter(s.kind for s in mix).most_common()))
    results: dict[str, dict] = {}
    plan = {
        "per_sample": (samples, args.sandbox, 1),
        "batched": (samples, args.sandbox, args.batch_size),
        "batched_bwrap": (samples, "bubblewrap", args.batch_size),
    }
    for name in runs:
        if name in plan:
            file, sandbox, batch = plan[name]
            results[name] = measure(name, file, out, sandbox, batch, args.run_timeout, len(mix), workers=args.workers,
                                    batch_deadline=args.batch_deadline)
        elif name == "predecessor":
            results[name] = measure(name, samples, out, "none", 1, args.run_timeout, len(mix), predecessor=True)
        elif name == "hangs":
            hang_mix = make_mix(problems, args.samples, args.seed, hang_fraction=args.hang_fraction,
                                per_task=args.per_task)
            hang_file = _write_samples(out / "samples-hangs.jsonl", hang_mix)
            hangs = sum(s.kind.startswith("hang") for s in hang_mix)
            print(f"hang mix: {hangs} hanging samples ({hangs / len(hang_mix):.1%}), run timeout {args.run_timeout:g} s")
            results[name] = measure(name, hang_file, out, args.sandbox, args.batch_size, args.run_timeout, len(hang_mix),
                                    workers=args.workers, batch_deadline=args.batch_deadline)
    report(results, mix, out)
    if "per_sample" in results:
        print_floor(results, mix, out)
    print(f"\nartifacts: {out}")
    return 0


def _write_samples(path: Path, mix) -> Path:
    path.write_text("".join(json.dumps({"task_id": s.task_id, "completion": s.completion, "kind": s.kind}) + "\n"
                            for s in mix))
    return path


def measure(name: str, samples: Path, out: Path, sandbox: str, batch: int, run_timeout: float, count: int,
            predecessor: bool = False, workers: int = 0, batch_deadline: float = 0.0) -> dict:
    command = [sys.executable, __file__, "child", "--samples-file", str(samples), "--out", str(out / name),
               "--sandbox", sandbox, "--batch-size", str(batch), "--run-timeout", str(run_timeout),
               "--workers", str(workers), "--batch-deadline", str(batch_deadline)]
    if predecessor:
        command.append("--predecessor")
    group = TreeAccounting(f"ferrisbench-bench-{os.getpid()}-{name}")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False, preexec_fn=group.join)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, peak = group.read_and_remove()
    if cpu is None:  # no cgroup accounting here: what the waited-for processes report
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    (out / f"{name}.log").write_text(done.stdout)
    if done.returncode != 0:
        print(done.stdout[-3000:])
        raise SystemExit(f"run {name} failed with exit code {done.returncode}")
    stats = json.loads((out / name / "stats.json").read_text())
    cores = os.cpu_count() or 1
    result = {"name": name, "sandbox": sandbox, "batch_size": batch, "samples": count, "wall_s": wall,
              "rate": count / wall, "cpu_s_per_sample": cpu / count, "capacity": cores * count / cpu,
              "tree_peak_mb": peak, **stats}
    print(f"{name:14} {sandbox:10} batch {batch:4}: {count} samples in {wall:7.1f} s = {result['rate']:7.1f}/s "
          f"(CPU-bound capacity on {cores} idle cores {result['capacity']:7.1f}/s), "
          f"{1000 * result['cpu_s_per_sample']:6.1f} ms CPU/sample, peak RSS: python {stats['python_rss_mb']:.0f} MB, "
          f"largest child {stats['largest_child_rss_mb']:.0f} MB"
          + (f", whole tree {peak:.0f} MB" if peak else "")
          + (f"; evaluation alone {count / stats['evaluate_s']:.1f}/s" if stats.get("evaluate_s") else ""))
    return result


class TreeAccounting:
    """CPU time and peak memory of a whole process tree, from cgroup v1 controllers (root only).

    rusage only counts processes their parents waited for, which sandboxes with their own pid
    namespace do not always do; a cgroup counts every process started inside it."""

    def __init__(self, name: str):
        self.dirs = {}
        for controller in ("cpuacct", "memory"):
            path = Path("/sys/fs/cgroup") / controller / name
            try:
                path.mkdir()
                self.dirs[controller] = path
            except OSError:
                pass

    def join(self) -> None:  # in the child, before exec
        for path in self.dirs.values():
            (path / "cgroup.procs").write_text(str(os.getpid()))

    def read_and_remove(self) -> tuple[float | None, float | None]:
        cpu = peak = None
        if "cpuacct" in self.dirs:
            cpu = int((self.dirs["cpuacct"] / "cpuacct.usage").read_text()) / 1e9
        if "memory" in self.dirs:
            peak = int((self.dirs["memory"] / "memory.max_usage_in_bytes").read_text()) / (1 << 20)
        for path in self.dirs.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:  # the last processes are still leaving
                    time.sleep(0.1)
        return cpu, peak


def report(results: dict[str, dict], mix, out: Path) -> None:
    import pandas as pd

    print("\n== ratios (whole-process samples/s)")
    batched = results.get("batched")
    for other in ("per_sample", "predecessor"):
        if batched and other in results:
            print(f"batched / {other}: {batched['rate'] / results[other]['rate']:.1f}x")
    if "batched_bwrap" in results and "per_sample" in results:
        print(f"batched (bubblewrap) / per_sample ({results['per_sample']['sandbox']}): "
              f"{results['batched_bwrap']['rate'] / results['per_sample']['rate']:.1f}x")
    kinds = pd.Series([s.kind for s in mix], name="kind")
    frames = {name: pd.read_parquet(out / name / "results.parquet") for name in results
              if name not in ("predecessor", "hangs")}
    reference = frames.get("per_sample")
    if reference is not None:
        print("\n== statuses of the per-sample path by kind of sample")
        print(pd.crosstab(kinds, reference["status"]).to_string())
    for name, frame in frames.items():
        if name == "per_sample" or reference is None:
            continue
        _agreement(name, frame, reference, kinds)
    if "predecessor" in results:
        ours = reference if reference is not None else next(iter(frames.values()), None)
        if ours is not None:
            _predecessor_agreement(out, ours, kinds, mix)


def print_floor(results: dict[str, dict], mix, out: Path) -> None:
    import pandas as pd

    from bench.floor import compiler_floor
    from tasks.problems import load_benchmark

    statuses = pd.read_parquet(out / "per_sample" / "results.parquet")["status"].tolist()
    problems = load_benchmark("humaneval-rust").by_id()
    floor = compiler_floor([{"task_id": s.task_id, "completion": s.completion} for s in mix], statuses, problems)
    print(f"\n== the compiler's floor (bench/floor.py): rustc alone builds the {floor['compiled']} programs that "
          f"compile in {floor['build_s']:.1f} s and type-checks {floor['checked']} others in {floor['check_s']:.1f} s "
          f"= {floor['per_sample_ms']:.1f} ms CPU per sample")
    for name, result in results.items():
        if name in ("per_sample", "batched", "batched_bwrap"):
            print(f"{name:14} {1000 * result['cpu_s_per_sample']:6.1f} ms CPU/sample = "
                  f"{1000 * result['cpu_s_per_sample'] / floor['per_sample_ms']:.1f}x the floor")


def _agreement(name: str, frame, reference, kinds) -> None:
    columns = ["status", "tests_passed", "error_codes"]
    left = frame[columns].astype(str)
    right = reference[columns].astype(str)
    differs = (left != right).any(axis=1)
    print(f"\n== verdicts {name} vs per_sample: {int((~differs).sum())} identical, {int(differs.sum())} differ")
    for index in list(differs[differs].index)[:20]:
        print(f"  #{index} {kinds[index]}: {left.loc[index].tolist()} vs {right.loc[index].tolist()}")
    diagnostics = (frame["diagnostic"] != reference["diagnostic"]) & ~differs
    print(f"   (diagnostic text differs in {int(diagnostics.sum())} of the identical verdicts: per-process "
          "sentinel names, thread ids, timings)")


def _predecessor_agreement(out: Path, ours, kinds, mix) -> None:
    import pandas as pd

    from bench.predecessor import read_results

    theirs = read_results(out / "samples.jsonl")
    order = sorted(range(len(mix)), key=lambda i: mix[i].task_id)  # its output: by task, stable
    passed = [False] * len(mix)
    category = [""] * len(mix)
    for position, index in enumerate(order):
        result = theirs[position]
        assert result["task_id"] == mix[index].task_id
        passed[index] = bool(result["passed"])
        category[index] = "passed" if result["passed"] else str(result.get("error_type"))
    ours_pass = ours["status"] == "passed"
    table = pd.DataFrame({"kind": kinds, "ours": ours["status"], "predecessor": category,
                          "agree": ours_pass.values == pd.Series(passed).values})
    print(f"\n== pass/fail, ours (per-sample path) vs predecessor: {int(table['agree'].sum())} agree, "
          f"{int((~table['agree']).sum())} differ")
    differ = table[~table["agree"]]
    if len(differ):
        print(differ.groupby(["kind", "ours", "predecessor"]).size().rename("samples").to_string())


# ----------------------------------------------------------------------------- one run


def run_child(args: argparse.Namespace) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    if args.predecessor:
        from bench import predecessor

        script = predecessor.ensure_venv(WORK)
        task_ids = {json.loads(line)["task_id"] for line in args.samples_file.read_text().splitlines()}
        problems = predecessor.problem_file(WORK, task_ids)
        done = subprocess.run(predecessor.command(script, args.samples_file, problems, os.cpu_count() or 1),
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            return done.returncode
        stats = {}
    else:
        stats = _run_ours(args)
    stats["python_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    stats["largest_child_rss_mb"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    (args.out / "stats.json").write_text(json.dumps(stats))
    return 0


def _run_ours(args: argparse.Namespace) -> dict:
    import pandas as pd

    from tasks.config import ExecutorConfig
    from tasks.evaluate import JudgeStats, SandboxPool, judge_records
    from tasks.logs import configure
    from tasks.problems import load_benchmark
    from tasks.toolchain import find_toolchain

    configure("warning")
    problems = load_benchmark("humaneval-rust").by_id()
    samples = pd.read_json(args.samples_file, lines=True)
    config = ExecutorConfig(sandbox=args.sandbox, batch_size=args.batch_size, run_timeout_s=args.run_timeout,
                            verdict_cache=False, **({"workers": args.workers} if args.workers else {}),
                            **({"batch_deadline_s": args.batch_deadline} if args.batch_deadline else {}))
    toolchain = find_toolchain()
    with SandboxPool(config, toolchain) as pool:
        pool.self_check()
        started = time.perf_counter()
        judge_stats = JudgeStats()
        judged = judge_records(samples.to_dict("records"), problems, config, pool, toolchain, stats=judge_stats)
        seconds = time.perf_counter() - started
    frame = pd.DataFrame([{**j.execution.verdict.to_row(), "verdict_source": j.verdict_source} for j in judged])
    frame["error_codes"] = frame["error_codes"].map(list)
    frame.to_parquet(args.out / "results.parquet")
    batch = judge_stats.batch
    return {"evaluate_s": seconds, "executed": judge_stats.executed, "duplicates": judge_stats.duplicates,
            "grouped": batch.grouped, "alone": batch.alone, "passes": batch.passes, "culprits": batch.culprits,
            "reruns": batch.reruns,
            "phase_seconds": batch.seconds, "alone_reasons": batch.reasons}


if __name__ == "__main__":
    sys.exit(main())
