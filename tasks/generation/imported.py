"""Samples generated elsewhere (any harness's output that `tasks.imports` reads) as a model.

The file is checked whole before anything is written (`tasks.samples`): malformed lines,
unknown tasks, tasks without samples and a sample count other than the one asked for are
errors, never silently dropped or padded. With `only_sampled_tasks` the run covers the tasks
the file has samples for; with `n_from_file` the file's own samples per task is n.
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
from tasks.imports import Context, ImportOptions, input_sha256
from tasks.samples import SamplesError, check_against_problems, read_samples
from tasks.schema import Problem

MAX_SHOWN = 5


class ImportedSource(SampleSource):
    def __init__(self, path: Path, benchmark_task_ids: Sequence[str], label: str | None = None,
                 options: ImportOptions | None = None):
        self.path = Path(path).resolve()
        self.benchmark_task_ids = tuple(benchmark_task_ids)  # in the benchmark's order
        if not self.path.exists():
            raise GenerationError(f"samples file {path} does not exist")
        self.label = label or self.path.stem
        self.options = options or ImportOptions()
        self.sha256 = input_sha256(self.path)
        self._frame: pd.DataFrame | None = None
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

    def frame(self) -> pd.DataFrame:
        """The file's rows, read and checked against the benchmark's task ids once."""
        if self._frame is None:
            try:
                frame = read_samples(self.path, Context(self.options, self.benchmark_task_ids))
                check_against_problems(frame, set(self.benchmark_task_ids), allow_missing_tasks=True)  # unknown ids
            except SamplesError as exc:
                raise GenerationError(f"cannot import {self.path}: {exc}") from None
            self._frame = frame
        return self._frame

    def sampled_tasks(self) -> set[str]:
        return set(self.frame()["task_id"])

    def samples_per_task(self) -> int:
        try:
            return check_against_problems(self.frame(), self.sampled_tasks(), allow_missing_tasks=True)
        except SamplesError as exc:
            raise GenerationError(f"cannot import {self.path}: {exc}") from None

    def prepare(self, problems: Sequence[Problem], sampling: Sampling) -> dict[str, str]:
        try:
            wanted = {p.task_id for p in problems}
            frame = self.frame()
            frame = frame[frame["task_id"].isin(wanted)]  # tasks left out of this run (--limit)
            if frame.empty:
                raise SamplesError("it has no samples for the tasks of this run")
            n = check_against_problems(frame, wanted)
        except SamplesError as exc:
            hint = str(exc).replace("pass --only-sampled-tasks", "pass --only-sampled-tasks (generate and evaluate)")
            raise GenerationError(f"cannot import {self.path}: {hint}") from None
        if n != sampling.n:
            raise GenerationError(f"{self.path} has {n} samples per task; {sampling.n} were asked for (--samples; "
                                  "leave it out to take the file's)")
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
