"""Specification of deduplication: identical programs are judged once, in a run and across runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ExecutorConfig
from tasks.dedup import VerdictCache, judging_context, program_sha256, verdict_key
from tasks.evaluate import JudgeStats, SandboxPool, evaluate_frame, judge_records
from tasks.execute import prepare
from tasks.schema import Problem, Status, Verdict
from tasks.toolchain import find_toolchain
from tests.helpers import add_problem, requires_root

ROOT = Path(__file__).resolve().parent.parent
FIRST_WORKER = 330
ADD = add_problem()
KEY_SCRIPT = """
import sys
from tasks.config import ExecutorConfig
from tasks.dedup import judging_context, verdict_key
from tasks.execute import prepare
sys.path.insert(0, "tests")
from test_dedup import ADD
config = ExecutorConfig()
prepared = prepare(ADD, "    a + b\\n}", config)
print(verdict_key(judging_context(config, "rustc 1.95.0", "bubblewrap 0.8.0"), ADD, prepared.assembly))
print(prepared.program)
"""


@pytest.fixture
def cache_dir():
    path = Path(tempfile.mkdtemp(prefix="ferrisbench-verdicts-"))
    yield path
    shutil.rmtree(path)


def key_for(completion: str, config: ExecutorConfig = ExecutorConfig(), problem: Problem = ADD,
            toolchain: str = "rustc 1.95.0", sandbox: str = "bubblewrap 0.8.0") -> str:
    prepared = prepare(problem, completion, config)
    return verdict_key(judging_context(config, toolchain, sandbox), problem, prepared.assembly)


def test_a_programs_key_is_the_same_in_every_process():
    here = key_for("    a + b\n}")
    done = subprocess.run([sys.executable, "-c", KEY_SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True)
    there, *program = done.stdout.splitlines()
    assert there == here
    # The program itself carries a per-process secret (the harness's sentinel), the key does not.
    assert "\n".join(program).strip() != prepare(ADD, "    a + b\n}", ExecutorConfig()).program.strip()


def test_a_key_changes_with_anything_that_judges_the_program():
    base = key_for("    a + b\n}")
    assert key_for("    a + b\n}") == base
    assert key_for("    b + a\n}") != base
    assert key_for("    a + b\n}", toolchain="rustc 1.96.0") != base
    assert key_for("    a + b\n}", sandbox="firejail 0.9.72") != base
    assert key_for("    a + b\n}", ExecutorConfig(edition="2024")) != base
    assert key_for("    a + b\n}", ExecutorConfig(run_timeout_s=9)) != base
    assert key_for("    a + b\n}", ExecutorConfig(compile_timeout_s=9)) != base
    more_tests = Problem(**{**ADD.__dict__, "expected_tests": ("tests::test_add", "tests::test_more")})
    assert key_for("    a + b\n}", problem=more_tests) != base
    # Throughput settings never change a verdict, so they never change a key.
    assert key_for("    a + b\n}", ExecutorConfig(batch_size=1, workers=7, verdict_cache=False)) == base


def test_a_stored_verdict_reads_back_exactly(cache_dir):
    cache = VerdictCache(cache_dir)
    verdict = Verdict(Status.COMPILE_ERROR, compile_seconds=0.25, error_codes=["E0308", "E0425"],
                      diagnostic="error[E0308]: mismatched types\n --> main.rs:2:5")
    assert cache.put("ab" * 32, verdict) is True
    assert cache.get("ab" * 32) == verdict
    assert cache.get("cd" * 32) is None


@pytest.mark.parametrize("status", [Status.TEST_TIMEOUT, Status.COMPILE_TIMEOUT, Status.SANDBOX_ERROR])
def test_verdicts_a_rerun_might_not_reproduce_are_never_stored(cache_dir, status):
    cache = VerdictCache(cache_dir)
    assert cache.put("ab" * 32, Verdict(status)) is False
    assert cache.get("ab" * 32) is None
    assert list(cache_dir.rglob("*")) == []


def test_an_unreadable_or_foreign_cache_file_is_a_miss(cache_dir):
    cache = VerdictCache(cache_dir)
    cache.put("ab" * 32, Verdict(Status.PASSED, tests_passed=1))
    path = next(cache_dir.rglob("*.json"))
    path.write_text("{ torn")
    assert cache.get("ab" * 32) is None
    path.write_text(json.dumps({"format": "something/else", "key": "ab" * 32, "status": "passed"}))
    assert cache.get("ab" * 32) is None
    shutil.copy(path, path.with_name("cd" * 32 + ".json"))
    assert cache.get("cd" * 32) is None  # a file under another key's name is not that key's verdict


def test_concurrent_writers_of_one_key_leave_one_whole_verdict(cache_dir):
    cache = VerdictCache(cache_dir)
    verdicts = [Verdict(Status.FAILED_TESTS, tests_passed=n, diagnostic="x" * 20_000) for n in range(8)]
    seen: list[Verdict | None] = []

    def write(verdict: Verdict) -> None:
        for _ in range(25):
            cache.put("ef" * 32, verdict)
            seen.append(cache.get("ef" * 32))

    threads = [threading.Thread(target=write, args=(v,)) for v in verdicts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(v in verdicts for v in seen)
    assert [p.name for p in cache_dir.rglob("*") if p.is_file()] == ["ef" * 32 + ".json"]


@requires_root
def test_identical_programs_are_judged_once_per_run_and_then_come_from_the_cache(cache_dir):
    toolchain = find_toolchain()
    work_root = Path(tempfile.mkdtemp(prefix="ferrisbench-dedup-test-", dir="/var/lib"))
    config = ExecutorConfig(sandbox="bubblewrap", workers=2, work_root=work_root, verdict_cache_dir=cache_dir,
                            run_timeout_s=1.5)
    samples = pd.DataFrame({"task_id": [ADD.task_id] * 6, "completion": [
        "    a + b\n}", "    a - b\n}", "    a + b\n}", "```rust\nfn add(a: i64, b: i64) -> i64 {\n    a + b\n}\n```",
        "    a - b\n}", "    loop {}\n}"]})
    try:
        with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
            first_stats, second_stats = JudgeStats(), JudgeStats()
            first = judge_records(samples.to_dict("records"), {ADD.task_id: ADD}, config, pool, toolchain,
                                  stats=first_stats)
            rows = evaluate_frame(samples, {ADD.task_id: ADD}, ["no_policy"], config, pool, toolchain)
            second = judge_records(samples.to_dict("records"), {ADD.task_id: ADD}, config, pool, toolchain,
                                   stats=second_stats)
    finally:
        shutil.rmtree(work_root)
    assert [j.verdict_source for j in first] == ["executed", "executed", "duplicate_in_run", "executed",
                                                 "duplicate_in_run", "executed"]
    assert [j.execution.verdict.status.value for j in first] == ["passed", "failed_tests", "passed", "passed",
                                                                 "failed_tests", "test_timeout"]
    assert first[0].program_sha256 == first[2].program_sha256 == program_sha256(prepare(ADD, "    a + b\n}",
                                                                                         config).assembly)
    assert first[3].execution.verdict.completion_form == "full_function"  # its own form, a verdict of its own
    assert (first_stats.executed, first_stats.duplicates, first_stats.cached) == (4, 2, 0)
    # A rerun reuses every stored verdict; the timeout is judged again (it is never stored).
    assert [j.verdict_source for j in second] == ["cache"] * 5 + ["executed"]
    assert [j.execution.verdict.status for j in second] == [j.execution.verdict.status for j in first]
    assert (second_stats.executed, second_stats.cached) == (1, 5)
    assert rows["verdict_source"].tolist() == ["cache"] * 5 + ["executed"]
    assert rows["program_sha256"].tolist() == [j.program_sha256 for j in first]
