"""lm-evaluation-harness `--log_samples` JSONL: one object per document, its samples inside.

Each line has `doc_id`, `doc` (the benchmark row: `task_id` for HumanEval-Rust, `name` for
MultiPL-E), `resps` (the raw generations, one list per request) and `filtered_resps` (after the
task's filters). The text judged is `filtered_resps`, else `resps`, flattened in order: the i-th
string is sample i. A doc without an id field is matched by `doc_id` to the benchmark's order.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from tasks.imports.base import BadLines, Context, Importer, Probe, add_reference, unicode_safe
from tasks.imports.jsonl import first_object, json_type, objects

ID_FIELDS = ("task_id", "name")
KEPT = ("doc_id", "filter")


def _texts(value) -> list | None:
    """The strings of a (nested) list, in order; None when anything else is inside."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list):
        return None
    out = []
    for item in value:
        inner = _texts(item)
        if inner is None:
            return None
        out.extend(inner)
    return out


class LmEvalSamples(Importer):
    name = "lm-eval"
    summary = "lm-evaluation-harness --log_samples JSONL: doc, resps / filtered_resps per document"

    def detect(self, probe: Probe) -> bool:
        obj = first_object(probe.head)
        return obj is not None and "doc" in obj and ("filtered_resps" in obj or "resps" in obj)

    def read(self, path: Path, context: Context) -> pd.DataFrame:
        bad = BadLines(str(path))
        wanted_text = context.options.fields.get("completion")
        wanted_id = context.options.fields.get("task_id")
        columns: dict[str, list] = {"task_id": [], "completion": [], "sample_index": [], **{key: [] for key in KEPT}}
        for number, obj, suspicious in objects(path):
            doc = obj.get("doc")
            task_id = self._task_id(obj, doc, wanted_id, context, bad, number)
            field = wanted_text or ("filtered_resps" if "filtered_resps" in obj else "resps")
            texts = _texts(obj.get(field))
            if texts is None:
                bad.add(number, None, f"field {field!r} must be a list of strings (the samples), found "
                                      f"{json_type(obj.get(field))}")
                continue
            if task_id is None:
                continue
            verdict: dict = {}
            if context.options.reference_verdict:
                add_reference(verdict, obj, context, bad, number)
            if suspicious:
                texts = [unicode_safe({"completion": text}) for text in texts]
                issues = [t.get("completion_issue") for t in texts]
                texts = [t["completion"] for t in texts]
                columns.setdefault("completion_issue", [None] * len(columns["task_id"]))
            for index, text in enumerate(texts):
                columns["task_id"].append(task_id)
                columns["completion"].append(text)
                columns["sample_index"].append(index)
                for key in KEPT:
                    columns[key].append(obj.get(key))
                for key in ("reference_verdict", "reference_passed"):
                    if verdict:
                        columns.setdefault(key, [None] * (len(columns["task_id"]) - 1)).append(verdict[key])
                    elif key in columns:
                        columns[key].append(None)
                if "completion_issue" in columns:
                    columns["completion_issue"].append(issues[index] if suspicious else None)
        bad.raise_if_any()
        return pd.DataFrame({key: values for key, values in columns.items() if any(v is not None for v in values)})

    @staticmethod
    def _task_id(obj: dict, doc, wanted: str | None, context: Context, bad: BadLines, number: int) -> str | None:
        if isinstance(doc, dict):
            for field in (wanted,) if wanted else ID_FIELDS:
                if isinstance(doc.get(field), str):
                    return doc[field]
        doc_id = obj.get("doc_id")
        order = context.task_order
        if wanted is None and isinstance(doc_id, int) and order is not None and 0 <= doc_id < len(order):
            return order[doc_id]
        shown = f"doc field {wanted!r}" if wanted else "a doc with 'task_id' or 'name', or a doc_id within the benchmark"
        bad.add(number, None, f"cannot tell the task: needs {shown}")
        return None
