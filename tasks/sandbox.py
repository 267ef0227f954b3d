"""Run untrusted model-written Rust (its compile and its test binary) confined.

One interface, three kinds: `bubblewrap` (an allow-list filesystem: only /usr, the toolchain
and the work dir exist inside), `firejail` (the host filesystem read-only with home and
temporary dirs hidden) and `none` (an explicit opt-out: limits, timeout and capture only).

Every command goes through the same inner chain, started inside the namespaces:
`prlimit` (limits apply to the program, not to the sandbox tool) → `setpriv` (drop root to a
per-worker uid, so RLIMIT_NPROC holds and nothing the program does runs as root) → `sh` writing
a launch marker to a pipe (a sandbox that fails to start is an error, never a program verdict;
the predecessor scored every firejail failure as a compile error) → `env -i` (exact environment).

Ownership inside a work dir (see SECURITY.md, Layer 4b): the work dir itself is root's; the
compiler runs as the worker's uid in directories of its own (`compile_dir`), and it is the only
thing that ever runs as that uid. Test binaries run as *job uids*, a block of uids per worker,
each in a private scratch dir (`scratch_dir`), so no program can touch what the compiler made,
what another job owns, or anything root later reads.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import structlog

from tasks.sandbox_process import (  # noqa: F401  (re-exported: the public API of this module)
    COMPILE_LIMITS,
    KILL,
    LAUNCH_ENV,
    POLL_S,
    READ_CHUNK,
    RUN_LIMITS,
    STRAY_GRACE_S,
    Limits,
    RunResult,
    SandboxError,
    _CappedBuffer,
    _collect,
    _cpu_backstop,
    _drain,
    _kill_group,
    _read_some,
    compile_limits,
    kill_processes_of_uids,
    processes_of_uid,
    run_limits,
)
from tasks.job_runner import job_runner
from tasks.toolchain import Toolchain
from tasks.untrusted_files import make_dir, remove_tree, sweep_stale

log = structlog.get_logger(__name__)

SANDBOX_UID_BASE = 61000  # worker w compiles as uid 61000 + w: workers never share RLIMIT_NPROC
# Worker w's test programs run as JOB_UID_BASE + w * JOB_UIDS_PER_WORKER + k, one uid per job of a
# launch (a batch has at most 1000 programs), above systemd's container range and any login uid.
JOB_UID_BASE = 1_900_000_000
JOB_UIDS_PER_WORKER = 1000
JOB_DIR_PREFIX = "job-"


def worker_uids(worker: int) -> tuple[int, range]:
    """The compiler's uid of sandbox worker `worker` and its block of job uids."""
    first_job_uid = JOB_UID_BASE + worker * JOB_UIDS_PER_WORKER
    return SANDBOX_UID_BASE + worker, range(first_job_uid, first_job_uid + JOB_UIDS_PER_WORKER)
PRLIMIT, SETPRIV, SH, ENV = "/usr/bin/prlimit", "/usr/bin/setpriv", "/bin/sh", "/usr/bin/env"


class SandboxUnavailable(SandboxError):
    """The chosen sandbox cannot run on this machine; the message says what to install or change."""


class SandboxLaunchFailed(SandboxError):
    """The sandbox tool exited without ever starting the program."""


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents




def default_work_root() -> Path:
    """Not under /tmp or /var/tmp: firejail mounts private tmpfs there, hiding the work dirs."""
    if os.geteuid() == 0:
        return Path("/var/lib/ferrisbench/sandbox")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ferrisbench" / "sandbox"


class Sandbox(ABC):
    """Runs one command at a time for one worker (its uid's leftovers are killed after each run)."""

    kind: str
    package: str  # what `apt-get install -y` provides the tool
    default_executable: str | None = None
    fix_hint = ""  # what to change when the tool is installed but cannot start a program
    reports_signal_as_exit_code = True  # bwrap and firejail exit 128+N when the program dies of N

    def __init__(self, toolchain: Toolchain, worker: int = 0, work_root: Path | None = None,
                 executable: str | None = None) -> None:
        self.toolchain = toolchain
        self.worker = worker
        self.work_root = Path(work_root or default_work_root()).absolute()
        self.executable = executable or self.default_executable
        if self.executable is not None and not os.access(self.executable, os.X_OK):
            raise SandboxUnavailable(f"{self.kind} needs {self.executable}, which is missing or not executable: "
                                     f"apt-get install -y {self.package}")
        self._identity: str | None = None
        self._all_uids: frozenset[int] | None = None
        self._lock = threading.Lock()
        for tool, package in ((PRLIMIT, "util-linux"), (SETPRIV, "util-linux"), (SH, "dash"),
                              (ENV, "coreutils"), (KILL, "procps")):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailable(f"{tool} is missing: apt-get install -y {package}")
        if not toolchain.rustc.is_file():
            raise SandboxUnavailable(f"toolchain has no compiler at {toolchain.rustc}")
        if os.geteuid() == 0:
            self.uid: int | None
            self.uid, self.job_uids = worker_uids(worker)
        else:
            self.uid = None
            self.job_uids = range(0)
            log.info("sandbox_uid_drop_skipped", kind=self.kind, uid=os.geteuid(),
                     reason="not running as root: programs already run unprivileged; "
                            "the process-count limit is not applied (it would count all of this user's processes)")
        self._prepare()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.work_root.chmod(0o755)  # the sandbox uid must be able to traverse it
        try:
            self.job_runner_host = job_runner(toolchain, self.work_root)
        except SandboxError as error:
            raise SandboxUnavailable(f"{error}; a C linker driver (`cc`) is needed: apt-get install -y gcc") from error

    @property
    def job_runner(self) -> str:
        """Path of the job runner (`tasks/job_runner.rs`) as seen inside the sandbox."""
        return str(self.job_runner_host)

    def _prepare(self) -> None:
        """Checks and command parts specific to one kind."""

    @property
    @abstractmethod
    def rustc(self) -> str:
        """Path of the toolchain's rustc as seen inside the sandbox (argv[0] of a compile)."""

    @abstractmethod
    def _wrapper(self, workdir: Path, cwd: Path) -> list[str]:
        """The sandbox tool's command line, up to the inner chain: `workdir` writable, in `cwd`."""

    @property
    def isolates_jobs(self) -> bool:
        """Whether every job can get a uid of its own (needs root); without, jobs of one launch
        could reach each other, so the executor judges each program in a launch of its own."""
        return len(self.job_uids) > 0

    def inner_env(self, cwd: Path) -> dict[str, str]:
        """The whole environment of a program: TMPDIR is its own (writable) directory."""
        return {"PATH": f"{Path(self.rustc).parent}:/usr/bin:/bin", "RUST_BACKTRACE": "0",
                "LANG": "C", "TMPDIR": str(cwd)}

    def _drop_to(self, uid: int) -> list[str]:
        """The command prefix that runs the rest of a command line as `uid`, without privileges."""
        return [SETPRIV, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all", "--"]

    def _inner(self, argv: Sequence[str], cwd: Path, limits: Limits, uid: int | None) -> list[str]:
        chain = [PRLIMIT, f"--as={limits.address_space_mb << 20}", f"--fsize={limits.file_size_mb << 20}",
                 f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}", "--core=0"]
        if self.uid is not None:  # inherited by every process below, enforced for each non-root uid
            chain.append(f"--nproc={limits.processes}")
        chain.append("--")
        if uid is not None:
            chain += self._drop_to(uid)
        # stdin is the marker pipe's write end: report the launch, then give the program /dev/null.
        # As a sandbox uid, the program's orphans die with it (`kill -1` reaches only that uid;
        # firejail would otherwise wait for them, and its --deterministic-shutdown costs 100 ms).
        run = '"$@"; status=$?; kill -KILL -1 2>/dev/null; exit $status' if uid is not None else 'exec "$@"'
        chain += [SH, "-c", f"printf L >&0 && exec 0</dev/null && {run}", "launch",
                  ENV, "-i", *(f"{k}={v}" for k, v in self.inner_env(cwd).items()), *argv]
        return chain

    def identity(self) -> str:
        """Tool and version, recorded in every result row, e.g. "bubblewrap 0.8.0"."""
        if self._identity is None:
            try:
                done = subprocess.run([self.executable, "--version"], capture_output=True, text=True,
                                      timeout=30, env=LAUNCH_ENV, check=True)
            except (OSError, subprocess.SubprocessError) as error:
                raise SandboxUnavailable(f"cannot run {self.executable} --version ({error}): "
                                         f"apt-get install -y {self.package}") from error
            first_line = (done.stdout.splitlines() or ["unknown"])[0]  # "firejail version 0.9.72"
            self._identity = f"{self.kind} {first_line.split()[-1]}"
        return self._identity

    @property
    def worker_dir(self) -> Path:
        return self.work_root / f"w{self.worker}"

    def all_uids(self) -> frozenset[int]:
        """Every uid this sandbox's programs run as (what is killed after each run)."""
        if self._all_uids is None:
            self._all_uids = frozenset(() if self.uid is None else (self.uid, *self.job_uids))
        return self._all_uids

    def sweep_stale_workdirs(self) -> int:
        """Remove the work dirs a killed process left for this worker id (call while holding the
        id's claim: then no live process uses them)."""
        if self.uid is not None:
            kill_processes_of_uids(self.all_uids())
        removed = sweep_stale(self.worker_dir, JOB_DIR_PREFIX)
        if removed:
            log.info("stale_workdirs_swept", worker=self.worker, removed=removed)
        return removed

    @contextmanager
    def new_workdir(self) -> Iterator[Path]:
        """A fresh root-owned dir (the sandbox uids may traverse it, never write it); programs get
        directories of their own inside (`compile_dir`, `scratch_dir`). Removed afterwards, with
        every process of this worker's uids, without following anything they left."""
        parent = self.worker_dir
        parent.mkdir(exist_ok=True)
        parent.chmod(0o755)
        path = Path(tempfile.mkdtemp(prefix=JOB_DIR_PREFIX, dir=parent))
        try:
            path.chmod(0o755)
            yield path
        finally:
            if self.uid is not None:
                kill_processes_of_uids(self.all_uids())
            remove_tree(path)

    def compile_dir(self, workdir: Path, name: str) -> Path:
        """A directory of `workdir` that only the compiler (the worker's uid) writes; the job
        uids may reach files in it by name (e.g. a sealed binary) but not list or change it."""
        return make_dir(Path(workdir) / name, self.uid, 0o711)

    def scratch_dir(self, workdir: Path, name: str, uid: int | None) -> Path:
        """A private directory of one job's uid: its cwd and TMPDIR, nobody else's."""
        return make_dir(Path(workdir) / name, uid, 0o700)

    def _job_root(self, cwd: Path) -> Path:
        """The `new_workdir()` that holds `cwd`."""
        for candidate in (cwd, *cwd.parents):
            if candidate.parent == self.worker_dir and candidate.name.startswith(JOB_DIR_PREFIX):
                return candidate
        raise ValueError(f"{cwd} is not a work dir of this sandbox, nor inside one (use new_workdir())")

    def run(self, argv: Sequence[str], cwd: Path, limits: Limits, *, uid: int | None | str = "worker") -> RunResult:
        """Run `argv` in `cwd` (inside a `new_workdir()`), confined; paths in argv relative to it.

        `uid`: "worker" (the default: the compiler's uid), a job uid, or None (stays root inside
        the sandbox: only for the executor's own job scripts, which drop to job uids per job)."""
        cwd = Path(cwd).absolute()
        if not cwd.is_dir():
            raise ValueError(f"{cwd} is not a directory")
        workdir = self._job_root(cwd)
        as_uid = self.uid if uid == "worker" else uid
        if self.uid is None:
            as_uid = None
        elif as_uid is not None and as_uid not in self.all_uids():
            raise ValueError(f"uid {as_uid} is not one of this sandbox's uids")
        marker_read, marker_write = os.pipe()
        try:
            command = self._wrapper(workdir, cwd) + self._inner(argv, cwd, limits, as_uid)
            with self._lock:
                return self._execute(command, cwd, limits, marker_read, marker_write)
        finally:
            os.close(marker_read)

    def _execute(self, command: list[str], workdir: Path, limits: Limits, marker_read: int,
                 marker_write: int) -> RunResult:
        started = time.monotonic()
        try:
            process = subprocess.Popen(command, cwd=workdir, env=LAUNCH_ENV, stdin=marker_write,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as error:
            raise SandboxLaunchFailed(f"cannot start {command[0]}: {error}; "
                                      f"apt-get install -y {self.package}") from error
        finally:
            os.close(marker_write)  # from now on only the sandboxed side holds it
        stdout, stderr = _CappedBuffer(limits.output_bytes), _CappedBuffer(limits.output_bytes)
        streams = {process.stdout.fileno(): stdout, process.stderr.fileno(): stderr}
        try:
            timed_out, ended = _collect(process, streams, started + limits.timeout_s)
            _kill_group(process)
            process.wait()
            if self.uid is not None:
                kill_processes_of_uids(self.all_uids())
            _drain(streams, time.monotonic() + STRAY_GRACE_S)
        finally:
            process.stdout.close()
            process.stderr.close()
        os.set_blocking(marker_read, False)
        try:
            launched = os.read(marker_read, 1) == b"L"
        except BlockingIOError:
            launched = False
        if not launched:
            raise SandboxLaunchFailed(f"{self.kind} exited {process.returncode} before starting the program: "
                                      f"{bytes(stderr.data[:2000]).decode(errors='replace').strip()}")
        returncode, killed_by = self._decode(process.returncode)
        return RunResult(returncode=None if timed_out else returncode, signal=killed_by, timed_out=timed_out,
                         seconds=ended - started, stdout=bytes(stdout.data), stderr=bytes(stderr.data),
                         stdout_truncated=stdout.truncated, stderr_truncated=stderr.truncated)

    def _decode(self, status: int) -> tuple[int | None, int | None]:
        if status < 0:
            return None, -status
        if self.reports_signal_as_exit_code and 128 < status <= 128 + 64:
            return None, status - 128  # ambiguous with a program calling exit(128 + N); accepted
        return status, None

    def self_check(self) -> None:
        """Prove here that a compile and a run work, fail when they should, and are confined."""
        from tasks.sandbox_probe import prove_confinement

        prove_confinement(self)

class BubblewrapSandbox(Sandbox):
    kind, package, default_executable = "bubblewrap", "bubblewrap", "/usr/bin/bwrap"
    fix_hint = ("run as root, or (as another user) enable unprivileged user namespaces: "
                "sysctl -w kernel.unprivileged_userns_clone=1 / user.max_user_namespaces=15000")
    SYSROOT_INSIDE = "/opt/rust"
    JOB_RUNNER_INSIDE = "/opt/ferrisbench/job-runner"

    def _prepare(self) -> None:
        for system_dir in ("/usr", "/etc", "/opt", "/proc", "/dev", "/bin", "/lib"):
            if _is_within(self.work_root, Path(system_dir)):
                raise SandboxUnavailable(f"work root {self.work_root} lies under {system_dir}, which bubblewrap "
                                         "rebuilds; choose another (default /var/lib/ferrisbench/sandbox)")
        self._base = [self.executable, "--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts",
                      "--die-with-parent", "--clearenv", "--ro-bind", "/usr", "/usr"]
        for top in ("/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"):
            if os.path.islink(top):
                self._base += ["--symlink", os.readlink(top), top]
            elif os.path.isdir(top):
                self._base += ["--ro-bind", top, top]
        self._base += ["--perms", "0755", "--dir", "/etc"]
        for needed in ("/etc/alternatives", "/etc/ld.so.cache"):  # `cc` resolves through alternatives
            if os.path.exists(needed):
                self._base += ["--ro-bind", needed, needed]
        self._base += ["--proc", "/proc", "--dev", "/dev", "--perms", "0755", "--dir", "/opt",
                       "--ro-bind", str(self.toolchain.sysroot), self.SYSROOT_INSIDE]

    @property
    def rustc(self) -> str:
        return f"{self.SYSROOT_INSIDE}/bin/rustc"

    @property
    def job_runner(self) -> str:
        return self.JOB_RUNNER_INSIDE

    def _wrapper(self, workdir: Path, cwd: Path) -> list[str]:
        parents = []
        for ancestor in reversed(workdir.parents[:-1]):  # 0755, or the uid could not reach the work dir
            parents += ["--perms", "0755", "--dir", str(ancestor)]
        return [*self._base, "--perms", "0755", "--dir", str(Path(self.JOB_RUNNER_INSIDE).parent),
                "--ro-bind", str(self.job_runner_host), self.JOB_RUNNER_INSIDE,
                *parents, "--bind", str(workdir), str(workdir), "--chdir", str(cwd)]


class FirejailSandbox(Sandbox):
    kind, package, default_executable = "firejail", "firejail", "/usr/bin/firejail"
    fix_hint = "run as root; check `firejail --noprofile --net=none true` works in this container"
    # firejail (as root) mounts private tmpfs on these, so a work dir there is invisible inside.
    PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")

    def _prepare(self) -> None:
        if os.geteuid() != 0:
            raise SandboxUnavailable("the firejail sandbox needs root (it binds the toolchain with --bind); "
                                     "use the bubblewrap sandbox instead")
        self.hidden = [p for p in dict.fromkeys(("/root", "/home", str(Path.home()), "/mnt", "/media"))
                       if os.path.exists(p)]
        for forbidden in (*self.PRIVATE_TMPFS, *self.hidden):
            if _is_within(self.work_root, Path(forbidden)):
                raise SandboxUnavailable(f"work root {self.work_root} lies under {forbidden}, which firejail "
                                         "hides or replaces; choose another (default /var/lib/ferrisbench/sandbox)")
        self.sysroot_inside = self.work_root / ".toolchain"  # the home dir holding it is blacklisted
        self.sysroot_inside.mkdir(parents=True, exist_ok=True)
        self.sysroot_inside.chmod(0o755)
        private = ["--private-tmp", "--read-only=/tmp", "--tmpfs=/dev/shm", "--read-only=/dev/shm"]
        private += [f"--read-only={p}" for p in ("/var/tmp", "/run/lock") if os.path.isdir(p)]
        # Without --deterministic-exit-code firejail exits with the status of the last process to end.
        # --ipc-namespace: SysV IPC objects of one launch's uids die with it instead of persisting.
        self._options = ["--noprofile", "--quiet", "--net=none", "--ipc-namespace", "--deterministic-exit-code",
                         f"--bind={self.toolchain.sysroot},{self.sysroot_inside}",
                         *(f"--blacklist={p}" for p in self.hidden), "--read-only=/", *private]

    @property
    def rustc(self) -> str:
        return str(self.sysroot_inside / "bin" / "rustc")

    def _wrapper(self, workdir: Path, cwd: Path) -> list[str]:
        return [self.executable, *self._options, f"--read-write={workdir}", "--"]


class UnconfinedSandbox(Sandbox):
    """`none`: the program sees the host as this user; only limits, timeout and capture apply."""

    kind, package = "none", "util-linux"
    reports_signal_as_exit_code = False  # the inner chain only execs: the status is the program's

    def _prepare(self) -> None:
        self.uid = None  # the toolchain usually lives in a home dir another uid cannot enter
        self.job_uids = range(0)
        log.warning("sandbox_disabled", kind="none", user=os.geteuid(),
                    consequence="samples run unconfined: network, home directory and host files are "
                                "reachable; the process-count limit is not enforced")

    @property
    def rustc(self) -> str:
        return str(self.toolchain.rustc)

    def _wrapper(self, workdir: Path, cwd: Path) -> list[str]:
        return []

    def identity(self) -> str:
        return "none"


SANDBOX_KINDS: dict[str, type[Sandbox]] = {
    "bubblewrap": BubblewrapSandbox, "firejail": FirejailSandbox, "none": UnconfinedSandbox,
}


def make_sandbox(kind: str, toolchain: Toolchain, worker: int = 0, work_root: Path | None = None,
                 executable: str | None = None) -> Sandbox:
    """The sandbox named `kind`; `executable` overrides where its tool (bwrap, firejail) lives."""
    if kind not in SANDBOX_KINDS:
        raise ValueError(f"unknown sandbox kind {kind!r}; choose one of {', '.join(SANDBOX_KINDS)}")
    return SANDBOX_KINDS[kind](toolchain, worker, work_root, executable)
