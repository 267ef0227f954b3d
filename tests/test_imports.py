"""Specification of importing samples from other harnesses: every harness's file, re-shaped from the
same real completions, is judged exactly as the same samples given as human-eval JSONL; the format
is detected from the content (or forced); bad input is explained line by line, before any compile."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from flows.gate import prepare
from tasks.config import ExecutorConfig
from tasks.evaluate import evaluate_frame
from tasks.imports import Context, ImportOptions, detect
from tasks.problems import load_benchmark
from tasks.samples import SamplesError, read_samples
from tests import interop_inputs as inputs
from tests.helpers import requires_root


@pytest.fixture(scope="module")
def libtest(tmp_path_factory):
    root = tmp_path_factory.mktemp("libtest")
    path, rows = inputs.libtest_benchmark(root)
    return root, load_benchmark(str(path)), rows


@pytest.fixture(scope="module")
def multipl(tmp_path_factory):
    root = tmp_path_factory.mktemp("multipl")
    return root, load_benchmark(f"multipl-e:{inputs.multipl_benchmark(root)}")


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    config = ExecutorConfig(sandbox="bubblewrap", workers=2, verdict_cache=False)
    toolchain, pool = prepare(config)

    def statuses(path, problem_set, **options) -> dict:
        context = Context(ImportOptions(**options), tuple(p.task_id for p in problem_set.problems))
        frame = read_samples(path, context)
        judged = evaluate_frame(frame, problem_set.by_id(), ["no_policy"], config, pool, toolchain)
        return {(row.task_id, row.sample_index): row.status for row in judged.itertuples()}

    return statuses


def context_of(problem_set, **options) -> Context:
    return Context(ImportOptions(**options), tuple(p.task_id for p in problem_set.problems))


# ---------- the same samples, any harness's file, the same verdicts ----------


@requires_root
@pytest.mark.parametrize("shape", ["evalplus", "bigcode", "lm-eval", "lm-eval-markdown-resps"])
def test_libtest_samples_from_each_harness_get_the_statuses_of_the_same_human_eval_samples(shape, libtest, judge):
    root, problem_set, rows = libtest
    expected = judge(inputs.libtest_human_eval(root, rows), problem_set)
    assert sorted(set(expected.values())) == ["compile_error", "failed_tests", "passed"]
    path = {"evalplus": lambda: inputs.libtest_evalplus(root, rows),
            "bigcode": lambda: inputs.libtest_bigcode(root, rows),
            "lm-eval": lambda: inputs.libtest_lm_eval(root, rows),
            "lm-eval-markdown-resps": lambda: inputs.libtest_lm_eval(root, rows, markdown_only=True)}[shape]()
    assert judge(path, problem_set) == expected


@requires_root
@pytest.mark.parametrize("shape", ["directory", "results-only", "one-file", "bigcode"])
def test_multipl_e_samples_from_each_harness_get_the_statuses_of_the_same_human_eval_samples(shape, multipl, judge,
                                                                                             tmp_path):
    root, problem_set = multipl
    expected = judge(inputs.multipl_human_eval(root), problem_set)
    assert sorted(expected.values()) == ["compile_error"] * 2 + ["failed_tests"] * 3 + ["passed"] * 4
    if shape == "bigcode":
        path = inputs.multipl_bigcode(tmp_path)
    else:
        path = inputs.multipl_directory(tmp_path, with_completions=shape != "results-only")
        if shape == "one-file":  # a single problem's results file: only that task
            path = path / "mbpp_127_multiply_int.results.json.gz"
            expected = {key: status for key, status in expected.items() if key[0] == "mbpp_127_multiply_int"}
    assert judge(path, problem_set) == expected


def test_multipl_e_statuses_become_reference_verdicts(multipl, tmp_path):
    _, problem_set = multipl
    frame = read_samples(inputs.multipl_directory(tmp_path), context_of(problem_set))
    count = frame[frame["task_id"] == "mbpp_105_count"].sort_values("sample_index")
    assert list(count["reference_verdict"]) == ["OK", "SyntaxError", "Exception"]
    assert list(count["reference_passed"]) == [True, False, False]
    assert set(frame["temperature"]) == {0.2}


# ---------- detection and options ----------


@pytest.mark.parametrize("shape, expected", [
    ("human-eval", "human-eval"), ("evalplus", "evalplus"), ("bigcode", "bigcode"), ("lm-eval", "lm-eval"),
])
def test_the_format_is_detected_from_the_content_whatever_the_file_is_called(shape, expected, libtest, tmp_path):
    root, _, rows = libtest
    made = getattr(inputs, f"libtest_{shape.replace('-', '_')}")(root, rows)
    renamed = shutil.copy(made, tmp_path / "samples.txt")
    assert detect(renamed, ImportOptions()).name == expected
    gzipped = tmp_path / "samples.dat"  # gzip by its magic bytes, not by a .gz name
    gzipped.write_bytes(gzip.compress(made.read_bytes()))
    assert detect(gzipped, ImportOptions()).name == expected


def test_a_multipl_e_directory_and_a_single_results_file_are_detected(multipl, tmp_path):
    directory = inputs.multipl_directory(tmp_path)
    assert detect(directory, ImportOptions()).name == "multipl-e"
    assert detect(directory / "mbpp_126_sum.results.json.gz", ImportOptions()).name == "multipl-e"


def test_field_options_map_any_jsonl_and_reference_verdict_reads_a_boolean_or_status(libtest, tmp_path):
    _, problem_set, rows = libtest
    path = inputs.write_jsonl(tmp_path / "other.jsonl", [
        {"problem": "Demo/t00", "text": "\n    x\n}", "correct": True},
        {"problem": "Demo/t00", "text": "\n    x\n}", "correct": "FAIL"}])
    frame = read_samples(path, context_of(problem_set, fields={"task_id": "problem", "completion": "text"},
                                          reference_verdict="correct"))
    assert list(frame["task_id"]) == ["Demo/t00"] * 2 and list(frame["completion"]) == ["\n    x\n}"] * 2
    assert list(frame["reference_verdict"]) == ["true", "FAIL"] and list(frame["reference_passed"]) == [True, False]


def test_format_option_forces_an_importer(libtest, tmp_path):
    root, problem_set, rows = libtest
    with pytest.raises(SamplesError, match=r"human-eval lines need 'task_id' and 'completion'; this one has "
                                           r"\['solution', 'task_id'\]"):
        read_samples(inputs.libtest_evalplus(root, rows), context_of(problem_set, format="human-eval"))


def test_bigcode_file_with_another_problem_count_is_refused_naming_both(libtest, tmp_path):
    _, problem_set, _ = libtest
    path = tmp_path / "generations.json"
    path.write_text(json.dumps([["fn add_0(x: i64) -> i64 { x }"]] * 5))
    with pytest.raises(SamplesError, match=r"holds generations for 5 problems, the benchmark has 12; "):
        read_samples(path, context_of(problem_set))


# ---------- input errors a person can act on ----------


def test_each_bad_line_is_named_with_line_column_and_what_is_wrong(tmp_path):
    good = json.dumps({"task_id": "T", "completion": "x"})
    path = tmp_path / "s.jsonl"
    path.write_bytes(b"\n".join([
        good.encode(),
        b'{"task_id": "T", "completion": "a\tb"}',
        b'{"task_id": "T", "completion": "a\x00b"}',
        b'{"task_id": "T", "completion": "caf\xe9"}',
        b'{"task_id": "T", "completion": "x",}',
        b'["T", "x"]',
    ]) + b"\n")
    with pytest.raises(SamplesError) as error:
        read_samples(path)
    assert str(error.value) == "\n  ".join([
        f"{path}: 5 bad lines (all follow); nothing was evaluated",
        f"{path}:2:34: a raw control character (U+0009, tab) inside a string; JSON strings must escape it as \\t",
        f"{path}:3:34: a raw NUL byte (0x00); inside a JSON string write it as \\u0000",
        f"{path}:4:36: not valid UTF-8 (byte 0xe9); JSONL must be UTF-8 text, binary data must be escaped",
        f"{path}:5:36: malformed JSON (Expecting property name enclosed in double quotes)",
        f"{path}:6: expected a JSON object ({{...}}), found an array",
    ])


def test_at_most_the_first_20_bad_lines_are_listed_and_all_are_counted(tmp_path):
    path = tmp_path / "s.jsonl"
    path.write_text("".join(f'{{"task_id": "T{i}", "completion": }}\n' for i in range(25)))
    with pytest.raises(SamplesError) as error:
        read_samples(path)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{path}: 25 bad lines (the first 20 follow); nothing was evaluated"
    assert len(lines) == 21 and lines[-1] == f"  {path}:20:34: malformed JSON (Expecting value)"


def test_gzip_compressed_jsonl_is_read_whatever_its_name(tmp_path):
    path = tmp_path / "samples.jsonl"  # compressed, but not called .gz
    path.write_bytes(gzip.compress(b'{"task_id": "T", "completion": "x"}\n'))
    assert list(read_samples(path)["completion"]) == ["x"]


def test_truncated_gzip_says_so(tmp_path):
    path = tmp_path / "samples.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"task_id": "T", "completion": "x"}\n' * 100)[:40])
    with pytest.raises(SamplesError, match=r"starts like gzip-compressed data but does not decompress"):
        read_samples(path)


def test_a_directory_that_is_neither_a_generation_nor_multipl_e_output_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(SamplesError, match=r"neither a directory written by `ferrisbench generate` \(no run.json\) "
                                           r"nor a MultiPL-E output directory"):
        read_samples(tmp_path)
