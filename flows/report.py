"""Human-readable summaries of metrics.json."""

from __future__ import annotations


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
