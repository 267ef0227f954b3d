"""The compiler's floor for a mix: rustc's own CPU time to judge its programs, nothing else.

No sandbox, no Python, no test runs, no second passes: every program that compiles is built
once, as modules of crates of `CRATE` programs (the cheapest way rustc builds many programs),
and every program that does not is type-checked once the same way (`--emit=metadata`; those
with unbalanced delimiters, which stop rustc at once, are left out). An executor cannot judge
the mix with less compiler work than this; `throughput.py` prints how far each path is from it.
"""

from __future__ import annotations

import resource
import subprocess
import tempfile
from pathlib import Path

from tasks.batch_compile import Member, member_source, root_source
from tasks.batch_safety import unbatchable_reason
from tasks.config import ExecutorConfig
from tasks.execute import RUSTC_FLAGS, Prepared, prepare
from tasks.schema import Problem, Protocol
from tasks.toolchain import find_toolchain
from tasks.verdict import harden_harness

CRATE = 128
NOT_COMPILED = {"compile_error", "compile_timeout", "invalid_completion", "generation_failed"}


def compiler_floor(samples: list[dict], statuses: list[str], problems: dict[str, Problem]) -> dict:
    """CPU seconds of rustc for the programs of `samples` (statuses: the per-sample path's verdicts)."""
    config = ExecutorConfig()
    compiled: list[Prepared] = []
    rejected: list[Prepared] = []
    for sample, status in zip(samples, statuses):
        prepared = prepare(problems[sample["task_id"]], sample["completion"], config)
        if not isinstance(prepared, Prepared) or status in ("invalid_completion", "generation_failed"):
            continue
        if status not in NOT_COMPILED:
            compiled.append(prepared)
        elif not _unbalanced(prepared):
            rejected.append(prepared)
    build = _rustc_seconds(compiled, emit_metadata=False)
    check = _rustc_seconds(rejected, emit_metadata=True)
    return {"build_s": build, "check_s": check, "compiled": len(compiled), "checked": len(rejected),
            "per_sample_ms": 1000 * (build + check) / max(1, len(samples))}


def _unbalanced(prepared: Prepared) -> bool:
    test = harden_harness(prepared.problem).test
    head = prepared.program[: len(prepared.program) - len(test)]
    reason = unbatchable_reason(head, test) or ""
    return reason.startswith(("an unclosed", "an unmatched", "an unterminated"))


def _rustc_seconds(programs: list[Prepared], emit_metadata: bool) -> float:
    rustc = str(find_toolchain().rustc)
    total = 0.0
    for protocol in Protocol:
        chosen = [p for p in programs if p.problem.protocol is protocol]
        for start in range(0, len(chosen), CRATE):
            members = [Member(i, f"m{i:05d}", p.problem, p.program) for i, p in enumerate(chosen[start : start + CRATE])]
            with tempfile.TemporaryDirectory(prefix="ferrisbench-floor-") as directory:
                root = Path(directory)
                for member in members:
                    (root / member.file_name).write_text(member_source(member, "floor"))
                (root / "main.rs").write_text(root_source(members, protocol, "floor"))
                argv = [rustc, "--edition", "2021", "--error-format=json", *RUSTC_FLAGS]
                argv += ["--test"] if protocol is Protocol.LIBTEST else []
                argv += ["--emit=metadata", "-o", "out.rmeta"] if emit_metadata else ["-o", "prog"]
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                subprocess.run([*argv, "main.rs"], cwd=root, capture_output=True, check=False,
                               env={"PATH": "/usr/bin:/bin", "RUST_BACKTRACE": "0"})
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                total += (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return total
