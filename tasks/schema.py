"""Shared vocabulary of every stage: problems, statuses, verdicts.

Kept dependency-free so the executor core, the metrics and the tests can all import it
without Prefect, pandas or a sandbox.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Protocol(str, Enum):
    """How a benchmark checks a program. Numbers from different protocols are never mixed."""

    LIBTEST = "libtest"  # `#[cfg(test)] mod tests { #[test] fn … }`, built with `rustc --test`
    MAIN = "main"  # `fn main() { assert!(…) }`, built as a program (MultiPL-E)


class Validity(str, Enum):
    """Outcome of the validity gate for one task (its reference run through the executor)."""

    VALID = "valid"
    REFERENCE_FAILS = "reference_fails"  # evaluable, but the reference does not pass
    NOT_EVALUABLE = "not_evaluable"  # the task's tests cannot judge anything (e.g. truncated)
    UNVERIFIED = "unverified"  # no reference solution to check it with (MultiPL-E)


class Status(str, Enum):
    """Per-sample verdict. Only PASSED counts as a pass; every other status is a failure."""

    PASSED = "passed"
    FAILED_TESTS = "failed_tests"
    COMPILE_ERROR = "compile_error"
    COMPILE_TIMEOUT = "compile_timeout"
    TEST_TIMEOUT = "test_timeout"
    RUNTIME_CRASH = "runtime_crash"
    POLICY_VIOLATION = "policy_violation"
    INVALID_COMPLETION = "invalid_completion"
    GENERATION_FAILED = "generation_failed"
    SANDBOX_ERROR = "sandbox_error"


@dataclass(frozen=True)
class Problem:
    """One benchmark task, normalized across sources.

    The program for a completion is `prompt` + completion + `test` (after normalization);
    `expected_tests` are the libtest names (e.g. `tests::test_basic`) that must each report
    `ok` for a pass (empty for the `main` protocol, where the program must run to its end).
    """

    task_id: str
    prompt: str
    test: str
    entry_point: str
    protocol: Protocol
    edition: str = "2021"
    canonical_solution: str | None = None
    category: str = ""
    expected_tests: tuple[str, ...] = ()
    source: str = ""
    # Filled by the loader when the task is structurally unusable (e.g. truncated tests);
    # the validity gate keeps it as NOT_EVALUABLE without trusting a run to find out.
    structural_problem: str | None = None

    def to_row(self) -> dict:
        row = asdict(self)
        row["protocol"] = self.protocol.value
        row["expected_tests"] = list(self.expected_tests)
        return row

    @classmethod
    def from_row(cls, row: dict) -> "Problem":
        data = {k: row.get(k) for k in cls.__dataclass_fields__ if k in row}
        data["protocol"] = Protocol(data["protocol"])
        data["expected_tests"] = tuple(data.get("expected_tests") or ())
        for key in ("edition", "category", "source"):
            if data.get(key) is None:
                data.pop(key, None)
        return cls(**data)


@dataclass
class Verdict:
    """What the executor concluded about one program (one sample, one policy mode)."""

    status: Status
    tests_expected: int = 0
    tests_passed: int = 0
    compile_seconds: float = 0.0
    run_seconds: float = 0.0
    error_codes: list[str] = field(default_factory=list)
    diagnostic: str = ""  # bounded excerpt, temp paths normalized
    completion_form: str = ""  # how the answer was read: continuation, full_function, …
    policy_violations: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.status is Status.PASSED

    def to_row(self) -> dict:
        row = asdict(self)
        row["status"] = self.status.value
        return row
