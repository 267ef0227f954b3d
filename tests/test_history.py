"""Specification of the run history: an append-only parquet table and the nightly regression check."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from tasks.history import (
    COLUMNS,
    HistoryError,
    Regression,
    append_history,
    check_regression,
    history_rows,
    last_runs,
    read_history,
)
from tasks.metrics import summarize

NIGHT = datetime(2026, 11, 1, 2, 0, tzinfo=timezone.utc)


def results(model: str, statuses_per_task: dict[str, list[str]], mode: str = "no_policy") -> pd.DataFrame:
    return pd.DataFrame([
        {"task_id": task, "sample_index": i, "model": model, "policy_mode": mode, "status": status,
         "error_codes": ["E0308"] if status == "compile_error" else []}
        for task, statuses in statuses_per_task.items() for i, status in enumerate(statuses)
    ])


def row(run_id: str, night: int, pass_at_1: float, *, model: str = "base", mode: str = "no_policy",
        protocol: str = "libtest/2021/n10", sandbox_error_rate: float = 0.0, timeout_rate: float = 0.0,
        problems_hash: str = "a" * 64, benchmark: str = "humaneval-rust") -> dict:
    return {"run_id": run_id, "recorded_at": NIGHT + timedelta(days=night), "benchmark": benchmark,
            "problems_hash": problems_hash, "protocol": protocol, "model": model, "adapter": None,
            "policy_mode": mode, "n": 10, "tasks": 146, "samples": 1460, "pass_at_1": pass_at_1,
            "pass_at_10": None, "pass_at_100": None, "pass_at_1_ci_low": None, "pass_at_1_ci_high": None,
            "compile_rate": 0.9, "sandbox_error_rate": sandbox_error_rate, "timeout_rate": timeout_rate,
            "git_commit": "c0ffee"}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_history_rows_carry_the_headline_numbers_of_every_model_and_policy_mode():
    table = pd.concat([
        results("base", {"t1": ["passed", "compile_error"], "t2": ["sandbox_error", "test_timeout"]}),
        results("base", {"t1": ["policy_violation", "compile_error"], "t2": ["sandbox_error", "test_timeout"]},
                mode="policy"),
        results("base+lora", {"t1": ["passed", "passed"], "t2": ["compile_timeout", "failed_tests"]}),
    ])
    summary = summarize(table, ks=[1, 2], bootstrap_samples=0)
    rows = history_rows(summary, run_id="night-1", benchmark="humaneval-rust", problems_hash="h" * 64,
                        protocol="libtest/2021/n2", adapters={"base+lora": "rust-lora@r3"}, git_commit="abc123",
                        recorded_at=NIGHT)
    assert list(rows.columns) == COLUMNS
    assert rows[["model", "policy_mode", "n", "tasks", "samples"]].values.tolist() == [
        ["base", "no_policy", 2, 2, 4], ["base", "policy", 2, 2, 4], ["base+lora", "no_policy", 2, 2, 4]]
    assert rows["adapter"].fillna("(base model)").tolist() == ["(base model)", "(base model)", "rust-lora@r3"]
    assert rows["pass_at_1"].tolist() == [0.25, 0.0, 0.5]
    assert rows["pass_at_10"].isna().all() and rows["pass_at_1_ci_low"].isna().all()
    assert rows["compile_rate"].tolist() == [0.5, 0.25, 0.75]
    assert rows["sandbox_error_rate"].tolist() == [0.25, 0.25, 0.0]
    assert rows["timeout_rate"].tolist() == [0.25, 0.25, 0.25]
    assert set(rows["run_id"]) == {"night-1"} and set(rows["git_commit"]) == {"abc123"}
    assert rows["recorded_at"].tolist() == [pd.Timestamp(NIGHT)] * 3


def test_two_runs_in_a_row_leave_two_rows_readable_by_plain_pandas(tmp_path):
    path = tmp_path / "history.parquet"
    append_history(path, frame(row("night-1", 0, 0.61)))
    after = append_history(path, frame(row("night-2", 1, 0.63)))
    on_disk = pd.read_parquet(path)
    assert list(on_disk.columns) == COLUMNS
    assert on_disk[["run_id", "pass_at_1"]].values.tolist() == [["night-1", 0.61], ["night-2", 0.63]]
    assert str(on_disk["recorded_at"].dtype) == "datetime64[us, UTC]"
    pd.testing.assert_frame_equal(after, on_disk)
    assert sorted(os.listdir(tmp_path)) == ["history.parquet", "history.parquet.lock"]


def test_appending_a_run_again_when_resuming_changes_nothing(tmp_path):
    path = tmp_path / "history.parquet"
    append_history(path, frame(row("night-1", 0, 0.61), row("night-1", 0, 0.58, mode="policy")))
    before = sha256(path)
    resumed = frame(row("night-1", 0, 0.61), row("night-1", 0, 0.58, mode="policy"))
    resumed["recorded_at"] += timedelta(hours=3)  # the resumed run records later; the row is kept as first written
    assert len(append_history(path, resumed)) == 2
    assert sha256(path) == before


def test_a_recorded_row_is_never_changed_and_the_conflict_is_refused(tmp_path):
    path = tmp_path / "history.parquet"
    append_history(path, frame(row("night-1", 0, 0.61)))
    before = sha256(path)
    with pytest.raises(HistoryError) as raised:
        append_history(path, frame(row("night-1", 0, 0.40), row("night-1", 0, 0.5, mode="policy")))
    assert str(raised.value) == ("history already records [['night-1', 'humaneval-rust', 'base', 'no_policy']] with "
                                 "another pass_at_1 ([0.61] there, [0.4] now); rows are never changed: give this run "
                                 "a new run id")
    assert sha256(path) == before


@pytest.mark.parametrize("change, message", [
    (lambda r: r.drop(columns=["timeout_rate"]),
     "rows to append: missing columns ['timeout_rate'], unknown columns []"),
    (lambda r: r.assign(pass_at_1=1.2), "rows to append: rates outside [0, 1] in ['pass_at_1'] or n < 1"),
    (lambda r: r.assign(model=None), "rows to append: null values in required columns {'model': 1}"),
    (lambda r: r.assign(recorded_at=datetime(2026, 11, 1)),
     "rows to append: recorded_at must be timezone-aware (e.g. datetime.now(timezone.utc))"),
    (lambda r: pd.concat([r, r]), "rows to append: duplicate (run_id, benchmark, model, policy_mode) "
                                  "[['night-2', 'humaneval-rust', 'base', 'no_policy']]"),
    (lambda r: r.iloc[0:0], "rows to append: no rows"),
])
def test_malformed_rows_are_refused_and_the_history_is_left_as_it_was(change, message, tmp_path):
    path = tmp_path / "history.parquet"
    append_history(path, frame(row("night-1", 0, 0.61)))
    before = sha256(path)
    with pytest.raises(HistoryError) as raised:
        append_history(path, change(frame(row("night-2", 1, 0.6))))
    assert str(raised.value) == message
    assert sha256(path) == before


def test_an_unreadable_history_file_is_reported_and_left_untouched(tmp_path):
    path = tmp_path / "history.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(HistoryError, match=rf"^history file {path} cannot be read \(.*\); it is left untouched: "
                                           "move it aside to start a new history$"):
        append_history(path, frame(row("night-1", 0, 0.61)))
    assert path.read_bytes() == b"PAR1 this is not parquet"


def _append_runs(path: str, writer: int) -> None:
    for night in range(8):
        append_history(Path(path), frame(row(f"w{writer}-n{night}", night, 0.5)))


def test_concurrent_appenders_lose_no_row(tmp_path):
    path = tmp_path / "history.parquet"
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_append_runs, args=(str(path), w)) for w in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(60)
    assert [w.exitcode for w in writers] == [0, 0, 0]
    assert sorted(read_history(path)["run_id"]) == sorted(f"w{w}-n{n}" for w in range(3) for n in range(8))


def test_last_runs_gives_the_latest_runs_of_one_model_on_one_benchmark_oldest_first():
    history = read_history_of(
        *(row(f"night-{i}", i, 0.5 + i / 100) for i in range(5)),
        *(row(f"night-{i}", i, 0.4, mode="policy") for i in range(5)),
        row("night-4", 4, 0.9, model="other"), row("mbpp-9", 9, 0.9, benchmark="mbpp-rust"),
    )
    chosen = last_runs(history, "humaneval-rust", "base", 3)
    assert chosen[["run_id", "policy_mode"]].values.tolist() == [
        ["night-2", "no_policy"], ["night-2", "policy"], ["night-3", "no_policy"], ["night-3", "policy"],
        ["night-4", "no_policy"], ["night-4", "policy"]]
    assert last_runs(history, "humaneval-rust", "missing", 3).empty
    with pytest.raises(HistoryError, match="n must be ≥ 1, got 0"):
        last_runs(history, "humaneval-rust", "base", 0)


def read_history_of(*rows: dict) -> pd.DataFrame:
    from tasks.history import _checked

    return _checked(frame(*rows), "test rows")


def test_a_pass_at_1_drop_beyond_the_threshold_against_the_previous_comparable_run_is_a_regression():
    history = read_history_of(row("night-1", 0, 0.40), row("night-2", 1, 0.62))
    tonight = frame(row("night-3", 2, 0.55))
    assert check_regression(history, tonight) == [Regression(
        metric="pass_at_1", model="base", policy_mode="no_policy", previous_run_id="night-2", previous=0.62,
        tonight=0.55, threshold=0.05,
        message="pass@1 of model 'base' (policy mode 'no_policy') on humaneval-rust went from 0.620 in run night-2 "
                "(2026-11-02 02:00 UTC) to 0.550 tonight (-0.070), beyond the allowed drop of 0.050")]


def test_changes_within_the_thresholds_are_not_regressions():
    history = read_history_of(row("night-1", 0, 0.60, sandbox_error_rate=0.01, timeout_rate=0.02))
    tonight = frame(row("night-2", 1, 0.55, sandbox_error_rate=0.03, timeout_rate=0.07))  # each exactly at its limit
    assert check_regression(history, tonight) == []


def test_jumps_in_sandbox_errors_and_timeouts_are_regressions_with_their_own_thresholds():
    history = read_history_of(row("night-1", 0, 0.60))
    tonight = frame(row("night-2", 1, 0.60, sandbox_error_rate=0.2, timeout_rate=0.08))
    found = check_regression(history, tonight, max_sandbox_error_rate_increase=0.1, max_timeout_rate_increase=0.05)
    assert [(r.metric, r.previous, r.tonight, r.threshold) for r in found] == [
        ("sandbox_error_rate", 0.0, 0.2, 0.1), ("timeout_rate", 0.0, 0.08, 0.05)]
    assert found[0].message == ("sandbox error rate of model 'base' (policy mode 'no_policy') on humaneval-rust went "
                                "from 0.000 in run night-1 (2026-11-01 02:00 UTC) to 0.200 tonight (+0.200), beyond "
                                "the allowed increase of 0.100")


def test_only_runs_with_the_same_benchmark_protocol_model_and_policy_mode_are_compared():
    history = read_history_of(
        row("night-1", 0, 0.9, protocol="libtest/2021/n100"), row("night-1b", 0, 0.9, model="other"),
        row("night-1c", 0, 0.9, mode="policy"), row("night-1d", 0, 0.9, benchmark="multipl-e"),
    )
    assert check_regression(history, frame(row("night-2", 1, 0.1))) == []


def test_tonights_own_rows_in_the_history_are_ignored_so_the_check_works_after_the_append():
    history = read_history_of(row("night-1", 0, 0.62), row("night-2", 1, 0.50))
    assert [r.previous_run_id for r in check_regression(history, frame(row("night-2", 1, 0.50)))] == ["night-1"]


def test_a_regression_after_the_problems_changed_says_so():
    history = read_history_of(row("night-1", 0, 0.62, problems_hash="1" * 64))
    [found] = check_regression(history, frame(row("night-2", 1, 0.50, problems_hash="2" * 64)))
    assert found.message.endswith("; note: the benchmark's problems changed since that run "
                                  "(hash 111111111111 → 222222222222)")


@pytest.mark.parametrize("thresholds, message", [
    ({"max_pass_at_1_drop": 1.5}, "threshold for pass_at_1 must be a fraction in [0, 1), got 1.5"),
    ({"max_timeout_rate_increase": float("nan")}, "threshold for timeout_rate must be a fraction in [0, 1), got nan"),
])
def test_thresholds_outside_a_fraction_are_refused(thresholds, message):
    with pytest.raises(HistoryError) as raised:
        check_regression(read_history_of(row("night-1", 0, 0.6)), frame(row("night-2", 1, 0.6)), **thresholds)
    assert str(raised.value) == message


def test_the_regression_check_refuses_a_history_without_the_tables_columns():
    with pytest.raises(HistoryError, match="history must be the table read by read_history"):
        check_regression(pd.DataFrame({"run_id": ["x"]}), frame(row("night-2", 1, 0.6)))
