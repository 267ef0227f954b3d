"""Shared base of `tasks.artifacts` and `tasks.rundir` (errors, canonical identities, file plumbing), so neither imports the other."""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import secrets
import socket
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, BinaryIO

_TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.tmp-(?P<pid>\d+)-(?P<token>[0-9a-f]{12})-(?P<host>[^/]*)$")


class ArtifactError(Exception):
    """Base of the errors of `tasks.artifacts` and `tasks.rundir`."""


class IdentityError(ArtifactError, TypeError):
    """An identity that cannot be hashed canonically (not plain JSON data)."""


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


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _pretty_json(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
