"""The report's figures as PNG files: pass@k per model, pass@1 per category, the trend over nights.

Built on matplotlib's object API with the Agg canvas (no pyplot, no display, no global state),
so plotting works on a headless machine and from worker threads. Inputs are what the pipeline
already has: a `tasks.metrics.summarize` result (as in metrics.json) and history rows
(`tasks.history`). Each function writes its PNG atomically and returns the path; input with
nothing to draw raises `PlotError` instead of producing an empty picture.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import structlog
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tasks.artifact_base import _fsync_dir, _temp_path, _write_synced

log = structlog.get_logger(__name__)

SIZE_INCHES = (8.0, 4.5)
DPI = 120
TREND_COLUMNS = ("run_id", "recorded_at", "model", "policy_mode")


class PlotError(ValueError):
    """Nothing to draw, or input that is not what the plot reads."""


def plot_pass_at_k(summary: Mapping, path: Path) -> Path:
    """Grouped bars: pass@k for each k, one bar per model × policy mode; pass@1 with its CI."""
    series = _groups(summary)
    ks = sorted({int(k) for _, group in series for k in group["pass_at_k"]})
    figure, axes = _figure()
    width = 0.8 / len(series)
    for index, (label, group) in enumerate(series):
        offsets = [position + (index - (len(series) - 1) / 2) * width for position in range(len(ks))]
        values = [group["pass_at_k"].get(str(k), float("nan")) for k in ks]
        bars = axes.bar(offsets, values, width, label=label)
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)
        ci = group.get("pass_at_1_ci")
        if ci and 1 in ks:
            value = group["pass_at_k"]["1"]
            axes.errorbar(offsets[ks.index(1)], value, yerr=[[value - ci["low"]], [ci["high"] - value]],
                          fmt="none", ecolor="black", capsize=3, linewidth=1)
    axes.set_xticks(range(len(ks)), [f"pass@{k}" for k in ks])
    _finish(axes, "pass@k per model and policy mode (bars: 95% CI of pass@1)", "score")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def plot_per_category(summary: Mapping, path: Path, *, policy_mode: str = "no_policy") -> Path:
    """Grouped bars: pass@1 per task category, one bar per model, for one policy mode."""
    series = [(model, group) for (model, mode), group in _keyed_groups(summary) if mode == policy_mode]
    if not series:
        raise PlotError(f"no results in policy mode {policy_mode!r} to plot per category")
    if any(group.get("per_category") is None for _, group in series):
        raise PlotError("the results carry no task categories (per_category is null): nothing to plot per category")
    categories = sorted({c for _, group in series for c in group["per_category"]})
    tasks = {c: max(g["per_category"].get(c, {}).get("tasks", 0) for _, g in series) for c in categories}
    figure, axes = _figure()
    width = 0.8 / len(series)
    for index, (model, group) in enumerate(series):
        offsets = [position + (index - (len(series) - 1) / 2) * width for position in range(len(categories))]
        values = [group["per_category"].get(c, {}).get("pass_at_1", float("nan")) for c in categories]
        axes.bar_label(axes.bar(offsets, values, width, label=model), fmt="%.2f", fontsize=7, padding=2)
    labels = [f"{c or '(none)'}\n{tasks[c]} task{'s' * (tasks[c] != 1)}" for c in categories]
    axes.set_xticks(range(len(categories)), labels)
    _finish(axes, f"pass@1 per category ({policy_mode})", "pass@1")
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(figure, path)


def plot_trend(history: pd.DataFrame, path: Path, *, metric: str = "pass_at_1") -> Path:
    """One line per model × policy mode over the runs in `history` (e.g. `last_runs` rows)."""
    if not isinstance(history, pd.DataFrame):
        raise PlotError(f"history must be a pandas DataFrame, got {type(history).__name__}")
    missing = [c for c in (*TREND_COLUMNS, metric) if c not in history.columns]
    if missing:
        raise PlotError(f"history rows lack columns {missing}")
    rows = history.dropna(subset=[metric])
    if rows.empty:
        raise PlotError(f"no history rows with a value for {metric}: nothing to plot")
    figure, axes = _figure()
    with_ci = metric == "pass_at_1" and {"pass_at_1_ci_low", "pass_at_1_ci_high"} <= set(rows.columns)
    for (model, mode), line in rows.sort_values(["recorded_at", "run_id"]).groupby(["model", "policy_mode"]):
        times = pd.to_datetime(line["recorded_at"])
        drawn = axes.plot(times, line[metric], marker="o", label=f"{model} / {mode}")
        if with_ci and line["pass_at_1_ci_low"].notna().any():
            axes.fill_between(times, line["pass_at_1_ci_low"], line["pass_at_1_ci_high"],
                              color=drawn[0].get_color(), alpha=0.08, linewidth=0)
    runs, label = rows["run_id"].nunique(), metric.replace("_at_", "@")
    _finish(axes, f"{label} over the last {runs} run{'s' * (runs != 1)}"
            + (" (bands: 95% CI)" if with_ci else ""), label)
    axes.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.autofmt_xdate()
    return _save(figure, path)


def _keyed_groups(summary: Mapping) -> list[tuple[tuple[str, str], Mapping]]:
    if not isinstance(summary, Mapping) or not isinstance(summary.get("groups"), Mapping):
        raise PlotError("expected a metrics summary with a 'groups' mapping (model -> policy mode -> metrics)")
    keyed = [((model, mode), group) for model, modes in sorted(summary["groups"].items())
             for mode, group in sorted(modes.items())]
    if not keyed:
        raise PlotError("the metrics summary has no (model, policy mode) group: nothing to plot")
    return keyed


def _groups(summary: Mapping) -> list[tuple[str, Mapping]]:
    series = [(f"{model} / {mode}", group) for (model, mode), group in _keyed_groups(summary)]
    if not any(group.get("pass_at_k") for _, group in series):
        raise PlotError("the metrics summary has no pass@k values: nothing to plot")
    return series


def _figure():
    figure = Figure(figsize=SIZE_INCHES, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _finish(axes, title: str, ylabel: str) -> None:
    axes.set_title(title, fontsize=11)
    axes.set_ylabel(ylabel)
    axes.set_ylim(0, 1.08)
    axes.grid(axis="y", alpha=0.3)
    axes.set_axisbelow(True)


def _save(figure: Figure, path: Path) -> Path:
    """Render in memory, then write through a temp file and rename: never a half-written PNG."""
    path = Path(path)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = _temp_path(path)
    try:
        _write_synced(temp, lambda handle: handle.write(buffer.getvalue()))
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    log.info("plot_written", path=str(path), bytes=buffer.tell())
    return path
