"""Proof, on this machine, that a sandbox confines: a known-good program compiles and runs, a
known-bad one is rejected, and the running program sees no network, no home dir and its own uid.

Run once per sandbox kind before anything expensive (`Sandbox.self_check`, provisioning); the
probe takes the executor's own path: compiled as the worker uid, run as a job uid in a scratch dir.
"""

from __future__ import annotations

import socket
from pathlib import Path

import structlog

from tasks.sandbox import (
    COMPILE_LIMITS, RUN_LIMITS, Sandbox, SandboxLaunchFailed, SandboxUnavailable,
)

log = structlog.get_logger(__name__)

# Reports what a program inside can see and do; prove_confinement compares it with what it must.
PROBE_SOURCE = r"""
use std::time::Duration;
fn main() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    println!("uid={}", uid.unwrap_or("unknown"));
    println!("home={}", if std::fs::read_dir("HOME_DIR").is_ok() { "visible" } else { "hidden" });
    let address = "127.0.0.1:PORT".parse().unwrap();
    let connected = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok();
    println!("network={}", if connected { "connected" } else { "refused" });
}
"""


def prove_confinement(sandbox: Sandbox) -> None:
    """Raise SandboxUnavailable unless `sandbox` compiles, runs and confines programs here."""
    sandbox.identity()
    listener = socket.create_server(("127.0.0.1", 0))  # reachable from the host, never from inside
    try:
        with sandbox.new_workdir() as workdir:
            facts = _probe(sandbox, workdir, listener.getsockname()[1])
    except SandboxLaunchFailed as error:
        raise SandboxUnavailable(f"{error}; {sandbox.fix_hint}") from error
    finally:
        listener.close()
    expected = {"network": "refused", "home": "hidden"}
    if sandbox.isolates_jobs:
        expected["uid"] = str(sandbox.job_uids[0])
    wrong = {k: facts.get(k) for k, v in expected.items() if facts.get(k) != v}
    if wrong and sandbox.kind != "none":
        raise SandboxUnavailable(f"{sandbox.kind} does not confine programs here: {wrong} (expected {expected})")
    report = log.warning if wrong else log.info
    report("sandbox_self_check_passed", kind=sandbox.kind, identity=sandbox.identity(), facts=facts, confined=not wrong)


def _probe(sandbox: Sandbox, workdir: Path, port: int) -> dict[str, str]:
    """Compile as the worker uid, run as a job uid in a scratch dir: the executor's own path."""
    source = PROBE_SOURCE.replace("HOME_DIR", str(Path.home())).replace("PORT", str(port))
    build = sandbox.compile_dir(workdir, "build")
    (build / "probe.rs").write_text(source)
    (build / "broken.rs").write_text('fn main() { let n: u32 = "not a number"; println!("{n}"); }\n')
    compile_ = [sandbox.rustc, "--edition", "2021", "-o"]
    built = sandbox.run([*compile_, "probe", "probe.rs"], build, COMPILE_LIMITS)
    if not built.succeeded:
        raise SandboxUnavailable(f"{sandbox.kind}: rustc cannot build a known-good program inside the sandbox "
                                 f"(exit {built.returncode}, signal {built.signal}): {built.stderr[:2000]!r}")
    rejected = sandbox.run([*compile_, "broken", "broken.rs"], build, COMPILE_LIMITS)
    if rejected.succeeded or b"E0308" not in rejected.stderr:
        raise SandboxUnavailable(f"{sandbox.kind}: a known-bad program was not rejected with E0308: "
                                 f"exit {rejected.returncode}, {rejected.stderr[:2000]!r}")
    runner = sandbox.job_uids[0] if sandbox.isolates_jobs else None
    scratch = sandbox.scratch_dir(workdir, "run", runner)
    ran = sandbox.run([str(build / "probe")], scratch, RUN_LIMITS, uid=runner or "worker")
    if not ran.succeeded:
        raise SandboxUnavailable(f"{sandbox.kind}: a known-good program fails inside the sandbox "
                                 f"(exit {ran.returncode}, signal {ran.signal}): {ran.stderr[:2000]!r}")
    facts = dict(line.split("=", 1) for line in ran.stdout.decode().splitlines() if "=" in line)
    if sandbox.isolates_jobs:  # a batch launch: the root shell and the job runner must work too
        from tasks.batch_script import Job, run_jobs

        job = run_jobs(sandbox, workdir, [Job("probe", (str(build / "probe"),), None, RUN_LIMITS.timeout_s)],
                       RUN_LIMITS, 1 << 16)["probe"]
        in_batch = dict(line.split("=", 1) for line in job.stdout.decode().splitlines() if "=" in line)
        if (job.finished, job.status) != (True, 0) or in_batch != facts:
            raise SandboxUnavailable(f"{sandbox.kind}: a batch launch does not run programs as a lone run does: "
                                     f"{in_batch} (status {job.status}) instead of {facts}: "
                                     f"{job.stderr[:2000]!r}")
    return facts
