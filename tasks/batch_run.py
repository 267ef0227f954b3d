"""Running a batch's tests: a shared process settles the clean passes, own processes the rest.

1. Shared process (libtest programs that cannot touch process-wide state, see
   `batch_safety.assess`): the crate's test binary runs all their tests one after another in one
   process. libtest prints `test NAME ... ` before a test and its outcome after it, so a program
   whose every test line reads exactly `ok` — the benchmark's tests and the harness's final one,
   nothing else, nothing in between — passed, and it would have passed alone: its tests ran to
   the end in a process no other program could have changed in its favour. Only such clean
   passes are settled here; the verdict is computed from the report libtest prints for a clean
   run of that program alone. Anything else (a failure, a crash that ends the process, stray
   output) is settled in step 2.
2. Own process: every other program runs in a process of its own (`batch_script`), and its
   output is read as if its binary had been built alone (module prefixes removed, libtest's
   `filtered out` count reset), so the per-sample path's judging rules apply unchanged.

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
from tasks.verdict import sentinel_test_name

RUN_BUDGET_PER_PROGRAM_S = 0.001  # the shared test process: `batch_deadline_s` plus this per program
_TEST_LINE = re.compile(r"test (\S+) \.\.\. (ok|FAILED|ignored)")
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
    argv: tuple[str, ...]
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
) -> int:
    """Verdicts (or culprits, or reruns) for every built program; returns how many the shared
    process settled."""
    limits = run_limits(config.run_timeout_s)
    built = [Built(m, g.directory, g.compile_seconds, True) for g in groups for m in g.members] + built_alone
    settled = _shared_process(sandbox, workdir, groups, config, verdicts, reruns)
    rest = [b for b in built if b.member.index not in settled]
    if not rest:
        return len(settled)
    deadline = min(config.run_timeout_s, config.batch_deadline_s)
    jobs = [Job(f"r{b.member.index}", _own_argv(b), b.directory.name, deadline) for b in rest]
    # Whole output files are read (RLIMIT_FSIZE bounds them): the cap applies after prefixes go.
    results = run_jobs(sandbox, workdir, jobs, limits, limits.file_size_mb << 20)
    for job, item in zip(jobs, rest):
        result = results[job.name]
        if item.shared_crate and result.finished:
            result = as_if_alone(result, item.member)
        ran = as_run_result(result, sandbox, limits.output_bytes)
        if ran is None:
            if not result.finished and result.started:  # still running at the batch deadline
                reruns.append(Rerun(item, job.argv))
            else:
                culprits.append(item.member.index)
            continue
        verdicts[item.member.index] = run_verdict(item.member.problem, ran, item.compile_seconds,
                                                  [item.directory, workdir], config)
    return len(settled)


def _own_argv(item: Built) -> tuple[str, ...]:
    member = item.member
    if not item.shared_crate:
        return tuple(run_argv(member.problem))
    if member.problem.protocol is Protocol.LIBTEST:
        return (f"./{BINARY_NAME}", f"{member.module}::", "--test-threads=1", "--color=never")
    return (f"./{BINARY_NAME}", str(member.index))


def _shared_process(
    sandbox: Sandbox,
    workdir: Path,
    groups: list[CompiledGroup],
    config: ExecutorConfig,
    verdicts: dict[int, Verdict],
    reruns: list[Rerun],
) -> set[int]:
    """Indices settled by one shared test process per libtest group: clean passes, and the
    program still running at its deadline (a rerun alone judges it)."""
    plans = []
    for number, group in enumerate(groups):
        shared = [m for m in group.members if not m.own_process]
        if group.members[0].problem.protocol is not Protocol.LIBTEST or len(shared) < 2:
            continue
        skips = [part for m in group.members if m.own_process for part in ("--skip", f"{m.module}::")]
        argv = (f"./{BINARY_NAME}", "--test-threads=1", "--color=never", *skips)
        # Never above the per-sample limit: every program's tests that finish here finished within it.
        deadline = min(config.run_timeout_s, config.batch_deadline_s + RUN_BUDGET_PER_PROGRAM_S * len(shared))
        plans.append((Job(f"shared{number}", argv, group.directory.name, deadline), group, shared))
    if not plans:
        return set()
    limits = run_limits(config.run_timeout_s)
    results = run_jobs(sandbox, workdir, [job for job, _, _ in plans], limits, limits.output_bytes)
    settled: set[int] = set()
    for job, group, shared in plans:
        result = results[job.name]
        lines, running = _report_lines(result.stdout)
        for member in shared:
            names = lines.get(member.module, [])
            if _is_clean_pass(member, names):
                verdicts[member.index] = run_verdict(member.problem, _clean_run(names, result.seconds / len(shared)),
                                                     group.compile_seconds, [group.directory, workdir], config)
                settled.add(member.index)
            elif member.module == running and not result.finished:  # still running at the deadline
                built = Built(member, group.directory, group.compile_seconds, True)
                reruns.append(Rerun(built, _own_argv(built)))
                settled.add(member.index)
    return settled


def _report_lines(stdout: bytes) -> tuple[dict[str, list[tuple[str, str]]], str | None]:
    """Test lines by module, and the module whose test was running when the output ends.

    Anything but libtest's own lines before the first blank line means some test wrote to
    stdout itself: then nothing from this process is trusted (empty result)."""
    lines = stdout.decode("utf-8", "replace").split("\n")
    if len(lines) < 3 or lines[0] != "" or not lines[1].startswith("running "):
        return {}, None
    by_module: dict[str, list[tuple[str, str]]] = {}
    for position, line in enumerate(lines[2:], start=2):
        if line == "":
            return by_module, None
        found = _TEST_LINE.fullmatch(line)
        if found is None:
            last = position == len(lines) - 1
            if last and line.startswith("test ") and line.endswith(" ... "):  # cut short while running
                return by_module, line[5:-5].partition("::")[0]
            return {}, None
        module, _, name = found.group(1).partition("::")
        by_module.setdefault(module, []).append((name, found.group(2)))
    return by_module, None


def _is_clean_pass(member: Member, lines: list[tuple[str, str]]) -> bool:
    expected = member.problem.expected_tests
    wanted = [*expected, sentinel_test_name(expected)]
    names = [name for name, _ in lines]
    return (all(outcome == "ok" for _, outcome in lines) and len(names) == len(wanted)
            and sorted(names) == sorted(wanted) and names[-1] == wanted[-1])


def _clean_run(lines: list[tuple[str, str]], seconds: float) -> RunResult:
    """What the program's binary alone prints for a clean run (libtest's exact report)."""
    count = len(lines)
    report = (f"\nrunning {count} test{'' if count == 1 else 's'}\n"
              + "".join(f"test {name} ... ok\n" for name, _ in lines)
              + f"\ntest result: ok. {count} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; "
                "finished in 0.00s\n\n")
    return RunResult(returncode=0, signal=None, timed_out=False, seconds=seconds, stdout=report.encode(),
                     stderr=b"", stdout_truncated=False, stderr_truncated=False)


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
