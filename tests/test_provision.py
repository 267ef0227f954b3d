"""Specification of the provision stage: env.json first, every fact recorded, each failure stops the run clearly.

Real rustc, firejail and bubblewrap; a run directory that cannot be written is made real with the
immutable attribute (root cannot write into it either). The sandbox uid comes from a worker id
claimed host-wide for the module, as production claims its pools' ids.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest

from tasks.provision import ENV_FORMAT, PACKAGES, ProvisionError, provision
from tests.helpers import claimed_worker, requires_root

FIRST_WORKER = 88
WORKER: int  # the id claimed by `sandbox_worker` from FIRST_WORKER on
CONFIG = {"benchmark": "humaneval-rust", "sandbox": "bubblewrap", "samples_per_task": 10, "ks": [1, 10]}
HOST_FACTS = {"os", "cpu", "memory", "python", "packages", "ferrisbench", "sandbox_tools"}
CHECKS = ["run_dir_writable", "free_disk", "gpu", "rustc", "sandbox"]

pytestmark = requires_root


@pytest.fixture(scope="module", autouse=True)
def sandbox_worker() -> Iterator[int]:
    """A worker id no other pool on this machine holds while this module runs (what `run` passes)."""
    global WORKER
    for WORKER in claimed_worker(first=FIRST_WORKER):
        yield WORKER


@pytest.fixture(scope="module")
def work_root():
    root = Path(tempfile.mkdtemp(prefix="ferrisbench-provision-test-", dir="/var/lib"))
    yield root
    shutil.rmtree(root)


def run(run_dir: Path, work_root: Path, config: dict = CONFIG, kind: str = "bubblewrap", **options) -> dict:
    options.setdefault("need_gpu", False)
    options.setdefault("dataset_hash", "sha256:feed")
    return provision(config, run_dir, sandbox_kind=kind, work_root=work_root, worker=WORKER, **options)


def env_json(run_dir: Path) -> dict:
    return json.loads((run_dir / "env.json").read_text())


def fake_tool(path: Path, script: str) -> str:
    path.write_text("#!/bin/sh\n" + script)
    path.chmod(0o755)
    return str(path)


@pytest.mark.parametrize("kind", ["bubblewrap", "firejail"])
def test_env_json_records_every_fact_and_every_passed_check(kind, tmp_path, work_root):
    run_dir = tmp_path / "run"
    env = run(run_dir, work_root, config={**CONFIG, "sandbox": kind}, kind=kind)
    assert env_json(run_dir) == env
    assert sorted(os.listdir(run_dir)) == ["env.json"]  # no temp file left behind
    assert (env["format"], env["status"], env["failure"], env["warnings"]) == (ENV_FORMAT, "passed", None, [])
    assert env["checks"] == {name: {"ok": True} for name in CHECKS}
    assert (env["config"], env["dataset_hash"], env["run_dir"]) == ({**CONFIG, "sandbox": kind}, "sha256:feed",
                                                                    str(run_dir))
    assert HOST_FACTS | {"disk", "gpu", "toolchain", "sandbox"} <= env.keys()
    assert env["os"]["kernel"] == platform.release()
    assert env["cpu"]["count"] == os.cpu_count()
    assert 0 < env["memory"]["available_bytes"] <= env["memory"]["total_bytes"]
    assert env["python"]["version"] == platform.python_version()
    assert env["packages"] == {name: _installed(name) for name in PACKAGES}
    assert env["packages"]["prefect"] == "3.9.1"
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    assert (env["ferrisbench"]["commit"], type(env["ferrisbench"]["dirty"])) == (head, bool)
    assert env["sandbox_tools"] == {"firejail": "0.9.72", "bubblewrap": "0.8.0"}
    assert env["disk"]["free_bytes"] == pytest.approx(shutil.disk_usage(run_dir).free, rel=0.01)
    assert env["gpu"]["required"] is False
    assert env["toolchain"]["rustc"].startswith("rustc 1.95.0")
    assert env["toolchain"]["clippy_driver"].startswith("clippy 0.1.95")
    assert env["sandbox"] == {"kind": kind, "identity": f"{kind} {'0.9.72' if kind == 'firejail' else '0.8.0'}",
                              "confined": True, "self_check": "passed",
                              "smoke": {"known_good": "passed", "known_bad": "failed_tests"}}


def _installed(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def test_missing_rustc_stops_the_run_and_env_json_records_why(tmp_path, work_root, monkeypatch):
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    monkeypatch.setenv("PATH", str(empty_bin))
    run_dir = tmp_path / "run"
    with pytest.raises(ProvisionError, match=r"^no usable Rust toolchain: rustc not found on PATH; install Rust "
                                             r"with rustup \(curl https://sh.rustup.rs"):
        run(run_dir, work_root)
    env = env_json(run_dir)
    assert (env["status"], env["failure"]["check"], env["toolchain"]) == ("failed", "rustc", None)
    assert env["checks"]["rustc"]["ok"] is False
    assert env["failure"]["message"] == env["checks"]["rustc"]["error"]
    assert [name for name, check in env["checks"].items() if check["ok"]] == ["run_dir_writable", "free_disk", "gpu"]
    assert "sandbox" not in env["checks"]


def test_sandbox_that_cannot_create_namespaces_stops_the_run_with_what_to_change(tmp_path, work_root):
    tool = fake_tool(tmp_path / "bwrap", '[ "$1" = --version ] && { echo "bubblewrap 0.8.0"; exit 0; }\n'
                                         'echo "bwrap: No permissions to create new namespace" >&2\nexit 1\n')
    run_dir = tmp_path / "run"
    with pytest.raises(ProvisionError, match=r"^the bubblewrap sandbox cannot run here: bubblewrap exited 1 before "
                                             r"starting the program: bwrap: No permissions to create new namespace; "
                                             r"run as root, or \(as another user\) enable unprivileged user"):
        run(run_dir, work_root, sandbox_executable=tool)
    env = env_json(run_dir)
    assert (env["status"], env["failure"]["check"]) == ("failed", "sandbox")
    assert env["sandbox"] == {"kind": "bubblewrap", "identity": "bubblewrap 0.8.0", "confined": True, "smoke": {}}
    assert env["toolchain"]["rustc"].startswith("rustc 1.95.0")


def test_missing_sandbox_tool_stops_the_run_with_the_install_command(tmp_path, work_root):
    with pytest.raises(ProvisionError, match=r"^the firejail sandbox cannot run here: firejail needs "
                                             r"/nonexistent/firejail, which is missing or not executable: "
                                             r"apt-get install -y firejail$"):
        run(tmp_path / "run", work_root, config={"sandbox": "firejail"}, kind="firejail",
            sandbox_executable="/nonexistent/firejail")
    assert env_json(tmp_path / "run")["failure"]["check"] == "sandbox"


@pytest.mark.parametrize("layout", ["file_in_place_of_the_dir", "file_as_a_parent"])
def test_run_dir_blocked_by_a_file_stops_the_run_before_anything_is_written(layout, tmp_path, work_root):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    run_dir = blocker if layout == "file_in_place_of_the_dir" else blocker / "run"
    expected = (f"run directory {run_dir} exists and is not a directory: choose another --out directory"
                if layout == "file_in_place_of_the_dir" else
                f"run directory {run_dir} is not writable (Not a directory): choose another --out directory, "
                "or fix its permissions or mount (it must be a writable directory)")
    with pytest.raises(ProvisionError) as raised:
        run(run_dir, work_root)
    assert str(raised.value) == expected
    assert (sorted(os.listdir(tmp_path)), blocker.read_text()) == (["blocker"], "not a directory")


def test_run_dir_that_even_root_cannot_write_stops_the_run(tmp_path, work_root):
    locked = tmp_path / "locked"
    locked.mkdir()
    if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute (chattr +i)")
    try:
        with pytest.raises(ProvisionError) as raised:
            run(locked, work_root)
        assert os.listdir(locked) == []
    finally:
        subprocess.run(["chattr", "-i", str(locked)], check=True)
    assert str(raised.value) == (f"run directory {locked} is not writable (Operation not permitted): choose "
                                 "another --out directory, or fix its permissions or mount (it must be a "
                                 "writable directory)")


def test_too_little_free_disk_stops_the_run_and_records_the_figures(tmp_path, work_root):
    run_dir = tmp_path / "run"
    with pytest.raises(ProvisionError, match=rf"^only [0-9.]+ GiB free on the disk of {run_dir}, need at least "
                                             r"1073741824.00 GiB: free space there or choose another --out"):
        run(run_dir, work_root, min_free_disk_bytes=1 << 60)
    env = env_json(run_dir)
    assert (env["failure"]["check"], env["disk"]["required_free_bytes"]) == ("free_disk", 1 << 60)
    assert "toolchain" not in env  # stopped before the toolchain was looked at


def test_generating_without_a_gpu_stops_the_run_and_names_the_alternatives(tmp_path, work_root):
    run_dir = tmp_path / "run"
    with pytest.raises(ProvisionError) as raised:
        run(run_dir, work_root, need_gpu=True, nvidia_smi="/nonexistent/nvidia-smi")
    assert str(raised.value) == (
        "generating samples with a model needs an NVIDIA GPU, but nvidia-smi not found (/nonexistent/nvidia-smi): "
        "run on a machine with a GPU and its driver (nvidia-smi must list it), or benchmark the `reference` "
        "source / an existing samples file, which need no GPU")
    assert env_json(run_dir)["gpu"] == {"required": True, "nvidia_smi": "/nonexistent/nvidia-smi", "devices": [],
                                        "problem": "nvidia-smi not found (/nonexistent/nvidia-smi)"}


def test_gpus_listed_by_nvidia_smi_are_recorded_and_satisfy_a_generating_run(tmp_path, work_root):
    # Test double: this machine has no GPU, so a stand-in answers nvidia-smi's exact query in its CSV format.
    query = "--query-gpu=name,driver_version,memory.total --format=csv,noheader"
    smi = fake_tool(tmp_path / "nvidia-smi", f'[ "$*" = "{query}" ] || exit 9\n'
                                             'echo "NVIDIA H200, 570.124.06, 143771 MiB"\n'
                                             'echo "NVIDIA H200, 570.124.06, 143771 MiB"\n')
    env = run(tmp_path / "run", work_root, need_gpu=True, nvidia_smi=smi)
    device = {"name": "NVIDIA H200", "driver_version": "570.124.06", "memory_total": "143771 MiB"}
    assert env["gpu"] == {"required": True, "nvidia_smi": smi, "devices": [device, device], "problem": None}


def test_unconfined_sandbox_runs_only_when_configured_and_is_warned_about_in_env_json(tmp_path, work_root):
    env = run(tmp_path / "run", work_root, config={"executor": {"sandbox": "none"}}, kind="none")
    assert env["warnings"] == ["sandbox 'none': samples run unconfined (network, home directory and host files "
                               "are reachable; the process-count limit is not enforced)"]
    assert env["sandbox"] == {"kind": "none", "identity": "none", "confined": False, "self_check": "passed",
                              "smoke": {"known_good": "passed", "known_bad": "failed_tests"}}


@pytest.mark.parametrize("config, kind, message", [
    ({"benchmark": "humaneval-rust"}, "none",
     "sandbox 'none' runs samples unconfined and must be chosen explicitly: set sandbox: none in the configuration"),
    ({"sandbox": "firejail"}, "none",
     "the configuration chooses sandbox 'firejail' but provisioning was asked to check 'none'; "
     "pass the configured kind"),
    ({"sandbox": "bubblewrap"}, "docker", "unknown sandbox kind 'docker'; choose one of bubblewrap, firejail, none"),
    ({"sandbox": "bubblewrap", "seed": object}, "bubblewrap",
     "the configuration is not JSON data and cannot be recorded: type <class 'object'>"),
])
def test_bad_arguments_are_refused_before_the_run_dir_is_touched(config, kind, message, tmp_path, work_root):
    with pytest.raises(ProvisionError) as raised:
        run(tmp_path / "run", work_root, config=config, kind=kind)
    assert str(raised.value) == message
    assert not (tmp_path / "run").exists()


def test_paths_and_enums_in_a_pydantic_configuration_are_recorded_as_strings(tmp_path, work_root):
    from tasks.config import ExecutorConfig

    config = ExecutorConfig(sandbox="bubblewrap", work_root=work_root, workers=2)
    env = run(tmp_path / "run", work_root, config=config)
    assert env["config"] == {"sandbox": "bubblewrap", "edition": "2021", "compile_timeout_s": 15.0,
                             "run_timeout_s": 5.0, "workers": 2, "max_completion_bytes": 64000,
                             "diagnostic_chars": 2000, "work_root": str(work_root), "batch_size": 128,
                             "batch_deadline_s": 0.1, "verdict_cache": True, "verdict_cache_dir": None}
