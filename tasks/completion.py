"""Turn a model's answer into the Rust program that gets compiled.

Every answer form must be judged on its merits: a function body (HumanEval-Rust's canonical
form, or MultiPL-E's body that stops before the final `}`), a whole function with helpers,
either of those inside a markdown fence or after a line of prose, or an echo of the prompt.
The program is always `prefix + code + "\\n" + problem.test`; the benchmark's test text is never
altered or dropped, and code that would hide it inside a comment or string is refused.

All structure is read with `tasks.rust_lexer`, so braces, `fn main` or `mod tests` inside
strings and comments never mislead it.

Forms (`Normalized.form`), i.e. where the code goes:
- "continuation": the code continues the prompt's open signature (`prefix` is the prompt).
- "full_function": the code redefines the entry point; `prefix` is the prompt without its
  trailing signature, minus the `use` lines and items the answer repeats or redefines.
What was peeled off or repaired on the way is listed in `Normalized.adjustments`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from tasks.rust_lexer import COMMENT, IDENT, PUNCT, STRING, brace_depth, tokenize
from tasks.completion_items import _cut, _Item, _Scan, _scan_items, _use_names
from tasks.schema import Problem

MAX_COMPLETION_BYTES = 64_000

# Adjustment names, in the order they can happen.
MARKDOWN_FENCE = "markdown_fence"
UNCLOSED_FENCE = "unclosed_fence"
ECHOED_PROMPT = "echoed_prompt"
LEADING_PROSE = "leading_prose"
TRAILING_PROSE = "trailing_prose"
APPENDED_CLOSING_BRACE = "appended_closing_brace"
REMOVED_MAIN = "removed_main"
REMOVED_TESTS = "removed_tests"
REMOVED_INNER_ATTRIBUTES = "removed_inner_attributes"
DROPPED_PROMPT_ITEMS = "dropped_prompt_items"


class InvalidCompletion(ValueError):
    """The answer cannot become a program; the message is the reason (scored as a failure)."""


@dataclass(frozen=True)
class Normalized:
    form: str  # "continuation" | "full_function" (see the module docstring)
    code: str  # the model-written code as it sits in the program: what the policy scan sees
    program: str  # the whole source to compile
    adjustments: tuple[str, ...] = ()


def validate_raw(raw: str | bytes | None, max_bytes: int = MAX_COMPLETION_BYTES) -> str:
    """The answer as text, or InvalidCompletion for input no program should be built from."""
    if raw is None:
        raise InvalidCompletion("no completion (None)")
    if isinstance(raw, float) and raw != raw:  # a table's missing value
        raise InvalidCompletion("no completion (missing value)")
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytes(raw)
    elif not isinstance(raw, str):
        raise InvalidCompletion(f"completion is a {type(raw).__name__}, not text")
    else:
        try:
            data = raw.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidCompletion("completion is not valid UTF-8 (lone surrogate)") from None
    if len(data) > max_bytes:
        raise InvalidCompletion(f"completion is {len(data)} bytes, over the {max_bytes}-byte limit")
    if b"\x00" in data:
        raise InvalidCompletion("completion contains a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidCompletion("completion is not valid UTF-8") from None
    if not text.strip():
        raise InvalidCompletion("completion is empty")
    return text


def normalize(problem: Problem, raw: str | bytes | None) -> Normalized:
    """Read the answer's form and assemble its program; raises InvalidCompletion."""
    text = validate_raw(raw).replace("\r\n", "\n").replace("\r", "\n").removeprefix("\ufeff")
    shape = _prompt_shape(problem.prompt, problem.entry_point)
    adjustments: list[str] = []
    blocks = _fenced_blocks(text)
    if blocks:
        block = _choose_block(blocks, shape.target)
        text = block.text
        adjustments.append(MARKDOWN_FENCE if block.closed else UNCLOSED_FENCE)
        if not text.strip():
            raise InvalidCompletion("the chosen markdown code block is empty")
    form, prefix = "continuation", problem.prompt
    echo_rest = _after_echoed_prompt(text, problem.prompt)
    if echo_rest is not None:
        adjustments.append(ECHOED_PROMPT)
        code = _continuation(echo_rest, shape.depth, adjustments)
    else:
        text = _strip_leading_prose(text, adjustments)
        if not text.strip():
            raise InvalidCompletion("no Rust code in the answer, only prose")
        full = _full_function(text, shape, adjustments)
        if full is not None:
            form, code = "full_function", full
            prefix = _full_function_prefix(shape, code, adjustments)
        else:
            code = _continuation(text, shape.depth, adjustments)
    _refuse_unterminated(code)
    return Normalized(form, code, prefix + code + "\n" + problem.test, tuple(adjustments))


# --- top-level items -------------------------------------------------------------------------


def _harness_reason(item: _Item) -> str | None:
    """Why an answer's item must go: the benchmark supplies `main` and `mod tests`, and
    `#![…]` is an error anywhere but the top of the crate."""
    if item.kind == "inner_attribute":
        return REMOVED_INNER_ATTRIBUTES
    if item.kind == "fn" and item.name == "main":
        return REMOVED_MAIN
    if item.kind == "mod" and item.name == "tests" or any(
        a in ("test", "cfg(test)") or a.endswith("::test") for a in item.attributes
    ):
        return REMOVED_TESTS
    return None


def _drop_harness_items(source: str, scan: _Scan, adjustments: list[str]) -> str:
    """`source` without the answer's own `main`, tests and crate attributes (an unclosed
    trailing `main`, cut off by the token limit, goes too)."""
    spans = []
    items = scan.items + ((scan.open,) if scan.open else ())
    for item in items:
        reason = _harness_reason(item)
        if reason:
            spans.append((item.start, item.end))
            if reason not in adjustments:
                adjustments.append(reason)
    return _cut(source, spans)


# --- the prompt ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _PromptShape:
    target: str  # the function the answer must define
    depth: int  # braces the prompt leaves open (1: its signature)
    before_signature: str | None  # the prompt up to its signature; None when not found
    items: tuple[_Item, ...]  # top-level items of `before_signature`


@lru_cache(maxsize=4096)
def _prompt_shape(prompt: str, entry_point: str) -> _PromptShape:
    scan = _scan_items(prompt)
    depth = brace_depth(prompt)
    if scan.open is not None and scan.open.kind == "fn" and depth == 1:
        before = prompt[: scan.open.start]
        return _PromptShape(scan.open.name or entry_point, depth, before, scan.items)
    if depth == 0 and scan.stop is None:  # no signature: a full function just follows it
        return _PromptShape(entry_point, depth, prompt, scan.items)
    return _PromptShape(entry_point, depth, None, ())


def _full_function_prefix(shape: _PromptShape, code: str, adjustments: list[str]) -> str:
    """The prompt before its signature, minus what the answer repeats or redefines
    (a second `use` of a name or a second `struct` of the same name fails to compile)."""
    answer = _scan_items(code).items
    keys = {item.key for item in answer}
    impl_headers = {item.header for item in answer if item.kind == "impl"}
    defined = {item.name for item in answer if item.name and item.kind != "use"}
    for item in answer:
        if item.kind == "use":
            defined |= _use_names(item)
    drop = []
    for item in shape.items:
        if item.kind == "inner_attribute":
            continue
        names = _use_names(item) if item.kind == "use" else {item.name} - {None}
        same_impl = item.kind == "impl" and item.header in impl_headers
        if item.key in keys or names & defined or same_impl:
            drop.append((item.start, item.end))
    if drop:
        adjustments.append(DROPPED_PROMPT_ITEMS)
    prefix = _cut(shape.before_signature or "", drop)
    return prefix if not prefix or prefix.endswith("\n") else prefix + "\n"


# --- answer forms ----------------------------------------------------------------------------


def _defines(scan: _Scan, target: str) -> bool:
    candidates = scan.items + ((scan.open,) if scan.open else ())
    return any(item.kind == "fn" and item.name == target for item in candidates)


def _full_function(text: str, shape: _PromptShape, adjustments: list[str]) -> str | None:
    """The answer as top-level items, when it defines the entry point itself; else None."""
    if shape.before_signature is None or brace_depth(text) not in (0, 1):
        return None
    scan = _scan_items(text)
    if not _defines(scan, shape.target):
        return None
    if scan.open is not None and brace_depth(text) == 1:  # stopped before its final `}`
        text = text + ("" if text.endswith("\n") else "\n") + "}"
        adjustments.append(APPENDED_CLOSING_BRACE)
        scan = _scan_items(text)
    if scan.stop is not None and _is_prose_at(text, scan.stop):
        text = text[: scan.stop]
        adjustments.append(TRAILING_PROSE)
    return _drop_harness_items(text, scan, adjustments)


def _continuation(text: str, prompt_depth: int, adjustments: list[str]) -> str:
    """A body closing the prompt's signature, plus whatever items the answer put after it."""
    depth = 0
    for tok in tokenize(text):
        if tok.kind == PUNCT and tok.text in "{}":
            depth += 1 if tok.text == "{" else -1
            if prompt_depth > 0 and depth == -prompt_depth:
                rest = text[tok.end :]
                scan = _scan_items(rest)
                if scan.stop is not None and _is_prose_at(rest, scan.stop):
                    rest = rest[: scan.stop]
                    adjustments.append(TRAILING_PROSE)
                return text[: tok.end] + _drop_harness_items(rest, scan, adjustments)
    if prompt_depth > 0 and depth == 1 - prompt_depth:  # MultiPL-E style: stopped before `}`
        adjustments.append(APPENDED_CLOSING_BRACE)
        return text + ("" if text.endswith("\n") else "\n") + "}"
    return text


def _after_echoed_prompt(text: str, prompt: str) -> str | None:
    """What follows a verbatim (modulo whitespace) copy of the whole prompt, if it starts so."""
    expected = tokenize(prompt, keep_comments=True)
    got = tokenize(text, keep_comments=True)
    if not expected or len(got) < len(expected):
        return None
    for want, have in zip(expected, got):
        if want.kind != have.kind or want.text.rstrip() != have.text.rstrip():
            return None
    return text[got[len(expected) - 1].end :]


def _refuse_unterminated(code: str) -> None:
    """The benchmark's tests follow the code: an open comment or string would hide them."""
    for tok in tokenize(code, keep_comments=True):
        if tok.unterminated and tok.kind in (COMMENT, STRING):
            raise InvalidCompletion("unterminated comment/string literal in the completion")


# --- prose and markdown ----------------------------------------------------------------------

_RUST_WORDS = frozenset(
    "as async await break const continue crate dyn else enum extern false fn for if impl in let "
    "loop match mod move mut pub ref return self Self static struct super trait true type unsafe "
    "use where while union default auto macro_rules raw safe yield try gen box do final abstract "
    "become macro override priv typeof unsized virtual".split()
)
_PROSE_SHAPE = re.compile(r"[#*>\-\s]*[A-Za-z][A-Za-z0-9 ,'’`*\-]*[:.!]\**")
_HEADING = re.compile(r"#{1,6} [A-Za-z]")


def _is_prose_line(line: str) -> bool:
    """English, not Rust: Rust never puts two plain words side by side ("Here is", "the code")."""
    stripped = line.strip()
    if not stripped:
        return False
    if _PROSE_SHAPE.fullmatch(stripped) or _HEADING.match(stripped):
        return True
    toks = tokenize(stripped)
    for a, b in zip(toks, toks[1:]):
        words = a.kind == IDENT == b.kind and not {a.text, b.text} & _RUST_WORDS
        if words and not stripped[a.end : b.start].strip():
            return True
    return False


def _is_prose_at(text: str, offset: int) -> bool:
    line_start = text.rfind("\n", 0, offset) + 1
    line_end = text.find("\n", offset)
    return _is_prose_line(text[line_start : len(text) if line_end < 0 else line_end])


def _strip_leading_prose(text: str, adjustments: list[str]) -> str:
    lines = text.split("\n")
    k = 0
    while k < len(lines) and (not lines[k].strip() or _is_prose_line(lines[k])):
        k += 1
    if any(_is_prose_line(line) for line in lines[:k]):
        adjustments.append(LEADING_PROSE)
        return "\n".join(lines[k:])
    return text


_FENCE = re.compile(r"[ \t]{0,3}(`{3,}|~{3,})[ \t]*([^\n]*?)[ \t]*")


@dataclass(frozen=True)
class _Block:
    text: str
    info: str  # the fence's language tag, lower-cased ("rust", "rs", "")
    closed: bool


def _fenced_blocks(text: str) -> list[_Block]:
    """Markdown code blocks (CommonMark fences); an unclosed last fence runs to the end. A bare
    fence after code (no prose) closes a block the answer began inside of."""
    lines = text.split("\n")
    fences = [k for k, line in enumerate(lines) if _FENCE.fullmatch(line)]
    if not fences:
        return []
    blocks, opener, k = [], None, 0
    preamble = "\n".join(lines[: fences[0]])
    if not _FENCE.fullmatch(lines[fences[0]]).group(2) and _looks_like_code(preamble):
        blocks.append(_Block(preamble, "", True))
        k = fences[0] + 1
    for k in range(k, len(lines)):
        match = _FENCE.fullmatch(lines[k])
        if match is None:
            continue
        if opener is None:
            opener = (k, match.group(1), match.group(2).lower())
        elif match.group(1).startswith(opener[1]) and not match.group(2):  # same char, as long
            blocks.append(_Block("\n".join(lines[opener[0] + 1 : k]), opener[2], True))
            opener = None
    if opener is not None:
        blocks.append(_Block("\n".join(lines[opener[0] + 1 :]), opener[2], False))
    return blocks


def _looks_like_code(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    if not lines or any(_is_prose_line(line) for line in lines):
        return False
    return any(t.kind == PUNCT and t.text in "{};" for t in tokenize(text))


def _choose_block(blocks: list[_Block], target: str) -> _Block:
    """The Rust block that defines the entry point, else the largest Rust block."""
    rust = [b for b in blocks if b.info in ("", "rs") or b.info.startswith("rust")] or blocks
    for block in rust:
        if _defines(_scan_items(block.text), target):
            return block
    return max(rust, key=lambda b: len(b.text.strip()))
