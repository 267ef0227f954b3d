"""The benchmark flow's generate stage: every configured model, with the evaluation overlapped.

Each model (and its adapters) is a `ferrisbench generate` run in `DIR/generation/<model>/`;
engine-backed models hold the Prefect global concurrency limit `gpu` meanwhile. Each shard this
attempt generates is judged at once in the background (`tasks.prejudge`) to fill the verdict
cache, so the CPU works while the GPU generates and the evaluate stage finds those programs judged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
from prefect import get_run_logger

from flows.generate import run_generation
from tasks.config import BenchmarkConfig, GenerationConfig, ModelEntry
from tasks.generation.sources import label_from, split_name
from tasks.generation.stage import ShardPlan
from tasks.prejudge import Prejudger
from tasks.problems import ProblemSet

log = structlog.get_logger(__name__)

NO_ENGINE_PREFIXES = ("reference", "import:", "openai:")  # sources that need no local GPU engine


def generate_models(config: BenchmarkConfig, problem_set: ProblemSet, run_dir: Path) -> tuple[list[dict], dict]:
    """Every configured model in order, and the overlap's summary: meanwhile, each shard this attempt
    generates is judged in the background (tasks.prejudge) to fill the verdict cache, so the CPU works
    while the GPU generates and the evaluate stage finds those programs judged. Reused shards are
    left to the evaluate stage (a resume would otherwise judge again what it may already have)."""
    prejudger = prejudger_for(config, problem_set)
    if prejudger is None:
        return [generate_stage(config, entry, run_dir) for entry in config.models], {"enabled": False}

    def on_shard(plan, generated: bool) -> None:
        if generated:
            prejudger.submit(plan.path)

    with prejudger:  # waits for the queue to drain; on an error, only for the shard in progress
        models = [generate_stage(config, entry, run_dir, on_shard) for entry in config.models]
    return models, {"enabled": True, **prejudger.close()}


def prejudger_for(config: BenchmarkConfig, problem_set: ProblemSet) -> Prejudger | None:
    """The background judge of generated shards, or None when the configuration turns it off."""
    if not config.overlap_evaluation:
        log.info("overlap_disabled", reason="overlap_evaluation is false")
        return None
    if not config.executor.verdict_cache:
        log.info("overlap_disabled", reason="executor.verdict_cache is off, and the overlap only fills that cache")
        return None
    run_logger = get_run_logger()

    def tell(shard: dict) -> None:
        name = "/".join(Path(shard["path"]).parts[-2:])  # <model>/shard-00003.parquet
        if "error" in shard:
            run_logger.warning("pre-judging %s failed, the evaluate stage judges it: %s", name, shard["error"])
        else:
            run_logger.info("pre-judged %s: %d samples, %d executed, %d from the verdict cache, %.1f s", name,
                            shard["samples"], shard["executed"], shard["cached"], shard["finished"] - shard["started"])

    return Prejudger(problem_set.by_id(), config.executor, workers=config.overlap_workers, on_judged=tell)


def generate_stage(config: BenchmarkConfig, entry: ModelEntry, run_dir: Path,
                   on_shard: Callable[[ShardPlan, bool], None] | None = None) -> dict:
    """One configured model and its adapters; an engine-backed model holds the GPU limit meanwhile."""
    name, spec = split_name(entry.model)
    directory = run_dir / "generation" / (name or label_from(spec))
    generation = config.generation_for(entry, directory)
    if spec.startswith(NO_ENGINE_PREFIXES) or not config.gpu_concurrency_limit:
        summary = generate_samples(generation, on_shard)
    else:
        from prefect.concurrency.sync import concurrency

        ensure_concurrency_limit(config.gpu_concurrency_limit)
        with concurrency(config.gpu_concurrency_limit, occupy=1, strict=True):
            summary = generate_samples(generation, on_shard)
    labels = [counts["model"] for counts in summary["models"]]
    return {"spec": entry.model, "adapters": list(entry.adapters), "labels": labels, "samples": summary["samples"],
            "benchmarked": not spec.startswith(("reference", "import:")), "reference": spec == "reference",
            "shards": summary["models"]}


def generate_samples(config: GenerationConfig, on_shard: Callable[[ShardPlan, bool], None] | None = None) -> dict:
    """The generate stage (a subflow): checks its inputs first, then resumes from its shards."""
    return run_generation(config, on_shard)


def ensure_concurrency_limit(name: str) -> None:
    """Create the global concurrency limit (1 slot) if this Prefect API lacks it: strict=True then holds."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
                log.info("concurrency_limit_created", name=name, limit=1)
            except ObjectAlreadyExists:
                pass
