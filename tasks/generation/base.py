"""What every sample source shares: the sample row, the sampling settings, the seeding rule.

A source turns problems into rows, exactly `n` per task (`sample_index` 0..n-1): a generation
that failed is still a row, with `generation_status = "generation_failed"`, which the evaluate
stage scores as a failure. Sources differ only in where the text comes from.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

from tasks.schema import Problem, Status

GENERATED = "ok"
GENERATION_FAILED = Status.GENERATION_FAILED.value

# One row per requested sample; every shard has exactly these columns, in this order.
SAMPLE_COLUMNS = (
    "task_id",
    "sample_index",
    "completion",  # what the evaluate stage judges
    "raw_text",  # the source's text exactly as returned (None where there is none)
    "finish_reason",  # "stop" | "length" | "reference" | "imported" | None when failed
    "prompt_tokens",
    "completion_tokens",
    "prompt_hash",
    "generation_status",  # "ok" | "generation_failed"
    "generation_error",
    "model",  # the label: samples/<model>/ and the `model` column of results
    "model_id",
    "model_revision",
    "adapter",
    "adapter_revision",
    "prompt_style",
    "temperature",
    "top_p",
    "max_tokens",
    "request_seed",
    "run_seed",
)


class GenerationError(ValueError):
    """The generation cannot run as configured; the message says what to change.

    Raised before anything is generated (bad model path, adapter rank, prompt too long), or
    when a run must stop (the engine died); shards already written stay valid either way.
    """


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters of every request: always explicit (vLLM's defaults are 16 tokens, T=1)."""

    n: int
    temperature: float
    top_p: float
    max_tokens: int
    seed: int  # the run seed; each request's seed is derived from it (`request_seed`)

    def identity(self) -> dict:
        return {
            "n": self.n,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


def request_seed(run_seed: int, model_key: str, task_id: str) -> int:
    """The seed of one request: a pure function of run seed, model (+ adapter) and task.

    So a rerun, a resumed run or a different shard size asks for exactly the same samples, and
    two models never share a random stream. 31 bits: every server accepts it.
    """
    digest = hashlib.sha256(json.dumps([run_seed, model_key, task_id]).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % (2**31)


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Generated:
    """One sample as a source produced it (before the shared row fields are added)."""

    completion: str | None  # None only for imported rows without text (scored invalid_completion)
    raw_text: str | None
    finish_reason: str | None
    completion_tokens: int | None = None
    status: str = GENERATED
    error: str | None = None


@dataclass(frozen=True)
class TaskOutput:
    task_id: str
    samples: tuple[Generated, ...]
    prompt_tokens: int | None = None


class SampleSource(ABC):
    """One model (or pseudo-model) that produces samples for problems."""

    label: str  # directory under samples/ and the rows' `model` value

    @abstractmethod
    def identity(self) -> dict:
        """Everything about the source that changes its samples (model, revision, adapter, prompt)."""

    @abstractmethod
    def prepare(self, problems: Sequence[Problem], sampling: Sampling) -> dict[str, str]:
        """Check everything before generating (raises GenerationError); task_id → prompt hash."""

    @abstractmethod
    def generate(self, problems: Sequence[Problem], sampling: Sampling) -> list[TaskOutput]:
        """`sampling.n` samples per problem, in the problems' order."""

    def model_key(self) -> str:
        """What the request seeds are derived from besides the run seed and the task."""
        identity = self.identity()
        return json.dumps([identity.get("model_id"), identity.get("adapter")])

    def close(self) -> None:
        """Release what the source holds (an engine process, connections)."""


def rows_for(
    source: SampleSource, output: TaskOutput, prompt_hash: str, sampling: Sampling
) -> list[dict]:
    """The shard rows of one task: the source's samples plus what every row records."""
    identity = source.identity()
    if len(output.samples) != sampling.n:
        raise GenerationError(
            f"{source.label}: {output.task_id} got {len(output.samples)} samples, {sampling.n} requested"
        )
    seed = request_seed(sampling.seed, source.model_key(), output.task_id)
    return [
        {
            "task_id": output.task_id,
            "sample_index": index,
            "completion": sample.completion,
            "raw_text": sample.raw_text,
            "finish_reason": sample.finish_reason,
            "prompt_tokens": output.prompt_tokens,
            "completion_tokens": sample.completion_tokens,
            "prompt_hash": prompt_hash,
            "generation_status": sample.status,
            "generation_error": sample.error,
            "model": source.label,
            "model_id": identity.get("model_id"),
            "model_revision": identity.get("model_revision"),
            "adapter": identity.get("adapter"),
            "adapter_revision": identity.get("adapter_revision"),
            "prompt_style": identity.get("prompt_style"),
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "max_tokens": sampling.max_tokens,
            "request_seed": seed,
            "run_seed": sampling.seed,
        }
        for index, sample in enumerate(output.samples)
    ]


def failed_output(task_id: str, n: int, error: str) -> TaskOutput:
    """n failed samples: the request could not be completed (scored as generation_failed)."""
    sample = Generated(completion="", raw_text=None, finish_reason=None, status=GENERATION_FAILED, error=error[:2000])
    return TaskOutput(task_id, tuple(sample for _ in range(n)))
