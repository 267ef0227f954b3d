"""Specification of stage outputs: atomic shards with manifests, resumability."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest
from structlog.testing import capture_logs

from tasks.artifacts import (
    IdentityError,
    ShardProblem,
    check_shard,
    identity_hash,
    manifest_path_for,
    read_valid_shard,
    remove_stale_temp_files,
    write_shard,
)

REPO = Path(__file__).resolve().parents[1]
IDENTITY = {"samples_hash": "abc", "executor": {"version": 3, "edition": "2021"}, "timeouts": [15, 5]}


def frame() -> pd.DataFrame:
    return pd.DataFrame({"task_id": ["t1", "t2", "t3"], "status": ["passed", "failed_tests", "passed"]})


def start_python(code: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True
    )


# ---------------------------------------------------------------- identities


def test_identity_hash_is_sha256_of_canonical_json():
    expected = hashlib.sha256(b'{"a":1,"b":[1,"x"],"c":{"d":null}}').hexdigest()
    assert identity_hash({"c": {"d": None}, "b": [1, "x"], "a": 1}) == expected


def test_identity_hash_ignores_key_order_but_not_values():
    executor = {"edition": "2021", "version": 3}
    reordered = {"timeouts": [15, 5], "executor": executor, "samples_hash": "abc"}
    assert identity_hash(reordered) == identity_hash(IDENTITY)
    assert identity_hash({**IDENTITY, "timeouts": [5, 15]}) != identity_hash(IDENTITY)


@pytest.mark.parametrize(
    "identity, where",
    [
        ({"flags": {"-O0"}}, "identity['flags']"),
        ({"dir": Path("/tmp")}, "identity['dir']"),
        ({"nested": {"t": float("nan")}}, "identity['nested']['t']"),
        ({1: "x"}, "key 1"),
    ],
)
def test_identity_hash_rejects_values_that_are_not_json_data(identity, where):
    with pytest.raises(IdentityError, match=re.escape(where)):
        identity_hash(identity)


# ---------------------------------------------------------------- shards


def test_round_trip_records_and_reuses_the_shard(tmp_path):
    path = tmp_path / "results" / "shard-0000.parquet"
    written = write_shard(frame(), path, IDENTITY)
    assert pd.read_parquet(path).equals(frame())
    assert read_valid_shard(path, IDENTITY) == written
    assert written.rows == 3
    assert [name for name, _ in written.schema] == ["task_id", "status"]
    manifest = json.loads(manifest_path_for(path).read_text())
    assert manifest_path_for(path).name == "shard-0000.manifest.json"
    assert manifest["identity"] == IDENTITY
    assert manifest["identity_hash"] == identity_hash(IDENTITY)
    assert manifest["file_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert manifest["file_size"] == path.stat().st_size
    assert manifest["rows"] == 3


def test_a_pyarrow_table_is_written_as_is(tmp_path):
    path = tmp_path / "shard.parquet"
    info = write_shard(pa.table({"x": pa.array([1, 2], type=pa.int32())}), path, IDENTITY)
    assert info.schema == (("x", "int32"),)
    assert read_valid_shard(path, IDENTITY) == info


def test_the_same_identity_written_in_another_key_order_is_reused(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    same = {"timeouts": (15, 5), "executor": {"edition": "2021", "version": 3}, "samples_hash": "abc"}
    assert read_valid_shard(path, same) is not None


def test_a_different_identity_is_not_reused(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    check = check_shard(path, {**IDENTITY, "samples_hash": "def"})
    assert check.info is None
    assert check.problem is ShardProblem.IDENTITY_CHANGED


def test_truncated_parquet_is_detected(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)
    assert check_shard(path, IDENTITY).problem is ShardProblem.TRUNCATED


def test_bytes_changed_in_place_are_detected(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert check_shard(path, IDENTITY).problem is ShardProblem.CORRUPT


def test_a_shard_without_manifest_is_incomplete(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    manifest_path_for(path).unlink()
    assert check_shard(path, IDENTITY).problem is ShardProblem.NO_MANIFEST
    assert read_valid_shard(path, IDENTITY) is None


def test_missing_file_and_missing_shard_are_told_apart(tmp_path):
    path = tmp_path / "shard.parquet"
    assert check_shard(path, IDENTITY).problem is ShardProblem.MISSING
    write_shard(frame(), path, IDENTITY)
    path.unlink()
    assert check_shard(path, IDENTITY).problem is ShardProblem.FILE_MISSING


def test_an_unreadable_manifest_is_detected(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    manifest_path_for(path).write_text('{"identity": ')
    assert check_shard(path, IDENTITY).problem is ShardProblem.MANIFEST_CORRUPT


def test_a_manifest_copied_next_to_another_file_is_detected(tmp_path):
    first, second = tmp_path / "shard-0.parquet", tmp_path / "shard-1.parquet"
    write_shard(frame(), first, IDENTITY)
    write_shard(frame().head(1), second, IDENTITY)
    manifest_path_for(second).write_bytes(manifest_path_for(first).read_bytes())
    assert check_shard(second, IDENTITY).problem is ShardProblem.MANIFEST_CORRUPT


def test_rewriting_a_shard_replaces_data_and_manifest(tmp_path):
    path = tmp_path / "shard.parquet"
    write_shard(frame(), path, IDENTITY)
    new_identity = {**IDENTITY, "samples_hash": "def"}
    info = write_shard(frame().head(2), path, new_identity)
    assert read_valid_shard(path, new_identity) == info
    assert read_valid_shard(path, IDENTITY) is None
    assert len(pd.read_parquet(path)) == 2


def test_read_valid_shard_logs_why_a_shard_is_recomputed(tmp_path):
    path = tmp_path / "shard.parquet"
    with capture_logs() as logs:
        assert read_valid_shard(path, IDENTITY) is None
    assert logs == [
        {
            "event": "shard_not_reusable",
            "log_level": "info",
            "path": str(path),
            "reason": "missing",
            "detail": "",
        }
    ]


def test_write_shard_rejects_other_suffixes_and_other_data(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.parquet"):
        write_shard(frame(), tmp_path / "shard.pq", IDENTITY)
    with pytest.raises(TypeError, match="DataFrame or a pyarrow Table"):
        write_shard([{"a": 1}], tmp_path / "shard.parquet", IDENTITY)


def test_a_writer_killed_before_its_rename_leaves_only_an_ignored_temp_file(tmp_path):
    path = tmp_path / "shard-0007.parquet"
    writer = start_python(
        f"""
        import os, signal
        import pandas as pd
        import tasks.artifacts as artifacts
        artifacts.os.replace = lambda *args: os.kill(os.getpid(), signal.SIGKILL)
        artifacts.write_shard(pd.DataFrame({{"x": [1, 2]}}), {str(path)!r}, {{"k": 1}})
        """
    )
    assert writer.wait(timeout=60) == -signal.SIGKILL
    leftovers = [p.name for p in tmp_path.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(".shard-0007.parquet.tmp-")
    assert list(tmp_path.glob("*.parquet")) == []
    assert check_shard(path, {"k": 1}).problem is ShardProblem.MISSING
    info = write_shard(frame(), path, {"k": 1})  # the rerun also reclaims the dead writer's file
    remaining = sorted(p.name for p in tmp_path.iterdir())
    assert remaining == ["shard-0007.manifest.json", "shard-0007.parquet"]
    assert read_valid_shard(path, {"k": 1}) == info


def test_stale_temp_file_sweep_keeps_files_of_live_writers(tmp_path):
    live = tmp_path / f".shard.parquet.tmp-{os.getpid()}-0123456789ab-{os.uname().nodename}"
    live.write_bytes(b"partial")
    finished = start_python("pass")
    finished.wait(timeout=60)
    dead = tmp_path / f".shard.parquet.tmp-{finished.pid}-0123456789ab-{os.uname().nodename}"
    dead.write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path) == [dead]
    assert live.exists()
