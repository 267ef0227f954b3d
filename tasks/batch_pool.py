"""Sandboxes for every worker thread, on worker ids no other pool on this machine holds.

A sandbox worker w runs its programs as uid 61000 + w and kills every process of that uid after
each job, so two sandboxes with one id running at once (two ferrisbench processes, a test and
the gate) would kill each other's compiles. Each id is claimed with a non-blocking `flock` on a
machine-wide lock file, held while the pool lives and released by `close()` or by the process
ending; an id somebody holds is skipped.

Fast workers (one per core) compile and run batches; a separate slow lane of sandboxes judges,
with the per-sample path, the few programs a batch could not settle quickly (hangs above all),
so waiting out a time limit never stalls a core's batches.
"""

from __future__ import annotations

import fcntl
import os
import queue
import weakref
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import structlog

from tasks.batch_rerun import sweep_held
from tasks.config import ExecutorConfig
from tasks.sandbox import SANDBOX_UID_BASE, Sandbox, make_sandbox
from tasks.toolchain import Toolchain

log = structlog.get_logger(__name__)

MAX_WORKER_ID = 65534 - SANDBOX_UID_BASE - 1  # uids stay below `nobody`
SLOW_LANE_PER_WORKER = 4
SLOW_LANE_MAX = 32
T = TypeVar("T")


class NoFreeWorkerIds(RuntimeError):
    """Other pools on this machine hold every sandbox worker id."""


def default_lock_dir() -> Path:
    """Machine-wide (one per user), so every process and every work root sees the same claims."""
    if os.geteuid() == 0:
        return Path("/run/ferrisbench/worker-ids")
    return Path(f"/tmp/ferrisbench-{os.geteuid()}/worker-ids")


def claim_worker_ids(count: int, first: int = 0, lock_dir: Path | None = None) -> list[tuple[int, int]]:
    """`count` (id, lock fd) pairs, the lowest free ids from `first` on."""
    directory = Path(lock_dir or default_lock_dir())
    directory.mkdir(parents=True, exist_ok=True)
    claimed: list[tuple[int, int]] = []
    for worker in range(first, MAX_WORKER_ID + 1):
        if len(claimed) == count:
            return claimed
        fd = os.open(directory / f"worker-{worker}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        claimed.append((worker, fd))
    if len(claimed) == count:
        return claimed
    _release([fd for _, fd in claimed], None)
    raise NoFreeWorkerIds(f"only {len(claimed)} of {count} sandbox worker ids from {first} are free in "
                          f"{directory}; wait for other ferrisbench runs on this machine to finish")


def _release(fds: list[int], threads: ThreadPoolExecutor | None) -> None:
    if threads is not None:
        threads.shutdown(wait=False, cancel_futures=True)
    for fd in fds:
        try:
            os.close(fd)  # closing the only descriptor drops the flock
        except OSError:
            pass


class SandboxPool:
    """Worker-private sandboxes handed out to threads, so no two runs share a uid or dir."""

    def __init__(self, config: ExecutorConfig, toolchain: Toolchain, first_worker: int = 0,
                 lock_dir: Path | None = None):
        slow = min(SLOW_LANE_MAX, SLOW_LANE_PER_WORKER * config.workers)
        claims = claim_worker_ids(config.workers + slow, first_worker, lock_dir)
        fds = [fd for _, fd in claims]
        try:
            ids = [worker for worker, _ in claims]
            sandboxes = [make_sandbox(config.sandbox.value, toolchain, worker=w, work_root=config.work_root)
                         for w in ids]
        except BaseException:
            _release(fds, None)
            raise
        self.worker_ids = ids
        self.sandboxes = sandboxes[: config.workers]
        self.slow_sandboxes = sandboxes[config.workers :]
        self._free: queue.Queue[Sandbox] = queue.Queue()
        for sandbox in self.sandboxes:
            self._free.put(sandbox)
        self._slow_free: queue.Queue[Sandbox] = queue.Queue()
        for sandbox in self.slow_sandboxes:
            self._slow_free.put(sandbox)
        self._slow_threads = ThreadPoolExecutor(len(self.slow_sandboxes), thread_name_prefix="ferrisbench-slow")
        self._finalizer = weakref.finalize(self, _release, fds, self._slow_threads)
        sweep_held(sandboxes[0].work_root)  # binaries a killed run held for reruns
        for sandbox in sandboxes:  # work dirs a killed run left on the ids now claimed
            sandbox.sweep_stale_workdirs()
        log.info("sandbox_pool_ready", kind=config.sandbox.value, workers=ids[: config.workers],
                 slow_lane=ids[config.workers :])

    def close(self) -> None:
        """Release the worker ids (also done when the pool is collected or the process ends)."""
        self._finalizer()

    def __enter__(self) -> "SandboxPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def identity(self) -> str:
        return self.sandboxes[0].identity()

    @property
    def isolates_jobs(self) -> bool:
        return self.sandboxes[0].isolates_jobs

    def self_check(self) -> None:
        self.sandboxes[0].self_check()

    def map(self, func: Callable[[T, Sandbox], object], items: Iterable[T],
            on_done: Callable[[], None] | None = None) -> list:
        """`func(item, sandbox)` for every item, one fast sandbox per call, results in order."""
        def work(item):
            sandbox = self._free.get()
            try:
                return func(item, sandbox)
            finally:
                self._free.put(sandbox)
                if on_done:
                    on_done()

        with ThreadPoolExecutor(max_workers=len(self.sandboxes)) as threads:
            return list(threads.map(work, items))

    def submit_slow(self, func: Callable[[Sandbox], T]) -> Future:
        """Run `func(sandbox)` on a slow-lane sandbox without holding up the fast workers."""
        def work():
            sandbox = self._slow_free.get()
            try:
                return func(sandbox)
            finally:
                self._slow_free.put(sandbox)

        return self._slow_threads.submit(work)
