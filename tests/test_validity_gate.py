"""Specification of the validity gate on the real seed benchmark: every HumanEval-Rust 3.0.0
reference goes through the production executor in a real sandbox, and the task table comes out
as measured in FACTS.md — 146 valid, 2 whose reference fails its own test, 32 not evaluable —
on bubblewrap and on firejail alike. MultiPL-E has no references: every task is unverified.

The gate caches its table under `<cache>/gate/`; these tests use a fresh cache (keeping the
downloaded wheel) so the gate really runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flows.cli import main as cli_main
from flows.gate import validity_table
from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool
from tasks.problems import default_cache_dir, load_benchmark
from tasks.toolchain import find_toolchain
from tests.helpers import requires_root, restored_logging, temp_work_root

REFERENCE_FAILS = {
    "CodeGen/14a016b2fdd7": "reference solution: failed_tests (failed: tests::test_longest)",
    "Transform/39f0fc19cf01": "reference solution: failed_tests (failed: tests::count_various_lengths)",
}
_SHARED_BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = _SHARED_BESIDE_REPO if _SHARED_BESIDE_REPO.is_dir() else Path("/work/shared/datasets")
REWORDED = DATASETS / "humaneval-rs-reworded.jsonl"

pytestmark = requires_root



@pytest.fixture(autouse=True)
def restore_logging():
    yield from restored_logging()


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory) -> Path:
    """An empty ferrisbench cache that shares only the already-downloaded wheel."""
    cache = tmp_path_factory.mktemp("ferrisbench-cache")
    (cache / "wheels").symlink_to(default_cache_dir() / "wheels", target_is_directory=True)
    return cache


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-gate-test-")


@pytest.fixture(scope="module")
def humaneval(fresh_cache):
    return load_benchmark("humaneval-rust", cache_dir=fresh_cache)


@pytest.fixture(scope="module")
def toolchain():
    return find_toolchain()


@pytest.fixture(scope="module", params=["bubblewrap", "firejail"])
def gate(request, humaneval, toolchain, work_root, fresh_cache):
    config = ExecutorConfig(sandbox=request.param, workers=2, work_root=work_root)
    pool = SandboxPool(config, toolchain)
    pool.self_check()
    table = validity_table(humaneval, config, pool, toolchain, cache_dir=fresh_cache, show_progress=False)
    return request.param, table


def test_gate_counts_146_valid_2_reference_fails_32_not_evaluable(gate):
    _, table = gate
    assert len(table) == 180
    assert table["validity"].value_counts().to_dict() == {"valid": 146, "not_evaluable": 32, "reference_fails": 2}


def test_gate_names_exactly_the_two_tasks_whose_reference_fails_and_why(gate):
    _, table = gate
    failing = table[table["validity"] == "reference_fails"]
    assert dict(zip(failing["task_id"], failing["validity_reason"])) == REFERENCE_FAILS
    assert set(failing["reference_status"]) == {"failed_tests"}


def test_gate_marks_the_truncated_test_modules_not_evaluable_without_trusting_a_run(gate, humaneval):
    _, table = gate
    structural = humaneval.structural_problems()
    not_evaluable = table[table["validity"] == "not_evaluable"]
    assert set(not_evaluable["task_id"]) == set(structural) and len(structural) == 32
    reasons = dict(zip(not_evaluable["task_id"], not_evaluable["validity_reason"]))
    assert reasons == structural


def test_every_valid_task_has_a_passing_reference(gate):
    _, table = gate
    valid = table[table["validity"] == "valid"]
    assert set(valid["reference_status"]) == {"passed"} and set(valid["validity_reason"]) == {""}


def test_gate_result_is_cached_per_sandbox(gate, fresh_cache):
    kind, _ = gate
    cached = sorted((fresh_cache / "gate").glob("*.parquet"))
    assert len(cached) == {"bubblewrap": 1, "firejail": 2}[kind]  # params run in this order


def test_multipl_e_tasks_are_all_unverified_without_running_anything(toolchain, work_root, fresh_cache):
    problems = load_benchmark(f"multipl-e:{REWORDED}")
    config = ExecutorConfig(sandbox="bubblewrap", workers=1, work_root=work_root)
    table = validity_table(problems, config, SandboxPool(config, toolchain), toolchain,
                           cache_dir=fresh_cache, show_progress=False)
    assert len(table) == 156
    assert set(table["validity"]) == {"unverified"}
    assert set(table["validity_reason"]) == {"no reference solution"} and set(table["reference_status"]) == {""}


def test_problems_validate_json_reports_counts_and_each_invalid_task(monkeypatch, capsys, fresh_cache, humaneval):
    monkeypatch.setenv("FERRISBENCH_CACHE", str(fresh_cache))
    code = cli_main(["problems", "validate", "--benchmark", "humaneval-rust", "--json",
                     "--sandbox", "bubblewrap", "--workers", "2", "--no-progress"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"benchmark", "problems_hash", "sandbox", "counts", "invalid"}
    assert report["benchmark"] == "humaneval-rust"
    assert report["problems_hash"] == humaneval.content_hash
    assert report["sandbox"].startswith("bubblewrap ")
    assert report["counts"] == {"not_evaluable": 32, "reference_fails": 2, "valid": 146}
    assert len(report["invalid"]) == 34
    assert {task: entry["reason"] for task, entry in report["invalid"].items()
            if entry["validity"] == "reference_fails"} == REFERENCE_FAILS
    structural = humaneval.structural_problems()
    assert {task: entry for task, entry in report["invalid"].items() if entry["validity"] == "not_evaluable"} == {
        task: {"validity": "not_evaluable", "reason": reason} for task, reason in structural.items()}


def test_problems_validate_table_lists_every_task_and_the_counts(monkeypatch, capsys, fresh_cache):
    monkeypatch.setenv("FERRISBENCH_CACHE", str(fresh_cache))
    code = cli_main(["problems", "validate", "--benchmark", "humaneval-rust", "--sandbox", "bubblewrap",
                     "--workers", "2", "--no-progress"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "not_evaluable: 32, reference_fails: 2, valid: 146"
    assert len(lines) == 181
    assert sum(line.split()[1] == "reference_fails" for line in lines[:-1]) == 2
