"""MultiPL-E output: a directory of `<problem>.json[.gz]` files and their `.results.json[.gz]`.

A problem file is one JSON object: `name`, `prompt`, `tests`, … and `completions` (the samples,
each continuing the prompt, stopped before the function's closing `}`). MultiPL-E's evaluator
writes `<problem>.results.json[.gz]` beside it: the same fields without `completions`, plus
`results`, one `{program, status, exit_code, stdout, stderr}` per sample, where the program is
`prompt + completion + "\\n" + tests` and the status is "OK", "SyntaxError", "Exception",
"Timeout", … Its statuses become the reference verdicts (`reference_verdict`, passed = "OK").
A results file alone is enough: the completions are cut out of its programs.
"""

from __future__ import annotations

import json
from pathlib import Path

from tasks.imports.base import BadLines, Context, Importer, Probe, SamplesError, read_bytes, unicode_safe
from tasks.imports.jsonl import describe, first_object, json_type

RESULTS = ".results.json"
PASSED_STATUS = "OK"


def problem_name(path: Path) -> str:
    name = path.name.removesuffix(".gz").removesuffix(".json")
    return name.removesuffix(".results")


def input_files(path: Path) -> list[Path]:
    """The JSON files of a MultiPL-E directory (or the one file given)."""
    if not path.is_dir():
        return [path]
    return sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith((".json", ".json.gz")))


def _load(path: Path) -> dict:
    data = read_bytes(path)
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SamplesError(f"{path}: not valid UTF-8 (byte 0x{data[error.start]:02x} at offset {error.start})") from None
    except json.JSONDecodeError as error:
        raise SamplesError(f"{path}:{error.lineno}:{error.colno}: {describe(data.decode('utf-8'), error)}") from None
    if not isinstance(value, dict):
        raise SamplesError(f"{path}: a MultiPL-E file holds one JSON object, found {json_type(value)}")
    return value


class MultiplE(Importer):
    name = "multipl-e"
    summary = "MultiPL-E output: a directory (or one file) of <problem>.json[.gz] / .results.json[.gz]"

    def detect(self, probe: Probe) -> bool:
        if probe.is_dir:
            return any(p.name.endswith((".json", ".json.gz")) for p in probe.path.iterdir())
        obj = first_object(probe.head)
        if obj is not None:  # a one-line document
            return "name" in obj and ("completions" in obj or "results" in obj)
        start = probe.start.lstrip()  # MultiPL-E writes one pretty-printed object
        return start.startswith(b"{") and b'"name"' in start and (b'"completions"' in start or b'"results"' in start
                                                                   or b'"prompt"' in start)

    def read(self, path: Path, context: Context) -> list[dict]:
        files = input_files(path)
        if not files:
            raise SamplesError(f"{path}: no <problem>.json or .json.gz files in this directory")
        problems: dict[str, dict] = {}
        for file in files:
            slot = problems.setdefault(problem_name(file), {})
            slot["results" if RESULTS in file.name else "completions"] = file
        bad = BadLines(str(path))
        rows: list[dict] = []
        for name in sorted(problems):
            rows += self._problem(problems[name], bad)
        bad.raise_if_any()
        return rows

    def _problem(self, files: dict[str, Path], bad: BadLines) -> list[dict]:
        completions = results = None
        record: dict = {}
        if "completions" in files:
            record = _load(files["completions"])
            completions = record.get("completions")
            if not isinstance(completions, list):
                bad.add(None, None, f"{files['completions'].name}: needs 'completions', a list of strings; "
                                    f"has {sorted(record)}")
                return []
        if "results" in files:
            outcome = _load(files["results"])
            record = record or outcome
            results = outcome.get("results")
            if not isinstance(results, list):
                bad.add(None, None, f"{files['results'].name}: needs 'results', a list; has {sorted(outcome)}")
                return []
        where = (files.get("completions") or files["results"]).name
        task_id = record.get("name")
        if not isinstance(task_id, str) or not task_id:
            bad.add(None, None, f"{where}: needs 'name', the problem's name (the task id)")
            return []
        if completions is None:
            completions = [self._cut(record, r, where, i, bad) for i, r in enumerate(results or [])]
        if results is not None and len(results) != len(completions):
            bad.add(None, None, f"{files['results'].name}: {len(results)} results for {len(completions)} completions; "
                                "rerun MultiPL-E's evaluator to finish it, or drop the results file")
            return []
        rows = []
        for index, text in enumerate(completions):
            if not isinstance(text, str) and text is not None:
                bad.add(None, None, f"{where}: completion {index + 1} is {json_type(text)}, not a string")
                continue
            row = {"task_id": task_id, "completion": text, "sample_index": index}
            for key in ("temperature", "top_p", "max_tokens"):
                if isinstance(record.get(key), (int, float)):
                    row[key] = record[key]
            if results is not None:
                status = results[index].get("status") if isinstance(results[index], dict) else None
                if not isinstance(status, str):
                    bad.add(None, None, f"{files['results'].name}: result {index + 1} has no 'status'")
                    continue
                row["reference_verdict"], row["reference_passed"] = status, status == PASSED_STATUS
            rows.append(unicode_safe(row))
        return rows

    @staticmethod
    def _cut(record: dict, result, where: str, index: int, bad: BadLines) -> str | None:
        """The completion inside a result's program: `prompt + completion + "\\n" + tests`."""
        program = result.get("program") if isinstance(result, dict) else None
        prompt, tests = record.get("prompt"), record.get("tests")
        if isinstance(program, str) and isinstance(prompt, str) and isinstance(tests, str):
            if program.startswith(prompt) and program.endswith("\n" + tests):
                return program[len(prompt): len(program) - len(tests) - 1]
        bad.add(None, None, f"{where}: result {index + 1}'s program is not prompt + completion + tests, so its "
                            "completion cannot be recovered; give the <problem>.json[.gz] completions file too")
        return None
