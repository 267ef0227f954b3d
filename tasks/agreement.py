"""Our verdicts against the other harness's own, sample by sample.

When the imported samples carry the verdict the other harness gave (MultiPL-E's
`.results.json.gz` statuses, or any field named with `--reference-verdict`), results have
`reference_verdict` (their status as they wrote it) and `reference_passed`. This module counts
agreement per model and policy mode and lists every disagreement with both statuses and our
diagnostic: what the published numbers would be under this judge.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow.parquet as pq

COLUMNS = ["task_id", "sample_index", "model", "policy_mode", "status", "diagnostic",
           "reference_verdict", "reference_passed"]
DIAGNOSTIC_CHARS = 300


def agreement(results_path: Path) -> dict[str, Any] | None:
    """{model: {mode: counts + disagreements}}, or None when the results carry no reference verdicts."""
    present = set(pq.read_schema(results_path).names)
    if "reference_passed" not in present:
        return None
    frame = pq.read_table(results_path, columns=[c for c in COLUMNS if c in present]).to_pandas()
    frame = frame[frame["reference_passed"].notna()]
    if frame.empty:
        return None
    return {"groups": compare(frame), "rule": "ours passed = status 'passed'; theirs passed = their own pass status"}


def compare(frame: pd.DataFrame) -> dict[str, dict[str, dict]]:
    out: dict[str, dict[str, dict]] = {}
    for (model, mode), group in frame.groupby(["model", "policy_mode"], sort=True):
        ours = group["status"].eq("passed")
        theirs = group["reference_passed"].astype(bool)
        differ = group[ours != theirs].sort_values(["task_id", "sample_index"])
        out.setdefault(str(model), {})[str(mode)] = {
            "samples": int(len(group)),
            "agree": int((ours == theirs).sum()),
            "both_pass": int((ours & theirs).sum()),
            "both_fail": int((~ours & ~theirs).sum()),
            "only_ours_pass": int((ours & ~theirs).sum()),
            "only_theirs_pass": int((~ours & theirs).sum()),
            "pass_rate_ours": float(ours.mean()),
            "pass_rate_theirs": float(theirs.mean()),
            "disagreements": [
                {
                    "task_id": str(row.task_id),
                    "sample_index": int(row.sample_index),
                    "theirs": str(row.reference_verdict),
                    "ours": str(row.status),
                    "diagnostic": _one_line(getattr(row, "diagnostic", None)),
                }
                for row in differ.itertuples()
            ],
        }
    return out


def _one_line(text: Any) -> str:
    if not isinstance(text, str):
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= DIAGNOSTIC_CHARS else flat[: DIAGNOSTIC_CHARS - 1] + "…"


def report_lines(agreement_record: dict | None) -> list[str]:
    """The report's agreement section: a count table, then every disagreement."""
    if not agreement_record:
        return []
    out = ["## Agreement with the other harness's verdicts", "",
           "| model | mode | samples | agree | both pass | both fail | only ours pass | only theirs pass | "
           "pass rate ours | pass rate theirs |", "|---|---|---|---|---|---|---|---|---|---|"]
    groups = agreement_record["groups"]
    for model, modes in sorted(groups.items()):
        for mode, g in sorted(modes.items()):
            out.append(f"| {model} | {mode} | {g['samples']} | {g['agree']} | {g['both_pass']} | {g['both_fail']} | "
                       f"{g['only_ours_pass']} | {g['only_theirs_pass']} | {g['pass_rate_ours']:.4f} | "
                       f"{g['pass_rate_theirs']:.4f} |")
    for model, modes in sorted(groups.items()):
        for mode, g in sorted(modes.items()):
            out += ["", f"Disagreements, {model} / {mode} ({len(g['disagreements'])}):", ""]
            if not g["disagreements"]:
                out.append("none")
                continue
            out += ["| task | sample | theirs | ours | our diagnostic |", "|---|---|---|---|---|"]
            out += [f"| `{d['task_id']}` | {d['sample_index']} | {d['theirs']} | {d['ours']} | "
                    f"{d['diagnostic'].replace('|', '/') or '—'} |" for d in g["disagreements"]]
    out.append("")
    return out
