"""Atomic, self-describing, resumable stage outputs.

Every stage writes parquet shards with a JSON manifest recording what the shard was computed
from (its identity). Writes go to a temporary name in the same directory, are fsynced and
renamed; the manifest is written last, so a manifest only ever describes a complete shard.
A rerun skips a shard whose manifest matches the identity and whose file matches the recorded
size, sha256 and row count, and recomputes anything else (killed mid-write, truncated, changed).
One process at a time may work in a run directory (`RunDirLock`), and a run directory belongs to
one run identity (`ensure_run_identity`), so reruns never mix inputs.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import secrets
import socket
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

log = structlog.get_logger(__name__)

SHARD_FORMAT = "ferrisbench.shard/1"
RUN_FORMAT = "ferrisbench.run/1"
LOCK_NAME = ".ferrisbench.lock"
RUN_MANIFEST_NAME = "run.json"
_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-(?P<token>[0-9a-f]{12})-(?P<host>[^/]*)$")


class ArtifactError(Exception):
    """Base of the errors of this module."""


class IdentityError(ArtifactError, TypeError):
    """An identity that cannot be hashed canonically (not plain JSON data)."""


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


class ShardProblem(str, Enum):
    """Why a shard on disk cannot be reused."""

    MISSING = "missing"  # neither file nor manifest
    NO_MANIFEST = "no_manifest"  # file without manifest: the writer died before finishing
    MANIFEST_CORRUPT = "manifest_corrupt"
    IDENTITY_CHANGED = "identity_changed"
    FILE_MISSING = "file_missing"
    TRUNCATED = "truncated"  # file shorter than recorded
    CORRUPT = "corrupt"  # other size, other sha256, unreadable metadata or other row count


@dataclass(frozen=True)
class ShardInfo:
    path: Path
    manifest_path: Path
    identity_hash: str
    rows: int
    file_sha256: str
    file_size: int
    schema: tuple[tuple[str, str], ...]  # (field name, arrow type)
    created_at: str


@dataclass(frozen=True)
class ShardCheck:
    info: ShardInfo | None
    problem: ShardProblem | None
    detail: str = ""


@dataclass(frozen=True)
class RunManifest:
    path: Path
    identity: dict
    identity_hash: str
    created_at: str


# ---------------------------------------------------------------- identities


def canonical_json(identity: Mapping) -> str:
    """The one byte-stable text of an identity: sorted keys, no whitespace, no NaN."""
    if not isinstance(identity, Mapping):
        raise IdentityError(f"an identity must be a mapping, got {type(identity).__name__}")
    _check_json_data(identity, "identity")
    return json.dumps(
        identity, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def identity_hash(identity: Mapping) -> str:
    """sha256 hex digest of the identity's canonical JSON."""
    return hashlib.sha256(canonical_json(identity).encode("utf-8")).hexdigest()


def _check_json_data(value: Any, where: str) -> None:
    if isinstance(value, Enum):
        raise IdentityError(f"{where}: use the enum's .value, not {value!r}")
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise IdentityError(f"{where}: {value!r} is not valid JSON")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise IdentityError(f"{where}: key {key!r} is not a string")
            _check_json_data(item, f"{where}[{key!r}]")
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_json_data(item, f"{where}[{index}]")
        return
    raise IdentityError(f"{where}: {type(value).__name__} {value!r} is not JSON data")


# ---------------------------------------------------------------- shards


def manifest_path_for(path: Path) -> Path:
    return path.with_suffix(".manifest.json")


def write_shard(data: pd.DataFrame | pa.Table, path: Path, identity: Mapping) -> ShardInfo:
    """Write `data` to `path` atomically, then its manifest; returns what the manifest records."""
    path = Path(path)
    if path.suffix != ".parquet":
        raise ValueError(f"shard path must end in .parquet, got {path}")
    if isinstance(data, pd.DataFrame):
        table = pa.Table.from_pandas(data, preserve_index=False)
    elif isinstance(data, pa.Table):
        table = data
    else:
        raise TypeError(f"write_shard takes a DataFrame or a pyarrow Table, got {type(data).__name__}")
    canonical = canonical_json(identity)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path.parent, only_for=path.name)
    manifest = manifest_path_for(path)
    if manifest.exists():  # the old manifest must never describe the new file
        manifest.unlink()
        _fsync_dir(path.parent)
    _atomic_write(path, lambda f: pq.write_table(table, f))
    digest, size = _sha256_and_size(path)
    info = ShardInfo(
        path=path,
        manifest_path=manifest,
        identity_hash=hashlib.sha256(canonical.encode("utf-8")).hexdigest(),
        rows=table.num_rows,
        file_sha256=digest,
        file_size=size,
        schema=tuple((field.name, str(field.type)) for field in table.schema),
        created_at=_now(),
    )
    record = {
        "format": SHARD_FORMAT,
        "file": path.name,
        "identity": json.loads(canonical),
        "identity_hash": info.identity_hash,
        "rows": info.rows,
        "file_sha256": info.file_sha256,
        "file_size": info.file_size,
        "schema": [{"name": name, "type": kind} for name, kind in info.schema],
        "created_at": info.created_at,
    }
    _atomic_write(manifest, lambda f: f.write(_pretty_json(record)))
    return info


def check_shard(path: Path, identity: Mapping) -> ShardCheck:
    """Whether the shard at `path` is complete and was computed from `identity`, and if not, why."""
    path = Path(path)
    manifest = manifest_path_for(path)
    if not manifest.exists():
        problem = ShardProblem.NO_MANIFEST if path.exists() else ShardProblem.MISSING
        return ShardCheck(None, problem)
    try:
        record = json.loads(manifest.read_text(encoding="utf-8"))
        recorded = ShardInfo(
            path=path,
            manifest_path=manifest,
            identity_hash=str(record["identity_hash"]),
            rows=int(record["rows"]),
            file_sha256=str(record["file_sha256"]),
            file_size=int(record["file_size"]),
            schema=tuple((f["name"], f["type"]) for f in record["schema"]),
            created_at=str(record["created_at"]),
        )
        consistent = record["format"] == SHARD_FORMAT and record["file"] == path.name
        if not consistent or identity_hash(record["identity"]) != recorded.identity_hash:
            detail = "manifest does not describe this file"
            return ShardCheck(None, ShardProblem.MANIFEST_CORRUPT, detail)
    except (OSError, ValueError, KeyError, TypeError, IdentityError) as error:
        return ShardCheck(None, ShardProblem.MANIFEST_CORRUPT, repr(error))
    wanted = identity_hash(identity)
    if wanted != recorded.identity_hash:
        return ShardCheck(None, ShardProblem.IDENTITY_CHANGED, f"{recorded.identity_hash} → {wanted}")
    if not path.exists():
        return ShardCheck(None, ShardProblem.FILE_MISSING)
    digest, size = _sha256_and_size(path)
    if size < recorded.file_size:
        return ShardCheck(None, ShardProblem.TRUNCATED, f"{size} of {recorded.file_size} bytes")
    if size != recorded.file_size or digest != recorded.file_sha256:
        return ShardCheck(None, ShardProblem.CORRUPT, "size or sha256 differs from the manifest")
    try:
        rows = pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException) as error:
        return ShardCheck(None, ShardProblem.CORRUPT, f"unreadable parquet metadata: {error}")
    if rows != recorded.rows:
        return ShardCheck(None, ShardProblem.CORRUPT, f"{rows} rows, manifest says {recorded.rows}")
    return ShardCheck(recorded, None)


def read_valid_shard(path: Path, identity: Mapping) -> ShardInfo | None:
    """The shard's info when it can be reused as is; None (with the reason logged) otherwise."""
    check = check_shard(path, identity)
    if check.problem is not None:
        log.info("shard_not_reusable", path=str(path), reason=check.problem.value, detail=check.detail)
    return check.info


def remove_stale_temp_files(directory: Path, only_for: str | None = None) -> list[Path]:
    """Delete temp files left by dead writers of this host; returns what was removed.

    A temp file never looks like a shard (dot-prefixed, no .parquet suffix), so readers ignore
    it anyway; this only reclaims space. Files of live writers or other hosts are left alone.
    """
    removed = []
    host = socket.gethostname()
    for candidate in Path(directory).iterdir():
        match = _TEMP_NAME.match(candidate.name)
        if not match or match["host"] != host or (only_for and match["target"] != only_for):
            continue
        if _process_alive(int(match["pid"])):
            continue
        try:
            candidate.unlink()
        except FileNotFoundError:
            continue
        log.info("removed_stale_temp_file", path=str(candidate), writer_pid=int(match["pid"]))
        removed.append(candidate)
    return removed


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


# ---------------------------------------------------------------- file plumbing


def _temp_path(target: Path) -> Path:
    name = f".{target.name}.tmp-{os.getpid()}-{secrets.token_hex(6)}-{socket.gethostname()}"
    return target.with_name(name)


def _write_synced(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Create `path` (never overwrite), fill it through `write`, fsync it."""
    with open(path, "xb") as handle:
        write(handle)
        handle.flush()
        os.fsync(handle.fileno())


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temp file in the same directory, fsync it, rename, fsync the directory."""
    temp = _temp_path(target)
    try:
        _write_synced(temp, write)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_and_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


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


def _pretty_json(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
