"""Processes and pipes of a sandboxed run: limits, results, capped capture, killing a run's trees and uids."""

from __future__ import annotations

import math
import os
import selectors
import signal
import subprocess
import time
from dataclasses import dataclass

POLL_S = 0.1  # how often a silent run is checked for exit or deadline
STRAY_GRACE_S = 0.5  # how long an exited run's leftover children may keep its pipes open
READ_CHUNK = 1 << 20
KILL = "/usr/bin/kill"
LAUNCH_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C"}  # for the sandbox tool itself


class SandboxError(RuntimeError):
    """The sandbox, not the program, failed; the executor records `sandbox_error`."""


@dataclass(frozen=True)
class Limits:
    address_space_mb: int
    file_size_mb: int
    cpu_seconds: int
    processes: int  # RLIMIT_NPROC of the sandbox uid: processes and threads together
    timeout_s: float  # wall clock; the whole process tree is killed when it passes
    output_bytes: int  # per stream; the rest is read and discarded


def _cpu_backstop(timeout_s: float) -> int:
    """CPU seconds that all cores busy until the wall-clock timeout cannot reach: the timeout
    decides verdicts; RLIMIT_CPU only bounds a tree that outlives a dead parent."""
    return math.ceil(timeout_s * (os.cpu_count() or 1)) + 1


def compile_limits(timeout_s: float = 30.0) -> Limits:
    """rustc needs > 256 MiB of address space and lld starts a thread per core; a batch of
    ~100 samples writes megabytes of JSON diagnostics, all of which the executor must see."""
    return Limits(address_space_mb=2048, file_size_mb=256, cpu_seconds=_cpu_backstop(timeout_s),
                  processes=256, timeout_s=timeout_s, output_bytes=8 << 20)


def run_limits(timeout_s: float = 5.0) -> Limits:
    """A test binary; libtest starts a thread per test, so pass `--test-threads` well under 64."""
    return Limits(address_space_mb=256, file_size_mb=16, cpu_seconds=_cpu_backstop(timeout_s),
                  processes=64, timeout_s=timeout_s, output_bytes=1 << 20)


COMPILE_LIMITS, RUN_LIMITS = compile_limits(), run_limits()


@dataclass
class RunResult:
    returncode: int | None  # None when the program was killed by a signal
    signal: int | None
    timed_out: bool
    seconds: float
    stdout: bytes
    stderr: bytes
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def succeeded(self) -> bool:
        return self.returncode == 0 and not self.timed_out


class _CappedBuffer:
    """Keeps the first `cap` bytes of a stream and counts the rest away."""

    def __init__(self, cap: int) -> None:
        self.data, self.cap, self.truncated = bytearray(), cap, False

    def feed(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True


def processes_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes owned by `uid`, from /proc."""
    return processes_of_uids({uid}).get(uid, [])


def processes_of_uids(uids: set[int] | frozenset[int] | range) -> dict[int, list[int]]:
    """Live (non-zombie) processes owned by any of `uids`, by uid, from one scan of /proc."""
    found: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
            if owner not in uids:
                continue
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                    found.setdefault(owner, []).append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
    return found


def kill_processes_of_uids(uids: set[int] | frozenset[int], attempts: int = 50) -> None:
    """SIGKILL every process of each of `uids` (one /proc scan when none is left, the usual case):
    `kill -1` sent as a uid reaches exactly that uid's processes."""
    for _ in range(attempts):
        alive = processes_of_uids(uids)
        if not alive:
            return
        for uid in alive:
            subprocess.run([KILL, "-KILL", "-1"], user=uid, group=uid, extra_groups=[], env=LAUNCH_ENV,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        time.sleep(0.01)
    survivors = processes_of_uids(uids)
    raise SandboxError(f"processes of uids {sorted(survivors)[:5]} survive SIGKILL: "
                       f"{[p for pids in survivors.values() for p in pids][:20]}")


def _collect(process: subprocess.Popen, streams: dict[int, _CappedBuffer], deadline: float) -> tuple[bool, float]:
    """Read both pipes until they close, the deadline passes, or exited-run strays linger."""
    selector = selectors.DefaultSelector()
    for fd in streams:
        os.set_blocking(fd, False)
        selector.register(fd, selectors.EVENT_READ)
    exited_at: float | None = None
    try:
        while selector.get_map():
            now = time.monotonic()
            if process.poll() is not None:
                exited_at = exited_at or now
                if now - exited_at > STRAY_GRACE_S:
                    break
            elif now >= deadline:
                return True, now
            for key, _ in selector.select(timeout=max(0.0, min(deadline - now, POLL_S))):
                if not _read_some(key.fd, streams[key.fd]):
                    selector.unregister(key.fd)
        if exited_at is None:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return True, time.monotonic()
        return False, exited_at or time.monotonic()
    finally:
        selector.close()


def _read_some(fd: int, buffer: _CappedBuffer) -> bool:
    """One read; False at end of stream."""
    try:
        chunk = os.read(fd, READ_CHUNK)
    except BlockingIOError:
        return True
    buffer.feed(chunk)
    return bool(chunk)


def _drain(streams: dict[int, _CappedBuffer], deadline: float) -> None:
    """Read what the killed tree left in the pipes, without waiting on writers that survive."""
    for fd, buffer in streams.items():
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                break
            if not chunk:
                break
            buffer.feed(chunk)


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass

