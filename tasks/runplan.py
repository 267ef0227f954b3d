"""What one evaluation run is, decided before any work: inputs checked, ks resolved, identity fixed.

Everything that can be wrong with the inputs is found here, before a sandbox, a Prefect API or a
compiler starts. The run identity (what `run.json` records) is the samples file's content hash,
the benchmark's content hash, the executor identity and the scoring settings: rerunning with any
of them changed on the same run directory is refused instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tasks import metrics as metrics_lib
from tasks.artifact_base import _fsync_dir, _pretty_json, _temp_path, _write_synced, identity_hash
from tasks.config import RunConfig
from tasks.imports import Context, ImportOptions, default_label, input_sha256
from tasks.problems import ProblemSet, load_benchmark
from tasks.samples import SamplesError, check_against_problems, read_samples

RUN_KIND = "ferrisbench.evaluate-run/1"
CONFIG_NAME = "config.json"
DEFAULT_KS = (1, 10, 100)


class NotARunDirectory(ValueError):
    """`resume` was pointed at a directory without a recorded run."""


@dataclass(frozen=True)
class RunPlan:
    config: RunConfig
    run_dir: Path
    problem_set: ProblemSet
    samples: pd.DataFrame  # with a `model` column (the samples file's stem when it had none)
    n: int  # samples per task, the same for every task
    ks: tuple[int, ...]
    samples_sha256: str
    execution: dict  # what a verdict depends on besides the program (tasks.evaluate.execution_identity)

    @property
    def modes(self) -> list[str]:
        return self.config.policy.modes()

    @property
    def models(self) -> list[str]:
        return sorted(self.samples["model"].unique())

    def identity(self) -> dict:
        return {
            "kind": RUN_KIND,
            "samples_sha256": self.samples_sha256,
            "samples": len(self.samples),
            "models": self.models,
            "problems": {
                "name": self.problem_set.name,
                "content_hash": self.problem_set.content_hash,
                "protocol": self.problem_set.protocol.value,
                "edition": self.problem_set.edition,
            },
            "execution": self.execution,
            "settings": self.config.settings_identity(self.ks),
        }

    @property
    def run_id(self) -> str:
        """Short, stable name of the run (Prefect artifact keys, run names)."""
        return identity_hash(self.identity())[:12]


def check_inputs(config: RunConfig) -> tuple[ProblemSet, pd.DataFrame, int, tuple[int, ...], str]:
    """Benchmark, samples (with `model`), n, resolved ks and the samples' sha256; raises on bad input."""
    problem_set = load_benchmark(config.benchmark, edition=config.executor.edition)
    samples = read_samples(config.samples, import_context(config, problem_set))
    n = check_against_problems(
        samples, set(problem_set.by_id()), allow_missing_tasks=config.only_sampled_tasks
    )
    ks = config.ks if config.ks is not None else tuple(k for k in DEFAULT_KS if k <= n)
    too_big = [k for k in ks if k > n]
    if too_big:
        raise metrics_lib.MetricsError(f"pass@k needs k <= n = {n} samples per task; got k = {too_big}")
    if "model" not in samples.columns:
        samples["model"] = default_label(Path(config.samples))
    elif samples["model"].map(lambda v: not isinstance(v, str) or not v).any():
        raise metrics_lib.MetricsError(f"{config.samples}: column 'model' must hold non-empty strings")
    _check_storable(samples, config.samples)
    return problem_set, samples, n, tuple(ks), input_sha256(Path(config.samples))


def import_context(config: RunConfig, problem_set: ProblemSet) -> Context:
    options = ImportOptions(config.samples_format, dict(config.fields), config.reference_verdict)
    return Context(options, tuple(p.task_id for p in problem_set.problems))


def _check_storable(samples: pd.DataFrame, path: Path) -> None:
    """The samples become parquet shards: a field that is a number here and text there cannot."""
    import pyarrow as pa

    try:
        pa.Table.from_pandas(samples, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
        raise SamplesError(f"{path}: a field holds values of different JSON types across samples ({error}); "
                           "give each field one type") from None


def make_plan(config: RunConfig, checked: tuple, execution: dict) -> RunPlan:
    problem_set, samples, n, ks, digest = checked
    return RunPlan(config, Path(config.out).absolute(), problem_set, samples, n, ks, digest, execution)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json_atomic(path: Path, record: dict) -> None:
    """Temp file, fsync, rename, fsync the directory: a reader sees the old or the new file."""
    temp = _temp_path(path)
    try:
        _write_synced(temp, lambda f: f.write(_pretty_json(record)))
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def write_text_atomic(path: Path, text: str) -> None:
    temp = _temp_path(path)
    try:
        _write_synced(temp, lambda f: f.write(text.encode("utf-8")))
        temp.replace(path)
    finally:
        temp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def record_config(run_dir: Path, config: RunConfig) -> Path:
    """DIR/config.json, written once by the run that created DIR (what `resume` repeats)."""
    path = run_dir / CONFIG_NAME
    if not path.exists():
        record = json.loads(config.model_dump_json())
        record["samples"] = str(Path(config.samples).absolute())
        record["out"] = str(Path(config.out).absolute())
        write_json_atomic(path, record)
    return path


def load_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / CONFIG_NAME
    if not path.exists():
        raise NotARunDirectory(
            f"{path} does not exist: {run_dir} is not a ferrisbench run directory "
            "(start one with `ferrisbench evaluate … --out DIR`)"
        )
    try:
        return RunConfig.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as error:  # pydantic's ValidationError is a ValueError
        raise NotARunDirectory(f"{path} is not a ferrisbench run configuration: {error}") from None
