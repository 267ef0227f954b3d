"""Evaluate a samples file against a benchmark: gate → execute → metrics.

Everything that can be wrong with the inputs or the machine is checked before the first
sample is compiled: the benchmark loads, the samples file parses and matches it, the toolchain
exists, and the sandbox really confines a compile and a run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import structlog
from tqdm import tqdm

from tasks import metrics as metrics_lib
from tasks.artifacts import identity_hash
from tasks.config import ExecutorConfig, PolicyChoice
from tasks.evaluate import SandboxPool, evaluate_frame, execution_identity
from tasks.problems import ProblemSet, default_cache_dir, load_benchmark
from tasks.samples import check_against_problems, read_samples
from tasks.toolchain import Toolchain, find_toolchain
from tasks.validity import gate_frame, run_gate

log = structlog.get_logger(__name__)

DEFAULT_KS = (1, 10, 100)


def progress_bar(total: int, label: str, enabled: bool = True):
    # disable=None: a bar on a terminal only, no carriage-return clutter in logs and CI
    return tqdm(total=total, desc=label, unit="sample", disable=None if enabled else True, leave=False)


def prepare(config: ExecutorConfig) -> tuple[Toolchain, SandboxPool]:
    """Toolchain and sandboxes, proven to work before anything expensive."""
    toolchain = find_toolchain()
    pool = SandboxPool(config, toolchain)
    pool.self_check()
    return toolchain, pool


def validity_table(
    problem_set: ProblemSet,
    config: ExecutorConfig,
    pool: SandboxPool,
    toolchain: Toolchain,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """The gate's verdict per task, cached on disk by benchmark hash + executor identity."""
    identity = {
        "problems": problem_set.content_hash,
        **execution_identity(config, toolchain, pool.identity()),
    }
    cache = Path(cache_dir or default_cache_dir()) / "gate" / f"{identity_hash(identity)}.parquet"
    if cache.exists():
        try:
            return pd.read_parquet(cache)
        except Exception:  # a torn cache file is recomputed, never trusted
            log.warning("gate_cache_unreadable", path=str(cache))
    with progress_bar(len(problem_set.problems), "validity gate", show_progress) as bar:
        results = run_gate(list(problem_set.problems), config, pool, progress=lambda: bar.update())
    frame = gate_frame(results)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    frame.to_parquet(tmp)
    tmp.replace(cache)
    return frame


def evaluate_samples_file(
    samples_path: Path,
    benchmark: str,
    out_dir: Path,
    config: ExecutorConfig,
    policy: PolicyChoice = PolicyChoice.BOTH,
    ks: tuple[int, ...] | None = None,
    include_invalid: bool = False,
    only_sampled_tasks: bool = False,
    show_progress: bool = True,
) -> dict:
    """Write `results.parquet` and `metrics.json` into `out_dir`; return the metrics."""
    problem_set = load_benchmark(benchmark, edition=config.edition)
    samples = read_samples(samples_path)
    problems = problem_set.by_id()
    n = check_against_problems(samples, set(problems), allow_missing_tasks=only_sampled_tasks)
    if ks is None:  # default: the usual k values that this n supports
        ks = tuple(k for k in DEFAULT_KS if k <= n)
    too_big = [k for k in ks if k > n]
    if too_big:
        raise metrics_lib.MetricsError(f"pass@k needs k <= n = {n} samples per task; got k = {too_big}")
    toolchain, pool = prepare(config)

    gate = validity_table(problem_set, config, pool, toolchain, show_progress=show_progress)
    with progress_bar(len(samples), "evaluate", show_progress) as bar:
        results = evaluate_frame(
            samples, problems, policy.modes(), config, pool, toolchain, progress=lambda: bar.update()
        )
    results = results.merge(gate[["task_id", "validity", "validity_reason"]], on="task_id", how="left")
    if "model" not in results.columns:
        results["model"] = samples_path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    results.to_parquet(out_dir / "results.parquet.tmp")
    (out_dir / "results.parquet.tmp").replace(out_dir / "results.parquet")
    metrics = metrics_lib.summarize(
        results, ks=ks, include_invalid=include_invalid, expected_task_ids=set(samples["task_id"])
    )
    metrics.setdefault("meta", {}).update(
        {
            "benchmark": problem_set.name,
            "benchmark_source": problem_set.source,
            "problems_hash": problem_set.content_hash,
            "protocol": problem_set.protocol.value,
            "samples_file": str(samples_path),
            **execution_identity(config, toolchain, pool.identity()),
        }
    )
    tmp = out_dir / "metrics.json.tmp"
    tmp.write_text(json.dumps(metrics, indent=2, sort_keys=True))
    tmp.replace(out_dir / "metrics.json")
    return metrics
