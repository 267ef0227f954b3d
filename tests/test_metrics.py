"""Specification of the scores: unbiased pass@k, group metrics, paired base-vs-fine-tune test."""

from __future__ import annotations

import json
import math
import random

import pandas as pd
import pytest

from tasks.metrics import MetricsError, pass_at_k, paired_comparison, summarize
from tasks.schema import Status, Validity


def rows(model: str, task: str, statuses: list[str], *, mode: str = "none", **extra) -> list[dict]:
    """One result row per status, sample indices 0..len-1."""
    return [
        {
            "task_id": task,
            "sample_index": i,
            "model": model,
            "policy_mode": mode,
            "status": status,
            "error_codes": extra.get("codes", {}).get(i, []),
            **{k: v for k, v in extra.items() if k != "codes"},
        }
        for i, status in enumerate(statuses)
    ]


def table(*groups: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([row for group in groups for row in group])


P, F, C = "passed", "failed_tests", "compile_error"


# ---------------------------------------------------------------- pass_at_k


def test_pass_at_k_hand_computed_cases():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - math.comb(3, 2) / math.comb(5, 2))  # 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7, abs=1e-15)
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3, abs=1e-15)
    assert pass_at_k(4, 1, 3) == pytest.approx(0.75, abs=1e-15)  # 1 - C(3,3)/C(4,3)


def test_pass_at_k_is_exact_at_the_edges():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(7, 0, 7) == 0.0  # n == k, no pass
    assert pass_at_k(7, 1, 7) == 1.0  # n == k, any pass is drawn
    assert pass_at_k(10, 6, 5) == 1.0  # fewer failures than k: every draw has a pass


@pytest.mark.parametrize(
    "n, c, k", [(5, 1, 6), (5, 1, 0), (5, 1, -1), (5, 6, 1), (5, -1, 1), (0, 0, 1)]
)
def test_pass_at_k_rejects_impossible_arguments(n, c, k):
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_pass_at_k_agrees_with_binomial_formula_on_random_cases():
    rng = random.Random(1234)
    for _ in range(200):
        n = rng.randint(1, 300)
        c = rng.randint(0, n)
        k = rng.randint(1, n)
        reference = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert abs(pass_at_k(n, c, k) - reference) < 1e-12, (n, c, k)


# ---------------------------------------------------------------- summarize


def test_summarize_scores_each_model_and_mode_separately():
    results = table(
        rows("base", "t1", [P, F, F, C]),
        rows("base", "t2", [P, P, P, P]),
        rows("base", "t1", [F, F, F, F], mode="policy"),
        rows("base", "t2", [P, P, F, F], mode="policy"),
    )
    summary = summarize(results, ks=(1, 2), bootstrap_samples=0)
    none = summary["groups"]["base"]["none"]
    assert none["n"] == 4
    assert none["tasks_scored"] == 2
    assert none["samples_scored"] == 8
    assert none["pass_at_k"]["1"] == pytest.approx((0.25 + 1.0) / 2)
    assert none["pass_at_k"]["2"] == pytest.approx((0.5 + 1.0) / 2)  # 1 - C(3,2)/C(4,2) = 0.5
    assert none["per_task_pass_rate"] == {"t1": 0.25, "t2": 1.0}
    policy = summary["groups"]["base"]["policy"]
    assert policy["pass_at_k"]["1"] == pytest.approx(0.25)
    assert none["pass_at_1_ci"] is None


def test_every_status_other_than_passed_is_a_failure_and_every_status_is_counted():
    statuses = [P, "generation_failed", "invalid_completion", "sandbox_error", "policy_violation"]
    summary = summarize(table(rows("m", "t1", statuses)), ks=(1,), bootstrap_samples=0)
    group = summary["groups"]["m"]["none"]
    assert group["pass_at_k"]["1"] == pytest.approx(0.2)
    assert group["status_counts"] == {
        "passed": 1,
        "failed_tests": 0,
        "compile_error": 0,
        "compile_timeout": 0,
        "test_timeout": 0,
        "runtime_crash": 0,
        "policy_violation": 1,
        "invalid_completion": 1,
        "generation_failed": 1,
        "sandbox_error": 1,
    }


def test_compile_rate_counts_programs_that_reached_their_tests_over_all_samples():
    compiled = [P, F, "test_timeout", "runtime_crash"]
    statuses = compiled + [C, "compile_timeout", "generation_failed", "sandbox_error"]
    summary = summarize(table(rows("m", "t1", statuses)), ks=(1,), bootstrap_samples=0)
    assert summary["groups"]["m"]["none"]["compile_rate"] == 0.5


def test_status_enum_members_are_accepted_like_their_values():
    results = table(rows("m", "t1", [Status.PASSED, Status.COMPILE_ERROR]))
    group = summarize(results, ks=(1,), bootstrap_samples=0)["groups"]["m"]["none"]
    assert group["pass_at_k"]["1"] == 0.5


def test_unknown_status_is_refused():
    with pytest.raises(MetricsError, match="unknown Status value.*'ok'"):
        summarize(table(rows("m", "t1", [P, "ok"])), ks=(1,))


def test_unequal_sample_counts_name_the_odd_tasks():
    results = table(rows("m", "t1", [P, F, F]), rows("m", "t2", [P, F, F]), rows("m", "t3", [P, F]))
    with pytest.raises(MetricsError, match=r"most tasks have 3 samples.*\('t3', 2\)"):
        summarize(results, ks=(1,))


def test_duplicate_samples_are_refused():
    results = table(rows("m", "t1", [P, F]), rows("m", "t1", [P]))
    with pytest.raises(MetricsError, match="duplicate samples"):
        summarize(results, ks=(1,))


def test_k_larger_than_n_is_an_error_not_an_omission():
    results = table(rows("m", "t1", [P, F, F]))
    with pytest.raises(MetricsError, match=r"k=\[10, 100\] exceed n=3"):
        summarize(results)


def test_missing_required_column_is_named():
    results = table(rows("m", "t1", [P])).drop(columns=["error_codes"])
    with pytest.raises(MetricsError, match="error_codes"):
        summarize(results, ks=(1,))


def test_invalid_tasks_are_excluded_and_listed_by_default():
    results = table(
        rows("m", "good", [P, F], validity="valid"),
        rows("m", "nomc", [F, F], validity="unverified"),
        rows("m", "broken_ref", [F, F], validity="reference_fails"),
        rows("m", "truncated", [F, F], validity=Validity.NOT_EVALUABLE),
    )
    summary = summarize(results, ks=(1,), bootstrap_samples=0)
    group = summary["groups"]["m"]["none"]
    assert group["tasks_scored"] == 2
    assert group["pass_at_k"]["1"] == pytest.approx(0.25)
    assert summary["meta"]["excluded_tasks"] == {
        "broken_ref": "reference_fails",
        "truncated": "not_evaluable",
    }
    assert summary["meta"]["invalid_tasks"] == summary["meta"]["excluded_tasks"]


def test_include_invalid_scores_every_task_and_still_lists_the_invalid_ones():
    results = table(
        rows("m", "good", [P, F], validity="valid"),
        rows("m", "broken_ref", [F, F], validity="reference_fails"),
    )
    summary = summarize(results, ks=(1,), include_invalid=True, bootstrap_samples=0)
    assert summary["groups"]["m"]["none"]["tasks_scored"] == 2
    assert summary["groups"]["m"]["none"]["pass_at_k"]["1"] == pytest.approx(0.25)
    assert summary["meta"]["excluded_tasks"] == {}
    assert summary["meta"]["invalid_tasks"] == {"broken_ref": "reference_fails"}


def test_a_group_left_without_tasks_by_exclusion_is_an_error():
    results = table(rows("m", "broken_ref", [P], validity="reference_fails"))
    with pytest.raises(MetricsError, match="no task left"):
        summarize(results, ks=(1,))


def test_expected_task_ids_catch_a_task_a_model_skipped():
    results = table(rows("m", "t1", [P]), rows("m", "t2", [F]))
    with pytest.raises(MetricsError, match="tasks missing t3"):
        summarize(results, ks=(1,), expected_task_ids=["t1", "t2", "t3"])


def test_top_error_codes_count_samples_and_break_ties_by_code():
    codes = {0: ["E0308", "E0308", "E0425"], 1: ["E0308"], 2: ["E0599"], 3: []}
    results = table(rows("m", "t1", [C, C, C, P], codes=codes))
    group = summarize(results, ks=(1,), bootstrap_samples=0)["groups"]["m"]["none"]
    assert list(group["top_error_codes"].items()) == [("E0308", 2), ("E0425", 1), ("E0599", 1)]


def test_error_codes_given_as_a_string_are_refused():
    results = table(rows("m", "t1", [C]))
    results.at[0, "error_codes"] = "E0308"
    with pytest.raises(MetricsError, match="list of strings"):
        summarize(results, ks=(1,))


def test_per_category_pass_at_1_averages_tasks_of_each_category():
    results = table(
        rows("m", "a1", [P, P], category="codegen"),
        rows("m", "a2", [P, F], category="codegen"),
        rows("m", "b1", [F, F], category="fix"),
    )
    group = summarize(results, ks=(1,), bootstrap_samples=0)["groups"]["m"]["none"]
    assert group["per_category"] == {
        "codegen": {"tasks": 2, "pass_at_1": 0.75},
        "fix": {"tasks": 1, "pass_at_1": 0.0},
    }


def test_per_category_is_none_without_a_category_column():
    group = summarize(table(rows("m", "t1", [P])), ks=(1,), bootstrap_samples=0)["groups"]["m"]["none"]
    assert group["per_category"] is None


def _twenty_tasks() -> pd.DataFrame:
    return table(*(rows("m", f"t{i:02d}", [P] * (i % 5) + [F] * (4 - i % 5)) for i in range(20)))


def test_pass_at_1_confidence_interval_is_seeded_and_brackets_the_estimate():
    results = _twenty_tasks()
    first = summarize(results, ks=(1,), bootstrap_samples=500, seed=7)
    again = summarize(results, ks=(1,), bootstrap_samples=500, seed=7)
    other_seed = summarize(results, ks=(1,), bootstrap_samples=500, seed=8)
    ci = first["groups"]["m"]["none"]["pass_at_1_ci"]
    assert ci == again["groups"]["m"]["none"]["pass_at_1_ci"]
    assert ci != other_seed["groups"]["m"]["none"]["pass_at_1_ci"]
    estimate = first["groups"]["m"]["none"]["pass_at_k"]["1"]
    assert ci["low"] < estimate < ci["high"]


def test_confidence_interval_of_identical_tasks_is_the_point_estimate():
    results = table(*(rows("m", f"t{i}", [P, F]) for i in range(6)))
    ci = summarize(results, ks=(1,), bootstrap_samples=200)["groups"]["m"]["none"]["pass_at_1_ci"]
    assert ci == {"low": 0.5, "high": 0.5}


def test_summary_is_plain_json():
    summary = summarize(_twenty_tasks().assign(category="codegen"), ks=(1, 2), bootstrap_samples=50)
    assert json.loads(json.dumps(summary, allow_nan=False)) == summary


# ---------------------------------------------------------------- paired_comparison


def test_paired_comparison_on_a_constructed_case():
    results = table(
        rows("base", "t1", [F, F]),
        rows("base", "t2", [F, F]),
        rows("base", "t3", [P, F]),
        rows("base", "t4", [P, P]),
        rows("base", "only_base", [P, P]),
        rows("tuned", "t1", [P, P]),
        rows("tuned", "t2", [P, P]),
        rows("tuned", "t3", [F, P]),
        rows("tuned", "t4", [F, F]),
    )
    out = paired_comparison(results, "base", "tuned", "none")
    comparison = out["comparison"]
    assert comparison["tasks_compared"] == 4
    assert comparison["pass_at_1_a"] == pytest.approx(0.375)
    assert comparison["pass_at_1_b"] == pytest.approx(0.625)
    assert comparison["mean_difference"] == pytest.approx(0.25)  # (1 + 1 + 0 - 1) / 4
    # Exact sign-flip test over the 3 non-zero differences (+1, +1, -1): |sum| >= 1 always.
    assert comparison["p_value"] == 1.0
    assert comparison["gained"] == ["t1", "t2"]
    assert comparison["lost"] == ["t4"]  # t3 is solved (0.5) by both: not a flip
    assert comparison["per_task"]["t4"] == {"a": 1.0, "b": 0.0, "difference": -1.0}
    assert comparison["tasks_only_in_a"] == ["only_base"]
    assert comparison["tasks_only_in_b"] == []
    assert out["meta"]["permutation_test"] == "two-sided paired sign-flip, exact"


def test_paired_comparison_with_a_uniform_gain_has_known_p_value_and_degenerate_ci():
    base = [rows("base", f"t{i}", [F, F]) for i in range(5)]
    tuned = [rows("tuned", f"t{i}", [P, F]) for i in range(5)]
    comparison = paired_comparison(table(*base, *tuned), "base", "tuned", "none")["comparison"]
    assert comparison["mean_difference"] == 0.5
    assert comparison["difference_ci"] == {"low": 0.5, "high": 0.5}
    assert comparison["p_value"] == pytest.approx(2 / 2**5)  # only all-plus and all-minus are as extreme
    assert comparison["gained"] == [f"t{i}" for i in range(5)]


def test_paired_comparison_monte_carlo_p_value_is_seeded():
    base = [rows("base", f"t{i:02d}", [F] if i % 3 else [P]) for i in range(30)]
    tuned = [rows("tuned", f"t{i:02d}", [P] if i % 2 else [F]) for i in range(30)]
    results = table(*base, *tuned)
    first = paired_comparison(results, "base", "tuned", "none", permutations=999, seed=3)
    again = paired_comparison(results, "base", "tuned", "none", permutations=999, seed=3)
    assert first["comparison"]["p_value"] == again["comparison"]["p_value"]
    assert first["comparison"]["difference_ci"] == again["comparison"]["difference_ci"]
    assert first["meta"]["permutation_test"].endswith("monte carlo (999 draws)")
    assert 0 < first["comparison"]["p_value"] <= 1


def test_paired_comparison_of_identical_models_has_p_value_one():
    results = table(rows("a", "t1", [P, F]), rows("b", "t1", [F, P]))
    assert paired_comparison(results, "a", "b", "none")["comparison"]["p_value"] == 1.0


def test_paired_comparison_names_a_missing_model():
    with pytest.raises(MetricsError, match=r"no results for model 'tuned'.*\['base'\]"):
        paired_comparison(table(rows("base", "t1", [P])), "base", "tuned", "none")


def test_paired_comparison_is_plain_json():
    results = table(rows("a", "t1", [P, F]), rows("b", "t1", [P, P]))
    out = paired_comparison(results, "a", "b", "none")
    assert json.loads(json.dumps(out, allow_nan=False)) == out
