"""The validity gate: every reference solution through the exact production executor.

A task whose own reference cannot pass measures nothing; scoring it would cap every model's
pass@k below 1.0 for reasons that have nothing to do with the model. Such tasks are flagged
with the reason and excluded from scores by default (and listed in the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pandas as pd

from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool, judge_records
from tasks.execute import Execution
from tasks.schema import Problem, Status, Validity
from tasks.toolchain import Toolchain


@dataclass(frozen=True)
class GateResult:
    task_id: str
    validity: Validity
    reason: str
    reference_status: str  # the executor's verdict on the reference ("" when none ran)

    def to_row(self) -> dict:
        return {
            "task_id": self.task_id,
            "validity": self.validity.value,
            "validity_reason": self.reason,
            "reference_status": self.reference_status,
        }


def classify(problem: Problem, execution: Execution | None) -> GateResult:
    """Validity of one task from its structure and its reference's verdict."""
    status = execution.verdict.status.value if execution else ""
    if problem.canonical_solution is None:
        return GateResult(problem.task_id, Validity.UNVERIFIED, "no reference solution", status)
    if problem.structural_problem:
        return GateResult(problem.task_id, Validity.NOT_EVALUABLE, problem.structural_problem, status)
    assert execution is not None
    verdict = execution.verdict
    if verdict.status is Status.PASSED:
        return GateResult(problem.task_id, Validity.VALID, "", status)
    if verdict.status is Status.SANDBOX_ERROR:
        raise RuntimeError(f"sandbox failed while checking {problem.task_id}: {verdict.diagnostic}")
    detail = verdict.diagnostic.splitlines()[0] if verdict.diagnostic else ""
    reason = f"reference solution: {verdict.status.value}" + (f" ({detail})" if detail else "")
    return GateResult(problem.task_id, Validity.REFERENCE_FAILS, reason, status)


def run_gate(
    problems: list[Problem],
    config: ExecutorConfig,
    pool: SandboxPool,
    toolchain: Toolchain,
    progress: Callable[[], None] | None = None,
) -> list[GateResult]:
    """Run each reference through the same (batched, deduplicated) path as the samples, policy
    off (references may use anything), and classify the task."""
    with_reference = [p for p in problems if p.canonical_solution is not None]
    records = [{"task_id": p.task_id, "completion": p.canonical_solution} for p in with_reference]
    by_id = {p.task_id: p for p in with_reference}
    judged = judge_records(records, by_id, config, pool, toolchain, progress)
    executions = {p.task_id: j.execution for p, j in zip(with_reference, judged)}
    results = []
    for problem in problems:
        if problem.task_id not in executions and progress:
            progress()
        results.append(classify(problem, executions.get(problem.task_id)))
    return results


def gate_frame(results: list[GateResult]) -> pd.DataFrame:
    return pd.DataFrame([r.to_row() for r in results])


def counts(results: list[GateResult]) -> dict[str, int]:
    out = {v.value: 0 for v in Validity}
    for result in results:
        out[result.validity.value] += 1
    return out
