"""A small Rust tokenizer: enough to tell code from comments and string literals.

The policy scan and completion normalization must never be fooled by `"/*"` inside a string,
`// std::fs` in a comment, a lifetime that looks like a char, or a raw string full of braces.
This lexer never raises: unterminated constructs become a token with `unterminated=True`.
"""

from __future__ import annotations

import re
import threading
from collections import OrderedDict
from typing import Iterator, NamedTuple

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


class Token(NamedTuple):
    """One token: immutable. A named tuple rather than a frozen dataclass because the lexer makes
    one per word and symbol of every completion and a tuple is ~6x cheaper to build (fields,
    equality between tokens, hash and repr are the same)."""

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
    """All tokens of `source` in order (comments only when `keep_comments`); a fresh list."""
    every, code = _lexed(source)
    return list(every if keep_comments else code)


# One completion's text is read by normalization (several times) and the policy scan right after
# one another: each distinct text is lexed once. A small LRU, bounded by entries and by characters
# (an answer can be 64 kB); tokens are immutable, so sharing them is safe.
_LEXED_ENTRIES = 256
_LEXED_CHARS = 1 << 18  # ~140k used by 256 typical texts; caps the worst case at tens of MB
_lexed_texts: OrderedDict[str, tuple] = OrderedDict()  # text -> (all tokens, tokens without comments)
_lexed_chars = 0
_lexed_lock = threading.Lock()  # the batch threads tokenize too


def _lexed(source: str) -> tuple[tuple[Token, ...], tuple[Token, ...]]:
    global _lexed_chars
    with _lexed_lock:
        entry = _lexed_texts.get(source)
        if entry is not None:
            _lexed_texts.move_to_end(source)
            return entry
    every = tuple(iter_tokens(source))
    entry = (every, tuple([t for t in every if t.kind != COMMENT]))
    if len(source) <= _LEXED_CHARS:
        with _lexed_lock:
            if source not in _lexed_texts:
                _lexed_texts[source] = entry
                _lexed_chars += len(source)
                while len(_lexed_texts) > _LEXED_ENTRIES or _lexed_chars > _LEXED_CHARS:
                    _lexed_chars -= len(_lexed_texts.popitem(last=False)[0])
    return entry


# One master pattern for the common tokens; the rare nestable/raw constructs are finished by
# hand. Leading whitespace is skipped possessively (`\s*+`: never given back, so a space is never
# a token). Order matters: comments before `/`, raw strings and raw identifiers before
# identifiers, char literals before lifetimes; a `b'` that starts no char literal is left to the
# identifier branch (the `b` is an identifier, as in rustc's view) and its `'` to `quote`.
# `word` and `symbol` come first only for speed: they match nothing a later branch could claim
# (no `b`/`c`/`r`, which may open a literal; no character that starts a longer token).
_MASTER = re.compile(
    r"""\s*+(?:
    (?P<word>[A-Zad-qs-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<symbol>[(){}\[\];,?@$~^%+*\#])
    |(?P<line_comment>//[^\n]*)
    |(?P<block_comment>/\*)
    |(?P<raw_string>(?:br|cr|r)(?P<hashes>\#*)")
    |(?P<string>[bc]?"(?:[^"\\]|\\.)*")
    |(?P<open_string>[bc]?")
    |(?P<char>b?'(?:\\(?:x[0-9A-Fa-f]{2}|u\{[0-9A-Fa-f_]{1,8}\}|.)|[^\\'\n])')
    |(?P<lifetime>'[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<quote>')
    |(?P<raw_ident>r\#[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<ident>[A-Za-z_\u0080-\U0010ffff][A-Za-z0-9_\u0080-\U0010ffff]*)
    |(?P<number>[0-9][0-9A-Za-z_]*(?:\.[0-9][0-9_]*(?:[eE][+-]?[0-9_]+)?[A-Za-z0-9_]*)?)
    |(?P<punct>::|->|=>|\.\.=|\.\.\.|\.\.|==|!=|<=|>=|&&|\|\||.))""",
    re.S | re.X,
)
# Branches whose match is the whole token, as it is.
_SIMPLE_KINDS = {"word": IDENT, "symbol": PUNCT, "ident": IDENT, "punct": PUNCT, "number": NUMBER,
                 "line_comment": COMMENT, "string": STRING, "char": CHAR, "lifetime": LIFETIME}


def iter_tokens(source: str) -> Iterator[Token]:
    """Tokens of `source`, comments included (uncached: prefer `tokenize`)."""
    n = len(source)
    match_at = _MASTER.match
    simple = _SIMPLE_KINDS.get
    new = tuple.__new__  # Token(...) without the Python-level __new__: the hot path
    i = 0
    while True:
        m = match_at(source, i)
        if m is None:  # only whitespace left
            return
        kind = m.lastgroup
        i, end = m.span(kind)
        token_kind = simple(kind)
        if token_kind is not None:
            yield new(Token, (token_kind, source[i:end], i, end, False))
        elif kind == "block_comment":
            end, ok = _block_comment_end(source, i)
            yield Token(COMMENT, source[i:end], i, end, unterminated=not ok)
        elif kind == "raw_string":
            closing = '"' + m.group("hashes")
            close = source.find(closing, end)
            ok = close >= 0
            end = close + len(closing) if ok else n
            yield Token(STRING, source[i:end], i, end, unterminated=not ok)
        elif kind == "open_string":
            yield Token(STRING, source[i:], i, n, unterminated=True)
            end = n
        elif kind == "quote":
            yield Token(PUNCT, "'", i, end, unterminated=True)
        else:  # raw_ident: r#fn is the identifier `fn`
            yield Token(IDENT, source[i + 2 : end], i, end)
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
    for tok in _lexed(source)[0]:
        if tok.kind == PUNCT:
            depth += (tok.text == "{") - (tok.text == "}")
    return depth


def has_unterminated(source: str) -> bool:
    """True when a string, char or block comment never closes."""
    return any(t.unterminated for t in _lexed(source)[0])


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
