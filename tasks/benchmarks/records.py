"""Reading benchmark files into records that remember where they came from.

Every record carries its location (`file line 12`, `file row 3`) so that any later complaint
about a field can point at the exact line a person has to fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tasks.benchmarks.errors import BenchmarkError

JSON_SUFFIXES = (".jsonl", ".json")
PARQUET_SUFFIX = ".parquet"


@dataclass(frozen=True)
class Record:
    where: str  # e.g. "/data/x.jsonl line 12"
    fields: dict[str, Any]


def json_type_name(value: Any) -> str:
    """The JSON name of a Python value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def read_records(path: Path) -> list[Record]:
    """Records of a local .jsonl/.json/.parquet file (at least one, each a mapping)."""
    suffix = path.suffix.lower()
    if suffix == PARQUET_SUFFIX:
        return records_from_parquet(path)
    if suffix in JSON_SUFFIXES:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BenchmarkError(f"{path}: cannot read: {exc.strerror or exc}") from exc
        return records_from_json_bytes(data, str(path))
    raise BenchmarkError(f"{path}: unsupported file type {suffix!r}; expected .jsonl, .json or .parquet")


def records_from_json_bytes(data: bytes, origin: str) -> list[Record]:
    """JSON Lines (blank lines allowed), or a single JSON array of objects."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if data.lstrip().startswith(b"["):
        return _records_from_json_array(data, origin)
    records = []
    for line_number, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        where = f"{origin} line {line_number}"
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BenchmarkError(
                f"{where}: not valid UTF-8 (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
            ) from exc
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BenchmarkError(f"{where}: invalid JSON: {exc.msg} at column {exc.colno}") from exc
        records.append(_as_record(value, where))
    return _non_empty(records, origin)


def records_from_rows(rows: Iterable[dict[str, Any]], origin: str) -> list[Record]:
    """Records of already-parsed rows (a parquet table, a `datasets.Dataset`), numbered from 1."""
    records = [_as_record(row, f"{origin} row {number}") for number, row in enumerate(rows, start=1)]
    return _non_empty(records, origin)


def records_from_parquet(path: Path) -> list[Record]:
    import pyarrow.parquet as pq  # heavy; only parquet inputs need it

    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise BenchmarkError(f"{path}: not a readable parquet file: {exc}") from exc
    return records_from_rows(table.to_pylist(), str(path))


def _records_from_json_array(data: bytes, origin: str) -> list[Record]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise BenchmarkError(f"{origin} line {line}: not valid UTF-8 (byte 0x{data[exc.start]:02x})") from exc
    try:
        values = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{origin} line {exc.lineno}: invalid JSON: {exc.msg} at column {exc.colno}") from exc
    if not isinstance(values, list):
        raise BenchmarkError(f"{origin}: expected a JSON array of objects, found {json_type_name(values)}")
    records = [_as_record(value, f"{origin} item {number}") for number, value in enumerate(values, start=1)]
    return _non_empty(records, origin)


def _as_record(value: Any, where: str) -> Record:
    if not isinstance(value, dict):
        raise BenchmarkError(f"{where}: expected a JSON object, found {json_type_name(value)}")
    return Record(where, value)


def _non_empty(records: list[Record], origin: str) -> list[Record]:
    if not records:
        raise BenchmarkError(f"{origin}: empty file (no records)")
    return records
