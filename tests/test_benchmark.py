"""The `benchmark` flow (the main job) through the real `ferrisbench benchmark` command.

Every run is a subprocess against the session's Prefect server (`prefect_api`), with real rustc,
bubblewrap and parquet. The main job runs once on the real seed benchmark (HumanEval-Rust,
reference source); the nightly behaviours (report, history, regression, resume) run on the
12-task tiny benchmark of conftest with `import:` samples, which need no model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import BROKEN_REFERENCE, TASKS, cli_env, ferrisbench_command, write_tiny_benchmark
from tasks.problems import default_cache_dir
from tasks.rundir import LOCK_NAME, RunDirLock

pytestmark = pytest.mark.timeout(600)


def fresh_cache(root: Path) -> Path:
    """A private cache (gate, verdicts) that shares only the downloaded benchmark wheel."""
    cache = root / "cache"
    cache.mkdir()
    wheels = default_cache_dir() / "wheels"
    if wheels.is_dir():
        (cache / "wheels").symlink_to(wheels, target_is_directory=True)
    return cache


def run_benchmark(*args: str, cache: Path, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(ferrisbench_command("benchmark", "--no-progress", *args), capture_output=True, text=True,
                          env=cli_env(cache), cwd=cwd, timeout=540)


def flow_run_state(flow_run_id: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(flow_run_id).state


def report_numbers(report: str) -> dict[tuple[str, str, str], float]:
    """(model, mode, metric) → value, parsed back from the per-model tables of report.md."""
    numbers, model, modes = {}, None, []
    for line in report.splitlines():
        if line.startswith("## "):
            model, modes = line[3:].strip(), []
        elif line.startswith("| metric |"):
            modes = [cell.strip() for cell in line.strip("|").split("|")[1:]]
        elif modes and (match := re.match(r"\| (pass@\d+|compile rate) \| (.*) \|$", line)):
            for mode, cell in zip(modes, match[2].split(" | ")):
                numbers[(model, mode, match[1])] = float(cell)
    return numbers


def assert_report_matches_metrics(run_dir: Path) -> dict:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    parsed = report_numbers((run_dir / "report.md").read_text())
    expected = {}
    for model, modes in metrics["groups"].items():
        for mode, group in modes.items():
            for k, value in group["pass_at_k"].items():
                expected[(model, mode, f"pass@{k}")] = round(value, 4)
            expected[(model, mode, "compile rate")] = round(group["compile_rate"], 4)
    assert parsed == expected
    for path in metrics["plots"].values():
        assert (run_dir / path).stat().st_size > 1000
        assert f"]({path})" in (run_dir / "report.md").read_text()
    return metrics


# ---------------------------------------------------------------- the main job on its embedded defaults


def test_the_main_job_on_embedded_defaults_self_checks_humaneval_rust_and_says_no_model_was_benchmarked(
    prefect_api, tmp_path
):
    out = tmp_path / "runs" / "benchmark"
    done = run_benchmark("--out", str(out), cache=fresh_cache(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "No model was benchmarked" in done.stdout
    assert "ferrisbench benchmark --config FILE" in done.stdout

    metrics = assert_report_matches_metrics(out)
    assert sorted(metrics["groups"]) == ["reference"]
    for mode in ("no_policy", "policy"):
        group = metrics["groups"]["reference"][mode]
        assert group["pass_at_k"] == {"1": 1.0}
        assert group["tasks_scored"] == 146  # FACTS.md: 146 of 180 references pass; 34 are excluded
    assert len(metrics["meta"]["validity_gate_excluded"]) == 34
    assert metrics["checks"] == {"passed": True, "failures": []}
    assert metrics["meta"]["model_benchmarked"] is False

    env = json.loads((out / "env.json").read_text())
    assert env["status"] == "passed"
    assert env["dataset_hash"] == metrics["meta"]["problems_hash"]
    assert env["sandbox"]["smoke"] == {"known_good": "passed", "known_bad": "failed_tests"}
    assert env["config"]["models"] == [{"model": "reference", "adapters": []}]
    history = pd.read_parquet(tmp_path / "runs" / "history.parquet")
    assert sorted(zip(history["model"], history["policy_mode"])) == [("reference", "no_policy"), ("reference", "policy")]
    assert flow_run_state(metrics["meta"]["flow_run_id"]).is_completed()


# ---------------------------------------------------------------- history, regression, resume


def write_import_samples(path: Path, right_tasks: int) -> Path:
    """4 samples per task of the tiny benchmark: all right for the first `right_tasks` tasks, else all wrong."""
    rows = []
    for i in range(TASKS):
        answer = f"x + {i}" if i < right_tasks else f"x - {i} - 1"
        rows += [{"task_id": f"Demo/t{i:02d}", "completion": f"\n    {answer}\n}}"} for _ in range(4)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_config(path: Path, bench: Path, samples: Path, history: Path) -> Path:
    config = {
        "benchmark": str(bench),
        "models": [{"model": f"nightly=import:{samples}"}],
        "generation": {"samples": 4},
        "executor": {"sandbox": "bubblewrap", "workers": 2},
        "shard_size": 16,
        "history_path": str(history),
        "regression": {"max_pass_at_1_drop": 0.1},
    }
    path.write_text(json.dumps(config))
    return path


@pytest.fixture(scope="module")
def nightly(prefect_api, tmp_path_factory) -> dict:
    """Night 1 (all 11 valid tasks right), its rerun on the same directory, then night 2 (6 of 11 right)."""
    root = tmp_path_factory.mktemp("nightly")
    bench = write_tiny_benchmark(root / "bench.jsonl")
    history = root / "history.parquet"
    good = write_config(root / "good.json", bench, write_import_samples(root / "good.jsonl", 12), history)
    worse = write_config(root / "worse.json", bench, write_import_samples(root / "worse.jsonl", 7), history)
    cache = fresh_cache(root)
    first = run_benchmark("--config", str(good), "--out", str(root / "night1"), cache=cache, cwd=root)
    first_metrics = (root / "night1" / "metrics.json").read_text() if first.returncode == 0 else None
    first_history = pd.read_parquet(history) if history.exists() else None
    again = run_benchmark("--config", str(good), "--out", str(root / "night1"), cache=cache, cwd=root)
    second = run_benchmark("--config", str(worse), "--out", str(root / "night2"), cache=cache, cwd=root)
    return {"root": root, "history": history, "first": first, "first_metrics": first_metrics,
            "first_history": first_history, "again": again, "second": second}


def test_a_completed_night_reports_numbers_consistent_with_metrics_json(nightly):
    assert nightly["first"].returncode == 0, nightly["first"].stderr[-3000:]
    metrics = assert_report_matches_metrics(nightly["root"] / "night1")
    assert metrics["groups"]["nightly"]["no_policy"]["pass_at_k"]["1"] == 1.0  # 11 valid tasks, all right
    assert list(metrics["meta"]["validity_gate_excluded"]) == [BROKEN_REFERENCE]
    assert metrics["meta"]["excluded_tasks"] == {BROKEN_REFERENCE: "reference_fails"}
    report = (nightly["root"] / "night1" / "report.md").read_text()
    for section in ("## Checks", "## Base vs fine-tune", "## Policy vs no policy", "## pass@1 per category",
                    "## Plots", "## Last 14 runs", "## Environment", "## Tasks excluded by the validity gate (1)"):
        assert section in report
    assert set(metrics["plots"]) == {"pass_at_k", "per_category", "trend"}
    policy = metrics["comparisons"]["policy_vs_no_policy"]["nightly"]["comparison"]
    assert (policy["pass_at_1_a"], policy["pass_at_1_b"], policy["lost"]) == (1.0, 1.0, [])


def test_rerunning_a_night_on_its_directory_resumes_to_the_same_metrics_and_adds_no_history(nightly):
    assert nightly["again"].returncode == 0, nightly["again"].stderr[-3000:]
    before, after = json.loads(nightly["first_metrics"]), json.loads((nightly["root"] / "night1" / "metrics.json").read_text())
    assert after["groups"] == before["groups"]
    assert after["meta"]["run_id"] == before["meta"]["run_id"]
    attempts = (nightly["root"] / "night1" / "evaluation" / "attempts.jsonl").read_text().splitlines()
    assert json.loads(attempts[-1])["shards_computed"] == 0
    assert len(nightly["first_history"]) == 2


def test_two_nights_make_two_history_runs_and_a_worse_night_fails_the_flow_run_with_artifacts_kept(nightly):
    second = nightly["second"]
    assert second.returncode == 1
    assert "benchmark FAILED" in second.stderr
    assert "pass@1 of model 'nightly' (policy mode 'no_policy')" in second.stderr
    assert "went from 1.000" in second.stderr and "to 0.545 tonight" in second.stderr  # 6 of 11 valid tasks

    history = pd.read_parquet(nightly["history"])
    assert history["run_id"].nunique() == 2
    assert len(history) == 4  # 2 runs × 1 model × 2 policy modes

    night2 = nightly["root"] / "night2"
    metrics = assert_report_matches_metrics(night2)
    assert metrics["checks"]["passed"] is False
    assert [f for f in metrics["checks"]["failures"] if "pass@1 of model 'nightly'" in f]
    assert "**FAILED**: pass@1 of model 'nightly'" in (night2 / "report.md").read_text()
    assert (night2 / "env.json").exists() and (night2 / "evaluation" / "results.parquet").exists()
    state = flow_run_state(metrics["meta"]["flow_run_id"])
    assert state.is_failed()
    assert "pass@1 of model 'nightly'" in state.message


# ---------------------------------------------------------------- provisioning stops a run early


def test_a_run_directory_that_cannot_be_created_stops_the_run_in_provisioning(prefect_api, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = run_benchmark("--out", str(blocker / "run"), cache=fresh_cache(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert "provisioning failed" in done.stderr
    assert "is not writable" in done.stderr and "choose another --out directory" in done.stderr


def test_a_run_directory_held_by_another_run_is_refused_before_anything_is_written(prefect_api, tmp_path):
    run_dir = tmp_path / "run"
    with RunDirLock(run_dir):  # this test process is the "other run"
        done = run_benchmark("--out", str(run_dir), cache=fresh_cache(tmp_path), cwd=tmp_path)
    assert done.returncode == 1
    assert f"ferrisbench: error: run directory {run_dir} is in use by pid {os.getpid()}" in done.stderr
    assert [p.name for p in run_dir.iterdir()] == [LOCK_NAME]  # no env.json, nothing of its own


def test_a_bad_configuration_file_is_refused_before_anything_runs(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("models: []\n")
    done = run_benchmark("--config", str(config), "--out", str(tmp_path / "run"), cache=fresh_cache(tmp_path),
                         cwd=tmp_path)
    assert done.returncode == 2
    assert "models: list at least one model" in done.stderr
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- the configuration


def test_the_example_configurations_load_and_selfcheck_spells_out_the_embedded_defaults():
    from tasks.config import BenchmarkConfig

    repo = Path(__file__).resolve().parents[1]
    assert BenchmarkConfig.load(repo / "configs" / "selfcheck.yaml") == BenchmarkConfig()
    nightly = BenchmarkConfig.load(repo / "configs" / "nightly.yaml")
    assert [entry.model for entry in nightly.models] == ["llama-3.1-8b=meta-llama/Meta-Llama-3.1-8B-Instruct", "reference"]
    assert nightly.generation_for(nightly.models[0], Path("x")).adapters == (
        "llama-rust-qlora=Superuser666-Sigil/Llama-3.1-8B-Instruct-Rust-QLora/checkpoint-9000",)
    assert nightly.require_gpu is True and nightly.ks == (1, 10, 100)


def test_a_configuration_with_a_misplaced_or_invalid_generation_setting_is_refused_naming_it(tmp_path):
    from tasks.config import BenchmarkConfig

    misplaced = tmp_path / "misplaced.yaml"
    misplaced.write_text("generation: {model: x, samples: 2}\n")
    with pytest.raises(ValueError, match="generation: model are set per model or by the benchmark"):
        BenchmarkConfig.load(misplaced)
    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("generation: {temperature: -1}\n")
    with pytest.raises(ValueError, match="temperature"):
        BenchmarkConfig.load(invalid)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("modles: []\n")
    with pytest.raises(ValueError, match="modles"):
        BenchmarkConfig.load(unknown)
