"""Plain helpers shared by several test modules (fixtures stay in the modules; their bodies call these).

- `restored_logging`: body of the autouse fixture of the modules that call `flows.cli.main`.
- `temp_work_root`: a sandbox work root under /var/lib, removed afterwards.
- `claimed_worker`: one sandbox worker id held for the module.
- `requires_root`, `root_or_skip`: the sandbox tests need root; skipped without it, failed under CI=true.
- `add_problem`: the small libtest problem `Test/add`.
- `comparable`, `scores`: a run's results and metrics without what differs between equal runs.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import structlog

from tasks.batch_pool import claim_worker_ids
from tasks.schema import Problem, Protocol

PROVENANCE = ["compile_seconds", "run_seconds", "verdict_source", "program_sha256", "diagnostic"]  # not verdicts


def restored_logging() -> Iterator[None]:
    """`flows.cli.main` points structlog at the sys.stderr of the moment, which is this test's
    capture; later tests must not log into a closed file."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def temp_work_root(prefix: str) -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/lib"))
    yield root
    shutil.rmtree(root)


def claimed_worker(first: int) -> Iterator[int]:
    """A sandbox worker id no other pool on this machine holds while the caller's module runs
    (every run kills the leftover processes of its worker's uid)."""
    [(worker, lock)] = claim_worker_ids(1, first=first)
    yield worker
    os.close(lock)


def root_or_skip() -> None:
    """Body of conftest's `requires_root` fixture. The sandboxes drop root to sandbox uids, so their
    tests need root: elsewhere they are skipped, but under CI=true they fail (a CI without root must
    not be green with the sandbox untested)."""
    if os.geteuid() == 0:
        return
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but not running as root: the sandbox tests need root (the sandboxes drop it "
                    "to sandbox uids); run the suite as root", pytrace=False)
    pytest.skip("the sandboxes drop root to sandbox uids: run as root")


requires_root = pytest.mark.usefixtures("requires_root")  # `pytestmark = requires_root`, or on one test


def add_problem(**extra) -> Problem:
    return Problem(
        task_id="Test/add",
        prompt="/// Adds two numbers.\nfn add(a: i64, b: i64) -> i64 {",
        test="#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn test_add() {\n"
        "        assert_eq!(add(2, 3), 5);\n    }\n}\n",
        entry_point="add",
        protocol=Protocol.LIBTEST,
        expected_tests=("tests::test_add",),
        **extra,
    )


def comparable(run_dir: Path) -> pd.DataFrame:
    results = pd.read_parquet(run_dir / "results.parquet").drop(columns=PROVENANCE)
    return results.sort_values(["policy_mode", "task_id", "sample_index"]).reset_index(drop=True)


def scores(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("aggregate_identity", "results_sha256"):  # hashes of files that hold timings
        metrics["meta"].pop(key)
    return metrics
