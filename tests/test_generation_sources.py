"""The generate stage's checks and its engine-free sources: specs, seeds, references, imports.

Everything here runs without starting a vLLM engine: the point of these checks is that bad
input is refused before one would start. The tiny models are built for real (vLLM venv).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import read_valid_shard
from tasks.config import GenerationConfig
from tasks.generation.base import GenerationError, request_seed
from tasks.generation.models import directory_fingerprint, resolve
from tasks.generation.sources import build_sources, label_from
from tasks.generation.stage import (
    SAMPLE_SCHEMA,
    generate_shard,
    generated_samples_file,
    prepare_run,
    run_source,
    write_combined_samples,
)
from tasks.problems import load_benchmark
from tests.conftest import BROKEN_REFERENCE, TASKS, write_tiny_benchmark, write_tiny_samples
from tests.tiny_models import BIG_ADAPTER_RANK, build_tiny_models

pytestmark = pytest.mark.skipif(os.environ.get("FERRISBENCH_SKIP_VLLM") == "1", reason="vLLM venv skipped by setup")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    from tasks.generation.vllm_engine import vllm_python

    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny-models", str(vllm_python()))


@pytest.fixture()
def tiny_bench(tmp_path: Path):
    return load_benchmark(str(write_tiny_benchmark(tmp_path / "bench.jsonl")))


def config(tmp_path: Path, bench_path: str, **changes) -> GenerationConfig:
    values = dict(model="reference", benchmark=bench_path, out=tmp_path / "gen", samples=1, shard_tasks=5)
    return GenerationConfig(**{**values, **changes})


def run_stage(cfg: GenerationConfig, problem_set) -> list[dict]:
    """The stage as the flow runs it, without Prefect."""
    prepared = prepare_run(cfg, problem_set)
    try:
        return [
            run_source(
                source,
                prepared.plans[source.label],
                prepared.sampling,
                cfg.out,
                run_shard=lambda plan, s=source: generate_shard(
                    s, plan, prepared.problems, prepared.sampling, prepared.prompt_hashes[s.label]
                ),
            )
            for source in prepared.sources
        ]
    finally:
        prepared.close()


# ------------------------------------------------------------------ seeds and labels


def test_request_seeds_are_a_function_of_run_seed_model_and_task_only():
    seed = request_seed(1234, "model-a", "Demo/t00")
    assert seed == request_seed(1234, "model-a", "Demo/t00")
    assert 0 <= seed < 2**31
    others = {request_seed(1235, "model-a", "Demo/t00"), request_seed(1234, "model-b", "Demo/t00"),
              request_seed(1234, "model-a", "Demo/t01")}
    assert seed not in others and len(others) == 3


def test_labels_come_from_the_specs_last_parts_and_checkpoints_keep_their_repo_name():
    assert label_from("meta-llama/Meta-Llama-3.1-8B-Instruct") == "Meta-Llama-3.1-8B-Instruct"
    assert label_from("Superuser666-Sigil/Llama-3.1-8B-Instruct-Rust-QLora/checkpoint-9000@main") == (
        "Llama-3.1-8B-Instruct-Rust-QLora-checkpoint-9000"
    )
    assert label_from("./models/tiny llama/") == "tiny-llama"


# ------------------------------------------------------------------ bad input, before any engine


def test_a_model_path_that_does_not_exist_is_refused_before_anything_starts(tmp_path, tiny_bench):
    cfg = config(tmp_path, "unused", model=str(tmp_path / "no-such-model"))
    with pytest.raises(GenerationError, match=r"model path .*no-such-model' does not exist"):
        build_sources(cfg, tiny_bench, tmp_path / "logs")
    assert not (tmp_path / "logs").exists()  # no worker was started, so no worker log


def test_a_spec_that_is_neither_a_path_nor_a_repo_id_is_refused(tmp_path, tiny_bench):
    with pytest.raises(GenerationError, match="neither an existing path nor a Hugging Face repo id"):
        build_sources(config(tmp_path, "unused", model="not a model"), tiny_bench, tmp_path / "logs")


def test_an_adapter_whose_rank_exceeds_the_engine_limit_is_refused_before_the_engine(tmp_path, tiny_bench, tiny_models):
    cfg = config(tmp_path, "unused", model=str(tiny_models.base), adapters=(str(tiny_models.big_adapter),), max_lora_rank=16)
    with pytest.raises(GenerationError) as error:
        build_sources(cfg, tiny_bench, tmp_path / "logs")
    assert f"(r={BIG_ADAPTER_RANK})" in str(error.value)
    assert "max_lora_rank=16" in str(error.value) and f"at least {BIG_ADAPTER_RANK}" in str(error.value)
    assert not (tmp_path / "logs").exists()


def test_a_directory_without_a_model_config_is_refused(tmp_path, tiny_bench, tiny_models):
    cfg = config(tmp_path, "unused", model=str(tiny_models.adapter))  # an adapter given as the model
    with pytest.raises(GenerationError, match="has no config.json; is it a model"):
        build_sources(cfg, tiny_bench, tmp_path / "logs")


def _fake_hub_cache(cache: Path, repo: str, commit: str, files: dict[str, Path]) -> None:
    """The on-disk layout huggingface_hub itself writes (refs/main → snapshots/<commit>/…)."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    for name, source in files.items():
        target = root / "snapshots" / commit / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source, target)


def test_hub_ids_with_a_subfolder_resolve_offline_from_the_cache_to_their_commit(tmp_path, tiny_models, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    commit = "0123456789abcdef0123456789abcdef01234567"
    files = {f"checkpoint-9000/{p.name}": p for p in tiny_models.adapter.iterdir()}
    _fake_hub_cache(tmp_path / "hub", "someone/Rust-QLora", commit, files)

    adapter = resolve("someone/Rust-QLora/checkpoint-9000", "adapter", cache_dir=tmp_path / "hub")
    assert adapter.revision == commit
    assert adapter.model_id == "someone/Rust-QLora/checkpoint-9000"
    assert adapter.path == tmp_path / "hub" / "models--someone--Rust-QLora" / "snapshots" / commit / "checkpoint-9000"
    with pytest.raises(GenerationError, match="not in the local Hugging Face cache"):
        resolve("someone/Other-Model", "model", cache_dir=tmp_path / "hub")


def test_a_local_models_revision_is_a_content_fingerprint(tmp_path, tiny_models):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models.base, copy)
    assert directory_fingerprint(copy) == directory_fingerprint(tiny_models.base)
    config_file = copy / "config.json"
    config_file.write_text(config_file.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 1'))
    assert directory_fingerprint(copy) != directory_fingerprint(tiny_models.base)
    assert resolve(str(copy)).revision == "local-sha256:" + directory_fingerprint(copy)


# ------------------------------------------------------------------ reference and import sources


def test_the_reference_source_writes_each_canonical_solution_n_times(tmp_path, tiny_bench):
    cfg = config(tmp_path, "unused", samples=2)
    counts = run_stage(cfg, tiny_bench)
    assert counts == [{"model": "reference", "shards": 3, "generated": 3, "reused": 0}]
    frame = pd.read_parquet(write_combined_samples(cfg.out, ["reference"]))
    assert len(frame) == 2 * TASKS
    by_id = tiny_bench.by_id()
    assert all(row.completion == by_id[row.task_id].canonical_solution for row in frame.itertuples())
    assert sorted(frame.groupby("task_id")["sample_index"].apply(list).iloc[0]) == [0, 1]
    assert set(frame["generation_status"]) == {"ok"} and set(frame["finish_reason"]) == {"reference"}
    assert frame["model_revision"].unique().tolist() == [tiny_bench.content_hash]


def test_a_benchmark_without_references_is_refused_by_the_reference_source(tmp_path):
    rows = [{"name": "HumanEval_0_x", "language": "rs", "prompt": "fn x() -> i32 {", "tests": "}\nfn main() { assert!(x() == 1); }",
             "stop_tokens": ["\n}"]}]
    path = tmp_path / "mpe.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    problem_set = load_benchmark(f"multipl-e:{path}")
    with pytest.raises(GenerationError, match="no reference solution for 1 task"):
        prepare_run(config(tmp_path, str(path)), problem_set)


def test_an_imported_samples_file_becomes_a_model_with_every_sample_kept(tmp_path, tiny_bench):
    samples = write_tiny_samples(tmp_path / "other-harness.jsonl")
    cfg = config(tmp_path, "unused", model=f"import:{samples}", samples=4)
    run_stage(cfg, tiny_bench)
    frame = pd.read_parquet(write_combined_samples(cfg.out, ["other-harness"]))
    original = pd.read_json(samples, lines=True)
    assert frame["completion"].tolist() == original.sort_values("task_id", kind="stable")["completion"].tolist()
    assert frame["model"].unique().tolist() == ["other-harness"]
    assert frame["model_revision"].iloc[0].startswith("sha256:")


def test_an_imported_file_with_another_sample_count_or_unknown_tasks_is_refused(tmp_path, tiny_bench):
    samples = write_tiny_samples(tmp_path / "other.jsonl")
    with pytest.raises(GenerationError, match="has 4 samples per task; 3 were asked for"):
        prepare_run(config(tmp_path, "unused", model=f"import:{samples}", samples=3), tiny_bench)
    with samples.open("a") as handle:
        handle.write(json.dumps({"task_id": "Nope/1", "completion": "x"}) + "\n")
    with pytest.raises(GenerationError, match="unknown task id"):
        prepare_run(config(tmp_path, "unused", model=f"import:{samples}", samples=4), tiny_bench)


def test_every_shard_has_the_same_schema_even_when_a_column_is_all_null(tmp_path, tiny_bench):
    cfg = config(tmp_path, "unused")
    run_stage(cfg, tiny_bench)
    import pyarrow.parquet as pq

    for shard in sorted((cfg.out / "samples" / "reference").glob("shard-*.parquet")):
        assert pq.read_schema(shard).remove_metadata() == SAMPLE_SCHEMA


def test_a_rerun_reuses_finished_shards_and_regenerates_a_damaged_one(tmp_path, tiny_bench):
    cfg = config(tmp_path, "unused")
    run_stage(cfg, tiny_bench)
    shard = cfg.out / "samples" / "reference" / "shard-00001.parquet"
    shard.write_bytes(shard.read_bytes()[:100])  # truncated, as by a crash of the disk
    assert run_stage(cfg, tiny_bench) == [{"model": "reference", "shards": 3, "generated": 1, "reused": 2}]
    manifest = json.loads(shard.with_suffix(".manifest.json").read_text())
    assert read_valid_shard(shard, manifest["identity"]) is not None


# ------------------------------------------------------------------ through the flow and the evaluate stage


def test_an_unfinished_generation_directory_is_not_evaluated(tmp_path):
    with pytest.raises(GenerationError, match="not a directory written by `ferrisbench generate`"):
        generated_samples_file(tmp_path)


@pytest.mark.slow
def test_reference_samples_score_pass_at_1_of_one_on_the_valid_tasks(tmp_path, prefect_api, tiny_run_inputs):
    """The harness's self-check through generate → evaluate, for each benchmark that has references:
    HumanEval-Rust (146 valid of 180) and a local file in the libtest protocol (one broken reference)."""
    from flows.evaluate import run_evaluation
    from flows.generate import run_generation
    from tasks.config import PolicyChoice, RunConfig

    for benchmark, valid in (("humaneval-rust", 146), (str(tiny_run_inputs["benchmark"]), TASKS - 1)):
        out = tmp_path / Path(benchmark).stem
        run_generation(GenerationConfig(model="reference", benchmark=benchmark, out=out, samples=1, shard_tasks=50))
        outcome = run_evaluation(
            RunConfig(samples=generated_samples_file(out), benchmark=benchmark, out=out / "evaluation",
                      policy=PolicyChoice.OFF, show_progress=False)
        )
        results = pd.read_parquet(out / "evaluation" / "results.parquet")
        scored = results[results["validity"] == "valid"]
        assert len(scored) == valid
        assert (scored["status"] == "passed").all(), scored[scored["status"] != "passed"][["task_id", "status"]]
        group = outcome["metrics"]["groups"]["reference"]["no_policy"]
        assert (group["pass_at_k"], group["tasks_scored"]) == ({"1": 1.0}, valid)
        if benchmark != "humaneval-rust":
            assert BROKEN_REFERENCE not in set(scored["task_id"])
