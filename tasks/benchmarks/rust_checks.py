"""What the loader must know about a task's Rust before anything is compiled.

Which `#[test]` functions libtest will report (so a sample passes only if each of them ran and
passed), which function a prompt asks for, and whether a task is structurally unusable (a
truncated test module can never judge a sample, so it is flagged here rather than discovered
by a run). Everything reads tokens from the shared lexer, so braces or `#[test]` inside comments
and string literals never count.
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.rust_lexer import COMMENT, IDENT, PUNCT, STRING, Token, tokenize

_CLOSER_OF = {"{": "}", "(": ")", "[": "]"}
_OPENER_OF = {closer: opener for opener, closer in _CLOSER_OF.items()}


@dataclass(frozen=True)
class TestScan:
    """The `#[test]` functions found in a test module, as libtest names them."""

    names: tuple[str, ...]  # will run: e.g. `tests::test_basic`
    ignored: tuple[str, ...]  # marked `#[ignore]`: libtest skips them, so they prove nothing


def line_of(source: str, offset: int) -> int:
    """1-based line number of a character offset."""
    return source.count("\n", 0, offset) + 1


def delimiter_problems(source: str, field: str) -> list[str]:
    """Unterminated literals/comments and unbalanced `{}`/`()`/`[]`, in words; [] when sound."""
    problem, still_open = _scan_delimiters(source, field)
    if problem:
        return [problem]
    if still_open:
        where = ", ".join(f"`{t.text}` opened at line {line_of(source, t.start)}" for t in still_open)
        return [f"`{field}` ends with {len(still_open)} unclosed delimiter(s): {where}"]
    return []


def _scan_delimiters(source: str, field: str) -> tuple[str | None, list[Token]]:
    """The first lexical or nesting problem (or None), and the delimiters left open at the end."""
    stack: list[Token] = []
    for token in tokenize(source, keep_comments=True):
        if token.unterminated:
            what = {STRING: "string literal", COMMENT: "block comment"}.get(token.kind, "char literal")
            return f"unterminated {what} at line {line_of(source, token.start)} of `{field}`", stack
        if token.kind != PUNCT:
            continue
        if token.text in _CLOSER_OF:
            stack.append(token)
        elif token.text in _OPENER_OF:
            line = line_of(source, token.start)
            if not stack:
                return f"unmatched `{token.text}` at line {line} of `{field}`", stack
            opener = stack.pop()
            if opener.text != _OPENER_OF[token.text]:
                return (
                    f"`{token.text}` at line {line} of `{field}` does not close "
                    f"`{opener.text}` opened at line {line_of(source, opener.start)}"
                ), stack
    return None, stack


def scan_libtest_tests(source: str) -> TestScan:
    """Find the `#[test]` functions libtest will list, with their module path.

    Only functions at item level in a module chain count (libtest does not collect test
    functions nested in a function or an impl). Attributes may be stacked in any order
    (`#[test] #[should_panic]`, `#[ignore = "slow"] #[test]`) and qualifiers (`pub`, `async`)
    may sit between them and `fn`.
    """
    tokens = tokenize(source)
    frames: list[str | None] = []  # a module name per enclosing `mod NAME {`, None per other block
    pending_attributes: list[str] = []
    names: list[str] = []
    ignored: list[str] = []
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if token.is_punct("#"):
            inner = index + 1 < len(tokens) and tokens[index + 1].is_punct("!")
            start = index + 2 if inner else index + 1
            if start < len(tokens) and tokens[start].is_punct("["):
                end = _closing_index(tokens, start)
                if not inner:
                    pending_attributes.append("".join(t.text for t in tokens[start + 1 : end]))
                index = end + 1
                continue
        if token.is_ident("mod") and _is_ident_at(tokens, index + 1) and _is_punct_at(tokens, index + 2, "{"):
            frames.append(tokens[index + 1].text)
            pending_attributes.clear()
            index += 3
            continue
        if token.is_ident("fn") and _is_ident_at(tokens, index + 1):
            if "test" in pending_attributes and None not in frames:
                name = "::".join([*frames, tokens[index + 1].text])
                is_ignored = any(a == "ignore" or a.startswith("ignore=") for a in pending_attributes)
                (ignored if is_ignored else names).append(name)
            pending_attributes.clear()
            index += 2
            continue
        if token.is_punct("{"):
            frames.append(None)
            pending_attributes.clear()
        elif token.is_punct("}"):
            if frames:
                frames.pop()
            pending_attributes.clear()
        elif token.is_punct(";"):
            pending_attributes.clear()
        index += 1
    return TestScan(tuple(names), tuple(ignored))


def last_fn_name(source: str) -> str | None:
    """Name in the last `fn NAME` of `source` (the prompt's signature), ignoring comments."""
    tokens = tokenize(source)
    for index in range(len(tokens) - 2, -1, -1):
        if tokens[index].is_ident("fn") and tokens[index + 1].kind == IDENT:
            return tokens[index + 1].text
    return None


def has_top_level_main(source: str) -> bool:
    """True when `source` defines `fn main` outside any block."""
    depth = 0
    tokens = tokenize(source)
    for index, token in enumerate(tokens):
        if token.is_punct("{"):
            depth += 1
        elif token.is_punct("}"):
            depth -= 1
        elif depth == 0 and token.is_ident("fn") and _is_ident_at(tokens, index + 1):
            if tokens[index + 1].text == "main":
                return True
    return False


def prompt_problems(prompt: str) -> list[str]:
    """A prompt must stop inside the body it asks for: exactly one `{` left open, nothing else."""
    problem, still_open = _scan_delimiters(prompt, "prompt")
    if problem:
        return [problem]
    if [t.text for t in still_open] != ["{"]:
        return ["`prompt` does not end inside an open function body (expected exactly one unclosed `{`)"]
    return []


def libtest_structure(prompt: str, test: str) -> tuple[tuple[str, ...], str | None]:
    """Expected libtest names and, when the task cannot judge anything, why (else None)."""
    problems = []
    scan = scan_libtest_tests(test)
    if scan.ignored and not scan.names:
        problems.append(f"every #[test] function in `test` is #[ignore]d ({', '.join(scan.ignored)})")
    elif not scan.names:
        problems.append("`test` defines no #[test] function")
    problems += delimiter_problems(test, "test") + prompt_problems(prompt)
    return scan.names, ("; ".join(problems) or None)


def main_structure(prompt: str, test: str) -> str | None:
    """Why a `fn main` protocol task cannot judge anything, or None when it is sound."""
    problems = [] if has_top_level_main(test) else ["`test` defines no top-level `fn main`"]
    problems += delimiter_problems(test, "test") + prompt_problems(prompt)
    return "; ".join(problems) or None


def _closing_index(tokens: list[Token], open_index: int) -> int:
    """Index of the `]` closing the `[` at `open_index` (the last token if it never closes)."""
    depth = 0
    for index in range(open_index, len(tokens)):
        if tokens[index].is_punct("["):
            depth += 1
        elif tokens[index].is_punct("]"):
            depth -= 1
            if depth == 0:
                return index
    return len(tokens) - 1


def _is_ident_at(tokens: list[Token], index: int) -> bool:
    return index < len(tokens) and tokens[index].kind == IDENT


def _is_punct_at(tokens: list[Token], index: int, text: str) -> bool:
    return index < len(tokens) and tokens[index].is_punct(text)
