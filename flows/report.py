"""Human-readable summaries of metrics.json: the CLI headline, report.md and the Prefect table.

Policy and no-policy results of a model are always shown side by side (same samples, two modes).
"""

from __future__ import annotations

from typing import Any

from tasks.agreement import report_lines as agreement_lines


def headline(metrics: dict) -> str:
    """One line per (model, policy mode): pass@k, compile rate, scored tasks."""
    lines = []
    for model, modes in sorted(metrics.get("groups", {}).items()):
        for mode, group in sorted(modes.items()):
            pass_at = "  ".join(
                f"pass@{k}={v:.4f}" for k, v in sorted(group["pass_at_k"].items(), key=lambda kv: int(kv[0]))
            )
            ci = group.get("pass_at_1_ci")
            ci_text = f" [{ci['low']:.3f}, {ci['high']:.3f}]" if ci else ""
            lines.append(
                f"{model} / {mode}: {pass_at}{ci_text}  compile_rate={group['compile_rate']:.4f}  "
                f"tasks={group['tasks_scored']}  n={group['n']}"
            )
    return "\n".join(lines)


def metrics_table(metrics: dict) -> list[dict[str, Any]]:
    """One row per (model, policy mode), flat numbers only (the Prefect table artifact)."""
    rows = []
    for model, modes in sorted(metrics["groups"].items()):
        for mode, group in sorted(modes.items()):
            ci = group.get("pass_at_1_ci")
            row: dict[str, Any] = {"model": model, "policy_mode": mode, "n": group["n"], "tasks": group["tasks_scored"]}
            for k, value in sorted(group["pass_at_k"].items(), key=lambda kv: int(kv[0])):
                row[f"pass@{k}"] = round(value, 4)
            row["pass@1 ci low"] = round(ci["low"], 4) if ci else None
            row["pass@1 ci high"] = round(ci["high"], 4) if ci else None
            row["compile_rate"] = round(group["compile_rate"], 4)
            row.update({status: count for status, count in group["status_counts"].items()})
            rows.append(row)
    return rows


def markdown_report(metrics: dict) -> str:
    """report.md: per model, the policy modes side by side, then statuses, errors, categories."""
    meta = metrics["meta"]
    out = [
        f"# ferrisbench report — run {meta.get('run_id', '?')}",
        "",
        f"Benchmark `{meta.get('benchmark')}` ({meta.get('protocol')}, problems {str(meta.get('problems_hash'))[:12]}), "
        f"toolchain `{meta.get('toolchain')}`, sandbox `{meta.get('sandbox')}`, edition {meta.get('edition')}.",
        f"Samples `{meta.get('samples_file')}`. Only `passed` is a pass; every other status counts as a failure in n.",
        "",
    ]
    for model, modes in sorted(metrics["groups"].items()):
        names = sorted(modes)
        out += [f"## {model}", "", "| metric | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        first = modes[names[0]]
        for k in sorted(first["pass_at_k"], key=int):
            out.append(f"| pass@{k} | " + " | ".join(f"{modes[m]['pass_at_k'][k]:.4f}" for m in names) + " |")
        out.append("| pass@1 95% CI | " + " | ".join(_ci(modes[m].get("pass_at_1_ci")) for m in names) + " |")
        out.append("| compile rate | " + " | ".join(f"{modes[m]['compile_rate']:.4f}" for m in names) + " |")
        out.append("| tasks scored / n | " + " | ".join(f"{modes[m]['tasks_scored']} / {modes[m]['n']}" for m in names) + " |")
        for status in first["status_counts"]:
            counts = [modes[m]["status_counts"][status] for m in names]
            if any(counts):
                out.append(f"| {status} | " + " | ".join(str(c) for c in counts) + " |")
        out.append("")
        for mode in names:
            group = modes[mode]
            codes = ", ".join(f"{code} ×{count}" for code, count in group["top_error_codes"].items()) or "none"
            out.append(f"Top rustc error codes ({mode}): {codes}.")
            if group.get("per_category"):
                cats = ", ".join(
                    f"{cat or '(none)'} {score['pass_at_1']:.3f} ({score['tasks']} tasks)"
                    for cat, score in sorted(group["per_category"].items())
                )
                out.append(f"pass@1 per category ({mode}): {cats}.")
        out.append("")
    out += _task_set_lines(meta.get("task_sets"))
    out += agreement_lines(metrics.get("agreement"))
    excluded = meta.get("excluded_tasks") or {}
    out.append(f"## Tasks excluded by the validity gate ({len(excluded)})")
    out.append("")
    out += [f"- `{task}`: {validity}" for task, validity in sorted(excluded.items())] or ["none"]
    out.append("")
    return "\n".join(out)


def _task_set_lines(task_sets: dict | None) -> list[str]:
    """Models whose samples cover different tasks: each scored over its own, compared over the shared ones."""
    if not task_sets:
        return []
    counts = ", ".join(f"{model} {count}" for model, count in task_sets["tasks_per_model"].items())
    out = ["## Models cover different tasks", "",
           f"Each model is scored over the tasks it has samples for ({counts} tasks), so the pass@k above are not "
           f"comparable between models. Over the {task_sets['shared_by_all']} tasks every model has:", ""]
    for model, modes in task_sets["pass_at_1_on_shared"].items():
        cells = ", ".join(f"{mode} {value:.4f}" if value is not None else f"{mode} —" for mode, value in modes.items())
        out.append(f"- {model}: pass@1 {cells}")
    out.append("")
    return out


def _ci(ci: dict | None) -> str:
    return f"[{ci['low']:.3f}, {ci['high']:.3f}]" if ci else "—"


# ---------------------------------------------------------------- the benchmark flow's report


def benchmark_report(metrics: dict, history: Any) -> str:
    """The nightly report.md: the evaluation report, then checks, comparisons, categories, plots,
    the last nights (`history`: `tasks.history.last_runs` rows) and the environment."""
    meta = metrics["meta"]
    body = markdown_report(metrics).replace(
        f"# ferrisbench report — run {meta.get('run_id', '?')}", f"# ferrisbench benchmark — run {meta['run_id']}", 1
    )
    out = [body, "## Checks", ""]
    failures = metrics["checks"]["failures"]
    out += [f"- **FAILED**: {failure}" for failure in failures] or ["All checks passed (regression check, self-check)."]
    if not meta.get("model_benchmarked"):
        out += ["", "No model was benchmarked: only the `reference` source (or imported samples) ran. To benchmark "
                "a model, list it under `models:` in a configuration file and run `ferrisbench benchmark --config FILE`."]
    out += ["", "## Base vs fine-tune (paired over the same tasks)", ""]
    pairs = metrics["comparisons"]["base_vs_finetune"]
    if pairs:
        out += ["| base | fine-tune | mode | tasks | pass@1 base | pass@1 fine-tune | difference | 95% CI | p | gained | lost |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [_paired_row(p["meta"]["model_a"], p["meta"]["model_b"], p["meta"]["policy_mode"], p) for p in pairs]
        for pair in pairs:
            c = pair["comparison"]
            out.append(f"\nFlipped ({pair['meta']['model_b']} vs {pair['meta']['model_a']}, {pair['meta']['policy_mode']}): "
                       f"gained {_ids(c['gained'])}; lost {_ids(c['lost'])}.")
    else:
        out.append("No fine-tune configured (a model's `adapters:`), so nothing to compare.")
    out += ["", "## Policy vs no policy (the same samples)", ""]
    policy = metrics["comparisons"]["policy_vs_no_policy"]
    if policy:
        out += ["| model | | mode | tasks | pass@1 no policy | pass@1 policy | difference | 95% CI | p | gained | lost |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        out += [_paired_row(model, "", "both", pair) for model, pair in sorted(policy.items())]
    else:
        out.append("Only one policy mode was evaluated.")
    out += ["", "## pass@1 per category", ""]
    out += _category_table(metrics["groups"])
    out += ["", "## Plots", ""]
    out += [f"![{name}]({path})" for name, path in metrics["plots"].items()] or ["none drawn"]
    out += ["", f"## Last {metrics['history']['nights']} runs (history: `{metrics['history']['path']}`)", "",
            "| run | recorded (UTC) | model | mode | pass@1 | compile rate | sandbox errors | timeouts |",
            "|---|---|---|---|---|---|---|---|"]
    for row in history.itertuples():
        out.append(f"| {row.run_id} | {row.recorded_at:%Y-%m-%d %H:%M} | {row.model} | {row.policy_mode} | "
                   f"{row.pass_at_1:.4f} | {row.compile_rate:.4f} | {row.sandbox_error_rate:.4f} | {row.timeout_rate:.4f} |")
    env = meta["environment"]
    out += ["", "## Environment", "",
            f"rustc `{env['rustc']}`, sandbox `{env['sandbox']}`, ferrisbench commit `{env['git_commit']}`, "
            f"GPUs: {', '.join(env['gpus']) or 'none'}. Details: `env.json`; numbers: `metrics.json`.", ""]
    out += _overlap_lines(meta.get("overlap"))
    return "\n".join(out)


def _overlap_lines(overlap: dict | None) -> list[str]:
    """What judging during generation did (it only fills the verdict cache; the evaluation decides)."""
    if not overlap or not overlap.get("enabled"):
        return ["Generation and evaluation did not overlap (`overlap_evaluation` or the verdict cache is off).", ""]
    line = (f"Overlap: {overlap['shards']} generated shards pre-judged during generation ({overlap['samples']} samples: "
            f"{overlap['executed']} programs executed, {overlap['cached']} already in the verdict cache; "
            f"{overlap['busy_seconds']:.1f} s with {overlap['workers']} sandbox workers; {overlap['drain_seconds']:.1f} s "
            "waited for it after generation).")
    if overlap["errors"]:
        line += f" {len(overlap['errors'])} shards failed there and were judged by the evaluation: {overlap['errors'][0]}"
    return [line, ""]


def _paired_row(model_a: str, model_b: str, mode: str, pair: dict) -> str:
    c = pair["comparison"]
    return (f"| {model_a} | {model_b} | {mode} | {c['tasks_compared']} | {c['pass_at_1_a']:.4f} | {c['pass_at_1_b']:.4f} | "
            f"{c['mean_difference']:+.4f} | {_ci(c['difference_ci'])} | {c['p_value']:.4f} | {len(c['gained'])} | "
            f"{len(c['lost'])} |")


def _ids(task_ids: list[str], limit: int = 20) -> str:
    shown = ", ".join(f"`{t}`" for t in task_ids[:limit])
    return (shown + (f" … (+{len(task_ids) - limit})" if len(task_ids) > limit else "")) or "none"


def _category_table(groups: dict) -> list[str]:
    columns = [(model, mode) for model, modes in sorted(groups.items()) for mode in sorted(modes)]
    categories = sorted({cat for model, mode in columns for cat in groups[model][mode].get("per_category") or {}})
    if not categories:
        return ["The benchmark has no categories."]
    lines = ["| category | " + " | ".join(f"{model} / {mode}" for model, mode in columns) + " |",
             "|---|" + "---|" * len(columns)]
    for cat in categories:
        cells = []
        for model, mode in columns:
            score = (groups[model][mode].get("per_category") or {}).get(cat)
            cells.append(f"{score['pass_at_1']:.4f} ({score['tasks']})" if score else "—")
        lines.append(f"| {cat or '(none)'} | " + " | ".join(cells) + " |")
    return lines
