"""bigcode-evaluation-harness `generations.json` (`--save_generations`): a JSON list of lists.

The i-th list holds the samples of the benchmark's i-th problem in the dataset's own order, each a
full program text (the prompt followed by the generation, cut at the task's stop words). A list
count other than the benchmark's problem count is refused, naming both: the file was made for
another benchmark, another revision or with `--limit`, and matching by position would be wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.imports.base import BadLines, Context, Importer, Probe, SamplesError, read_bytes, unicode_safe
from tasks.imports.jsonl import describe, explain, json_type


class BigcodeGenerations(Importer):
    name = "bigcode"
    summary = "bigcode-evaluation-harness generations.json: a list per problem, in the benchmark's order"

    def detect(self, probe: Probe) -> bool:
        return probe.first_char == b"["

    def needs_task_order(self) -> bool:
        return True

    def read(self, path: Path, context: Context) -> list[dict]:
        data = read_bytes(path)
        try:
            value = json.loads(data.decode("utf-8"))
        except UnicodeDecodeError as error:
            line = data.count(b"\n", 0, error.start) + 1
            column, message = explain(data.split(b"\n")[line - 1])
            raise SamplesError(f"{path}:{line}:{column}: {message}") from None
        except json.JSONDecodeError as error:
            text = data.decode("utf-8")
            raise SamplesError(f"{path}:{error.lineno}:{error.colno}: {describe(text, error)}") from None
        if not isinstance(value, list) or not all(isinstance(item, list) for item in value):
            found = json_type(value) if not isinstance(value, list) else "an array that is not a list of lists"
            raise SamplesError(f"{path}: a bigcode generations file is a JSON array of arrays (one per problem); found {found}")
        order = context.task_order
        if order is None:
            raise SamplesError(f"{path}: bigcode generations are matched to tasks by position; it needs the benchmark")
        if len(value) != len(order):
            raise SamplesError(
                f"{path}: holds generations for {len(value)} problems, the benchmark has {len(order)}; bigcode files "
                "are matched to problems by position, so they must cover the whole benchmark in its order "
                "(was it made with --limit, or for another benchmark?)"
            )
        bad = BadLines(str(path))
        rows = []
        for problem, (task_id, samples) in enumerate(zip(order, value), start=1):
            for index, text in enumerate(samples):
                if not isinstance(text, str):
                    bad.add(None, None, f"problem {problem} ({task_id}), sample {index + 1}: expected a string, "
                                        f"found {json_type(text)}")
                    continue
                rows.append(unicode_safe({"task_id": task_id, "completion": text, "sample_index": index}))
        bad.raise_if_any()
        return rows
