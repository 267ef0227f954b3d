"""Programs whose tests outlived a batch's short deadline, run again alone with the full time limit.

A batch gives every test run a short deadline (`batch_deadline_s`), so one hang cannot hold up a
core's batches. What was still running at that deadline is judged again here, on the pool's slow
lane, from the binary the batch already built: one process of its own, the per-sample path's time
limit, its output read as if its binary had been built alone (`batch_run.as_if_alone`). That is
exactly what the per-sample path would do after compiling it again, minus the compile.

The batch's work dir is gone by then, so `hold_binaries` copies each such (sealed, root-owned)
binary into a root-only directory beside the workers' dirs first, reading it only through an fd
opened without following links; `rerun_verdict` removes the copy when done, and
`sweep_held` removes copies a killed process left behind.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import replace
from pathlib import Path

import structlog

from tasks.batch_run import Rerun, as_if_alone, as_run_result, capped_run_result
from tasks.batch_script import Job, run_jobs
from tasks.config import ExecutorConfig
from tasks.execute import BINARY_NAME, run_verdict
from tasks.sandbox import Sandbox, run_limits
from tasks.schema import Verdict
from tasks.untrusted_files import copy_regular, make_dir

log = structlog.get_logger(__name__)

HELD_DIR = "held"
STALE_AFTER_S = 6 * 3600  # far beyond any rerun's time limit: its process is gone


def hold_binaries(sandbox: Sandbox, reruns: list[Rerun], nonce: str) -> None:
    """Copy each rerun's sealed binary out of the batch's work dir (which is about to be removed),
    from an fd opened without following links: only a regular root-owned file of sane size."""
    if not reruns:
        return
    held = Path(sandbox.work_root) / HELD_DIR
    for rerun in reruns:
        target = held / f"{nonce}-{rerun.built.member.index}"
        try:
            held.mkdir(mode=0o700, exist_ok=True)
            copy_regular(rerun.built.directory, BINARY_NAME, target, owner=os.geteuid(), mode=0o700)
            rerun.binary = target
        except OSError as error:  # e.g. a full disk: this one is compiled again by the per-sample path
            with contextlib.suppress(OSError):
                target.unlink()
            log.warning("rerun_binary_not_held", module=rerun.built.member.module, error=repr(error))


def rerun_verdict(rerun: Rerun, sandbox: Sandbox, config: ExecutorConfig) -> Verdict | None:
    """The per-sample verdict from one run alone of the held binary; None when only a fresh
    compile and run can tell (the caller then uses the per-sample path)."""
    if rerun.binary is None:
        return None
    member = rerun.built.member
    try:
        with sandbox.new_workdir() as workdir:
            binaries = make_dir(workdir / "bin", None, 0o755)
            copy_regular(rerun.binary.parent, rerun.binary.name, binaries / BINARY_NAME, owner=os.geteuid())
            limits = run_limits(config.run_timeout_s)
            job = Job("rerun", (str(binaries / BINARY_NAME), *rerun.args), None, config.run_timeout_s)
            result = run_jobs(sandbox, workdir, [job], limits, limits.file_size_mb << 20)[job.name]
            if rerun.built.shared_crate:
                result = as_if_alone(result, member)
            if not result.finished and result.status is not None and result.seconds < config.run_timeout_s:
                # 124/137 before the deadline could fire: the program's own exit status, or its own
                # SIGKILL of its job's chain (what the per-sample path sees as a kill by signal 9).
                result = replace(result, finished=True)
            if result.finished:
                ran = as_run_result(result, sandbox, limits.output_bytes)
            elif result.started:  # cut off at the per-sample time limit: what the per-sample path calls a timeout
                ran = capped_run_result(result, limits.output_bytes, None, None, timed_out=True)
            else:
                ran = None
            if ran is None:
                return None
            return run_verdict(member.problem, ran, rerun.built.compile_seconds, [workdir], config)
    finally:
        rerun.binary.unlink(missing_ok=True)


def sweep_held(work_root: Path, older_than_s: float = STALE_AFTER_S) -> int:
    """Remove held binaries a killed process left behind; returns how many."""
    held = Path(work_root) / HELD_DIR
    removed = 0
    cutoff = time.time() - older_than_s
    try:
        entries = list(held.iterdir())
    except OSError:  # none yet (or not a directory: `hold_binaries` then says so per binary)
        return 0
    for path in entries:
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    if removed:
        log.info("held_binaries_swept", removed=removed, directory=str(held))
    return removed
