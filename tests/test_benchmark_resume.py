"""Kill the `benchmark` command (SIGKILL, its whole process group) mid-generation and then
mid-evaluation, rerun it on the same directory: the result equals an uninterrupted run's. The
background judging of generated shards (the overlap, tasks.prejudge) is on throughout, so the
mid-generation kill also lands while it works.

The kills land at exact points through the stages' test hook (FERRISBENCH_TEST_PAUSE_AT: the
process writes a marker and sleeps there). Two sources with several shards each, on the tiny
benchmark, so every stage has finished and unfinished shards at the moment of the kill.
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

from tasks.shards import TEST_PAUSE_ENV, TEST_PAUSE_MARKER_ENV
from tests.conftest import cli_env, ferrisbench_command, stop_process_group, write_tiny_benchmark, write_tiny_samples
from tests.test_benchmark import fresh_cache, run_benchmark

pytestmark = pytest.mark.timeout(600)


def write_config(root: Path) -> Path:
    config = {
        "benchmark": str(write_tiny_benchmark(root / "bench.jsonl")),
        "models": [{"model": f"demo=import:{write_tiny_samples(root / 'samples.jsonl')}"}, {"model": "reference"}],
        "generation": {"samples": 4, "shard_tasks": 3},  # 4 generation shards per model
        "executor": {"sandbox": "bubblewrap", "workers": 2},
        "shard_size": 8,  # 6 evaluation shards per model
    }
    path = root / "config.json"
    path.write_text(json.dumps(config))
    return path


def killed_at(point: str, config: Path, out: Path, cache: Path, root: Path) -> None:
    """Start the command, wait until it sleeps at `point`, SIGKILL its process group."""
    marker = root / f"paused-{point.replace(':', '-')}"
    env = cli_env(cache, **{TEST_PAUSE_ENV: point, TEST_PAUSE_MARKER_ENV: str(marker)})
    log = root / f"{marker.name}.log"
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            ferrisbench_command("benchmark", "--no-progress", "--config", str(config), "--out", str(out)),
            stdout=sink, stderr=subprocess.STDOUT, env=env, cwd=root, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, f"exited {process.returncode} before {point}:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"{point} not reached:\n{log.read_text()[-3000:]}"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(30)
    finally:
        stop_process_group(process)


def verdicts(out: Path) -> pd.DataFrame:
    columns = ["model", "task_id", "sample_index", "policy_mode", "status", "tests_passed", "completion"]
    frame = pd.read_parquet(out / "evaluation" / "results.parquet", columns=columns)
    return frame.sort_values(columns[:4]).reset_index(drop=True)


def test_a_benchmark_killed_mid_generation_and_mid_evaluation_resumes_to_the_uninterrupted_result(prefect_api, tmp_path):
    config = write_config(tmp_path)
    cache = fresh_cache(tmp_path)
    full = run_benchmark("--config", str(config), "--out", str(tmp_path / "a" / "full"), cache=cache, cwd=tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    # Generation and evaluation overlap: every generated shard was judged in the background, so the
    # evaluate stage executed nothing (a program the overlap judged is a verdict-cache hit there).
    overlap = json.loads((tmp_path / "a" / "full" / "metrics.json").read_text())["meta"]["overlap"]
    assert (overlap["enabled"], overlap["shards"], overlap["samples"], overlap["errors"]) == (True, 8, 96, [])
    assert overlap["executed"] > 0
    sources = pd.read_parquet(tmp_path / "a" / "full" / "evaluation" / "results.parquet", columns=["verdict_source"])
    assert set(sources["verdict_source"]) == {"cache"}

    out = tmp_path / "b" / "resumed"
    killed_at("generate:reference:2", config, out, cache, tmp_path)
    assert not (out / "samples.parquet").exists()
    assert len(list((out / "generation" / "reference" / "samples" / "reference").glob("shard-*.parquet"))) == 2
    killed_at("after-shard-3", config, out, cache, tmp_path)
    assert not (out / "metrics.json").exists()
    # a shard is finished when both of its mode files are (a kill may fall between the two)
    results = out / "evaluation" / "results"
    per_mode = [{p.relative_to(p.parent.parent.parent).as_posix().replace(f"/{mode}/", "/")
                 for p in results.glob(f"*/{mode}/shard-*.manifest.json")} for mode in ("no_policy", "policy")]
    finished_shards = len(per_mode[0] & per_mode[1])
    assert 1 <= finished_shards < 12

    resumed = run_benchmark("--config", str(config), "--out", str(out), cache=cache, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    pd.testing.assert_frame_equal(verdicts(out), verdicts(tmp_path / "a" / "full"))
    expected = json.loads((tmp_path / "a" / "full" / "metrics.json").read_text())
    actual = json.loads((out / "metrics.json").read_text())
    assert actual["groups"] == expected["groups"]
    assert actual["comparisons"] == expected["comparisons"]
    last_attempt = json.loads((out / "evaluation" / "attempts.jsonl").read_text().splitlines()[-1])
    assert last_attempt["shards_reused"] >= finished_shards
    assert actual["meta"]["overlap"]["shards"] == 0  # generation was complete: reused shards are not judged again
    history = pd.read_parquet(out.parent / "history.parquet")
    assert history["run_id"].nunique() == 1 and len(history) == 4  # only the completed attempt is recorded
