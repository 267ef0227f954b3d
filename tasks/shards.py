"""Sharded stage outputs of a run directory: samples shards in, results shards out, one merge.

Layout of a run directory (DESIGN.md "Identities"):

    run.json                 run identity (tasks.rundir)         config.json   what `resume` repeats
    problems.parquet         the benchmark table                 validity.parquet   the gate's verdicts
    samples/<model>/shard-00000.parquet                          (+ .manifest.json each)
    results/<model>/<mode>/shard-00000.parquet                   one per samples shard and policy mode
    results.parquet  metrics.json  report.md                     the merged outputs (aggregate)
    attempts.jsonl           one line per finished attempt: shards computed / reused

Shards are cut by a deterministic rule (sorted by model, task_id, sample_index; `shard_size`
rows each), so the same inputs always give the same shards. A shard whose manifest matches its
identity is reused; anything else (missing, half-written, truncated, other identity) is redone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import structlog

from tasks.artifact_base import _fsync_dir, _temp_path
from tasks.artifacts import ShardInfo, read_valid_shard, write_shard

log = structlog.get_logger(__name__)

SAMPLES_SHARD_FORMAT = "ferrisbench.samples-shard/1"
RESULTS_SHARD_FORMAT = "ferrisbench.results-shard/1"
SORT_KEYS = ["model", "policy_mode", "task_id", "sample_index"]
ATTEMPTS_NAME = "attempts.jsonl"
# Test hook (used by tests/test_resume.py only): at the named point the process writes its pid
# to the marker file and sleeps, so a test can SIGKILL it at an exact place. Unset: no effect.
TEST_PAUSE_ENV = "FERRISBENCH_TEST_PAUSE_AT"
TEST_PAUSE_MARKER_ENV = "FERRISBENCH_TEST_PAUSE_MARKER"


@dataclass(frozen=True)
class ShardSpec:
    """One samples shard: what a shard task is given (a path and an identity, never the data)."""

    model: str
    index: int
    count: int  # shards of this model
    rows: int
    path: str
    identity: dict

    @property
    def label(self) -> str:
        return f"{self.model} shard {self.index + 1}/{self.count}"


@dataclass(frozen=True)
class StageInputs:
    """What every shard task of a run shares, as paths and hashes."""

    run_dir: str
    problems_path: str
    problems_hash: str
    validity_path: str
    validity_hash: str
    modes: tuple[str, ...]
    execution: dict  # the executor identity the run was planned with; workers must match it


@dataclass(frozen=True)
class ResultFile:
    model: str
    mode: str
    index: int
    path: str
    rows: int
    file_sha256: str
    identity_hash: str


@dataclass(frozen=True)
class ShardOutcome:
    model: str
    index: int
    samples: int
    computed: bool  # False: every mode's results shard was reused as it was
    results: tuple[ResultFile, ...]


# ---------------------------------------------------------------- paths


def model_slug(model: str) -> str:
    """A file-name-safe, collision-free directory name for a model id (e.g. `org/name`)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-.")[:80]
    if slug == model and slug:
        return slug
    return f"{slug or 'model'}-{hashlib.sha256(model.encode('utf-8')).hexdigest()[:8]}"


def samples_shard_path(run_dir: Path, model: str, index: int) -> Path:
    return Path(run_dir) / "samples" / model_slug(model) / f"shard-{index:05d}.parquet"


def results_shard_path(run_dir: Path, model: str, mode: str, index: int) -> Path:
    return Path(run_dir) / "results" / model_slug(model) / mode / f"shard-{index:05d}.parquet"


# ---------------------------------------------------------------- samples stage


def split_samples(samples: pd.DataFrame, shard_size: int) -> list[tuple[str, int, int, pd.DataFrame]]:
    """(model, index, count, rows) per shard: sorted by model, task_id, sample_index, then cut."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    ordered = samples.sort_values(["model", "task_id", "sample_index"], kind="stable")
    shards = []
    for model, rows in ordered.groupby("model", sort=True):
        count = -(-len(rows) // shard_size)
        for index in range(count):
            chunk = rows.iloc[index * shard_size : (index + 1) * shard_size].reset_index(drop=True)
            shards.append((str(model), index, count, chunk))
    return shards


def samples_identity(samples_sha256: str, model: str, index: int, shard_size: int) -> dict:
    return {
        "format": SAMPLES_SHARD_FORMAT,
        "samples_sha256": samples_sha256,
        "model": model,
        "shard_index": index,
        "shard_size": shard_size,
    }


def write_samples_shards(
    run_dir: Path, samples: pd.DataFrame, shard_size: int, samples_sha256: str
) -> list[ShardSpec]:
    """The samples as shards in the run directory (reusing valid ones): what shard tasks read."""
    specs = []
    for model, index, count, chunk in split_samples(samples, shard_size):
        path = samples_shard_path(run_dir, model, index)
        identity = samples_identity(samples_sha256, model, index, shard_size)
        if read_valid_shard(path, identity) is None:
            write_shard(chunk, path, identity)
        specs.append(ShardSpec(model, index, count, len(chunk), str(path), identity))
    return specs


# ---------------------------------------------------------------- evaluate stage


def results_identity(spec: ShardSpec, mode: str, inputs: StageInputs) -> dict:
    return {
        "format": RESULTS_SHARD_FORMAT,
        "samples_shard": spec.identity,
        "problems_hash": inputs.problems_hash,
        "validity_hash": inputs.validity_hash,
        "execution": inputs.execution,
        "policy_mode": mode,
    }


def reusable_results(spec: ShardSpec, inputs: StageInputs) -> dict[str, ShardInfo | None]:
    """Per policy mode: the valid results shard on disk, or None when it must be computed."""
    return {
        mode: read_valid_shard(
            results_shard_path(Path(inputs.run_dir), spec.model, mode, spec.index),
            results_identity(spec, mode, inputs),
        )
        for mode in inputs.modes
    }


def evaluate_shard(
    spec: ShardSpec,
    inputs: StageInputs,
    judge: Callable[[pd.DataFrame, list[str]], pd.DataFrame],
    validity: pd.DataFrame,
) -> ShardOutcome:
    """Results shards of one samples shard, one per mode; computes only what is not on disk.

    `judge(samples, modes)` returns one result row per (sample, mode) (tasks.evaluate.evaluate_frame);
    both modes come from one execution, and only the missing modes' files are written.
    """
    found = reusable_results(spec, inputs)
    missing = [mode for mode, info in found.items() if info is None]
    if not missing:
        return _outcome(spec, inputs, found, computed=False)
    samples_info = read_valid_shard(Path(spec.path), spec.identity)
    if samples_info is None:
        raise RuntimeError(f"samples shard {spec.path} is missing or damaged; rerun to rewrite it")
    samples = pd.read_parquet(spec.path)
    results = judge(samples, list(inputs.modes))
    results = results.merge(validity[["task_id", "validity", "validity_reason"]], on="task_id", how="left")
    expected = len(samples) * len(inputs.modes)
    if len(results) != expected or results["validity"].isna().any():
        raise RuntimeError(f"{spec.label}: {len(results)} result rows for {expected} (sample, mode) pairs")
    for number, mode in enumerate(missing):
        rows = results[results["policy_mode"] == mode].reset_index(drop=True)
        path = results_shard_path(Path(inputs.run_dir), spec.model, mode, spec.index)
        found[mode] = write_shard(rows, path, results_identity(spec, mode, inputs))
        if number == 0:
            pause_point(f"shard-{spec.index}-partial")
    pause_point(f"after-shard-{spec.index}")
    return _outcome(spec, inputs, found, computed=True)


def _outcome(spec: ShardSpec, inputs: StageInputs, found: Mapping[str, ShardInfo | None], computed: bool) -> ShardOutcome:
    files = []
    for mode in inputs.modes:
        info = found[mode]
        assert info is not None
        files.append(
            ResultFile(spec.model, mode, spec.index, str(info.path), info.rows, info.file_sha256, info.identity_hash)
        )
    return ShardOutcome(spec.model, spec.index, spec.rows, computed, tuple(files))


# ---------------------------------------------------------------- aggregate stage


def merge_results(files: list[ResultFile], path: Path) -> str:
    """Stream every results shard into one parquet at `path` (atomically); returns its sha256.

    Shards are appended in (model, mode, shard) order, which already sorts the rows by
    (model, policy_mode, task_id, sample_index), so memory holds one shard at a time however big
    the run. Rows out of that order (a duplicate, a shard from elsewhere) stop the merge.
    """
    ordered = sorted(files, key=lambda f: (f.model, f.mode, f.index))
    schemas = [pq.read_schema(f.path) for f in ordered]
    schema = pa.unify_schemas(schemas, promote_options="permissive").remove_metadata()
    temp = _temp_path(path)
    last: tuple | None = None
    digest = hashlib.sha256()
    try:
        with open(temp, "xb") as handle:
            with pq.ParquetWriter(handle, schema) as writer:
                for file, shard_schema in zip(ordered, schemas):
                    if set(shard_schema.names) != set(schema.names):
                        raise RuntimeError(f"{file.path} has columns {shard_schema.names}, other shards {schema.names}")
                    table = pq.read_table(file.path)
                    if table.num_rows != file.rows:
                        raise RuntimeError(f"{file.path}: {table.num_rows} rows, its manifest says {file.rows}")
                    keys = list(zip(*(table.column(k).to_pylist() for k in SORT_KEYS)))
                    sequence = ([last] if last is not None else []) + keys
                    if any(later <= earlier for earlier, later in zip(sequence, sequence[1:])):
                        raise RuntimeError(f"{file.path}: rows duplicate or out of (model, mode, task, sample) order")
                    last = sequence[-1] if sequence else None
                    writer.write_table(table.select(schema.names).cast(schema))
            handle.flush()
            os.fsync(handle.fileno())
        with open(temp, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        os.replace(temp, path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)
    return digest.hexdigest()


def file_sha256(path: Path) -> str | None:
    try:
        with open(path, "rb") as handle:
            digest = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            return digest.hexdigest()
    except FileNotFoundError:
        return None


def read_for_metrics(path: Path) -> pd.DataFrame:
    """The columns the metrics need, without the large diagnostic texts."""
    wanted = ["task_id", "sample_index", "model", "policy_mode", "status", "error_codes", "validity", "category"]
    present = set(pq.read_schema(path).names)
    return pq.read_table(path, columns=[c for c in wanted if c in present]).to_pandas()


# ---------------------------------------------------------------- bookkeeping


def record_attempt(run_dir: Path, record: dict) -> None:
    """Append one line to DIR/attempts.jsonl (a killed attempt leaves none)."""
    path = Path(run_dir) / ATTEMPTS_NAME
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    _fsync_dir(path.parent)


def read_attempts(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / ATTEMPTS_NAME
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def pause_point(name: str) -> None:
    """Test hook: stop here (marker written, then asleep) when FERRISBENCH_TEST_PAUSE_AT names this point."""
    if os.environ.get(TEST_PAUSE_ENV) != name:
        return
    marker = os.environ.get(TEST_PAUSE_MARKER_ENV)
    log.warning("test_pause_point_reached", point=name, pid=os.getpid())
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(600)
