"""`ferrisbench` command line: thin parsing over the flows; every option maps to the config."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import structlog

from tasks.config import ExecutorConfig, PolicyChoice, RunConfig, SandboxKind
from tasks.generation.cli_options import BENCHMARK_HELP, add_import_options, field_mapping

log = structlog.get_logger(__name__)


def _ks(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--k wants comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("--k values must be >= 1")
    return values


def _executor_options(parser: argparse.ArgumentParser) -> None:
    defaults = ExecutorConfig()
    parser.add_argument(
        "--sandbox",
        choices=[k.value for k in SandboxKind],
        default=defaults.sandbox.value,
        help="sandbox for compiling and running samples; 'none' disables confinement (warned, recorded)",
    )
    parser.add_argument("--edition", default=defaults.edition, help="Rust edition (pinned, recorded)")
    parser.add_argument("--workers", type=int, default=defaults.workers, help="parallel workers (default: cores)")
    parser.add_argument("--compile-timeout", type=float, default=defaults.compile_timeout_s, help="seconds per compile")
    parser.add_argument("--run-timeout", type=float, default=defaults.run_timeout_s, help="seconds per test run")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size,
                        help=f"programs compiled per rustc (default {defaults.batch_size}); 1 = the per-sample "
                             "path, the reference the batched path's verdicts equal")
    parser.add_argument("--no-verdict-cache", action="store_true",
                        help="judge every program again instead of reusing verdicts of identical programs")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _runner_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parallel-shards", type=int, default=RunConfig.model_fields["parallel_shards"].default,
                        help="local runner: shards in flight at once, sharing the workers (default: 2)")
    parser.add_argument("--ray-address", default=None,
                        help="run shard tasks on this Ray cluster (needs the 'ray' extra and PREFECT_API_URL)")


def _executor_config(args: argparse.Namespace) -> ExecutorConfig:
    return ExecutorConfig(
        sandbox=args.sandbox,
        edition=args.edition,
        workers=args.workers,
        compile_timeout_s=args.compile_timeout,
        run_timeout_s=args.run_timeout,
        batch_size=args.batch_size,
        verdict_cache=not args.no_verdict_cache,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ferrisbench",
        description="Benchmark LLMs at writing Rust: sandboxed compile + test, pass@k.",
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    parser.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"],
        help="structured log lines on stderr (default: warning)",
    )
    commands = parser.add_subparsers(dest="command")

    evaluate = commands.add_parser(
        "evaluate",
        help="judge a samples file (JSONL or parquet) against a benchmark",
        description="Compile and test every sample in the sandbox; write results.parquet and metrics.json.",
    )
    evaluate.add_argument("samples", type=Path,
                          help="samples from any harness: human-eval JSONL (task_id, completion, …), parquet, a "
                               "`ferrisbench generate` directory, bigcode generations.json, a MultiPL-E directory or "
                               ".json.gz / .results.json.gz, evalplus JSONL, lm-eval --log_samples JSONL")
    evaluate.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    evaluate.add_argument("--policy", choices=[p.value for p in PolicyChoice], default="both",
                          help="judge with the policy filter (on), without (off), or both from the same samples (default)")
    evaluate.add_argument("--out", type=Path, required=True,
                          help="run directory: rerunning the same command on it resumes; other inputs are refused")
    evaluate.add_argument("--k", type=_ks, default=None, help="pass@k values, each <= n (default: those of 1,10,100 that are <= n)")
    evaluate.add_argument("--include-invalid", action="store_true", help="also score tasks the validity gate rejected")
    evaluate.add_argument("--only-sampled-tasks", action="store_true",
                          help="score only tasks that have samples (each model over its own tasks)")
    add_import_options(evaluate)
    evaluate.add_argument("--reference-verdict", metavar="FIELD", default=None,
                          help="field holding the other harness's own verdict per sample (boolean or status); the "
                               "report compares it with ours (MultiPL-E .results.json.gz statuses are read without it)")
    evaluate.add_argument("--shard-size", type=int, default=RunConfig.model_fields["shard_size"].default,
                          help="samples per shard: one Prefect task and one parquet file per policy mode (default: 500)")
    _executor_options(evaluate)
    _runner_options(evaluate)

    resume = commands.add_parser(
        "resume",
        help="continue a run directory with its recorded settings",
        description="Rerun DIR/config.json: finished shards are reused, unfinished ones computed.",
    )
    resume.add_argument("run_dir", type=Path, help="a run directory written by `ferrisbench evaluate --out DIR`")
    resume.add_argument("--workers", type=int, default=None, help="parallel workers (default: as recorded)")
    resume.add_argument("--no-progress", action="store_true", help="no progress bar")
    _runner_options(resume)

    from tasks.generation.cli_options import add_generate_parser

    add_generate_parser(commands)

    bench = commands.add_parser(
        "benchmark",
        help="the main job: provision, generate, evaluate (both policy modes), compare, report, history",
        description="Run the benchmark flow on a configuration (default: the reference source on "
                    "humaneval-rust); rerunning on the same --out resumes.",
    )
    bench.add_argument("--config", type=Path, default=None, help="YAML or JSON BenchmarkConfig (default: embedded)")
    bench.add_argument("--out", type=Path, default=None, help="run directory (default: the configuration's out)")
    bench.add_argument("--no-progress", action="store_true", help="no progress bars")

    problems = commands.add_parser("problems", help="inspect a benchmark")
    problem_commands = problems.add_subparsers(dest="problems_command", required=True)
    validate = problem_commands.add_parser(
        "validate", help="run every reference solution through the executor (the validity gate)"
    )
    validate.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    validate.add_argument("--json", action="store_true", help="print counts and invalid tasks as JSON")
    _executor_options(validate)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from tasks.logs import configure

    configure(args.log_level)
    if args.version:
        try:
            print(f"ferrisbench {version('ferrisbench')}")
        except PackageNotFoundError:
            print("ferrisbench (not installed)")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        config = _executor_config(args) if args.command not in ("resume", "generate", "benchmark") else None
    except ValueError as exc:
        parser.error(str(exc))
    from flows.errors import user_errors
    from flows.runtime import PipelineSetupError
    from tasks.generation.base import GenerationError
    from tasks.runplan import NotARunDirectory

    try:
        if args.command == "generate":
            return _generate(args)
        if args.command == "benchmark":
            return _benchmark(args)
        if args.command == "resume":
            return _resume(args)
        if args.command == "evaluate":
            return _evaluate(args, config)
        if args.command == "problems":
            return _validate(args, config)
    except (*user_errors(), PipelineSetupError, NotARunDirectory, GenerationError) as exc:
        print(f"ferrisbench: error: {exc}", file=sys.stderr)
        return 1
    return 2


def _benchmark(args: argparse.Namespace) -> int:
    from flows.benchmark import BenchmarkFailed, resolve_config, run_benchmark
    from flows.report import headline
    from tasks.provision import ProvisionError

    try:
        config = resolve_config(str(args.config) if args.config else None, args.out, None)
    except ValueError as exc:
        print(f"ferrisbench: error: {exc}", file=sys.stderr)
        return 2
    if args.no_progress:
        config = config.model_copy(update={"show_progress": False})
    out = config.out
    from flows.stopping import stop_on_signals

    try:
        with stop_on_signals(f"the run directory {out} is kept: rerun the same command to resume it"):
            metrics = run_benchmark(config)
    except ProvisionError as exc:
        print(f"ferrisbench: provisioning failed (see {out / 'env.json'}): {exc}", file=sys.stderr)
        return 1
    except BenchmarkFailed as exc:
        print(f"ferrisbench: benchmark FAILED: {exc}\nreport: {out / 'report.md'}", file=sys.stderr)
        return 1
    print(headline(metrics))
    print(f"report: {out / 'report.md'}\nmetrics: {out / 'metrics.json'}\nenvironment: {out / 'env.json'}")
    if not metrics["meta"]["model_benchmarked"]:
        print("No model was benchmarked: the run judged the benchmark's reference solutions (the harness's "
              "self-check). To benchmark a model, list it (and its adapters) under `models:` in a configuration "
              "file, e.g. configs/nightly.yaml, and run `ferrisbench benchmark --config FILE`; models other than "
              "`reference`, `import:FILE` and `openai:URL` need a GPU.")
    return 0


def _generate(args: argparse.Namespace) -> int:
    from flows.generate import run_generation
    from tasks.generation.cli_options import generation_config

    try:
        generation = generation_config(args)
    except ValueError as exc:
        print(f"ferrisbench: error: {exc}", file=sys.stderr)
        return 2
    summary = run_generation(generation)
    for model in summary["models"]:
        print(f"{model['model']}: {model['generated']} shards generated, {model['reused']} reused (of {model['shards']})")
    print(f"samples: {summary['samples']}")
    return 0


def _evaluate(args: argparse.Namespace, config: ExecutorConfig) -> int:
    if args.samples.is_dir() and (args.samples / "run.json").exists():  # a `ferrisbench generate` output directory
        from tasks.generation.stage import generated_samples_file

        if args.out.resolve() == args.samples.resolve():
            print(f"ferrisbench: error: --out must differ from the generation directory (e.g. {args.samples / 'evaluation'})", file=sys.stderr)
            return 2
        args.samples = generated_samples_file(args.samples)
    try:
        run_config = RunConfig(
            samples=args.samples, benchmark=args.benchmark, out=args.out, executor=config,
            policy=PolicyChoice(args.policy), ks=args.k, include_invalid=args.include_invalid,
            only_sampled_tasks=args.only_sampled_tasks, shard_size=args.shard_size,
            samples_format=args.format, fields=field_mapping(args.fields), reference_verdict=args.reference_verdict,
            parallel_shards=args.parallel_shards, ray_address=args.ray_address, show_progress=not args.no_progress,
        )
    except ValueError as exc:
        print(f"ferrisbench: error: {exc}", file=sys.stderr)
        return 2
    return _run(run_config)


def _resume(args: argparse.Namespace) -> int:
    from tasks.runplan import load_config

    recorded = load_config(args.run_dir)
    executor = recorded.executor if args.workers is None else recorded.executor.model_copy(update={"workers": args.workers})
    run_config = recorded.model_copy(update={
        "executor": executor, "out": args.run_dir, "parallel_shards": args.parallel_shards,
        "ray_address": args.ray_address, "show_progress": not args.no_progress,
    })
    return _run(run_config)


def _run(run_config: RunConfig) -> int:
    from flows.evaluate import run_evaluation
    from flows.report import headline
    from flows.stopping import stop_on_signals

    out = run_config.out
    with stop_on_signals(f"the run directory {out} is kept: rerun the same command, or `ferrisbench resume {out}`, "
                         "to finish it"):
        outcome = run_evaluation(run_config)
    attempt = outcome["attempt"]
    print(headline(outcome["metrics"]))
    print(f"shards: {attempt['shards_computed']} computed, {attempt['shards_reused']} reused "
          f"(of {attempt['shards_total']}); aggregate {attempt['aggregate']}")
    print(f"results: {out / 'results.parquet'}\nmetrics: {out / 'metrics.json'}\nreport: {out / 'report.md'}")
    return 0


def _validate(args: argparse.Namespace, config: ExecutorConfig) -> int:
    from flows.gate import prepare, validity_table
    from tasks.problems import load_benchmark

    problem_set = load_benchmark(args.benchmark, edition=config.edition)
    toolchain, pool = prepare(config)
    table = validity_table(problem_set, config, pool, toolchain, show_progress=not args.no_progress)
    counts = table["validity"].value_counts().to_dict()
    invalid = table[~table["validity"].isin(["valid", "unverified"])]
    if args.json:
        print(
            json.dumps(
                {
                    "benchmark": problem_set.name,
                    "problems_hash": problem_set.content_hash,
                    "sandbox": pool.identity(),
                    "counts": {k: int(v) for k, v in sorted(counts.items())},
                    "invalid": {r.task_id: {"validity": r.validity, "reason": r.validity_reason} for r in invalid.itertuples()},
                },
                indent=2,
            )
        )
        return 0
    for row in table.sort_values(["validity", "task_id"]).itertuples():
        print(f"{row.task_id:32} {row.validity:16} {row.validity_reason[:100]}")
    print(", ".join(f"{k}: {v}" for k, v in sorted(counts.items())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
