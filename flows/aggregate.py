"""The aggregate flow: results shards → results.parquet, metrics.json, report.md, Prefect artifacts.

Its outputs are reused when they were computed from exactly these shards and settings
(`aggregate_identity` and the sha256 of results.parquet are recorded in metrics.json).
metrics.json is written last, so a run killed during the aggregate is redone on resume.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows import stopping
from flows.report import markdown_report, metrics_table
from tasks import agreement as agreement_lib
from tasks import metrics as metrics_lib
from tasks.artifacts import identity_hash
from tasks.runplan import write_json_atomic, write_text_atomic
from tasks.shards import ResultFile, file_sha256, merge_results, pause_point, read_for_metrics

log = structlog.get_logger(__name__)

AGGREGATE_FORMAT = "ferrisbench.aggregate/1"


def aggregate_identity(files: list[ResultFile], ks: list[int], include_invalid: bool,
                       bootstrap_samples: int, expected_task_ids: list[str] | dict[str, list[str]], meta: dict) -> dict:
    return {
        "format": AGGREGATE_FORMAT,
        # the files' own hashes too: a recomputed shard (same identity, new timings) is re-merged
        "results_shards": [[f.identity_hash, f.file_sha256] for f in files],
        "ks": list(ks),
        "include_invalid": include_invalid,
        "bootstrap_samples": bootstrap_samples,
        "expected_task_ids": identity_hash({"ids": expected_task_ids if isinstance(expected_task_ids, dict)
                                            else list(expected_task_ids)}),
        "meta": meta,
    }


def _current_metrics(run_dir: Path, wanted: str) -> dict | None:
    """metrics.json, report.md and results.parquet when all three are from this aggregate."""
    try:
        metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    meta = metrics.get("meta", {}) if isinstance(metrics, dict) else {}
    if meta.get("aggregate_identity") != wanted or not (run_dir / "report.md").exists():
        return None
    if meta.get("results_sha256") != file_sha256(run_dir / "results.parquet"):
        return None
    return metrics


@flow(name="ferrisbench-aggregate", flow_run_name="aggregate {run_id}", on_running=[stopping.track])
def aggregate_flow(
    run_dir: str,
    run_id: str,
    files: list[ResultFile],
    ks: list[int],
    include_invalid: bool,
    bootstrap_samples: int,
    expected_task_ids: list[str] | dict[str, list[str]],
    meta: dict,
) -> dict:
    """Merge, score and report; returns {"metrics": …, "computed": bool}.

    `expected_task_ids` is one task list for every model, or model → its own tasks (partial sets)."""
    directory = Path(run_dir)
    identity = aggregate_identity(files, ks, include_invalid, bootstrap_samples, expected_task_ids, meta)
    wanted = identity_hash(identity)
    merged = directory / "results.parquet"
    metrics = _current_metrics(directory, wanted)
    computed = metrics is None
    if computed:
        results_sha256 = merge_results(files, merged)
        pause_point("aggregate")
        metrics = metrics_lib.summarize(
            read_for_metrics(merged),
            ks=ks,
            include_invalid=include_invalid,
            bootstrap_samples=bootstrap_samples,
            expected_task_ids=(expected_task_ids if isinstance(expected_task_ids, dict) else set(expected_task_ids)),
        )
        reference = agreement_lib.agreement(merged)
        if reference is not None:
            metrics["agreement"] = reference
        metrics["meta"].update(meta)
        metrics["meta"]["aggregate_identity"] = wanted
        metrics["meta"]["results_sha256"] = results_sha256
        write_text_atomic(directory / "report.md", markdown_report(metrics))
        write_json_atomic(directory / "metrics.json", metrics)  # last: marks the aggregate done
    report = (directory / "report.md").read_text(encoding="utf-8")
    create_table_artifact(
        table=metrics_table(metrics), key=f"metrics-{run_id}", description=f"ferrisbench metrics, run {run_id}"
    )
    create_markdown_artifact(markdown=report, key=f"report-{run_id}", description=f"ferrisbench report, run {run_id}")
    get_run_logger().info("aggregate %s: %s", "computed" if computed else "reused", directory / "metrics.json")
    return {"metrics": metrics, "computed": computed}
