"""Reading a verdict out of rustc's and the test binary's output, and hardening the harness.

The completion runs inside the same process as the benchmark's checks, so it can print anything,
exit early with status 0, or install a panic hook that does. A pass is therefore never inferred
from an exit code or from lines the program could have printed itself:

- libtest protocol: the harness adds one last test whose name carries a keyed digest that only
  this Python process knows (`sentinel_test_name`); libtest runs tests sorted by name, so the
  sentinel runs after every benchmark test. A pass needs stdout to be exactly libtest's report
  of a clean run — every expected test `ok` once, the sentinel last, the summary `ok` — and
  exit code 0. A completion that forges the report and exits early cannot name the sentinel.
- main protocol: the benchmark's `fn main` becomes a function; a new `main` calls it and then
  prints a keyed sentinel line (`sentinel_for`), which an early `process::exit(0)` never reaches.

`harden_harness` also keeps what the completion defines from changing what the checks mean
(see its docstring). The key is random per process: harden and judge in the same process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass, replace
from functools import lru_cache

from tasks.rust_lexer import IDENT, LIFETIME, PUNCT, STRING, Token, matching_brace, tokenize
from tasks.schema import Problem, Protocol, Status

_TEST_LINE = re.compile(r"^test (\S+) \.\.\. (ok|FAILED|ignored)\b", re.M)
_CLEAN_SUMMARY = re.compile(
    r"test result: ok\. (\d+) passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in \d+\.\d+s"
)
_MAIN_DEF = re.compile(r"\bfn\s+main\s*\(\s*\)")
HARNESS_MAIN = "__ferrisbench_checks"
HARNESS_MODULE = "__ferrisbench_harness"
SIGNATURE_MODULE = "__ferrisbench_signature"
SENTINEL_TEST_PREFIX = "zzzz_ferrisbench_done_"  # sorts after `tests::…`: libtest runs it last
_KEY = secrets.token_bytes(32)  # never written anywhere: a program cannot learn it


def _keyed_digest(text: str) -> str:
    return hmac.new(_KEY, text.encode(), hashlib.sha256).hexdigest()[:32]


def sentinel_for(problem: Problem) -> str:
    """The line only the main protocol's harness prints, after the benchmark's last check."""
    return "FERRISBENCH_CHECKS_DONE_" + _keyed_digest("main\0" + problem.test)


def sentinel_test_name(expected: tuple[str, ...]) -> str:
    """The libtest protocol's final test: it reports `ok` only if the binary ran to the end."""
    return SENTINEL_TEST_PREFIX + _keyed_digest("libtest\0" + "\0".join(expected))


# --- hardening -------------------------------------------------------------------------------

_ABSORB_DANGLING = "\nconst _: () = ();\n"
_STD_MACROS = frozenset(
    "assert assert_eq assert_ne debug_assert debug_assert_eq debug_assert_ne panic unreachable todo "
    "unimplemented vec format format_args print println eprint eprintln write writeln matches dbg "
    "concat stringify line column file module_path cfg thread_local".split()
)
_ITEM_KEYWORDS = frozenset({"struct", "enum", "union", "trait", "fn", "const", "static", "type", "mod"})
_UNPINNABLE_QUALIFIERS = frozenset({"const", "async", "unsafe", "extern"})


@lru_cache(maxsize=4096)
def harden_harness(problem: Problem) -> Problem:
    """The benchmark's checks, made immune to what the completion before them can define.

    - A dangling attribute at the end of the completion (`#[cfg(any())]`) would attach to the
      tests' module and compile them away: a throwaway item absorbs it.
    - The checks no longer import the crate root wholesale (`use super::*`), only the names the
      prompt defines: a completion's `struct Vec`, `use Fake::Some`, `struct i32` or a trait whose
      method is found before the one the checks call cannot change what the checks mean.
    - Every std macro the checks call goes by absolute path (`::std::assert_eq!`), so a
      completion's `macro_rules! assert_eq { … => {} }` or `vec!` is out of the picture.
    - The entry point must keep the prompt's signature (as a fn pointer type resolved without
      the completion's names), so a full-function answer cannot return a type whose `==` lies
      and a continuation cannot shadow the return type. Generic signatures are not pinned.
    - A final sentinel (see the module docstring) proves the checks ran to their end.
    """
    names = _prompt_names(problem)
    imports = "#[allow(unused_imports)] use super::{" + ", ".join(names) + "};"
    test = _absolute_std_macros(problem.test)
    prefix = _ABSORB_DANGLING + _signature_pin(problem.prompt, names)
    if problem.protocol is Protocol.LIBTEST:
        test = _replace_glob_imports(test, imports)
        test += f"\n\n#[test]\nfn {sentinel_test_name(problem.expected_tests)}() {{}}\n"
    elif _MAIN_DEF.search(test):
        test = _MAIN_DEF.sub(f"pub(super) fn {HARNESS_MAIN}()", test, count=1)
        test = (
            f"\nmod {HARNESS_MODULE} {{\n{imports}\n{test}\n}}\n\n"
            f"fn main() {{\n    {HARNESS_MODULE}::{HARNESS_MAIN}();\n"
            f'    ::std::println!("{sentinel_for(problem)}");\n}}\n'
        )
    return replace(problem, test=prefix + test)


def _absolute_std_macros(test: str) -> str:
    """`vec![…]` → `::std::vec![…]` for unqualified std macros the test does not define itself."""
    tokens = tokenize(test)
    own = {tokens[i + 2].text for i in range(len(tokens) - 2)
           if tokens[i].is_ident("macro_rules") and tokens[i + 1].is_punct("!")}
    edits = [
        token.start
        for index, token in enumerate(tokens)
        if token.kind == IDENT and token.text in _STD_MACROS - own
        and index + 1 < len(tokens) and tokens[index + 1].is_punct("!")
        and not (index > 0 and tokens[index - 1].is_punct("::"))
        and not (index > 0 and tokens[index - 1].is_ident("macro_rules"))
    ]
    for start in reversed(edits):
        test = test[:start] + "::std::" + test[start:]
    return test


def _replace_glob_imports(test: str, imports: str) -> str:
    """`use super::*;` directly inside a top-level module → explicit imports of prompt names."""
    tokens = tokenize(test)
    depth, spans = 0, []
    for index, token in enumerate(tokens):
        if token.kind == PUNCT and token.text in "{}":
            depth += 1 if token.text == "{" else -1
        window = [t.text for t in tokens[index : index + 5]]
        if depth == 1 and token.is_ident("use") and window == ["use", "super", "::", "*", ";"]:
            spans.append((token.start, tokens[index + 4].end))
    for start, end in reversed(spans):
        test = test[:start] + imports + test[end:]
    return test


def _open_signature(tokens: list[Token]) -> tuple[int, int] | None:
    """(index of `fn`, index of its `{`) for the signature the prompt leaves open."""
    depth, last_fn = 0, None
    for index, token in enumerate(tokens):
        if depth == 0 and token.is_ident("fn"):
            last_fn = index
        if token.kind == PUNCT and token.text in "{}":
            if token.text == "{" and depth == 0 and matching_brace(tokens, index) is None:
                return (last_fn, index) if last_fn is not None else None
            depth += 1 if token.text == "{" else -1
    return None


def _prompt_names(problem: Problem) -> list[str]:
    """The entry point plus every name the prompt's top-level items and `use` lines bind."""
    tokens = tokenize(problem.prompt)
    signature = _open_signature(tokens)
    names = [tokens[signature[0] + 1].text] if signature and signature[0] + 1 < len(tokens) else []
    names.append(problem.entry_point)
    depth = 0
    for index, token in enumerate(tokens):
        if token.kind == PUNCT and token.text in "{}":
            depth += 1 if token.text == "{" else -1
        if depth != 0 or index + 1 >= len(tokens):
            continue
        following = tokens[index + 1]
        if token.kind == IDENT and token.text in _ITEM_KEYWORDS and following.kind == IDENT:
            if following.text not in _ITEM_KEYWORDS and following.text not in _UNPINNABLE_QUALIFIERS:
                names.append(following.text)
        if token.is_ident("use"):
            names += _use_leaves(tokens, index + 1)
    return [n for n in dict.fromkeys(names) if n and n not in ("_", "self", "main")]


def _use_leaves(tokens: list[Token], start: int) -> list[str]:
    """Names a `use` tree binds: leaves before `,`/`}`/`;` and `as` aliases (globs bind none here)."""
    leaves = []
    for index in range(start, len(tokens)):
        token = tokens[index]
        if token.is_punct(";"):
            break
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if token.kind == IDENT and token.text != "as" and (
            tokens[index - 1].is_ident("as") or after is None or after.text in (",", "}", ";")
        ):
            leaves.append(token.text)
    return leaves


def _signature_pin(prompt: str, names: list[str]) -> str:
    """A module that coerces the entry point to the prompt's fn pointer type, or "" when the
    signature is generic, qualified or not understood (those are not pinned)."""
    tokens = tokenize(prompt)
    found = _open_signature(tokens)
    if found is None:
        return ""
    fn_index, brace = found
    before = tokens[fn_index - 1] if fn_index > 0 else None
    if before is not None and (before.text in _UNPINNABLE_QUALIFIERS or before.kind == STRING):
        return ""
    header = tokens[fn_index + 2 : brace]
    if not header or any(t.is_ident("impl") or t.is_ident("where") or t.is_ident("Self") for t in header):
        return ""
    lifetimes, cursor = [], 0
    if header[0].is_punct("<"):
        close = _angle_close(header, 0)
        if close is None or not all(_lifetime_syntax(t) for t in header[1:close]):
            return ""
        lifetimes = [t.text for t in header[1:close] if t.kind == LIFETIME]
        cursor = close + 1
    if cursor >= len(header) or not header[cursor].is_punct("("):
        return ""
    close = matching_brace(header, cursor)
    if close is None:
        return ""
    types = [_param_type(prompt, part) for part in _split_top_level(header[cursor + 1 : close])]
    if any(t is None for t in types):
        return ""
    rest = header[close + 1 :]
    returns = ""
    if rest:
        if not rest[0].is_punct("->") or len(rest) < 2:
            return ""
        returns = " -> " + prompt[rest[1].start : rest[-1].end]
    binder = f"for<{', '.join(dict.fromkeys(lifetimes))}> " if lifetimes else ""
    pointer = f"{binder}fn({', '.join(types)}){returns}"
    return (
        f"#[allow(dead_code, unused_imports, non_snake_case)]\nmod {SIGNATURE_MODULE} {{\n"
        f"    use super::{{{', '.join(names)}}};\n    const _: {pointer} = {names[0]};\n}}\n"
    )


def _lifetime_syntax(token: Token) -> bool:
    """Part of `<'a, 'b: 'a>`: generics made only of lifetimes still give a fn pointer type."""
    return token.kind == LIFETIME or token.kind == PUNCT and token.text in (",", ":", "+")


def _angle_close(tokens: list[Token], start: int) -> int | None:
    depth = 0
    for index in range(start, len(tokens)):
        depth += tokens[index].is_punct("<") - tokens[index].is_punct(">")
        if depth == 0:
            return index
    return None


def _split_top_level(tokens: list[Token]) -> list[list[Token]]:
    parts, current, depth = [], [], 0
    for token in tokens:
        if token.kind == PUNCT and token.text in "([{<":
            depth += 1
        elif token.kind == PUNCT and token.text in ")]}>":
            depth -= 1
        if depth == 0 and token.is_punct(","):
            parts.append(current)
            current = []
        else:
            current.append(token)
    if current:
        parts.append(current)
    return parts


def _param_type(source: str, param: list[Token]) -> str | None:
    """The type after a parameter's pattern (`mut v: Vec<i32>` → `Vec<i32>`)."""
    depth = 0
    for index, token in enumerate(param):
        if token.kind == PUNCT and token.text in "([{<":
            depth += 1
        elif token.kind == PUNCT and token.text in ")]}>":
            depth -= 1
        elif depth == 0 and token.is_punct(":") and index + 1 < len(param):
            return source[param[index + 1].start : param[-1].end]
    return None


# --- compile output --------------------------------------------------------------------------


@dataclass(frozen=True)
class CompileReport:
    error_codes: list[str]
    rendered: str  # human-readable errors, in order
    error_count: int


def parse_rustc_json(stderr: str) -> CompileReport:
    """Error codes and rendered messages from `--error-format=json` output."""
    codes: list[str] = []
    rendered: list[str] = []
    errors = 0
    for line in stderr.splitlines():
        if not line.startswith("{"):
            if line.strip():
                rendered.append(line)  # rustc ICEs and linker noise are not JSON
            continue
        try:
            message = json.loads(line)
        except ValueError:
            rendered.append(line)
            continue
        if message.get("$message_type", "diagnostic") != "diagnostic":
            continue
        if message.get("level") not in {"error", "error: internal compiler error"}:
            continue
        errors += 1
        code = (message.get("code") or {}).get("code")
        if code and code not in codes:
            codes.append(code)
        rendered.append((message.get("rendered") or message.get("message") or "").rstrip())
    return CompileReport(codes, "\n".join(rendered), errors)


# --- run output ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunJudgement:
    status: Status
    tests_passed: int
    reason: str


def judge_libtest(
    expected: tuple[str, ...],
    stdout: str,
    returncode: int | None,
    signal: int | None,
    timed_out: bool,
) -> RunJudgement:
    """Verdict of a `rustc --test` binary (hardened by `harden_harness`) against the task's
    expected test names; `tests_passed` counts the first line each expected test got."""
    first: dict[str, str] = {}
    for name, outcome in _TEST_LINE.findall(stdout):
        first.setdefault(name, outcome)
    passed = sum(1 for name in expected if first.get(name) == "ok")
    if timed_out:
        return RunJudgement(Status.TEST_TIMEOUT, passed, "test run exceeded its time limit")
    if signal is not None:
        return RunJudgement(Status.RUNTIME_CRASH, passed, f"test binary killed by signal {signal}")
    crashed = returncode not in (0, 101)
    failed = [name for name in expected if first.get(name) == "FAILED"]
    if failed:
        return RunJudgement(Status.FAILED_TESTS, passed, "failed: " + ", ".join(failed))
    missing = [name for name in expected if first.get(name) != "ok"]
    if missing:
        if crashed:
            return RunJudgement(Status.RUNTIME_CRASH, passed, f"exited {returncode} before: " + ", ".join(missing))
        return RunJudgement(Status.FAILED_TESTS, passed, "did not run: " + ", ".join(missing))
    if first.get(sentinel_test_name(expected)) != "ok":
        status = Status.RUNTIME_CRASH if crashed else Status.FAILED_TESTS
        return RunJudgement(status, passed, f"exited {returncode} before the harness's final check ran")
    unclean = _unclean_report(expected, stdout)
    if unclean:
        return RunJudgement(Status.FAILED_TESTS, passed, "not libtest's report of a clean run: " + unclean)
    if returncode != 0:
        status = Status.RUNTIME_CRASH if crashed else Status.FAILED_TESTS
        return RunJudgement(status, passed, f"exit code {returncode} after a clean report")
    return RunJudgement(Status.PASSED, passed, "")


def _unclean_report(expected: tuple[str, ...], stdout: str) -> str:
    """Why stdout is not exactly libtest's output for a clean run of expected + sentinel ("" if it is)."""
    lines = stdout.strip("\n").split("\n")
    names = [*expected, sentinel_test_name(expected)]
    count = len(names)
    wanted_head = f"running {count} test" + ("" if count == 1 else "s")
    if len(lines) != count + 3 or lines[0] != wanted_head or lines[-2] != "":
        return f"expected {count + 3} lines starting {wanted_head!r}, got {len(lines)}"
    reported = [line.removeprefix("test ").removesuffix(" ... ok") for line in lines[1:-2]]
    if any(not line.startswith("test ") or not line.endswith(" ... ok") for line in lines[1:-2]):
        return "a test line that is not `test NAME ... ok`"
    if sorted(reported) != sorted(names) or reported[-1] != names[-1]:
        return "the tests reported are not exactly the expected ones followed by the final check"
    summary = _CLEAN_SUMMARY.fullmatch(lines[-1])
    if summary is None or int(summary.group(1)) != count:
        return f"summary line {lines[-1][:120]!r}"
    return ""


def judge_main(
    problem: Problem,
    stdout: str,
    returncode: int | None,
    signal: int | None,
    timed_out: bool,
) -> RunJudgement:
    """Verdict of a `fn main` + asserts program: it must reach the harness's sentinel."""
    if timed_out:
        return RunJudgement(Status.TEST_TIMEOUT, 0, "program exceeded its time limit")
    if signal is not None:
        return RunJudgement(Status.RUNTIME_CRASH, 0, f"program killed by signal {signal}")
    reached_end = any(line.strip() == sentinel_for(problem) for line in stdout.splitlines())
    if returncode == 0 and reached_end:
        return RunJudgement(Status.PASSED, 1, "")
    if returncode == 101:
        return RunJudgement(Status.FAILED_TESTS, 0, "an assertion failed (panic)")
    if returncode == 0:
        return RunJudgement(Status.FAILED_TESTS, 0, "exited 0 before the checks finished")
    return RunJudgement(Status.RUNTIME_CRASH, 0, f"exited {returncode} before the checks finished")
