"""Specification of imported samples end to end through the `ferrisbench` command: the other
harness's verdicts compared in the report, MBPP-rs by name (gate, evaluate, report), models with
different task subsets scored before any compile decides anything, `generate --model import:`."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from flows.cli import main as cli_main
from tests import interop_inputs as inputs
from tests.helpers import requires_root, restored_logging

pytestmark = requires_root


@pytest.fixture(autouse=True)
def restore_logging():
    yield from restored_logging()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("FERRISBENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def evaluate(samples, benchmark, out, *extra) -> int:
    return cli_main(["evaluate", str(samples), "--benchmark", str(benchmark), "--sandbox", "bubblewrap",
                     "--policy", "off", "--out", str(out), "--workers", "2", "--no-progress", *extra])


def test_multipl_e_directory_is_judged_and_its_statuses_compared_in_the_report(tmp_path, cache, prefect_api, capsys):
    benchmark = inputs.multipl_benchmark(tmp_path)
    assert evaluate(inputs.multipl_directory(tmp_path), f"multipl-e:{benchmark}", tmp_path / "out") == 0
    assert "mbpp-rs-model-0.2-reworded / no_policy: pass@1=0.4444" in capsys.readouterr().out
    agreement = json.loads((tmp_path / "out" / "metrics.json").read_text())["agreement"]["groups"]
    group = agreement["mbpp-rs-model-0.2-reworded"]["no_policy"]
    assert {k: group[k] for k in ("samples", "agree", "both_pass", "both_fail", "only_ours_pass",
                                  "only_theirs_pass")} == {"samples": 9, "agree": 8, "both_pass": 3, "both_fail": 5,
                                                           "only_ours_pass": 1, "only_theirs_pass": 0}
    assert [(d["task_id"], d["sample_index"], d["theirs"], d["ours"]) for d in group["disagreements"]] == [
        ("mbpp_105_count", 1, "SyntaxError", "passed")]
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Agreement with the other harness's verdicts" in report
    assert "| mbpp-rs-model-0.2-reworded | no_policy | 9 | 8 | 3 | 5 | 1 | 0 | 0.4444 | 0.3333 |" in report
    assert "| `mbpp_105_count` | 1 | SyntaxError | passed | — |" in report


def test_mbpp_rs_by_name_runs_gate_evaluate_and_report(tmp_path, cache, prefect_api, monkeypatch, capsys):
    monkeypatch.setenv("FERRISBENCH_MULTIPL_E_REPO", str(inputs.local_multipl_e_repo(tmp_path)))
    assert cli_main(["problems", "validate", "--benchmark", "multipl-e:mbpp-rs", "--sandbox", "bubblewrap",
                     "--json"]) == 0
    validated = json.loads(capsys.readouterr().out)
    assert (validated["benchmark"], validated["counts"]) == ("multipl-e:mbpp-rs", {"unverified": 354})
    out = tmp_path / "out"
    assert evaluate(inputs.multipl_human_eval(tmp_path), "multipl-e:mbpp-rs", out, "--only-sampled-tasks") == 0
    assert "multipl / no_policy: pass@1=0.4444" in capsys.readouterr().out
    assert len(pd.read_parquet(out / "validity.parquet")) == 354
    assert set(pd.read_parquet(out / "results.parquet")["task_id"]) == set(inputs.MULTIPL_TASKS)
    assert "Benchmark `multipl-e:mbpp-rs` (main" in (out / "report.md").read_text()


def two_models(root, rows):
    """Model a has the first 6 tasks, model b the last 9: they share 3 (one of them the gate excludes)."""
    lines = [{"task_id": row["task_id"], "completion": c, "model": model}
             for model, chosen in (("a", rows[:6]), ("b", rows[3:]))
             for row in chosen for c in inputs.libtest_completions(rows.index(row))]
    return inputs.write_jsonl(root / "two.jsonl", lines)


def test_models_with_different_task_subsets_are_each_scored_over_their_tasks(tmp_path, cache, prefect_api, capsys):
    benchmark, rows = inputs.libtest_benchmark(tmp_path)
    assert evaluate(two_models(tmp_path, rows), benchmark, tmp_path / "out", "--only-sampled-tasks") == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["meta"]["task_sets"]["tasks_per_model"] == {"a": 5, "b": 8}  # Demo/t05 excluded by the gate
    assert metrics["meta"]["task_sets"]["shared_by_all"] == 2
    assert metrics["groups"]["a"]["no_policy"]["pass_at_k"]["1"] == pytest.approx(1 / 3)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "Each model is scored over the tasks it has samples for (a 5, b 8 tasks)" in report
    assert "- a: pass@1 no_policy 0.3333" in report and "- b: pass@1 no_policy 0.3333" in report


def test_models_with_different_task_subsets_without_the_flag_are_refused_before_any_compile(tmp_path, cache, capsys):
    benchmark, rows = inputs.libtest_benchmark(tmp_path)
    assert evaluate(two_models(tmp_path, rows), benchmark, tmp_path / "out") == 1
    error = capsys.readouterr().err
    assert error == ("ferrisbench: error: model a: 6 task(s) have no samples (e.g. Demo/t06, Demo/t07, Demo/t08, "
                     "Demo/t09, Demo/t10, Demo/t11); pass --only-sampled-tasks to score each model over the tasks "
                     "it has\n")
    assert not (tmp_path / "out").exists() and not (cache / "verdicts").exists()


def test_generate_import_takes_the_subset_options_and_n_from_the_file(tmp_path, cache, prefect_api, capsys):
    benchmark, rows = inputs.libtest_benchmark(tmp_path)
    samples = inputs.write_jsonl(tmp_path / "some.jsonl", [
        {"task_id": row["task_id"], "completion": c} for row in rows[:4] for c in inputs.libtest_completions(0)])
    out = tmp_path / "gen"
    assert cli_main(["generate", "--model", f"import:{samples}", "--benchmark", str(benchmark), "--out", str(out),
                     "--only-sampled-tasks"]) == 0
    generated = pd.read_parquet(out / "samples.parquet")
    assert sorted(set(generated["task_id"])) == [row["task_id"] for row in rows[:4]]
    assert generated.groupby("task_id").size().tolist() == [3] * 4


def test_generate_import_of_a_subset_without_the_flag_names_the_flag_generate_accepts(tmp_path, cache, capsys):
    benchmark, rows = inputs.libtest_benchmark(tmp_path)
    samples = inputs.write_jsonl(tmp_path / "some.jsonl", [{"task_id": rows[0]["task_id"], "completion": "x"}])
    assert cli_main(["generate", "--model", f"import:{samples}", "--benchmark", str(benchmark),
                     "--out", str(tmp_path / "gen")]) == 1
    error = capsys.readouterr().err
    assert "11 benchmark task(s) have no samples" in error
    assert "pass --only-sampled-tasks (generate and evaluate)" in error


@pytest.mark.parametrize("option, message", [
    (["--field", "completion"], "--field wants ROLE=NAME (e.g. completion=solution), got 'completion'"),
    (["--field", "model=x"], "--field model=…: only completion and task_id can be renamed"),
])
def test_malformed_import_options_exit_2_before_any_work(option, message, tmp_path, cache, capsys):
    benchmark, rows = inputs.libtest_benchmark(tmp_path)
    assert evaluate(inputs.libtest_human_eval(tmp_path, rows), benchmark, tmp_path / "out", *option) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
