"""Identical programs are judged once: by key within a run, and across runs through a disk cache.

Models repeat themselves (and two models often write the same answer), so a run holds many
copies of one program. A verdict depends only on the program and on how it is judged, so the
key is the sha256 of both: the program as assembled with the benchmark's own test text (the
hardened harness embeds a per-process secret, so its text cannot be part of a stable key), the
expected tests and protocol, and everything that judges it — toolchain, edition, rustc flags,
timeouts, sandbox, executor version and a digest of the executor's own source code (any change
to how programs are assembled, compiled or judged starts a fresh cache).

The cache is one small JSON file per key, written to a temporary name and renamed into place,
so concurrent workers and processes never need a lock and a reader never sees half a verdict.
Only verdicts that a rerun would reproduce are stored: timeouts (load-dependent) and sandbox
errors (the machine, not the program) are always recomputed.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from functools import lru_cache
from pathlib import Path

import structlog

from tasks.config import ExecutorConfig
from tasks.schema import Problem, Status, Verdict

log = structlog.get_logger(__name__)

CACHE_FORMAT = "ferrisbench.verdict/1"
CACHEABLE = frozenset({Status.PASSED, Status.FAILED_TESTS, Status.COMPILE_ERROR, Status.RUNTIME_CRASH})
_EXECUTOR_SOURCES = ("verdict*.py", "completion*.py", "execute*.py", "sandbox*.py", "batch*.py",
                     "rust_lexer.py", "schema.py", "toolchain.py", "job_runner.py", "job_runner.rs",
                     "untrusted_files.py")
_PROGRAM_FIELDS = ("tests_passed", "compile_seconds", "run_seconds", "error_codes", "diagnostic")


def program_sha256(program: str) -> str:
    return hashlib.sha256(program.encode("utf-8")).hexdigest()


@lru_cache(maxsize=1)
def executor_code_digest() -> str:
    """sha256 over the source of every module that shapes a verdict (assembly, sandbox, judging)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for path in sorted({p for pattern in _EXECUTOR_SOURCES for p in here.glob(pattern)}):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def judging_context(config: ExecutorConfig, toolchain_version: str, sandbox_identity: str) -> str:
    """Digest of how every program of a run is judged (the part of the key shared by all)."""
    from tasks.execute import EXECUTOR_VERSION, RUSTC_FLAGS

    context = {
        "format": CACHE_FORMAT,
        "executor_version": EXECUTOR_VERSION,
        "executor_code": executor_code_digest(),
        "toolchain": toolchain_version,
        "sandbox": sandbox_identity,
        "rustc_flags": list(RUSTC_FLAGS),
        "edition": config.edition,
        "compile_timeout_s": config.compile_timeout_s,
        "run_timeout_s": config.run_timeout_s,
        "diagnostic_chars": config.diagnostic_chars,
    }
    return hashlib.sha256(json.dumps(context, sort_keys=True).encode()).hexdigest()


def verdict_key(context: str, problem: Problem, assembly: str) -> str:
    """The key of one program: the run's judging context, what the program must show, its text."""
    digest = hashlib.sha256()
    for part in (context, problem.protocol.value, "\n".join(problem.expected_tests), assembly):
        digest.update(part.encode("utf-8") + b"\0")
    return digest.hexdigest()


class VerdictCache:
    """Program verdicts on disk under `root`, one `<key>.json` per program, lock-free."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    def get(self, key: str) -> Verdict | None:
        """The stored verdict, or None (missing, unreadable or from another format: recompute)."""
        try:
            data = json.loads(self._path(key).read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                return None
            return Verdict(Status(data["status"]), **{name: data[name] for name in _PROGRAM_FIELDS})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("verdict_cache_unreadable", key=key, error=repr(error))
            return None

    def put(self, key: str, verdict: Verdict) -> bool:
        """Store `verdict` if a rerun would reproduce it; True when stored."""
        if verdict.status not in CACHEABLE:
            return False
        path = self._path(key)
        record = {"format": CACHE_FORMAT, "key": key, "status": verdict.status.value,
                  **{name: getattr(verdict, name) for name in _PROGRAM_FIELDS}}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(tmp, path)
            return True
        except OSError as error:  # a full or read-only cache only costs speed
            log.warning("verdict_cache_write_failed", path=str(path), error=repr(error))
            tmp.unlink(missing_ok=True)
            return False
