"""Scores of a results table: unbiased pass@k, compile rate, error taxonomy, paired comparison.

Plain pandas/numpy so the aggregate stage, the report and the tests share one definition of
every number. Bad input raises `MetricsError`; nothing is dropped silently: a task with missing
samples is a bug upstream and would bias pass@k if it were averaged anyway. Outputs are plain
JSON-serializable dicts (no numpy scalars) that keep numbers and metadata apart.
"""

from __future__ import annotations

import math
import operator
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import Any, TypedDict

import numpy as np
import pandas as pd

from tasks.schema import Status, Validity

REQUIRED_COLUMNS = ("task_id", "sample_index", "model", "policy_mode", "status", "error_codes")
GROUP_KEYS = ["model", "policy_mode"]
PASSED = Status.PASSED.value
# A program "compiled" when the executor got as far as running its tests.
COMPILED_STATUSES = frozenset(
    s.value for s in (Status.PASSED, Status.FAILED_TESTS, Status.TEST_TIMEOUT, Status.RUNTIME_CRASH)
)
EXCLUDED_BY_DEFAULT = frozenset((Validity.REFERENCE_FAILS.value, Validity.NOT_EVALUABLE.value))
CONFIDENCE = 0.95
SOLVED_THRESHOLD = 0.5  # a task counts as solved by a model when its pass@1 (c/n) ≥ this
TOP_ERROR_CODES = 10
_CHUNK = 1024  # resampling rows per numpy batch, bounds memory for large inputs


class MetricsError(ValueError):
    """The results table cannot be scored as given (inconsistent, incomplete or malformed)."""


class Interval(TypedDict):
    low: float
    high: float


class CategoryScore(TypedDict):
    tasks: int
    pass_at_1: float


class GroupMetrics(TypedDict):
    n: int  # samples per task, identical for every task of the group
    tasks_scored: int
    samples_scored: int
    pass_at_k: dict[str, float]  # str(k) -> mean over tasks of the unbiased estimator
    pass_at_1_ci: Interval | None  # None when bootstrap_samples == 0
    compile_rate: float
    status_counts: dict[str, int]  # every Status value, zeros included
    top_error_codes: dict[str, int]  # code -> number of samples reporting it, most frequent first
    per_category: dict[str, CategoryScore] | None  # None when the table has no `category`
    per_task_pass_rate: dict[str, float]  # task_id -> c / n


class Summary(TypedDict):
    groups: dict[str, dict[str, GroupMetrics]]  # model -> policy_mode -> metrics
    meta: dict[str, Any]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k = 1 - C(n-c, k) / C(n, k) for n samples of which c passed.

    Product form 1 - Π_{i=n-c+1..n} (1 - k/i) avoids huge binomials; exact for the edge cases.
    """
    n, c, k = (operator.index(v) for v in (n, c, k))
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got k={k}")
    if k > n:
        raise ValueError(f"k={k} exceeds the number of samples n={n}")
    if not 0 <= c <= n:
        raise ValueError(f"passes c={c} must lie in [0, n={n}]")
    if n - c < k:  # every k-subset contains a pass
        return 1.0
    survive = 1.0
    for i in range(n - c + 1, n + 1):
        survive *= 1.0 - k / i
    return 1.0 - survive


def summarize(
    results: pd.DataFrame,
    ks: Sequence[int] = (1, 10, 100),
    include_invalid: bool = False,
    bootstrap_samples: int = 1000,
    seed: int = 0,
    *,
    expected_task_ids: Iterable[str] | Mapping[str, Iterable[str]] | None = None,
) -> Summary:
    """Metrics of every (model, policy_mode) group of a per-sample results table.

    `expected_task_ids`, when given, must be exactly the scored tasks of every group (tasks
    excluded by validity may be in it): a model that skipped a task is refused, not averaged.
    A mapping model → task ids gives each model its own task set (samples covering different
    subsets, decided at input checking); `meta["task_sets"]` then says which model has how many.
    """
    ks = _checked_ks(ks)
    _check_non_negative_int(bootstrap_samples, "bootstrap_samples")
    frame, excluded, invalid = _prepare(results, include_invalid)
    per_model = isinstance(expected_task_ids, Mapping)
    if per_model:
        expected_of = {str(m): set(ids) - set(excluded) for m, ids in expected_task_ids.items()}
    elif expected_task_ids is not None:
        shared = set(expected_task_ids) - set(excluded)
    categories = _task_categories(frame) if "category" in frame.columns else None
    groups: dict[str, dict[str, GroupMetrics]] = {}
    for (model, mode), group in frame.groupby(GROUP_KEYS, sort=True):
        label = f"model {model!r} / policy_mode {mode!r}"
        per_task, n = _per_task_counts(group, label)
        if expected_task_ids is not None:
            _check_task_set(set(per_task.index), expected_of.get(str(model), set()) if per_model else shared, label)
        too_large = [k for k in ks if k > n]
        if too_large:
            raise MetricsError(f"{label}: requested k={too_large} exceed n={n} samples per task")
        groups.setdefault(model, {})[mode] = _group_metrics(
            group, per_task, n, ks, categories, bootstrap_samples, seed
        )
    return {
        "groups": groups,
        "meta": {
            "ks": ks,
            "include_invalid": include_invalid,
            "excluded_tasks": excluded,
            "invalid_tasks": invalid,
            "confidence": CONFIDENCE,
            "ci_method": "percentile bootstrap over tasks of mean pass@1",
            "bootstrap_samples": bootstrap_samples,
            "seed": seed,
            "pass_rule": "only status 'passed' is a pass; every other status is a failure in n",
            "compiled_statuses": sorted(COMPILED_STATUSES),
            "error_code_rule": "samples reporting the code (a code repeated in one sample counts once)",
            **({"task_sets": _task_sets(groups)} if per_model else {}),
        },
    }


def _task_sets(groups: dict[str, dict[str, GroupMetrics]]) -> dict[str, Any]:
    """Models scored over different tasks: each one's count, and what every pair of them shares."""
    tasks = {model: set(next(iter(modes.values()))["per_task_pass_rate"]) for model, modes in groups.items()}
    shared = set.intersection(*tasks.values()) if tasks else set()
    return {
        "rule": "each model is scored over the tasks it has samples for; compare models over shared tasks only",
        "tasks_per_model": {model: len(ids) for model, ids in sorted(tasks.items())},
        "shared_by_all": len(shared),
        "pass_at_1_on_shared": {
            model: {mode: (float(np.mean([g["per_task_pass_rate"][t] for t in shared])) if shared else None)
                    for mode, g in sorted(modes.items())}
            for model, modes in sorted(groups.items())
        },
    }

# ---------------------------------------------------------------- validation and preparation


def _prepare(results: pd.DataFrame, include_invalid: bool) -> tuple[pd.DataFrame, dict, dict]:
    """Checked copy of the table with enum columns as plain values, invalid tasks removed."""
    if not isinstance(results, pd.DataFrame):
        raise MetricsError(f"results must be a pandas DataFrame, got {type(results).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in results.columns]
    if missing:
        raise MetricsError(f"results table lacks required columns {missing}")
    if results.empty:
        raise MetricsError("results table is empty")
    frame = results.copy()
    for column in ("task_id", "sample_index", "model", "policy_mode", "status"):
        nulls = int(frame[column].isna().sum())
        if nulls:
            raise MetricsError(f"column {column!r} has {nulls} null value(s)")
    frame["status"] = _enum_values(frame["status"], Status)
    duplicated = frame.duplicated(GROUP_KEYS + ["task_id", "sample_index"], keep=False)
    if duplicated.any():
        keys = frame.loc[duplicated, GROUP_KEYS + ["task_id", "sample_index"]].drop_duplicates()
        examples = _examples(keys.values.tolist())
        raise MetricsError(f"duplicate samples (same model, mode, task, index): {examples}")
    invalid: dict[str, str] = {}
    if "validity" in frame.columns:
        if frame["validity"].isna().any():
            raise MetricsError("column 'validity' has null values; every task needs a validity")
        frame["validity"] = _enum_values(frame["validity"], Validity)
        per_task = _one_value_per_task(frame, "validity")
        invalid = {t: v for t, v in sorted(per_task.items()) if v in EXCLUDED_BY_DEFAULT}
    excluded = {} if include_invalid else invalid
    if excluded:
        before = set(map(tuple, frame[GROUP_KEYS].drop_duplicates().values.tolist()))
        frame = frame[~frame["task_id"].isin(excluded)]
        after = set(map(tuple, frame[GROUP_KEYS].drop_duplicates().values.tolist()))
        if before - after:
            raise MetricsError(
                f"groups {sorted(before - after)} have no task left after excluding invalid tasks; "
                "pass include_invalid=True to score them"
            )
    return frame, excluded, invalid


def _enum_values(column: pd.Series, enum: type[Enum]) -> pd.Series:
    values = column.map(lambda v: v.value if isinstance(v, Enum) else v)
    allowed = {member.value for member in enum}
    unknown = sorted(set(map(str, values.unique())) - allowed)
    if unknown or not values.map(lambda v: isinstance(v, str)).all():
        raise MetricsError(f"unknown {enum.__name__} value(s) {unknown}; allowed: {sorted(allowed)}")
    return values


def _one_value_per_task(frame: pd.DataFrame, column: str) -> dict[str, str]:
    distinct = frame.groupby("task_id")[column].unique()
    conflicting = {t: sorted(v) for t, v in distinct.items() if len(v) > 1}
    if conflicting:
        raise MetricsError(f"tasks with conflicting {column!r}: {_examples(list(conflicting.items()))}")
    return {t: v[0] for t, v in distinct.items()}


def _task_categories(frame: pd.DataFrame) -> dict[str, str]:
    if not frame["category"].map(lambda v: isinstance(v, str)).all():
        raise MetricsError("column 'category' must hold strings (use '' for uncategorized)")
    return _one_value_per_task(frame, "category")


def _per_task_counts(group: pd.DataFrame, label: str) -> tuple[pd.DataFrame, int]:
    """Per task n and c (index task_id), plus the group's n, identical for all tasks."""
    passed = group["status"].eq(PASSED)
    per_task = passed.groupby(group["task_id"]).agg(["size", "sum"])
    per_task.columns = ["n", "c"]
    counts = per_task["n"]
    frequency = counts.value_counts()
    n = int(max(frequency.index[frequency == frequency.max()]))  # most common count, ties → larger
    other = counts[counts != n]
    if len(other):
        raise MetricsError(
            f"{label}: most tasks have {n} samples but these have other counts (missing or extra "
            f"samples upstream): {_examples([(t, int(v)) for t, v in other.items()])}"
        )
    return per_task.astype(int), n


def _check_task_set(actual: set[str], expected: set[str], label: str) -> None:
    if actual != expected:
        raise MetricsError(
            f"{label}: tasks missing {_examples(sorted(expected - actual))}, "
            f"unexpected {_examples(sorted(actual - expected))}"
        )


def _checked_ks(ks: Sequence[int]) -> list[int]:
    if isinstance(ks, (str, bytes)) or not ks:
        raise MetricsError(f"ks must be a non-empty sequence of integers, got {ks!r}")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise MetricsError(f"every k must be an integer ≥ 1, got {k!r}")
    return sorted({int(k) for k in ks})


def _check_non_negative_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise MetricsError(f"{name} must be a non-negative integer, got {value!r}")


def _examples(items: list, limit: int = 20) -> str:
    shown = ", ".join(map(str, items[:limit]))
    return f"{shown} … and {len(items) - limit} more" if len(items) > limit else shown or "none"


# ---------------------------------------------------------------- numbers of one group


def _group_metrics(
    group: pd.DataFrame,
    per_task: pd.DataFrame,
    n: int,
    ks: list[int],
    categories: dict[str, str] | None,
    bootstrap_samples: int,
    seed: int,
) -> GroupMetrics:
    pass_rate = per_task["c"] / n
    status_counts = group["status"].value_counts()
    per_category = None
    if categories is not None:
        by_category = pass_rate.groupby(pass_rate.index.map(categories))
        per_category = {
            str(cat): {"tasks": int(rates.size), "pass_at_1": float(rates.mean())}
            for cat, rates in by_category
        }
    return {
        "n": n,
        "tasks_scored": int(len(per_task)),
        "samples_scored": int(len(group)),
        "pass_at_k": {
            str(k): float(np.mean([pass_at_k(n, int(c), k) for c in per_task["c"]])) for k in ks
        },
        "pass_at_1_ci": _bootstrap_mean_ci(pass_rate.to_numpy(dtype=float), bootstrap_samples, seed),
        "compile_rate": float(group["status"].isin(COMPILED_STATUSES).mean()),
        "status_counts": {s.value: int(status_counts.get(s.value, 0)) for s in Status},
        "top_error_codes": _top_error_codes(group["error_codes"]),
        "per_category": per_category,
        "per_task_pass_rate": {str(t): float(r) for t, r in pass_rate.items()},
    }


def _top_error_codes(column: pd.Series) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for codes in column:
        if codes is None or (isinstance(codes, float) and math.isnan(codes)):
            continue
        if isinstance(codes, (str, bytes)) or not isinstance(codes, (list, tuple, np.ndarray)):
            raise MetricsError(f"error_codes must be a list of strings per sample, got {codes!r}")
        if not all(isinstance(code, str) for code in codes):
            raise MetricsError(f"error_codes must hold strings, got {list(codes)!r}")
        counts.update(set(codes))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP_ERROR_CODES]
    return {code: int(count) for code, count in ranked}


# ---------------------------------------------------------------- resampling


def _bootstrap_mean_ci(values: np.ndarray, samples: int, seed: int) -> Interval | None:
    """Percentile bootstrap of the mean, resampling tasks with replacement."""
    if samples == 0:
        return None
    rng = np.random.default_rng(seed)
    means = []
    for start in range(0, samples, _CHUNK):
        rows = min(_CHUNK, samples - start)
        means.append(values[rng.integers(0, values.size, size=(rows, values.size))].mean(axis=1))
    tail = (1.0 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(np.concatenate(means), [tail, 100 - tail])
    return {"low": float(low), "high": float(high)}


def __getattr__(name: str) -> Any:
    """`paired_comparison` and `PairedComparison` live in `tasks.comparison`, which imports this
    module; they stay importable from here, loaded on first use so neither import is circular."""
    if name in ("paired_comparison", "PairedComparison"):
        from tasks import comparison

        return getattr(comparison, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
