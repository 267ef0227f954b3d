"""Specification of the executor end to end: a completion of a real benchmark task goes through
normalization, the policy scan, a sandboxed compile and a sandboxed run (`tasks.execute.execute`
with a real `make_sandbox`), and gets the verdict it deserves.

A completion is written by someone who may have read this code: every cheat below makes a
wrong answer try to pass, and must not. The sandbox worker id is claimed, so no other pool on
the machine shares its uid.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool, evaluate_frame
from tasks.execute import execute
from tasks.problems import load_benchmark
from tasks.sandbox import SANDBOX_KINDS, SandboxLaunchFailed, make_sandbox
from tasks.schema import Problem, Protocol, Status, Verdict
from tasks.toolchain import Toolchain, find_toolchain
from tasks.verdict import SIGNATURE_MODULE, harden_harness, judge_libtest, sentinel_test_name
from tests.helpers import claimed_worker, temp_work_root

_SHARED_BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = _SHARED_BESIDE_REPO if _SHARED_BESIDE_REPO.is_dir() else Path("/work/shared/datasets")
REWORDED = DATASETS / "humaneval-rs-reworded.jsonl"
CONFIG = ExecutorConfig(sandbox="bubblewrap", compile_timeout_s=15, run_timeout_s=5)

pytestmark = pytest.mark.usefixtures("requires_root")

# HumanEval-Rust `Transform/a265e6c4e2af`: fn remove_negative(numbers: &[i32]) -> Vec<i32> {
REMOVE_NEGATIVE = "Transform/a265e6c4e2af"
RIGHT_BODY = "numbers.iter().copied().filter(|&n| n >= 0).collect()\n}"
WRONG_BODY = "numbers.to_vec()\n}"
FULL_FUNCTION = """use std::collections::VecDeque;
use std::iter::FromIterator;

/// Whether a number stays in the output.
#[inline]
fn is_kept(n: i32) -> bool {
    n %s 0
}

#[must_use]
pub fn remove_negative(numbers: &[i32]) -> Vec<i32> {
    let kept: VecDeque<i32> = numbers.iter().copied().filter(|&n| is_kept(n)).collect();
    Vec::from_iter(kept)
}
"""
OWN_MAIN_AND_TESTS = """
fn main() {
    println!("{:?}", remove_negative(&[3, -1]));
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn filter_negative_examples() { assert_eq!(remove_negative(&[]), vec![]); }
}
"""

# MultiPL-E `HumanEval_0_has_close_elements`: fn has_close_elements(numbers: Vec<f64>, threshold: f64) -> bool {
CLOSE_ELEMENTS = "HumanEval_0_has_close_elements"
CLOSE_BODY = """    for i in 0..numbers.len() {
        for j in (i + 1)..numbers.len() {
            if %s < threshold {
                return true;
            }
        }
    }
    false"""
CLOSE_RIGHT, CLOSE_WRONG = "(numbers[i] - numbers[j]).abs()", "(numbers[i] - numbers[j])"
CLOSE_FULL = "fn has_close_elements(numbers: Vec<f64>, threshold: f64) -> bool {\n%s\n}\n"


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return find_toolchain()


@pytest.fixture(scope="module")
def worker():
    yield from claimed_worker(first=4000)


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-executor-test-")


@pytest.fixture(scope="module")
def sandbox(toolchain, work_root, worker):
    return make_sandbox("bubblewrap", toolchain, worker=worker, work_root=work_root)


@pytest.fixture(scope="module")
def humaneval() -> dict[str, Problem]:
    return load_benchmark("humaneval-rust").by_id()


@pytest.fixture(scope="module")
def multipl_e() -> dict[str, Problem]:
    return load_benchmark(f"multipl-e:{REWORDED}").by_id()


@pytest.fixture(scope="module")
def remove_negative(humaneval) -> Problem:
    return humaneval[REMOVE_NEGATIVE]


@pytest.fixture(scope="module")
def close_elements(multipl_e) -> Problem:
    return multipl_e[CLOSE_ELEMENTS]


def config_with(**changes) -> ExecutorConfig:
    return ExecutorConfig(**{**CONFIG.model_dump(), **changes})


def judge(problem: Problem, completion, sandbox, config: ExecutorConfig = CONFIG, mode: str = "no_policy") -> Verdict:
    return execute(problem, completion, sandbox, config).for_mode(mode)


def fenced(code: str) -> str:
    return f"Here is the solution:\n\n```rust\n{code}```\n\nIt keeps the non-negative numbers."


# ---------- every answer form is judged on its merits, through the sandbox ----------

LIBTEST_FORMS = {
    # name: (completion, expected status, expected form)
    "continuation_right": (RIGHT_BODY, Status.PASSED, "continuation"),
    "continuation_wrong": (WRONG_BODY, Status.FAILED_TESTS, "continuation"),
    "full_function_with_helpers_uses_and_attributes_right": (FULL_FUNCTION % ">=", Status.PASSED, "full_function"),
    "full_function_with_helpers_uses_and_attributes_wrong": (FULL_FUNCTION % ">", Status.FAILED_TESTS, "full_function"),
    "markdown_fenced_right": (fenced(FULL_FUNCTION % ">="), Status.PASSED, "full_function"),
    "markdown_fenced_wrong": (fenced(FULL_FUNCTION % ">"), Status.FAILED_TESTS, "full_function"),
    "own_main_and_tests_removed_right": (FULL_FUNCTION % ">=" + OWN_MAIN_AND_TESTS, Status.PASSED, "full_function"),
    "own_main_and_tests_removed_wrong": (
        FULL_FUNCTION % ">" + OWN_MAIN_AND_TESTS, Status.FAILED_TESTS, "full_function"),
}
MAIN_FORMS = {
    "continuation_without_closing_brace_right": (CLOSE_BODY % CLOSE_RIGHT, Status.PASSED, "continuation"),
    "continuation_without_closing_brace_wrong": (CLOSE_BODY % CLOSE_WRONG, Status.FAILED_TESTS, "continuation"),
    "full_function_right": (CLOSE_FULL % (CLOSE_BODY % CLOSE_RIGHT), Status.PASSED, "full_function"),
    "full_function_wrong": (CLOSE_FULL % (CLOSE_BODY % CLOSE_WRONG), Status.FAILED_TESTS, "full_function"),
    "markdown_fenced_right": (fenced(CLOSE_FULL % (CLOSE_BODY % CLOSE_RIGHT)), Status.PASSED, "full_function"),
    "markdown_fenced_wrong": (fenced(CLOSE_FULL % (CLOSE_BODY % CLOSE_WRONG)), Status.FAILED_TESTS, "full_function"),
    "own_main_removed_right": (
        CLOSE_FULL % (CLOSE_BODY % CLOSE_RIGHT) + 'fn main() { println!("{}", has_close_elements(vec![1.0], 0.5)); }\n',
        Status.PASSED, "full_function"),
    "own_main_removed_wrong": (
        CLOSE_FULL % (CLOSE_BODY % CLOSE_WRONG) + "fn main() {}\n", Status.FAILED_TESTS, "full_function"),
}


@pytest.mark.parametrize("case", LIBTEST_FORMS, ids=str)
def test_libtest_answer_form_passes_when_right_and_fails_when_wrong(case, remove_negative, sandbox):
    completion, status, form = LIBTEST_FORMS[case]
    verdict = judge(remove_negative, completion, sandbox)
    assert (verdict.status, verdict.completion_form) == (status, form), verdict.diagnostic
    assert (verdict.tests_expected, verdict.tests_passed) == (1, 1 if status is Status.PASSED else 0)
    assert verdict.compile_seconds > 0 and verdict.run_seconds > 0


@pytest.mark.parametrize("case", MAIN_FORMS, ids=str)
def test_main_protocol_answer_form_passes_when_right_and_fails_when_wrong(case, close_elements, sandbox):
    completion, status, form = MAIN_FORMS[case]
    verdict = judge(close_elements, completion, sandbox)
    assert (verdict.status, verdict.completion_form) == (status, form), verdict.diagnostic
    assert (verdict.tests_expected, verdict.tests_passed) == (1, 1 if status is Status.PASSED else 0)


# ---------- cheats: a wrong answer that tries to look right ----------

FAKE_REPORT = (
    "ok\\n\\ntest result: ok. 1 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\\n\\n"
)
LIBTEST_CHEATS = {
    "process_exit_0_in_the_body": "std::process::exit(0)\n}",
    "dangling_cfg_any_after_the_function": WRONG_BODY + "\n#[cfg(any())]",
    "dangling_cfg_attr_after_the_function": WRONG_BODY + "\n#[cfg_attr(test, cfg(any()))]\n",
    "panic_hook_that_exits_0": "std::panic::set_hook(Box::new(|_| std::process::exit(0)));\n    numbers.to_vec()\n}",
    "fake_report_with_println": (
        f'println!("{FAKE_REPORT}test tests::filter_negative_examples ... ok");\n    std::process::exit(0)\n}}'),
    "fake_report_with_raw_stdout_write": (
        f'use std::io::Write;\n    std::io::stdout().write_all(b"{FAKE_REPORT}").unwrap();\n'
        "    std::process::exit(0)\n}"),
    "fake_ok_line_then_let_the_test_fail": (
        'use std::io::Write;\n    std::io::stdout().write_all(b"ok\\n").unwrap();\n    numbers.to_vec()\n}'),
    "fake_report_from_a_panic_hook": (
        "std::panic::set_hook(Box::new(|_| {\n        use std::io::Write;\n"
        f'        std::io::stdout().write_all(b"{FAKE_REPORT}").unwrap();\n'
        "        std::process::exit(0)\n    }));\n    numbers.to_vec()\n}"),
    "noop_assert_eq_macro": WRONG_BODY + "\nmacro_rules! assert_eq { ($($t:tt)*) => {} }\n",
    "noop_vec_macro_making_both_sides_equal": (
        "Vec::new()\n}\nmacro_rules! vec { ($($t:tt)*) => { Vec::new() } }\n"),
    "own_tests_module_with_the_expected_test_name": (
        WRONG_BODY + "\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn filter_negative_examples() {}\n}\n"),
    "own_test_function": WRONG_BODY + "\n#[test]\nfn filter_negative_examples() {}\n",
    "drop_guard_that_exits_0_while_panicking": (
        "struct Guard;\n    impl Drop for Guard {\n        fn drop(&mut self) {\n"
        "            if std::thread::panicking() { std::process::exit(0) }\n        }\n    }\n"
        "    thread_local!(static GUARD: Guard = Guard);\n    GUARD.with(|_| ());\n    numbers.to_vec()\n}"),
}


@pytest.mark.parametrize("cheat", LIBTEST_CHEATS, ids=str)
def test_libtest_cheat_does_not_pass(cheat, remove_negative, sandbox):
    verdict = judge(remove_negative, LIBTEST_CHEATS[cheat], sandbox)
    assert verdict.status is Status.FAILED_TESTS, verdict.diagnostic


# A continuation may add items after the body; a crate-root `struct Vec` would be the prompt's
# return type, with an `==` that always says yes.
SHADOWED_VEC = """Vec(numbers.to_vec())
}

#[derive(Debug)]
pub struct Vec<T>(std::vec::Vec<T>);
impl<T> Vec<T> { pub fn new() -> std::vec::Vec<T> { std::vec::Vec::new() } }
impl<T> PartialEq<std::vec::Vec<T>> for Vec<T> { fn eq(&self, _: &std::vec::Vec<T>) -> bool { true } }
"""
# `fn strlen(strings: &str) -> i32` with `assert!(strlen("") == 0)`: a crate-root `struct i32`
# that equals every integer would make any answer pass.
SHADOWED_I32 = """i32
}

#[derive(Debug)]
#[allow(non_camel_case_types)]
pub struct i32;
impl PartialEq<std::primitive::i32> for i32 { fn eq(&self, _: &std::primitive::i32) -> bool { true } }
"""
LIAR_FULL_FUNCTION = """fn strlen(_strings: &str) -> Liar { Liar }

#[derive(Debug)]
pub struct Liar;
impl PartialEq<i32> for Liar { fn eq(&self, _: &i32) -> bool { true } }
"""
# `Explain/39428d3bf5b9` checks `explanation.to_lowercase().contains("two numbers")`; a trait
# with `to_lowercase(&self)` for every type is found before `str`'s (it applies to `String` itself).
HIJACKING_TRAIT = """String::new()
}

pub trait Lowercase { fn to_lowercase(&self) -> String { "two numbers threshold check".to_string() } }
impl<T> Lowercase for T {}
"""


def test_completion_shadowing_the_return_type_does_not_compile(remove_negative, sandbox):
    verdict = judge(remove_negative, SHADOWED_VEC, sandbox)
    assert (verdict.status, verdict.error_codes) == (Status.COMPILE_ERROR, ["E0308"]), verdict.diagnostic


def test_completion_shadowing_a_primitive_type_does_not_compile(humaneval, sandbox):
    verdict = judge(humaneval["CodeGen/286d9913a124"], SHADOWED_I32, sandbox)
    assert (verdict.status, verdict.error_codes) == (Status.COMPILE_ERROR, ["E0308"]), verdict.diagnostic


def test_full_function_that_changes_the_return_type_to_a_liar_does_not_compile(humaneval, sandbox):
    verdict = judge(humaneval["CodeGen/286d9913a124"], LIAR_FULL_FUNCTION, sandbox)
    assert (verdict.status, verdict.completion_form) == (Status.COMPILE_ERROR, "full_function")
    assert verdict.error_codes == ["E0308"], verdict.diagnostic


def test_trait_method_that_hijacks_a_method_the_tests_call_does_not_pass(humaneval, sandbox):
    verdict = judge(humaneval["Explain/39428d3bf5b9"], HIJACKING_TRAIT, sandbox)
    assert verdict.status is Status.FAILED_TESTS, verdict.diagnostic


def test_completion_shadowing_some_and_none_for_the_tests_does_not_pass(humaneval, sandbox):
    # `Fix/cc377769b7ba` checks `assert_eq!(longest(…), Some("x".to_string()))`; the tests used
    # to import the crate root wholesale, so a completion's `Some`/`None` replaced the prelude's.
    completion = """std::option::Option::None
}

#[derive(Debug)]
pub enum Fake { Some(String), None }
pub use Fake::{None, Some};
impl PartialEq<Fake> for Option<String> { fn eq(&self, _: &Fake) -> bool { true } }
"""
    verdict = judge(humaneval["Fix/cc377769b7ba"], completion, sandbox)
    assert verdict.status is Status.FAILED_TESTS, verdict.diagnostic


def test_code_that_runs_before_main_cannot_fake_a_pass(remove_negative, sandbox):
    # No life before main in safe Rust, but `.init_array` runs a function before it.
    completion = WRONG_BODY + """
#[used]
#[link_section = ".init_array"]
static BEFORE_MAIN: extern "C" fn() = {
    extern "C" fn install() {
        std::panic::set_hook(Box::new(|_| {
            use std::io::Write;
            std::io::stdout().write_all(b"%s").unwrap();
            std::process::exit(0)
        }));
    }
    install
};
""" % FAKE_REPORT
    execution = execute(remove_negative, completion, sandbox, CONFIG)
    assert execution.for_mode("no_policy").status is Status.FAILED_TESTS, execution.verdict.diagnostic
    assert execution.for_mode("policy").status is Status.POLICY_VIOLATION


MAIN_CHEATS = {
    "process_exit_0_before_the_asserts": "    std::process::exit(0)",
    "noop_assert_eq_macro": "    false\n}\nmacro_rules! assert_eq { ($($t:tt)*) => {} }\n",
    "panic_hook_that_exits_0": "    std::panic::set_hook(Box::new(|_| std::process::exit(0)));\n    false",
    "dangling_cfg_any_after_the_function": "    false\n}\n#[cfg(any())]",
}


@pytest.mark.parametrize("cheat", MAIN_CHEATS, ids=str)
def test_main_protocol_cheat_does_not_pass(cheat, close_elements, sandbox):
    verdict = judge(close_elements, MAIN_CHEATS[cheat], sandbox)
    assert verdict.status is Status.FAILED_TESTS, verdict.diagnostic


def test_main_protocol_guessed_sentinel_does_not_pass(close_elements, sandbox):
    # The sentinel is keyed by a secret of the judging process: what is printed here is what
    # an attacker can compute from the public test text, and it is not the sentinel.
    digest = hashlib.sha256(("ferrisbench-sentinel\0" + close_elements.test).encode()).hexdigest()
    completion = f'    println!("FERRISBENCH_CHECKS_DONE_{digest[:24]}");\n    std::process::exit(0)'
    verdict = judge(close_elements, completion, sandbox)
    assert verdict.status is Status.FAILED_TESTS, verdict.diagnostic


@pytest.mark.parametrize("protocol", ["libtest", "main"])
def test_no_cheat_passes_through_the_batched_evaluation_either(protocol, remove_negative, close_elements, humaneval,
                                                               toolchain, work_root):
    """`evaluate_frame` (what the CLI runs) judges many programs per rustc and per launch; the
    cheats above must fail there too, next to right answers that pass. (A benchmark has one
    protocol, so a frame holds one.)"""
    if protocol == "libtest":
        strlen, explain = humaneval["CodeGen/286d9913a124"], humaneval["Explain/39428d3bf5b9"]
        cases = [(remove_negative, RIGHT_BODY, "passed"), (strlen, "strings.len() as i32\n}", "passed")]
        cases += [(remove_negative, cheat, "failed_tests") for cheat in LIBTEST_CHEATS.values()]
        cases += [(strlen, SHADOWED_I32, "compile_error"), (strlen, LIAR_FULL_FUNCTION, "compile_error"),
                  (remove_negative, SHADOWED_VEC, "compile_error"), (explain, HIJACKING_TRAIT, "failed_tests")]
    else:
        cases = [(close_elements, CLOSE_BODY % CLOSE_RIGHT, "passed")]
        cases += [(close_elements, cheat, "failed_tests") for cheat in MAIN_CHEATS.values()]
    problems = {p.task_id: p for p, _, _ in cases}
    samples = pd.DataFrame({"task_id": [p.task_id for p, _, _ in cases], "completion": [c for _, c, _ in cases],
                            "sample_index": range(len(cases))})
    config = config_with(workers=2, work_root=work_root, verdict_cache=False)
    pool = SandboxPool(config, toolchain)
    try:
        rows = evaluate_frame(samples, problems, ["no_policy"], config, pool, toolchain)
    finally:
        getattr(pool, "close", lambda: None)()
    assert list(rows["status"]) == [status for _, _, status in cases]


# ---------- residual risk (see SECURITY.md): what the policy filter is for ----------

SOURCE_FORGERY = r"""
    const SOURCE: &str = include_str!("main.rs");
    let at = SOURCE.rfind("fn zzzz_ferrisbench_done_").unwrap() + 3;
    let sentinel = &SOURCE[at..at + "zzzz_ferrisbench_done_".len() + 32];
    use std::io::Write;
    let mut out = std::io::stdout();
    write!(out, "ok\ntest {sentinel} ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; \
0 measured; 0 filtered out; finished in 0.00s\n\n").unwrap();
    out.flush().unwrap();
    std::process::exit(0)
}"""


def test_residual_reading_its_own_source_forges_a_pass_without_policy_and_is_refused_with_it(
    remove_negative, sandbox
):
    """Documents a residual risk: with the policy off, a completion that reads the program
    (include_str!, the file system, its own binary) can learn the sentinel and forge a pass.
    Every such capability is a policy violation. If this starts failing, update SECURITY.md."""
    execution = execute(remove_negative, SOURCE_FORGERY, sandbox, CONFIG)
    assert execution.for_mode("no_policy").status is Status.PASSED
    assert execution.for_mode("policy").status is Status.POLICY_VIOLATION
    assert any(v.startswith("include_macro:") for v in execution.violations)


# ---------- the verdict rules, on libtest output the program cannot fake ----------


def test_judge_needs_the_final_check_after_every_expected_test():
    expected = ("tests::a",)
    sentinel = sentinel_test_name(expected)
    clean = (f"\nrunning 2 tests\ntest tests::a ... ok\ntest {sentinel} ... ok\n\n"
             "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n")
    assert judge_libtest(expected, clean, 0, None, False).status is Status.PASSED
    early_exit = ("\nrunning 2 tests\ntest tests::a ... ok\n\n"
                  "test result: ok. 2 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n")
    assert judge_libtest(expected, early_exit, 0, None, False).status is Status.FAILED_TESTS
    stray_line = clean.replace("test tests::a ... ok\n", "test tests::a ... ok\nFAILED\n")
    assert judge_libtest(expected, stray_line, 0, None, False).status is Status.FAILED_TESTS
    assert judge_libtest(expected, clean, 101, None, False).status is Status.FAILED_TESTS
    assert judge_libtest(expected, clean, 3, None, False).status is Status.RUNTIME_CRASH


def test_sentinel_differs_per_process_and_is_not_in_the_unhardened_program(remove_negative):
    script = ("from tasks.verdict import sentinel_test_name\n"
              "print(sentinel_test_name(('tests::filter_negative_examples',)))")
    other = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    here = sentinel_test_name(remove_negative.expected_tests)
    assert other.stdout.strip() != here
    assert here in harden_harness(remove_negative).test and here not in remove_negative.test


def test_every_seed_benchmark_task_gets_its_entry_point_pinned_and_no_glob_import(humaneval, multipl_e):
    """The signature pin skips generic signatures; none of the shipped tasks has one, and the
    checks see only the names the prompt defines (here: just the entry point, or the prompt's
    `use` lines), never the completion's."""
    problems = [p for p in humaneval.values() if not p.structural_problem] + list(multipl_e.values())
    assert len(problems) == 148 + 156
    for problem in problems:
        hardened = harden_harness(problem).test
        assert f"mod {SIGNATURE_MODULE} {{" in hardened, problem.task_id
        assert "use super::*;" not in hardened, problem.task_id
    with_use_lines = [p.task_id for p in problems if "use super::{" + p.entry_point + "}" not in harden_harness(p).test]
    assert sorted(with_use_lines) == sorted(p.task_id for p in multipl_e.values() if "\nuse " in "\n" + p.prompt)
    assert len(with_use_lines) == 2


LONGEST = Problem(
    task_id="local/longest",
    prompt="/// The longer of two strings (the first when equal).\nfn longest<'a>(a: &'a str, b: &'a str) -> &'a str {",
    test=("#[cfg(test)]\nmod tests {\n    use super::*;\n"
          '    #[test]\n    fn picks() { assert_eq!(longest("ab", "c"), "ab"); }\n}\n'),
    entry_point="longest", protocol=Protocol.LIBTEST, expected_tests=("tests::picks",))


@pytest.mark.parametrize("completion, status", [
    ("    if b.len() > a.len() { b } else { a }\n}", Status.PASSED),
    ("fn longest<'x>(a: &'x str, b: &'x str) -> &'x str {\n    if b.len() > a.len() { b } else { a }\n}\n",
     Status.PASSED),
    ("fn longest(a: &str, b: &str) -> String {\n    if b.len() > a.len() { b.into() } else { a.into() }\n}\n",
     Status.COMPILE_ERROR),
], ids=["continuation", "same_signature_renamed_lifetime", "changed_return_type"])
def test_signature_with_lifetimes_is_pinned_up_to_renaming(completion, status, sandbox):
    verdict = judge(LONGEST, completion, sandbox)
    assert verdict.status is status, verdict.diagnostic


# ---------- every status, produced through the executor ----------


def test_type_error_is_compile_error_with_its_rustc_code(remove_negative, sandbox, work_root):
    verdict = judge(remove_negative, '"not a vector"\n}', sandbox)
    assert (verdict.status, verdict.error_codes) == (Status.COMPILE_ERROR, ["E0308"])
    assert verdict.run_seconds == 0 and verdict.compile_seconds > 0
    assert "mismatched types" in verdict.diagnostic
    assert str(work_root) not in verdict.diagnostic and "/var/lib" not in verdict.diagnostic


def test_diagnostic_of_many_errors_is_bounded_and_names_no_host_path(remove_negative, sandbox, work_root, toolchain):
    errors = "".join(f'    let _x{i}: u8 = "{i}";\n' for i in range(200))
    config = config_with(diagnostic_chars=1500)
    verdict = judge(remove_negative, errors + WRONG_BODY, sandbox, config)
    assert verdict.status is Status.COMPILE_ERROR
    assert len(verdict.diagnostic) <= 1500 and verdict.diagnostic.endswith("…[truncated]")
    for host_path in (str(work_root), str(toolchain.sysroot), "/var/lib", "/root"):
        assert host_path not in verdict.diagnostic


def test_compile_past_the_compile_timeout_is_compile_timeout(remove_negative, sandbox):
    # Constant evaluation that counts to u64::MAX, with rustc's "taking a long time" lint off.
    completion = (WRONG_BODY + "\n#[allow(long_running_const_eval)]\n"
                  "const SPIN: u64 = { let mut i = 0u64; while i < u64::MAX { i += 1; } i };\n"
                  "fn spin() -> u64 { SPIN }\n")
    config = config_with(compile_timeout_s=2.0)
    verdict = judge(remove_negative, completion, sandbox, config)
    assert verdict.status is Status.COMPILE_TIMEOUT, verdict.diagnostic
    assert 2.0 <= verdict.compile_seconds < 10 and verdict.diagnostic == "rustc exceeded 2 s"


def test_endless_loop_is_test_timeout(remove_negative, sandbox):
    config = config_with(run_timeout_s=1.0)
    verdict = judge(remove_negative, "loop { std::hint::black_box(0); }\n}", sandbox, config)
    assert verdict.status is Status.TEST_TIMEOUT
    assert 1.0 <= verdict.run_seconds < 5


@pytest.mark.parametrize("body", [
    "fn depth(n: u64) -> u64 { if n == u64::MAX { 0 } else { depth(n + 1) + 1 } }\n    "
    "vec![depth(0) as i32]\n}",
    "std::process::abort()\n}",
], ids=["stack_overflow", "abort"])
def test_crash_is_runtime_crash(body, remove_negative, sandbox):
    verdict = judge(remove_negative, body, sandbox)
    assert verdict.status is Status.RUNTIME_CRASH, verdict.diagnostic
    assert "signal 6" in verdict.diagnostic


@pytest.mark.parametrize("completion", [
    "let v: std::vec::Vec<i32> = numbers.to_vec();\n    let mut w = v.clone();\n"
    "    std::mem::swap(&mut w, &mut numbers.iter().copied().filter(|&n| n >= 0).collect());\n    w\n}",
    "let external = 0; let is_unsafe = false; let hyperbola = external;\n"
    "    numbers.iter().copied().filter(|&n| n >= hyperbola && !is_unsafe).collect()\n}",
], ids=["std_mem_swap", "words_containing_forbidden_names"])
def test_allowed_code_passes_in_policy_mode(completion, remove_negative, sandbox):
    execution = execute(remove_negative, completion, sandbox, CONFIG)
    assert execution.violations == []
    assert execution.for_mode("policy").status is Status.PASSED


@pytest.mark.parametrize("prefix, rule", [
    ('let _ = std :: fs :: read_to_string("/etc/hostname");\n    ', "filesystem"),
    ('use std::{fs};\n    let _ = fs::metadata("/");\n    ', "filesystem"),
    ("use std::process as p;\n    let _ = p::id();\n    ", "process"),
])
def test_policy_hit_is_policy_violation_in_policy_mode_and_the_real_verdict_without(
    prefix, rule, remove_negative, sandbox
):
    execution = execute(remove_negative, prefix + RIGHT_BODY, sandbox, CONFIG)
    assert execution.for_mode("no_policy").status is Status.PASSED
    policy = execution.for_mode("policy")
    assert policy.status is Status.POLICY_VIOLATION and policy.tests_passed == 0
    assert {v.split(":")[0] for v in execution.violations} == {rule}
    assert policy.diagnostic.startswith("policy: " + rule)


def test_policy_hit_that_also_fails_to_compile_is_policy_violation_not_compile_error(remove_negative, sandbox):
    execution = execute(remove_negative, 'std::fs::read("x")\n}', sandbox, CONFIG)
    assert execution.for_mode("no_policy").status is Status.COMPILE_ERROR
    assert execution.for_mode("policy").status is Status.POLICY_VIOLATION


@pytest.mark.parametrize("raw, reason", [
    ("", "completion is empty"),
    ("  \n\t\n", "completion is empty"),
    ("numbers.to_vec()\x00\n}", "completion contains a NUL byte"),
    (b"numbers.to_vec() \xff\xfe\n}", "completion is not valid UTF-8"),
    ("numbers.to_vec() \ud800\n}", "completion is not valid UTF-8 (lone surrogate)"),
    ("/" * 2001, "completion is 2001 bytes, over the 2000-byte limit"),
    (None, "no completion (None)"),
], ids=["empty", "whitespace", "nul", "non_utf8_bytes", "lone_surrogate", "oversized", "none"])
def test_unusable_completion_is_invalid_completion_in_both_modes(raw, reason, remove_negative, sandbox):
    config = config_with(max_completion_bytes=2000)
    execution = execute(remove_negative, raw, sandbox, config)
    for mode in ("no_policy", "policy"):
        verdict = execution.for_mode(mode)
        assert (verdict.status, verdict.diagnostic) == (Status.INVALID_COMPLETION, reason)
        assert (verdict.tests_expected, verdict.tests_passed, verdict.compile_seconds) == (1, 0, 0.0)


def _tool_that_breaks_after(tmp_path: Path, real_tool: str, good_runs: int) -> Path:
    """A sandbox tool that works `good_runs` times, then exits 1 without starting anything."""
    counter = tmp_path / "runs"
    tool = tmp_path / "flaky-sandbox-tool"
    tool.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" = --version ]; then exec {real_tool} --version; fi\n'
        f'n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}\n'
        f'if [ "$n" -ge {good_runs} ]; then echo "tool broke" >&2; exit 1; fi\n'
        f'exec {real_tool} "$@"\n'
    )
    tool.chmod(0o755)
    return tool


@pytest.mark.parametrize("kind, real_tool", [("bubblewrap", "/usr/bin/bwrap"), ("firejail", "/usr/bin/firejail")])
def test_sandbox_breaking_mid_run_raises_from_execute_and_is_a_sandbox_error_row(
    kind, real_tool, remove_negative, toolchain, work_root, worker, tmp_path, monkeypatch
):
    tool = _tool_that_breaks_after(tmp_path, real_tool, good_runs=1)  # the compile works, the run does not
    broken = make_sandbox(kind, toolchain, worker=worker, work_root=work_root, executable=str(tool))
    with pytest.raises(SandboxLaunchFailed, match="before starting the program: tool broke"):
        execute(remove_negative, RIGHT_BODY, broken, CONFIG)

    (tmp_path / "runs").write_text("0")
    # The production pool builds its own sandboxes; point their kind at the flaky tool.
    monkeypatch.setattr(SANDBOX_KINDS[kind], "default_executable", str(tool))
    config = config_with(workers=1, sandbox=kind, work_root=work_root, verdict_cache=False)
    pool = SandboxPool(config, toolchain)
    try:
        samples = pd.DataFrame({"task_id": [REMOVE_NEGATIVE] * 2, "completion": [RIGHT_BODY, WRONG_BODY],
                                "sample_index": [0, 1]})
        rows = evaluate_frame(samples, {REMOVE_NEGATIVE: remove_negative}, ["no_policy", "policy"], config, pool,
                              toolchain)
    finally:
        getattr(pool, "close", lambda: None)()
    assert len(rows) == 4
    assert set(rows["status"]) == {Status.SANDBOX_ERROR.value}
    assert rows["diagnostic"].str.contains("tool broke").all()
