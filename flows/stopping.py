"""Stopping a run with SIGTERM (or Ctrl-C): out within moments, nothing left running, the run dir resumable.

Left to Python and Prefect, a SIGTERM waits for every shard in flight: the flow engine swaps in its
own handler (`prefect.utilities.engine.capture_sigterm`), which raises `TerminationSignal` in the
main thread; unwinding passes `ThreadPoolTaskRunner.__exit__`, whose `executor.shutdown()` waits for
the running shard tasks (minutes for a 500-sample shard, forever for a hung one); only then is the
flow marked Crashed and SIGTERM re-sent with its default action (death by signal, no message).

Here a watcher thread is woken through `signal.set_wakeup_fd`, which CPython's C-level handler
writes whichever Python handler (ours, a no-op, or Prefect's) is installed. It marks the flow runs
of this process (and their running task runs) Crashed, hands the sandbox cleanup to a small reaper
process, and ends the process with `os._exit(128 + signal)` (143 for SIGTERM, 130 for SIGINT).
Ending it at once is as safe as the SIGKILL the run directory is built to survive (atomic shard
files with manifests, flock locks): nothing half-done is ever reused, a rerun recomputes it.

The reaper inherits this process's sandbox worker-id locks, so no other run can claim those uids
until it is done; it waits for this process to be gone (so no thread here can mistake a killed
job for a verdict), then kills every process of those uids (firejail, unlike bubblewrap's
--die-with-parent, outlives its parent), the sandbox launches' process groups, and terminates the
other children (Prefect's temporary API server).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
STATE_TIMEOUT_S = 8.0  # at most this long marking flow runs Crashed before exiting (~0.5 s when idle)
TASK_EVENTS_DRAIN_S = 2.0  # queued task-run events sent to the API first
TASK_STATE_ROUNDS, TASK_STATE_PAUSE_S = 6, 0.25  # then running task runs looked for (and crashed) again
_WORKER_LOCK = re.compile(r"/worker-(\d+)\.lock$")

_flow_runs: set[str] = set()
_flow_runs_guard = threading.Lock()
_stopping = threading.Event()


def track(flow, flow_run, state) -> None:
    """`on_running` hook of the flows: a flow run still running when the process is stopped is marked Crashed."""
    with _flow_runs_guard:
        _flow_runs.add(str(flow_run.id))


@contextmanager
def stop_on_signals(advice: str) -> Iterator[None]:
    """While inside: SIGTERM or SIGINT ends the process promptly, printing one line and `advice`."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    read_fd, write_fd = os.pipe2(os.O_CLOEXEC)
    os.set_blocking(write_fd, False)
    previous = {number: signal.signal(number, _ignore) for number in STOP_SIGNALS}
    previous_wakeup = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    watcher = threading.Thread(target=_watch, args=(read_fd, advice), name="ferrisbench-stop", daemon=True)
    watcher.start()
    try:
        yield
    finally:
        if _stopping.is_set():  # e.g. unwinding from Prefect's TerminationSignal: no traceback, no second word
            _wait_for_exit()
        signal.set_wakeup_fd(previous_wakeup)
        for number, handler in previous.items():
            signal.signal(number, handler)
        os.write(write_fd, b"\0")  # stops the watcher (after any signal byte already queued)
        watcher.join()
        os.close(read_fd)
        os.close(write_fd)


def _ignore(signum, frame) -> None:
    """Our Python-level handler: the watcher thread acts; the main thread carries on until the exit."""


def _wait_for_exit() -> None:
    threading.Event().wait()  # the watcher ends the process


def _watch(read_fd: int, advice: str) -> None:
    while True:
        for number in os.read(read_fd, 64):
            if number == 0:
                return
            if number in STOP_SIGNALS:
                _stop(signal.Signals(number), advice)


def _stop(number: signal.Signals, advice: str) -> None:
    _stopping.set()
    os.write(2, f"ferrisbench: stopped by {number.name}; {advice}\n".encode())
    marker = threading.Thread(target=_mark_crashed, args=(number.name,), daemon=True)
    marker.start()
    marker.join(STATE_TIMEOUT_S)
    _start_reaper()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os._exit(128 + number)


def _mark_crashed(signal_name: str) -> None:
    """This process's flow runs still running, and their running task runs, marked Crashed (as Prefect would)."""
    with _flow_runs_guard:
        tracked = sorted(_flow_runs)
    if not tracked:
        return
    try:
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import (
            FlowRunFilter, FlowRunFilterId, FlowRunFilterState, FlowRunFilterStateType, TaskRunFilter, TaskRunFilterState, TaskRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType
        from prefect.states import Crashed

        from prefect.events.worker import EventsWorker

        message = f"ferrisbench was stopped by {signal_name}; rerun the same command to resume"
        unfinished = [StateType.RUNNING, StateType.PENDING]
        # Task-run states travel as events: send what is queued, so the API knows the running ones.
        EventsWorker.drain_all(timeout=TASK_EVENTS_DRAIN_S)
        with get_client(sync_client=True) as client:
            flow_runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(
                id=FlowRunFilterId(any_=tracked), state=FlowRunFilterState(type=FlowRunFilterStateType(any_=unfinished))))
            if not flow_runs:
                return
            in_flows = FlowRunFilter(id=FlowRunFilterId(any_=[run.id for run in flow_runs]))
            running = TaskRunFilter(state=TaskRunFilterState(type=TaskRunFilterStateType(any_=unfinished)))
            for run in flow_runs:
                client.set_flow_run_state(run.id, Crashed(message=message), force=True)
            # The API records task-run events asynchronously: look again until none is left running.
            for attempt in range(TASK_STATE_ROUNDS):
                task_runs = client.read_task_runs(flow_run_filter=in_flows, task_run_filter=running)
                for run in task_runs:
                    client.set_task_run_state(run.id, Crashed(message=message), force=True)
                if attempt and not task_runs:
                    break
                time.sleep(TASK_STATE_PAUSE_S)
    except Exception as error:  # the API may be what is going away; the exit must not wait for it
        os.write(2, f"ferrisbench: could not mark the flow runs Crashed: {type(error).__name__}: {error}\n".encode())


# ---------------------------------------------------------------- what is left running


REAPER = r"""
import os, select, signal, sys, time
def numbers(arg):  # "5,7-9" -> {5, 7, 8, 9}
    found = set()
    for part in filter(None, arg.split(",")):
        low, _, high = part.partition("-")
        found.update(range(int(low), int(high or low) + 1))
    return found

pidfd, uids, groups, others = int(sys.argv[1]), *(numbers(arg) for arg in sys.argv[2:5])
select.select([pidfd], [], [], 60)  # readable once every thread of the stopped process is gone

def alive(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False

def of_uids():
    return [int(e.name) for e in os.scandir("/proc") if e.name.isdigit() and _uid(e) in uids and alive(int(e.name))]

def _uid(entry):
    try:
        return entry.stat().st_uid
    except OSError:
        return None

def kill(pid, number, group=False):
    try:
        (os.killpg if group else os.kill)(pid, number)
    except OSError:
        pass

for group in groups:
    kill(group, signal.SIGKILL, group=True)
for pid in others:
    kill(pid, signal.SIGTERM)
deadline = time.monotonic() + 5
while uids and time.monotonic() < deadline:
    left = of_uids()
    if not left:
        break
    for pid in left:
        kill(pid, signal.SIGKILL)
    time.sleep(0.01)
while time.monotonic() < deadline and any(alive(pid) for pid in others):
    time.sleep(0.05)
for pid in others:
    kill(pid, signal.SIGKILL)
"""


def _start_reaper() -> None:
    try:
        locks = _held_worker_locks()
        uids = [span for worker in locks for span in _sandbox_uid_spans(worker)] if os.geteuid() == 0 else []
        groups, others = _children()
        me = os.pidfd_open(os.getpid())
        subprocess.Popen(
            [sys.executable, "-I", "-c", REAPER, str(me), ",".join(uids), *(",".join(map(str, v)) for v in (groups, others))],
            pass_fds=(me, *locks.values()), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    except Exception as error:
        os.write(2, f"ferrisbench: could not start the sandbox cleanup: {type(error).__name__}: {error}\n".encode())


def _sandbox_uid_spans(worker: int) -> list[str]:
    """The uids a sandbox worker's programs run as: the compiler's and its block of job uids."""
    from tasks.sandbox import worker_uids

    compiler, jobs = worker_uids(worker)
    return [str(compiler), f"{jobs.start}-{jobs.stop - 1}"]


def _held_worker_locks() -> dict[int, int]:
    """Sandbox worker id -> this process's fd holding its claim (tasks.batch_pool.claim_worker_ids)."""
    held = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            match = _WORKER_LOCK.search(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            continue
        if match:
            held[int(match.group(1))] = int(fd)
    return held


def _children() -> tuple[list[int], list[int]]:
    """This process's live children: the process groups of those in a session of their own (sandbox
    launches, started with start_new_session) and the others (e.g. Prefect's temporary API server)."""
    me, session = os.getpid(), os.getsid(0)
    groups, others = [], []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, ppid, pgrp, sid = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
        if ppid != me or state == b"Z":
            continue
        if sid != session and pgrp == int(entry):
            groups.append(pgrp)
        else:
            others.append(int(entry))
    return groups, others
