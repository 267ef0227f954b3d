"""Reading a verdict out of rustc's and the test binary's output.

A pass is never inferred from an exit code alone: for the libtest protocol every expected test
must report its own `test NAME ... ok` line (the first one for that name: captured output of a
failing test may contain fake lines) and libtest's summary must say `ok`; for the `main`
protocol the harness must print a sentinel after the last assert, which an early
`process::exit(0)` skips. `harden_harness` keeps the completion from disabling the checks.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from functools import lru_cache

from tasks.rust_lexer import IDENT, tokenize
from tasks.schema import Problem, Protocol, Status

_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)\b", re.M)
_SUMMARY = re.compile(r"^test result: (ok|FAILED)\. (\d+) passed; (\d+) failed", re.M)
_MAIN_DEF = re.compile(r"\bfn\s+main\s*\(\s*\)")
HARNESS_MAIN = "__ferrisbench_checks"


def sentinel_for(problem: Problem) -> str:
    """A line only the benchmark's own harness prints, after its last check."""
    digest = hashlib.sha256(("ferrisbench-sentinel\0" + problem.test).encode()).hexdigest()
    return f"FERRISBENCH_CHECKS_DONE_{digest[:24]}"


@lru_cache(maxsize=4096)
def harden_harness(problem: Problem) -> Problem:
    """The benchmark's checks, made immune to what the completion before them can define.

    - A completion ending in a dangling attribute (`#[cfg(any())]`) would attach it to the
      tests' module and compile them away: a throwaway item absorbs it.
    - A completion's `macro_rules! assert_eq { … => {} }` is in textual scope for the tests and
      would turn every check into a no-op: the checks call `::std::` macros by absolute path.
    - MAIN protocol: an early `process::exit(0)` must not look like success: the benchmark's
      `fn main` is renamed and a new one prints a sentinel after it returns.
    """
    test = _ABSORB_DANGLING + _absolute_check_macros(problem.test)
    if problem.protocol is Protocol.MAIN and _MAIN_DEF.search(test):
        test = _MAIN_DEF.sub(f"fn {HARNESS_MAIN}()", test, count=1)
        test += (
            f"\n\nfn main() {{\n    {HARNESS_MAIN}();\n"
            f'    println!("{sentinel_for(problem)}");\n}}\n'
        )
    return replace(problem, test=test)


_ABSORB_DANGLING = "\nconst _: () = ();\n"
_CHECK_MACROS = frozenset(
    {"assert", "assert_eq", "assert_ne", "debug_assert", "debug_assert_eq", "debug_assert_ne", "panic"}
)


def _absolute_check_macros(test: str) -> str:
    """`assert_eq!(…)` → `::std::assert_eq!(…)` for unqualified check macros, token-exact."""
    tokens = tokenize(test)
    edits: list[int] = []
    for index, token in enumerate(tokens):
        if token.kind != IDENT or token.text not in _CHECK_MACROS:
            continue
        if index + 1 >= len(tokens) or not tokens[index + 1].is_punct("!"):
            continue
        if index > 0 and tokens[index - 1].is_punct("::"):
            continue
        edits.append(token.start)
    for start in reversed(edits):
        test = test[:start] + "::std::" + test[start:]
    return test


@dataclass(frozen=True)
class CompileReport:
    error_codes: list[str]
    rendered: str  # human-readable errors, in order
    error_count: int


def parse_rustc_json(stderr: str) -> CompileReport:
    """Error codes and rendered messages from `--error-format=json` output."""
    codes: list[str] = []
    rendered: list[str] = []
    errors = 0
    for line in stderr.splitlines():
        if not line.startswith("{"):
            if line.strip():
                rendered.append(line)  # rustc ICEs and linker noise are not JSON
            continue
        try:
            message = json.loads(line)
        except ValueError:
            rendered.append(line)
            continue
        if message.get("$message_type", "diagnostic") != "diagnostic":
            continue
        if message.get("level") not in {"error", "error: internal compiler error"}:
            continue
        errors += 1
        code = (message.get("code") or {}).get("code")
        if code and code not in codes:
            codes.append(code)
        rendered.append((message.get("rendered") or message.get("message") or "").rstrip())
    return CompileReport(codes, "\n".join(rendered), errors)


@dataclass(frozen=True)
class RunJudgement:
    status: Status
    tests_passed: int
    reason: str


def judge_libtest(
    expected: tuple[str, ...],
    stdout: str,
    returncode: int | None,
    signal: int | None,
    timed_out: bool,
) -> RunJudgement:
    """Verdict of a `rustc --test` binary run against the task's expected test names."""
    first: dict[str, str] = {}
    for name, outcome in _TEST_LINE.findall(stdout):
        first.setdefault(name, outcome)
    passed = sum(1 for name in expected if first.get(name) == "ok")
    summary = _SUMMARY.search(stdout)
    if timed_out:
        return RunJudgement(Status.TEST_TIMEOUT, passed, "test run exceeded its time limit")
    if signal is not None:
        return RunJudgement(Status.RUNTIME_CRASH, passed, f"test binary killed by signal {signal}")
    failed = [name for name in expected if first.get(name) == "FAILED"]
    if failed:
        return RunJudgement(Status.FAILED_TESTS, passed, "failed: " + ", ".join(failed))
    missing = [name for name in expected if first.get(name) != "ok"]
    if missing:
        if returncode not in (0, 101):
            return RunJudgement(
                Status.RUNTIME_CRASH, passed, f"exited {returncode} before: " + ", ".join(missing)
            )
        return RunJudgement(Status.FAILED_TESTS, passed, "did not run: " + ", ".join(missing))
    if returncode != 0 or summary is None or summary.group(1) != "ok":
        status = Status.FAILED_TESTS if returncode in (0, 101) else Status.RUNTIME_CRASH
        return RunJudgement(status, passed, f"exit code {returncode}, summary {bool(summary)}")
    return RunJudgement(Status.PASSED, passed, "")


def judge_main(
    problem: Problem,
    stdout: str,
    returncode: int | None,
    signal: int | None,
    timed_out: bool,
) -> RunJudgement:
    """Verdict of a `fn main` + asserts program: it must reach the harness's sentinel."""
    if timed_out:
        return RunJudgement(Status.TEST_TIMEOUT, 0, "program exceeded its time limit")
    if signal is not None:
        return RunJudgement(Status.RUNTIME_CRASH, 0, f"program killed by signal {signal}")
    reached_end = any(line.strip() == sentinel_for(problem) for line in stdout.splitlines())
    if returncode == 0 and reached_end:
        return RunJudgement(Status.PASSED, 1, "")
    if returncode == 101:
        return RunJudgement(Status.FAILED_TESTS, 0, "an assertion failed (panic)")
    if returncode == 0:
        return RunJudgement(Status.FAILED_TESTS, 0, "exited 0 before the checks finished")
    return RunJudgement(Status.RUNTIME_CRASH, 0, f"exited {returncode} before the checks finished")
