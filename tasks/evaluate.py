"""Evaluate many samples on all cores: identical programs once, the rest in batches.

Pure stage logic, no Prefect: the flows call `evaluate_frame` once per shard.
Every input row yields one result row per policy mode, always, carrying every input field,
plus `program_sha256` and `verdict_source`: `executed` (judged in this call), `duplicate_in_run`
(an identical program earlier in this call was judged), `cache` (judged by an earlier run, see
`tasks.dedup`) or `not_run` (no program: a failed generation or an invalid completion).

`config.batch_size` chooses the path: 1 is the per-sample reference (`tasks.execute`), larger
is the batched executor (`tasks.batch`), which reaches the same verdicts.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import pandas as pd
import structlog

from tasks.batch import BatchItem, BatchStats, judge_batch
from tasks.batch_rerun import rerun_verdict
from tasks.batch_run import Rerun
from tasks.batch_pool import SandboxPool
from tasks.config import ExecutorConfig
from tasks.dedup import VerdictCache, judging_context, program_sha256, verdict_key
from tasks.execute import EXECUTOR_VERSION, RUSTC_FLAGS, Execution, Prepared, finish, prepare, run_program
from tasks.policy import POLICY_VERSION
from tasks.sandbox import Sandbox
from tasks.schema import Problem, Status, Verdict
from tasks.toolchain import Toolchain

__all__ = ["SandboxPool", "evaluate_frame", "execution_identity", "judge_programs", "judge_records"]

log = structlog.get_logger(__name__)

MIN_BATCH = 8  # below this, splitting work among workers costs more than it saves


@dataclass
class Judged:
    execution: Execution
    program_sha256: str  # of the program as assembled with the benchmark's own tests: stable across runs
    verdict_source: str  # executed | duplicate_in_run | cache | not_run


@dataclass
class JudgeStats:
    executed: int = 0
    duplicates: int = 0
    cached: int = 0
    batch: BatchStats = field(default_factory=BatchStats)


def execution_identity(config: ExecutorConfig, toolchain: Toolchain, sandbox_identity: str) -> dict:
    """What a verdict depends on besides the program: recorded in every result row."""
    return {
        "executor_version": EXECUTOR_VERSION,
        "policy_version": POLICY_VERSION,
        "toolchain": toolchain.rustc_version,
        "sandbox": sandbox_identity,
        "rustc_flags": " ".join(RUSTC_FLAGS),
        **{k: v for k, v in config.identity().items() if k != "sandbox"},
    }


def evaluate_frame(
    samples: pd.DataFrame,
    problems: dict[str, Problem],
    modes: list[str],
    config: ExecutorConfig,
    pool: SandboxPool,
    toolchain: Toolchain,
    progress: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Result rows for every (sample, mode): input columns + verdict columns + identity."""
    records = samples.to_dict("records")
    judged = judge_records(records, problems, config, pool, toolchain, progress)
    identity = execution_identity(config, toolchain, pool.identity())
    rows = []
    for record, result in zip(records, judged):
        problem = problems[record["task_id"]]
        for mode in modes:
            verdict = result.execution.for_mode(mode).to_row()
            verdict["policy_violations"] = list(result.execution.violations)
            if not verdict["tests_expected"]:
                verdict["tests_expected"] = max(len(problem.expected_tests), 1)
            rows.append(
                {
                    **record,
                    "policy_mode": mode,
                    **verdict,
                    "program_sha256": result.program_sha256,
                    "verdict_source": result.verdict_source,
                    "category": problem.category,
                    **identity,
                }
            )
    return _keep_input_dtypes(pd.DataFrame(rows), samples)


def _keep_input_dtypes(frame: pd.DataFrame, samples: pd.DataFrame) -> pd.DataFrame:
    """A text column that is all-missing in this shard (e.g. `adapter` of a base model) comes
    back from `to_dict` as float NaN; give it the input's dtype so shards of one run merge."""
    restore = {
        column: samples[column].dtype
        for column in samples.columns
        if column in frame.columns and frame[column].dtype != samples[column].dtype and samples[column].isna().all()
    }
    return frame.astype(restore) if restore else frame


def judge_records(
    records: list[dict],
    problems: dict[str, Problem],
    config: ExecutorConfig,
    pool: SandboxPool,
    toolchain: Toolchain,
    progress: Callable[[], None] | None = None,
    stats: JudgeStats | None = None,
) -> list[Judged]:
    """One Judged per record, in order: each distinct program judged once (or found in the cache).

    Programs are prepared while the workers already judge the first batches, so the cores
    are not idle while Python reads the answers."""
    stats = stats if stats is not None else JudgeStats()
    tick = progress or (lambda: None)
    context = judging_context(config, toolchain.rustc_version, pool.identity())
    cache = _cache(config)
    prepared_of: list[Prepared | Execution | None] = [None] * len(records)
    key_of: list[str] = [""] * len(records)
    first_of: dict[str, int] = {}  # key -> the first record with that program
    verdicts: dict[str, tuple[Verdict, str]] = {}  # key -> (verdict, where it came from)
    memo: dict[tuple, Prepared | Execution] = {}

    def programs() -> Iterator[tuple[str, Prepared]]:
        for number, record in enumerate(records):
            prepared = prepared_of[number] = _prepare_record(record, problems, config, memo)
            if isinstance(prepared, Execution):
                tick()
                continue
            key = key_of[number] = verdict_key(context, prepared.problem, prepared.assembly)
            if key in first_of:
                continue  # a duplicate: settled with its first
            first_of[key] = number
            hit = cache.get(key) if cache else None
            if hit is not None:
                verdicts[key] = (hit, "cache")
                tick()
                continue
            yield key, prepared

    def done(key: str, verdict: Verdict) -> None:
        if cache:
            cache.put(key, verdict)
        verdicts[key] = (verdict, "executed")
        tick()

    judge_programs(programs(), config, pool, done, stats.batch, expected=len(records))
    judged = []
    for number, prepared in enumerate(prepared_of):
        if isinstance(prepared, Execution):
            judged.append(Judged(prepared, "", "not_run"))
            continue
        key = key_of[number]
        verdict, source = verdicts[key]
        if first_of[key] != number:
            tick()
            source = "cache" if source == "cache" else "duplicate_in_run"
        judged.append(Judged(finish(prepared, verdict), program_sha256(prepared.assembly), source))
        stats.executed += source == "executed"
        stats.duplicates += source == "duplicate_in_run"
        stats.cached += source == "cache"
    log.info("records_judged", records=len(records), executed=stats.executed, duplicates=stats.duplicates,
             cached=stats.cached, batch_size=config.batch_size, grouped=stats.batch.grouped,
             alone=stats.batch.alone, passes=stats.batch.passes, culprits=stats.batch.culprits,
             reruns=stats.batch.reruns,
             seconds={k: round(v, 2) for k, v in stats.batch.seconds.items()}, alone_reasons=stats.batch.reasons)
    return judged


def _prepare_record(record: dict, problems: dict[str, Problem], config: ExecutorConfig,
                    memo: dict[tuple, Prepared | Execution]) -> Prepared | Execution:
    """The record's program (memoized per task and completion text), or its final Execution."""
    if record.get("generation_status") == Status.GENERATION_FAILED.value:
        return Execution(Verdict(Status.GENERATION_FAILED, diagnostic="generation failed"))
    issue = record.get("completion_issue")
    if isinstance(issue, str) and issue:  # the reader could not even hold the text (see samples.py)
        return Execution(Verdict(Status.INVALID_COMPLETION, diagnostic=issue))
    raw = record.get("completion")
    memo_key = (record["task_id"], raw) if isinstance(raw, (str, bytes)) else None
    if memo_key is not None and memo_key in memo:
        return memo[memo_key]
    try:
        prepared = prepare(problems[record["task_id"]], raw, config)
    except Exception as exc:  # never drop a row: score what broke
        log.error("prepare_failure", task_id=record["task_id"], error=repr(exc))
        prepared = Execution(Verdict(Status.SANDBOX_ERROR, diagnostic=f"executor error: {exc!r}"[:500]))
    if memo_key is not None:
        memo[memo_key] = prepared
    return prepared


def _cache(config: ExecutorConfig) -> VerdictCache | None:
    if not config.verdict_cache:
        return None
    if config.verdict_cache_dir is not None:
        return VerdictCache(config.verdict_cache_dir)
    from tasks.problems import default_cache_dir

    return VerdictCache(default_cache_dir() / "verdicts")


def judge_programs(
    programs: Iterable[tuple[str, Prepared]],
    config: ExecutorConfig,
    pool: SandboxPool,
    done: Callable[[str, Verdict], None],
    stats: BatchStats | None = None,
    expected: int = 0,
) -> None:
    """Judge each (key, program) as it comes; `done(key, verdict)` as each verdict is known (from
    any thread). `expected` (an upper bound on the programs) sizes the batches.

    Batches need a uid per program (root): without, programs of one launch could reach each
    other, so every program is judged alone in work dirs of its own instead."""
    if config.batch_size > 1 and not pool.isolates_jobs:
        log.warning("batching_off_without_isolation", sandbox=config.sandbox.value,
                    reason="programs of one batch need uids of their own (run as root); judging each alone")
    if config.batch_size == 1 or not pool.isolates_jobs:
        def alone(item: tuple[str, Prepared], sandbox: Sandbox) -> None:
            key, prepared = item
            done(key, _per_sample(prepared, sandbox, config))

        pool.map(alone, programs)
        return
    stats = stats if stats is not None else BatchStats()
    slow: list[Future] = []
    guard = threading.Lock()

    def on_slow_lane(key: str, prepared: Prepared, rerun: Rerun | None = None) -> None:
        slow.append(pool.submit_slow(lambda sandbox: done(key, _judge_alone(prepared, rerun, sandbox, config))))

    def batch(chunk: list[tuple[str, Prepared]], sandbox: Sandbox) -> None:
        items = [BatchItem(i, prepared.problem, prepared.program) for i, (_, prepared) in enumerate(chunk)]
        try:
            result = judge_batch(sandbox, items, config)
        except Exception as exc:  # judge each program alone instead: the reference path, drop none
            log.error("batch_failure", programs=len(chunk), error=repr(exc))
            for key, prepared in chunk:
                on_slow_lane(key, prepared)
            return
        with guard:
            _add_stats(stats, result.stats)
        for index, verdict in result.verdicts.items():
            done(chunk[index][0], verdict)
        for index in result.culprits:
            on_slow_lane(*chunk[index])
        for rerun in result.reruns:
            on_slow_lane(*chunk[rerun.built.member.index], rerun)

    size = batch_size_for(expected, config.batch_size, len(pool.sandboxes))
    pool.map(batch, _chunks(programs, size))
    for future in slow:
        future.result()


def _per_sample(prepared: Prepared, sandbox: Sandbox, config: ExecutorConfig) -> Verdict:
    try:
        return run_program(prepared.problem, prepared.program, sandbox, config)
    except Exception as exc:  # the sandbox itself broke: score it, never drop the row
        log.error("sandbox_failure", task_id=prepared.problem.task_id, error=repr(exc))
        return Verdict(Status.SANDBOX_ERROR, diagnostic=f"executor error: {exc!r}"[:500])


def _judge_alone(prepared: Prepared, rerun: Rerun | None, sandbox: Sandbox, config: ExecutorConfig) -> Verdict:
    """A run alone of the binary a batch built (`rerun`); the per-sample path when there is none
    or that cannot tell."""
    verdict = None
    if rerun is not None:
        try:
            verdict = rerun_verdict(rerun, sandbox, config)
        except Exception as exc:  # e.g. the held binary is gone: compiling it again decides
            log.warning("rerun_failed", task_id=prepared.problem.task_id, error=repr(exc))
    return verdict if verdict is not None else _per_sample(prepared, sandbox, config)


def batch_size_for(programs: int, batch_size: int, workers: int) -> int:
    """At most `batch_size`, and even: as many batches as keep every worker busy to the end
    (a multiple of the workers), so no core idles while another finishes the last batch."""
    batches = math.ceil(max(programs, 1) / batch_size)
    batches = math.ceil(batches / workers) * workers
    return max(1, min(batch_size, max(MIN_BATCH, math.ceil(programs / batches))))


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _add_stats(total: BatchStats, part: BatchStats) -> None:
    total.programs += part.programs
    total.grouped += part.grouped
    total.alone += part.alone
    total.passes += part.passes
    total.culprits += part.culprits
    total.reruns += part.reruns
    for reason, count in part.reasons.items():
        total.reasons[reason] = total.reasons.get(reason, 0) + count
    for phase, seconds in part.seconds.items():
        total.seconds[phase] = total.seconds.get(phase, 0.0) + seconds
