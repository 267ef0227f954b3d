"""The history of nightly runs: one parquet table of headline metrics, and the regression check.

One row per run × model × policy mode. The table only grows: an append rewrites the whole file
atomically (read, concat, temp file, fsync, rename) under an exclusive lock, and a row already
recorded is never changed (a resumed run that appends the same rows again is a no-op; the same
key with other numbers is refused). Plain parquet with a fixed schema, so pandas or DuckDB
(`SELECT * FROM 'history.parquet'`) can query it directly.

Comparable runs: same benchmark name, protocol, model and policy mode. The problems hash is not
part of the key, so a changed dataset cannot silently skip the check; the message says when it
changed. The protocol string is the caller's label for everything else that makes two nights'
numbers comparable (check protocol, edition, prompt style, sampling, samples per task).
"""

from __future__ import annotations

import fcntl
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from tasks.artifact_base import _fsync_dir, _temp_path, _write_synced

log = structlog.get_logger(__name__)

HISTORY_NAME = "history.parquet"
KS = (1, 10, 100)
SCHEMA = pa.schema([
    ("run_id", pa.string()), ("recorded_at", pa.timestamp("us", tz="UTC")),
    ("benchmark", pa.string()), ("problems_hash", pa.string()), ("protocol", pa.string()),
    ("model", pa.string()), ("adapter", pa.string()), ("policy_mode", pa.string()),
    ("n", pa.int64()), ("tasks", pa.int64()), ("samples", pa.int64()),
    ("pass_at_1", pa.float64()), ("pass_at_10", pa.float64()), ("pass_at_100", pa.float64()),
    ("pass_at_1_ci_low", pa.float64()), ("pass_at_1_ci_high", pa.float64()),
    ("compile_rate", pa.float64()), ("sandbox_error_rate", pa.float64()), ("timeout_rate", pa.float64()),
    ("git_commit", pa.string()),
])
COLUMNS = SCHEMA.names
ROW_KEY = ["run_id", "benchmark", "model", "policy_mode"]
COMPARABLE = ["benchmark", "protocol", "model", "policy_mode"]
REQUIRED = ["run_id", "recorded_at", "benchmark", "problems_hash", "protocol", "model", "policy_mode", "n",
            "tasks", "samples", "pass_at_1", "compile_rate", "sandbox_error_rate", "timeout_rate"]
RATES = ["pass_at_1", "pass_at_10", "pass_at_100", "pass_at_1_ci_low", "pass_at_1_ci_high", "compile_rate",
         "sandbox_error_rate", "timeout_rate"]
TIMEOUT_STATUSES = ("compile_timeout", "test_timeout")
_EPSILON = 1e-12  # a change exactly at the threshold is allowed, whatever the float rounding


class HistoryError(ValueError):
    """History rows or the history file cannot be used as given."""


@dataclass(frozen=True)
class Regression:
    """Tonight is worse than the previous comparable run beyond a threshold."""

    metric: str  # pass_at_1 | sandbox_error_rate | timeout_rate
    model: str
    policy_mode: str
    previous_run_id: str
    previous: float
    tonight: float
    threshold: float
    message: str


def history_rows(summary: Mapping, *, run_id: str, benchmark: str, problems_hash: str, protocol: str,
                 adapters: Mapping[str, str | None] | None = None, git_commit: str | None = None,
                 recorded_at: datetime | None = None) -> pd.DataFrame:
    """Tonight's rows from a `tasks.metrics.summarize` result (one per model × policy mode).

    `adapters` maps a model label to its adapter id (absent: the base model). pass@k is null
    where k was not computed (k > n).
    """
    recorded_at = recorded_at or datetime.now(timezone.utc)
    rows = []
    for model, modes in sorted(summary.get("groups", {}).items()):
        for mode, group in sorted(modes.items()):
            samples = group["samples_scored"]
            counts = group["status_counts"]
            ci = group.get("pass_at_1_ci") or {}
            rows.append({
                "run_id": run_id, "recorded_at": recorded_at, "benchmark": benchmark,
                "problems_hash": problems_hash, "protocol": protocol, "model": model,
                "adapter": (adapters or {}).get(model), "policy_mode": mode, "n": group["n"],
                "tasks": group["tasks_scored"], "samples": samples,
                **{f"pass_at_{k}": group["pass_at_k"].get(str(k)) for k in KS},
                "pass_at_1_ci_low": ci.get("low"), "pass_at_1_ci_high": ci.get("high"),
                "compile_rate": group["compile_rate"],
                "sandbox_error_rate": counts.get("sandbox_error", 0) / samples,
                "timeout_rate": sum(counts.get(s, 0) for s in TIMEOUT_STATUSES) / samples,
                "git_commit": git_commit,
            })
    if not rows:
        raise HistoryError("the summary has no (model, policy_mode) group: nothing to record")
    return _checked(pd.DataFrame(rows), "tonight's rows")


def read_history(path: Path) -> pd.DataFrame:
    """The whole table (empty, with every column, when no run has been recorded yet)."""
    path = Path(path)
    if not path.exists():
        return SCHEMA.empty_table().to_pandas()
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as error:
        raise HistoryError(f"history file {path} cannot be read ({error}); it is left untouched: move it aside "
                           "to start a new history") from error
    if table.schema.names != COLUMNS:
        raise HistoryError(f"history file {path} has columns {table.schema.names}, expected {COLUMNS}; "
                           "move it aside to start a new history")
    return table.cast(SCHEMA).to_pandas()


def append_history(path: Path, rows: pd.DataFrame) -> pd.DataFrame:
    """Append `rows` atomically under a lock; returns the whole table after the append."""
    path = Path(path)
    rows = _checked(rows, "rows to append")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # appends take milliseconds: wait for the other writer
        history = read_history(path)
        new = _new_rows(history, rows)
        if new.empty:
            log.info("history_rows_already_recorded", path=str(path), rows=len(rows))
            return history
        combined = pd.concat([history, new], ignore_index=True) if len(history) else new
        table = pa.Table.from_pandas(combined[COLUMNS], schema=SCHEMA, preserve_index=False)
        temp = _temp_path(path)
        try:
            _write_synced(temp, lambda handle: pq.write_table(table, handle))
            os.replace(temp, path)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    log.info("history_appended", path=str(path), rows=len(new), total=len(combined))
    return table.to_pandas()


def last_runs(history: pd.DataFrame, benchmark: str, model: str, n: int) -> pd.DataFrame:
    """The rows (every policy mode) of the last `n` runs of `model` on `benchmark`, oldest first."""
    if n < 1:
        raise HistoryError(f"n must be ≥ 1, got {n}")
    mine = history[(history["benchmark"] == benchmark) & (history["model"] == model)]
    runs = mine.groupby("run_id")["recorded_at"].max().sort_values(kind="stable")
    chosen = mine[mine["run_id"].isin(runs.index[-n:])]
    return chosen.sort_values(["recorded_at", "run_id", "policy_mode"], kind="stable").reset_index(drop=True)


def check_regression(history: pd.DataFrame, tonight_rows: pd.DataFrame, *, max_pass_at_1_drop: float = 0.05,
                     max_sandbox_error_rate_increase: float = 0.02,
                     max_timeout_rate_increase: float = 0.05) -> list[Regression]:
    """Compare each of tonight's rows with the latest earlier comparable run; empty when none is worse.

    Tonight's own run id is ignored in `history`, so this works before or after the append.
    """
    tonight_rows = _checked(tonight_rows, "tonight's rows")
    thresholds = {"pass_at_1": max_pass_at_1_drop, "sandbox_error_rate": max_sandbox_error_rate_increase,
                  "timeout_rate": max_timeout_rate_increase}
    for metric, threshold in thresholds.items():
        if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and 0 <= threshold < 1):
            raise HistoryError(f"threshold for {metric} must be a fraction in [0, 1), got {threshold!r}")
    limits = {metric: -t if metric == "pass_at_1" else t for metric, t in thresholds.items()}
    if not isinstance(history, pd.DataFrame) or set(COLUMNS) - set(history.columns):
        raise HistoryError("history must be the table read by read_history (a DataFrame with every column)")
    earlier = history[~history["run_id"].isin(tonight_rows["run_id"].unique())]
    regressions = []
    for row in tonight_rows.itertuples(index=False):
        same = earlier
        for column in COMPARABLE:
            same = same[same[column] == getattr(row, column)]
        if same.empty:
            log.info("history_no_comparable_run", model=row.model, policy_mode=row.policy_mode,
                     benchmark=row.benchmark, protocol=row.protocol)
            continue
        previous = same.sort_values(["recorded_at", "run_id"], kind="stable").iloc[-1]
        for metric, limit in limits.items():
            change = getattr(row, metric) - previous[metric]
            worse = change < limit - _EPSILON if limit < 0 else change > limit + _EPSILON
            if worse:
                regressions.append(_regression(metric, row, previous, abs(limit)))
    return regressions


def _regression(metric: str, row, previous: pd.Series, threshold: float) -> Regression:
    before, now = float(previous[metric]), float(getattr(row, metric))
    label = {"pass_at_1": "pass@1", "sandbox_error_rate": "sandbox error rate", "timeout_rate": "timeout rate"}
    allowed = "drop" if metric == "pass_at_1" else "increase"
    message = (f"{label[metric]} of model {row.model!r} (policy mode {row.policy_mode!r}) on {row.benchmark} "
               f"went from {before:.3f} in run {previous['run_id']} ({previous['recorded_at']:%Y-%m-%d %H:%M} UTC) "
               f"to {now:.3f} tonight ({now - before:+.3f}), beyond the allowed {allowed} of {threshold:.3f}")
    if previous["problems_hash"] != row.problems_hash:
        message += (f"; note: the benchmark's problems changed since that run (hash {previous['problems_hash'][:12]}"
                    f" → {row.problems_hash[:12]})")
    return Regression(metric, row.model, row.policy_mode, str(previous["run_id"]), before, now, threshold, message)


def _checked(rows: pd.DataFrame, what: str) -> pd.DataFrame:
    """Rows in the table's schema, or a HistoryError naming what is wrong."""
    if not isinstance(rows, pd.DataFrame):
        raise HistoryError(f"{what} must be a pandas DataFrame, got {type(rows).__name__}")
    if rows.empty:
        raise HistoryError(f"{what}: no rows")
    missing = [c for c in REQUIRED if c not in rows.columns]
    unknown = [c for c in rows.columns if c not in COLUMNS]
    if missing or unknown:
        raise HistoryError(f"{what}: missing columns {missing}, unknown columns {unknown}")
    nulls = {c: int(rows[c].isna().sum()) for c in REQUIRED if rows[c].isna().any()}
    if nulls:
        raise HistoryError(f"{what}: null values in required columns {nulls}")
    try:
        aware = pd.to_datetime(rows["recorded_at"]).dt.tz is not None
    except (TypeError, ValueError) as error:
        raise HistoryError(f"{what}: recorded_at must hold timestamps: {error}") from error
    if not aware:
        raise HistoryError(f"{what}: recorded_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    rows = rows.reindex(columns=COLUMNS)
    try:
        rows = pa.Table.from_pandas(rows, schema=SCHEMA, preserve_index=False).to_pandas()
    except (pa.ArrowException, TypeError, ValueError) as error:
        raise HistoryError(f"{what} do not fit the history schema: {error}") from error
    out_of_range = [c for c in RATES if ((rows[c] < 0) | (rows[c] > 1)).any()]
    if out_of_range or (rows["n"] < 1).any():
        raise HistoryError(f"{what}: rates outside [0, 1] in {out_of_range} or n < 1")
    duplicated = rows.duplicated(ROW_KEY, keep=False)
    if duplicated.any():
        raise HistoryError(f"{what}: duplicate (run_id, benchmark, model, policy_mode) "
                           f"{rows.loc[duplicated, ROW_KEY].drop_duplicates().values.tolist()}")
    return rows


def _new_rows(history: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """Rows not yet recorded; a key already recorded with other numbers is refused."""
    if history.empty:
        return rows
    merged = rows.merge(history, on=ROW_KEY, how="left", suffixes=("", "_recorded"), indicator=True)
    recorded = merged["_merge"] == "both"
    compared = [c for c in COLUMNS if c not in ROW_KEY and c != "recorded_at"]
    for column in compared:
        a, b = merged.loc[recorded, column], merged.loc[recorded, column + "_recorded"]
        differs = ~((a == b) | (a.isna() & b.isna()))
        if differs.any():
            key = merged.loc[recorded].loc[differs, ROW_KEY].values.tolist()
            raise HistoryError(f"history already records {key} with another {column} "
                               f"({b[differs].tolist()} there, {a[differs].tolist()} now); rows are never changed: "
                               "give this run a new run id")
    return rows[~recorded.to_numpy()].reset_index(drop=True)
