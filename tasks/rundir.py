"""The run directory: one process (`RunDirLock`) and one run identity (run.json) per directory; split out of `tasks.artifacts` to keep modules small."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.artifact_base import (
    ArtifactError,
    IdentityError,
    _fsync_dir,
    _now,
    _pretty_json,
    _temp_path,
    _write_synced,
    canonical_json,
    identity_hash,
)

RUN_FORMAT = "ferrisbench.run/1"
LOCK_NAME = ".ferrisbench.lock"
RUN_MANIFEST_NAME = "run.json"


class RunDirLocked(ArtifactError):
    """Another live process holds the run directory."""

    def __init__(self, message: str, holder_pid: int | None, holder_command: str | None):
        super().__init__(message)
        self.holder_pid = holder_pid
        self.holder_command = holder_command


class RunIdentityMismatch(ArtifactError):
    """The run directory was created by a run with other inputs or settings."""


class RunManifestCorrupt(ArtifactError):
    """run.json exists but cannot be read as a run manifest."""


@dataclass(frozen=True)
class RunManifest:
    path: Path
    identity: dict
    identity_hash: str
    created_at: str


# ---------------------------------------------------------------- run directory


class RunDirLock:
    """Exclusive, non-blocking hold on a run directory for the life of this process at most.

    `flock` locks die with their process, so a killed run never leaves a stale lock; the lock
    file is never deleted (deleting it would let two processes lock different inodes).
    """

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.lock_path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> "RunDirLock":
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise self._locked_error(holder) from None
        holder = {"pid": os.getpid(), "command": _own_command(), "host": socket.gethostname()}
        holder["since"] = _now()
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode("utf-8"), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # no stale holder details once released
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def _locked_error(self, holder: dict) -> RunDirLocked:
        pid, command = holder.get("pid"), holder.get("command")
        shown = command if command is None or len(command) <= 200 else command[:197] + "..."
        who = (
            f"pid {pid} ({shown}) on {holder.get('host')} since {holder.get('since')}"
            if pid is not None
            else "a process that has not recorded itself yet"
        )
        message = (
            f"run directory {self.run_dir} is in use by {who}. Wait for that run to finish or stop "
            f"it (e.g. `kill {pid if pid is not None else '<pid>'}`), then rerun to resume; "
            f"or use another run directory. The lock is released automatically when its holder "
            f"exits: do not delete {self.lock_path}."
        )
        return RunDirLocked(message, pid, command)


def ensure_run_identity(run_dir: Path, identity: Mapping) -> RunManifest:
    """Record the run's identity in run.json, or check it against the one recorded there.

    Creation is atomic and never replaces an existing run.json (hard link of a complete
    temp file), so even two unlocked processes cannot both claim one directory.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / RUN_MANIFEST_NAME
    canonical = canonical_json(identity)
    wanted = RunManifest(path, json.loads(canonical), identity_hash(identity), _now())
    record = {
        "format": RUN_FORMAT,
        "identity": wanted.identity,
        "identity_hash": wanted.identity_hash,
        "created_at": wanted.created_at,
    }
    temp = _temp_path(path)
    try:
        _write_synced(temp, lambda f: f.write(_pretty_json(record)))
        os.link(temp, path)
        _fsync_dir(run_dir)
        return wanted
    except FileExistsError:
        pass
    finally:
        temp.unlink(missing_ok=True)
    existing = load_run_manifest(run_dir)
    if existing.identity_hash != wanted.identity_hash:
        raise RunIdentityMismatch(
            f"run directory {run_dir} belongs to another run (identity "
            f"{existing.identity_hash[:12]}, this run {wanted.identity_hash[:12]}); differing keys:\n"
            + "\n".join(identity_diff(existing.identity, wanted.identity))
            + "\nUse a new run directory, or rerun with the recorded settings to resume."
        )
    return existing


def load_run_manifest(run_dir: Path) -> RunManifest:
    path = Path(run_dir) / RUN_MANIFEST_NAME
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record["format"] != RUN_FORMAT:
            raise ValueError(f"format {record['format']!r} is not {RUN_FORMAT!r}")
        if identity_hash(record["identity"]) != record["identity_hash"]:
            raise ValueError("identity_hash does not match the recorded identity")
        return RunManifest(path, record["identity"], record["identity_hash"], record["created_at"])
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, TypeError, IdentityError) as error:
        raise RunManifestCorrupt(
            f"{path} is not a valid run manifest ({error}); it is written atomically, so it was "
            "edited or damaged outside ferrisbench: restore it or use a new run directory"
        ) from error


def identity_diff(old: Mapping, new: Mapping) -> list[str]:
    """Readable lines `key.path: old → new` for every leaf that differs."""
    flat_old, flat_new = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(flat_old.keys() | flat_new.keys()):
        before, after = flat_old.get(key, _ABSENT), flat_new.get(key, _ABSENT)
        if before != after or type(before) is not type(after):
            lines.append(f"  {key}: {_show(before)} (recorded) → {_show(after)} (this run)")
    return lines


_ABSENT = object()


def _flatten(mapping: Mapping, prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def _show(value: Any) -> str:
    text = "absent" if value is _ABSENT else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 65536, 0).decode("utf-8") or "{}")
    except ValueError:
        return {}


def _own_command() -> str:
    try:
        raw = Path("/proc/self/cmdline").read_bytes()
        return " ".join(part.decode("utf-8", "replace") for part in raw.split(b"\0") if part)
    except OSError:
        return " ".join([sys.executable, *sys.argv])
