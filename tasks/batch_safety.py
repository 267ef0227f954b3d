"""Which programs may share a crate with others as one module each (and which must go alone).

A batch compiles every sample as `#[path = "s.rs"] mod s;` of one crate. Inside a module a
program means what it means as a crate of its own, except where it names the crate, reaches
past its own module, or uses crate-wide machinery. Those programs are compiled alone, so the
batch never changes a verdict; the checks are token-level and err on the side of "alone".

Programs whose delimiters do not balance are also compiled alone: rustc stops a whole crate at
the first such file, so each would cost the batch a full extra pass.
"""

from __future__ import annotations

import re
from functools import lru_cache

from tasks.rust_lexer import IDENT, PUNCT, Token, tokenize

# Attributes that act on the crate, collide across modules, or read other files.
CRATE_WIDE_ATTRIBUTES = frozenset(
    "no_mangle export_name link_section link global_allocator panic_handler alloc_error_handler "
    "macro_export macro_use path no_main no_std no_core start lang linkage naked used crate_type "
    "crate_name feature recursion_limit type_length_limit windows_subsystem no_builtins "
    "compiler_builtins needs_allocator panic_runtime register_tool test_runner".split()
)
# Macros whose result depends on the file, module path or compiler environment.
PLACE_MACROS = frozenset(
    "include include_str include_bytes module_path file env option_env global_asm concat_idents".split()
)
# Names whose value differs between a crate of its own and a module of a batch.
PLACE_NAMES = frozenset({"type_name", "type_name_of_val", "Location"})
# `env::NAME`: the process environment, arguments and directories differ in a batch.
ENV_ITEMS = frozenset(
    "args args_os var vars var_os vars_os current_dir current_exe temp_dir set_var remove_var "
    "set_current_dir".split()
)
_CLOSERS = {")": "(", "]": "[", "}": "{"}
_OPENERS = frozenset("([{")
_MAIN_FN = re.compile(r"(?m)^fn main\(\) \{")


def unbatchable_reason(head: str, test: str) -> str | None:
    """Why a program (`head` + `test`, where `head` is the prompt part plus the model's code and
    `test` the benchmark's harness) cannot be a module of a shared crate; None when it can.

    Sharing a crate is only about compiling: every program's tests still run in a process of
    their own (`tasks.batch_run`)."""
    head_tokens = tokenize(head)
    return _delimiter_problem(head_tokens, test) or _hazard(head_tokens) or _test_hazard(test)


@lru_cache(maxsize=1024)
def _test_tokens(test: str) -> list[Token]:
    return tokenize(test)


@lru_cache(maxsize=1024)
def _test_hazard(test: str) -> str | None:
    reason = _hazard(_test_tokens(test))
    return "benchmark harness: " + reason if reason else None


def main_entry_reason(test: str) -> str | None:
    """MAIN protocol: the batch calls each program's own `fn main`, so the harness must define it."""
    return None if _MAIN_FN.search(test) else "the harness defines no `fn main`"


def _delimiter_problem(head_tokens: list[Token], test: str) -> str | None:
    if any(t.unterminated for t in head_tokens):
        return "an unterminated literal or comment"
    stack, problem = _balance(head_tokens, [])
    if problem:
        return problem
    test_closers, test_openers, test_problem = _test_balance(test)
    if test_problem:
        return "benchmark harness: " + test_problem
    for closer in test_closers:
        if not stack or stack.pop() != _CLOSERS[closer]:
            return f"an unmatched `{closer}` in the harness"
    if stack or test_openers:
        return f"an unclosed `{(stack or test_openers)[-1]}`"
    return None


def _balance(tokens: list[Token], loose_closers: list[str] | None) -> tuple[list[str], str | None]:
    """Openers left open; a closer with nothing open goes to `loose_closers` (or is a problem)."""
    stack: list[str] = []
    for token in tokens:
        if token.kind != PUNCT:
            continue
        text = token.text
        if text in _OPENERS:
            stack.append(text)
        elif text in _CLOSERS:
            if not stack and loose_closers is not None:
                loose_closers.append(text)
            elif not stack or stack.pop() != _CLOSERS[text]:
                return stack, f"an unmatched `{text}`"
    return stack, None


@lru_cache(maxsize=1024)
def _test_balance(test: str) -> tuple[tuple[str, ...], tuple[str, ...], str | None]:
    """The harness's effect on the delimiters the program left open (MultiPL-E's test starts
    with the `}` that closes the prompt's function): closers it consumes, openers it leaves."""
    tokens = _test_tokens(test)
    if any(t.unterminated for t in tokens):
        return (), (), "an unterminated literal or comment"
    loose: list[str] = []
    stack, problem = _balance(tokens, loose)
    return tuple(loose), tuple(stack), problem


def _hazard(tokens: list[Token]) -> str | None:
    """The first construct that would mean something else inside a module of a batch."""
    module_depth, braces = 0, []  # braces: True for the `{` that opens a `mod NAME {`
    for index, token in enumerate(tokens):
        before = tokens[index - 1] if index else None
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == PUNCT:
            if token.text == "{":
                opens_module = index >= 2 and tokens[index - 2].is_ident("mod") and before.kind == IDENT
                braces.append(opens_module)
                module_depth += opens_module
            elif token.text == "}" and braces:
                module_depth -= braces.pop()
            elif token.text == "#" and after is not None:
                if after.is_punct("!"):
                    return "an inner attribute `#![…]`"
                if after.is_punct("["):
                    name = _crate_wide_attribute(tokens, index + 1)
                    if name:
                        return f"the crate-wide attribute `{name}`"
            elif token.text == "$" and after is not None and after.is_ident("crate"):
                return "`$crate`"
            continue
        if token.kind != IDENT:
            continue
        text = token.text
        if text == "crate":
            if after is not None and after.is_punct("::"):
                return "a `crate::` path"
            if before is not None and before.is_ident("extern"):
                return "`extern crate`"
        elif text == "super" and (before is None or not before.is_punct("::")):
            supers = _leading_supers(tokens, index)
            if supers > module_depth:
                return "a `super` path that leaves the program's own module"
        elif text == "mod" and after is not None and after.kind == IDENT:
            following = tokens[index + 2] if index + 2 < len(tokens) else None
            if following is not None and following.is_punct(";"):
                return "a file module `mod NAME;`"
        elif text in PLACE_MACROS and after is not None and after.is_punct("!"):
            return f"the macro `{text}!`"
        elif text in PLACE_NAMES:
            return f"`{text}`"
        elif text == "env" and after is not None and after.is_punct("::"):
            target = tokens[index + 2] if index + 2 < len(tokens) else None
            if target is not None and (target.text in ENV_ITEMS or target.text in ("{", "*")):
                return f"`env::{target.text}`"
    return None


def _crate_wide_attribute(tokens: list[Token], open_index: int) -> str | None:
    """A crate-wide attribute name anywhere inside `#[…]` (also under `cfg_attr`/`unsafe(…)`)."""
    depth = 0
    for token in tokens[open_index:]:
        if token.kind == PUNCT and token.text in "([{":
            depth += 1
        elif token.kind == PUNCT and token.text in ")]}":
            depth -= 1
            if depth == 0:
                return None
        elif token.kind == IDENT and token.text in CRATE_WIDE_ATTRIBUTES:
            return token.text
    return None


def _leading_supers(tokens: list[Token], index: int) -> int:
    """How many modules `super::super::…` starting at `index` climbs."""
    count = 0
    while index < len(tokens) and tokens[index].is_ident("super"):
        count += 1
        if index + 1 < len(tokens) and tokens[index + 1].is_punct("::"):
            index += 2
        else:
            break
    return count
