"""Top-level item scanner of `tasks.completion` (Rust source split into items with `tasks.rust_lexer`); split out to keep modules small."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.rust_lexer import COMMENT, IDENT, PUNCT, STRING, Token, matching_brace, tokenize


# --- top-level items -------------------------------------------------------------------------

_BODY_KEYWORDS = frozenset({"fn", "struct", "enum", "union", "trait", "impl", "mod"})
_SEMICOLON_KEYWORDS = frozenset({"use", "const", "static", "type"})
_QUALIFIERS = frozenset({"default", "async", "unsafe", "safe", "auto"})
_CONST_QUALIFIED = frozenset({"fn", "unsafe", "async", "extern"})  # `const fn`, not `const X`


@dataclass(frozen=True)
class _Item:
    start: int  # first doc comment / attribute / keyword
    end: int
    kind: str  # a keyword above, "extern", "macro", or "inner_attribute"
    name: str | None
    attributes: tuple[str, ...]  # outer attributes without whitespace: "test", "cfg(test)"
    key: str  # tokens without comments: equal keys are the same item
    header: str  # tokens before the body, to match `impl` blocks
    tokens: tuple[Token, ...]


@dataclass(frozen=True)
class _Scan:
    items: tuple[_Item, ...]  # complete items, in order
    stop: int | None  # offset of the first thing that is not an item (None: read to the end)
    open: _Item | None  # an item at `stop` whose brace never closes (a prompt's signature)


def _is_doc(tok: Token, inner: bool) -> bool:
    marks = ("//!", "/*!") if inner else ("///", "/**")
    return tok.kind == COMMENT and tok.text.startswith(marks) and not tok.text.startswith(
        ("////", "/***", "/**/"))


def _scan_items(source: str) -> _Scan:
    """Split `source` into top-level items, stopping at the first thing that is not one."""
    toks = tokenize(source, keep_comments=True)
    items: list[_Item] = []
    i, n = 0, len(toks)
    while i < n:
        if toks[i].kind == COMMENT and not _is_doc(toks[i], inner=False):  # not part of an item
            if _is_doc(toks[i], inner=True):
                items.append(_make_item(toks, i, i + 1, "inner_attribute", None, []))
            i += 1
            continue
        first, attributes, inner = i, [], False
        while i < n and not inner and (toks[i].kind == COMMENT or toks[i].is_punct("#")):
            if toks[i].kind == COMMENT:  # doc comments and comments between attributes
                i += 1
                continue
            inner = i + 1 < n and toks[i + 1].is_punct("!")
            bracket = i + 1 + inner
            close = matching_brace(toks, bracket) if _is_punct_at(toks, bracket, "[") else None
            if close is None:
                return _Scan(tuple(items), toks[first].start, None)
            body = toks[bracket + 1 : close]
            attributes.append("".join(t.text for t in body if t.kind != COMMENT))
            i = close + 1
        parsed = ((i, "inner_attribute", None) if inner
                  else _parse_item(toks, i) if i < n else None)
        if parsed is None:
            return _Scan(tuple(items), toks[first].start, None)
        end, kind, name = parsed
        if end is None:
            return _Scan(tuple(items), toks[first].start,
                         _make_item(toks, first, n, kind, name, attributes))
        items.append(_make_item(toks, first, end, kind, name, attributes))
        i = end
    return _Scan(tuple(items), None, None)


def _parse_item(toks: list[Token], i: int) -> tuple[int | None, str, str | None] | None:
    """(end token index or None if unclosed, kind, name) of the item whose keywords start at i."""
    n = len(toks)
    if toks[i].is_ident("pub"):
        i += 1
        if i < n and toks[i].is_punct("("):
            close = matching_brace(toks, i)
            if close is None:
                return None
            i = close + 1
    while i < n and toks[i].kind == IDENT:
        word, after = toks[i].text, toks[i + 1] if i + 1 < n else None
        if word in _QUALIFIERS and after is not None and after.kind == IDENT:
            i += 1
        elif word == "const" and after is not None and after.text in _CONST_QUALIFIED:
            i += 1
        elif word == "extern":
            j = i + 1 + (after is not None and after.kind == STRING)
            if j < n and toks[j].is_ident("crate"):
                return _item_end(toks, j, braced=False), "use", _name_after(toks, j)
            if j < n and toks[j].is_punct("{"):
                return _item_end(toks, j, braced=True), "extern", None
            i = j
        else:
            break
    if i >= n:
        return None
    word = toks[i].text if toks[i].kind == IDENT else ""
    if word in _BODY_KEYWORDS and not (word == "union" and not _is_ident_at(toks, i + 1)):
        name = None if word == "impl" else _name_after(toks, i)
        return _item_end(toks, i, braced=True), word, name
    if word in _SEMICOLON_KEYWORDS:
        j = i + 1 if not _is_ident_at(toks, i + 1, "mut") else i + 2
        name = None if word == "use" else _name_after(toks, j - 1)
        return _item_end(toks, i, braced=False), word, name
    if word and i + 1 < n and toks[i + 1].is_punct("!"):  # macro_rules! name { … } or mac!(…);
        j = i + 2 + _is_ident_at(toks, i + 2)
        if j >= n or toks[j].text not in "{([" or toks[j].kind != PUNCT:
            return None
        close = matching_brace(toks, j)
        if close is None:
            return None, "macro", None
        if toks[j].text != "{":
            if not (close + 1 < n and toks[close + 1].is_punct(";")):
                return None
            close += 1
        name = toks[i + 2].text if word == "macro_rules" and _is_ident_at(toks, i + 2) else None
        return close + 1, "macro_rules" if name else "macro", name
    return None


def _is_ident_at(toks: list[Token], i: int, text: str | None = None) -> bool:
    return i < len(toks) and toks[i].is_ident(text)


def _is_punct_at(toks: list[Token], i: int, text: str) -> bool:
    return i < len(toks) and toks[i].is_punct(text)


def _name_after(toks: list[Token], i: int) -> str | None:
    return toks[i + 1].text if _is_ident_at(toks, i + 1) else None


def _item_end(toks: list[Token], i: int, braced: bool) -> int | None:
    """Token index just past an item: its `{…}` body when `braced`, else its `;` (skipping
    nested groups). None when the body or the item never ends."""
    depth = 0
    for j in range(i, len(toks)):
        tok = toks[j]
        if tok.kind != PUNCT:
            continue
        if braced and depth == 0 and tok.text == "{":
            close = matching_brace(toks, j)
            return None if close is None else close + 1
        if tok.text in "([{":
            depth += 1
        elif tok.text in ")]}":
            depth -= 1
        elif depth == 0 and tok.text == ";":
            return j + 1
    return None


def _make_item(toks, first, end, kind, name, attributes) -> _Item:
    code = [t for t in toks[first:end] if t.kind != COMMENT]
    header = []
    for tok in code:
        if tok.is_punct("{") or tok.is_punct(";"):
            break
        header.append(tok.text)
    end_offset = toks[end - 1].end
    return _Item(toks[first].start, end_offset, kind, name, tuple(attributes),
                 " ".join(t.text for t in code), " ".join(header), tuple(code))


def _use_names(item: _Item) -> set[str]:
    """Names a `use` (or `extern crate`) item brings into scope; globs bring none we can see."""
    if item.name is not None:
        return {item.name}
    keyword = next(k for k, t in enumerate(item.tokens) if t.is_ident("use"))
    tree = list(item.tokens[keyword + 1 : -1])
    names, stack, last = set(), [], None
    for k, tok in enumerate(tree):
        if tok.is_punct("{"):
            stack.append(last)
        elif tok.is_punct("}") and stack:
            stack.pop()
        elif tok.kind == IDENT and tok.text != "as":
            if k and tree[k - 1].is_ident("as"):
                names.add(tok.text)
                continue
            last = tok.text
            following = tree[k + 1] if k + 1 < len(tree) else None
            if following is None or following.is_punct(",") or following.is_punct("}"):
                names.add(stack[-1] if tok.text == "self" and stack and stack[-1] else tok.text)
    names.discard("_")
    return names


def _cut(source: str, spans: list[tuple[int, int]]) -> str:
    pieces, position = [], 0
    for start, end in sorted(spans):
        pieces.append(source[position:start])
        position = end
    pieces.append(source[position:])
    return "".join(pieces)
