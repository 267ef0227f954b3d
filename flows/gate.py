"""The validity gate as a cached table, and the machine checks every stage needs first.

Shared by `ferrisbench problems validate` and the evaluation flow's gate stage.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import structlog
from tqdm import tqdm

from tasks.artifacts import identity_hash
from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool, execution_identity
from tasks.problems import ProblemSet, default_cache_dir
from tasks.toolchain import Toolchain, find_toolchain
from tasks.validity import gate_frame, run_gate

log = structlog.get_logger(__name__)


def progress_bar(total: int, label: str, enabled: bool = True, unit: str = "sample"):
    # disable=None: a bar on a terminal only, no carriage-return clutter in logs and CI
    return tqdm(total=total, desc=label, unit=unit, disable=None if enabled else True, leave=False)


def prepare(config: ExecutorConfig) -> tuple[Toolchain, SandboxPool]:
    """Toolchain and sandboxes, proven to work before anything expensive."""
    toolchain = find_toolchain()
    pool = SandboxPool(config, toolchain)
    pool.self_check()
    return toolchain, pool


def validity_table(
    problem_set: ProblemSet,
    config: ExecutorConfig,
    pool: SandboxPool,
    toolchain: Toolchain,
    cache_dir: Path | None = None,
    show_progress: bool = True,
) -> pd.DataFrame:
    """The gate's verdict per task, cached on disk by benchmark hash + executor identity."""
    identity = {
        "problems": problem_set.content_hash,
        **execution_identity(config, toolchain, pool.identity()),
    }
    cache = Path(cache_dir or default_cache_dir()) / "gate" / f"{identity_hash(identity)}.parquet"
    if cache.exists():
        try:
            return pd.read_parquet(cache)
        except Exception:  # a torn cache file is recomputed, never trusted
            log.warning("gate_cache_unreadable", path=str(cache))
    with progress_bar(len(problem_set.problems), "validity gate", show_progress) as bar:
        results = run_gate(list(problem_set.problems), config, pool, toolchain, progress=lambda: bar.update())
    frame = gate_frame(results)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    frame.to_parquet(tmp)
    tmp.replace(cache)
    return frame
