"""The Rust toolchain the executor compiles with, located once and recorded exactly.

Samples are compiled by the toolchain's own `rustc` (`<sysroot>/bin/rustc`), not the rustup
proxy: the proxy costs ~5 ms per call, reads `~/.rustup` (which the sandbox hides) and could
switch versions under a running evaluation. The version string goes into result identities.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

INSTALL_HINT = (
    "install Rust with rustup (curl https://sh.rustup.rs -sSf | sh -s -- -y "
    "--profile minimal) or pass the path of a rustc binary"
)


class ToolchainMissing(RuntimeError):
    """No usable Rust toolchain (or C linker driver) on this machine."""


@dataclass(frozen=True)
class Toolchain:
    sysroot: Path  # `rustc --print sysroot`; the sandbox exposes it read-only
    rustc_version: str  # first line of `rustc -vV`, e.g. "rustc 1.95.0 (59807616e 2026-04-14)"
    host: str  # target triple, e.g. "x86_64-unknown-linux-gnu"

    @property
    def rustc(self) -> Path:
        """The real compiler inside the sysroot (not a rustup proxy)."""
        return self.sysroot / "bin" / "rustc"


def _ask(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise ToolchainMissing(f"cannot run {argv[0]!r} ({error}); {INSTALL_HINT}") from error
    if done.returncode != 0:
        raise ToolchainMissing(
            f"`{' '.join(argv)}` failed with exit code {done.returncode}: "
            f"{done.stderr.strip()[:500]}; {INSTALL_HINT}"
        )
    return done.stdout


def find_toolchain(rustc: str | None = None) -> Toolchain:
    """Locate the toolchain behind `rustc` (default: the one on PATH) and check it can link.

    rustc links through the system C compiler driver `cc`, so a machine without one cannot
    build any test binary; that is reported here rather than as a compile error per sample.
    """
    given = rustc or shutil.which("rustc")
    if given is None:
        raise ToolchainMissing(f"rustc not found on PATH; {INSTALL_HINT}")
    sysroot = Path(_ask([given, "--print", "sysroot"]).strip())
    real_rustc = sysroot / "bin" / "rustc"
    if not real_rustc.is_file():
        raise ToolchainMissing(f"{given} reports sysroot {sysroot}, which has no bin/rustc; {INSTALL_HINT}")
    details = _ask([str(real_rustc), "-vV"]).splitlines()
    version = details[0].strip() if details else ""
    host = next((line.split(":", 1)[1].strip() for line in details if line.startswith("host:")), "")
    if not version.startswith("rustc ") or not host:
        raise ToolchainMissing(f"unexpected `rustc -vV` output from {real_rustc}: {details[:3]}")
    if shutil.which("cc", path="/usr/bin:/bin") is None:
        raise ToolchainMissing(
            "no C compiler driver `cc` in /usr/bin (rustc links through it): apt-get install -y gcc"
        )
    toolchain = Toolchain(sysroot=sysroot, rustc_version=version, host=host)
    log.info("toolchain_found", sysroot=str(sysroot), version=version, host=host)
    return toolchain
