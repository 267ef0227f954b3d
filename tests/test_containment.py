"""Specification of containment through the production executor: hostile completions of a real
HumanEval-Rust task (`remove_negative`) are compiled and run by `tasks.execute.execute` in a real
sandbox, for bubblewrap and firejail.

Each attack is contained (no effect on the host, no secret in what is stored), classified with
an exact status, and the whole set finishes in bounded time. Where it can, a completion turns
"was I contained?" into its answer: it returns the right vector only if the attack failed, so
`passed` itself says the sandbox held. The sandbox worker id is claimed, so no other pool on
the machine shares its uid.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tasks.config import ExecutorConfig
from tasks.execute import Execution, execute
from tasks.problems import load_benchmark
from tasks.sandbox import SANDBOX_UID_BASE, make_sandbox, processes_of_uid
from tasks.schema import Status
from tasks.toolchain import find_toolchain
from tests.helpers import claimed_worker, temp_work_root

KINDS = ["bubblewrap", "firejail"]
TASK = "Transform/a265e6c4e2af"  # fn remove_negative(numbers: &[i32]) -> Vec<i32> {
RIGHT = "numbers.iter().copied().filter(|&n| n >= 0).collect()\n}"
WRONG_ANSWER = "return vec![-999];"
SECRET_ENV = "FERRISBENCH_TEST_SECRET"
WHOLE_SET_BOUND_S = 30.0
CONFIG = ExecutorConfig(compile_timeout_s=15, run_timeout_s=2)

pytestmark = pytest.mark.usefixtures("requires_root")


@dataclass
class Attack:
    completion: str
    status: Status  # the exact verdict in `no_policy` mode
    host_paths: tuple[str, ...] = ()  # must not exist on the host afterwards


@dataclass
class Outcome:
    execution: Execution
    seconds: float
    host_paths_created: list[str]
    leftover_processes: list[int]
    connections_accepted: int


def attacks(path_id: str, work_root: Path, secret_file: Path, port: int) -> dict[str, Attack]:
    home = Path.home()
    outside = [f"{home}/escape-{path_id}", f"/tmp/escape-{path_id}", f"/var/tmp/escape-{path_id}",
               f"/etc/escape-{path_id}", f"/dev/shm/escape-{path_id}", f"{work_root}/escape-{path_id}",
               f"/var/lib/escape-{path_id}"]
    touched = [f"{home}/spawned-{path_id}", f"/tmp/spawned-{path_id}"]
    return {
        "write_outside_the_work_dir": Attack(
            "for path in " + repr(outside).replace("'", '"') + " {\n"
            f"        if std::fs::write(path, b\"x\").is_ok() {{ {WRONG_ANSWER} }}\n    }}\n    " + RIGHT,
            Status.PASSED, tuple(outside)),
        "spawned_process_touches_the_home_dir": Attack(
            f'let touched = std::process::Command::new("/bin/sh").args(["-c", "touch {" ".join(touched)}"])\n'
            "        .status().map(|s| s.success()).unwrap_or(false);\n"
            f"    if touched {{ {WRONG_ANSWER} }}\n    " + RIGHT,
            Status.PASSED, tuple(touched)),
        "network_connection_to_a_host_listener": Attack(
            f'let address = "127.0.0.1:{port}".parse().unwrap();\n'
            "    if std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(1)).is_ok() {\n"
            f"        {WRONG_ANSWER}\n    }}\n    " + RIGHT,
            Status.PASSED),
        "lists_the_host_processes": Attack(
            'let visible = std::fs::read_dir("/proc").map(|entries| entries.flatten()\n'
            "        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit())).count())\n"
            "        .unwrap_or(0);\n"
            f"    if visible > 10 {{ {WRONG_ANSWER} }}\n    " + RIGHT,  # the host runs far more than 10
            Status.PASSED),
        "runs_with_privileges": Attack(
            'let status = std::fs::read_to_string("/proc/self/status").unwrap();\n'
            "    let field = |name: &str| status.lines().find(|l| l.starts_with(name)).unwrap().to_string();\n"
            '    if field("CapEff:") != "CapEff:\t0000000000000000" || field("NoNewPrivs:") != "NoNewPrivs:\t1"\n'
            '        || field("Uid:").split_whitespace().nth(1) == Some("0") {\n'
            f"        {WRONG_ANSWER}\n    }}\n    " + RIGHT,
            Status.PASSED),
        "include_str_of_a_host_secret": Attack(
            f'const SECRET: &str = include_str!("{secret_file}");\n    println!("{{SECRET}}");\n    ' + RIGHT,
            Status.COMPILE_ERROR),
        "env_macro_reads_a_host_variable_at_compile_time": Attack(
            f'println!("{{}}", env!("{SECRET_ENV}"));\n    ' + RIGHT, Status.COMPILE_ERROR),
        "prints_the_environment": Attack(
            'for (name, value) in std::env::vars() { println!("{name}={value}"); }\n'
            '    println!("ENVIRONMENT-PRINTED");\n'
            f"    {WRONG_ANSWER}\n}}",  # a failing test shows its captured output: it reaches the diagnostic
            Status.FAILED_TESTS),
        "fork_bomb": Attack(
            'let _ = std::process::Command::new("/bin/sh").args(["-c", "bomb() { bomb | bomb & }; bomb"]).spawn();\n'
            "    let mut children = Vec::new();\n"
            "    while children.len() < 100_000 {\n"
            '        match std::process::Command::new("/bin/sleep").arg("60").spawn() {\n'
            "            Ok(child) => children.push(child),\n            Err(_) => break,\n        }\n    }\n"
            f"    if children.len() >= 100_000 {{ {WRONG_ANSWER} }}\n"
            "    for mut child in children { let _ = child.kill(); let _ = child.wait(); }\n    " + RIGHT,
            Status.PASSED),
        "allocates_64_gib": Attack(
            "let huge = vec![1u8; 64 << 30];\n    if huge[12345] == 1 { " + WRONG_ANSWER + " }\n    " + RIGHT,
            Status.RUNTIME_CRASH),
        "loops_forever": Attack("loop { std::hint::black_box(0); }\n}", Status.TEST_TIMEOUT),
        "overflows_its_stack": Attack(
            "fn depth(n: u64) -> u64 { if n == 0 { 0 } else { 1 + depth(std::hint::black_box(n - 1)) } }\n"
            "    if depth(u64::MAX) == 0 { " + WRONG_ANSWER + " }\n    " + RIGHT,
            Status.RUNTIME_CRASH),
        "floods_stdout": Attack(
            "use std::io::Write;\n    let block = [b'y'; 1 << 16];\n    let mut out = std::io::stdout();\n"
            "    for _ in 0..1024 { let _ = out.write_all(&block); }\n    " + RIGHT,  # 64 MiB
            Status.FAILED_TESTS),
        "fills_the_disk": Attack(
            "use std::io::Write;\n    let mut file = std::fs::File::create(\"big\").unwrap();\n"
            "    for _ in 0..256 { file.write_all(&[0u8; 1 << 20]).unwrap(); }\n    " + RIGHT,  # 256 MiB
            Status.RUNTIME_CRASH),
    }


@pytest.fixture(scope="module")
def problem():
    return load_benchmark("humaneval-rust").by_id()[TASK]


@pytest.fixture(scope="module")
def worker():
    yield from claimed_worker(first=4100)


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-containment-test-")


@pytest.fixture(scope="module", params=KINDS)
def outcomes(request, problem, work_root, worker):
    """Every attack through the executor once, with what it did to the host."""
    token, path_id = "tok" + secrets.token_hex(12), secrets.token_hex(6)
    secret_file = Path.home() / f".ferrisbench-test-secret-{path_id}"
    secret_file.write_text(f"SECRET-{token}")
    previous = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = f"SECRET-{token}"
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    cases = attacks(path_id, work_root, secret_file, listener.getsockname()[1])
    sandbox = make_sandbox(request.param, find_toolchain(), worker=worker, work_root=work_root)
    uid = SANDBOX_UID_BASE + worker
    results: dict[str, Outcome] = {}
    started = time.monotonic()
    try:
        for name, attack in cases.items():
            begun = time.monotonic()
            execution = execute(problem, attack.completion, sandbox, CONFIG)
            seconds = time.monotonic() - begun
            accepted = 0
            while True:
                try:
                    listener.accept()[0].close()
                    accepted += 1
                except BlockingIOError:
                    break
            results[name] = Outcome(execution, seconds, [p for p in attack.host_paths if os.path.lexists(p)],
                                    processes_of_uid(uid), accepted)
        total = time.monotonic() - started
    finally:
        listener.close()
        secret_file.unlink()
        for attack in cases.values():
            for path in attack.host_paths:
                Path(path).unlink(missing_ok=True)
        if previous is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = previous
    return {"kind": request.param, "token": token, "cases": cases, "results": results, "total": total}


ATTACKS = list(attacks("t", Path("/w"), Path("/s"), 1))


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_classified_exactly_and_leaves_the_host_untouched(name, outcomes):
    attack, outcome = outcomes["cases"][name], outcomes["results"][name]
    verdict = outcome.execution.for_mode("no_policy")
    assert verdict.status is attack.status, verdict.diagnostic
    assert outcome.host_paths_created == []
    assert outcome.leftover_processes == []
    assert outcome.connections_accepted == 0


@pytest.mark.parametrize("name", ATTACKS)
def test_no_secret_reaches_the_stored_verdict(name, outcomes):
    token = outcomes["token"]
    for mode in ("no_policy", "policy"):
        row = outcomes["results"][name].execution.for_mode(mode).to_row()
        assert token not in repr(row)
    assert token not in repr(outcomes["results"][name].execution.violations)


@pytest.mark.parametrize("name", ATTACKS)
def test_attack_is_a_policy_violation_when_it_reaches_for_a_forbidden_capability(name, outcomes):
    verdict = outcomes["results"][name].execution.for_mode("policy")
    uses_capability = name not in {"allocates_64_gib", "loops_forever", "overflows_its_stack", "floods_stdout"}
    expected = Status.POLICY_VIOLATION if uses_capability else outcomes["cases"][name].status
    assert verdict.status is expected


def test_printed_environment_is_the_sandbox_one_not_the_host_one(outcomes):
    diagnostic = outcomes["results"]["prints_the_environment"].execution.verdict.diagnostic
    printed = diagnostic.split("---- tests::filter_negative_examples stdout ----\n", 1)[1]
    printed = printed.split("ENVIRONMENT-PRINTED", 1)[0]
    assert sorted(line.split("=", 1)[0] for line in printed.splitlines() if "=" in line) == [
        "LANG", "PATH", "RUST_BACKTRACE", "TMPDIR"]
    assert "TMPDIR=<work>" in printed  # the work dir path is normalized in what is stored


def test_host_secret_file_is_invisible_to_the_compiler(outcomes):
    verdict = outcomes["results"]["include_str_of_a_host_secret"].execution.verdict
    assert "couldn't read" in verdict.diagnostic
    assert verdict.error_codes == []


def test_host_environment_variable_is_invisible_to_the_compiler(outcomes):
    verdict = outcomes["results"]["env_macro_reads_a_host_variable_at_compile_time"].execution.verdict
    assert f"environment variable `{SECRET_ENV}` not defined at compile time" in verdict.diagnostic


@pytest.mark.parametrize("name, signal", [("allocates_64_gib", 6), ("overflows_its_stack", 6), ("fills_the_disk", 25)])
def test_resource_exhaustion_ends_by_a_signal_not_a_hang(name, signal, outcomes):
    outcome = outcomes["results"][name]
    assert f"killed by signal {signal}" in outcome.execution.verdict.diagnostic
    assert outcome.seconds < 5.0


def test_endless_loop_is_stopped_at_the_run_timeout(outcomes):
    outcome = outcomes["results"]["loops_forever"]
    assert CONFIG.run_timeout_s <= outcome.execution.verdict.run_seconds < CONFIG.run_timeout_s + 2


def test_stdout_flood_is_cut_off_and_its_diagnostic_stays_bounded(outcomes):
    verdict = outcomes["results"]["floods_stdout"].execution.verdict
    assert len(verdict.diagnostic) <= CONFIG.diagnostic_chars
    assert verdict.diagnostic.startswith("did not run: tests::filter_negative_examples")


def test_whole_set_of_attacks_finishes_in_bounded_time(outcomes):
    assert outcomes["total"] < WHOLE_SET_BOUND_S, {n: round(o.seconds, 2) for n, o in outcomes["results"].items()}


@pytest.mark.parametrize("kind, status", [("bubblewrap", Status.COMPILE_ERROR), ("firejail", Status.FAILED_TESTS)])
def test_world_readable_host_file_outside_home_is_hidden_by_bubblewrap_but_not_by_firejail(
    kind, status, problem, work_root, worker
):
    """Documents a difference (SECURITY.md, residual risks): bubblewrap shows the program an
    allow-list (/usr, the toolchain, its work dir); firejail hides home and temp dirs but the
    rest of the host is readable. Here a readable file becomes a wrong answer."""
    host_dir = Path(tempfile.mkdtemp(prefix="ferrisbench-host-file-", dir="/var/lib"))
    host_file = host_dir / "readable.txt"
    host_file.write_text("host data")
    host_dir.chmod(0o755)
    host_file.chmod(0o644)
    try:
        completion = (f'const HOST: &str = include_str!("{host_file}");\n'
                      f"    if HOST.len() == 9 {{ {WRONG_ANSWER} }}\n    " + RIGHT)
        sandbox = make_sandbox(kind, find_toolchain(), worker=worker, work_root=work_root)
        verdict = execute(problem, completion, sandbox, CONFIG).for_mode("no_policy")
    finally:
        shutil.rmtree(host_dir)
    assert verdict.status is status, verdict.diagnostic
