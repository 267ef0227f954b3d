"""Judge generated shards in the background while the next ones generate (issue #5's overlap).

The GPU generates shard k+1 while the CPU cores would otherwise wait; a `Prejudger` judges shard
k meanwhile. Its verdicts are thrown away: their only effect is to fill the verdict cache
(`tasks.dedup`), so the evaluate stage later finds those programs judged (`verdict_source`
"cache") and stays the single authority over results. Nothing here can change a result or
break a resume: cache entries are keyed by program content and written atomically, a kill loses
at most the shard in flight, and anything not in the cache (a failed shard, a timeout, which is
never cached) is simply judged again by the evaluate stage, which fails loudly if the cause
persists. So an error here is logged and counted, never raised into generation.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import structlog

from tasks.batch_pool import SandboxPool
from tasks.config import ExecutorConfig
from tasks.evaluate import JudgeStats, judge_records
from tasks.schema import Problem
from tasks.toolchain import Toolchain, find_toolchain

log = structlog.get_logger(__name__)

_STOP = object()


def default_workers(config: ExecutorConfig) -> int:
    """One core fewer than the evaluation uses: the generation engine's process needs one."""
    return max(1, config.workers - 1)


class Prejudger:
    """One background thread and a queue of finished generation shards (parquet paths).

    `submit(path)` returns at once; `close()` waits for the queue to drain (or, with
    `wait=False`, drops what has not started) and returns the summary. The sandbox pool is built
    on the first shard, with `workers` sandboxes (default: `default_workers`), and closed at the
    end; `pool`/`toolchain` reuse given ones instead (not closed here). `on_judged(record)` is
    told about each shard (its counts, or its `error`), e.g. to log it to the Prefect run.
    """

    def __init__(self, problems: dict[str, Problem], config: ExecutorConfig, workers: int | None = None,
                 pool: SandboxPool | None = None, toolchain: Toolchain | None = None,
                 on_judged: Callable[[dict], None] | None = None):
        if not config.verdict_cache:
            raise ValueError("pre-judging only fills the verdict cache: it needs ExecutorConfig.verdict_cache")
        self.problems = problems
        self.config = config.model_copy(update={"workers": workers or default_workers(config)})
        self.on_judged = on_judged
        self._pool, self._toolchain, self._own_pool = pool, toolchain, pool is None
        self._queue: queue.Queue = queue.Queue()
        self._stopping = threading.Event()
        self._closed = False
        self._final: dict | None = None
        self.shards: list[dict] = []  # one record per shard taken up: counts, monotonic start/end, or error
        self.skipped = 0
        self._thread = threading.Thread(target=self._run, name="ferrisbench-prejudge", daemon=True)
        self._thread.start()

    def submit(self, path: Path) -> None:
        if self._closed:
            raise RuntimeError("this Prejudger is closed")
        self._queue.put(Path(path))

    def close(self, wait: bool = True) -> dict:
        """Wait for every submitted shard (or only the one in progress when `wait` is False);
        the summary, whose `drain_seconds` is the wait (what the overlap did not hide). Idempotent."""
        if self._final is None:
            started = time.monotonic()
            self._closed = True
            if not wait:
                self._stopping.set()
            self._queue.put(_STOP)
            self._thread.join()
            self._final = {**self.summary(), "drain_seconds": round(time.monotonic() - started, 2)}
            log.info("prejudge_closed", **{**self._final, "errors": len(self._final["errors"])})
        return self._final

    def __enter__(self) -> "Prejudger":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(wait=exc_type is None)  # generation failed: no use judging what is left

    def summary(self) -> dict:
        done = [s for s in self.shards if "error" not in s]
        total = {key: sum(s[key] for s in done) for key in ("samples", "executed", "cached", "duplicates", "not_run")}
        return {"workers": self.config.workers, "shards": len(done), **total, "skipped_shards": self.skipped,
                "errors": [f"{s['path']}: {s['error']}" for s in self.shards if "error" in s],
                "busy_seconds": round(sum(s["finished"] - s["started"] for s in self.shards), 2)}

    # ------------------------------------------------------------ the background thread

    def _run(self) -> None:
        try:
            while (path := self._queue.get()) is not _STOP:
                if self._stopping.is_set():
                    self.skipped += 1
                    continue
                self._judge(path)
        finally:
            if self._own_pool and self._pool is not None:
                self._pool.close()

    def _judge(self, path: Path) -> None:
        record: dict = {"path": str(path), "started": time.monotonic()}
        try:
            rows = pd.read_parquet(path).to_dict("records")
            stats = JudgeStats()
            judged = judge_records(rows, self.problems, self.config, *self._executor(), stats=stats)
            record.update(samples=len(rows), executed=stats.executed, cached=stats.cached,
                          duplicates=stats.duplicates, not_run=sum(j.verdict_source == "not_run" for j in judged))
        except Exception as error:  # the evaluate stage redoes this shard (and fails loudly if it must)
            record["error"] = f"{type(error).__name__}: {error}"
            log.warning("prejudge_failed", shard=str(path), error=repr(error))
        record["finished"] = time.monotonic()
        self.shards.append(record)
        if "error" not in record:
            log.info("shard_prejudged", shard=str(path), samples=record["samples"], executed=record["executed"],
                     cached=record["cached"], seconds=round(record["finished"] - record["started"], 2))
        if self.on_judged is not None:
            try:
                self.on_judged(record)
            except Exception as error:
                log.warning("prejudge_callback_failed", error=repr(error))

    def _executor(self) -> tuple[SandboxPool, Toolchain]:
        """(pool, toolchain), built on first use: a pool that cannot start is this shard's error."""
        if self._pool is None:
            self._toolchain = self._toolchain or find_toolchain()
            self._pool = SandboxPool(self.config, self._toolchain)
        return self._pool, self._toolchain
