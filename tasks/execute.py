"""The executor: completion → program → sandboxed compile → sandboxed test run → verdict.

One code path serves the validity gate, the per-sample evaluation and the self-checks, so a
reference is judged exactly the way a model's answer is. Policy is a pure function of the
completion, so one execution yields both the `no_policy` and the `policy` verdict.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from tasks import completion as completion_forms
from tasks import policy
from tasks.config import ExecutorConfig
from tasks.sandbox import Limits, RunResult, Sandbox, compile_limits, run_limits
from tasks.schema import Problem, Protocol, Status, Verdict
from tasks.verdict import judge_libtest, judge_main, parse_rustc_json, harden_harness

log = structlog.get_logger(__name__)

EXECUTOR_VERSION = "1"
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


def compile_argv(sandbox: Sandbox, problem: Problem, edition: str) -> list[str]:
    argv = [sandbox.rustc, "--edition", edition, "--error-format=json", *RUSTC_FLAGS]
    if problem.protocol is Protocol.LIBTEST:
        argv.append("--test")
    return [*argv, SOURCE_NAME, "-o", BINARY_NAME]


def run_argv(problem: Problem) -> list[str]:
    if problem.protocol is Protocol.LIBTEST:
        # One thread: deterministic output order, so duplicates and reruns read the same.
        return [f"./{BINARY_NAME}", "--test-threads=1", "--color=never"]
    return [f"./{BINARY_NAME}"]


def execute(problem: Problem, raw_completion, sandbox: Sandbox, config: ExecutorConfig) -> Execution:
    """Judge one completion of `problem` (never raises for anything the completion does)."""
    expected = len(problem.expected_tests) if problem.protocol is Protocol.LIBTEST else 1
    try:
        text = completion_forms.validate_raw(raw_completion, config.max_completion_bytes)
        normalized = completion_forms.normalize(harden_harness(problem), text)
    except completion_forms.InvalidCompletion as exc:
        verdict = Verdict(Status.INVALID_COMPLETION, tests_expected=expected, diagnostic=str(exc))
        return Execution(verdict)
    violations = [f"{v.rule}: {v.detail} (line {v.line})" for v in policy.scan(normalized.code)]
    verdict = run_program(problem, normalized.program, sandbox, config)
    verdict.completion_form = normalized.form
    verdict.tests_expected = expected
    return Execution(verdict, violations)


def run_program(problem: Problem, program: str, sandbox: Sandbox, config: ExecutorConfig) -> Verdict:
    """Compile and run an assembled program in a fresh work dir inside the sandbox."""
    with sandbox.new_workdir() as workdir:
        (workdir / SOURCE_NAME).write_text(program, encoding="utf-8")
        built = sandbox.run(
            compile_argv(sandbox, problem, config.edition),
            workdir,
            compile_limits(config.compile_timeout_s),
        )
        compile_verdict = _compile_verdict(built, workdir, config)
        if compile_verdict is not None:
            return compile_verdict
        ran = sandbox.run(run_argv(problem), workdir, run_limits(config.run_timeout_s))
        stdout = ran.stdout.decode("utf-8", "replace")
        if problem.protocol is Protocol.LIBTEST:
            judged = judge_libtest(
                problem.expected_tests, stdout, ran.returncode, ran.signal, ran.timed_out
            )
        else:
            judged = judge_main(problem, stdout, ran.returncode, ran.signal, ran.timed_out)
        diagnostic = "" if judged.status is Status.PASSED else _excerpt(
            judged.reason + "\n" + ran.stderr.decode("utf-8", "replace") + "\n" + stdout,
            workdir,
            config.diagnostic_chars,
        )
        return Verdict(
            judged.status,
            tests_passed=judged.tests_passed,
            compile_seconds=built.seconds,
            run_seconds=ran.seconds,
            diagnostic=diagnostic,
        )


def _compile_verdict(built: RunResult, workdir: Path, config: ExecutorConfig) -> Verdict | None:
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
            diagnostic=_excerpt(report.rendered, workdir, config.diagnostic_chars),
        )
    text = report.rendered
    if built.signal is not None:
        text = f"rustc killed by signal {built.signal} (resource limit?)\n{text}"
    return Verdict(
        Status.COMPILE_ERROR,
        compile_seconds=built.seconds,
        error_codes=report.error_codes,
        diagnostic=_excerpt(text, workdir, config.diagnostic_chars),
    )


def _looks_like_sandbox_failure(built: RunResult) -> bool:
    """rustc failed without a single diagnostic: the launcher, not the program, broke."""
    stderr = built.stderr.decode("utf-8", "replace")
    return "error" not in stderr.lower() or stderr.lstrip().startswith(("bwrap:", "Error:", "firejail"))


def _excerpt(text: str, workdir: Path, limit: int) -> str:
    """Bounded diagnostic with host paths replaced, so results never leak temp layout."""
    text = text.replace(str(workdir), "<work>")
    text = _ABS_PATH.sub(lambda m: "<path>" if not m.group(0).startswith("/rustc/") else m.group(0), text)
    text = text.strip()
    if len(text) > limit:
        text = text[: limit - 14] + "\n…[truncated]"
    return text
