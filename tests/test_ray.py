"""Specification of scale-out: the same flow on a Ray cluster gives the local runner's results.

The test starts a real single-node Ray cluster (`ray start --head`, on loopback only) and runs
`ferrisbench evaluate --ray-address …` against it; shard tasks run in Ray worker processes and
report to the session's Prefect server.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import REFERENCE_SHARD_SIZE, cli_env, die_with_parent, ferrisbench_command, free_port, stop_process_group

pytest.importorskip("prefect_ray", reason="the 'ray' extra is not installed")

from flows.runtime import PipelineSetupError, check_runner_setup  # noqa: E402
from tasks.shards import read_attempts  # noqa: E402
from tests.helpers import comparable, scores  # noqa: E402

LOOPBACK_ONLY = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}  # Ray then binds 127.0.0.1, not the host's address


@pytest.fixture(scope="module")
def ray_address(prefect_api, tmp_path_factory):
    port, client_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("ray") / "ray.log"
    command = [
        str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
        f"--port={port}", f"--ray-client-server-port={client_port}", "--num-cpus=2", "--include-dashboard=false",
        "--disable-usage-stats", "--object-store-memory=100000000",
    ]
    with open(log, "wb") as out:
        head = subprocess.Popen(command, env={**os.environ, **LOOPBACK_ONLY}, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=die_with_parent)
    try:
        deadline = time.monotonic() + 120
        while b"Ray runtime started" not in log.read_bytes():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"ray head did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.25)
        yield f"127.0.0.1:{port}"
    finally:
        stop_process_group(head, grace_s=3)


def test_the_ray_runner_and_the_local_runner_give_identical_results(ray_address, reference_run, tiny_run_inputs, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName

    run_dir = tmp_path / "run"
    done = subprocess.run(
        ferrisbench_command(
            "evaluate", str(tiny_run_inputs["samples"]), "--benchmark", str(tiny_run_inputs["benchmark"]),
            "--out", str(run_dir), "--shard-size", str(REFERENCE_SHARD_SIZE), "--workers", "2", "--no-progress",
            "--ray-address", ray_address,
        ),
        env=cli_env(tiny_run_inputs["cache"], **LOOPBACK_ONLY), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [attempt] = read_attempts(run_dir)
    assert attempt["runner"] == "ray"
    assert attempt["shards_computed"] == reference_run["outcome"]["attempt"]["shards_total"]
    pd.testing.assert_frame_equal(comparable(run_dir), comparable(reference_run["dir"]))
    assert scores(run_dir) == scores(reference_run["dir"])

    # The Ray workers reported their task runs to this session's API, not to servers of their own.
    with get_client(sync_client=True) as client:
        [flow_run] = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"evaluate demo · both · {attempt['run_id']}"])),
            sort="START_TIME_DESC", limit=1,
        )
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id={"any_": [flow_run.id]}))
    shard_runs = [run for run in task_runs if run.name.startswith("evaluate demo shard")]
    assert len(shard_runs) == attempt["shards_total"]
    assert {run.state_type.value for run in shard_runs} == {"COMPLETED"}


def test_a_ray_run_without_a_prefect_server_is_refused_before_it_starts(prefect_api, reference_run):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    config = reference_run["config"].model_copy(update={"ray_address": "127.0.0.1:1"})
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        with pytest.raises(PipelineSetupError, match="a Ray run needs a Prefect server that every Ray worker can reach"):
            check_runner_setup(config)
