"""Specification of isolation between the jobs of one sandbox launch (`tasks.batch_script`).

A batch runs many programs in one launch, one after another. Each job runs as a uid of its own in
a private scratch dir, from a binary root sealed, with its output in files only root's shell can
name. So a job that tries everything on its siblings — write their scratch dirs, read or replace
their outputs, swap their binary, signal their processes, linger past its own end to do it while
they run — changes nothing for them. Real bubblewrap and firejail, real uids.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tasks.batch_script import Job, run_jobs
from tasks.sandbox import make_sandbox, processes_of_uid, run_limits
from tasks.toolchain import find_toolchain
from tasks.untrusted_files import seal_binary
from tests.helpers import claimed_worker, requires_root, temp_work_root

pytestmark = requires_root

# Runs first: tries every trick on what it can reach, and leaves a process behind that keeps
# trying while the next jobs run.
ATTACK = r"""
tamper() {
  for d in .. ../.. ../../..; do
    for f in $d/* $d/*/* $d/*/*/*; do
      [ -e "$f" ] || continue
      echo "#!/bin/sh" > "$f" 2>/dev/null && echo wrote "$f"
      mv "$f" "$f.moved" 2>/dev/null && echo moved "$f"
      ln -sf /etc/hostname "$f" 2>/dev/null && echo linked "$f"
      cat "$f" >/dev/null 2>&1 && echo read "$f"
    done
  done
  kill -KILL -1 2>/dev/null
}
tamper
setsid sh -c 'for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.05; kill -STOP -1; done' >/dev/null 2>&1 &
echo attacked
"""


@pytest.fixture(scope="module")
def worker():
    yield from claimed_worker(first=4400)


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-job-isolation-test-")


@pytest.mark.parametrize("kind", ["bubblewrap", "firejail"])
def test_a_job_cannot_reach_the_files_binary_output_or_processes_of_the_next_jobs(kind, worker, work_root):
    sandbox = make_sandbox(kind, find_toolchain(), worker=worker, work_root=work_root)
    with sandbox.new_workdir() as workdir:
        bin_dir = sandbox.compile_dir(workdir, "build")
        shutil.copyfile("/bin/echo", bin_dir / "prog")
        os.chown(bin_dir / "prog", sandbox.uid, sandbox.uid)
        seal_binary(bin_dir, "prog", sandbox.uid)
        victim = (str(bin_dir / "prog"), "victim", "output")
        jobs = [Job("attacker", ("/bin/sh", "-c", ATTACK), None, 2.0),
                Job("victim1", victim, None, 2.0),
                Job("sleeper", ("/bin/sh", "-c", "sleep 0.3; echo still here"), None, 2.0),
                Job("victim2", victim, None, 2.0)]
        results = run_jobs(sandbox, workdir, jobs, run_limits(5.0), 1 << 20)
        assert results["attacker"].stdout.splitlines()[-1] == b"attacked"
        touched = results["attacker"].stdout.decode()
        assert "prog" not in touched and "s-victim" not in touched and "out/" not in touched, touched
        for name in ("victim1", "victim2"):
            assert (results[name].finished, results[name].status) == (True, 0)
            assert (results[name].stdout, results[name].stderr) == (b"victim output\n", b"")
        assert (results["sleeper"].finished, results["sleeper"].stdout) == (True, b"still here\n")
        assert (bin_dir / "prog").read_bytes() == Path("/bin/echo").read_bytes()
    assert all(processes_of_uid(uid) == [] for uid in sandbox.job_uids[:4])


@pytest.mark.parametrize("kind", ["bubblewrap", "firejail"])
def test_every_job_of_a_launch_runs_as_its_own_uid_in_its_own_private_dir(kind, worker, work_root):
    sandbox = make_sandbox(kind, find_toolchain(), worker=worker, work_root=work_root)
    probe = 'id -u; pwd; stat -c "%u %a" .; stat -c "%u %a" ../out'
    with sandbox.new_workdir() as workdir:
        results = run_jobs(sandbox, workdir, [Job(f"j{n}", ("/bin/sh", "-c", probe), None, 2.0) for n in range(3)],
                           run_limits(5.0), 1 << 20)
    seen = [results[f"j{n}"].stdout.decode().split("\n") for n in range(3)]
    uids = [int(lines[0]) for lines in seen]
    assert uids == list(sandbox.job_uids[:3]) and sandbox.uid not in uids
    assert [Path(lines[1]).name for lines in seen] == ["s-j0", "s-j1", "s-j2"]
    assert [lines[2] for lines in seen] == [f"{uid} 700" for uid in uids]
    assert all(lines[3] == "0 700" for lines in seen)  # the outputs' directory: root's alone


@pytest.mark.parametrize("kind", ["bubblewrap", "firejail"])
def test_a_job_has_no_capability_no_group_and_no_way_to_gain_privileges(kind, worker, work_root):
    sandbox = make_sandbox(kind, find_toolchain(), worker=worker, work_root=work_root)
    fields = ("Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")
    with sandbox.new_workdir() as workdir:
        result = run_jobs(sandbox, workdir, [Job("j", ("/bin/cat", "/proc/self/status"), None, 2.0)],
                          run_limits(5.0), 1 << 20)["j"]
    status = dict(line.split(":", 1) for line in result.stdout.decode().splitlines())
    assert {name: status[name].strip() for name in fields} == {
        "Groups": "", "CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16, "CapBnd": "0" * 16,
        "CapAmb": "0" * 16, "NoNewPrivs": "1",
    }
    assert status["Uid"].split() == [str(sandbox.job_uids[0])] * 4
    assert status["Gid"].split() == [str(sandbox.job_uids[0])] * 4


def test_a_job_whose_uid_drop_fails_is_reported_not_started_never_as_the_programs_exit(worker, work_root):
    sandbox = make_sandbox("bubblewrap", find_toolchain(), worker=worker, work_root=work_root)
    with sandbox.new_workdir() as workdir:
        home = workdir / "missing"  # the runner cannot enter the job's dir: it stops before the program
        result = run_jobs(sandbox, workdir, [Job("j", ("/bin/true",), home, 2.0)], run_limits(5.0), 1 << 20)["j"]
    assert (result.started, result.finished) == (False, False)
    assert b"cannot enter the job's directory" in result.stderr
