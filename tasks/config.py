"""The one typed configuration shared by the CLI, the flow parameters and prefect.yaml.

Every field that can change a verdict is part of the results' identity (see `identity()`),
so a resumed run can never mix results computed under different settings.
"""

from __future__ import annotations

import os
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class SandboxKind(str, Enum):
    FIREJAIL = "firejail"
    BUBBLEWRAP = "bubblewrap"
    NONE = "none"  # explicit opt-out only: recorded in every row and warned about


class PolicyChoice(str, Enum):
    ON = "on"
    OFF = "off"
    BOTH = "both"

    def modes(self) -> list[str]:
        """Policy modes to report; both come from the same samples (policy is pure)."""
        return {"on": ["policy"], "off": ["no_policy"], "both": ["no_policy", "policy"]}[self.value]


class ExecutorConfig(BaseModel):
    """How completions are compiled, run and judged."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sandbox: SandboxKind = SandboxKind.BUBBLEWRAP  # allow-list filesystem, ~5x faster launch
    edition: str = "2021"
    compile_timeout_s: float = Field(15.0, gt=0)  # bigcode-evaluation-harness uses 15 s
    run_timeout_s: float = Field(5.0, gt=0)  # … and 5 s for the run
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    max_completion_bytes: int = Field(64_000, gt=0)
    diagnostic_chars: int = Field(2_000, gt=0)
    work_root: Path | None = None  # where per-sample work dirs live; the sandbox picks a default
    # Throughput only: none of these can change a verdict (the batched path reaches exactly the
    # per-sample path's verdicts, and a cached verdict is one of an identical program), so they
    # are not part of identity().
    batch_size: int = Field(128, ge=1, le=1000)  # programs per rustc invocation; 1 = the per-sample path
    batch_deadline_s: float = Field(0.1, gt=0)  # a test run in a batch gets this long; overruns are rerun alone
    verdict_cache: bool = True  # reuse the verdicts of identical programs across runs (tasks.dedup)
    verdict_cache_dir: Path | None = None  # default: $FERRISBENCH_CACHE/verdicts

    @field_validator("edition")
    @classmethod
    def _known_edition(cls, value: str) -> str:
        if value not in {"2015", "2018", "2021", "2024"}:
            raise ValueError(f"unknown Rust edition {value!r}; use 2015, 2018, 2021 or 2024")
        return value

    def identity(self) -> dict:
        """Settings that can change a verdict (workers and paths cannot)."""
        return {
            "sandbox": self.sandbox.value,
            "edition": self.edition,
            "compile_timeout_s": self.compile_timeout_s,
            "run_timeout_s": self.run_timeout_s,
            "max_completion_bytes": self.max_completion_bytes,
        }


# What `--format` takes (tasks.imports holds one importer per name, and checks it matches this list).
SAMPLE_FORMATS = ("parquet", "multipl-e", "bigcode", "lm-eval", "evalplus", "human-eval")
FIELD_ROLES = ("completion", "task_id")  # what `--field ROLE=NAME` can rename


def _checked_format(value: str | None) -> str | None:
    if value is not None and value not in SAMPLE_FORMATS:
        raise ValueError(f"unknown samples format {value!r}; use one of {', '.join(SAMPLE_FORMATS)}")
    return value


def _checked_fields(value: dict[str, str]) -> dict[str, str]:
    unknown = sorted(set(value) - set(FIELD_ROLES))
    if unknown:
        raise ValueError(f"--field {unknown[0]}=…: only {' and '.join(FIELD_ROLES)} can be renamed")
    empty = sorted(role for role, name in value.items() if not name)
    if empty:
        raise ValueError(f"--field {empty[0]}=NAME needs a field name")
    return dict(value)


def _checked_ks(value: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """The ks sorted and deduplicated; each must be >= 1 (None: resolved later)."""
    if value is not None and (not value or min(value) < 1):
        raise ValueError("every k must be >= 1")
    return None if value is None else tuple(sorted(set(value)))


class SampleReading(BaseModel):
    """How a samples file of another harness is read (`evaluate FILE`, `generate --model import:FILE`)."""

    only_sampled_tasks: bool = False  # only the tasks the file has samples for (each model over its own)
    samples_format: str | None = None  # force an importer (--format); None: detected from the content
    fields: dict[str, str] = Field(default_factory=dict)  # --field completion=NAME / task_id=NAME

    @field_validator("samples_format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        return _checked_format(value)

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, str]) -> dict[str, str]:
        return _checked_fields(value)


class RunConfig(SampleReading):
    """One evaluation run: what is judged, how, how it is scored, where it lives, how it scales.

    Recorded as `DIR/config.json` so `ferrisbench resume DIR` repeats it exactly. Only the
    fields in `settings_identity()` (plus the inputs' hashes) make up the run identity; where
    the work runs (workers, Ray, parallel shards) cannot change a result and may differ on resume.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: Path
    benchmark: str
    out: Path
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    policy: PolicyChoice = PolicyChoice.BOTH
    ks: tuple[int, ...] | None = None  # None: those of 1, 10, 100 that are <= n
    include_invalid: bool = False
    reference_verdict: str | None = None  # --reference-verdict FIELD: the other harness's verdict per sample
    shard_size: int = Field(500, ge=1)  # samples per shard: one Prefect task, one parquet file per mode
    parallel_shards: int = Field(2, ge=1)  # local runner: shards in flight at once (they share one sandbox pool)
    ray_address: str | None = None  # run shard tasks on this Ray cluster (prefect-ray)
    bootstrap_samples: int = Field(1000, ge=0)
    show_progress: bool = True

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return _checked_ks(value)

    def settings_identity(self, ks: tuple[int, ...]) -> dict:
        """Settings that change results or metrics (with the resolved ks)."""
        identity = {
            "policy_modes": self.policy.modes(),
            "ks": list(ks),
            "include_invalid": self.include_invalid,
            "only_sampled_tasks": self.only_sampled_tasks,
            "shard_size": self.shard_size,
            "bootstrap_samples": self.bootstrap_samples,
        }
        reading = {"format": self.samples_format, "fields": self.fields, "reference_verdict": self.reference_verdict}
        if any(reading.values()):  # only when set, so run directories made before these options still resume
            identity["import"] = reading
        return identity


class GenerationConfig(SampleReading):
    """The generate stage: which model(s), how prompted and sampled, how the engine is built.

    `model` is a local path, a Hugging Face id (`owner/name[/subfolder][@revision]`),
    `reference`, `import:FILE` or `openai:URL[#MODEL]`; each adapter (a LoRA fine-tune of it)
    becomes its own model in `samples/`. `NAME=SPEC` names a model's directory explicitly.
    Defaults are the seed's: 100 samples, T=0.2, top_p 0.95, 512 new tokens, seed 1234.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str
    adapters: tuple[str, ...] = ()
    benchmark: str
    out: Path
    prompt_style: str = Field("instruct", pattern="^(instruct|completion)$")
    samples: int = Field(100, ge=1)  # n per task, one request per task
    samples_from_file: bool = False  # import:FILE: n is the file's own (what `generate` does without --samples)
    temperature: float = Field(0.2, ge=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_tokens: int = Field(512, ge=1)
    seed: int = Field(1234, ge=0)
    limit: int | None = Field(None, ge=1)  # only the first N tasks of the benchmark (smoke runs)
    shard_tasks: int = Field(10, ge=1)  # tasks per shard: a killed run loses at most one shard
    retry_failed: bool = True  # a rerun regenerates shards that hold generation_failed rows
    # vLLM engine
    dtype: str = "auto"
    max_model_len: int | None = Field(None, ge=16)
    tensor_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    max_lora_rank: int = Field(16, ge=1)
    enforce_eager: bool = False
    engine_in_process: bool | None = None  # None: in-process on CPU, vLLM's own choice on GPU
    hf_cache_dir: Path | None = None
    # OpenAI-compatible endpoint
    openai_concurrency: int = Field(8, ge=1)
    openai_retries: int = Field(4, ge=0)
    openai_timeout_s: float = Field(600.0, gt=0)


class ModelEntry(BaseModel):
    """One model to benchmark and its fine-tunes (LoRA adapters served by the same engine)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str  # as GenerationConfig.model: path, hub id, reference, import:FILE, openai:URL; NAME=SPEC names it
    adapters: tuple[str, ...] = ()


class RegressionThresholds(BaseModel):
    """How much worse than the previous comparable night is tolerated before the run fails."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_pass_at_1_drop: float = Field(0.05, ge=0, lt=1)
    max_sandbox_error_rate_increase: float = Field(0.02, ge=0, lt=1)
    max_timeout_rate_increase: float = Field(0.05, ge=0, lt=1)


# GenerationConfig fields a benchmark configuration may set for every model (the rest is per model or derived).
_PER_MODEL_GENERATION_FIELDS = {"model", "adapters", "benchmark", "out"}


class BenchmarkConfig(BaseModel):
    """The `benchmark` flow (the nightly main job): one typed configuration for the CLI
    (`--config FILE`), the flow's parameters and prefect.yaml.

    Embedded defaults benchmark the `reference` source (the harness's self-check) on
    HumanEval-Rust in a bubblewrap sandbox, which needs no GPU. `generation` holds any
    GenerationConfig field except model/adapters/benchmark/out and applies to every model.
    `out` may contain `{date}` (UTC, YYYY-MM-DD) so a nightly deployment gets a directory per night;
    the history table defaults to `history.parquet` beside that directory.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    benchmark: str = "humaneval-rust"
    models: tuple[ModelEntry, ...] = (ModelEntry(model="reference"),)
    generation: dict = Field(default_factory=lambda: {"samples": 1})
    executor: ExecutorConfig = Field(default_factory=ExecutorConfig)
    policy: PolicyChoice = PolicyChoice.BOTH
    ks: tuple[int, ...] | None = None  # None: those of 1, 10, 100 that are <= n
    include_invalid: bool = False
    shard_size: int = Field(500, ge=1)
    parallel_shards: int = Field(2, ge=1)
    out: Path = Path("runs/benchmark")
    history_path: Path | None = None  # default: <out's parent>/history.parquet
    history_nights: int = Field(14, ge=1)  # the report's trend and table cover this many runs
    regression: RegressionThresholds = Field(default_factory=RegressionThresholds)
    require_gpu: bool = False  # provisioning fails without an NVIDIA GPU (set it for real models)
    gpu_concurrency_limit: str | None = "gpu"  # Prefect global concurrency limit held by GPU stages
    show_progress: bool = True
    # Throughput only (tasks.prejudge): judge each generated shard in the background while the next one
    # generates, to fill the verdict cache the evaluate stage then reads. Needs executor.verdict_cache.
    overlap_evaluation: bool = True
    overlap_workers: int | None = Field(None, ge=1)  # its sandboxes; None: executor.workers - 1 (at least 1)

    @field_validator("models")
    @classmethod
    def _some_models(cls, value: tuple[ModelEntry, ...]) -> tuple[ModelEntry, ...]:
        if not value:
            raise ValueError("models: list at least one model (e.g. {model: reference})")
        return value

    @field_validator("generation")
    @classmethod
    def _generation_fields(cls, value: dict) -> dict:
        misplaced = sorted(set(value) & _PER_MODEL_GENERATION_FIELDS)
        if misplaced:
            raise ValueError(f"generation: {', '.join(misplaced)} are set per model or by the benchmark, not here")
        GenerationConfig(model="reference", benchmark="-", out=Path("."), **value)  # every value checked now
        return value

    @field_validator("ks")
    @classmethod
    def _positive_ks(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        return _checked_ks(value)

    def generation_for(self, entry: ModelEntry, out: Path) -> GenerationConfig:
        return GenerationConfig(model=entry.model, adapters=entry.adapters, benchmark=self.benchmark, out=out,
                                **self.generation)

    @classmethod
    def load(cls, path: Path) -> "BenchmarkConfig":
        """From a YAML or JSON file; an unreadable file or a wrong key is a ValueError naming it."""
        import json

        import yaml

        try:
            text = Path(path).read_text(encoding="utf-8")
            data = json.loads(text) if Path(path).suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as error:
            raise ValueError(f"cannot read the configuration {path}: {error}") from error
        if not isinstance(data, dict):
            raise ValueError(f"the configuration {path} must be a mapping of settings, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValueError as error:
            raise ValueError(f"the configuration {path} is not valid: {error}") from error
