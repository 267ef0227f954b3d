"""The executor: completion → program → sandboxed compile → sandboxed test run → verdict.

One code path serves the validity gate, the per-sample evaluation and the self-checks, so a
reference is judged exactly the way a model's answer is. Policy is a pure function of the
completion, so one execution yields both the `no_policy` and the `policy` verdict.

The steps are separate functions (`prepare`, `compile_verdict`, `run_verdict`) because the
batched executor (`tasks.batch`) compiles and runs many programs per sandbox launch and must
reach the very same verdicts from the very same rules; `execute` is the per-sample reference.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from tasks import completion as completion_forms
from tasks import policy
from tasks.config import ExecutorConfig
from tasks.sandbox import RunResult, Sandbox, compile_limits, run_limits
from tasks.schema import Problem, Protocol, Status, Verdict
from tasks.untrusted_files import seal_binary, write_new
from tasks.verdict import judge_libtest, judge_main, parse_rustc_json, harden_harness

log = structlog.get_logger(__name__)

EXECUTOR_VERSION = "3"  # bump whenever a verdict could change: it keys every cache
SOURCE_NAME = "main.rs"
BINARY_NAME = "prog"
RUSTC_FLAGS = ("-C", "opt-level=0", "-C", "debuginfo=0", "-A", "warnings")
_ABS_PATH = re.compile(r"(/[\w.+-]+){2,}/?")


@dataclass
class Execution:
    """The policy-independent result of one completion, plus what the policy scan found."""

    verdict: Verdict
    violations: list[str] = field(default_factory=list)

    def for_mode(self, mode: str) -> Verdict:
        """`no_policy` is the execution verdict; `policy` turns any hit into a violation."""
        if mode == "no_policy" or not self.violations:
            return self.verdict
        if self.verdict.status is Status.INVALID_COMPLETION:
            return self.verdict
        return replace(
            self.verdict,
            status=Status.POLICY_VIOLATION,
            tests_passed=0,
            diagnostic="policy: " + "; ".join(self.violations),
        )


@dataclass(frozen=True)
class Prepared:
    """A completion turned into the program to compile, before anything runs."""

    problem: Problem  # as loaded (not hardened): judging uses its expected tests
    program: str
    form: str  # completion_form
    assembly: str  # the program with the benchmark's own (unhardened) test: a stable identity
    violations: tuple[str, ...] = ()


def expected_count(problem: Problem) -> int:
    return len(problem.expected_tests) if problem.protocol is Protocol.LIBTEST else 1


def prepare(problem: Problem, raw_completion, config: ExecutorConfig) -> Prepared | Execution:
    """The program for one completion, or the final `invalid_completion` Execution."""
    try:
        text = completion_forms.validate_raw(raw_completion, config.max_completion_bytes)
        hardened = harden_harness(problem)
        normalized = completion_forms.normalize(hardened, text)
    except completion_forms.InvalidCompletion as exc:
        verdict = Verdict(Status.INVALID_COMPLETION, tests_expected=expected_count(problem), diagnostic=str(exc))
        return Execution(verdict)
    violations = tuple(f"{v.rule}: {v.detail} (line {v.line})" for v in policy.scan(normalized.code))
    # program = prefix + code + "\n" + hardened test; the hardened test embeds this process's
    # secret sentinel names, so identities use the benchmark's own test text instead.
    head = normalized.program[: len(normalized.program) - len(hardened.test)]
    return Prepared(problem, normalized.program, normalized.form, head + problem.test, violations)


def finish(prepared: Prepared, verdict: Verdict) -> Execution:
    """The Execution of a prepared program from its (possibly shared) program verdict."""
    verdict = replace(verdict, completion_form=prepared.form, tests_expected=expected_count(prepared.problem))
    return Execution(verdict, list(prepared.violations))


def execute(problem: Problem, raw_completion, sandbox: Sandbox, config: ExecutorConfig) -> Execution:
    """Judge one completion of `problem` (never raises for anything the completion does)."""
    prepared = prepare(problem, raw_completion, config)
    if isinstance(prepared, Execution):
        return prepared
    return finish(prepared, run_program(problem, prepared.program, sandbox, config))


def compile_argv(sandbox: Sandbox, problem: Problem, edition: str, source: str = SOURCE_NAME) -> list[str]:
    argv = [sandbox.rustc, "--edition", edition, "--error-format=json", *RUSTC_FLAGS]
    if problem.protocol is Protocol.LIBTEST:
        argv.append("--test")
    return [*argv, source, "-o", BINARY_NAME]


def run_argv(problem: Problem, binary: str) -> list[str]:
    if problem.protocol is Protocol.LIBTEST:
        # One thread: deterministic output order, so duplicates and reruns read the same.
        return [binary, "--test-threads=1", "--color=never"]
    return [binary]


def run_program(problem: Problem, program: str, sandbox: Sandbox, config: ExecutorConfig) -> Verdict:
    """Compile (as the worker uid, in a dir of its own) and run (as a job uid, in a private
    scratch dir, from the sealed binary) an assembled program, inside the sandbox."""
    with sandbox.new_workdir() as workdir:
        build = sandbox.compile_dir(workdir, "build")
        write_new(build / SOURCE_NAME, program, owner=sandbox.uid)
        built = sandbox.run(
            compile_argv(sandbox, problem, config.edition),
            build,
            compile_limits(config.compile_timeout_s),
        )
        failed = compile_verdict(built, [workdir], config)
        if failed is not None:
            return failed
        seal_binary(build, BINARY_NAME, sandbox.uid)
        runner = sandbox.job_uids[0] if sandbox.isolates_jobs else None
        scratch = sandbox.scratch_dir(workdir, "run", runner)
        ran = sandbox.run(run_argv(problem, str(build / BINARY_NAME)), scratch, run_limits(config.run_timeout_s),
                          uid=runner or "worker")
        return run_verdict(problem, ran, built.seconds, [workdir], config)


def run_verdict(
    problem: Problem, ran: RunResult, compile_seconds: float, workdirs: Sequence[Path], config: ExecutorConfig
) -> Verdict:
    """The verdict of one finished test run (the program compiled)."""
    stdout = ran.stdout.decode("utf-8", "replace")
    if problem.protocol is Protocol.LIBTEST:
        judged = judge_libtest(problem.expected_tests, stdout, ran.returncode, ran.signal, ran.timed_out)
    else:
        judged = judge_main(problem, stdout, ran.returncode, ran.signal, ran.timed_out)
    diagnostic = "" if judged.status is Status.PASSED else excerpt(
        judged.reason + "\n" + ran.stderr.decode("utf-8", "replace") + "\n" + stdout,
        workdirs,
        config.diagnostic_chars,
    )
    return Verdict(
        judged.status,
        tests_passed=judged.tests_passed,
        compile_seconds=compile_seconds,
        run_seconds=ran.seconds,
        diagnostic=diagnostic,
    )


def compile_verdict(built: RunResult, workdirs: Sequence[Path], config: ExecutorConfig) -> Verdict | None:
    """None when the program compiled; otherwise the failing verdict."""
    if built.timed_out:
        return Verdict(
            Status.COMPILE_TIMEOUT,
            compile_seconds=built.seconds,
            diagnostic=f"rustc exceeded {config.compile_timeout_s:g} s",
        )
    if built.returncode == 0 and built.signal is None:
        return None
    report = parse_rustc_json(built.stderr.decode("utf-8", "replace"))
    if report.error_count == 0 and built.signal is None and _looks_like_sandbox_failure(built):
        return Verdict(
            Status.SANDBOX_ERROR,
            compile_seconds=built.seconds,
            diagnostic=excerpt(report.rendered, workdirs, config.diagnostic_chars),
        )
    text = report.rendered
    if built.signal is not None:
        text = f"rustc killed by signal {built.signal} (resource limit?)\n{text}"
    return Verdict(
        Status.COMPILE_ERROR,
        compile_seconds=built.seconds,
        error_codes=report.error_codes,
        diagnostic=excerpt(text, workdirs, config.diagnostic_chars),
    )


def _looks_like_sandbox_failure(built: RunResult) -> bool:
    """rustc failed without a single diagnostic: the launcher, not the program, broke."""
    stderr = built.stderr.decode("utf-8", "replace")
    return "error" not in stderr.lower() or stderr.lstrip().startswith(("bwrap:", "Error:", "firejail"))


def excerpt(text: str, workdirs: Sequence[Path], limit: int) -> str:
    """Bounded diagnostic with host paths replaced, so results never leak temp layout."""
    for workdir in sorted((str(w) for w in workdirs), key=len, reverse=True):
        text = text.replace(workdir, "<work>")
    text = _ABS_PATH.sub(lambda m: "<path>" if not m.group(0).startswith("/rustc/") else m.group(0), text)
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 14] + "\n…[truncated]"
    return text
