"""Run untrusted model-written Rust (its compile and its test binary) confined.

One interface, three kinds: `bubblewrap` (an allow-list filesystem: only /usr, the toolchain
and the work dir exist inside), `firejail` (the host filesystem read-only with home and
temporary dirs hidden) and `none` (an explicit opt-out: limits, timeout and capture only).

Every command goes through the same inner chain, started inside the namespaces:
`prlimit` (limits apply to the program, not to the sandbox tool) → `setpriv` (drop root to a
per-worker uid, so RLIMIT_NPROC holds and nothing the program does runs as root) → `sh` writing
a launch marker to a pipe (a sandbox that fails to start is an error, never a program verdict;
the predecessor scored every firejail failure as a compile error) → `env -i` (exact environment).
"""

from __future__ import annotations

import os
import shutil
import socket
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
    kill_processes_of_uid,
    processes_of_uid,
    run_limits,
)
from tasks.toolchain import Toolchain

log = structlog.get_logger(__name__)

SANDBOX_UID_BASE = 61000  # worker w runs as uid 61000 + w: workers never share RLIMIT_NPROC
PRLIMIT, SETPRIV, SH, ENV = "/usr/bin/prlimit", "/usr/bin/setpriv", "/bin/sh", "/usr/bin/env"


class SandboxUnavailable(SandboxError):
    """The chosen sandbox cannot run on this machine; the message says what to install or change."""


class SandboxLaunchFailed(SandboxError):
    """The sandbox tool exited without ever starting the program."""


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


# Reports what a program inside can see and do; self_check compares it with what it must.
PROBE_SOURCE = r"""
use std::time::Duration;
fn main() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1));
    println!("uid={}", uid.unwrap_or("unknown"));
    println!("home={}", if std::fs::read_dir("HOME_DIR").is_ok() { "visible" } else { "hidden" });
    let address = "127.0.0.1:PORT".parse().unwrap();
    let connected = std::net::TcpStream::connect_timeout(&address, Duration::from_secs(2)).is_ok();
    println!("network={}", if connected { "connected" } else { "refused" });
}
"""


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
        self._lock = threading.Lock()
        for tool, package in ((PRLIMIT, "util-linux"), (SETPRIV, "util-linux"), (SH, "dash"),
                              (ENV, "coreutils"), (KILL, "procps")):
            if not os.access(tool, os.X_OK):
                raise SandboxUnavailable(f"{tool} is missing: apt-get install -y {package}")
        if not toolchain.rustc.is_file():
            raise SandboxUnavailable(f"toolchain has no compiler at {toolchain.rustc}")
        if os.geteuid() == 0:
            self.uid: int | None = SANDBOX_UID_BASE + worker
        else:
            self.uid = None
            log.info("sandbox_uid_drop_skipped", kind=self.kind, uid=os.geteuid(),
                     reason="not running as root: programs already run unprivileged; "
                            "the process-count limit is not applied (it would count all of this user's processes)")
        self._prepare()
        self.work_root.mkdir(parents=True, exist_ok=True)
        self.work_root.chmod(0o755)  # the sandbox uid must be able to traverse it

    def _prepare(self) -> None:
        """Checks and command parts specific to one kind."""

    @property
    @abstractmethod
    def rustc(self) -> str:
        """Path of the toolchain's rustc as seen inside the sandbox (argv[0] of a compile)."""

    @abstractmethod
    def _wrapper(self, workdir: Path) -> list[str]:
        """The sandbox tool's command line, up to the inner chain."""

    def _inner_env(self, workdir: Path) -> dict[str, str]:
        return {"PATH": f"{Path(self.rustc).parent}:/usr/bin:/bin", "RUST_BACKTRACE": "0",
                "LANG": "C", "TMPDIR": str(workdir)}

    def _inner(self, argv: Sequence[str], workdir: Path, limits: Limits) -> list[str]:
        chain = [PRLIMIT, f"--as={limits.address_space_mb << 20}", f"--fsize={limits.file_size_mb << 20}",
                 f"--cpu={limits.cpu_seconds}:{limits.cpu_seconds + 1}", "--core=0"]
        if self.uid is not None:
            chain += [f"--nproc={limits.processes}", "--",
                      SETPRIV, f"--reuid={self.uid}", f"--regid={self.uid}", "--clear-groups",
                      "--no-new-privs", "--bounding-set=-all", "--inh-caps=-all"]
        # stdin is the marker pipe's write end: report the launch, then give the program /dev/null.
        # As the sandbox uid, the program's orphans die with it (`kill -1` reaches only that uid;
        # firejail would otherwise wait for them, and its --deterministic-shutdown costs 100 ms).
        run = '"$@"; status=$?; kill -KILL -1 2>/dev/null; exit $status' if self.uid is not None else 'exec "$@"'
        chain += ["--", SH, "-c", f"printf L >&0 && exec 0</dev/null && {run}", "launch",
                  ENV, "-i", *(f"{k}={v}" for k, v in self._inner_env(workdir).items()), *argv]
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

    @contextmanager
    def new_workdir(self) -> Iterator[Path]:
        """A fresh dir only this worker's uid can write; removed (with its processes) afterwards."""
        parent = self.work_root / f"w{self.worker}"
        parent.mkdir(exist_ok=True)
        parent.chmod(0o755)
        path = Path(tempfile.mkdtemp(prefix="job-", dir=parent))
        try:
            if self.uid is not None:
                os.chown(path, self.uid, self.uid)
            yield path
        finally:
            if self.uid is not None:
                kill_processes_of_uid(self.uid)
            shutil.rmtree(path)

    def run(self, argv: Sequence[str], workdir: Path, limits: Limits) -> RunResult:
        """Run `argv` in `workdir` (a `new_workdir()`), confined; paths in argv relative to it."""
        workdir = Path(workdir).absolute()
        if not _is_within(workdir, self.work_root) or not workdir.is_dir():
            raise ValueError(f"{workdir} is not a work dir of this sandbox (use new_workdir())")
        marker_read, marker_write = os.pipe()
        try:
            command = self._wrapper(workdir) + self._inner(argv, workdir, limits)
            with self._lock:
                return self._execute(command, workdir, limits, marker_read, marker_write)
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
                kill_processes_of_uid(self.uid)
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
        self.identity()
        listener = socket.create_server(("127.0.0.1", 0))  # reachable from the host, never from inside
        try:
            with self.new_workdir() as workdir:
                facts = self._probe(workdir, listener.getsockname()[1])
        except SandboxLaunchFailed as error:
            raise SandboxUnavailable(f"{error}; {self.fix_hint}") from error
        finally:
            listener.close()
        expected = {"network": "refused", "home": "hidden"}
        if self.uid is not None:
            expected["uid"] = str(self.uid)
        wrong = {k: facts.get(k) for k, v in expected.items() if facts.get(k) != v}
        if wrong and self.kind != "none":
            raise SandboxUnavailable(f"{self.kind} does not confine programs here: {wrong} (expected {expected})")
        report = log.warning if wrong else log.info
        report("sandbox_self_check_passed", kind=self.kind, identity=self.identity(), facts=facts, confined=not wrong)

    def _probe(self, workdir: Path, port: int) -> dict[str, str]:
        source = PROBE_SOURCE.replace("HOME_DIR", str(Path.home())).replace("PORT", str(port))
        (workdir / "probe.rs").write_text(source)
        (workdir / "broken.rs").write_text('fn main() { let n: u32 = "not a number"; println!("{n}"); }\n')
        compile_ = [self.rustc, "--edition", "2021", "-o"]
        built = self.run([*compile_, "probe", "probe.rs"], workdir, COMPILE_LIMITS)
        if not built.succeeded:
            raise SandboxUnavailable(f"{self.kind}: rustc cannot build a known-good program inside the sandbox "
                                     f"(exit {built.returncode}, signal {built.signal}): {built.stderr[:2000]!r}")
        rejected = self.run([*compile_, "broken", "broken.rs"], workdir, COMPILE_LIMITS)
        if rejected.succeeded or b"E0308" not in rejected.stderr:
            raise SandboxUnavailable(f"{self.kind}: a known-bad program was not rejected with E0308: "
                                     f"exit {rejected.returncode}, {rejected.stderr[:2000]!r}")
        ran = self.run(["./probe"], workdir, RUN_LIMITS)
        if not ran.succeeded:
            raise SandboxUnavailable(f"{self.kind}: a known-good program fails inside the sandbox "
                                     f"(exit {ran.returncode}, signal {ran.signal}): {ran.stderr[:2000]!r}")
        return dict(line.split("=", 1) for line in ran.stdout.decode().splitlines() if "=" in line)


class BubblewrapSandbox(Sandbox):
    kind, package, default_executable = "bubblewrap", "bubblewrap", "/usr/bin/bwrap"
    fix_hint = ("run as root, or (as another user) enable unprivileged user namespaces: "
                "sysctl -w kernel.unprivileged_userns_clone=1 / user.max_user_namespaces=15000")
    SYSROOT_INSIDE = "/opt/rust"

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

    def _wrapper(self, workdir: Path) -> list[str]:
        parents = []
        for ancestor in reversed(workdir.parents[:-1]):  # 0755, or the uid could not reach the work dir
            parents += ["--perms", "0755", "--dir", str(ancestor)]
        return [*self._base, *parents, "--bind", str(workdir), str(workdir), "--chdir", str(workdir)]


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
        self._options = ["--noprofile", "--quiet", "--net=none", "--deterministic-exit-code",
                         f"--bind={self.toolchain.sysroot},{self.sysroot_inside}",
                         *(f"--blacklist={p}" for p in self.hidden), "--read-only=/", *private]

    @property
    def rustc(self) -> str:
        return str(self.sysroot_inside / "bin" / "rustc")

    def _wrapper(self, workdir: Path) -> list[str]:
        return [self.executable, *self._options, f"--read-write={workdir}", "--"]


class UnconfinedSandbox(Sandbox):
    """`none`: the program sees the host as this user; only limits, timeout and capture apply."""

    kind, package = "none", "util-linux"
    reports_signal_as_exit_code = False  # the inner chain only execs: the status is the program's

    def _prepare(self) -> None:
        self.uid = None  # the toolchain usually lives in a home dir another uid cannot enter
        log.warning("sandbox_disabled", kind="none", user=os.geteuid(),
                    consequence="samples run unconfined: network, home directory and host files are "
                                "reachable; the process-count limit is not enforced")

    @property
    def rustc(self) -> str:
        return str(self.toolchain.rustc)

    def _wrapper(self, workdir: Path) -> list[str]:
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
