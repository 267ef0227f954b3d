"""A small Rust tokenizer: enough to tell code from comments and string literals.

The policy scan and completion normalization must never be fooled by `"/*"` inside a string,
`// std::fs` in a comment, a lifetime that looks like a char, or a raw string full of braces.
This lexer never raises: unterminated constructs become a token with `unterminated=True`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

IDENT = "ident"
LIFETIME = "lifetime"
STRING = "string"  # "…", b"…", c"…", raw strings
CHAR = "char"  # 'a', b'a'
NUMBER = "number"
PUNCT = "punct"
COMMENT = "comment"

_MULTI_PUNCT = ("::", "->", "=>", "..=", "...", "..", "==", "!=", "<=", ">=", "&&", "||")
_IDENT_RE = re.compile(r"[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*")
_NUMBER_RE = re.compile(r"[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9_]*(?:[eE][+-]?[0-9_]+)?[A-Za-z0-9_]*)?")
_RAW_STRING_RE = re.compile(r'(?:br|cr|r)(#*)"')
_CHAR_RE = re.compile(r"b?'(?:\\(?:x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f_]{1,8}\}|.)|[^\\'\n])'", re.S)


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int  # offset into the source
    end: int
    unterminated: bool = False

    def is_punct(self, text: str) -> bool:
        return self.kind == PUNCT and self.text == text

    def is_ident(self, text: str | None = None) -> bool:
        return self.kind == IDENT and (text is None or self.text == text)


def tokenize(source: str, *, keep_comments: bool = False) -> list[Token]:
    """All tokens of `source` in order (comments only when `keep_comments`)."""
    return [t for t in iter_tokens(source) if keep_comments or t.kind != COMMENT]


# One master pattern for the common tokens; the rare nestable/raw constructs are finished by
# hand. Order matters: comments before `/`, raw strings and raw identifiers before identifiers,
# char literals before lifetimes.
_MASTER = re.compile(
    r"""(?P<ws>\s+)
    |(?P<line_comment>//[^\n]*)
    |(?P<block_comment>/\*)
    |(?P<raw_string>(?:br|cr|r)(?P<hashes>\#*)")
    |(?P<string>[bc]?"(?:[^"\\]|\\.)*")
    |(?P<open_string>[bc]?")
    |(?P<char>b?'(?:\\(?:x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f_]{1,8}\}|.)|[^\\'\n])')
    |(?P<lifetime>'[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<quote>b?')
    |(?P<raw_ident>r\#[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<ident>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<number>[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9_]*(?:[eE][+-]?[0-9_]+)?[A-Za-z0-9_]*)?)
    |(?P<punct>::|->|=>|\.\.=|\.\.\.|\.\.|==|!=|<=|>=|&&|\|\||.)""",
    re.S | re.X,
)


def iter_tokens(source: str) -> Iterator[Token]:
    i, n = 0, len(source)
    match_at = _MASTER.match
    while i < n:
        m = match_at(source, i)
        kind = m.lastgroup
        end = m.end()
        if kind == "ws":
            pass
        elif kind == "ident":
            yield Token(IDENT, m.group(), i, end)
        elif kind == "punct":
            yield Token(PUNCT, m.group(), i, end)
        elif kind == "number":
            yield Token(NUMBER, m.group(), i, end)
        elif kind == "line_comment":
            yield Token(COMMENT, m.group(), i, end)
        elif kind == "block_comment":
            end, ok = _block_comment_end(source, i)
            yield Token(COMMENT, source[i:end], i, end, unterminated=not ok)
        elif kind == "raw_string":
            closing = '"' + m.group("hashes")
            close = source.find(closing, end)
            ok = close >= 0
            end = close + len(closing) if ok else n
            yield Token(STRING, source[i:end], i, end, unterminated=not ok)
        elif kind == "string":
            yield Token(STRING, m.group(), i, end)
        elif kind == "open_string":
            yield Token(STRING, source[i:], i, n, unterminated=True)
            end = n
        elif kind == "char":
            yield Token(CHAR, m.group(), i, end)
        elif kind == "lifetime":
            yield Token(LIFETIME, m.group(), i, end)
        elif kind == "quote":
            # `b'` without a valid char literal: the `b` is an identifier, as in rustc's view.
            if m.group() == "b'":
                yield Token(IDENT, "b", i, i + 1)
                end = i + 1
            else:
                yield Token(PUNCT, "'", i, end, unterminated=True)
        else:  # raw_ident: r#fn is the identifier `fn`
            yield Token(IDENT, m.group()[2:], i, end)
        i = end


def _block_comment_end(source: str, start: int) -> tuple[int, bool]:
    """End offset of a (nestable) block comment starting at `start`."""
    depth, i, n = 0, start, len(source)
    while i < n:
        if source.startswith("/*", i):
            depth += 1
            i += 2
        elif source.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i, True
        else:
            i += 1
    return n, False


def _quoted_end(source: str, quote: int) -> tuple[int, bool]:
    """End offset of a `"…"` literal whose opening quote is at `quote`."""
    i, n = quote + 1, len(source)
    while i < n:
        ch = source[i]
        if ch == "\\":
            i += 2
        elif ch == '"':
            return i + 1, True
        else:
            i += 1
    return n, False


def brace_depth(source: str) -> int:
    """Net `{` minus `}` outside comments and literals (negative when over-closed)."""
    depth = 0
    for tok in iter_tokens(source):
        if tok.kind == PUNCT:
            depth += (tok.text == "{") - (tok.text == "}")
    return depth


def has_unterminated(source: str) -> bool:
    """True when a string, char or block comment never closes."""
    return any(t.unterminated for t in iter_tokens(source))


def matching_brace(tokens: list[Token], open_index: int) -> int | None:
    """Index of the token closing the `{`/`(`/`[` at `open_index`, or None if unclosed."""
    pairs = {"{": "}", "(": ")", "[": "]"}
    opener = tokens[open_index].text
    closer = pairs[opener]
    depth = 0
    for index in range(open_index, len(tokens)):
        tok = tokens[index]
        if tok.kind != PUNCT:
            continue
        if tok.text == opener:
            depth += 1
        elif tok.text == closer:
            depth -= 1
            if depth == 0:
                return index
    return None
