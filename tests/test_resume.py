"""Specification of resume: a run SIGKILLed anywhere continues to exactly the uninterrupted result.

Each run is the real `ferrisbench evaluate` command in its own process group, reporting to the
session's Prefect server. To kill it at an exact place (inside a shard between its two policy
modes' files, between two shards, inside the aggregate) the test sets FERRISBENCH_TEST_PAUSE_AT:
the run writes a marker at that point and sleeps, and the test SIGKILLs the whole group. One run
is also killed at an arbitrary moment, with no hook at all.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REFERENCE_SHARD_SIZE, SAMPLES_PER_TASK, TASKS, cli_env, die_with_parent, ferrisbench_command
from tasks.artifacts import check_shard, manifest_path_for
from tasks.shards import TEST_PAUSE_ENV, TEST_PAUSE_MARKER_ENV, read_attempts, results_shard_path
from tests.helpers import comparable, scores

SHARD_SIZE = REFERENCE_SHARD_SIZE
SHARDS = -(-TASKS * SAMPLES_PER_TASK // SHARD_SIZE)
MODES = ("no_policy", "policy")
# Not verdicts, and different in every process: timings, whether a verdict came from the cache of an
# earlier run, and the program text and diagnostics, which carry the harness's per-process secret.
RUN_TIMEOUT_S = 180


def evaluate_args(inputs: dict, run_dir: Path, parallel_shards: int = 1) -> list[str]:
    return ferrisbench_command(
        "evaluate", str(inputs["samples"]), "--benchmark", str(inputs["benchmark"]), "--out", str(run_dir),
        "--shard-size", str(SHARD_SIZE), "--workers", "2", "--parallel-shards", str(parallel_shards), "--no-progress",
    )


def run_to_end(args: list[str], inputs: dict) -> subprocess.CompletedProcess:
    done = subprocess.run(args, env=cli_env(inputs["cache"]), capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def kill_at(point: str, args: list[str], inputs: dict, tmp_path: Path) -> None:
    """Start the run, wait until it reaches `point`, SIGKILL its process group."""
    marker = tmp_path / f"reached-{point}"
    env = cli_env(inputs["cache"], **{TEST_PAUSE_ENV: point, TEST_PAUSE_MARKER_ENV: str(marker)})
    log = tmp_path / f"run-{point}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                   preexec_fn=die_with_parent)
    try:
        wait_until(lambda: marker.exists(), process, log)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL


def wait_until(condition, process: subprocess.Popen, log: Path, timeout_s: float = RUN_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"run ended (exit {process.returncode}) before the kill point:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"kill point not reached in {timeout_s} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def valid_results_shards(run_dir: Path) -> dict[str, tuple[int, int]]:
    """Results shards that are complete on disk: relative path → (inode, mtime_ns)."""
    valid = {}
    for mode in MODES:
        for index in range(SHARDS):
            path = results_shard_path(run_dir, "demo", mode, index)
            manifest = manifest_path_for(path)
            if manifest.exists() and check_shard(path, json.loads(manifest.read_text())["identity"]).problem is None:
                stat = path.stat()
                valid[f"{mode}/{index}"] = (stat.st_ino, stat.st_mtime_ns)
    return valid


def finished_shards(valid: dict) -> int:
    return sum(all(f"{mode}/{index}" in valid for mode in MODES) for index in range(SHARDS))


def untouched(before: dict, after: dict) -> bool:
    """Every shard that was complete before is still the very same file."""
    return all(after.get(key) == stamp for key, stamp in before.items())


@pytest.fixture(scope="module")
def uninterrupted(reference_run) -> Path:
    return reference_run["dir"]


def test_a_run_killed_in_a_shard_between_shards_and_in_the_aggregate_resumes_to_the_same_results(
    uninterrupted, tiny_run_inputs, tmp_path
):
    run_dir = tmp_path / "run"
    args = evaluate_args(tiny_run_inputs, run_dir)

    kill_at("shard-1-partial", args, tiny_run_inputs, tmp_path)  # shard 1: no_policy written, policy not
    first = valid_results_shards(run_dir)
    assert sorted(first) == ["no_policy/0", "no_policy/1", "policy/0"]
    assert not (run_dir / "results.parquet").exists() and read_attempts(run_dir) == []

    kill_at("after-shard-3", args, tiny_run_inputs, tmp_path)  # between shards 3 and 4
    second = valid_results_shards(run_dir)
    assert untouched(first, second)
    assert sorted(set(second) - set(first)) == ["no_policy/2", "no_policy/3", "policy/1", "policy/2", "policy/3"]

    kill_at("aggregate", args, tiny_run_inputs, tmp_path)  # results merged, metrics not yet written
    third = valid_results_shards(run_dir)
    assert untouched(second, third)
    assert sorted(set(third) - set(second)) == ["no_policy/4", "policy/4"]
    assert (run_dir / "results.parquet").exists() and not (run_dir / "metrics.json").exists()

    done = run_to_end(ferrisbench_command("resume", str(run_dir), "--no-progress"), tiny_run_inputs)
    assert f"shards: 0 computed, {SHARDS} reused (of {SHARDS}); aggregate computed" in done.stdout
    assert untouched(third, valid_results_shards(run_dir))
    [attempt] = read_attempts(run_dir)  # the killed attempts left no line
    assert (attempt["shards_computed"], attempt["shards_reused"], attempt["samples_judged"]) == (0, SHARDS, 0)
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(uninterrupted))
    results = pd.read_parquet(run_dir / "results.parquet")
    assert len(results) == TASKS * SAMPLES_PER_TASK * len(MODES)
    assert not results.duplicated(["model", "policy_mode", "task_id", "sample_index"]).any()
    assert scores(run_dir) == scores(uninterrupted)


def test_a_run_killed_at_an_arbitrary_moment_recomputes_only_its_unfinished_shards(
    uninterrupted, tiny_run_inputs, tmp_path
):
    run_dir = tmp_path / "run"
    args = evaluate_args(tiny_run_inputs, run_dir, parallel_shards=2)
    log = tmp_path / "killed.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(args, env=cli_env(tiny_run_inputs["cache"]), stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent)
    first_manifest = manifest_path_for(results_shard_path(run_dir, "demo", "no_policy", 0)).parent
    try:
        wait_until(lambda: first_manifest.is_dir() and any(first_manifest.glob("*.manifest.json")), process, log)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    before = valid_results_shards(run_dir)
    finished = finished_shards(before)
    assert finished < SHARDS

    done = run_to_end(args, tiny_run_inputs)
    [attempt] = read_attempts(run_dir)
    assert (attempt["shards_computed"], attempt["shards_reused"]) == (SHARDS - finished, finished)
    assert f"shards: {SHARDS - finished} computed, {finished} reused" in done.stdout
    assert untouched(before, valid_results_shards(run_dir))
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(uninterrupted))
    assert scores(run_dir) == scores(uninterrupted)
