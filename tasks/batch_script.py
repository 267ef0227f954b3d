"""Many commands, each its own process, in one sandbox launch (a firejail launch costs ~40 ms).

A generated `sh` script runs the jobs one after another and reports `S name` before and
`E name status` after each on its stdout (a pipe to the root side). The script's shell is root
inside the sandbox and runs no program itself: every job drops to a uid of its own first, so a
job cannot reach another job's files, binary, output or processes (SECURITY.md, Layer 4b).

Every job gets what the per-sample path gives a program: a fresh process, the same argv shape
and environment (`env -i` of the sandbox, TMPDIR its own directory), the same per-process
limits, stdin from /dev/null, its own stdout and stderr. Those go to files the root shell
creates in a directory only root can enter, so a job can write them only through the
descriptors it was given; the root side reads them without following links (`untrusted_files`).
A test job runs as its own job uid in a private scratch dir made for it; a compile job runs as
the worker's uid in its compile dir (the compiler runs no program code).

Each job goes through the job runner (`tasks/job_runner.rs`, one exec): it drops to the job's
uid, enters the job's dir, writes the start marker, and gives the program its own deadline (its
process group is killed then, and the job's uid loses every process it has left). A job cut off
by it, or by anything that kills the script, is reported `finished=False` (the caller reruns it
alone, with the per-sample path's own time limit); jobs that never started go into a new launch. As long as a job's deadline is at most the
per-sample limit, a job that finished took less than that limit, so finishing here means the
same as finishing alone.
"""

from __future__ import annotations

import os
import shlex
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from tasks.sandbox import SH, Limits, Sandbox
from tasks.untrusted_files import make_dir, read_capped, write_new

log = structlog.get_logger(__name__)

OUTPUT_DIR = "out"
STARTED = b"L"  # written by the job runner, as the job's uid, just before the program starts
CUT_BY_DEADLINE = (124, 128 + 9)  # the runner's deadline passed; or the runner itself was killed
LAUNCH_SLACK_S = 5.0  # the launch's own deadline, beyond its jobs' deadlines: only a backstop
SIGNALS_FROM_STATUS = range(129, 129 + 64)  # sh reports a child killed by signal N as 128 + N
SIGXFSZ = 25  # the job's output file hit RLIMIT_FSIZE: a pipe (the per-sample path) has no such limit


@dataclass(frozen=True)
class Job:
    name: str  # unique within a launch: [A-Za-z0-9_.-]
    argv: tuple[str, ...]  # argv[0] absolute, or relative to `cwd`
    cwd: Path | None  # a compile dir (runs as the worker uid); None: a test job, in a fresh
    #                   scratch dir of a job uid of its own
    deadline_s: float  # killed after this long: at most the per-sample limit


@dataclass(frozen=True)
class JobResult:
    finished: bool  # False: started but cut off by the deadline or by the script dying
    status: int | None  # sh's `$?` of the job (when not finished: 124/137, or None if the script died)
    stdout: bytes
    stderr: bytes
    seconds: float  # this job's share of its launch's wall time
    started: bool = True  # False: the launch never got to it (nothing ran)


def decode_status(status: int, sandbox: Sandbox) -> tuple[int | None, int | None] | None:
    """(returncode, signal) exactly as the per-sample path would see them, or None when it cannot
    be told here (the caller then runs the job alone).

    bubblewrap and firejail report a program killed by signal N as exit status 128 + N, which is
    how `sh` reports it too; without a sandbox tool the per-sample path sees the signal itself."""
    if status in SIGNALS_FROM_STATUS:
        if not sandbox.reports_signal_as_exit_code:
            return None
        if status - 128 == SIGXFSZ:
            return None
        return None, status - 128
    if status in (126, 127):  # sh could not start the program
        return None
    return status, None


def run_jobs(
    sandbox: Sandbox,
    workdir: Path,
    jobs: Sequence[Job],
    limits: Limits,
    read_bytes: int,
) -> dict[str, JobResult]:
    """Run `jobs` under `limits` (per process, as for one job alone) in as few launches as their
    deadlines allow; every job gets a result. `read_bytes` bounds what is read of each output."""
    tests = [job for job in jobs if job.cwd is None]
    if len(tests) > 1 and not sandbox.isolates_jobs:
        raise ValueError(f"{sandbox.kind} cannot give jobs uids of their own (not root): run test jobs one per launch")
    if len(tests) > len(sandbox.job_uids) and sandbox.isolates_jobs:
        raise ValueError(f"{len(tests)} test jobs, but a worker has {len(sandbox.job_uids)} job uids")
    # One directory per call: the scripts, the outputs (root only) and the jobs' scratch dirs.
    home = Path(tempfile.mkdtemp(prefix="jobs-", dir=workdir))
    home.chmod(0o755)
    output_dir = make_dir(home / OUTPUT_DIR, None, 0o700)
    places: dict[str, tuple[Path, int | None]] = {}
    test_uids = iter(sandbox.job_uids)
    for job in jobs:
        if job.cwd is None:
            uid = next(test_uids, None)
            places[job.name] = (sandbox.scratch_dir(home, f"s-{job.name}", uid), uid)
        else:
            places[job.name] = (Path(job.cwd), sandbox.uid)
    results: dict[str, JobResult] = {}
    pending = list(jobs)
    launch = 0
    while pending:
        script = home / f"run-{launch}.sh"
        write_new(script, _script(sandbox, pending, places, output_dir), mode=0o644)
        # The job runner (and its deadline thread) is one process more of its uid than a job alone has.
        backstop = sum(job.deadline_s for job in pending) + LAUNCH_SLACK_S
        ran = sandbox.run([SH, str(script)], home, replace(limits, timeout_s=backstop, processes=limits.processes + 1),
                          uid=None)
        started, ended = _progress(ran.stdout.decode("ascii", "replace"))
        share = ran.seconds / max(1, len(started))
        for job in pending:
            if job.name not in started:
                continue
            stdout, stderr, marker = _outputs(output_dir, job, read_bytes)
            if marker != STARTED:  # the chain broke before the program (e.g. the uid drop)
                results[job.name] = JobResult(False, None, b"", stderr, share, started=False)
            elif job.name in ended and ended[job.name] not in CUT_BY_DEADLINE:
                results[job.name] = JobResult(True, ended[job.name], stdout, stderr, share)
            else:  # what it wrote before it was cut off (and the status its chain ended with, if any)
                results[job.name] = JobResult(False, ended.get(job.name), stdout, stderr, share)
        unstarted = [job for job in pending if job.name not in started]
        if len(unstarted) == len(pending):  # the script itself never got going
            log.warning("batch_script_started_nothing", launch=launch, seconds=ran.seconds,
                        stderr=ran.stderr[:500].decode("utf-8", "replace"))
            for job in unstarted:
                results[job.name] = JobResult(False, None, b"", b"", 0.0, started=False)
            unstarted = []
        if ran.timed_out or unstarted:
            log.debug("batch_script_cut", launch=launch, finished=len(ended), cut=len(started) - len(ended),
                      unstarted=len(unstarted), timed_out=ran.timed_out)
        pending = unstarted
        launch += 1
    return results


def _script(sandbox: Sandbox, jobs: Sequence[Job], places: dict[str, tuple[Path, int | None]],
            output_dir: Path) -> str:
    """The root shell's script: per job, announce it, run it as its uid in its dir, report."""
    lines = ["unset PWD OLDPWD"]
    runner = shlex.quote(sandbox.job_runner)
    for job in jobs:
        cwd, uid = places[job.name]
        command = " ".join(shlex.quote(part) for part in
                           ("-" if uid is None else str(uid), f"{job.deadline_s:.3f}", str(cwd), *job.argv))
        out = shlex.quote(str(output_dir / job.name))
        # The runner drops to the job's uid, enters its dir, marks the start on fd 3, runs the
        # program with the deadline, then kills whatever of that uid is left (no other uid).
        lines.append(f"echo S {job.name}; {runner} {command} >{out}.o 2>{out}.e 3>{out}.l; echo E {job.name} $?")
    return "\n".join(lines) + "\n"


def _progress(stdout: str) -> tuple[set[str], dict[str, int]]:
    started: set[str] = set()
    ended: dict[str, int] = {}
    for line in stdout.splitlines():
        parts = line.split(" ")
        if len(parts) == 2 and parts[0] == "S":
            started.add(parts[1])
        elif len(parts) == 3 and parts[0] == "E" and parts[2].isdigit() and parts[1] in started:
            ended[parts[1]] = int(parts[2])
    return started, ended


def _outputs(output_dir: Path, job: Job, read_bytes: int) -> tuple[bytes, bytes, bytes]:
    """stdout, stderr and start marker of a job, from the files the root shell made for it."""
    owner = os.geteuid()
    return (read_capped(output_dir, f"{job.name}.o", read_bytes, owner),
            read_capped(output_dir, f"{job.name}.e", read_bytes, owner),
            read_capped(output_dir, f"{job.name}.l", 1, owner))
