"""evalplus samples: JSONL objects `{"task_id", "solution"}` (a whole program), or `completion`.

A `solution` is the full program evalplus would run (prompt included); a `completion` continues
the prompt. Both are judged on their merits by the completion normalizer, as every other form.
"""

from __future__ import annotations

from pathlib import Path

from tasks.imports.base import Context, Importer, Probe
from tasks.imports.humaneval import rows_from_objects
from tasks.imports.jsonl import first_object


class EvalplusJsonl(Importer):
    name = "evalplus"
    summary = "evalplus samples JSONL: task_id with solution (whole program) or completion"

    def detect(self, probe: Probe) -> bool:
        obj = first_object(probe.head)
        return obj is not None and "task_id" in obj and "solution" in obj

    def read(self, path: Path, context: Context) -> list[dict]:
        text = context.options.fields.get("completion")
        fields = (text,) if text else ("solution", "completion")
        return rows_from_objects(path, context, fields, "evalplus")
