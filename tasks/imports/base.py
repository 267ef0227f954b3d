"""What every importer shares: the options, the probe of the input, the error list, the rows.

An importer turns one harness's output into sample rows — `task_id`, `completion`, and where the
file has them `sample_index`, the harness's own verdict (`reference_verdict` as it wrote it,
`reference_passed`) and any other scalar fields. Rows are checked afterwards by `tasks.samples`
(unknown tasks, unequal counts, duplicates), the same for every format.
"""

from __future__ import annotations

import gzip
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GZIP_MAGIC = b"\x1f\x8b"
PARQUET_MAGIC = b"PAR1"
MAX_LISTED = 20  # bad lines reported at once
FIELD_ROLES = ("completion", "task_id")  # what `--field ROLE=NAME` can map


class SamplesError(ValueError):
    """The samples input cannot be evaluated as given; the message says where and why."""


@dataclass(frozen=True)
class ImportOptions:
    """How to read the input: a forced format, renamed fields, a field holding the harness's verdict."""

    format: str | None = None
    fields: dict[str, str] = field(default_factory=dict)  # role ("completion", "task_id") -> field name
    reference_verdict: str | None = None

    def field_name(self, role: str) -> str:
        return self.fields.get(role, role)


@dataclass(frozen=True)
class Context:
    """What an importer may need besides the input: the benchmark's task ids in its own order."""

    options: ImportOptions = field(default_factory=ImportOptions)
    task_order: tuple[str, ...] | None = None  # None: the benchmark is not known (format detection only)


@dataclass(frozen=True)
class Probe:
    """The start of the input, decompressed, for detection."""

    path: Path
    is_dir: bool
    gzipped: bool
    head: bytes  # the first non-blank line, decompressed ("" for a directory)
    start: bytes = b""  # the first 64 KiB, decompressed (a pretty-printed JSON document spans lines)

    @property
    def first_char(self) -> bytes:
        text = self.head.lstrip(b"\xef\xbb\xbf \t\r\n")
        return text[:1]


class BadLines:
    """Problems found line by line: all of them counted, the first MAX_LISTED kept, raised together."""

    def __init__(self, origin: str):
        self.origin = origin
        self.count = 0
        self.listed: list[str] = []

    def add(self, line: int | None, column: int | None, message: str) -> None:
        self.count += 1
        if len(self.listed) < MAX_LISTED:
            where = "".join(f":{n}" for n in (line, column) if n is not None)
            self.listed.append(f"{self.origin}{where}: {message}")

    def raise_if_any(self) -> None:
        if not self.count:
            return
        if self.count == 1:
            raise SamplesError(self.listed[0])
        shown = "the first 20 follow" if self.count > MAX_LISTED else "all follow"
        raise SamplesError(
            f"{self.origin}: {self.count} bad lines ({shown}); nothing was evaluated\n  " + "\n  ".join(self.listed)
        )


def read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when they start with gzip's magic (whatever the file is called)."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise SamplesError(f"{path}: cannot read: {error.strerror or error}") from None
    if data.startswith(GZIP_MAGIC):
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as error:
            raise SamplesError(f"{path}: starts like gzip-compressed data but does not decompress ({error}); "
                               "is the file truncated?") from None
    return data


def probe(path: Path, limit: int = 1 << 24) -> Probe:
    """The input's first line (at most `limit` bytes), decompressed."""
    if path.is_dir():
        return Probe(path, True, False, b"")
    try:
        with open(path, "rb") as handle:
            gzipped = handle.read(2) == GZIP_MAGIC
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
            start = handle.read(65536)
        with (gzip.open(path, "rb") if gzipped else open(path, "rb")) as handle:
            head = handle.readline(limit)
            while not head.strip() and head:  # blank lines before the first record
                head = handle.readline(limit)
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise SamplesError(f"{path}: starts like gzip-compressed data but does not decompress ({error})") from None
    except OSError as error:
        raise SamplesError(f"{path}: cannot read: {error.strerror or error}") from None
    return Probe(path, False, gzipped, head, start)


PASSING_WORDS = frozenset({"passed", "pass", "ok", "success", "succeeded", "true", "correct", "1"})


def verdict_of(value: Any) -> tuple[str, bool] | None:
    """(their status as text, whether it is a pass) of a boolean, 0/1 or status word; None if not one."""
    if isinstance(value, bool):
        return ("true" if value else "false"), value
    if isinstance(value, (int, float)) and value in (0, 1):
        return str(int(value)), value == 1
    if isinstance(value, str) and value.strip():
        return value, value.strip().lower() in PASSING_WORDS
    return None


class Importer(ABC):
    """One harness's output format."""

    name: str  # what `--format` takes
    summary: str  # one line for --help and errors

    @abstractmethod
    def detect(self, probe: Probe) -> bool:
        """Whether the input looks like this format (cheap: the probe only)."""

    @abstractmethod
    def read(self, path: Path, context: Context) -> list[dict]:
        """Sample rows (see the module docstring); raises SamplesError naming the place and the fix."""

    def needs_task_order(self) -> bool:
        """Whether rows can only be matched to tasks by the benchmark's order (bigcode)."""
        return False


def unicode_safe(row: dict) -> dict:
    """JSON may escape lone surrogates (`"\\ud800"`) that no UTF-8 table can hold.

    Such a completion is a bad sample, not a bad file: it is kept as a row with no completion
    and the reason in `completion_issue`, and scored `invalid_completion`. Other fields get
    U+FFFD in place of the unencodable characters.
    """
    clean = {}
    for key, value in row.items():
        if isinstance(value, str) and not _utf8_encodable(value):
            if key == "completion":
                clean["completion_issue"] = "completion is not valid Unicode (lone surrogate escape)"
                value = None
            else:
                value = value.encode("utf-8", "replace").decode("utf-8")
        clean[key] = value
    return clean


def _utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def add_reference(row: dict, source: dict, context: Context, bad: BadLines, line: int | None) -> None:
    """`--reference-verdict FIELD`: the other harness's verdict of this sample, from `source[FIELD]`."""
    name = context.options.reference_verdict
    if name is None:
        return
    if name not in source:
        bad.add(line, None, f"no field {name!r} (--reference-verdict); has {sorted(source)}")
        return
    verdict = verdict_of(source[name])
    if verdict is None:
        bad.add(line, None, f"field {name!r} (--reference-verdict) must be a boolean, 0/1 or a status word, "
                            f"found {source[name]!r}")
        return
    row["reference_verdict"], row["reference_passed"] = verdict
