"""Specification of the report's figures: real PNGs from real summaries and history rows, refusals for empty input."""

from __future__ import annotations

import os
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from tasks.history import history_rows
from tasks.metrics import summarize
from tasks.plots import DPI, SIZE_INCHES, PlotError, plot_pass_at_k, plot_per_category, plot_trend

WIDTH, HEIGHT = int(SIZE_INCHES[0] * DPI), int(SIZE_INCHES[1] * DPI)
CATEGORIES = {"t1": "codegen", "t2": "codegen", "t3": "fix", "t4": "transform"}


def results(model: str, passes_per_task: dict[str, int], n: int = 10) -> pd.DataFrame:
    rows = []
    for mode in ("no_policy", "policy"):
        for task, passes in passes_per_task.items():
            for i in range(n):
                passed = i < passes - (mode == "policy")
                rows.append({"task_id": task, "sample_index": i, "model": model, "policy_mode": mode,
                             "status": "passed" if passed else "compile_error", "category": CATEGORIES[task],
                             "error_codes": [] if passed else ["E0308"]})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def summary() -> dict:
    table = pd.concat([results("base", {"t1": 3, "t2": 6, "t3": 1, "t4": 9}),
                       results("base+rust-lora", {"t1": 7, "t2": 8, "t3": 4, "t4": 9})])
    return summarize(table, ks=[1, 5, 10], bootstrap_samples=200)


@pytest.fixture(scope="module")
def history(summary) -> pd.DataFrame:
    nights = []
    for night in range(6):
        drop = 0.03 * (5 - night)  # the models improve night by night

        def lowered(values: dict) -> dict:
            return {key: max(0.0, value - drop) for key, value in values.items()}

        shifted = {"groups": {model: {mode: {**group, "pass_at_k": lowered(group["pass_at_k"]),
                                             "pass_at_1_ci": lowered(group["pass_at_1_ci"])}
                                      for mode, group in modes.items()}
                              for model, modes in summary["groups"].items()}}
        nights.append(history_rows(shifted, run_id=f"night-{night}", benchmark="humaneval-rust",
                                   problems_hash="h" * 64, protocol="libtest/2021/n10",
                                   recorded_at=datetime(2026, 11, 1, 2, tzinfo=timezone.utc) + timedelta(days=night)))
    return pd.concat(nights, ignore_index=True)


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG signature and IHDR chunk; PIL then decodes every pixel."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    with Image.open(path) as image:
        image.load()
        assert image.size == struct.unpack(">II", data[16:24])
    return struct.unpack(">II", data[16:24])


def assert_plausible_png(path: Path, returned: Path) -> None:
    assert returned == path
    assert png_size(path) == (WIDTH, HEIGHT)
    assert 15_000 < path.stat().st_size < 400_000  # bars, labels and legend, not a blank canvas
    assert sorted(os.listdir(path.parent)) == [path.name]  # no temp file left behind


def test_pass_at_k_plot_is_a_png_of_the_report_size(summary, tmp_path):
    path = tmp_path / "pass_at_k.png"
    assert_plausible_png(path, plot_pass_at_k(summary, path))


def test_per_category_plot_is_a_png_of_the_report_size(summary, tmp_path):
    path = tmp_path / "per_category.png"
    assert_plausible_png(path, plot_per_category(summary, path, policy_mode="policy"))


def test_trend_plot_is_a_png_of_the_report_size(history, tmp_path):
    path = tmp_path / "trend.png"
    assert_plausible_png(path, plot_trend(history, path))


def test_a_plot_replaces_an_older_file_of_the_same_name(summary, tmp_path):
    path = tmp_path / "pass_at_k.png"
    path.write_bytes(b"stale")
    plot_pass_at_k(summary, path)
    assert png_size(path) == (WIDTH, HEIGHT)


def test_a_trend_of_one_run_is_still_drawn(history, tmp_path):
    path = tmp_path / "trend.png"
    assert png_size(plot_trend(history[history["run_id"] == "night-5"], path)) == (WIDTH, HEIGHT)


@pytest.mark.parametrize("summary_input, message", [
    ({"groups": {}}, "the metrics summary has no (model, policy mode) group: nothing to plot"),
    ({}, "expected a metrics summary with a 'groups' mapping (model -> policy mode -> metrics)"),
    ([], "expected a metrics summary with a 'groups' mapping (model -> policy mode -> metrics)"),
    ({"groups": {"m": {"no_policy": {"pass_at_k": {}}}}}, "the metrics summary has no pass@k values: nothing to plot"),
])
def test_pass_at_k_plot_refuses_a_summary_with_nothing_to_draw(summary_input, message, tmp_path):
    with pytest.raises(PlotError) as raised:
        plot_pass_at_k(summary_input, tmp_path / "p.png")
    assert str(raised.value) == message
    assert os.listdir(tmp_path) == []


def test_per_category_plot_refuses_an_unknown_mode_and_results_without_categories(summary, tmp_path):
    with pytest.raises(PlotError, match="^no results in policy mode 'strict' to plot per category$"):
        plot_per_category(summary, tmp_path / "c.png", policy_mode="strict")
    uncategorized = summarize(results("base", {"t1": 3}).drop(columns=["category"]), ks=[1], bootstrap_samples=0)
    with pytest.raises(PlotError, match=r"^the results carry no task categories \(per_category is null\)"):
        plot_per_category(uncategorized, tmp_path / "c.png")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("rows, message", [
    (lambda h: h.iloc[0:0], "no history rows with a value for pass_at_1: nothing to plot"),
    (lambda h: h.drop(columns=["recorded_at"]), "history rows lack columns ['recorded_at']"),
    (lambda h: h.assign(pass_at_10=None), "no history rows with a value for pass_at_10: nothing to plot"),
    (lambda h: h.to_dict(), "history must be a pandas DataFrame, got dict"),
])
def test_trend_plot_refuses_history_with_nothing_to_draw(history, rows, message, tmp_path):
    metric = "pass_at_10" if "pass_at_10" in message else "pass_at_1"
    with pytest.raises(PlotError) as raised:
        plot_trend(rows(history), tmp_path / "t.png", metric=metric)
    assert str(raised.value) == message
    assert os.listdir(tmp_path) == []
