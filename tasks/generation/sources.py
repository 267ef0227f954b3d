"""From the configuration to sample sources: every spec parsed and resolved before any work.

`--model` picks the backend (a model path or hub id → vLLM, `reference`, `import:FILE`,
`openai:URL[#MODEL]`); each `--adapter` adds a LoRA fine-tune of that model as a model of its
own. Labels (the directories under samples/) come from the specs, or from `NAME=SPEC`.
"""

from __future__ import annotations

import re
from pathlib import Path

from tasks.config import GenerationConfig
from tasks.generation.base import GenerationError, SampleSource
from tasks.generation.imported import ImportedSource
from tasks.imports import ImportOptions, default_label
from tasks.generation.models import ResolvedModel, check_adapter_ranks, resolve
from tasks.generation.openai_http import OpenAISource, parse_openai_spec
from tasks.generation.prompts import PromptStyle
from tasks.generation.reference import ReferenceSource
from tasks.generation.vllm_engine import EngineSettings, VllmEngine, VllmSource
from tasks.problems import ProblemSet

_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_NAMED = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)=(?P<spec>.+)$")


def split_name(text: str) -> tuple[str | None, str]:
    """`NAME=SPEC` → (NAME, SPEC); a plain spec → (None, spec)."""
    match = _NAMED.match(text)
    if match and not match["spec"].startswith("="):
        return match["name"], match["spec"]
    return None, text


def label_from(text: str) -> str:
    """A directory-safe label from a spec's last meaningful parts."""
    spec = text.split("@", 1)[0].rstrip("/")
    parts = [p for p in re.split(r"[/\\]", spec) if p and p not in {".", ".."}]
    name = parts[-1] if parts else "model"
    if re.fullmatch(r"checkpoint-\d+", name) and len(parts) > 1:  # an adapter's training checkpoint
        name = f"{parts[-2]}-{name}"
    return _safe(name)


def _safe(name: str) -> str:
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:80]
    return cleaned or "model"


def _check_label(label: str) -> str:
    if not _LABEL.match(label):
        raise GenerationError(f"model name {label!r}: use letters, digits, '.', '_' or '-' (at most 80)")
    return label


def build_sources(config: GenerationConfig, problem_set: ProblemSet, log_dir: Path) -> list[SampleSource]:
    """The base source first, then one per adapter; raises GenerationError on any bad spec."""
    style = PromptStyle(config.prompt_style)
    name, spec = split_name(config.model)
    adapters = [split_name(a) for a in config.adapters]
    if spec == "reference" or spec.startswith("import:"):
        if adapters:
            raise GenerationError(f"--adapter needs a model to adapt; {spec!r} has no weights")
        if spec == "reference":
            return [_labelled(ReferenceSource(problem_set.content_hash), name)]
        path = Path(spec.removeprefix("import:"))
        options = ImportOptions(config.samples_format, dict(config.fields))
        label = _check_label(name or label_from(default_label(path)))
        return [ImportedSource(path, [p.task_id for p in problem_set.problems], label=label, options=options)]
    if spec.startswith("openai:"):
        url, model = parse_openai_spec(spec)
        base_label = _check_label(name or label_from(model or url.split("//", 1)[-1]))
        options = dict(concurrency=config.openai_concurrency, retries=config.openai_retries, timeout_s=config.openai_timeout_s)
        sources: list[SampleSource] = [OpenAISource(url, model, style, base_label, **options)]
        for adapter_name, adapter in adapters:
            label = _check_label(adapter_name or f"{base_label}__{_safe(adapter)}")
            sources.append(OpenAISource(url, model, style, label, adapter=adapter, **options))
        return _unique(sources)
    return _vllm_sources(config, style, name, spec, adapters, log_dir)


def _vllm_sources(
    config: GenerationConfig, style: PromptStyle, name: str | None, spec: str, adapters: list, log_dir: Path
) -> list[SampleSource]:
    base = resolve(spec, "model", config.hf_cache_dir)
    resolved: list[tuple[str | None, ResolvedModel]] = [
        (adapter_name, resolve(adapter, "adapter", config.hf_cache_dir)) for adapter_name, adapter in adapters
    ]
    check_adapter_ranks([r for _, r in resolved], config.max_lora_rank)
    settings = EngineSettings(
        dtype=config.dtype,
        max_model_len=config.max_model_len,
        tensor_parallel_size=config.tensor_parallel_size,
        gpu_memory_utilization=config.gpu_memory_utilization,
        max_lora_rank=config.max_lora_rank,
        max_loras=max(1, len(resolved)),
        enforce_eager=config.enforce_eager,
        in_process=config.engine_in_process,
        seed=config.seed,
    )
    base_label = _check_label(name or label_from(spec))
    engine = VllmEngine(base, settings, Path(log_dir) / f"vllm-{base_label}.log", lora=bool(resolved))
    sources: list[SampleSource] = [VllmSource(engine, base_label, style)]
    for lora_id, (adapter_name, adapter) in enumerate(resolved, start=1):
        label = _check_label(adapter_name or f"{base_label}__{label_from(adapter.spec)}")
        sources.append(VllmSource(engine, label, style, adapter=adapter, lora_id=lora_id))
    return _unique(sources)


def _labelled(source: SampleSource, name: str | None) -> SampleSource:
    if name:
        source.label = _check_label(name)
    return source


def _unique(sources: list[SampleSource]) -> list[SampleSource]:
    labels = [s.label for s in sources]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise GenerationError(f"two models would share the directory samples/{duplicates[0]}; name them with NAME=SPEC")
    return sources
