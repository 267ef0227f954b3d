"""The batched executor: many programs per rustc and per sandbox launch, the per-sample verdicts.

The per-sample path (`tasks.execute.run_program`) pays a sandbox launch and a rustc start-up per
program and per run; here a batch of programs is compiled as modules of one crate
(`tasks.batch_compile`), and the tests then run inside one sandbox launch, every program in a
process of its own under a uid of its own (`tasks.batch_run`). Programs
that cannot share a crate safely (`tasks.batch_safety`) are compiled alone, many per launch.

Each program is judged from exactly what the per-sample path would have seen: the same compile
errors, the same test output (module prefixes removed, libtest's `filtered out` count as a
binary of its own would print it), the same exit status, the same limits. A test run still going at the batch's short
deadline (a hang, or just slow) is handed back as a rerun: the caller runs its binary again alone
with the per-sample time limit (`tasks.batch_rerun`). What cannot be told that way at all
(something that killed the launch, a signal the launch cannot tell from an exit code, a compile
that failed for no member's reason) is handed back as a culprit, and the caller judges it with
the per-sample path itself.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from tasks.batch_compile import CompiledGroup, Member, compile_group
from tasks.batch_rerun import hold_binaries
from tasks.batch_run import Built, Rerun, as_run_result, run_all
from tasks.batch_safety import unbatchable_reason, main_entry_reason
from tasks.batch_script import Job, run_jobs
from tasks.config import ExecutorConfig
from tasks.execute import BINARY_NAME, SOURCE_NAME, compile_argv, compile_verdict
from tasks.sandbox import Sandbox, compile_limits
from tasks.schema import Problem, Protocol, Verdict
from tasks.untrusted_files import seal_binary, write_new
from tasks.verdict import harden_harness

log = structlog.get_logger(__name__)

READS_ENVIRONMENT = "`env::"  # batch_safety's reason for programs that read the environment
ALONE_PER_LAUNCH = 32  # programs compiled alone per launch: well inside one compile's time limit


@dataclass(frozen=True)
class BatchItem:
    index: int  # the caller's number for this program
    problem: Problem
    program: str


@dataclass
class BatchStats:
    programs: int = 0
    grouped: int = 0  # compiled as modules of a shared crate
    alone: int = 0  # compiled on their own (unsafe to share, or split off by bisection)
    passes: int = 0  # rustc invocations on shared crates
    culprits: int = 0  # handed back for the per-sample path
    reruns: int = 0  # tests still running at a batch deadline: run again alone from their binary
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase
    reasons: dict[str, int] = field(default_factory=dict)  # why programs went alone


@dataclass
class BatchResult:
    verdicts: dict[int, Verdict]
    culprits: list[int]  # judge these with the per-sample path
    stats: BatchStats
    reruns: list[Rerun] = field(default_factory=list)  # judge these with `batch_rerun.rerun_verdict`


def batch_reason(problem: Problem, program: str, edition: str) -> str | None:
    """Why `program` must be compiled alone (None: it may share a crate)."""
    if edition == "2015":  # 2015 `use` paths start at the crate root, not the module
        return "edition 2015"
    test = harden_harness(problem).test
    if not program.endswith(test):
        return "program does not end with the harness"
    if problem.protocol is Protocol.MAIN:
        reason = main_entry_reason(test)
        if reason:
            return reason
    return unbatchable_reason(program[: len(program) - len(test)], test)


def judge_batch(sandbox: Sandbox, items: list[BatchItem], config: ExecutorConfig) -> BatchResult:
    """Verdicts for `items` from a few sandbox launches; see the module docstring."""
    nonce = secrets.token_hex(5)
    stats = BatchStats(programs=len(items))
    verdicts: dict[int, Verdict] = {}
    culprits: list[int] = []
    reruns: list[Rerun] = []
    members = {item.index: Member(item.index, f"fb{nonce}_{item.index:05d}", item.problem, item.program)
               for item in items}
    with sandbox.new_workdir() as workdir:
        shared: dict[Protocol, list[Member]] = {}
        alone: list[Member] = []
        for item in items:
            reason = batch_reason(item.problem, item.program, config.edition)
            if reason is None:
                shared.setdefault(item.problem.protocol, []).append(members[item.index])
            elif reason.startswith(READS_ENVIRONMENT):  # a launch's jobs share its environment
                culprits.append(item.index)
                stats.reasons[reason] = stats.reasons.get(reason, 0) + 1
            else:
                alone.append(members[item.index])
                stats.reasons[reason] = stats.reasons.get(reason, 0) + 1
        groups: list[CompiledGroup] = []
        clock = time.monotonic()
        for protocol_members in shared.values():
            outcome = compile_group(sandbox, workdir, protocol_members, config, nonce)
            groups += outcome.compiled
            verdicts.update(outcome.rejected)
            alone += outcome.alone
            stats.passes += outcome.passes
        stats.grouped = sum(len(g.members) for g in groups) + len(verdicts)
        stats.alone = len(alone)
        clock = _lap(stats, "compile_shared", clock)
        built_alone = _compile_alone(sandbox, workdir, alone, config, verdicts, culprits)
        clock = _lap(stats, "compile_alone", clock)
        run_all(sandbox, workdir, groups, built_alone, config, verdicts, culprits, reruns)
        hold_binaries(sandbox, reruns, nonce)  # the work dir and its binaries go next
        clock = _lap(stats, "run", clock)
    stats.culprits = len(culprits)
    stats.reruns = len(reruns)
    return BatchResult(verdicts, culprits, stats, reruns)


def _lap(stats: BatchStats, phase: str, since: float) -> float:
    now = time.monotonic()
    stats.seconds[phase] = stats.seconds.get(phase, 0.0) + now - since
    return now


def _alone_dir(sandbox: Sandbox, workdir: Path, member: Member) -> Path:
    directory = sandbox.compile_dir(workdir, f"a{member.index}")
    write_new(directory / SOURCE_NAME, member.program, owner=sandbox.uid)
    return directory


def _compile_alone(
    sandbox: Sandbox,
    workdir: Path,
    members: list[Member],
    config: ExecutorConfig,
    verdicts: dict[int, Verdict],
    culprits: list[int],
) -> list[Built]:
    """Compile each member on its own, as the per-sample path does; returns those that built."""
    built: list[Built] = []
    limits = compile_limits(config.compile_timeout_s)
    for start in range(0, len(members), ALONE_PER_LAUNCH):
        chunk = members[start : start + ALONE_PER_LAUNCH]
        jobs = [Job(f"c{m.index}", tuple(compile_argv(sandbox, m.problem, config.edition)),
                    _alone_dir(sandbox, workdir, m), config.compile_timeout_s) for m in chunk]
        results = run_jobs(sandbox, workdir, jobs, limits, limits.output_bytes)
        for member, job in zip(chunk, jobs):
            ran = as_run_result(results[job.name], sandbox, limits.output_bytes)
            if ran is None:
                culprits.append(member.index)
                continue
            failed = compile_verdict(ran, [job.cwd, workdir], config)
            if failed is None:
                seal_binary(job.cwd, BINARY_NAME, sandbox.uid)
                built.append(Built(member, job.cwd, ran.seconds, shared_crate=False))
            else:
                verdicts[member.index] = failed
    return built
