"""The generate stage without Prefect: shards of tasks per model, skipped when already done.

Layout of a generation directory:

    run.json                          the run's identity (benchmark, models, sampling, …)
    samples/<model>/shard-00000.parquet   `shard_tasks` tasks × n samples (+ .manifest.json)
    samples/<model>/samples.json      written last: the model is complete (shards + identities)
    samples.parquet                   every model's rows in one file: what `evaluate` reads
    logs/vllm-<model>.log             the vLLM worker's output

A shard's identity (DESIGN.md "Identities") is the problems hash, the source's identity (model
id + revision, adapter id + revision, prompt style, instruction, template hash, dtype), the
sampling parameters, the run seed, the shard's index and task ids, and the hash of its rendered
prompts. A rerun reuses a shard whose manifest matches and regenerates anything else; request
seeds depend only on (run seed, model, task), so resumed samples equal uninterrupted ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from tasks.artifact_base import _pretty_json, _temp_path, _write_synced, identity_hash
from tasks.artifacts import ShardInfo, read_valid_shard, write_shard
from tasks.generation.base import GENERATION_FAILED, SAMPLE_COLUMNS, GenerationError, Sampling, SampleSource, rows_for
from tasks.config import GenerationConfig
from tasks.problems import ProblemSet
from tasks.schema import Problem
from tasks.shards import pause_point

log = structlog.get_logger(__name__)

SHARD_FORMAT = "ferrisbench.generated-samples/1"
RUN_KIND = "ferrisbench.generate-run/1"
_INTEGER_COLUMNS = {"sample_index", "prompt_tokens", "completion_tokens", "max_tokens", "request_seed", "run_seed"}
_FLOAT_COLUMNS = {"temperature", "top_p"}
# One schema for every shard, so an all-null column in one shard never changes its type.
SAMPLE_SCHEMA = pa.schema(
    [
        (name, pa.int64() if name in _INTEGER_COLUMNS else pa.float64() if name in _FLOAT_COLUMNS else pa.string())
        for name in SAMPLE_COLUMNS
    ]
)
MODEL_MANIFEST = "samples.json"
COMBINED_SAMPLES = "samples.parquet"


@dataclass(frozen=True)
class ShardPlan:
    label: str
    index: int
    task_ids: tuple[str, ...]
    path: Path
    identity: dict


def shard_path(out_dir: Path, label: str, index: int) -> Path:
    return Path(out_dir) / "samples" / label / f"shard-{index:05d}.parquet"


def plan_shards(
    source: SampleSource,
    problem_set: ProblemSet,
    problems: Sequence[Problem],
    sampling: Sampling,
    prompt_hashes: dict[str, str],
    out_dir: Path,
    shard_tasks: int,
) -> list[ShardPlan]:
    """Deterministic shards: the problems in benchmark order, `shard_tasks` at a time."""
    plans = []
    source_identity = source.identity()
    for index, start in enumerate(range(0, len(problems), shard_tasks)):
        task_ids = tuple(p.task_id for p in problems[start : start + shard_tasks])
        identity = {
            "format": SHARD_FORMAT,
            "problems_hash": problem_set.content_hash,
            "source": source_identity,
            "sampling": sampling.identity(),
            "shard_index": index,
            "task_ids": list(task_ids),
            "prompts_hash": identity_hash({"prompts": [prompt_hashes[t] for t in task_ids]}),
        }
        plans.append(ShardPlan(source.label, index, task_ids, shard_path(out_dir, source.label, index), identity))
    return plans


def reusable(plan: ShardPlan, retry_failed: bool) -> ShardInfo | None:
    info = read_valid_shard(plan.path, plan.identity)
    if info is not None and retry_failed:
        statuses = pq.read_table(plan.path, columns=["generation_status"]).column(0).to_pylist()
        if GENERATION_FAILED in statuses:
            log.info("regenerating_failed_samples", model=plan.label, shard=plan.index, failed=statuses.count(GENERATION_FAILED))
            return None
    return info


def generate_shard(
    source: SampleSource,
    plan: ShardPlan,
    problems: dict[str, Problem],
    sampling: Sampling,
    prompt_hashes: dict[str, str],
) -> ShardInfo:
    """Generate one shard and write it atomically; every requested sample becomes a row."""
    pause_point(f"generate:{plan.label}:{plan.index}")  # test hook: a kill at an exact shard
    shard_problems = [problems[t] for t in plan.task_ids]
    outputs = source.generate(shard_problems, sampling)
    if [o.task_id for o in outputs] != list(plan.task_ids):
        raise GenerationError(f"{source.label}: outputs for shard {plan.index} do not match its tasks")
    failed_tasks = [o for o in outputs if all(s.status == GENERATION_FAILED for s in o.samples)]
    if len(outputs) > 1 and len(failed_tasks) == len(outputs):  # systemic (server down, engine broken)
        raise GenerationError(
            f"{source.label}: every request of shard {plan.index} failed ({failed_tasks[0].samples[0].error}); "
            "nothing of it was written, finished shards are kept: fix the cause and rerun to resume"
        )
    rows = [row for output in outputs for row in rows_for(source, output, prompt_hashes[output.task_id], sampling)]
    frame = pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS))
    info = write_shard(pa.Table.from_pandas(frame, schema=SAMPLE_SCHEMA, preserve_index=False), plan.path, plan.identity)
    failed = int((frame["generation_status"] == GENERATION_FAILED).sum())
    log.info("shard_written", model=plan.label, shard=plan.index, rows=len(frame), failed=failed)
    return info


def write_model_manifest(out_dir: Path, source: SampleSource, plans: list[ShardPlan], sampling: Sampling) -> Path:
    """Written after the model's last shard: its presence means the model's samples are complete."""
    path = Path(out_dir) / "samples" / source.label / MODEL_MANIFEST
    _write_json_atomic(
        path,
        {
            "format": SHARD_FORMAT,
            "model": source.label,
            "source": source.identity(),
            "sampling": sampling.identity(),
            "tasks": sum(len(p.task_ids) for p in plans),
            "shards": [{"file": p.path.name, "identity": p.identity} for p in plans],
        },
    )
    return path


def _write_json_atomic(path: Path, record: dict) -> None:
    temp = _temp_path(path)
    try:
        _write_synced(temp, lambda f: f.write(_pretty_json(record)))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def run_source(
    source: SampleSource,
    plans: list[ShardPlan],
    sampling: Sampling,
    out_dir: Path,
    run_shard: Callable[[ShardPlan], ShardInfo],
    retry_failed: bool = True,
    on_shard: Callable[[ShardPlan, bool], None] | None = None,
) -> dict:
    """Every shard of one model, reusing finished ones; returns counts (generated, reused).

    `run_shard` generates one shard (the flow wraps it in a Prefect task); `on_shard(plan,
    generated)` is told about each finished shard, and whether this call generated it (False:
    reused), e.g. to judge it while the next one generates (tasks.prejudge).
    """
    counts = {"model": source.label, "shards": len(plans), "generated": 0, "reused": 0}
    for plan in plans:
        generated = reusable(plan, retry_failed) is None
        if generated:
            run_shard(plan)
        counts["generated" if generated else "reused"] += 1
        if on_shard is not None:
            on_shard(plan, generated)
    write_model_manifest(out_dir, source, plans, sampling)
    return counts


def sampling_of(config: GenerationConfig) -> Sampling:
    return Sampling(config.samples, config.temperature, config.top_p, config.max_tokens, config.seed)


def select_problems(problem_set: ProblemSet, limit: int | None) -> list[Problem]:
    return list(problem_set.problems[:limit] if limit else problem_set.problems)


def run_identity(config: GenerationConfig, problem_set: ProblemSet) -> dict:
    """What a generation directory is for: rerun with other settings → refused, never mixed."""
    identity = {
        "kind": RUN_KIND,
        "problems": {"name": problem_set.name, "content_hash": problem_set.content_hash},
        "model": config.model,
        "adapters": list(config.adapters),
        "prompt_style": config.prompt_style,
        "sampling": sampling_of(config).identity(),
        "limit": config.limit,
        "shard_tasks": config.shard_tasks,
        "dtype": config.dtype,
    }
    reading = {"only_sampled_tasks": config.only_sampled_tasks, "format": config.samples_format, "fields": config.fields}
    if any(reading.values()):  # only when set, so directories made before these options still resume
        identity["import"] = reading
    return identity


@dataclass
class PreparedRun:
    """Everything checked and planned; nothing generated yet."""

    config: GenerationConfig
    problem_set: ProblemSet
    problems: dict[str, Problem]
    sampling: Sampling
    sources: list[SampleSource]
    plans: dict[str, list[ShardPlan]]  # label → shards
    prompt_hashes: dict[str, dict[str, str]]  # label → task_id → prompt hash

    def close(self) -> None:
        for source in self.sources:
            source.close()


def prepare_run(
    config: GenerationConfig, problem_set: ProblemSet, sources: list[SampleSource] | None = None
) -> PreparedRun:
    """Resolve every model, check every prompt and plan every shard, before any generation.

    Bad input (a missing model path, an adapter over the rank limit, a prompt that does not
    fit the context, an unusable samples file) raises GenerationError here, so nothing is
    started and no finished shard is touched.
    """
    from tasks.generation.sources import build_sources

    owned = sources is None  # sources are given only by tests that share one engine between runs
    if owned:
        sources = build_sources(config, problem_set, Path(config.out) / "logs")
    try:
        config, problems = _imported_subset(config, problem_set, sources)
        sampling = sampling_of(config)
        plans, hashes = {}, {}
        for source in sources:
            hashes[source.label] = source.prepare(problems, sampling)
            plans[source.label] = plan_shards(
                source, problem_set, problems, sampling, hashes[source.label], config.out, config.shard_tasks
            )
    except BaseException:
        for source in sources if owned else ():
            source.close()
        raise
    return PreparedRun(config, problem_set, {p.task_id: p for p in problems}, sampling, sources, plans, hashes)


def _imported_subset(
    config: GenerationConfig, problem_set: ProblemSet, sources: list[SampleSource]
) -> tuple[GenerationConfig, list[Problem]]:
    """An imported file decides what it can: n when `samples_from_file`, the tasks when `only_sampled_tasks`.

    The resolved config (n filled in) is the one the run directory's identity records."""
    from tasks.generation.imported import ImportedSource

    imported = [s for s in sources if isinstance(s, ImportedSource)]
    problems = select_problems(problem_set, config.limit)
    if not imported:
        if config.only_sampled_tasks or config.samples_format or config.fields:
            raise GenerationError("--only-sampled-tasks, --format and --field apply to --model import:FILE only")
        return config, problems
    if config.only_sampled_tasks:
        covered = imported[0].sampled_tasks()
        problems = [p for p in problems if p.task_id in covered]
        if not problems:
            raise GenerationError(f"{imported[0].path} has no samples for the tasks of this run")
    if config.samples_from_file:
        config = config.model_copy(update={"samples": imported[0].samples_per_task(), "samples_from_file": False})
    return config, problems


def read_model_samples(out_dir: Path, label: str) -> pd.DataFrame:
    """One model's rows, only if its samples are complete and every shard is intact."""
    manifest = Path(out_dir) / "samples" / label / MODEL_MANIFEST
    if not manifest.exists():
        raise GenerationError(f"{label}: samples are incomplete ({manifest} missing); rerun generate to finish them")
    record = json.loads(manifest.read_text(encoding="utf-8"))
    frames = []
    for shard in record["shards"]:
        path = manifest.parent / shard["file"]
        if read_valid_shard(path, shard["identity"]) is None:
            raise GenerationError(f"{path} is missing or damaged; rerun generate to regenerate it")
        frames.append(pd.read_parquet(path))
    return pd.concat(frames, ignore_index=True)


def write_combined_samples(out_dir: Path, labels: Sequence[str]) -> Path:
    """Every model's samples in one parquet file (what `ferrisbench evaluate` reads)."""
    frame = pd.concat([read_model_samples(out_dir, label) for label in labels], ignore_index=True)
    path = Path(out_dir) / COMBINED_SAMPLES
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    return path


def generated_samples_file(directory: Path) -> Path:
    """The samples file of a finished generation directory (what `ferrisbench evaluate DIR` reads)."""
    directory = Path(directory)
    try:
        record = json.loads((directory / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    if record.get("identity", {}).get("kind") != RUN_KIND:
        raise GenerationError(f"{directory} is not a directory written by `ferrisbench generate`")
    combined = directory / COMBINED_SAMPLES
    if not combined.exists():
        raise GenerationError(f"{directory}: generation has not finished; rerun the same `ferrisbench generate` to resume it")
    return combined
