"""The nightly deployment of prefect.yaml, against a real Prefect server (`prefect_api`): created by
`prefect deploy` from the checkout with its cron schedule, and a run triggered from it completes
on a real process worker (the reference source on the tiny benchmark, so it is quick)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, cli_env, write_tiny_benchmark
from tests.test_benchmark import fresh_cache

pytestmark = pytest.mark.timeout(600)

PREFECT = str(Path(sys.executable).parent / "prefect")
POOL = "ferrisbench"


def prefect(*args: str, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([PREFECT, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_the_nightly_deployment_has_its_cron_schedule_and_a_triggered_run_completes_on_a_process_worker(
    prefect_api, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    env = cli_env(fresh_cache(tmp_path))
    created = prefect("work-pool", "create", POOL, "--type", "process", env=env)
    assert created.returncode == 0 or "already exists" in created.stdout + created.stderr, created.stderr
    deployed = prefect("--no-prompt", "deploy", "--name", "nightly", env=env)
    assert deployed.returncode == 0, deployed.stdout[-2000:] + deployed.stderr[-2000:]

    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("ferrisbench-benchmark/nightly")
    assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in deployment.schedules] == [
        ("0 2 * * *", "Europe/Berlin", True)]
    assert deployment.parameters == {"config_path": "configs/nightly.yaml", "out": "runs/nightly/{date}"}
    assert deployment.work_pool_name == POOL
    assert deployment.global_concurrency_limit.limit == 1

    config = tmp_path / "tonight.json"
    config.write_text(json.dumps({"benchmark": str(write_tiny_benchmark(tmp_path / "bench.jsonl")),
                                  "executor": {"sandbox": "bubblewrap", "workers": 2}, "show_progress": False}))
    out = tmp_path / "night"
    flow_run = run_deployment("ferrisbench-benchmark/nightly", parameters={"config_path": str(config), "out": str(out)},
                              timeout=0)
    worker = prefect("worker", "start", "--pool", POOL, "--type", "process", "--run-once", env=env, timeout=400)
    assert worker.returncode == 0, worker.stdout[-2000:] + worker.stderr[-2000:]

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.is_completed(), state
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["meta"]["flow_run_id"] == str(flow_run.id)
    assert {mode: group["pass_at_k"]["1"] for mode, group in metrics["groups"]["reference"].items()} == {
        "no_policy": 1.0, "policy": 1.0}
    assert (out / "report.md").exists() and (out / "env.json").exists()
