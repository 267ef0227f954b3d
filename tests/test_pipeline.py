"""Specification of the evaluation pipeline: sharded stages, run directory, metrics, Prefect artifacts.

Real flows on a real Prefect API server (tests/conftest.py), real rustc in bubblewrap, real parquet.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from conftest import (
    BROKEN_REFERENCE, REFERENCE_SHARD_SIZE, SAMPLES_PER_TASK, TASKS, cli_env, ferrisbench_command, tiny_run_config,
)
from flows.cli import main as cli_main
from flows.evaluate import run_evaluation
from flows.runtime import hold_run_dir
from tasks.artifacts import check_shard, manifest_path_for
from tasks.config import RunConfig
from tasks.metrics import MetricsError
from tasks.samples import SamplesError
from tasks.rundir import RunIdentityMismatch
from tasks.shards import model_slug, read_attempts, results_shard_path, split_samples

SHARD_SIZE = REFERENCE_SHARD_SIZE
SHARDS = -(-TASKS * SAMPLES_PER_TASK // SHARD_SIZE)  # 48 samples → 5 shards
MODES = ("no_policy", "policy")
# Not verdicts, and different in every process: timings, whether a verdict came from the cache of an
# earlier run, and the program text and diagnostics, which carry the harness's per-process secret.
PROVENANCE = ["compile_seconds", "run_seconds", "verdict_source", "program_sha256", "diagnostic"]


def config_for(inputs: dict, out: Path, **changes) -> RunConfig:
    return tiny_run_config(inputs, out, **changes)


@pytest.fixture(scope="module")
def finished_run(reference_run):
    return reference_run


def comparable(results: pd.DataFrame) -> pd.DataFrame:
    return results.drop(columns=PROVENANCE).sort_values(["policy_mode", "task_id", "sample_index"]).reset_index(drop=True)


# ---------------------------------------------------------------- layout and results


def test_a_run_writes_one_valid_results_shard_per_samples_shard_and_policy_mode(finished_run):
    run_dir = finished_run["dir"]
    for name in ("run.json", "config.json", "problems.parquet", "validity.parquet", "results.parquet", "metrics.json", "report.md"):
        assert (run_dir / name).is_file(), name
    shards = sorted(p.relative_to(run_dir).as_posix() for p in (run_dir / "results").rglob("shard-*.parquet"))
    assert shards == [f"results/demo/{mode}/shard-{i:05d}.parquet" for mode in MODES for i in range(SHARDS)]
    for path in (run_dir / "results").rglob("shard-*.parquet"):
        manifest = json.loads(manifest_path_for(path).read_text())
        assert check_shard(path, manifest["identity"]).problem is None
    assert finished_run["outcome"]["attempt"]["shards_computed"] == SHARDS
    assert finished_run["outcome"]["attempt"]["shards_reused"] == 0


def test_merged_results_hold_every_sample_once_per_mode_with_its_verdict(finished_run):
    results = pd.read_parquet(finished_run["dir"] / "results.parquet")
    assert len(results) == TASKS * SAMPLES_PER_TASK * len(MODES)
    assert not results.duplicated(["model", "policy_mode", "task_id", "sample_index"]).any()
    by_kind = results.groupby(["policy_mode", "sample_index"])["status"].agg(lambda s: sorted(set(s)))
    assert by_kind.to_dict() == {
        ("no_policy", 0): ["passed"], ("no_policy", 1): ["failed_tests"],
        ("no_policy", 2): ["compile_error"], ("no_policy", 3): ["passed"],
        ("policy", 0): ["passed"], ("policy", 1): ["failed_tests"],
        ("policy", 2): ["compile_error"], ("policy", 3): ["policy_violation"],
    }
    validity = results.drop_duplicates("task_id").set_index("task_id")["validity"]
    assert validity[BROKEN_REFERENCE] == "reference_fails"
    assert set(validity.drop(BROKEN_REFERENCE)) == {"valid"}


def test_metrics_score_valid_tasks_in_both_policy_modes_side_by_side(finished_run):
    metrics = json.loads((finished_run["dir"] / "metrics.json").read_text())
    assert metrics == finished_run["outcome"]["metrics"]
    no_policy, policy = metrics["groups"]["demo"]["no_policy"], metrics["groups"]["demo"]["policy"]
    assert (no_policy["pass_at_k"], policy["pass_at_k"]) == ({"1": 0.5}, {"1": 0.25})
    assert no_policy["tasks_scored"] == policy["tasks_scored"] == TASKS - 1
    assert no_policy["n"] == SAMPLES_PER_TASK
    assert no_policy["compile_rate"] == 0.75 and policy["compile_rate"] == 0.5
    assert {k: v for k, v in policy["status_counts"].items() if v} == {
        "passed": 11, "failed_tests": 11, "compile_error": 11, "policy_violation": 11,
    }
    assert no_policy["top_error_codes"] == {"E0277": 11}
    assert policy["per_category"] == {"codegen": {"tasks": 6, "pass_at_1": 0.25}, "fix": {"tasks": 5, "pass_at_1": 0.25}}
    assert metrics["meta"]["excluded_tasks"] == {BROKEN_REFERENCE: "reference_fails"}
    assert metrics["meta"]["ks"] == [1]
    assert metrics["meta"]["shard_size"] == SHARD_SIZE


def test_report_md_puts_the_policy_modes_side_by_side_and_lists_excluded_tasks(finished_run):
    report = (finished_run["dir"] / "report.md").read_text()
    assert "| metric | no_policy | policy |" in report
    assert "| pass@1 | 0.5000 | 0.2500 |" in report
    assert "| policy_violation | 0 | 11 |" in report
    assert f"- `{BROKEN_REFERENCE}`: reference_fails" in report


# ---------------------------------------------------------------- Prefect


def test_prefect_artifacts_of_the_run_are_readable_through_the_client(finished_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    run_id = finished_run["outcome"]["attempt"]["run_id"]
    keys = [f"metrics-{run_id}", f"report-{run_id}", f"progress-{run_id}"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    latest = {a.key: a for a in sorted(artifacts, key=lambda a: a.created)}
    assert set(latest) == set(keys)
    assert latest[f"metrics-{run_id}"].type == "table"
    table = json.loads(latest[f"metrics-{run_id}"].data)
    assert [(row["policy_mode"], row["pass@1"]) for row in table] == [("no_policy", 0.5), ("policy", 0.25)]
    assert latest[f"report-{run_id}"].type == "markdown"
    assert latest[f"report-{run_id}"].data == (finished_run["dir"] / "report.md").read_text()
    assert latest[f"progress-{run_id}"].type == "progress"
    assert latest[f"progress-{run_id}"].data == 100.0


def test_task_runs_are_named_after_model_shard_and_policy_modes(finished_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName, TaskRunFilter, TaskRunFilterName

    run_id = finished_run["outcome"]["attempt"]["run_id"]
    with get_client(sync_client=True) as client:
        flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=run_id)))
        task_runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[f"evaluate demo · both · {run_id}"])),
            task_run_filter=TaskRunFilter(name=TaskRunFilterName(like_="evaluate demo shard")),
        )
    assert {f"evaluate demo · both · {run_id}", f"aggregate {run_id}"} <= {run.name for run in flow_runs}
    assert sorted({run.name for run in task_runs}) == [
        f"evaluate demo shard {i}/{SHARDS} [no_policy+policy]" for i in range(1, SHARDS + 1)
    ]


# ---------------------------------------------------------------- resume and refusals


def test_rerunning_a_finished_run_recomputes_nothing(finished_run):
    before = pd.read_parquet(finished_run["dir"] / "results.parquet")
    outcome = run_evaluation(finished_run["config"])
    attempt = outcome["attempt"]
    assert (attempt["shards_computed"], attempt["shards_reused"], attempt["aggregate"]) == (0, SHARDS, "reused")
    assert attempt["samples_judged"] == 0
    assert outcome["metrics"] == finished_run["outcome"]["metrics"]
    pd.testing.assert_frame_equal(pd.read_parquet(finished_run["dir"] / "results.parquet"), before)


def test_a_truncated_results_shard_is_detected_and_recomputed(finished_run, tmp_path):
    run_dir = tmp_path / "copy"
    shutil.copytree(finished_run["dir"], run_dir, ignore=shutil.ignore_patterns(".ferrisbench.lock"))
    victim = results_shard_path(run_dir, "demo", "policy", 2)
    with open(victim, "r+b") as handle:
        handle.truncate(victim.stat().st_size // 2)
    outcome = run_evaluation(config_for_dir(finished_run["config"], run_dir))
    attempt = outcome["attempt"]
    assert (attempt["shards_computed"], attempt["shards_reused"]) == (1, SHARDS - 1)
    assert attempt["samples_judged"] == SHARD_SIZE
    manifest = json.loads(manifest_path_for(victim).read_text())
    assert check_shard(victim, manifest["identity"]).problem is None
    assert attempt["aggregate"] == "computed"  # the merge now holds the recomputed shard
    pd.testing.assert_frame_equal(
        comparable(pd.read_parquet(run_dir / "results.parquet")),
        comparable(pd.read_parquet(finished_run["dir"] / "results.parquet")),
    )
    assert scores(outcome["metrics"]) == scores(finished_run["outcome"]["metrics"])


def scores(metrics: dict) -> dict:
    """Everything but the hashes of the exact files (which hold timings) it was computed from."""
    hashes = ("aggregate_identity", "results_sha256")
    return {**metrics, "meta": {k: v for k, v in metrics["meta"].items() if k not in hashes}}


def config_for_dir(config: RunConfig, run_dir: Path) -> RunConfig:
    return config.model_copy(update={"out": run_dir})


def test_other_settings_on_an_existing_run_dir_are_refused_naming_what_differs(finished_run):
    attempts = len(read_attempts(finished_run["dir"]))
    changed = finished_run["config"].model_copy(update={"shard_size": 7, "include_invalid": True})
    with pytest.raises(RunIdentityMismatch) as refused:
        run_evaluation(changed)
    message = str(refused.value)
    assert "settings.shard_size: 10 (recorded) → 7 (this run)" in message
    assert "settings.include_invalid: false (recorded) → true (this run)" in message
    assert len(read_attempts(finished_run["dir"])) == attempts


def test_k_larger_than_n_is_refused_before_the_run_dir_is_created(prefect_api, tiny_run_inputs, gate_cache, tmp_path):
    with pytest.raises(MetricsError, match=r"pass@k needs k <= n = 4 samples per task; got k = \[10\]"):
        run_evaluation(config_for(tiny_run_inputs, tmp_path / "run", ks=(1, 10)))
    assert not (tmp_path / "run").exists()


def test_samples_whose_fields_mix_json_types_are_refused_before_the_run_dir_is_created(
    prefect_api, tiny_run_inputs, gate_cache, tmp_path
):
    rows = [json.loads(line) for line in tiny_run_inputs["samples"].read_text().splitlines()]
    for number, row in enumerate(rows):
        row["temperature"] = 0.2 if number else "hot"
    samples = tmp_path / "mixed.jsonl"
    samples.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(SamplesError, match="a field holds values of different JSON types across samples"):
        run_evaluation(config_for({**tiny_run_inputs, "samples": samples}, tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_resume_of_a_directory_without_a_recorded_run_says_so(tmp_path, capsys):
    assert cli_main(["resume", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (
        f"ferrisbench: error: {tmp_path / 'config.json'} does not exist: {tmp_path} is not a ferrisbench run "
        "directory (start one with `ferrisbench evaluate … --out DIR`)\n"
    )


def test_a_second_process_on_a_locked_run_dir_gets_a_clear_error(finished_run, tiny_run_inputs):
    run_dir = finished_run["dir"]
    with hold_run_dir(run_dir):
        done = subprocess.run(
            ferrisbench_command(
                "evaluate", str(tiny_run_inputs["samples"]), "--benchmark", str(tiny_run_inputs["benchmark"]),
                "--out", str(run_dir), "--shard-size", str(SHARD_SIZE), "--workers", "2", "--no-progress",
            ),
            env=cli_env(tiny_run_inputs["cache"]), capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 1
    assert f"ferrisbench: error: run directory {run_dir} is in use by pid {os.getpid()}" in done.stderr
    assert "Traceback" not in done.stderr


def test_shard_tasks_retry_with_backoff_on_infrastructure_failures_only():
    from prefect.states import Failed

    from flows.evaluate import evaluate_shard_task, is_infrastructure_failure
    from tasks.sandbox import SandboxLaunchFailed

    assert (evaluate_shard_task.retries, evaluate_shard_task.retry_delay_seconds) == (2, [5, 30])
    assert is_infrastructure_failure(None, None, Failed(data=OSError(28, "No space left on device")))
    assert is_infrastructure_failure(None, None, Failed(data=SandboxLaunchFailed("bwrap exited before the program")))
    assert not is_infrastructure_failure(None, None, Failed(data=KeyError("a bug is not retried")))


# ---------------------------------------------------------------- shard rule


def test_shards_are_cut_by_model_task_and_sample_index_whatever_the_input_order():
    rows = [{"model": m, "task_id": t, "sample_index": s} for m in ("b", "a") for t in ("t2", "t1") for s in (1, 0)]
    shards = split_samples(pd.DataFrame(rows), shard_size=3)
    assert [(model, index, count, len(frame)) for model, index, count, frame in shards] == [
        ("a", 0, 2, 3), ("a", 1, 2, 1), ("b", 0, 2, 3), ("b", 1, 2, 1),
    ]
    assert list(shards[0][3][["task_id", "sample_index"]].itertuples(index=False, name=None)) == [
        ("t1", 0), ("t1", 1), ("t2", 0),
    ]
    reversed_input = split_samples(pd.DataFrame(rows[::-1]), shard_size=3)
    assert all(a[3].equals(b[3]) for a, b in zip(shards, reversed_input))


def test_model_ids_become_file_safe_directory_names_that_never_collide():
    assert model_slug("demo-7b_v1.2") == "demo-7b_v1.2"
    assert model_slug("org/model") != model_slug("org-model")
    assert model_slug("org/model").startswith("org-model-")
    assert "/" not in model_slug("../../etc") and not model_slug("../../etc").startswith(".")
