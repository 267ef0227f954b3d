"""Generation and evaluation overlap (tasks.prejudge): finished generation shards are judged in the
background while the next ones generate, which fills the verdict cache; the evaluate stage then
finds every program judged and reaches the same results as without the overlap.

Real rustc, a real bubblewrap sandbox, real parquet shards from the real generate stage (the
`import:` source on the tiny benchmark of conftest), a private verdict cache per test.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ExecutorConfig, GenerationConfig
from tasks.evaluate import JudgeStats, SandboxPool, evaluate_frame, judge_records
from tasks.generation.stage import generate_shard, prepare_run, run_source, write_combined_samples
from tasks.prejudge import Prejudger, default_workers
from tasks.problems import load_benchmark
from tasks.samples import read_samples
from tasks.toolchain import find_toolchain
from tests.conftest import write_tiny_benchmark, write_tiny_samples
from tests.helpers import PROVENANCE, requires_root

pytestmark = [requires_root,
              pytest.mark.timeout(300)]


@pytest.fixture
def tiny(tmp_path: Path) -> dict:
    bench = write_tiny_benchmark(tmp_path / "bench.jsonl")
    config = ExecutorConfig(sandbox="bubblewrap", workers=2, verdict_cache_dir=tmp_path / "verdicts")
    return {"bench": bench, "problems": load_benchmark(str(bench)).by_id(), "config": config}


def test_default_workers_leave_a_core_to_the_engine():
    assert default_workers(ExecutorConfig(workers=8)) == 7
    assert default_workers(ExecutorConfig(workers=1)) == 1
    with pytest.raises(ValueError, match="verdict_cache"):
        Prejudger({}, ExecutorConfig(verdict_cache=False))


def test_overlap_is_off_when_configured_so_or_without_the_verdict_cache_and_is_no_part_of_the_run_identity(tmp_path):
    from flows.benchmark import claim_run_dir
    from flows.benchmark_models import prejudger_for
    from tasks.config import BenchmarkConfig

    assert prejudger_for(BenchmarkConfig(overlap_evaluation=False), None) is None
    assert prejudger_for(BenchmarkConfig(executor=ExecutorConfig(verdict_cache=False)), None) is None
    first = claim_run_dir(BenchmarkConfig(), tmp_path)
    assert claim_run_dir(BenchmarkConfig(overlap_evaluation=False, overlap_workers=3), tmp_path) == first  # a resume


def test_a_prejudged_shard_is_all_cache_hits_afterwards_and_an_unreadable_shard_is_an_error_not_a_raise(
    tiny, tmp_path
):
    rows = pd.DataFrame({
        "task_id": ["Demo/t00", "Demo/t01", "Demo/t02", "Demo/t03"],
        "sample_index": [0, 0, 0, 0],
        "completion": ["\n    x + 0\n}", "\n    x - 1 - 1\n}", '\n    x + "a"\n}', None],
        "generation_status": ["ok", "ok", "ok", "generation_failed"],
    })
    shard = tmp_path / "shard-00000.parquet"
    rows.to_parquet(shard)
    corrupt = tmp_path / "shard-00001.parquet"
    corrupt.write_bytes(b"PAR1 torn by a kill PAR1")
    told = []
    with Prejudger(tiny["problems"], tiny["config"], workers=1, on_judged=told.append) as prejudger:
        prejudger.submit(shard)
        prejudger.submit(corrupt)
    summary = prejudger.close()
    assert (summary["workers"], summary["shards"], summary["samples"]) == (1, 1, 4)
    assert (summary["executed"], summary["cached"], summary["not_run"]) == (3, 0, 1)
    assert len(summary["errors"]) == 1 and summary["errors"][0].startswith(f"{corrupt}: ")
    assert [("error" in record) for record in told] == [False, True]

    toolchain, stats = find_toolchain(), JudgeStats()
    with SandboxPool(tiny["config"].model_copy(update={"workers": 1}), toolchain) as pool:
        judged = judge_records(rows.to_dict("records"), tiny["problems"], tiny["config"], pool, toolchain, stats=stats)
    assert [j.verdict_source for j in judged] == ["cache", "cache", "cache", "not_run"]
    assert [j.execution.verdict.status.value for j in judged] == ["passed", "failed_tests", "compile_error",
                                                                  "generation_failed"]
    assert (stats.executed, stats.cached) == (0, 3)


def test_shards_are_judged_while_later_shards_generate_and_evaluation_then_executes_nothing_with_equal_results(
    tiny, tmp_path
):
    samples = write_tiny_samples(tmp_path / "samples.jsonl")
    generation = GenerationConfig(model=f"demo=import:{samples}", benchmark=str(tiny["bench"]), out=tmp_path / "gen",
                                  samples=4, limit=6, shard_tasks=2)  # 3 shards of 2 tasks × 4 samples
    prepared = prepare_run(generation, load_benchmark(str(tiny["bench"])))
    [source] = prepared.sources
    started, finished = {}, {}

    def run_shard(plan):
        """Generation as slow as a GPU's: shard 1 is not done before the pre-judger finished shard 0."""
        started[plan.index] = time.monotonic()
        if plan.index == 1:
            deadline = time.monotonic() + 180
            while not prejudger.shards and time.monotonic() < deadline:
                time.sleep(0.05)
        info = generate_shard(source, plan, prepared.problems, prepared.sampling, prepared.prompt_hashes[source.label])
        finished[plan.index] = time.monotonic()
        return info

    try:
        with Prejudger(tiny["problems"], tiny["config"], workers=1) as prejudger:
            counts = run_source(source, prepared.plans[source.label], prepared.sampling, generation.out, run_shard,
                                on_shard=lambda plan, generated: prejudger.submit(plan.path))
    finally:
        prepared.close()
    summary = prejudger.close()
    assert counts["generated"] == 3
    assert (summary["shards"], summary["samples"], summary["executed"], summary["errors"]) == (3, 24, 24, [])
    first = prejudger.shards[0]
    assert first["path"].endswith("shard-00000.parquet")
    assert started[1] < first["finished"] < finished[1]  # shard 0 was judged while shard 1 was generating
    assert first["started"] < finished[2]

    # The evaluate stage's reading of the samples: every program comes from the cache, and the
    # verdicts equal those of judging everything afresh (no overlap, no cache).
    frame = read_samples(write_combined_samples(generation.out, ["demo"]))
    toolchain = find_toolchain()
    with SandboxPool(tiny["config"], toolchain) as pool:
        overlapped = evaluate_frame(frame, tiny["problems"], ["no_policy", "policy"], tiny["config"], pool, toolchain)
        fresh_config = tiny["config"].model_copy(update={"verdict_cache": False})
        fresh = evaluate_frame(frame, tiny["problems"], ["no_policy", "policy"], fresh_config, pool, toolchain)
    assert set(overlapped["verdict_source"]) == {"cache"}
    assert set(fresh["verdict_source"]) == {"executed"}
    pd.testing.assert_frame_equal(overlapped.drop(columns=PROVENANCE), fresh.drop(columns=PROVENANCE))
    assert sorted(set(fresh["status"])) == ["compile_error", "failed_tests", "passed", "policy_violation"]
