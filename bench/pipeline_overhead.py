"""What the pipeline (Prefect flows, shards, parquet, manifests) costs on top of the executor.

Prints, for TASKS × PER_TASK samples of the realistic mix (bench/mix.py, every sample a distinct
program) of HumanEval-Rust in both policy modes:
  - the one-time start of a Prefect API server (`prefect server start`), reported on its own;
  - baseline: loading the benchmark and the samples, the sandbox pool and its self-check, the
    validity gate and `evaluate_frame` over all samples, in this process, no Prefect;
  - pipeline: `run_evaluation` (the CLI's path) on a fresh run directory, same samples;
    overhead = pipeline − baseline, as a share of the pipeline's wall time (target ≤ 5%);
  - resume of the finished run: `ferrisbench evaluate …` again as a new process (target ≤ 15 s,
    zero compiles);
  - peak RSS (VmHWM) of a whole run as it grows (default 1,800 → 36,000 samples), each size in its
    own process, on a dedup-heavy mix (4 distinct programs per task, repeated) so the size of the
    data, not the compiling, is what grows (target: flat, ≤ 1 GB).
Each phase has its own empty verdict cache and gate cache, so nothing is reused between phases.

    .venv/bin/python bench/pipeline_overhead.py [--per-task 100] [--rss-sizes 1800,9000,36000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def start_prefect_server(home: Path) -> tuple[subprocess.Popen, str, float]:
    import socket
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    started = time.monotonic()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**os.environ, "PREFECT_HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() - started > 180:
                raise SystemExit("prefect server did not start")
            time.sleep(0.2)
    return server, f"http://127.0.0.1:{port}/api", time.monotonic() - started


def fresh_cache(root: Path, name: str) -> Path:
    """An empty FERRISBENCH_CACHE that still has the pinned benchmark wheel (no download)."""
    from tasks.problems import default_cache_dir

    cache = root / name
    wheels = default_cache_dir() / "wheels"
    if wheels.is_dir():
        shutil.copytree(wheels, cache / "wheels")
    return cache


def write_samples(path: Path, per_task: int, distinct_per_task: int | None = None) -> int:
    """per_task samples for every task; with distinct_per_task, only that many distinct programs each."""
    from bench.mix import make_mix
    from tasks.problems import load_benchmark

    problems = list(load_benchmark("humaneval-rust").problems)
    unique = distinct_per_task or per_task
    mix = make_mix(problems, len(problems) * unique, seed=7, per_task=unique)
    by_task: dict[str, list] = {}
    for sample in mix:
        by_task.setdefault(sample.task_id, []).append(sample)
    with open(path, "w", encoding="utf-8") as out:
        for task_id, samples in by_task.items():
            for index in range(per_task):
                sample = samples[index % unique]
                out.write(json.dumps({"task_id": task_id, "completion": sample.completion, "model": "mix"}) + "\n")
    return len(problems) * per_task


def run_config(samples: Path, out: Path, cache: Path, workers: int):
    from tasks.config import ExecutorConfig, RunConfig

    executor = ExecutorConfig(sandbox="bubblewrap", workers=workers, verdict_cache_dir=cache / "verdicts")
    return RunConfig(samples=samples, benchmark="humaneval-rust", out=out, executor=executor, ks=(1,),
                     show_progress=False)


def baseline_seconds(samples_path: Path, cache: Path, workers: int) -> float:
    """Gate + evaluate_frame over every sample in this process: the executor alone."""
    from flows.gate import validity_table
    from tasks.evaluate import SandboxPool, evaluate_frame
    from tasks.problems import load_benchmark
    from tasks.samples import read_samples
    from tasks.toolchain import find_toolchain

    config = run_config(samples_path, cache / "unused", cache, workers).executor
    started = time.monotonic()  # the set-up below is paid by the pipeline too: not its overhead
    problem_set = load_benchmark("humaneval-rust")
    samples = read_samples(samples_path)
    toolchain = find_toolchain()
    with SandboxPool(config, toolchain) as pool:
        pool.self_check()
        validity_table(problem_set, config, pool, toolchain, cache_dir=cache, show_progress=False)
        results = evaluate_frame(samples, problem_set.by_id(), ["no_policy", "policy"], config, pool, toolchain)
        elapsed = time.monotonic() - started
    assert len(results) == 2 * len(samples)
    return elapsed


def child_rss(samples: str, out: str, cache: str, workers: int) -> None:
    """Run one whole evaluation here and print this process's peak RSS (kB) as JSON."""
    from flows.evaluate import run_evaluation

    started = time.monotonic()
    outcome = run_evaluation(run_config(Path(samples), Path(out), Path(cache), workers))
    status = Path("/proc/self/status").read_text()
    peak_kb = int(next(line for line in status.splitlines() if line.startswith("VmHWM")).split()[1])
    print(json.dumps({"peak_kb": peak_kb, "seconds": time.monotonic() - started, "attempt": outcome["attempt"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-task", type=int, default=100)
    parser.add_argument("--rss-sizes", default="1800,9000,36000", help="total samples per RSS run ('' to skip)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--rss-only", action="store_true", help="skip the overhead and resume figures")
    parser.add_argument("--child-rss", nargs=3, metavar=("SAMPLES", "OUT", "CACHE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    from tasks.logs import configure

    configure("warning")
    if args.child_rss:
        os.environ["FERRISBENCH_CACHE"] = args.child_rss[2]
        child_rss(*args.child_rss, args.workers)
        return

    root = Path(tempfile.mkdtemp(prefix="ferrisbench-bench-pipeline-", dir="/var/tmp"))
    server, url, server_s = start_prefect_server(root / "prefect-home")
    os.environ.update({"PREFECT_API_URL": url, "PREFECT_HOME": str(root / "prefect-home")})
    try:
        print(f"prefect API server start (one-time): {server_s:.1f} s")
        if not args.rss_only:
            overhead_and_resume(root, args)
        rss_growth(root, args)
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(root, ignore_errors=True)


def overhead_and_resume(root: Path, args: argparse.Namespace) -> None:
    samples = root / "samples.jsonl"
    count = write_samples(samples, args.per_task)
    print(f"samples: {count} ({count // args.per_task} tasks × {args.per_task}), both policy modes, "
          f"{args.workers} workers, bubblewrap")

    base_cache = fresh_cache(root, "cache-baseline")
    os.environ["FERRISBENCH_CACHE"] = str(base_cache)
    executor_s = baseline_seconds(samples, base_cache, args.workers)
    print(f"baseline (set-up + gate + evaluate_frame, no Prefect, no parquet): {executor_s:.1f} s")

    pipe_cache = fresh_cache(root, "cache-pipeline")
    os.environ["FERRISBENCH_CACHE"] = str(pipe_cache)
    from flows.evaluate import run_evaluation

    run_dir = root / "run"
    started = time.monotonic()
    outcome = run_evaluation(run_config(samples, run_dir, pipe_cache, args.workers))
    pipeline_s = time.monotonic() - started
    overhead = pipeline_s - executor_s
    print(f"pipeline (run_evaluation, {outcome['attempt']['shards_total']} shards): {pipeline_s:.1f} s")
    print(f"prefect + parquet + plan overhead: {overhead:.1f} s = {100 * overhead / pipeline_s:.1f}% of the "
          f"pipeline's wall time (target <= 5%); throughput {count / pipeline_s:.0f} samples/s")

    command = [sys.executable, "-m", "flows.cli", "evaluate", str(samples), "--benchmark", "humaneval-rust",
               "--out", str(run_dir), "--k", "1", "--workers", str(args.workers), "--no-progress"]
    started = time.monotonic()
    done = subprocess.run(command, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    resume_s = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    last = json.loads((run_dir / "attempts.jsonl").read_text().splitlines()[-1])
    print(f"resume of the finished run (new process, `ferrisbench evaluate` again): {resume_s:.1f} s, "
          f"{last['shards_computed']} shards computed, {last['samples_judged']} samples judged (target <= 15 s, 0)")


def rss_growth(root: Path, args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.rss_sizes.split(",") if s.strip()]
    rss_cache = fresh_cache(root, "cache-rss")
    for size in sizes:
        path = root / f"rss-{size}.jsonl"
        write_samples(path, size // 180, distinct_per_task=4)
        child = subprocess.run(
            [sys.executable, __file__, "--workers", str(args.workers), "--child-rss", str(path),
             str(root / f"rss-run-{size}"), str(rss_cache)],
            env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        )
        if child.returncode != 0:
            raise SystemExit(child.stderr[-2000:])
        figures = json.loads(child.stdout.strip().splitlines()[-1])
        print(f"peak RSS, {size} samples (4 distinct per task): {figures['peak_kb'] / 1024:.0f} MiB "
              f"in {figures['seconds']:.0f} s, {figures['attempt']['shards_total']} shards")


if __name__ == "__main__":
    main()
