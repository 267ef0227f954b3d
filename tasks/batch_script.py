"""Many commands, each its own process, in one sandbox launch (a firejail launch costs ~40 ms).

A generated `sh` script runs the jobs one after another, each with its output in its own files,
and reports `S name` before and `E name status` after each on stdout. Every job therefore gets
what the per-sample path gives a program: a fresh process, the same argv and environment
(`env -i` of the sandbox, minus the `PWD` that `sh` would add), the same per-process limits,
stdin from /dev/null, its own stdout and stderr. One crash, abort or `exit` ends only its job.

Each job has its own deadline (coreutils `timeout` kills its process group): a job cut off by
it, or by anything that kills the script, is reported `finished=False` (the caller reruns it
alone, with the per-sample path's own time limit); jobs that never started go into a new
launch. As long as a job's deadline is at most the per-sample limit, a job that finished took
less than that limit, so finishing here means the same as finishing alone.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import structlog

from tasks.sandbox import Limits, Sandbox

log = structlog.get_logger(__name__)

OUTPUT_DIR = ".out"
TIMEOUT = "/usr/bin/timeout"
CUT_BY_DEADLINE = (124, 128 + 9)  # `timeout` ran out (it kills the job's group, itself included)
LAUNCH_SLACK_S = 5.0  # the launch's own deadline, beyond its jobs' deadlines: only a backstop
SIGNALS_FROM_STATUS = range(129, 129 + 64)  # sh reports a child killed by signal N as 128 + N
SIGXFSZ = 25  # the job's output file hit RLIMIT_FSIZE: a pipe (the per-sample path) has no such limit


@dataclass(frozen=True)
class Job:
    name: str  # unique within a launch: [A-Za-z0-9_.-]
    argv: tuple[str, ...]  # run in `cwd`; argv[0] relative to it or absolute
    cwd: str  # relative to the launch's work dir
    deadline_s: float  # killed after this long: at most the per-sample limit


@dataclass(frozen=True)
class JobResult:
    finished: bool  # False: started but cut off by the deadline or by the script dying
    status: int | None  # sh's `$?` of the job (None when not finished)
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
    output_dir = workdir / OUTPUT_DIR
    output_dir.mkdir(exist_ok=True)
    if sandbox.uid is not None:
        os.chown(output_dir, sandbox.uid, sandbox.uid)
    results: dict[str, JobResult] = {}
    pending = list(jobs)
    launch = 0
    while pending:
        script = f"run-{launch}.sh"
        (workdir / script).write_text(_script(pending), encoding="utf-8")
        # The script's shell and `timeout` are two more processes of the uid than a job alone has.
        backstop = sum(job.deadline_s for job in pending) + LAUNCH_SLACK_S
        ran = sandbox.run(["/bin/sh", script], workdir,
                          replace(limits, timeout_s=backstop, processes=limits.processes + 2))
        started, ended = _progress(ran.stdout.decode("ascii", "replace"))
        share = ran.seconds / max(1, len(started))
        for job in pending:
            if job.name in ended and ended[job.name] not in CUT_BY_DEADLINE:
                results[job.name] = JobResult(True, ended[job.name], *_outputs(output_dir, job, read_bytes), share)
            elif job.name in started:  # what it wrote before it was cut off
                results[job.name] = JobResult(False, None, *_outputs(output_dir, job, read_bytes), share)
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


def _script(jobs: Sequence[Job]) -> str:
    lines = ["unset PWD OLDPWD"]
    for job in jobs:
        command = f"{TIMEOUT} -s KILL {job.deadline_s:.3f} " + " ".join(shlex.quote(part) for part in job.argv)
        if job.cwd != ".":
            command = f"(cd {shlex.quote(job.cwd)} && unset PWD OLDPWD; exec {command})"
        out = shlex.quote(f"{OUTPUT_DIR}/{job.name}")
        lines.append(f"echo S {job.name}; {command} >{out}.o 2>{out}.e; echo E {job.name} $?")
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


def _outputs(output_dir: Path, job: Job, read_bytes: int) -> tuple[bytes, bytes]:
    return tuple(_read(output_dir / f"{job.name}.{suffix}", read_bytes) for suffix in ("o", "e"))


def _read(path: Path, limit: int) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read(limit)
    except FileNotFoundError:
        return b""
