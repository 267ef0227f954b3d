"""Reading and checking a samples file before any compiling starts.

Input is any harness's output that `tasks.imports` reads (human-eval JSONL, parquet, bigcode,
MultiPL-E, evalplus, lm-eval). Everything that is wrong with the file is reported at once, with
line numbers, before expensive work: malformed lines, unknown task ids, missing tasks, unequal
sample counts.
A completion that is itself bad (empty, NUL, non-UTF-8, huge) is NOT a file error: it is kept
and scored as `invalid_completion`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pandas as pd

from tasks.imports import Context, SamplesError, import_samples

__all__ = ["SamplesError", "check_against_problems", "read_samples", "sample_keys"]

MAX_REPORTED = 10


def read_samples(path: Path, context: Context | None = None) -> pd.DataFrame:
    """Rows of the samples input, with `sample_index` filled per task in file order if absent.

    `context` carries the import options and the benchmark's task order (needed by formats that
    match samples to tasks by position); without it the default detection is used.
    """
    path = Path(path)
    _, frame = import_samples(path, context or Context())
    if frame.empty:
        raise SamplesError(f"{path}: contains no samples")
    missing = [c for c in ("task_id", "completion") if c not in frame.columns]
    if missing:
        raise SamplesError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    bad_ids = frame.index[~frame["task_id"].map(lambda v: isinstance(v, str) and v != "")]
    if len(bad_ids):
        rows = ", ".join(str(i + 1) for i in bad_ids[:MAX_REPORTED])
        raise SamplesError(f"{path}: task_id must be a non-empty string (rows {rows})")
    keys = sample_keys(frame)
    if "sample_index" not in frame.columns:
        frame["sample_index"] = frame.groupby(keys[:-1]).cumcount()
    frame["sample_index"] = _sample_indexes(frame, keys[:-1], path)
    duplicated = frame.duplicated(keys)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        where = ", ".join(f"{k} {first[k]}" for k in keys)
        raise SamplesError(f"{path}: duplicate sample ({where})")
    return frame.reset_index(drop=True)


def _sample_indexes(frame: pd.DataFrame, group_keys: list[str], path: Path) -> pd.Series:
    """Integer indexes; rows that lack one are numbered after their task's given ones."""
    index = pd.to_numeric(frame["sample_index"], errors="coerce")
    given = frame["sample_index"].notna()
    bad = given & (index.isna() | (index % 1 != 0) | (index < 0))
    if bad.any():
        rows = ", ".join(str(i + 1) for i in frame.index[bad][:MAX_REPORTED])
        raise SamplesError(f"{path}: sample_index must be a non-negative integer (rows {rows})")
    missing = ~given
    if missing.any():
        start = index.groupby([frame[k] for k in group_keys]).transform("max").fillna(-1)
        order = frame[missing].groupby(group_keys).cumcount()
        index = index.where(given, start + 1 + order.reindex(frame.index).fillna(0))
    return index.astype("int64")


def sample_keys(frame: pd.DataFrame) -> list[str]:
    """What identifies a sample: (model,) task_id, sample_index — a file may hold several models."""
    return (["model"] if "model" in frame.columns else []) + ["task_id", "sample_index"]


def check_against_problems(
    samples: pd.DataFrame, task_ids: set[str], *, allow_missing_tasks: bool = False
) -> int:
    """Refuse samples that cannot give an honest pass@k; return samples per task (n)."""
    unknown = sorted(set(samples["task_id"]) - task_ids)
    if unknown:
        shown = ", ".join(unknown[:MAX_REPORTED])
        raise SamplesError(f"{len(unknown)} unknown task id(s) not in the benchmark: {shown}")
    missing = sorted(task_ids - set(samples["task_id"]))
    if missing and not allow_missing_tasks:
        shown = ", ".join(missing[:MAX_REPORTED])
        raise SamplesError(
            f"{len(missing)} benchmark task(s) have no samples (e.g. {shown}); "
            "pass --only-sampled-tasks to score only the tasks present"
        )
    groups = samples.groupby("model") if "model" in samples.columns else [("", samples)]
    n_by_model: dict[str, int] = {}
    for model, group in groups:
        counts = Counter(group["task_id"])
        sizes = Counter(counts.values())
        label = f"model {model}: " if model != "" else ""
        if len(sizes) > 1:
            n = sizes.most_common(1)[0][0]
            odd = sorted(t for t, c in counts.items() if c != n)[:MAX_REPORTED]
            raise SamplesError(
                f"{label}tasks have unequal sample counts (most have {n}); differing: "
                + ", ".join(f"{t}={counts[t]}" for t in odd)
            )
        if not allow_missing_tasks and set(counts) != task_ids:
            absent = sorted(task_ids - set(counts))[:MAX_REPORTED]
            raise SamplesError(f"{label}{len(task_ids - set(counts))} task(s) have no samples (e.g. {', '.join(absent)}); "
                               "pass --only-sampled-tasks to score each model over the tasks it has")
        n_by_model[str(model)] = next(iter(sizes))
    if len(set(n_by_model.values())) > 1:
        raise SamplesError(f"models have different samples per task: {n_by_model}; pass@k needs one n")
    return next(iter(n_by_model.values()))
