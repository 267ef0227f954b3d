"""Specification of run-directory safety: one process per run directory, one run identity."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tasks.artifacts import identity_hash
from tasks.rundir import (
    RunDirLock,
    RunDirLocked,
    RunIdentityMismatch,
    RunManifestCorrupt,
    ensure_run_identity,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = {"samples_hash": "abc", "executor": {"version": 3, "edition": "2021"}, "timeouts": [15, 5]}


def start_python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True
    )


def test_the_run_directory_names_stay_importable_from_tasks_artifacts():
    import tasks.artifacts as artifacts
    import tasks.rundir as rundir

    for name in (
        "RunDirLock", "RunDirLocked", "RunIdentityMismatch", "RunManifestCorrupt", "RunManifest",
        "ensure_run_identity", "load_run_manifest", "identity_diff",
    ):
        assert getattr(artifacts, name) is getattr(rundir, name)


# ---------------------------------------------------------------- run directory lock


HOLD_LOCK = """
    import sys, time
    from tasks.rundir import RunDirLock
    with RunDirLock({run_dir!r}):
        print("held", flush=True)
        time.sleep(120)
"""


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    holder = start_python(HOLD_LOCK.format(run_dir=str(tmp_path)))
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked) as refused:
            with RunDirLock(tmp_path):
                pass
        assert f"pid {holder.pid}" in str(refused.value)
        assert f"({sys.executable} -c" in str(refused.value)  # the holder's command line
        assert "time.sleep(120)" in refused.value.holder_command
        assert refused.value.holder_pid == holder.pid
    finally:
        holder.kill()
        holder.wait(timeout=60)


def test_a_killed_holder_does_not_block_the_next_run(tmp_path):
    holder = start_python(HOLD_LOCK.format(run_dir=str(tmp_path)))
    assert holder.stdout.readline().strip() == "held"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    with RunDirLock(tmp_path) as lock:
        assert json.loads(lock.lock_path.read_text())["pid"] == os.getpid()


def test_the_lock_is_exclusive_within_one_process_and_released_on_exit(tmp_path):
    with RunDirLock(tmp_path):
        with pytest.raises(RunDirLocked, match=f"pid {os.getpid()}"):
            with RunDirLock(tmp_path):
                pass
    with RunDirLock(tmp_path):
        pass


# ---------------------------------------------------------------- run identity


def test_run_identity_is_recorded_once_and_accepted_again(tmp_path):
    first = ensure_run_identity(tmp_path, IDENTITY)
    recorded = json.loads((tmp_path / "run.json").read_text())
    assert recorded["identity_hash"] == identity_hash(IDENTITY)
    again = ensure_run_identity(tmp_path, dict(reversed(list(IDENTITY.items()))))
    assert again == first
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_a_rerun_with_other_settings_is_refused_with_the_differing_keys(tmp_path):
    ensure_run_identity(tmp_path, IDENTITY)
    changed = {**IDENTITY, "executor": {"version": 4, "edition": "2021"}, "seed": 1}
    with pytest.raises(RunIdentityMismatch) as refused:
        ensure_run_identity(tmp_path, changed)
    message = str(refused.value)
    assert "executor.version: 3 (recorded) → 4 (this run)" in message
    assert "seed: absent (recorded) → 1 (this run)" in message
    assert "edition" not in message
    assert json.loads((tmp_path / "run.json").read_text())["identity"]["executor"]["version"] == 3


def test_a_damaged_run_manifest_is_reported(tmp_path):
    (tmp_path / "run.json").write_text("{}")
    with pytest.raises(RunManifestCorrupt, match="run.json is not a valid run manifest"):
        ensure_run_identity(tmp_path, IDENTITY)
