"""The `generate` flow: samples for one model and its adapters, as resumable parquet shards.

Thin over `tasks.generation`: everything is resolved and checked first (`prepare_run`: model
paths, adapter ranks, prompt lengths, imported files), then the run directory is claimed (one
process, one run identity), then each model's shards run as Prefect tasks, one at a time —
the engine is one process that batches within a shard, so shards in parallel would only queue.
Finished shards are skipped on a rerun; the vLLM engine is started only if a shard is missing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from tasks.config import GenerationConfig
from tasks.generation.stage import (
    PreparedRun,
    ShardPlan,
    generate_shard,
    prepare_run,
    run_identity,
    run_source,
    write_combined_samples,
)
from tasks.problems import load_benchmark
from tasks.rundir import RunDirLock, ensure_run_identity

log = structlog.get_logger(__name__)


@task(cache_policy=NO_CACHE, task_run_name="generate {label} shard {index}")
def generate_shard_task(prepared: PreparedRun, label: str, index: int) -> str:
    """One shard: `shard_tasks` requests of n samples each, written atomically; returns its path."""
    source = next(s for s in prepared.sources if s.label == label)
    plan: ShardPlan = prepared.plans[label][index]
    generate_shard(source, plan, prepared.problems, prepared.sampling, prepared.prompt_hashes[label])
    return str(plan.path)


# Prepared runs handed to the flow by key: as a flow parameter every prompt would be sent to the
# Prefect API, which refuses parameters over 512 KiB (the full HumanEval-Rust is ~530 KB).
_PREPARED: dict[str, PreparedRun] = {}
# Shard hooks, by the same key and for the same reason (a callable is no flow parameter either).
_ON_SHARD: dict[str, Callable[[ShardPlan, bool], None]] = {}


@flow(name="generate")
def generate_flow(run_dir: str, models: list[str]) -> dict:
    """Every model's missing shards, one Prefect task per shard; then the combined samples."""
    prepared = _PREPARED[run_dir]
    on_shard = _ON_SHARD.get(run_dir)
    summary = []
    for source in prepared.sources:
        counts = run_source(
            source,
            prepared.plans[source.label],
            prepared.sampling,
            prepared.config.out,
            run_shard=lambda plan, label=source.label: generate_shard_task(prepared, label, plan.index),
            retry_failed=prepared.config.retry_failed,
            on_shard=on_shard,
        )
        log.info("model_samples_complete", **counts)
        summary.append(counts)
    combined = write_combined_samples(prepared.config.out, [s.label for s in prepared.sources])
    return {"models": summary, "samples": str(combined)}


def run_generation(config: GenerationConfig, on_shard: Callable[[ShardPlan, bool], None] | None = None) -> dict:
    """Check everything, claim the output directory, generate (what the CLI calls).

    `on_shard(plan, generated)` is called after each shard is finished (see `run_source`)."""
    problem_set = load_benchmark(config.benchmark)
    prepared = prepare_run(config, problem_set)  # bad input fails here: nothing touched yet
    try:
        out = Path(config.out)
        with RunDirLock(out):
            ensure_run_identity(out, run_identity(prepared.config, problem_set))
            labels = [s.label for s in prepared.sources]
            _PREPARED[str(out)] = prepared
            if on_shard is not None:
                _ON_SHARD[str(out)] = on_shard
            try:
                flow_run = generate_flow.with_options(flow_run_name=f"generate {', '.join(labels)}")
                return flow_run(str(out), labels)
            finally:
                _PREPARED.pop(str(out), None)
                _ON_SHARD.pop(str(out), None)
    finally:
        prepared.close()
