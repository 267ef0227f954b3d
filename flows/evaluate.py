"""The evaluation flow: problems → validity gate → samples shards → evaluate shards → aggregate.

Everything that can be wrong with the inputs or the machine is checked before the first sample
is compiled (and before a Prefect API starts): the benchmark loads, the samples file parses and
matches it, the toolchain exists, the sandbox really confines a compile and a run, and the run
directory is free and belongs to this run. Every stage then writes its artifacts into the run
directory; rerunning the same command resumes, computing only what is not already there.
One Prefect task per shard (never per sample); tasks get and return paths and hashes, not data.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import structlog
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from flows import runtime, stopping
from flows.aggregate import aggregate_flow
from flows.gate import progress_bar, validity_table
from tasks.artifacts import read_valid_shard, write_shard
from tasks.config import ExecutorConfig, RunConfig
from tasks.evaluate import evaluate_frame, execution_identity
from tasks.problems import BenchmarkError, read_problems_parquet
from tasks.rundir import ensure_run_identity
from tasks.runplan import RunPlan, record_config
from tasks.sandbox import SandboxError
from tasks.shards import ShardOutcome, ShardSpec, StageInputs, evaluate_shard, record_attempt, write_samples_shards

log = structlog.get_logger(__name__)

VALIDITY_FORMAT = "ferrisbench.validity/1"
SHARD_RETRIES = 2
SHARD_RETRY_DELAYS_S = [5, 30]
# Only these are worth a retry: a full disk, a sandbox that failed to start, a lost connection.
# A compile error or a failing test is a verdict, never an exception; anything else is a bug.
INFRASTRUCTURE_ERRORS = (OSError, SandboxError, ConnectionError, TimeoutError)


class WorkerMismatch(RuntimeError):
    """A worker's toolchain or sandbox differs from the one the run was planned with."""


class ShardsFailed(RuntimeError):
    """Some shards failed after their retries; finished shards are kept for the next attempt."""


def is_infrastructure_failure(task_, task_run, state) -> bool:
    """Prefect retry condition: retry infrastructure failures only."""
    try:
        state.result()
    except INFRASTRUCTURE_ERRORS:
        return True
    except Exception:
        return False
    return False


def _shard_run_name(parameters: dict) -> str:
    spec: ShardSpec = parameters["spec"]
    modes: tuple[str, ...] = parameters["inputs"].modes
    return f"evaluate {spec.label} [{'+'.join(modes)}]"


# ---------------------------------------------------------------- stages


@task(name="problems", cache_policy=NO_CACHE)
def problems_stage(config: RunConfig) -> tuple[str, str]:
    """DIR/problems.parquet: the benchmark table the shard tasks read (path, content hash)."""
    plan = runtime.plan_for(config)
    path = plan.run_dir / "problems.parquet"
    expected = plan.problem_set.content_hash
    try:
        current = path.exists() and read_problems_parquet(path).content_hash == expected
    except BenchmarkError as error:  # torn or edited: rewritten from the source
        log.warning("problems_table_rewritten", path=str(path), reason=str(error))
        current = False
    if not current:
        plan.problem_set.write_parquet(path)
    return str(path), expected


@task(name="validity-gate", cache_policy=NO_CACHE)
def gate_stage(config: RunConfig) -> tuple[str, str]:
    """DIR/validity.parquet: every reference through the production executor (path, identity hash)."""
    plan = runtime.plan_for(config)
    path = plan.run_dir / "validity.parquet"
    identity = {"format": VALIDITY_FORMAT, "problems_hash": plan.problem_set.content_hash, "execution": plan.execution}
    info = read_valid_shard(path, identity)
    if info is None:
        toolchain, pool = runtime.executor_for(config.executor)
        table = validity_table(plan.problem_set, config.executor, pool, toolchain, show_progress=config.show_progress)
        info = write_shard(table, path, identity)
    return str(path), info.identity_hash


@task(name="samples", cache_policy=NO_CACHE)
def samples_stage(config: RunConfig) -> list[ShardSpec]:
    """DIR/samples/<model>/shard-*.parquet, cut by a fixed rule so a rerun finds the same shards."""
    plan = runtime.plan_for(config)
    return write_samples_shards(plan.run_dir, plan.samples, config.shard_size, plan.samples_sha256)


@task(
    name="evaluate-shard",
    task_run_name=_shard_run_name,
    retries=SHARD_RETRIES,
    retry_delay_seconds=SHARD_RETRY_DELAYS_S,
    retry_condition_fn=is_infrastructure_failure,
    cache_policy=NO_CACHE,
)
def evaluate_shard_task(spec: ShardSpec, inputs: StageInputs, executor: ExecutorConfig) -> ShardOutcome:
    """Judge one samples shard in every policy mode; runs here or on a Ray worker."""
    toolchain, pool = runtime.executor_for(executor)
    here = execution_identity(executor, toolchain, pool.identity())
    if here != inputs.execution:
        raise WorkerMismatch(f"this worker's executor {here} differs from the run's {inputs.execution}")
    problems = runtime.load_problems(inputs.problems_path, inputs.problems_hash)
    validity = runtime.load_validity(inputs.validity_path, inputs.validity_hash)

    def judge(samples, modes):
        return evaluate_frame(samples, problems, modes, executor, pool, toolchain)

    started = time.monotonic()
    outcome = evaluate_shard(spec, inputs, judge, validity)
    if outcome.computed:
        get_run_logger().info("%s: %d samples judged in %.1f s", spec.label, spec.rows, time.monotonic() - started)
    return outcome


# ---------------------------------------------------------------- the flow


@flow(name="ferrisbench-evaluate", on_running=[stopping.track])
def evaluate_flow(config: RunConfig) -> dict:
    """Evaluate `config.samples` into the run directory `config.out`; returns metrics and counts."""
    plan = runtime.plan_for(config)
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    with runtime.hold_run_dir(plan.run_dir):
        ensure_run_identity(plan.run_dir, plan.identity())
        record_config(plan.run_dir, config)
        problems_path, problems_hash = problems_stage(config)
        validity_path, validity_hash = gate_stage(config)
        specs = samples_stage(config)
        inputs = StageInputs(
            str(plan.run_dir), problems_path, problems_hash, validity_path, validity_hash,
            tuple(plan.modes), plan.execution,
        )
        outcomes = _evaluate_shards(plan, specs, inputs)
        files = [file for outcome in sorted(outcomes, key=lambda o: (o.model, o.index)) for file in outcome.results]
        aggregated = aggregate_flow(
            run_dir=str(plan.run_dir),
            run_id=plan.run_id,
            files=files,
            ks=list(plan.ks),
            include_invalid=config.include_invalid,
            bootstrap_samples=config.bootstrap_samples,
            expected_task_ids=expected_tasks(plan.samples),
            meta=_metrics_meta(plan),
        )
        attempt = {
            "run_id": plan.run_id,
            "started_at": started,
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runner": "ray" if config.ray_address else "threads",
            "shards_total": len(specs),
            "shards_computed": sum(o.computed for o in outcomes),
            "shards_reused": sum(not o.computed for o in outcomes),
            "samples_judged": sum(o.samples for o in outcomes if o.computed),
            "aggregate": "computed" if aggregated["computed"] else "reused",
        }
        record_attempt(plan.run_dir, attempt)
    get_run_logger().info(
        "run %s: %d shards computed, %d reused; aggregate %s",
        plan.run_id, attempt["shards_computed"], attempt["shards_reused"], attempt["aggregate"],
    )
    return {"metrics": aggregated["metrics"], "attempt": attempt}


def _evaluate_shards(plan: RunPlan, specs: list[ShardSpec], inputs: StageInputs) -> list[ShardOutcome]:
    """Submit every shard, follow them as they finish (progress bar + Prefect progress artifact)."""
    total = sum(spec.rows for spec in specs)
    artifact = create_progress_artifact(
        progress=0.0, key=f"progress-{plan.run_id}", description=f"samples judged or reused, run {plan.run_id}"
    )
    futures = {
        evaluate_shard_task.submit(spec, inputs, plan.config.executor): spec for spec in specs
    }
    outcomes, failures, done = [], [], 0
    with progress_bar(total, "evaluate", plan.config.show_progress) as bar:
        for future in as_completed(list(futures)):
            spec = futures[future]
            try:
                outcomes.append(future.result())
            except Exception as error:  # reported together below, after every shard had its chance
                failures.append(f"{spec.label}: {type(error).__name__}: {error}")
            done += spec.rows
            bar.update(spec.rows)
            update_progress_artifact(artifact, progress=100.0 * done / total)
    if failures:
        raise ShardsFailed(
            f"{len(failures)} of {len(specs)} shards failed (finished shards are kept; rerun the same "
            "command to resume):\n  " + "\n  ".join(failures[:10])
        )
    return outcomes


def expected_tasks(samples) -> list[str] | dict[str, list[str]]:
    """The tasks every model is scored over, or, when the models' samples cover different tasks
    (`--only-sampled-tasks`), each model's own: decided here, from the checked input, not after the work."""
    per_model = {str(model): sorted(group["task_id"].unique()) for model, group in samples.groupby("model")}
    if len({tuple(ids) for ids in per_model.values()}) == 1:
        return next(iter(per_model.values()))
    return per_model


def _metrics_meta(plan: RunPlan) -> dict:
    return {
        "run_id": plan.run_id,
        "benchmark": plan.problem_set.name,
        "benchmark_source": plan.problem_set.source,
        "problems_hash": plan.problem_set.content_hash,
        "protocol": plan.problem_set.protocol.value,
        "samples_file": str(Path(plan.config.samples).absolute()),
        "samples_sha256": plan.samples_sha256,
        "shard_size": plan.config.shard_size,
        **plan.execution,
    }


# ---------------------------------------------------------------- entry points


def run_evaluation(config: RunConfig) -> dict:
    """Check everything, claim the run directory, then run the flow (what the CLI calls)."""
    runtime.check_runner_setup(config)
    runtime.checked_inputs(config)  # bad input is refused before the run directory is touched
    with runtime.hold_run_dir(Path(config.out)):
        plan = runtime.plan_for(config)  # proves the toolchain and the sandbox
        ensure_run_identity(plan.run_dir, plan.identity())  # refused here, before Prefect starts
        runnable = evaluate_flow.with_options(
            task_runner=runtime.task_runner_for(config),
            flow_run_name=f"evaluate {', '.join(plan.models)} · {config.policy.value} · {plan.run_id}",
        )
        return runnable(config)


@flow(name="ferrisbench-evaluate-deployment")
def evaluate_deployment(config: RunConfig) -> dict:
    """Entry point of the prefect.yaml deployment: the CLI's path, the evaluate flow as a subflow
    on the task runner `config` asks for."""
    return run_evaluation(config)
