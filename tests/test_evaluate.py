"""Specification of `evaluate_frame` and the sandbox pool it runs on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pandas as pd
import pytest

from tasks.batch_pool import claim_worker_ids
from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool, batch_size_for, evaluate_frame
from tasks.toolchain import find_toolchain
from tests.helpers import add_problem, requires_root, temp_work_root

ROOT = Path(__file__).resolve().parent.parent
FIRST_WORKER = 360
ADD = add_problem(category="arithmetic")
CLAIM_SCRIPT = """
import sys
from pathlib import Path
from tasks.batch_pool import claim_worker_ids
print(" ".join(str(w) for w, _ in claim_worker_ids(3, int(sys.argv[1]), Path(sys.argv[2]))))
"""
needs_root = requires_root


@pytest.fixture(scope="module")
def toolchain():
    return find_toolchain()


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-evaluate-test-")


@pytest.fixture
def lock_dir():
    path = Path(tempfile.mkdtemp(prefix="ferrisbench-locks-"))
    yield path
    shutil.rmtree(path)


def config_for(work_root: Path, **overrides) -> ExecutorConfig:
    return ExecutorConfig(**{"sandbox": "bubblewrap", "workers": 2, "work_root": work_root, "verdict_cache": False,
                             "run_timeout_s": 2.0, **overrides})


def test_worker_ids_held_by_anyone_else_are_skipped_and_freed_on_close(lock_dir):
    held = claim_worker_ids(3, 50, lock_dir)
    assert [w for w, _ in held] == [50, 51, 52]
    other = subprocess.run([sys.executable, "-c", CLAIM_SCRIPT, "50", str(lock_dir)], cwd=ROOT,
                           capture_output=True, text=True, check=True)
    assert other.stdout.split() == ["53", "54", "55"]  # another process: never the ids held here
    assert [w for w, _ in claim_worker_ids(2, 51, lock_dir)] == [53, 54]  # nor another pool of this one
    for _, fd in held:
        os.close(fd)
    assert [w for w, _ in claim_worker_ids(3, 50, lock_dir)] == [50, 51, 52]


@needs_root
def test_two_pools_at_once_run_as_different_uids_and_return_their_ids(toolchain, work_root, lock_dir):
    config = config_for(work_root)
    first = SandboxPool(config, toolchain, first_worker=FIRST_WORKER, lock_dir=lock_dir)
    second = SandboxPool(config, toolchain, first_worker=FIRST_WORKER, lock_dir=lock_dir)
    assert set(first.worker_ids).isdisjoint(second.worker_ids)
    assert len(first.worker_ids) == 2 + 8  # two workers and their slow lane
    assert {s.uid for s in first.sandboxes + first.slow_sandboxes}.isdisjoint(
        {s.uid for s in second.sandboxes + second.slow_sandboxes})
    ids = first.worker_ids
    first.close()
    second.close()
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER, lock_dir=lock_dir) as third:
        assert third.worker_ids == ids


@needs_root
@pytest.mark.parametrize("batch_size", [1, 64])
def test_every_sample_yields_one_row_per_mode_carrying_its_input_fields(toolchain, work_root, batch_size):
    config = config_for(work_root, batch_size=batch_size)
    samples = pd.DataFrame({"task_id": [ADD.task_id] * 3, "completion": ["    a + b\n}", "    a + b\n}", ""],
                            "sample_index": [0, 1, 2], "model": ["m"] * 3})
    ticks = []
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        rows = evaluate_frame(samples, {ADD.task_id: ADD}, ["no_policy", "policy"], config, pool, toolchain,
                              progress=lambda: ticks.append(1))
    assert len(ticks) == 3
    assert rows[["sample_index", "policy_mode"]].values.tolist() == [
        [0, "no_policy"], [0, "policy"], [1, "no_policy"], [1, "policy"], [2, "no_policy"], [2, "policy"]]
    assert rows["status"].tolist() == ["passed"] * 4 + ["invalid_completion"] * 2
    assert rows["verdict_source"].tolist() == ["executed"] * 2 + ["duplicate_in_run"] * 2 + ["not_run"] * 2
    assert rows["program_sha256"].str.len().tolist() == [64] * 4 + [0] * 2
    assert set(rows["model"]) == {"m"} and set(rows["category"]) == {"arithmetic"}
    assert {"executor_version", "toolchain", "sandbox", "rustc_flags", "edition"} <= set(rows.columns)


@needs_root
def test_two_shards_judged_at_once_on_one_pool_each_get_their_own_verdicts(toolchain, work_root):
    config = config_for(work_root, batch_size=8)
    shards = {
        "right": pd.DataFrame({"task_id": [ADD.task_id] * 10, "completion": [f"    a + b // {n}\n}}" for n in range(10)]}),
        "wrong": pd.DataFrame({"task_id": [ADD.task_id] * 10, "completion": [f"    a - b // {n}\n}}" for n in range(10)]}),
    }
    results = {}
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        def judge(name: str) -> None:
            results[name] = evaluate_frame(shards[name], {ADD.task_id: ADD}, ["no_policy"], config, pool, toolchain)

        threads = [threading.Thread(target=judge, args=(name,)) for name in shards]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert results["right"]["status"].tolist() == ["passed"] * 10
    assert results["wrong"]["status"].tolist() == ["failed_tests"] * 10


def test_batches_are_sized_so_every_worker_stays_busy_to_the_end():
    assert batch_size_for(1024, 128, 2) == 128  # 8 batches, 4 per worker
    assert batch_size_for(600, 128, 2) == 100  # 6 batches rather than 5: no lone last batch
    assert batch_size_for(500, 128, 2) == 125
    assert batch_size_for(60, 128, 2) == 30
    assert batch_size_for(10, 128, 4) == 8  # below 8 programs a batch of its own costs more than it saves
    assert batch_size_for(5000, 1000, 2) == 834
    assert batch_size_for(0, 128, 2) == 8
