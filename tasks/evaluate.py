"""Evaluate many samples on all cores: one sandbox (own uid, own work dirs) per worker.

Pure stage logic, no Prefect: the flows call `evaluate_frame` once per shard.
Every input row yields one result row per policy mode, always, carrying every input field.
"""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable

import pandas as pd
import structlog

from tasks.config import ExecutorConfig
from tasks.execute import EXECUTOR_VERSION, RUSTC_FLAGS, Execution, execute
from tasks.policy import POLICY_VERSION
from tasks.sandbox import Sandbox, make_sandbox
from tasks.schema import Problem, Status, Verdict
from tasks.toolchain import Toolchain

log = structlog.get_logger(__name__)


class SandboxPool:
    """Worker-private sandboxes handed out to threads, so no two runs share a uid or dir."""

    def __init__(self, config: ExecutorConfig, toolchain: Toolchain):
        self.sandboxes = [
            make_sandbox(config.sandbox.value, toolchain, worker=i, work_root=config.work_root)
            for i in range(config.workers)
        ]
        self._free: queue.Queue[Sandbox] = queue.Queue()
        for sandbox in self.sandboxes:
            self._free.put(sandbox)

    def identity(self) -> str:
        return self.sandboxes[0].identity()

    def self_check(self) -> None:
        self.sandboxes[0].self_check()

    def map(self, func: Callable, items: Iterable, on_done: Callable[[], None] | None = None) -> list:
        def work(item):
            sandbox = self._free.get()
            try:
                return func(item, sandbox)
            finally:
                self._free.put(sandbox)
                if on_done:
                    on_done()

        with ThreadPoolExecutor(max_workers=len(self.sandboxes)) as threads:
            return list(threads.map(work, items))


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

    def judge(record: dict, sandbox: Sandbox) -> Execution:
        if record.get("generation_status") == Status.GENERATION_FAILED.value:
            return Execution(Verdict(Status.GENERATION_FAILED, diagnostic="generation failed"))
        problem = problems[record["task_id"]]
        try:
            return execute(problem, record["completion"], sandbox, config)
        except Exception as exc:  # the sandbox itself broke: score it, never drop the row
            log.error("sandbox_failure", task_id=record["task_id"], error=repr(exc))
            return Execution(Verdict(Status.SANDBOX_ERROR, diagnostic=f"executor error: {exc!r}"[:500]))

    executions = pool.map(judge, records, on_done=progress)
    identity = execution_identity(config, toolchain, pool.identity())
    rows = []
    for record, execution in zip(records, executions):
        problem = problems[record["task_id"]]
        for mode in modes:
            verdict = execution.for_mode(mode).to_row()
            verdict["policy_violations"] = list(execution.violations)
            if not verdict["tests_expected"]:
                verdict["tests_expected"] = max(len(problem.expected_tests), 1)
            rows.append(
                {
                    **record,
                    "policy_mode": mode,
                    **verdict,
                    "category": problem.category,
                    **identity,
                }
            )
    return pd.DataFrame(rows)
