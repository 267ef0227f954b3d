"""Specification of stopping a run: SIGTERM mid-evaluation ends `ferrisbench evaluate` within seconds, with
one line saying so and exit status 143 (128 + SIGTERM), its flow run marked Crashed, and the run directory
resumable to exactly the uninterrupted result.

The signal goes to the command's process only (`kill PID`), the case where nothing else is told to stop.
One run is stopped while a shard task is stuck (the pause hook of test_resume sleeps in it for 10
minutes, as a shard waiting on hung sandboxed jobs would): the command must not wait for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from conftest import cli_env, die_with_parent, ferrisbench_command
from tasks.shards import TEST_PAUSE_ENV, TEST_PAUSE_MARKER_ENV, results_shard_path
from test_resume import SHARDS, evaluate_args, run_to_end, valid_results_shards, wait_until
from tests.helpers import comparable, scores

EXIT_ON_SIGTERM = 128 + signal.SIGTERM
PROMPT_S = 10.0


def start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=die_with_parent)


def terminate(process: subprocess.Popen, log: Path) -> tuple[float, str]:
    """SIGTERM the command's process (not its group); seconds until it exited, and its output."""
    sent = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    try:
        process.wait(PROMPT_S + 20)
    except subprocess.TimeoutExpired:
        pass
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
        except ProcessLookupError:
            pass
        process.wait()
    return time.monotonic() - sent, log.read_text()


def assert_stopped_cleanly(process: subprocess.Popen, seconds: float, output: str, run_dir: Path) -> None:
    assert seconds < PROMPT_S, output[-3000:]
    assert process.returncode == EXIT_ON_SIGTERM, output[-3000:]
    assert "Traceback" not in output
    assert (f"ferrisbench: stopped by SIGTERM; the run directory {run_dir} is kept: rerun the same command, "
            f"or `ferrisbench resume {run_dir}`, to finish it") in output.splitlines()
    assert not (run_dir / "metrics.json").exists()


def flow_runs_since(started: datetime) -> tuple[list, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter, FlowRunFilterDeploymentId, FlowRunFilterStartTime, TaskRunFilter,
    )

    # Runs the CLI started (no deployment): other tests' deployments schedule runs on the same server.
    cli_runs = FlowRunFilter(start_time=FlowRunFilterStartTime(after_=started),
                             deployment_id=FlowRunFilterDeploymentId(is_null_=True))
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=cli_runs)
        tasks = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [run.id for run in runs]}),
                                      task_run_filter=TaskRunFilter()) if runs else []
    return runs, tasks


@pytest.fixture(scope="module")
def uninterrupted(reference_run) -> Path:
    return reference_run["dir"]


def test_sigterm_does_not_wait_for_a_stuck_shard_marks_the_flow_run_crashed_and_the_rerun_finishes(
    uninterrupted, tiny_run_inputs, prefect_api, tmp_path
):
    run_dir = tmp_path / "run"
    args = evaluate_args(tiny_run_inputs, run_dir)
    marker = tmp_path / "reached"
    env = cli_env(tiny_run_inputs["cache"], **{TEST_PAUSE_ENV: "shard-1-partial", TEST_PAUSE_MARKER_ENV: str(marker)})
    log = tmp_path / "stopped.log"
    started = datetime.now(timezone.utc)
    process = start(args, env, log)
    wait_until(marker.exists, process, log)  # shard 1's task sleeps between its two policy modes' files
    seconds, output = terminate(process, log)
    assert_stopped_cleanly(process, seconds, output, run_dir)
    assert sorted(valid_results_shards(run_dir)) == ["no_policy/0", "no_policy/1", "policy/0"]

    runs, tasks = flow_runs_since(started)
    assert [(run.name.split(" · ")[0], run.state.type.value) for run in runs] == [("evaluate demo", "CRASHED")]
    assert "stopped by SIGTERM" in runs[0].state.message
    states = {task.name: task.state.type.value for task in tasks if task.name.startswith("evaluate demo")}
    assert states.keys() == {"evaluate demo shard 1/5 [no_policy+policy]", "evaluate demo shard 2/5 [no_policy+policy]"}
    assert states["evaluate demo shard 2/5 [no_policy+policy]"] == "CRASHED"  # the stuck one
    # Shard 1's files are complete; under load its COMPLETED state may not have reached the API yet.
    assert states["evaluate demo shard 1/5 [no_policy+policy]"] in ("COMPLETED", "CRASHED")
    assert not [task for task in tasks if task.state.type.value == "RUNNING"]

    done = run_to_end(args, tiny_run_inputs)
    assert f"shards: {SHARDS - 1} computed, 1 reused (of {SHARDS})" in done.stdout
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(uninterrupted))
    assert scores(run_dir) == scores(uninterrupted)


def test_sigterm_mid_evaluation_exits_promptly_and_resume_completes_the_run(uninterrupted, tiny_run_inputs, tmp_path):
    run_dir = tmp_path / "run"
    args = evaluate_args(tiny_run_inputs, run_dir, parallel_shards=2) + ["--no-verdict-cache"]  # really judging
    log = tmp_path / "stopped.log"
    process = start(args, cli_env(tiny_run_inputs["cache"]), log)
    first = results_shard_path(run_dir, "demo", "no_policy", 0)
    wait_until(lambda: first.parent.is_dir() and any(first.parent.glob("*.manifest.json")), process, log)
    seconds, output = terminate(process, log)
    assert_stopped_cleanly(process, seconds, output, run_dir)

    done = run_to_end(ferrisbench_command("resume", str(run_dir), "--no-progress"), tiny_run_inputs)
    assert "aggregate computed" in done.stdout
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(uninterrupted))
    assert scores(run_dir) == scores(uninterrupted)
