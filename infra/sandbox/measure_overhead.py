"""Measure what each sandbox kind adds to a compile and to a ~2 ms test-binary run.

Usage (as root, from the repository root):
    PYTHONPATH=. .venv/bin/python infra/sandbox/measure_overhead.py [--runs 20] [--compiles 8]

Prints medians in milliseconds; `direct` runs the same commands with plain subprocess and no
limits, as the baseline. The machine is noisy: compare kinds within one invocation only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
from pathlib import Path

from tasks.sandbox import COMPILE_LIMITS, RUN_LIMITS, SANDBOX_KINDS, make_sandbox
from tasks.toolchain import find_toolchain

PROGRAM = """
pub fn add(a: i32, b: i32) -> i32 { a + b }
#[cfg(test)]
mod tests {
    use super::*;
    #[test] fn adds() { assert_eq!(add(2, 3), 5); }
    #[test] fn adds_negative() { assert_eq!(add(-2, -3), -5); }
}
"""


def median_ms(action, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--compiles", type=int, default=8)
    args = parser.parse_args()
    toolchain = find_toolchain()
    compile_argv = ["--edition", "2021", "--test", "-o", "prog", "prog.rs"]
    print(f"{'kind':<12}{'compile ms':>12}{'run ms':>10}")
    for kind in ["direct", *SANDBOX_KINDS]:
        sandbox = make_sandbox("none" if kind == "direct" else kind, toolchain, worker=99)
        with sandbox.new_workdir() as workdir:
            (workdir / "prog.rs").write_text(PROGRAM)
            if kind == "direct":
                def compile_once(w: Path = workdir) -> None:
                    subprocess.run([str(toolchain.rustc), *compile_argv], cwd=w, check=True)

                def run_once(w: Path = workdir) -> None:
                    subprocess.run(["./prog"], cwd=w, check=True, capture_output=True, env={"RUST_BACKTRACE": "0"})
            else:
                def compile_once(s=sandbox, w: Path = workdir) -> None:
                    assert s.run([s.rustc, *compile_argv], w, COMPILE_LIMITS).succeeded

                def run_once(s=sandbox, w: Path = workdir) -> None:
                    assert s.run(["./prog"], w, RUN_LIMITS).succeeded
            compile_ms = median_ms(compile_once, args.compiles)
            run_ms = median_ms(run_once, args.runs)
        print(f"{kind:<12}{compile_ms:>12.1f}{run_ms:>10.1f}")


if __name__ == "__main__":
    main()
