"""The two row formats we accept, normalized into `Problem`s.

After normalization the program for any task is `prompt + completion + test`, where the
completion is the function body including its closing `}` (what a canonical solution is):

- HumanEval-Rust rows (`task_id`, `prompt`, `test`, …) are assembled upstream as
  `prompt + canonical_solution + "\\n" + test`, so the normalized `test` is `"\\n" + test`.
- MultiPL-E rows (`name`, `prompt`, `tests`, …) put the function's closing `}` at the start of
  `tests`; we remove it, so the completion owns its `}` exactly as in HumanEval-Rust.
"""

from __future__ import annotations

from typing import Any

from tasks.benchmarks.errors import BenchmarkError
from tasks.benchmarks.records import Record, json_type_name
from tasks.benchmarks.rust_checks import last_fn_name, libtest_structure, main_structure
from tasks.schema import Problem, Protocol

LIBTEST_FIELDS = ("task_id", "prompt", "test")
MULTIPL_E_FIELDS = ("name", "prompt", "tests")
MULTIPL_E_SOURCE = "multipl-e"
_FIELDS_OF = {Protocol.LIBTEST: LIBTEST_FIELDS, Protocol.MAIN: MULTIPL_E_FIELDS}
_FORMAT_NAME = {Protocol.LIBTEST: "HumanEval-Rust", Protocol.MAIN: "MultiPL-E"}


def detect_protocol(record: Record) -> Protocol:
    """Which row format a record is in, from its field names."""
    keys = set(record.fields)
    for protocol in (Protocol.LIBTEST, Protocol.MAIN):
        if keys.issuperset(_FIELDS_OF[protocol]):
            return protocol
    raise BenchmarkError(
        f"{record.where}: cannot tell the row format from its fields {sorted(keys)}; expected "
        f"{', '.join(LIBTEST_FIELDS)} (HumanEval-Rust, #[test] functions) or "
        f"{', '.join(MULTIPL_E_FIELDS)} (MultiPL-E, fn main)"
    )


def problems_from_records(
    records: list[Record], edition: str, protocol: Protocol | None = None
) -> tuple[Problem, ...]:
    """Normalize every record (in file order), rejecting duplicate task ids.

    The format is detected from the first record unless `protocol` forces it; a later record
    in the other format then fails on its first missing field.
    """
    protocol = protocol or detect_protocol(records[0])
    build = libtest_problem if protocol is Protocol.LIBTEST else multipl_e_problem
    first_seen: dict[str, str] = {}
    problems = []
    for record in records:
        problem = build(record, edition)
        if problem.task_id in first_seen:
            raise BenchmarkError(
                f"{record.where}: duplicate task id {problem.task_id!r} (first at {first_seen[problem.task_id]})"
            )
        first_seen[problem.task_id] = record.where
        problems.append(problem)
    return tuple(problems)


def libtest_problem(record: Record, edition: str) -> Problem:
    """A HumanEval-Rust row. Extra fields (subcategory, quality flags, its own edition) are dropped."""
    task_id = _text(record, "task_id", Protocol.LIBTEST, allow_empty=False)
    where = f"{record.where} (task {task_id})"
    prompt = _text(record, "prompt", Protocol.LIBTEST, where, allow_empty=False)
    test = _text(record, "test", Protocol.LIBTEST, where)
    entry_point = _optional_text(record, "entry_point", where) or _entry_point(prompt, where)
    expected_tests, structural_problem = libtest_structure(prompt, test)
    return Problem(
        task_id=task_id,
        prompt=prompt,
        test="\n" + test,
        entry_point=entry_point,
        protocol=Protocol.LIBTEST,
        edition=edition,
        canonical_solution=_optional_text(record, "canonical_solution", where),
        category=_optional_text(record, "category", where) or "",
        expected_tests=expected_tests,
        source=_optional_text(record, "source", where) or "",
        structural_problem=structural_problem,
    )


def multipl_e_problem(record: Record, edition: str) -> Problem:
    """A MultiPL-E row: `name` becomes the task id, the leading `}` of `tests` is removed."""
    task_id = _text(record, "name", Protocol.MAIN, allow_empty=False)
    where = f"{record.where} (task {task_id})"
    prompt = _text(record, "prompt", Protocol.MAIN, where, allow_empty=False)
    tests = _text(record, "tests", Protocol.MAIN, where)
    language = _optional_text(record, "language", where)
    if language not in (None, "rs"):
        raise BenchmarkError(f"{where}: field 'language' is {language!r}; only Rust ('rs') rows can be loaded")
    stripped = tests.lstrip()
    if not stripped.startswith("}"):
        raise BenchmarkError(
            f"{where}: field 'tests' must start with the `}}` that closes the prompt's function "
            f"(MultiPL-E format), found {tests[:30]!r}"
        )
    test = stripped[1:]
    return Problem(
        task_id=task_id,
        prompt=prompt,
        test=test,
        entry_point=_entry_point(prompt, where),
        protocol=Protocol.MAIN,
        edition=edition,
        source=MULTIPL_E_SOURCE,
        structural_problem=main_structure(prompt, test),
    )


def _entry_point(prompt: str, where: str) -> str:
    name = last_fn_name(prompt)
    if name is None:
        raise BenchmarkError(f"{where}: no `fn NAME` signature found in field 'prompt'")
    return name


def _text(
    record: Record, field: str, protocol: Protocol, where: str | None = None, *, allow_empty: bool = True
) -> str:
    where = where or record.where
    if field not in record.fields:
        raise BenchmarkError(
            f"{where}: missing required field {field!r} ({_FORMAT_NAME[protocol]} rows need "
            f"{', '.join(_FIELDS_OF[protocol])}; found {', '.join(sorted(record.fields)) or 'no fields'})"
        )
    value = record.fields[field]
    _require_string(value, field, where)
    if not allow_empty and not value.strip():
        raise BenchmarkError(f"{where}: field {field!r} is empty")
    return value


def _optional_text(record: Record, field: str, where: str) -> str | None:
    value = record.fields.get(field)
    if value is not None:
        _require_string(value, field, where)
    return value


def _require_string(value: Any, field: str, where: str) -> None:
    if not isinstance(value, str):
        raise BenchmarkError(f"{where}: field {field!r} must be a string, found {json_type_name(value)}")

