"""Where the flows run: task runner choice, Prefect API checks, per-process executors and locks.

- Local (default): a thread pool runs shard tasks; they share this process's sandbox pool, so
  `parallel_shards` overlaps one shard's tail with the next shard's start without oversubscribing.
- Ray (`ray_address`): `prefect-ray` submits each shard task to the cluster. Every Ray worker
  process builds its own sandbox pool once (proven by a self-check) on host-wide worker ids,
  and must report to the same Prefect API: without `PREFECT_API_URL` each worker would start its
  own temporary server (FACTS.md), so that combination is refused before anything runs.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import structlog

from tasks.config import ExecutorConfig, RunConfig
from tasks.evaluate import SandboxPool, execution_identity
from tasks.rundir import RunDirLock
from tasks.runplan import RunPlan, check_inputs, make_plan
from tasks.toolchain import Toolchain, find_toolchain

log = structlog.get_logger(__name__)

# Passed on to Ray workers so they report to the same API and see the same switches.
FORWARDED_ENV_PREFIXES = ("PREFECT_", "FERRISBENCH_")


class PipelineSetupError(RuntimeError):
    """The requested way of running cannot work here; the message says what to change."""


# ---------------------------------------------------------------- Prefect and task runners


def prefect_api_url() -> str | None:
    from prefect.settings import get_current_settings

    return get_current_settings().api.url


def check_runner_setup(config: RunConfig) -> None:
    """Refuse a Ray run that cannot report to one Prefect API, before any work starts."""
    if not config.ray_address:
        return
    try:
        import prefect_ray  # noqa: F401
    except ImportError:
        raise PipelineSetupError(
            "--ray-address needs prefect-ray: install the extra with "
            "`.venv/bin/pip install -c constraints.txt -e '.[ray]'`"
        ) from None
    if not prefect_api_url():
        raise PipelineSetupError(
            "a Ray run needs a Prefect server that every Ray worker can reach: start one with "
            "`prefect server start` and set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); "
            "without it each worker would start its own temporary API and the run would be invisible"
        )


def task_runner_for(config: RunConfig):
    if not config.ray_address:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.parallel_shards)
    from prefect_ray import RayTaskRunner

    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)}
    env["PREFECT_API_URL"] = prefect_api_url()
    return RayTaskRunner(address=config.ray_address, init_kwargs={"runtime_env": {"env_vars": env}})


# ---------------------------------------------------------------- executors, once per process


_executors: dict[str, tuple[Toolchain, SandboxPool]] = {}
_executors_guard = threading.Lock()


def executor_for(config: ExecutorConfig) -> tuple[Toolchain, SandboxPool]:
    """This process's toolchain and sandbox pool for `config`, self-checked on first use.

    The pool claims host-wide sandbox worker ids, so shard tasks running in several processes of
    one host (Ray workers, the driver's gate) never share a sandbox uid.
    """
    key = config.model_dump_json()
    with _executors_guard:
        if key not in _executors:
            toolchain = find_toolchain()
            pool = SandboxPool(config, toolchain)  # claims sandbox worker ids no other pool on this host holds
            pool.self_check()
            _executors[key] = (toolchain, pool)
        return _executors[key]


def executor_identity(config: ExecutorConfig) -> dict:
    toolchain, pool = executor_for(config)
    return execution_identity(config, toolchain, pool.identity())


# ---------------------------------------------------------------- plans and run directories


_checked: dict[str, tuple] = {}
_plans: dict[str, RunPlan] = {}


def checked_inputs(config: RunConfig) -> tuple:
    """Benchmark and samples read and checked (once per process); bad input fails here."""
    key = config.model_dump_json()
    if key not in _checked:
        _checked[key] = check_inputs(config)
    return _checked[key]


def plan_for(config: RunConfig) -> RunPlan:
    """The checked plan of `config` (made once per process: the CLI makes it before the flow)."""
    key = config.model_dump_json()
    if key not in _plans:
        _plans[key] = make_plan(config, checked_inputs(config), executor_identity(config.executor))
    return _plans[key]


_held_dirs: dict[Path, list] = {}  # run dir -> [lock, holders]
_held_guard = threading.Lock()


@contextmanager
def hold_run_dir(run_dir: Path) -> Iterator[None]:
    """The run directory's lock, re-entrant within this process (the CLI, then the flow)."""
    run_dir = Path(run_dir).absolute()
    with _held_guard:
        entry = _held_dirs.get(run_dir)
        if entry is None:
            lock = RunDirLock(run_dir)
            lock.__enter__()
            entry = _held_dirs[run_dir] = [lock, 0]
        entry[1] += 1
    try:
        yield
    finally:
        with _held_guard:
            entry[1] -= 1
            if entry[1] == 0:
                entry[0].__exit__(None, None, None)
                del _held_dirs[run_dir]


# ---------------------------------------------------------------- per-process inputs of shard tasks


@lru_cache(maxsize=4)
def load_problems(path: str, content_hash: str) -> dict:
    from tasks.problems import read_problems_parquet

    problem_set = read_problems_parquet(Path(path))
    if problem_set.content_hash != content_hash:
        raise RuntimeError(f"{path} holds problems {problem_set.content_hash[:12]}, the run expects {content_hash[:12]}")
    return problem_set.by_id()


@lru_cache(maxsize=4)
def load_validity(path: str, identity_hash: str):
    import pandas as pd

    from tasks.artifacts import check_shard

    manifest = json.loads(Path(path).with_suffix(".manifest.json").read_text(encoding="utf-8"))
    check = check_shard(Path(path), manifest["identity"])
    if check.problem is not None or manifest["identity_hash"] != identity_hash:
        raise RuntimeError(f"{path} is not the validity table this run expects ({check.problem})")
    return pd.read_parquet(path)
