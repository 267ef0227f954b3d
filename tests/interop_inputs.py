"""Real completions re-shaped the way each harness writes them (shared by the import specifications).

- `libtest_*`: the tiny HumanEval-Rust-format benchmark of conftest (12 tasks), samples right / wrong /
  not compiling per task, as human-eval bodies, evalplus whole programs, bigcode prompt+generation
  texts and lm-eval log lines (`filtered_resps` whole programs, `resps` markdown answers).
- `multipl_*`: three MBPP-rs problems of the shared copy, MultiPL-E bodies (stopped before the
  final `}`), as human-eval JSONL, a MultiPL-E directory with MultiPL-E's own statuses, and bigcode.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from tests.conftest import TASKS, write_tiny_benchmark

DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"
MBPP = DATASETS / "mbpp-rs-reworded.jsonl"


def libtest_completions(i: int) -> list[str]:
    return [f"\n    x + {i}\n}}", f"\n    x - {i} - 1\n}}", '\n    x + "a"\n}']


def libtest_benchmark(root: Path) -> tuple[Path, list[dict]]:
    path = write_tiny_benchmark(root / "bench.jsonl")
    return path, [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def libtest_human_eval(root: Path, rows: list[dict]) -> Path:
    return write_jsonl(root / "human-eval.jsonl", [
        {"task_id": row["task_id"], "completion": c} for i, row in enumerate(rows) for c in libtest_completions(i)])


def libtest_evalplus(root: Path, rows: list[dict]) -> Path:
    return write_jsonl(root / "evalplus.jsonl", [
        {"task_id": row["task_id"], "solution": row["prompt"] + c} for i, row in enumerate(rows)
        for c in libtest_completions(i)])


def libtest_bigcode(root: Path, rows: list[dict]) -> Path:
    path = root / "generations.json"
    path.write_text(json.dumps([[row["prompt"].strip() + c for c in libtest_completions(i)]
                                for i, row in enumerate(rows)]))
    return path


def libtest_lm_eval(root: Path, rows: list[dict], markdown_only: bool = False) -> Path:
    lines = []
    for i, row in enumerate(rows):
        answers = [row["prompt"] + c for c in libtest_completions(i)]
        line = {"doc_id": i, "doc": row, "target": "", "arguments": [[row["prompt"], {"until": ["\n}"]}]],
                "resps": [[f"Here is the function:\n```rust\n{a}\n```\n" for a in answers]],
                "filter": "create_test", "metrics": ["pass@1"], "doc_hash": "x", "prompt_hash": "y"}
        if not markdown_only:
            line["filtered_resps"] = [answers]
        lines.append(line)
    return write_jsonl(root / "samples_humaneval_2026.jsonl", lines)


assert TASKS == 12

MULTIPL_TASKS = ("mbpp_105_count", "mbpp_126_sum", "mbpp_127_multiply_int")
# (completion, MultiPL-E's own status: bare `rustc`, edition 2015)
MULTIPL_SAMPLES = {
    "mbpp_105_count": [
        ("\n    lst.iter().filter(|&&b| b).count() as isize", "OK"),
        # edition 2015 has no TryFrom in its prelude: MultiPL-E calls it a compile error, edition 2021 passes it
        ("\n    isize::try_from(lst.iter().filter(|&&b| b).count()).unwrap()", "SyntaxError"),
        ("\n    0", "Exception"),
    ],
    "mbpp_126_sum": [
        ("\n    (1..=a.min(b)).filter(|i| a % i == 0 && b % i == 0).sum()", "OK"),
        ("\n    a + b", "Exception"),
        ('\n    a + "x"', "SyntaxError"),
    ],
    "mbpp_127_multiply_int": [
        ("\n    x * y", "OK"),
        ("\n    x + y", "Exception"),
        ("\n    x * y;", "SyntaxError"),
    ],
}


def mbpp_rows() -> dict[str, dict]:
    rows = (json.loads(line) for line in MBPP.read_text().splitlines())
    return {row["name"]: row for row in rows}


def multipl_benchmark(root: Path) -> Path:
    rows = mbpp_rows()
    return write_jsonl(root / "mbpp3.jsonl", [rows[name] for name in MULTIPL_TASKS])


def multipl_human_eval(root: Path) -> Path:
    return write_jsonl(root / "multipl.jsonl", [
        {"task_id": name, "completion": text} for name in MULTIPL_TASKS for text, _ in MULTIPL_SAMPLES[name]])


def multipl_directory(root: Path, with_completions: bool = True) -> Path:
    """MultiPL-E's layout: <name>.json.gz (completions) and <name>.results.json.gz (its verdicts)."""
    rows = mbpp_rows()
    directory = root / "mbpp-rs-model-0.2-reworded"
    directory.mkdir()
    for name in MULTIPL_TASKS:
        problem = {key: rows[name][key] for key in ("name", "language", "prompt", "tests", "stop_tokens")}
        problem.update(temperature=0.2, top_p=0.95, max_tokens=512)
        samples = MULTIPL_SAMPLES[name]
        if with_completions:
            _gz(directory / f"{name}.json.gz", {**problem, "completions": [text for text, _ in samples]})
        results = [{"program": problem["prompt"] + text + "\n" + problem["tests"], "status": status,
                    "exit_code": 0 if status == "OK" else 1, "stdout": "", "stderr": "", "timestamp": 1}
                   for text, status in samples]
        _gz(directory / f"{name}.results.json.gz", {**problem, "results": results})
    return directory


def multipl_bigcode(root: Path) -> Path:
    rows = mbpp_rows()
    path = root / "generations_multiple-rs.json"
    path.write_text(json.dumps([[rows[name]["prompt"].strip() + text for text, _ in MULTIPL_SAMPLES[name]]
                                for name in MULTIPL_TASKS]))
    return path


def _gz(path: Path, value: dict) -> None:
    path.write_bytes(gzip.compress(json.dumps(value, indent=2).encode()))


def local_multipl_e_repo(root: Path) -> Path:
    """A local copy of the nuprl/MultiPL-E repository (its README declares the configurations),
    loaded through `datasets` exactly as the hub one is ($FERRISBENCH_MULTIPL_E_REPO)."""
    repo = root / "MultiPL-E"
    configs = {"humaneval-rs": DATASETS / "humaneval-rs-reworded.jsonl", "mbpp-rs": MBPP}
    card = ["---", "configs:"]
    for config, source in configs.items():
        (repo / config).mkdir(parents=True)
        (repo / config / "test.jsonl").write_bytes(source.read_bytes())
        card += [f"- config_name: {config}", "  data_files:", "  - split: test", f"    path: {config}/test.jsonl"]
    (repo / "README.md").write_text("\n".join(card + ["---", ""]))
    return repo
