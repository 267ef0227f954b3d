"""The benchmark's canonical solutions as a model: the harness's self-check.

Run through the evaluate stage, pass@1 must be exactly 1.0 over the valid tasks (the validity
gate's definition of valid); anything less is a harness bug, not a model's score.
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.generation.base import GenerationError, Generated, Sampling, SampleSource, TaskOutput, text_sha256
from tasks.schema import Problem

MAX_SHOWN = 5


class ReferenceSource(SampleSource):
    label = "reference"

    def __init__(self, problems_hash: str):
        self.problems_hash = problems_hash

    def identity(self) -> dict:
        return {
            "source": "reference",
            "model_id": "reference",
            "model_revision": self.problems_hash,  # the references are part of the problems' content
            "adapter": None,
            "adapter_revision": None,
            "prompt_style": None,
        }

    def prepare(self, problems: Sequence[Problem], sampling: Sampling) -> dict[str, str]:
        missing = [p.task_id for p in problems if p.canonical_solution is None]
        if missing:
            raise GenerationError(
                f"the benchmark has no reference solution for {len(missing)} task(s) "
                f"(e.g. {', '.join(missing[:MAX_SHOWN])}); the reference source needs a benchmark that carries them"
            )
        return {p.task_id: text_sha256(p.prompt) for p in problems}

    def generate(self, problems: Sequence[Problem], sampling: Sampling) -> list[TaskOutput]:
        return [
            TaskOutput(p.task_id, tuple(Generated(p.canonical_solution, None, "reference") for _ in range(sampling.n)))
            for p in problems
        ]
