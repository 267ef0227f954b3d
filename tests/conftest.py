"""Shared test setup: a private Prefect home, one Prefect API server per session, a tiny benchmark.

- Every session gets its own PREFECT_HOME (never the developer's ~/.prefect) and no telemetry.
- `prefect_api`: one real `prefect server start` on a free loopback port, started on first use.
  In-process flows and every subprocess (kill-and-resume runs, Ray workers) report to it; an
  ephemeral API per subprocess would cost ~10 s each (FACTS.md).
- `tiny_run_inputs`: a 12-task HumanEval-Rust-format benchmark (one task's reference is wrong, so
  the validity gate excludes it) and 4 samples per task: right, wrong, not compiling, and right
  but using `std::fs` (passes without the policy, a policy violation with it).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_session_dirs: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    home = tempfile.mkdtemp(prefix="ferrisbench-test-prefect-")
    _session_dirs.append(home)
    os.environ["PREFECT_HOME"] = home
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.pop("PREFECT_API_URL", None)  # tests never report to a developer's server


def pytest_unconfigure(config: pytest.Config) -> None:
    for directory in _session_dirs:
        shutil.rmtree(directory, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, log: Path, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.25)
    raise RuntimeError(f"{url} not up after {timeout_s} s:\n{log.read_text()[-3000:]}")


def die_with_parent() -> None:
    """In the child before exec: SIGTERM when the test process dies, even by SIGKILL (no orphans)."""
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def stop_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """End a process we started with start_new_session=True, and everything it started."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)  # stragglers of the group, if any
    except ProcessLookupError:
        pass
    process.wait()


@pytest.fixture(scope="session")
def requires_root() -> None:
    """Used through `tests.helpers.requires_root`: skip without root, fail under CI=true."""
    from tests.helpers import root_or_skip

    root_or_skip()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory):
    """URL of a real Prefect API for this session; in-process settings and os.environ point at it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    port = free_port()
    log = tmp_path_factory.mktemp("prefect-server") / "server.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            preexec_fn=die_with_parent,
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/api/health", server, log)
        url = f"http://127.0.0.1:{port}/api"
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        try:
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=5)  # logs still queued for the API go out before it stops
        finally:
            os.environ.pop("PREFECT_API_URL", None)
            stop_process_group(server)


# ---------------------------------------------------------------- a tiny benchmark and samples

TASKS = 12
SAMPLES_PER_TASK = 4
BROKEN_REFERENCE = "Demo/t05"


def _completion(kind: int, i: int) -> str:
    return [
        f"\n    x + {i}\n}}",  # right
        f"\n    x - {i} - 1\n}}",  # wrong: failed_tests
        '\n    x + "a"\n}',  # E0277: compile_error
        f'\n    let _ = std::fs::metadata("/");\n    x + {i}\n}}',  # right, but a policy violation
    ][kind]


def write_tiny_benchmark(path: Path) -> Path:
    rows = []
    for i in range(TASKS):
        task_id = f"Demo/t{i:02d}"
        answer = f"x + {i} + 1" if task_id == BROKEN_REFERENCE else f"x + {i}"
        rows.append({
            "task_id": task_id,
            "category": "codegen" if i % 2 == 0 else "fix",
            "prompt": f"/// Adds {i}.\nfn add_{i}(x: i64) -> i64 {{",
            "canonical_solution": f"\n    {answer}\n}}",
            "test": f"#[cfg(test)]\nmod tests {{\n    use super::*;\n    #[test]\n    fn adds() {{ assert_eq!(add_{i}(1), {1 + i}); }}\n}}\n",
            "entry_point": f"add_{i}",
        })
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def write_tiny_samples(path: Path, model: str = "demo") -> Path:
    rows = [
        {"task_id": f"Demo/t{i:02d}", "completion": _completion(kind, i), "model": model}
        for i in range(TASKS)
        for kind in range(SAMPLES_PER_TASK)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="session")
def tiny_run_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-inputs")
    return {
        "benchmark": write_tiny_benchmark(root / "bench.jsonl"),
        "samples": write_tiny_samples(root / "samples.jsonl"),
        "cache": root / "cache",  # FERRISBENCH_CACHE: the gate cache starts empty
    }


REFERENCE_SHARD_SIZE = 10  # 48 samples → 5 shards


def tiny_run_config(inputs: dict[str, Path], out: Path, **changes):
    """What `ferrisbench evaluate SAMPLES --benchmark BENCH --out OUT --shard-size 10 --workers 2` runs."""
    from tasks.config import ExecutorConfig, RunConfig

    return RunConfig(
        samples=inputs["samples"], benchmark=str(inputs["benchmark"]), out=out, shard_size=REFERENCE_SHARD_SIZE,
        executor=ExecutorConfig(sandbox="bubblewrap", workers=2), show_progress=False, **changes,
    )


@pytest.fixture(scope="session")
def gate_cache(tiny_run_inputs):
    """FERRISBENCH_CACHE of this process: the session's private cache (gate, verdicts)."""
    previous = os.environ.get("FERRISBENCH_CACHE")
    os.environ["FERRISBENCH_CACHE"] = str(tiny_run_inputs["cache"])
    yield tiny_run_inputs["cache"]
    if previous is None:
        os.environ.pop("FERRISBENCH_CACHE", None)
    else:
        os.environ["FERRISBENCH_CACHE"] = previous


@pytest.fixture(scope="session")
def reference_run(prefect_api, tiny_run_inputs, gate_cache, tmp_path_factory) -> dict:
    """One uninterrupted run of the tiny inputs (in this process): what every other run must match."""
    from flows.evaluate import run_evaluation

    out = tmp_path_factory.mktemp("reference") / "run"
    config = tiny_run_config(tiny_run_inputs, out)
    return {"config": config, "outcome": run_evaluation(config), "dir": out}


def cli_env(cache: Path, **extra: str) -> dict[str, str]:
    """Environment of a `ferrisbench` subprocess: this session's Prefect API, a private cache."""
    return {**os.environ, "FERRISBENCH_CACHE": str(cache), "PYTHONPATH": str(REPO), **extra}


def ferrisbench_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]
