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
import hashlib
import json
import os
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import BinaryIO

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from tasks.artifact_base import (  # noqa: F401  (re-exported: the public API of this module)
    _TEMP_NAME,
    ArtifactError,
    IdentityError,
    _check_json_data,
    _fsync_dir,
    _now,
    _pretty_json,
    _temp_path,
    _write_synced,
    canonical_json,
    identity_hash,
)
from tasks.rundir import (  # noqa: F401  (re-exported: the public API of this module)
    LOCK_NAME,
    RUN_FORMAT,
    RUN_MANIFEST_NAME,
    RunDirLock,
    RunDirLocked,
    RunIdentityMismatch,
    RunManifest,
    RunManifestCorrupt,
    ensure_run_identity,
    identity_diff,
    load_run_manifest,
)

log = structlog.get_logger(__name__)

SHARD_FORMAT = "ferrisbench.shard/1"


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


# ---------------------------------------------------------------- file plumbing


def _atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> None:
    """Write through a temp file in the same directory, fsync it, rename, fsync the directory."""
    temp = _temp_path(target)
    try:
        _write_synced(temp, write)
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(target.parent)


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

