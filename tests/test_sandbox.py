"""Specification of the sandbox: real rustc compiles untrusted Rust inside it, the binary runs inside it.

Each confinement test is run for bubblewrap and firejail. The sandbox uid comes from a worker
number no other test module uses, so the leftover-process checks see only this module's processes.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
from dataclasses import replace
from pathlib import Path

import pytest
import structlog

from tasks.sandbox import (
    COMPILE_LIMITS,
    RUN_LIMITS,
    RunResult,
    Sandbox,
    SandboxLaunchFailed,
    SandboxUnavailable,
    make_sandbox,
    processes_of_uid,
)
from tasks.toolchain import Toolchain, ToolchainMissing, find_toolchain
from tests.helpers import claimed_worker, temp_work_root

CONFINING_KINDS = ["bubblewrap", "firejail"]

pytestmark = pytest.mark.usefixtures("requires_root")


@pytest.fixture(scope="module")
def toolchain() -> Toolchain:
    return find_toolchain()


@pytest.fixture(scope="module")
def worker():
    yield from claimed_worker(first=93)


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-sandbox-test-")


@pytest.fixture(scope="module", params=CONFINING_KINDS)
def sandbox(request, toolchain, work_root, worker) -> Sandbox:
    return make_sandbox(request.param, toolchain, worker=worker, work_root=work_root)


@pytest.fixture
def workdir(sandbox):
    with sandbox.new_workdir() as job:  # the compiler's own dir: programs here run as the worker uid
        yield sandbox.compile_dir(job, "w")


@pytest.fixture
def token() -> str:
    return "tok" + secrets.token_hex(12)


def compile_rust(sandbox: Sandbox, workdir: Path, source: str, *, test: bool = False) -> RunResult:
    (workdir / "prog.rs").write_text(source)
    flags = ["--test"] if test else []
    return sandbox.run([sandbox.rustc, "--edition", "2021", *flags, "-o", "prog", "prog.rs"], workdir, COMPILE_LIMITS)


def build_and_run(sandbox: Sandbox, workdir: Path, source: str, limits=RUN_LIMITS, test: bool = False) -> RunResult:
    built = compile_rust(sandbox, workdir, source, test=test)
    assert built.succeeded, built.stderr.decode()
    return sandbox.run(["./prog"], workdir, limits)


def test_good_test_program_compiles_and_its_tests_pass(sandbox, workdir):
    source = """
pub fn add(a: i32, b: i32) -> i32 { a + b }
#[cfg(test)]
mod tests {
    use super::*;
    #[test] fn adds_small_numbers() { assert_eq!(add(2, 3), 5); }
    #[test] fn adds_negative_numbers() { assert_eq!(add(-2, -3), -5); }
}
"""
    ran = build_and_run(sandbox, workdir, source, test=True)
    assert ran.returncode == 0
    assert b"test tests::adds_small_numbers ... ok" in ran.stdout
    assert b"test tests::adds_negative_numbers ... ok" in ran.stdout
    assert b"test result: ok. 2 passed; 0 failed" in ran.stdout


def test_exit_code_of_the_program_comes_through_unchanged(sandbox, workdir):
    ran = build_and_run(sandbox, workdir, "fn main() { std::process::exit(3); }")
    assert (ran.returncode, ran.signal, ran.timed_out) == (3, None, False)


def test_compiler_and_program_run_as_the_unprivileged_worker_uid(sandbox, workdir):
    source = """
fn main() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    for line in status.lines().filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:")) { println!("{line}"); }
}
"""
    ran = build_and_run(sandbox, workdir, source)
    uid = sandbox.uid
    assert ran.stdout.decode() == f"Uid:\t{uid}\t{uid}\t{uid}\t{uid}\nGid:\t{uid}\t{uid}\t{uid}\t{uid}\n"
    assert (workdir / "prog").stat().st_uid == sandbox.uid  # written by rustc, so rustc ran as the uid too


def test_writes_outside_the_work_dir_fail_and_leave_the_host_untouched(sandbox, workdir, work_root, token):
    targets = [f"{d}/escape-{token}" for d in ("/root", "/etc", "/var/tmp", "/tmp", "/dev/shm", "/usr", str(work_root))]
    source = "fn main() {\n" + "".join(
        f'    println!("{{}}", if std::fs::write("{t}", b"x").is_ok() {{ "written" }} else {{ "denied" }});\n'
        for t in targets
    ) + "}\n"
    try:
        ran = build_and_run(sandbox, workdir, source)
        assert ran.stdout.decode().split() == ["denied"] * len(targets)
        assert [t for t in targets if os.path.exists(t)] == []
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)


def test_spawned_shell_cannot_touch_the_host(sandbox, workdir, token):
    targets = [f"/root/pwned-{token}", f"/var/tmp/pwned-{token}", f"/tmp/pwned-{token}"]
    source = f"""
fn main() {{
    let status = std::process::Command::new("sh").args(["-c", "touch {' '.join(targets)}"]).status().unwrap();
    println!("shell exited {{}}", status.success());
}}
"""
    try:
        ran = build_and_run(sandbox, workdir, source)
        assert ran.stdout == b"shell exited false\n"
        assert [t for t in targets if os.path.exists(t)] == []
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)


def test_tcp_connection_to_a_host_listener_is_refused(sandbox, workdir):
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        source = f"""
fn main() {{
    let address = "127.0.0.1:{port}".parse().unwrap();
    match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(2)) {{
        Ok(_) => println!("connected"),
        Err(_) => println!("refused"),
    }}
}}
"""
        ran = build_and_run(sandbox, workdir, source)
        listener.setblocking(False)
        with pytest.raises(BlockingIOError):
            listener.accept()
    assert ran.stdout == b"refused\n"


def test_include_str_of_a_host_secret_fails_to_compile_without_leaking_it(sandbox, workdir, token):
    secret = Path(f"/root/ferrisbench-test-secret-{os.getpid()}.txt")
    secret.write_text(token)
    try:
        built = compile_rust(sandbox, workdir, f'const S: &str = include_str!("{secret}");\nfn main() {{ println!("{{S}}"); }}\n')
    finally:
        secret.unlink()
    assert built.returncode not in (0, None)
    assert b"couldn't read" in built.stderr
    assert token.encode() not in built.stdout + built.stderr


def test_environment_of_compile_and_run_reveals_no_host_variable(sandbox, workdir, token, monkeypatch):
    monkeypatch.setenv("FERRISBENCH_TEST_SECRET", token)
    source = """
fn main() {
    println!("at compile time: {:?}", option_env!("FERRISBENCH_TEST_SECRET"));
    for (name, value) in std::env::vars() { println!("{name}={value}"); }
}
"""
    ran = build_and_run(sandbox, workdir, source)
    lines = ran.stdout.decode().splitlines()
    assert lines[0] == "at compile time: None"
    assert sorted(line.split("=", 1)[0] for line in lines[1:]) == ["LANG", "PATH", "RUST_BACKTRACE", "TMPDIR"]
    assert "RUST_BACKTRACE=0" in lines and "LANG=C" in lines and f"TMPDIR={workdir}" in lines
    assert token.encode() not in ran.stdout


def test_fork_bomb_gets_eagain_and_leaves_no_process_behind(sandbox, workdir):
    source = """
fn main() {
    let me = std::env::args().next().unwrap();
    if std::env::args().count() > 1 { std::thread::sleep(std::time::Duration::from_secs(60)); return; }
    let mut spawned = 0;
    let error = loop {
        match std::process::Command::new(&me).arg("child").spawn() {
            Ok(child) => { std::mem::forget(child); spawned += 1; }
            Err(error) => break error,
        }
        assert!(spawned < 10_000, "not contained");
    };
    println!("{spawned} {:?}", error.raw_os_error());
}
"""
    ran = build_and_run(sandbox, workdir, source, limits=replace(RUN_LIMITS, processes=32, timeout_s=10.0))
    spawned, error = ran.stdout.decode().split()
    assert error == "Some(11)"  # EAGAIN
    assert 0 < int(spawned) < 32
    assert ran.seconds < 5.0
    assert processes_of_uid(sandbox.uid) == []


def test_allocation_beyond_the_address_space_limit_fails(sandbox, workdir):
    source = """
fn main() {
    for gib in [1usize, 64] {
        let refused = Vec::<u8>::new().try_reserve(gib << 30).is_err();
        println!("{gib} GiB {}", if refused { "refused" } else { "granted" });
    }
}
"""
    ran = build_and_run(sandbox, workdir, source)  # RUN_LIMITS allow 256 MiB; the host has far more than 1 GiB
    assert ran.stdout == b"1 GiB refused\n64 GiB refused\n"


def test_cpu_time_limit_stops_a_busy_program_before_its_wall_clock_timeout(sandbox, workdir):
    ran = build_and_run(sandbox, workdir, "fn main() { loop { std::hint::black_box(0); } }",
                        limits=replace(RUN_LIMITS, cpu_seconds=1, timeout_s=10.0))
    assert (ran.returncode, ran.signal, ran.timed_out) == (None, signal.SIGXCPU, False)
    assert ran.seconds < 3.0


def test_file_size_limit_stops_a_program_filling_the_disk(sandbox, workdir):
    source = """
use std::io::Write;
fn main() {
    let mut file = std::fs::File::create("big").unwrap();
    for _ in 0..64 { file.write_all(&[0u8; 1 << 20]).unwrap(); }  // 64 MiB
}
"""
    ran = build_and_run(sandbox, workdir, source, limits=replace(RUN_LIMITS, file_size_mb=16))
    assert (ran.returncode, ran.signal) == (None, signal.SIGXFSZ)
    assert (workdir / "big").stat().st_size == 16 << 20


def test_infinite_loop_is_killed_at_the_timeout_with_its_children(sandbox, workdir):
    source = """
fn main() {
    std::process::Command::new("sleep").arg("60").spawn().unwrap();
    println!("looping");
    loop { std::hint::black_box(0); }
}
"""
    ran = build_and_run(sandbox, workdir, source, limits=replace(RUN_LIMITS, timeout_s=1.0))
    assert ran.timed_out is True
    assert ran.returncode is None
    assert 1.0 <= ran.seconds < 2.0
    assert ran.stdout == b"looping\n"
    assert processes_of_uid(sandbox.uid) == []


def test_stack_overflow_is_a_crash_by_signal_not_a_hang(sandbox, workdir):
    source = """
fn depth(n: u64) -> u64 { if n == 0 { 0 } else { 1 + depth(std::hint::black_box(n - 1)) } }
fn main() { println!("{}", depth(u64::MAX)); }
"""
    ran = build_and_run(sandbox, workdir, source)
    assert (ran.returncode, ran.signal, ran.timed_out) == (None, signal.SIGABRT, False)
    assert b"has overflowed its stack" in ran.stderr
    assert ran.seconds < 2.0


def test_stdout_flood_is_capped_and_the_program_still_finishes(sandbox, workdir):
    source = """
use std::io::Write;
fn main() {
    let block = [b'y'; 1 << 16];
    let mut out = std::io::stdout().lock();
    for _ in 0..4096 { out.write_all(&block).unwrap(); }  // 256 MiB
    eprintln!("done");
}
"""
    ran = build_and_run(sandbox, workdir, source, limits=replace(RUN_LIMITS, output_bytes=4096))
    assert ran.returncode == 0
    assert (ran.stdout, ran.stdout_truncated) == (b"y" * 4096, True)
    assert (ran.stderr, ran.stderr_truncated) == (b"done\n", False)
    assert ran.seconds < 5.0


def test_self_check_passes_on_this_machine(sandbox):
    sandbox.self_check()


@pytest.mark.parametrize("kind", CONFINING_KINDS)
def test_sandbox_that_exits_without_starting_the_program_raises_launch_failed(kind, toolchain, work_root, worker):
    broken = make_sandbox(kind, toolchain, worker=worker, work_root=work_root, executable="/bin/false")
    with broken.new_workdir() as workdir, pytest.raises(SandboxLaunchFailed, match="before starting the program"):
        broken.run(["/bin/true"], workdir, RUN_LIMITS)


@pytest.mark.parametrize("kind", CONFINING_KINDS)
def test_self_check_raises_unavailable_when_the_tool_cannot_create_namespaces(kind, toolchain, work_root, tmp_path, worker):
    tool = tmp_path / "tool"
    tool.write_text('#!/bin/sh\n[ "$1" = --version ] && { echo "tool 1.0"; exit 0; }\n'
                    'echo "tool: No permissions to create new namespace" >&2\nexit 1\n')
    tool.chmod(0o755)
    broken = make_sandbox(kind, toolchain, worker=worker, work_root=work_root, executable=str(tool))
    with pytest.raises(SandboxUnavailable, match="No permissions to create new namespace.*run as root"):
        broken.self_check()


@pytest.mark.parametrize("kind", CONFINING_KINDS)
def test_missing_sandbox_binary_raises_unavailable_with_install_hint(kind, toolchain, work_root, worker):
    with pytest.raises(SandboxUnavailable, match=f"/nonexistent/tool, which is missing.*apt-get install -y {kind}"):
        make_sandbox(kind, toolchain, worker=worker, work_root=work_root, executable="/nonexistent/tool")


def test_firejail_refuses_a_work_root_that_it_would_hide(toolchain, worker):
    with pytest.raises(SandboxUnavailable, match="lies under /var/tmp"):
        make_sandbox("firejail", toolchain, worker=worker, work_root=Path("/var/tmp/ferrisbench-test"))


def test_run_refuses_a_directory_outside_the_work_root(toolchain, work_root, tmp_path, worker):
    confined = make_sandbox("bubblewrap", toolchain, worker=worker, work_root=work_root)
    with pytest.raises(ValueError, match="not a work dir of this sandbox"):
        confined.run(["/bin/true"], tmp_path, RUN_LIMITS)


def test_unknown_kind_raises_with_the_valid_choices(toolchain, work_root, worker):
    with pytest.raises(ValueError, match="unknown sandbox kind 'docker'; choose one of bubblewrap, firejail, none"):
        make_sandbox("docker", toolchain, worker=worker, work_root=work_root)


def test_none_sandbox_logs_a_warning_and_still_enforces_the_timeout(toolchain, work_root, worker):
    with structlog.testing.capture_logs() as logs:
        unconfined = make_sandbox("none", toolchain, worker=worker, work_root=work_root)
    assert [(e["event"], e["log_level"]) for e in logs] == [("sandbox_disabled", "warning")]
    with unconfined.new_workdir() as workdir:
        ran = build_and_run(unconfined, workdir, "fn main() { loop {} }", limits=replace(RUN_LIMITS, timeout_s=0.5))
    assert (ran.timed_out, ran.returncode) == (True, None)
    assert unconfined.identity() == "none"


def test_find_toolchain_resolves_the_real_rustc_behind_the_proxy(toolchain):
    assert toolchain.rustc == toolchain.sysroot / "bin" / "rustc"
    assert toolchain.rustc.is_file()
    assert toolchain.rustc_version.startswith("rustc 1.")
    assert toolchain.host == "x86_64-unknown-linux-gnu"


def test_find_toolchain_with_a_missing_rustc_says_how_to_install_one():
    with pytest.raises(ToolchainMissing, match="cannot run '/nonexistent/rustc'.*rustup"):
        find_toolchain("/nonexistent/rustc")
