"""Samples generated elsewhere (any harness's human-eval JSONL, or parquet) as a model.

The file is checked whole before anything is written (`tasks.samples`): malformed lines,
unknown tasks, tasks without samples and a sample count other than the one asked for are
errors, never silently dropped or padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from tasks.generation.base import (
    GENERATION_FAILED,
    GenerationError,
    Generated,
    Sampling,
    SampleSource,
    TaskOutput,
    text_sha256,
)
from tasks.runplan import file_sha256
from tasks.samples import SamplesError, check_against_problems, read_samples
from tasks.schema import Problem

MAX_SHOWN = 5


class ImportedSource(SampleSource):
    def __init__(self, path: Path, benchmark_task_ids: set[str], label: str | None = None):
        self.path = Path(path).resolve()
        self.benchmark_task_ids = set(benchmark_task_ids)
        if not self.path.is_file():
            raise GenerationError(f"samples file {path} does not exist")
        self.label = label or self.path.stem
        self.sha256 = file_sha256(self.path)
        self._by_task: dict[str, pd.DataFrame] = {}

    def identity(self) -> dict:
        return {
            "source": "import",
            "model_id": f"import:{self.path}",
            "model_revision": f"sha256:{self.sha256}",
            "adapter": None,
            "adapter_revision": None,
            "prompt_style": None,
        }

    def prepare(self, problems: Sequence[Problem], sampling: Sampling) -> dict[str, str]:
        try:
            frame = read_samples(self.path)
            wanted = {p.task_id for p in problems}
            check_against_problems(frame, self.benchmark_task_ids, allow_missing_tasks=True)  # unknown ids
            frame = frame[frame["task_id"].isin(wanted)]  # tasks left out of this run (--limit)
            if frame.empty:
                raise SamplesError("it has no samples for the tasks of this run")
            n = check_against_problems(frame, wanted)
        except SamplesError as exc:
            raise GenerationError(f"cannot import {self.path}: {exc}") from None
        if n != sampling.n:
            raise GenerationError(f"{self.path} has {n} samples per task; {sampling.n} were asked for (--samples)")
        frame = frame.sort_values(["task_id", "sample_index"], kind="stable")
        self._by_task = {task_id: rows for task_id, rows in frame.groupby("task_id", sort=False)}
        return {p.task_id: text_sha256(p.prompt) for p in problems}

    def generate(self, problems: Sequence[Problem], sampling: Sampling) -> list[TaskOutput]:
        outputs = []
        for problem in problems:
            samples = []
            for row in self._by_task[problem.task_id].to_dict("records"):
                raw = row.get("raw_text", row.get("raw"))
                failed = row.get("generation_status") == GENERATION_FAILED
                samples.append(
                    Generated(
                        completion=row["completion"] if isinstance(row["completion"], str) else None,
                        raw_text=raw if isinstance(raw, str) else None,
                        finish_reason="imported",
                        status=GENERATION_FAILED if failed else "ok",
                        error="failed in the imported file" if failed else None,
                    )
                )
            outputs.append(TaskOutput(problem.task_id, tuple(samples)))
        return outputs
