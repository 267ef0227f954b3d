"""Paired comparison of two models on shared tasks (`paired_comparison`); split out of `tasks.metrics` to keep modules small."""

from __future__ import annotations

from typing import Any, TypedDict

import numpy as np
import pandas as pd

from tasks.metrics import (
    _CHUNK,
    CONFIDENCE,
    SOLVED_THRESHOLD,
    MetricsError,
    _bootstrap_mean_ci,
    _check_non_negative_int,
    _per_task_counts,
    _prepare,
)


class PairedComparison(TypedDict):
    comparison: dict[str, Any]
    meta: dict[str, Any]


def paired_comparison(
    results: pd.DataFrame,
    model_a: str,
    model_b: str,
    policy_mode: str,
    *,
    include_invalid: bool = False,
    bootstrap_samples: int = 1000,
    permutations: int = 10000,
    seed: int = 0,
) -> PairedComparison:
    """Per-task pass@1 of model_b minus model_a (e.g. fine-tune minus base) on shared tasks.

    The p-value is a two-sided paired sign-flip test of the mean difference: exact enumeration
    when 2**(tasks with a non-zero difference) ≤ `permutations`, otherwise Monte Carlo with the
    (count + 1) / (permutations + 1) correction. A task "flipped" when exactly one model solves
    it, solved meaning pass@1 ≥ SOLVED_THRESHOLD (0.5).
    """
    _check_non_negative_int(bootstrap_samples, "bootstrap_samples")
    _check_non_negative_int(permutations, "permutations")
    if permutations < 1:
        raise MetricsError("permutations must be ≥ 1")
    frame, excluded, _ = _prepare(results, include_invalid)
    in_mode = frame[frame["policy_mode"] == policy_mode]
    rates = {}
    for model in (model_a, model_b):
        rows = in_mode[in_mode["model"] == model]
        if rows.empty:
            available = sorted(in_mode["model"].unique())
            raise MetricsError(
                f"no results for model {model!r} in policy_mode {policy_mode!r}; available: {available}"
            )
        per_task, n = _per_task_counts(rows, f"model {model!r} / policy_mode {policy_mode!r}")
        rates[model] = per_task["c"] / n
    rate_a, rate_b = rates[model_a], rates[model_b]
    shared = sorted(set(rate_a.index) & set(rate_b.index))
    if not shared:
        raise MetricsError(f"models {model_a!r} and {model_b!r} share no scored task")
    a = rate_a.loc[shared].to_numpy(dtype=float)
    b = rate_b.loc[shared].to_numpy(dtype=float)
    diff = b - a
    p_value, method = _sign_flip_p_value(diff, permutations, seed)
    solved_a, solved_b = a >= SOLVED_THRESHOLD, b >= SOLVED_THRESHOLD
    return {
        "comparison": {
            "tasks_compared": len(shared),
            "pass_at_1_a": float(a.mean()),
            "pass_at_1_b": float(b.mean()),
            "mean_difference": float(diff.mean()),
            "difference_ci": _bootstrap_mean_ci(diff, bootstrap_samples, seed),
            "p_value": p_value,
            "gained": [t for t, sa, sb in zip(shared, solved_a, solved_b) if sb and not sa],
            "lost": [t for t, sa, sb in zip(shared, solved_a, solved_b) if sa and not sb],
            "per_task": {
                t: {"a": float(x), "b": float(y), "difference": float(y - x)}
                for t, x, y in zip(shared, a, b)
            },
            "tasks_only_in_a": sorted(set(rate_a.index) - set(shared)),
            "tasks_only_in_b": sorted(set(rate_b.index) - set(shared)),
        },
        "meta": {
            "model_a": model_a,
            "model_b": model_b,
            "policy_mode": policy_mode,
            "difference": "pass@1 of model_b minus pass@1 of model_a, per task",
            "confidence": CONFIDENCE,
            "bootstrap_samples": bootstrap_samples,
            "permutation_test": f"two-sided paired sign-flip, {method}",
            "permutations": permutations,
            "seed": seed,
            "solved_threshold": SOLVED_THRESHOLD,
            "include_invalid": include_invalid,
            "excluded_tasks": excluded,
        },
    }


def _sign_flip_p_value(diff: np.ndarray, permutations: int, seed: int) -> tuple[float, str]:
    """Two-sided p-value of the paired mean difference under random sign flips."""
    nonzero = diff[diff != 0]  # a zero difference is unchanged by a flip
    if nonzero.size == 0:
        return 1.0, "exact"
    observed = abs(nonzero.sum())
    tolerance = 1e-9 * max(1.0, observed)
    if 2 ** nonzero.size <= permutations:
        bits = (np.arange(2 ** nonzero.size)[:, None] >> np.arange(nonzero.size)) & 1
        sums = np.abs((1 - 2 * bits) @ nonzero)
        return float(np.mean(sums >= observed - tolerance)), "exact"
    rng = np.random.default_rng(seed)
    extreme = 0
    for start in range(0, permutations, _CHUNK):
        rows = min(_CHUNK, permutations - start)
        signs = rng.choice((-1.0, 1.0), size=(rows, nonzero.size))
        extreme += int(np.sum(np.abs(signs @ nonzero) >= observed - tolerance))
    return (extreme + 1) / (permutations + 1), f"monte carlo ({permutations} draws)"
