"""Specification of the batched executor: the per-sample path's verdicts, from far fewer launches.

Everything runs for real: rustc compiles inside the sandbox, the test binaries run inside it.
The per-sample path (`batch_size=1`) is the reference every batched verdict must equal. The
pools claim sandbox worker ids from 300 up, clear of the ids other test modules use.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from tasks.batch import BatchItem, batch_reason, judge_batch
from tasks.batch_safety import unbatchable_reason
from tasks.batch_script import Job, run_jobs
from tasks.config import ExecutorConfig
from tasks.evaluate import JudgeStats, SandboxPool, evaluate_frame, judge_records
from tasks.execute import Prepared, prepare, run_program
from tasks.sandbox import run_limits
from tasks.schema import Problem, Protocol, Status
from tasks.toolchain import find_toolchain
from tests.helpers import temp_work_root

pytestmark = pytest.mark.usefixtures("requires_root")

FIRST_WORKER = 300

ADD = Problem(
    task_id="Test/add",
    prompt="/// Adds two numbers.\nfn add(a: i64, b: i64) -> i64 {",
    test="#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn test_add() {\n"
    "        assert_eq!(add(2, 3), 5);\n        assert_eq!(add(-1, 1), 0);\n    }\n}\n",
    entry_point="add",
    protocol=Protocol.LIBTEST,
    expected_tests=("tests::test_add",),
)
SORTED = Problem(
    task_id="Test/is_sorted",
    prompt="/// True when `v` never decreases.\nfn is_sorted(v: &[i32]) -> bool {",
    test="#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn test_sorted() {\n"
    "        assert!(is_sorted(&[1, 2, 2, 5]));\n    }\n\n    #[test]\n    fn test_unsorted() {\n"
    "        assert!(!is_sorted(&[3, 1]));\n    }\n}\n",
    entry_point="is_sorted",
    protocol=Protocol.LIBTEST,
    expected_tests=("tests::test_sorted", "tests::test_unsorted"),
)
DOUBLE = Problem(  # the MAIN protocol: a `fn main` of asserts, built as a program
    task_id="Test/double",
    prompt="/// Doubles x.\nfn double(x: i64) -> i64 {\n",
    test="\nfn main() {\n    let candidate = double;\n    assert_eq!(candidate(2), 4);\n"
    "    assert_eq!(candidate(-3), -6);\n}\n",
    entry_point="double",
    protocol=Protocol.MAIN,
)
PROBLEMS = {p.task_id: p for p in (ADD, SORTED, DOUBLE)}

# (problem, completion, what the per-sample path says) — every status a program can reach.
SAMPLES = [
    (ADD, "    a + b\n}", "passed"),
    (ADD, "    a - b\n}", "failed_tests"),
    (ADD, '    let x: u32 = "s";\n    a + b\n}', "compile_error"),  # E0308
    (ADD, "    helper(a) + b\n}", "compile_error"),  # E0425
    (ADD, "    let mut v = vec![a];\n    let r = &v;\n    v.push(b);\n    r[0] + b\n}", "compile_error"),  # E0502
    (ADD, "    let x = ;\n    a + b\n}", "compile_error"),  # a syntax error rustc recovers from
    (ADD, "    (a + b\n}", "compile_error"),  # unclosed delimiter: compiled alone
    (ADD, "    crate::add_impl(a, b)\n}\nfn add_impl(a: i64, b: i64) -> i64 { a + b }\n", "passed"),  # alone
    (ADD, "    a + b\n}\nuse super::*;\n", "compile_error"),  # reaches above the crate: alone
    (ADD, '    extern "C" { fn ferrisbench_missing_symbol(x: i64) -> i64; }\n'
          "    unsafe { ferrisbench_missing_symbol(a) + b }\n}", "compile_error"),  # link error: bisected
    (ADD, '    a + b\n}\n#[no_mangle]\npub extern "C" fn ferris_hook() -> i64 { 1 }\n', "passed"),  # alone
    (SORTED, '    v.windows(2).all(|w| w[0] <= w[1])\n}\n#[no_mangle]\npub extern "C" fn ferris_hook() -> i64 { 2 }\n',
     "passed"),  # the same symbol in another sample: would collide in one crate
    (ADD, "    a + b\n}\nmacro_rules! assert_eq { ($a:expr, $b:expr) => {}; }\n", "passed"),
    (ADD, "    a + b\n}\n#[test]\nfn extra() { panic!(\"mine\") }\n", "passed"),  # the answer's own tests go
    (ADD, "    loop {}\n}", "test_timeout"),
    (ADD, "    std::thread::sleep(std::time::Duration::from_secs(100));\n    a + b\n}", "test_timeout"),
    (ADD, "    std::process::abort()\n}", "runtime_crash"),
    (ADD, "    fn deep(n: u64) -> u64 { if n == u64::MAX { 0 } else { deep(n + 1) + 1 } }\n"
          "    deep(0) as i64 + a + b\n}", "runtime_crash"),
    (ADD, "    std::process::exit(3)\n}", "runtime_crash"),
    (ADD, "    std::process::exit(124)\n}", "runtime_crash"),  # `timeout`'s own status: rerun alone to tell
    (ADD, "    std::process::exit(137)\n}", "runtime_crash"),  # reads as SIGKILL, in both paths
    (ADD, "    std::process::exit(0)\n}", "failed_tests"),
    (ADD, '    { use std::io::Write; let _ = std::io::stdout().write_all(b"test tests::test_add ... ok\\n"); }\n'
          "    a - b\n}", "failed_tests"),  # forged report lines
    (ADD, "    { use std::io::Write; let _ = std::io::stdout().write_all(&vec![b'x'; 3 << 20]); }\n"
          "    a + b\n}", "failed_tests"),  # 3 MiB of output: cut at the cap, as alone
    (ADD, '    let _ = std::env::var("PWD");\n    a + b\n}', "passed"),  # reads the environment: alone
    (ADD, '    let _ = std::fs::read("/etc/hostname");\n    a + b\n}', "passed"),  # a policy violation
    (ADD, "", "invalid_completion"),
    (SORTED, "    v.windows(2).all(|w| w[0] <= w[1])\n}", "passed"),
    (SORTED, "    v.windows(2).all(|w| w[0] < w[1])\n}", "failed_tests"),
    (SORTED, "    v.windows(2).all(|w| w[0] <= w[1])\n}", "passed"),  # a duplicate
    (DOUBLE, "    x * 2\n}", "passed"),
    (DOUBLE, "    x * 3\n}", "failed_tests"),
    (DOUBLE, "    std::process::exit(0);\n}", "failed_tests"),
    (DOUBLE, '    panic!("boom")\n}', "failed_tests"),
    (DOUBLE, "    std::process::abort()\n}", "runtime_crash"),
    (DOUBLE, "    loop {}\n}", "test_timeout"),
    (DOUBLE, '    x * "2"\n}', "compile_error"),
    (DOUBLE, "    x + x\n}", "passed"),
]
VERDICT_COLUMNS = ["status", "tests_expected", "tests_passed", "error_codes", "completion_form", "policy_violations"]


@pytest.fixture(scope="module")
def toolchain():
    return find_toolchain()


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-batch-test-")


def config_for(work_root: Path, sandbox: str = "bubblewrap", **overrides) -> ExecutorConfig:
    settings = dict(sandbox=sandbox, workers=2, run_timeout_s=1.5, compile_timeout_s=10.0, work_root=work_root,
                    verdict_cache=False, batch_size=16, batch_deadline_s=0.5)
    return ExecutorConfig(**{**settings, **overrides})


def samples_frame() -> pd.DataFrame:
    rows = [{"task_id": problem.task_id, "completion": completion, "sample_index": n}
            for n, (problem, completion, _) in enumerate(SAMPLES)]
    rows.append({"task_id": ADD.task_id, "completion": None, "sample_index": len(rows),
                 "generation_status": "generation_failed"})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("sandbox", ["bubblewrap", "firejail"])
def test_batched_verdicts_equal_per_sample_verdicts_for_every_status(sandbox, toolchain, work_root):
    samples = samples_frame()
    frames = {}
    for batch_size in (1, 16):
        config = config_for(work_root, sandbox, batch_size=batch_size)
        with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
            frames[batch_size] = evaluate_frame(samples, PROBLEMS, ["no_policy", "policy"], config, pool, toolchain)
    per_sample, batched = frames[1], frames[16]
    assert len(batched) == len(per_sample) == 2 * len(samples)
    pd.testing.assert_frame_equal(batched[VERDICT_COLUMNS], per_sample[VERDICT_COLUMNS])
    reference = per_sample[per_sample["policy_mode"] == "no_policy"].reset_index(drop=True)
    expected = [status for _, _, status in SAMPLES] + ["generation_failed"]
    assert reference["status"].tolist() == expected
    assert set(per_sample["status"]) == {s.value for s in Status} - {"compile_timeout", "sandbox_error"}


def test_programs_that_cannot_share_a_crate_are_compiled_alone(toolchain, work_root):
    config = config_for(work_root)
    records = samples_frame().to_dict("records")
    stats = JudgeStats()
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        judge_records(records, PROBLEMS, config, pool, toolchain, stats=stats)
    reasons = stats.batch.reasons
    assert reasons == {
        "an unmatched `}`": 1,
        "a `crate::` path": 1,
        "a `super` path that leaves the program's own module": 1,
        "the crate-wide attribute `no_mangle`": 2,
        "`env::var`": 1,
    }
    assert stats.duplicates == 1
    # The environment reader goes to the per-sample path; the three hangs and the two exits with
    # `timeout`'s statuses are run again alone from the binary their batch built, with the full
    # time limit (no second compile); the link error is split off by bisection; everything else
    # shares a crate.
    assert stats.batch.culprits == 1
    assert stats.batch.reruns == 5
    assert stats.batch.grouped + stats.batch.alone + 1 == stats.executed
    assert stats.batch.alone >= 6


def test_a_program_that_exhausts_rustc_leaves_the_rest_of_its_batch_alone(toolchain, work_root):
    macro = "macro_rules! blow { () => {}; ($t:tt $($rest:tt)*) => { blow!($($rest)*); blow!($($rest)*); }; }\n"
    slow = "    a + b\n}\n" + macro + "blow!(" + "a " * 22 + ");\n"  # minutes of macro expansion
    huge = "    BIG[0] as i64 + a + b\n}\nstatic BIG: [u8; 900_000_000] = [7; 900_000_000];\n"  # E0080: no memory
    completions = ["    a + b\n}", slow, "    a * b\n}", huge, '    let s: &str = 5;\n    a + b\n}', "    b + a\n}"]
    config = config_for(work_root, compile_timeout_s=2.0)
    prepared = [prepare(ADD, c, config) for c in completions]
    assert all(isinstance(p, Prepared) for p in prepared)
    assert all(batch_reason(ADD, p.program, config.edition) is None for p in prepared)
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        result = judge_batch(pool.sandboxes[0], [BatchItem(i, ADD, p.program) for i, p in enumerate(prepared)],
                             config)
        alone = [run_program(ADD, p.program, pool.sandboxes[1], config) for p in prepared]
    statuses = {i: v.status.value for i, v in result.verdicts.items()}
    assert result.culprits == [1]  # its compile ran out of time: the per-sample path decides
    assert statuses == {0: "passed", 2: "failed_tests", 3: "compile_error", 4: "compile_error", 5: "passed"}
    assert [v.status.value for v in alone] == ["passed", "compile_timeout", "failed_tests", "compile_error",
                                               "compile_error", "passed"]
    assert [result.verdicts[i].error_codes for i in (3, 4)] == [alone[3].error_codes, alone[4].error_codes]
    assert result.stats.passes >= 3  # the group was split until the slow program stood alone


def test_every_program_runs_in_a_process_of_its_own_so_a_crash_ends_only_its_own(toolchain, work_root):
    config = config_for(work_root)
    overflow = "    fn deep(n: u64) -> u64 { if n == u64::MAX { 0 } else { deep(n + 1) + 1 } }\n    deep(0) as i64\n}"
    completions = ["    a + b\n}", "    b + a\n}", "    a - b\n}", "    (a + b)\n}", overflow, "    a + b + 0\n}",
                   "    0 + a + b\n}"]
    prepared = [prepare(ADD, c, config) for c in completions]
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        result = judge_batch(pool.sandboxes[0], [BatchItem(i, ADD, p.program) for i, p in enumerate(prepared)],
                             config)
        alone = [run_program(ADD, p.program, pool.sandboxes[1], config) for p in prepared]
    # 4 overflows its stack: only its own process ends; 5 and 6, judged after it, still pass.
    assert [result.verdicts[i].status for i in range(7)] == [v.status for v in alone]
    assert result.culprits == [] and result.reruns == []
    assert [v.status.value for v in alone] == ["passed", "passed", "failed_tests", "passed", "runtime_crash",
                                               "passed", "passed"]


def test_a_rejected_programs_diagnostic_reads_as_if_compiled_alone(toolchain, work_root):
    config = config_for(work_root)
    bad = prepare(ADD, '    let x: u32 = "s";\n    helper(a) + b\n}', config)
    good = prepare(ADD, "    a + b\n}", config)
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        batched = judge_batch(pool.sandboxes[0], [BatchItem(0, ADD, good.program), BatchItem(1, ADD, bad.program)],
                              config).verdicts[1]
        alone = run_program(ADD, bad.program, pool.sandboxes[0], config)
    assert batched.error_codes == alone.error_codes == ["E0308", "E0425"]
    assert batched.diagnostic == alone.diagnostic
    assert "--> main.rs:" in batched.diagnostic and "fb" not in batched.diagnostic.split("-->")[1][:12]


@pytest.mark.parametrize("sandbox", ["bubblewrap", "firejail"])
def test_a_job_of_a_batch_launch_sees_the_environment_a_lone_run_sees(sandbox, toolchain, work_root):
    config = config_for(work_root, sandbox)
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        box = pool.sandboxes[0]
        with box.new_workdir() as workdir:
            scratch = box.scratch_dir(workdir, "alone", box.job_uids[0])
            alone = box.run(["/usr/bin/env"], scratch, run_limits(5.0), uid=box.job_uids[0])
            results = run_jobs(box, workdir, [Job("a", ("/usr/bin/env",), None, 5.0),
                                              Job("b", ("/bin/sh", "-c", "exit 7"), None, 5.0)], run_limits(5.0), 1 << 20)
    assert results["a"].finished and results["a"].status == 0

    def environment(output: bytes) -> dict[str, str]:
        return dict(line.split("=", 1) for line in output.decode().splitlines())

    in_batch, by_itself = environment(results["a"].stdout), environment(alone.stdout)
    assert in_batch.keys() == by_itself.keys() == {"PATH", "RUST_BACKTRACE", "LANG", "TMPDIR"}
    assert {k: v for k, v in in_batch.items() if k != "TMPDIR"} == {k: v for k, v in by_itself.items() if k != "TMPDIR"}
    assert Path(in_batch["TMPDIR"]).name == "s-a" and by_itself["TMPDIR"] == str(scratch)  # each its own dir
    assert results["b"].status == 7


def test_a_hang_is_cut_off_at_its_own_deadline_and_the_rest_still_run(toolchain, work_root):
    config = config_for(work_root)
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        box = pool.sandboxes[0]
        with box.new_workdir() as workdir:
            jobs = [Job("before", ("/bin/echo", "one"), None, 1.0), Job("hang", ("/bin/sleep", "30"), None, 1.0),
                    Job("after", ("/bin/echo", "two"), None, 1.0)]
            results = run_jobs(box, workdir, jobs, run_limits(5.0), 1 << 20)
    assert (results["before"].finished, results["before"].stdout) == (True, b"one\n")
    assert results["hang"].finished is False
    assert (results["after"].finished, results["after"].stdout) == (True, b"two\n")


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("    a + b\n}", None),
        ("    a + b\n}\npub(crate) fn helper() {}\n", None),
        ("    a + b\n}\nmod inner { use super::*; }\n", None),
        ("    crate::helper()\n}", "a `crate::` path"),
        ("    a + b\n}\nmod inner { use super::super::x; }\n", "a `super` path that leaves the program's own module"),
        ("    a + b\n}\n#![allow(unused)]\n", "an inner attribute `#![…]`"),
        ("    a + b\n}\n#[cfg_attr(test, path = \"x.rs\")]\nmod m {}\n", "the crate-wide attribute `path`"),
        ("    a + b\n}\nmacro_rules! m { () => { $crate::f() } }\n", "`$crate`"),
        ("    a + b\n}\nextern crate core;\n", "`extern crate`"),
        ("    a + b\n}\nmod other;\n", "a file module `mod NAME;`"),
        ('    include_str!("main.rs").len() as i64\n}', "the macro `include_str!`"),
        ("    std::any::type_name::<i64>().len() as i64\n}", "`type_name`"),
        ("    std::env::args().count() as i64\n}", "`env::args`"),
        ('    let s = "{ ( [";\n    a + b\n}', None),
        ("    (a + b\n}", "an unmatched `}`"),
        ("    a + b\n}\nfn more() {\n", "an unclosed `{`"),
        ("    a + b)\n}", "an unmatched `)`"),
    ],
)
def test_what_may_share_a_crate_is_read_from_the_tokens(code, reason):
    assert unbatchable_reason(ADD.prompt + code + "\n", "\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n") == reason


def test_a_test_run_cut_by_the_batch_deadline_is_rerun_alone_from_its_binary(toolchain, work_root):
    spin = "    let t = std::time::Instant::now();\n    while t.elapsed() < std::time::Duration::from_millis(400) {}\n"
    completions = [
        (ADD, spin + "    a + b\n}"),  # shared test process: 2 calls, 0.8 s: cut at its deadline, passes alone
        (ADD, "    std::thread::sleep(std::time::Duration::from_millis(400));\n    a + b\n}"),  # own process
        (SORTED, "    if v.len() == 2 { loop {} }\n    v.windows(2).all(|w| w[0] <= w[1])\n}"),  # 1 of 2 tests, then a hang
        (ADD, "    a + b\n}"),
        (ADD, "    b + a\n}"),
    ]
    config = config_for(work_root)  # batch deadline 0.5 s, per-sample limit 1.5 s
    records = [{"task_id": p.task_id, "completion": c} for p, c in completions]
    stats = JudgeStats()
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        judged = judge_records(records, PROBLEMS, config, pool, toolchain, stats=stats)
        alone = [run_program(p, prepare(p, c, config).program, pool.sandboxes[0], config) for p, c in completions]
    batched = [j.execution.verdict for j in judged]
    assert [(v.status.value, v.tests_passed) for v in batched] == [(v.status.value, v.tests_passed) for v in alone]
    assert [(v.status.value, v.tests_passed) for v in alone] == [("passed", 1), ("passed", 1), ("test_timeout", 1),
                                                                ("passed", 1), ("passed", 1)]
    assert (stats.batch.reruns, stats.batch.culprits) == (3, 0)  # no program was compiled a second time
    assert batched[0].run_seconds >= 0.8 and batched[2].run_seconds >= config.run_timeout_s
    held = work_root / "held"
    assert not held.exists() or list(held.iterdir()) == []  # the held binaries are gone


def test_a_binary_that_cannot_be_held_for_its_rerun_is_judged_by_the_per_sample_path(toolchain):
    for work_root in temp_work_root("ferrisbench-batch-held-"):
        (work_root / "held").write_text("not a directory")  # every copy of a binary fails
        config = config_for(work_root)
        hang = "    loop {}\n}"
        with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
            stats = JudgeStats()
            judged = judge_records([{"task_id": ADD.task_id, "completion": c} for c in (hang, "    a + b\n}")],
                                   PROBLEMS, config, pool, toolchain, stats=stats)
        assert [j.execution.verdict.status.value for j in judged] == ["test_timeout", "passed"]
        assert (stats.batch.reruns, stats.batch.culprits) == (1, 0)  # the rerun fell back, nothing was lost


def test_a_batch_that_fails_as_a_whole_is_judged_program_by_program(toolchain, work_root, monkeypatch):
    # Fault injection (the one stand-in here): no real input makes the batched path itself raise, so
    # it is made to; the programs must then get the per-sample path's verdicts, not a blanket error.
    import tasks.evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("the batched path broke")

    monkeypatch.setattr(tasks.evaluate, "judge_batch", broken)
    config = config_for(work_root)
    completions = ["    a + b\n}", "    a - b\n}", '    let x: u32 = "s";\n    a + b\n}']
    with SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
        judged = judge_records([{"task_id": ADD.task_id, "completion": c} for c in completions], PROBLEMS, config,
                               pool, toolchain)
    assert [j.execution.verdict.status.value for j in judged] == ["passed", "failed_tests", "compile_error"]
