"""A wrong answer forges a clean libtest report with rust-lang/rust#25860 and no `unsafe` token.

Residual risk 1 of SECURITY.md, by the soundness bug instead of a capability: the completion
below turns the #25860 lifetime extension into a "transmute" (a stale `&mut` into an enum slot),
reads its own ELF image from memory (found from a string literal's address), takes the
sentinel test's name from the binary's test table and libc's `exit` from the dynamic relocations,
prints the rest of a perfect report on the raw stdout and calls `exit(0)` through a fn pointer.
Nothing in it is a token the policy flagged before `soundness_hole`: without the policy the wrong
answer is `passed` (both sandboxes: it needs no capability they take away); with it, it is a
`policy_violation`. If `no_policy` stops being `passed`, update SECURITY.md.
"""

from __future__ import annotations

import subprocess

import pytest

from tasks.config import ExecutorConfig
from tasks.execute import execute
from tasks.policy import scan
from tasks.sandbox import make_sandbox
from tasks.schema import Problem, Protocol, Status
from tasks.toolchain import find_toolchain
from tests.helpers import claimed_worker, requires_root, temp_work_root
from tests.soundness_variants import DEMO_MAIN, VARIANTS, WITH_MAIN


MULTIPLY = Problem(
    task_id="Test/multiply",
    prompt="/// Multiplies two numbers.\nfn multiply(a: i64, b: i64) -> i64 {",
    test="#[cfg(test)]\nmod tests {\n    use super::*;\n\n    #[test]\n    fn test_multiply() {\n"
    "        assert_eq!(multiply(3, 4), 12);\n        assert_eq!(multiply(-2, 5), -10);\n    }\n}\n",
    entry_point="multiply",
    protocol=Protocol.LIBTEST,
    expected_tests=("tests::test_multiply",),
)

# `a + b` is wrong for both checks; everything after it exists to hide that.
FORGE = r"""    forge_a_clean_report();
    a + b
}

static WITNESS: &&() = &&();

fn relate<'long, 'short, T: ?Sized>(_: &'long &'short (), v: &'short mut T) -> &'long mut T {
    v
}

fn outlive<'a, 'b, T: ?Sized>(x: &'a mut T) -> &'b mut T {
    let widen: for<'x> fn(_, &'x mut T) -> &'b mut T = relate;
    widen(WITNESS, x)
}

enum Slot<A, B> {
    Left(Option<Box<A>>),
    Right(Option<Box<B>>),
}

fn reinterpret<A, B>(value: A) -> B {
    let mut slot: Slot<A, B> = Slot::Right(None);
    let stale: &mut Option<Box<B>> = match &mut slot {
        Slot::Right(inner) => outlive(inner),
        Slot::Left(_) => panic!(),
    };
    slot = Slot::Left(Some(Box::new(value)));
    let out = *stale.take().unwrap();
    drop(slot);
    out
}

fn memory(addr: usize) -> &'static [u8; 1 << 28] {
    reinterpret(addr)
}

fn word(addr: usize) -> u64 {
    let m = memory(addr);
    let mut v = 0u64;
    for k in 0..8 {
        v |= (m[k] as u64) << (8 * k);
    }
    v
}

fn forge_a_clean_report() {
    use std::io::Write;
    let mut base = "anchor".as_ptr() as usize & !0xfff;
    while memory(base)[..4] != [0x7f, b'E', b'L', b'F'] {
        base -= 0x1000;
    }
    let (phoff, phnum) = (word(base + 0x20) as usize, (word(base + 0x38) & 0xffff) as usize);
    let fix = |p: u64| if (p as usize) < base { base + p as usize } else { p as usize };
    let prefix = ["zzzz_ferris", "bench_done_"].concat().into_bytes();
    let (mut sentinel, mut dynamic) = (String::new(), 0usize);
    for i in 0..phnum {
        let ph = base + phoff + 56 * i;
        let (kind, vaddr, filesz) = (word(ph) & 0xffff_ffff, word(ph + 16) as usize, word(ph + 32) as usize);
        if kind == 2 {
            dynamic = base + vaddr;
        }
        if kind != 1 || !sentinel.is_empty() {
            continue;
        }
        let seg = memory(base + vaddr);
        let n = prefix.len();
        for at in 0..filesz.saturating_sub(n + 32) {
            if seg[at] == b'z' && seg[at..at + n] == prefix[..]
                && seg[at + n..at + n + 32].iter().all(|c| c.is_ascii_hexdigit()) {
                sentinel = String::from_utf8(seg[at..at + n + 32].to_vec()).unwrap();
                break;
            }
        }
    }
    let (mut strtab, mut symtab, mut tables) = (0, 0, Vec::new());
    let mut d = dynamic;
    loop {
        let (tag, val) = (word(d), word(d + 8));
        match tag {
            0 => break,
            5 => strtab = fix(val),
            6 => symtab = fix(val),
            7 | 23 => tables.push((fix(val), tag)),
            _ => {}
        }
        d += 16;
    }
    let mut sizes = std::collections::HashMap::new();
    d = dynamic;
    while word(d) != 0 {
        if word(d) == 8 { sizes.insert(7, word(d + 8) as usize); }
        if word(d) == 2 { sizes.insert(23, word(d + 8) as usize); }
        d += 16;
    }
    let mut exit_at = 0usize;
    for (table, tag) in tables {
        let size = sizes.get(&tag).copied().unwrap_or(0);
        for r in (table..table + size).step_by(24) {
            let sym = (word(r + 8) >> 32) as usize;
            let name = strtab + (word(symtab + 24 * sym) & 0xffff_ffff) as usize;
            if memory(name)[..5] == *b"exit\0" {
                exit_at = word(base + word(r) as usize) as usize;
            }
        }
    }
    let mut out = std::io::stdout();
    write!(out, "ok\ntest {sentinel} ... ok\n\ntest result: ok. 2 passed; 0 failed; 0 ignored; \
0 measured; 0 filtered out; finished in 0.00s\n\n").unwrap();
    out.flush().unwrap();
    let leave: fn(i32) = reinterpret(exit_at);
    leave(0);
}
"""
UNFORGED = FORGE.replace("    forge_a_clean_report();\n", "    let _ = forge_a_clean_report;\n", 1)


@pytest.fixture(scope="module")
def toolchain():
    return find_toolchain()


@pytest.fixture(scope="module")
def worker():
    yield from claimed_worker(first=4500)


@pytest.fixture(scope="module")
def work_root():
    yield from temp_work_root("ferrisbench-soundness-test-")


def config(kind: str) -> ExecutorConfig:
    return ExecutorConfig(sandbox=kind, compile_timeout_s=30, run_timeout_s=5, verdict_cache=False)


def test_only_the_soundness_rule_sees_the_forge() -> None:
    assert "unsafe" not in FORGE
    assert {v.rule for v in scan(FORGE)} == {"soundness_hole"}


@requires_root
@pytest.mark.parametrize("kind", ["bubblewrap", "firejail"])
def test_soundness_forge_passes_a_wrong_answer_without_policy_and_is_a_violation_with_it(
    kind, toolchain, worker, work_root
):
    sandbox = make_sandbox(kind, toolchain, worker=worker, work_root=work_root)
    honest = execute(MULTIPLY, UNFORGED, sandbox, config(kind))
    assert honest.verdict.status is Status.FAILED_TESTS  # the answer really is wrong
    execution = execute(MULTIPLY, FORGE, sandbox, config(kind))
    assert execution.for_mode("no_policy").status is Status.PASSED  # the residual risk
    verdict = execution.for_mode("policy")
    assert verdict.status is Status.POLICY_VIOLATION
    assert "soundness_hole:" in verdict.diagnostic


def test_every_variant_compiles_on_this_toolchain_and_reads_or_writes_freed_memory(toolchain, tmp_path):
    """One program holding every variant of `tests/soundness_variants.py`, each in its module."""
    modules, calls = [], []
    for name, code in sorted(VARIANTS.items()):
        body = code if name in WITH_MAIN else code + DEMO_MAIN
        modules.append(f"mod {name} {{\n{body.replace('fn main()', 'pub fn main()')}\n}}\n")
        calls.append(f'    print!("{name}: "); {name}::main();\n')
    source = tmp_path / "variants.rs"
    source.write_text("".join(modules) + "fn main() {\n" + "".join(calls) + "}\n")
    binary = tmp_path / "variants"
    subprocess.run([str(toolchain.rustc), "--edition", "2021", "-A", "warnings", "-C", "opt-level=0",
                    "-o", str(binary), str(source)], check=True, capture_output=True, timeout=120)
    printed = subprocess.run([str(binary)], check=True, capture_output=True, text=True, timeout=10).stdout
    lines = dict(line.split(": ", 1) for line in printed.splitlines())
    assert lines == {name: "[2, 99, 2, 2]" if name in WITH_MAIN else "REUSED!!" for name in VARIANTS}
