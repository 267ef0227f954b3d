"""human-eval JSONL (`{"task_id", "completion", …}`, what most harnesses write) and parquet tables.

`--field completion=NAME` / `--field task_id=NAME` read any other JSONL whose objects hold the
task id and the text under other names. Every other field is kept (it ends up in the results).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.imports.base import PARQUET_MAGIC, BadLines, Context, Importer, Probe, SamplesError, add_reference, unicode_safe
from tasks.imports.jsonl import first_object, objects


def rows_from_objects(path: Path, context: Context, text_fields: tuple[str, ...], format_name: str) -> list[dict]:
    """Rows of a JSONL file whose objects hold a task id and the text in the first of `text_fields` present."""
    task_field = context.options.field_name("task_id")
    bad = BadLines(str(path))
    rows = []
    reference = context.options.reference_verdict is not None
    first_text = text_fields[0]
    for number, obj, suspicious in objects(path):
        text_field = first_text if first_text in obj else next((f for f in text_fields if f in obj), None)
        if task_field not in obj or text_field is None:
            wanted = " or ".join(repr(f) for f in text_fields)
            bad.add(number, None, f"{format_name} lines need {task_field!r} and {wanted}; this one has {sorted(obj)} "
                                  "(name other fields with --field task_id=NAME / --field completion=NAME, "
                                  "or pick the format with --format)")
            continue
        verdict: dict = {}
        if reference:
            add_reference(verdict, obj, context, bad, number)
        row = obj  # our own parsed object: renamed in place, the other fields kept as they are
        if task_field != "task_id":
            row["task_id"] = row.pop(task_field)
        if text_field != "completion":
            row["completion"] = row.pop(text_field)
        if verdict:
            row.update(verdict)
        rows.append(unicode_safe(row) if suspicious else row)
    bad.raise_if_any()
    return rows


class HumanEvalJsonl(Importer):
    name = "human-eval"
    summary = "human-eval JSONL: one object per sample with task_id and completion"

    def detect(self, probe: Probe) -> bool:
        obj = first_object(probe.head)
        return obj is not None and {"task_id", "completion"} <= set(obj)

    def read(self, path: Path, context: Context) -> list[dict]:
        return rows_from_objects(path, context, (context.options.field_name("completion"),), "human-eval")


class Parquet(Importer):
    name = "parquet"
    summary = "parquet table with task_id and completion columns (what `ferrisbench generate` writes)"

    def detect(self, probe: Probe) -> bool:
        return probe.head.startswith(PARQUET_MAGIC)

    def read(self, path: Path, context: Context) -> list[dict] | pd.DataFrame:
        try:
            frame = pd.read_parquet(path)
        except (OSError, ValueError) as error:
            raise SamplesError(f"{path}: not a readable parquet file: {error}") from None
        renames = {context.options.field_name(role): role for role in ("task_id", "completion")}
        frame = frame.rename(columns={k: v for k, v in renames.items() if k != v})
        missing = [c for c in ("task_id", "completion") if c not in frame.columns]
        if missing:
            raise SamplesError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
        if not context.options.reference_verdict:
            return frame
        rows = frame.to_dict("records")
        if rows:
            bad = BadLines(str(path))
            for number, row in enumerate(rows, start=1):
                add_reference(row, dict(row), context, bad, number)
            bad.raise_if_any()
        return rows
