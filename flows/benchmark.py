"""The `benchmark` flow, the nightly main job: provision → problems + validity gate → generate each
model → evaluate every model in both policy modes from the same samples → aggregate → compare →
record history → report; a regression (or a failed self-check) fails the run after every artifact
is written. While the models generate, each finished shard is judged in the background to fill the
verdict cache (`overlap_evaluation`; flows.benchmark_models, tasks.prejudge), so the evaluate stage
mostly reads verdicts.

The run directory (`--out`) holds everything; rerunning on it resumes, because every stage below
reuses its finished artifacts (generation and evaluation shards, the gate cache, the aggregate):

    env.json                      the machine, toolchain, sandbox proof and configuration (first)
    run.json                      the benchmark's identity (a different configuration is refused)
    validity.parquet              the validity gate's verdict per task
    generation/<model>/           `ferrisbench generate` directories, one per configured model
    samples.parquet               every model's samples, what the evaluation reads
    evaluation/                   `ferrisbench evaluate` directory (results, shards, its own report)
    metrics.json report.md plots/ the benchmark's headline, comparisons, trend and checks
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import structlog
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from flows import runtime, stopping
from flows.evaluate import run_evaluation
from flows.gate import validity_table
from flows.benchmark_models import generate_models
from flows.report import benchmark_report
from tasks import history as history_lib
from tasks import plots
from tasks.comparison import paired_comparison
from tasks.config import BenchmarkConfig, ModelEntry, RunConfig
from tasks.generation.base import GenerationError
from tasks.problems import ProblemSet, load_benchmark
from tasks.provision import ENV_NAME, not_writable, provision
from tasks.rundir import ensure_run_identity
from tasks.runplan import write_json_atomic, write_text_atomic
from tasks.shards import read_for_metrics

log = structlog.get_logger(__name__)

BENCHMARK_FORMAT = "ferrisbench.benchmark/1"
SAMPLES_NAME = "samples.parquet"


class BenchmarkFailed(RuntimeError):
    """The run finished and wrote every artifact, but a check failed: a regression against the
    previous comparable night, or the reference source not passing every valid task."""


# ---------------------------------------------------------------- the flow


@flow(name="ferrisbench-benchmark", validate_parameters=False, on_running=[stopping.track])
def benchmark(config_path: str | None = None, out: str | None = None, config: BenchmarkConfig | None = None) -> dict:
    """The nightly job. `config_path` (YAML/JSON) or `config`; `out` overrides the run directory."""
    config = resolve_config(config_path, out, config)
    run_dir = Path(config.out).absolute()
    with hold_run_dir(run_dir):  # first: a second run on this directory is refused before it writes anything
        env = provision_stage(config, run_dir)
        run_id = claim_run_dir(config, run_dir)
        problem_set = problems_stage(config, run_dir)
        excluded = gate_stage(config, problem_set, run_dir)
        models, overlap = generate_models(config, problem_set, run_dir)
        samples = combine_samples(models, run_dir)
        evaluated = evaluate_stage(config, samples, run_dir)
        comparisons = compare_stage(config, models, evaluated, run_dir)
        recent, regressions = history_stage(config, evaluated["metrics"], models, run_id, env, run_dir)
        failures = regressions + self_check_failures(models, evaluated["metrics"])
        metrics = report_stage(config, run_id, env, models, evaluated, comparisons, recent, failures, excluded,
                               overlap, run_dir)
    if failures:
        raise BenchmarkFailed(f"run {run_id}: " + "; ".join(failures) + f" (artifacts kept in {run_dir})")
    return metrics


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """`runtime.hold_run_dir` (RunDirLocked when another live run holds it), where a directory that
    cannot even hold the lock file is provisioning's "not writable" error."""
    with ExitStack() as stack:
        try:
            stack.enter_context(runtime.hold_run_dir(run_dir))
        except OSError as error:
            raise not_writable(run_dir, error) from error
        yield


def resolve_config(config_path: str | None, out: str | None, config: BenchmarkConfig | None) -> BenchmarkConfig:
    """The one configuration: a file, a given object or the embedded defaults; `{date}` in out expanded."""
    if config is not None and config_path is not None:
        raise ValueError("give either config or config_path, not both")
    if config is None:
        config = BenchmarkConfig.load(Path(config_path)) if config_path else BenchmarkConfig()
    elif isinstance(config, dict):
        config = BenchmarkConfig.model_validate(config)
    directory = str(out if out is not None else config.out)
    directory = directory.replace("{date}", datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    return config.model_copy(update={"out": Path(directory)})


# ---------------------------------------------------------------- stages


@task(name="provision", cache_policy=NO_CACHE)
def provision_stage(config: BenchmarkConfig, run_dir: Path) -> dict:
    """env.json first; stops the run (ProvisionError, saying what to change) on a failed check.

    The smoke samples run as a sandbox worker id claimed host-wide, like the pools' (a shared uid
    would let one run's cleanup kill another's compile)."""
    import os

    from tasks.batch_pool import claim_worker_ids

    [(worker, fd)] = claim_worker_ids(1)
    try:
        return provision(config, run_dir, sandbox_kind=config.executor.sandbox.value, need_gpu=config.require_gpu,
                         dataset_hash=None, work_root=config.executor.work_root, worker=worker)
    finally:
        os.close(fd)


def claim_run_dir(config: BenchmarkConfig, run_dir: Path) -> str:
    """run.json: this directory belongs to this configuration; the run id survives every resume."""
    where_and_checks = {"out", "show_progress", "parallel_shards", "history_path", "history_nights", "regression",
                        "require_gpu", "gpu_concurrency_limit", "overlap_evaluation",
                        "overlap_workers"}  # cannot change a result: may differ on resume
    identity = {"format": BENCHMARK_FORMAT, **config.model_dump(mode="json", exclude=where_and_checks),
                "executor": config.executor.identity()}
    manifest = ensure_run_identity(run_dir, identity)
    stamp = manifest.created_at.replace("-", "").replace(":", "").replace("+0000", "").lower()
    return f"{stamp}-{manifest.identity_hash[:8]}"


@task(name="problems", cache_policy=NO_CACHE)
def problems_stage(config: BenchmarkConfig, run_dir: Path) -> ProblemSet:
    """The benchmark, its content hash recorded in env.json as the dataset hash."""
    problem_set = load_benchmark(config.benchmark, edition=config.executor.edition)
    env_path = run_dir / ENV_NAME
    env = json.loads(env_path.read_text(encoding="utf-8"))
    env.update(dataset_hash=problem_set.content_hash, dataset={"name": problem_set.name, "source": problem_set.source,
                                                               "tasks": len(problem_set.problems)})
    write_json_atomic(env_path, env)
    return problem_set


@task(name="validity-gate", cache_policy=NO_CACHE)
def gate_stage(config: BenchmarkConfig, problem_set: ProblemSet, run_dir: Path) -> dict[str, str]:
    """Every reference through the sandboxed executor (cached; the evaluation reuses it)."""
    toolchain, pool = runtime.executor_for(config.executor)
    table = validity_table(problem_set, config.executor, pool, toolchain, show_progress=config.show_progress)
    write_parquet_if_changed(table, run_dir / "validity.parquet")
    invalid = table[~table["validity"].isin(["valid", "unverified"])]
    return {row.task_id: f"{row.validity}: {row.validity_reason}" for row in invalid.itertuples()}


def combine_samples(models: list[dict], run_dir: Path) -> Path:
    """Every model's samples in one file; rewritten only when they changed (its hash is the evaluation's input)."""
    labels = [label for model in models for label in model["labels"]]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise GenerationError(f"two configured models are both named {duplicates}: name them with NAME=SPEC")
    frame = pd.concat([pd.read_parquet(model["samples"]) for model in models], ignore_index=True)
    return write_parquet_if_changed(frame, run_dir / SAMPLES_NAME)


def evaluate_stage(config: BenchmarkConfig, samples: Path, run_dir: Path) -> dict:
    """Both policy modes from the same samples, through the evaluate flow (sharded, resumable)."""
    limited = config.generation.get("limit") is not None
    run_config = RunConfig(
        samples=samples, benchmark=config.benchmark, out=run_dir / "evaluation", executor=config.executor,
        policy=config.policy, ks=config.ks, include_invalid=config.include_invalid, only_sampled_tasks=limited,
        shard_size=config.shard_size, parallel_shards=config.parallel_shards, show_progress=config.show_progress,
    )
    return run_evaluation(run_config)


@task(name="compare", cache_policy=NO_CACHE)
def compare_stage(config: BenchmarkConfig, models: list[dict], evaluated: dict, run_dir: Path) -> dict:
    """Base vs each fine-tune (paired over the same tasks), and policy vs no-policy per model."""
    results = read_for_metrics(run_dir / "evaluation" / "results.parquet")
    modes = config.policy.modes()
    pairs = []
    for model in models:
        base, *tuned = model["labels"]
        for label in tuned:
            for mode in modes:
                pairs.append(paired_comparison(results, base, label, mode, include_invalid=config.include_invalid))
    policy = {}
    if len(modes) == 2:
        for label in sorted(evaluated["metrics"]["groups"]):
            mine = results[results["model"] == label].copy()
            mine["model"], mine["policy_mode"] = mine["policy_mode"], "both"
            policy[label] = paired_comparison(mine, "no_policy", "policy", "both", include_invalid=config.include_invalid)
    return {"base_vs_finetune": pairs, "policy_vs_no_policy": policy}


@task(name="history", cache_policy=NO_CACHE)
def history_stage(config: BenchmarkConfig, metrics: dict, models: list[dict], run_id: str, env: dict,
                  run_dir: Path) -> tuple[pd.DataFrame, list[str]]:
    """Tonight's headline rows appended (a resume appends nothing new); the regression check."""
    path = history_path(config, run_dir)
    meta = metrics["meta"]
    adapters = {label: adapter for m in models for label, adapter in zip(m["labels"][1:], m["adapters"])}
    rows = history_lib.history_rows(
        metrics, run_id=run_id, benchmark=meta["benchmark"], problems_hash=meta["problems_hash"],
        protocol=protocol_label(config, meta), adapters=adapters,
        git_commit=(env.get("ferrisbench") or {}).get("commit"), recorded_at=run_started_at(run_dir),
    )
    earlier = history_lib.read_history(path)
    regressions = history_lib.check_regression(earlier, rows, **config.regression.model_dump())
    history = history_lib.append_history(path, rows)
    shown = pd.concat([history_lib.last_runs(history, meta["benchmark"], label, config.history_nights)
                       for label in sorted(metrics["groups"])], ignore_index=True)
    return shown, [r.message for r in regressions]


def self_check_failures(models: list[dict], metrics: dict) -> list[str]:
    """The `reference` source must pass every valid task: anything else is a harness fault."""
    failures = []
    for model in models:
        if model["reference"]:
            for mode, group in sorted(metrics["groups"][model["labels"][0]].items()):
                if group["pass_at_k"]["1"] != 1.0:
                    failures.append(f"self-check: reference pass@1 ({mode}) is {group['pass_at_k']['1']:.4f}, "
                                    "must be 1.0 over the valid tasks (the harness, not a model, is wrong)")
    return failures


@task(name="report", cache_policy=NO_CACHE)
def report_stage(config: BenchmarkConfig, run_id: str, env: dict, models: list[dict], evaluated: dict,
                 comparisons: dict, shown: pd.DataFrame, failures: list[str], excluded: dict, overlap: dict,
                 run_dir: Path) -> dict:
    """plots/*.png, report.md, metrics.json (last) and the Prefect markdown artifact."""
    from prefect.runtime import flow_run

    evaluation = evaluated["metrics"]
    figures = draw_plots(evaluation, shown, run_dir / "plots")
    metrics = {
        "groups": evaluation["groups"],
        "comparisons": comparisons,
        "checks": {"passed": not failures, "failures": failures},
        "history": {"path": str(history_path(config, run_dir)), "nights": config.history_nights,
                    "runs_shown": list(dict.fromkeys(shown["run_id"]))},
        "plots": figures,
        "meta": {**evaluation["meta"], "evaluation_run_id": evaluation["meta"].get("run_id"), "run_id": run_id,
                 "flow_run_id": str(flow_run.id) if flow_run.id else None,
                 "models": {m["labels"][0]: {"spec": m["spec"], "adapters": dict(zip(m["labels"][1:], m["adapters"]))}
                            for m in models},
                 "model_benchmarked": any(m["benchmarked"] for m in models),
                 "validity_gate_excluded": excluded,
                 "overlap": overlap,
                 "environment": {"rustc": (env.get("toolchain") or {}).get("rustc"),
                                 "sandbox": (env.get("sandbox") or {}).get("identity"),
                                 "git_commit": (env.get("ferrisbench") or {}).get("commit"),
                                 "gpus": [d["name"] for d in (env.get("gpu") or {}).get("devices", [])]}},
    }
    report = benchmark_report(metrics, shown)
    write_text_atomic(run_dir / "report.md", report)
    write_json_atomic(run_dir / "metrics.json", metrics)
    create_markdown_artifact(markdown=report, key=f"benchmark-{run_id}", description=f"ferrisbench benchmark {run_id}")
    get_run_logger().info("benchmark %s: %s", run_id, run_dir / "report.md")
    return metrics


# ---------------------------------------------------------------- helpers


def draw_plots(metrics: dict, shown: pd.DataFrame, directory: Path) -> dict[str, str]:
    """Relative paths of the PNGs drawn; a plot with nothing to draw is left out (and says why in the log)."""
    figures = {"pass_at_k": lambda p: plots.plot_pass_at_k(metrics, p),
               "per_category": lambda p: plots.plot_per_category(metrics, p, policy_mode=_first_mode(metrics)),
               "trend": lambda p: plots.plot_trend(shown, p)}
    drawn = {}
    for name, draw in figures.items():
        try:
            draw(directory / f"{name}.png")
            drawn[name] = f"plots/{name}.png"
        except plots.PlotError as error:
            log.warning("plot_not_drawn", plot=name, reason=str(error))
    return drawn


def _first_mode(metrics: dict) -> str:
    modes = {mode for group in metrics["groups"].values() for mode in group}
    return "no_policy" if "no_policy" in modes else sorted(modes)[0]


def protocol_label(config: BenchmarkConfig, meta: dict) -> str:
    """What makes two nights comparable besides benchmark and model: protocol, edition, prompting, sampling."""
    sampling = config.generation_for(ModelEntry(model="reference"), Path("."))
    return (f"{meta['protocol']}; edition {config.executor.edition}; prompt {sampling.prompt_style}; "
            f"n {sampling.samples}; T {sampling.temperature}; top_p {sampling.top_p}; max_tokens {sampling.max_tokens}; "
            f"limit {sampling.limit}")


def history_path(config: BenchmarkConfig, run_dir: Path) -> Path:
    return Path(config.history_path).absolute() if config.history_path else run_dir.parent / history_lib.HISTORY_NAME


def run_started_at(run_dir: Path) -> datetime:
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    return datetime.fromisoformat(record["created_at"])


def write_parquet_if_changed(frame: pd.DataFrame, path: Path) -> Path:
    """Atomic, and untouched when it already holds exactly these rows (a resume keeps its hash)."""
    if path.exists():
        try:
            if pd.read_parquet(path).equals(frame.reset_index(drop=True)):
                return path
        except Exception:  # torn or foreign: rewritten below
            log.warning("parquet_rewritten", path=str(path))
    temp = path.with_name(f".{path.name}.tmp")
    frame.reset_index(drop=True).to_parquet(temp)
    temp.replace(path)
    return path


def run_benchmark(config: BenchmarkConfig) -> dict:
    """What the CLI calls: the flow, named after its models and directory."""
    labels = ", ".join(entry.model for entry in config.models)
    return benchmark.with_options(flow_run_name=f"benchmark {labels} · {config.out}")(config=config)
