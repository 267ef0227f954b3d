"""`ferrisbench generate` options: argparse over `GenerationConfig`, one option per field.

Plain argparse (no Prefect import), so `ferrisbench --help` stays fast; `flows/cli.py` adds
the subcommand with `add_generate_parser` and builds the config with `generation_config`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tasks.config import SAMPLE_FORMATS, GenerationConfig

_DEFAULTS = {name: field.default for name, field in GenerationConfig.model_fields.items()}
BENCHMARK_HELP = ("humaneval-rust | multipl-e (humaneval-rs) | multipl-e:humaneval-rs | multipl-e:mbpp-rs | "
                  "multipl-e:PATH | PATH")


def add_import_options(parser: argparse.ArgumentParser) -> None:
    """How a samples file from another harness is read (shared by evaluate and generate --model import:)."""
    parser.add_argument("--format", choices=list(SAMPLE_FORMATS), default=None,
                        help="samples format (default: detected from the content)")
    parser.add_argument("--field", action="append", default=[], dest="fields", metavar="ROLE=NAME",
                        help="read the completion or the task id from another field of a JSONL: "
                             "--field completion=NAME, --field task_id=NAME (repeatable)")


def field_mapping(pairs: list[str]) -> dict[str, str]:
    """`["completion=text"]` → {"completion": "text"}; a malformed pair is a ValueError (exit 2)."""
    mapping = {}
    for pair in pairs:
        role, sep, name = pair.partition("=")
        if not sep or not role.strip() or not name.strip():
            raise ValueError(f"--field wants ROLE=NAME (e.g. completion=solution), got {pair!r}")
        mapping[role.strip()] = name.strip()
    return mapping


def add_generate_parser(commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = commands.add_parser(
        "generate",
        help="generate samples (vLLM, an OpenAI-compatible server, references, or an imported file)",
        description=(
            "Write DIR/samples/<model>/shard-*.parquet and DIR/samples.parquet; rerunning the same "
            "command resumes (finished shards are kept). Evaluate with `ferrisbench evaluate DIR --out DIR/evaluation`."
        ),
    )
    parser.add_argument(
        "--model", required=True,
        help="PATH | owner/name[/subfolder][@revision] (vLLM) | reference | import:FILE | openai:URL[#MODEL]; NAME=SPEC names it",
    )
    parser.add_argument(
        "--adapter", action="append", default=[], dest="adapters",
        help="LoRA fine-tune of --model (PATH or hub id; for openai: a served LoRA name); repeatable; NAME=SPEC names it",
    )
    parser.add_argument("--benchmark", required=True, help=BENCHMARK_HELP)
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per task, n (default: 100; import:FILE: the file's own n)")
    parser.add_argument("--out", type=Path, required=True, help="output directory (rerun on it to resume)")
    parser.add_argument("--prompt-style", choices=["instruct", "completion"], default=_DEFAULTS["prompt_style"])
    parser.add_argument("--temperature", type=float, default=_DEFAULTS["temperature"])
    parser.add_argument("--top-p", type=float, default=_DEFAULTS["top_p"])
    parser.add_argument("--max-tokens", type=int, default=_DEFAULTS["max_tokens"], help="new tokens per sample")
    parser.add_argument("--seed", type=int, default=_DEFAULTS["seed"], help="run seed; every request's seed derives from it")
    parser.add_argument("--limit", type=int, default=None, help="only the first N tasks (smoke runs)")
    parser.add_argument("--shard-tasks", type=int, default=_DEFAULTS["shard_tasks"], help="tasks per shard (default: 10)")
    parser.add_argument("--no-retry-failed", action="store_true", help="keep shards with failed generations on rerun")
    imported = parser.add_argument_group("import:FILE (samples from another harness)")
    imported.add_argument("--only-sampled-tasks", action="store_true",
                          help="only the tasks the file has samples for (as `evaluate --only-sampled-tasks`)")
    add_import_options(imported)
    engine = parser.add_argument_group("vLLM engine")
    engine.add_argument("--dtype", default=_DEFAULTS["dtype"], help="auto | bfloat16 | float16 | float32")
    engine.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    engine.add_argument("--tensor-parallel-size", type=int, default=_DEFAULTS["tensor_parallel_size"])
    engine.add_argument("--gpu-memory-utilization", type=float, default=_DEFAULTS["gpu_memory_utilization"])
    engine.add_argument("--max-lora-rank", type=int, default=_DEFAULTS["max_lora_rank"])
    engine.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs (faster start, slower decode)")
    engine.add_argument("--hf-cache-dir", type=Path, default=None, help="Hugging Face cache (default: HF_HUB_CACHE)")
    server = parser.add_argument_group("OpenAI-compatible server")
    server.add_argument("--concurrency", type=int, default=_DEFAULTS["openai_concurrency"], help="requests in flight")
    server.add_argument("--retries", type=int, default=_DEFAULTS["openai_retries"], help="retries per request")
    server.add_argument("--request-timeout", type=float, default=_DEFAULTS["openai_timeout_s"], help="seconds")
    return parser


def _is_import(model: str) -> bool:
    spec = model if model.startswith("import:") or "=" not in model else model.split("=", 1)[1]
    return spec.startswith("import:")


def generation_config(args: argparse.Namespace) -> GenerationConfig:
    """The typed config of a parsed `generate` command line (pydantic checks the values)."""
    return GenerationConfig(
        model=args.model,
        adapters=tuple(args.adapters),
        benchmark=args.benchmark,
        out=args.out,
        prompt_style=args.prompt_style,
        samples=args.samples if args.samples is not None else _DEFAULTS["samples"],
        samples_from_file=args.samples is None and _is_import(args.model),
        only_sampled_tasks=args.only_sampled_tasks,
        samples_format=args.format,
        fields=field_mapping(args.fields),
        temperature=args.temperature,
        top_p=args.top_p,
        max_tokens=args.max_tokens,
        seed=args.seed,
        limit=args.limit,
        shard_tasks=args.shard_tasks,
        retry_failed=not args.no_retry_failed,
        dtype=args.dtype,
        max_model_len=args.max_model_len,
        tensor_parallel_size=args.tensor_parallel_size,
        gpu_memory_utilization=args.gpu_memory_utilization,
        max_lora_rank=args.max_lora_rank,
        enforce_eager=args.enforce_eager,
        hf_cache_dir=args.hf_cache_dir,
        openai_concurrency=args.concurrency,
        openai_retries=args.retries,
        openai_timeout_s=args.request_timeout,
    )
