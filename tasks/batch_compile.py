"""Compile many programs with one rustc: one module file per program under a generated root.

Each pass compiles the members still in the group with `--error-format=json`. An error whose
primary span (or the macro call site it expands from) lies in a member's file is that member's:
the member leaves with exactly those errors and the rest are compiled again. A failure that
names no member (a linker error, an ICE, rustc killed by its memory or time limit) splits the
group in halves, down to single programs, which the caller compiles alone like the per-sample
path. rustc's own limits are those of a single compile, and a pass may take no longer than a
single compile may: a member that would fail alone for time or memory fails the group too.

The compile errors of a member come from the pass that rejected it, with its file name put back
to `main.rs`, so its error codes and diagnostic read as if it had been compiled alone.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import structlog

from tasks.config import ExecutorConfig
from tasks.execute import BINARY_NAME, SOURCE_NAME, compile_argv, compile_verdict
from tasks.sandbox import RunResult, Sandbox, compile_limits
from tasks.schema import Problem, Protocol, Verdict
from tasks.untrusted_files import seal_binary, write_new

log = structlog.get_logger(__name__)

DIAGNOSTICS_BYTES = 64 << 20  # a pass's JSON diagnostics for ~100 members fit easily
ENTRY_PREFIX = "__ferrisbench_batch_entry_"
ROOT_FILE = "root{}.rs"  # the crate root of pass N (`#[path] mod` lines)
_ROOT_FILE = re.compile(r"root\d+\.rs")
# An error that depends on how much memory the whole rustc has left could be the batch's doing.
_RESOURCE_BOUND = "more memory than available"


@dataclass
class Member:
    """One program in a batch: its index in the batch job, module name and source."""

    index: int
    module: str  # e.g. fb1a2b3c4d_00017: a name no program can guess (the nonce is random)
    problem: Problem
    program: str

    @property
    def file_name(self) -> str:
        return f"{self.module}.rs"


@dataclass
class CompiledGroup:
    directory: Path  # holds the root, the members' files and the binary
    members: list[Member]
    compile_seconds: float  # per member: the group's passes divided among its members


@dataclass
class GroupOutcome:
    compiled: list[CompiledGroup] = field(default_factory=list)
    rejected: dict[int, Verdict] = field(default_factory=dict)  # member index -> compile verdict
    alone: list[Member] = field(default_factory=list)  # to compile on their own
    passes: int = 0


def entry_name(nonce: str) -> str:
    return ENTRY_PREFIX + nonce


def member_source(member: Member, nonce: str) -> str:
    """The member's file: its program, plus (MAIN protocol) a function the root can call."""
    if member.problem.protocol is Protocol.MAIN:
        # Appended after the program, so every line number of the program stays the same.
        return member.program + f"\n#[allow(dead_code)]\npub(crate) fn {entry_name(nonce)}() {{ main() }}\n"
    return member.program


def root_source(members: Sequence[Member], protocol: Protocol, nonce: str) -> str:
    """`#[path] mod` lines; for MAIN a `main` that runs the member named by argv[1]."""
    lines = [f'#[path = "{m.file_name}"] mod {m.module};' for m in members]
    if protocol is Protocol.MAIN:
        arms = "".join(f'        Some("{m.index}") => {m.module}::{entry_name(nonce)}(),\n' for m in members)
        lines.append(
            "fn main() {\n    match ::std::env::args().nth(1).as_deref() {\n"
            f"{arms}        _ => ::std::process::exit(97),\n    }}\n}}"
        )
    return "\n".join(lines) + "\n"


def compile_group(
    sandbox: Sandbox,
    workdir: Path,
    members: list[Member],
    config: ExecutorConfig,
    nonce: str,
) -> GroupOutcome:
    """Compile `members` (one protocol) as modules of shared crates; see the module docstring."""
    outcome = GroupOutcome()
    stack = [members]
    while stack:
        group = stack.pop()
        if len(group) == 1:
            outcome.alone.extend(group)
            continue
        directory = sandbox.compile_dir(workdir, f"g{secrets.token_hex(4)}")
        for member in group:  # readable by the compiler's uid only
            write_new(directory / member.file_name, member_source(member, nonce), owner=sandbox.uid)
        pending, spent = list(group), 0.0
        while pending:
            outcome.passes += 1
            built = _compile_pass(sandbox, directory, pending, config, nonce, outcome.passes)
            spent += built.seconds
            if built.returncode == 0 and built.signal is None and not built.timed_out:
                seal_binary(directory, BINARY_NAME, sandbox.uid)
                outcome.compiled.append(CompiledGroup(directory, pending, spent / len(group)))
                break
            rejected = {} if built.timed_out or built.signal is not None else _attribute(built, pending)
            if not rejected:
                log.debug("batch_bisect", members=len(pending), seconds=built.seconds,
                          timed_out=built.timed_out, signal=built.signal)
                half = len(pending) // 2
                stack.extend([pending[half:], pending[:half]])
                break
            share = built.seconds / len(pending)
            for member in pending:
                if member.module in rejected:
                    outcome.rejected[member.index] = _member_verdict(
                        rejected[member.module], member, share, [directory, workdir], config
                    )
            pending = [m for m in pending if m.module not in rejected]
            if len(pending) == 1:
                outcome.alone.extend(pending)
                break
    return outcome


def _compile_pass(
    sandbox: Sandbox, directory: Path, members: list[Member], config: ExecutorConfig, nonce: str, number: int
) -> RunResult:
    """One rustc over the root of `members`; each pass its own root file, so root never writes
    over a name the compiler's uid has had in its hands."""
    problem = members[0].problem
    root = ROOT_FILE.format(number)
    write_new(directory / root, root_source(members, problem.protocol, nonce), owner=sandbox.uid)
    limits = replace(compile_limits(config.compile_timeout_s), output_bytes=DIAGNOSTICS_BYTES)
    return sandbox.run(compile_argv(sandbox, problem, config.edition, source=root), directory, limits)


def _attribute(built: RunResult, members: list[Member]) -> dict[str, list[str]]:
    """Member module -> its error diagnostics (raw JSON lines), for errors that name a member."""
    by_file = {m.file_name: m.module for m in members}
    found: dict[str, list[str]] = {}
    for line in built.stderr.decode("utf-8", "replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if message.get("$message_type", "diagnostic") != "diagnostic":
            continue
        if message.get("level") != "error":  # an ICE is nobody's fault until a member shows it alone
            continue
        if _RESOURCE_BOUND in str(message.get("message", "")):  # the batch's memory, not the member's
            continue
        module = by_file.get(_home_file(message) or "")
        if module is not None:
            found.setdefault(module, []).append(line)
    return found


def _home_file(message: dict) -> str | None:
    """The file of the diagnostic's primary span, following macro expansions to their call site."""
    spans = message.get("spans") or []
    for span in [s for s in spans if s.get("is_primary")] or spans:
        while span:
            name = span.get("file_name", "")
            if name.endswith(".rs") and "/" not in name and not _ROOT_FILE.fullmatch(name):
                return name
            span = (span.get("expansion") or {}).get("span")
    return None


def _member_verdict(
    lines: list[str], member: Member, seconds: float, workdirs: list[Path], config: ExecutorConfig
) -> Verdict:
    """The verdict the per-sample path would give: its diagnostics as rustc prints them alone."""
    count = len(lines)
    summary = f"aborting due to {count} previous error" + ("" if count == 1 else "s")
    closing = json.dumps({"$message_type": "diagnostic", "message": summary, "code": None, "level": "error",
                          "spans": [], "children": [], "rendered": f"error: {summary}\n\n"})
    stderr = "\n".join(lines).replace(member.file_name, SOURCE_NAME).replace(f"{member.module}::", "")
    built = RunResult(returncode=1, signal=None, timed_out=False, seconds=seconds,
                      stdout=b"", stderr=(stderr + "\n" + closing + "\n").encode("utf-8"),
                      stdout_truncated=False, stderr_truncated=False)
    return compile_verdict(built, workdirs, config)
