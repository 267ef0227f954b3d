"""Running a batch's tests: every program in a process of its own, as its own uid.

Every built program's tests run in one sandbox launch (`batch_script`), each program in a
process of its own under a job uid of its own, in a private scratch dir, from a binary no job can
change (sealed by `batch_compile` / `batch.compile_alone`). A program's output is read as if its
binary had been built alone (module prefixes removed, libtest's `filtered out` count reset), so
the per-sample path's judging rules apply unchanged.

No two programs ever share a test process: safe Rust can reach its whole process's memory
(rust-lang/rust#25860, FACTS.md), so a program sharing a process with others could forge their
reports, and no reading of its source can prove it does not.

Every test run here has a short deadline (`batch_deadline_s`); a program still running at it is
returned as a `Rerun`: its binary is run again alone, with the per-sample time limit, on the
caller's slow lane (`tasks.batch_rerun`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

from tasks.batch_compile import CompiledGroup, Member
from tasks.batch_script import Job, JobResult, decode_status, run_jobs
from tasks.config import ExecutorConfig
from tasks.execute import BINARY_NAME, SOURCE_NAME, run_argv, run_verdict
from tasks.sandbox import RunResult, Sandbox, run_limits
from tasks.schema import Protocol, Verdict

_FILTERED_SUMMARY = re.compile(
    rb"(test result: (?:ok|FAILED)\. \d+ passed; \d+ failed; \d+ ignored; \d+ measured; )(\d+)( filtered out;)"
)


@dataclass
class Built:
    member: Member
    directory: Path  # where its binary lives
    compile_seconds: float
    shared_crate: bool  # a module of a group's crate (else compiled alone)


@dataclass
class Rerun:
    """A program whose tests were still running at a batch deadline: to be run again alone, from
    the binary already built, with the per-sample time limit (`tasks.batch_rerun`)."""

    built: Built
    args: tuple[str, ...]  # after the binary
    binary: Path | None = None  # a copy held outside the batch's work dir (`batch_rerun.hold_binaries`)


def run_all(
    sandbox: Sandbox,
    workdir: Path,
    groups: list[CompiledGroup],
    built_alone: list[Built],
    config: ExecutorConfig,
    verdicts: dict[int, Verdict],
    culprits: list[int],
    reruns: list[Rerun],
) -> None:
    """Verdicts (or culprits, or reruns) for every built program."""
    limits = run_limits(config.run_timeout_s)
    built = [Built(m, g.directory, g.compile_seconds, True) for g in groups for m in g.members] + built_alone
    if not built:
        return
    deadline = min(config.run_timeout_s, config.batch_deadline_s)
    jobs = [Job(f"r{b.member.index}", (str(b.directory / BINARY_NAME), *program_args(b)), None, deadline)
            for b in built]
    # Whole output files are read (RLIMIT_FSIZE bounds them): the cap applies after prefixes go.
    results = run_jobs(sandbox, workdir, jobs, limits, limits.file_size_mb << 20)
    for job, item in zip(jobs, built):
        result = results[job.name]
        if item.shared_crate and result.finished:
            result = as_if_alone(result, item.member)
        ran = as_run_result(result, sandbox, limits.output_bytes)
        if ran is None:
            if not result.finished and result.started:  # still running at the batch deadline
                reruns.append(Rerun(item, job.argv[1:]))
            else:
                culprits.append(item.member.index)
            continue
        verdicts[item.member.index] = run_verdict(item.member.problem, ran, item.compile_seconds,
                                                  [item.directory, workdir], config)


def program_args(item: Built) -> tuple[str, ...]:
    """The test binary's arguments that run exactly this program's tests."""
    member = item.member
    if not item.shared_crate:
        return tuple(run_argv(member.problem, BINARY_NAME)[1:])
    if member.problem.protocol is Protocol.LIBTEST:
        return (f"{member.module}::", "--test-threads=1", "--color=never")
    return (str(member.index),)


def as_if_alone(result: JobResult, member: Member) -> JobResult:
    """The output a binary of this program alone would have printed (same bytes, no module path)."""
    prefix, file_name = f"{member.module}::".encode(), member.file_name.encode()

    def clean(data: bytes) -> bytes:
        return data.replace(prefix, b"").replace(file_name, SOURCE_NAME.encode())

    stdout = clean(result.stdout) if member.problem.protocol is Protocol.LIBTEST else result.stdout
    summaries = list(_FILTERED_SUMMARY.finditer(stdout))
    if summaries and member.problem.protocol is Protocol.LIBTEST:
        last = summaries[-1]
        stdout = stdout[: last.start(2)] + b"0" + stdout[last.end(2) :]
    return replace(result, stdout=stdout, stderr=clean(result.stderr))


def as_run_result(result: JobResult, sandbox: Sandbox, cap: int) -> RunResult | None:
    """The job as the per-sample path's RunResult, or None when only a run alone can tell."""
    if not result.finished or result.status is None:
        return None
    decoded = decode_status(result.status, sandbox)
    if decoded is None:
        return None
    returncode, signal = decoded
    return capped_run_result(result, cap, returncode, signal)


def capped_run_result(result: JobResult, cap: int, returncode: int | None, signal: int | None,
                      timed_out: bool = False) -> RunResult:
    """The job's outputs cut at `cap`, as the per-sample path reads them from its pipes."""
    return RunResult(returncode=returncode, signal=signal, timed_out=timed_out, seconds=result.seconds,
                     stdout=result.stdout[:cap], stderr=result.stderr[:cap],
                     stdout_truncated=len(result.stdout) > cap, stderr_truncated=len(result.stderr) > cap)
