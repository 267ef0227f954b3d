"""Specification of the policy scan: what a completion may not do, and what it still may."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.policy import Violation, scan
from tasks.problems import load_benchmark
from tests.soundness_variants import DEMO_MAIN, VARIANTS, WITH_MAIN


def rules(code: str) -> set[str]:
    return {violation.rule for violation in scan(code)}


FLAGGED = [
    # paths, however they are spelled
    ("std::fs::read_to_string(\"x\")", "filesystem"),
    ("std :: fs :: read(\"x\")", "filesystem"),
    ("std::/* x */fs::read(\"x\")", "filesystem"),
    ("std:: // comment\n fs::read(\"x\")", "filesystem"),
    ("::std::fs::read(\"x\")", "filesystem"),
    ("core::ptr::null::<u8>()", "memory"),
    ("std::r#fs::read(\"x\")", "filesystem"),
    ("let f = <std::fs::File as std::io::Read>::read;", "filesystem"),
    # use trees
    ("use std::{fs};", "filesystem"),
    ("use {std::fs};", "filesystem"),
    ("use ::std::fs;", "filesystem"),
    ("use std::{collections::HashMap, fs::{self, File}};", "filesystem"),
    ("use std::{io::{self, Read}, process::{Command}};", "process"),
    ("use std::fs::{self};", "filesystem"),
    # aliases and re-references
    ("use std::process as p;\nfn f() { p::Command::new(\"ls\"); }", "process"),
    ("use std as s;\nfn f() { s::fs::read(\"x\"); }", "filesystem"),
    ("use std::{self as s};\nfn f() { s::fs::read(\"x\"); }", "filesystem"),
    ("extern crate std as s;\nfn f() { s::env::args(); }", "environment"),
    ("use std as s;\nfn f() { self::s::net::TcpStream::connect(\"x\"); }", "network"),
    ("mod m { pub use std as s; }\nfn f() { crate::m::s::fs::read(\"x\"); }", "filesystem"),
    ("use s::fs::read as r;\nuse std as s;", "filesystem"),  # order does not matter
    ("use core as c;\nuse c::ptr as q;", "memory"),
    # globs
    ("use std::fs::*;\nfn f() { File::open(\"x\"); }", "filesystem"),
    ("use std::*;\nfn f() { fs::read(\"x\"); }", "filesystem"),
    ("use std::*;\nuse fs::read;", "filesystem"),
    ("use std::mem::*;\nfn f(x: f32) -> u32 { transmute(x) }", "memory"),
    ("use std::panic::*;\nfn f() { set_hook(Box::new(|_| {})); }", "panic_hook"),
    ("mod a { use std::io as fs; }\nuse std::*;\nfn f() { fs::read(\"x\"); }", "filesystem"),
    # forbidden capabilities
    ("std::process::exit(0)", "process"),
    ("use std::process::exit;\nfn f() { exit(0) }", "process"),
    ("std::process::abort()", "process"),
    ("std::net::UdpSocket::bind(\"0.0.0.0:0\")", "network"),
    ("use std::os::unix::process::CommandExt;", "os"),
    ("std::env::var(\"HOME\")", "environment"),
    ("std::env::set_var(\"A\", \"1\")", "environment"),
    ("std::mem::transmute::<f32, u32>(x)", "memory"),
    ("std::intrinsics::abort()", "memory"),
    ("std::panic::take_hook()", "panic_hook"),
    ("use std::alloc::GlobalAlloc;", "allocator"),
    ("#[global_allocator]\nstatic A: MyAlloc = MyAlloc;", "allocator"),
    ("libc::getpid()", "ffi"),
    ("extern crate libc;", "extern_crate"),
    ("extern crate proc_macro;", "proc_macro"),
    ("fn f() -> proc_macro::TokenStream { todo!() }", "proc_macro"),
    # unsafe, ffi, linkage
    ("fn f(p: *const i32) -> i32 { unsafe { *p } }", "unsafe"),
    ("unsafe fn f() {}", "unsafe"),
    ("unsafe impl Send for X {}", "unsafe"),
    ("unsafe trait T {}", "unsafe"),
    ("extern \"C\" { fn getpid() -> i32; }", "ffi"),
    ("extern { fn abs(x: i32) -> i32; }", "ffi"),
    ("pub extern \"C\" fn f() {}", "ffi"),
    ("#[link(name = \"c\")]\nfn f() {}", "linkage"),
    ("#[no_mangle]\npub fn main() {}", "linkage"),
    ("#[export_name = \"main\"]\npub fn f() {}", "linkage"),
    ("#[link_section = \".init_array\"]\nstatic S: u8 = 0;", "linkage"),
    ("#[cfg_attr(all(), no_mangle)]\npub fn f() {}", "linkage"),
    # inline assembly and compile-time reads
    ("std::arch::asm!(\"nop\");", "inline_asm"),
    ("core::arch::asm!(\"nop\");", "inline_asm"),
    ("global_asm!(\"nop\");", "inline_asm"),
    ("naked_asm!(\"ret\");", "inline_asm"),
    ("include!(\"/etc/x.rs\");", "include_macro"),
    ("const S: &str = include_str!(\"/etc/passwd\");", "include_macro"),
    ("const S: &str = std::include_str!(\"/etc/passwd\");", "include_macro"),
    ("const B: &[u8] = include_bytes!(\"/etc/passwd\");", "include_macro"),
    ("use std::include_str as inc;\nconst S: &str = inc!(\"/etc/passwd\");", "include_macro"),
    ("use std::prelude::v1::include_str as inc;", "include_macro"),
    ("const E: Option<&str> = std::prelude::v1::option_env!(\"HOME\");", "env_macro"),
    ("#[std::prelude::v1::global_allocator]\nstatic G: A = A;", "allocator"),
    ("#[doc = include_str!(\"/etc/passwd\")]\nfn f() {}", "include_macro"),
    ("const H: &str = env!(\"HOME\");", "env_macro"),
    ("const H: Option<&str> = option_env!(\"HOME\");", "env_macro"),
    ("#[path = \"/etc/passwd\"]\nmod m { }", "path_attribute"),
    ("mod helpers;", "external_module"),
    ("#![feature(asm)]", "inner_attribute"),
    ("#![no_std]", "inner_attribute"),
    # macro_rules
    ("macro_rules! m { () => { std::fs::read(\"x\") } }", "filesystem"),
    ("macro_rules! m { () => { unsafe { 0 } } }", "unsafe"),
    ("macro_rules! m { ($m:ident) => { std::$m::read(\"x\") } }\nm!(fs);", "macro_path"),
    ("macro_rules! m { ($a:ident, $b:ident) => { $a::$b::read(1) } }\nm!(std, fs);", "macro_path"),
    ("macro_rules! m { ($($s:ident),*) => { $($s)::*::read(1) } }\nm!(std, fs);", "macro_path"),
    ("macro_rules! m { ($n:ident) => { $n!(\"/etc/passwd\") } }\nm!(include_str);", "macro_path"),
    ("macro_rules! m { ($a:ident) => { #[$a] pub fn f() {} } }\nm!(no_mangle);", "macro_path"),
    ("macro_rules! m { ($p:path) => { $p(\"x\") } }\nm!(std::fs::read);", "filesystem"),
    # file-system access through std::path
    ("std::path::Path::new(\"/\").read_dir()", "filesystem"),
    ("PathBuf::from(\"/etc\").canonicalize()", "filesystem"),
    ("Path::read_link(p)", "filesystem"),
    # the predecessor's substring matcher (FACTS, defect 5)
    ("let s = \"/*\"; let d = std::fs::read(\"x\"); // */", "filesystem"),
    ("let c = '\"'; let d = std::fs::read(\"x\"); // \"", "filesystem"),
]

ALLOWED = [
    # identifiers that merely contain a forbidden word
    "fn external(is_unsafe: bool) -> bool { is_unsafe }",
    "let hyperbola = 1; let process_data = 2; let fs_total = 3;",
    "let environment = 1; let file_count = 2; let unsafe_count = 3;",
    "let r#unsafe = 1; r#unsafe + 1",
    "let r#extern = 2;",
    # harmless std
    "std::mem::swap(&mut a, &mut b); std::mem::replace(&mut a, 1); std::mem::take(&mut v);",
    "use std::mem;\nfn f() { mem::swap(&mut a, &mut b); }",
    "use std::collections::{HashMap, HashSet, BTreeMap};",
    "use std::fmt::{self, Display};\nuse std::cmp::Ordering;",
    "use std::io::{self, Read};\nfn f(s: &mut String) { use std::fmt::Write; writeln!(s, \"x\"); }",
    "let mut line = String::new(); std::io::stdin().read_line(&mut line).unwrap();",
    "std::thread::spawn(|| 1).join().unwrap();",
    "use std::sync::{Arc, Mutex};",
    "let t = std::time::Instant::now();",
    "std::panic::catch_unwind(|| 1)",
    "let layout = std::alloc::Layout::new::<u8>();",
    # local names that are not imported from std
    "let env = 3; env + 1",
    "fn process(x: i32) -> i32 { x }\nfn g() -> i32 { process(1) }",
    "mod net { pub fn f() -> i32 { 1 } }\nfn g() -> i32 { net::f() }",
    "mod fs { pub fn read() {} }\nfn g() { fs::read() }",
    "struct File; impl File { fn open() -> File { File } }\nfn g() { File::open(); }",
    "let core = 4; let alloc = vec![core];",
    "use std::*;\nfn f() { let env = 3; let fs = env + 1; }",
    "use std::*;\nfn f() { File::open(\"x\"); }",  # std's root does not export File
    # forbidden words in comments and literals
    "let s = \"std::fs::read unsafe { } extern \\\"C\\\"\";",
    "// use std::process;\n/* std::fs::read */ let x = 1;",
    "/* nested /* std::fs */ still a comment */ let x = 1;",
    "let s = r#\"unsafe { *p } include_str!(\"x\")\"#;",
    "let b = b\"std::env::args\"; let c = 'u';",
    "/// Calls `std::process::exit`.\nfn documented() {}",
    # ordinary code
    "fn f<'a>(x: &'a str) -> &'a str { x }",
    "fn f<'a>(x: &'a [i32]) -> impl Iterator<Item = &'a i32> + use<'a> { x.iter() }",
    "let v = Vec::<i32>::new(); let m: HashMap<String, usize> = HashMap::new();",
    "#[derive(Debug, Clone)]\nstruct S { path: String }\n#[allow(unused)]\nfn f() {}",
    "#[cfg(test)]\nmod tests { use super::*; #[test] fn t() { assert_eq!(1, 1); } }",
    "mod inline { pub fn f() {} }",
    "macro_rules! square { ($x:expr) => { $x * $x } }\nfn f() -> i32 { square!(3) }",
    "let path = \"a/b\".split('/').collect::<Vec<_>>(); let n = path.len();",
    "use std::io::{self, BufRead};\nfn f() { for line in io::stdin().lock().lines() {} }",
    "let pi = std::f64::consts::PI; let m = i32::MAX; let s = std::mem::size_of::<u8>();",
    "use std::rc::Rc; use std::cell::RefCell; use std::iter::FromIterator; use std::str::FromStr;",
    "#[allow(clippy::needless_range_loop, clippy::used_underscore_binding)]\nfn f() {}",
    "if x != 0 { y } else { z }",
]


@pytest.mark.parametrize(("code", "rule"), FLAGGED)
def test_forbidden_capability_is_flagged_with_its_rule(code: str, rule: str) -> None:
    assert rule in rules(code)


@pytest.mark.parametrize("code", ALLOWED)
def test_allowed_code_has_no_violation(code: str) -> None:
    assert scan(code) == []


def test_path_split_by_whitespace_and_comment_is_reported_whole_with_its_line() -> None:
    code = "fn f() {\n    let p = std :: /* hi */ fs :: read(\"x\");\n}"
    assert scan(code) == [Violation("filesystem", "std::fs::read", 2)]


def test_alias_use_is_reported_with_the_path_it_resolves_to() -> None:
    code = "use std::{self as s};\nfn f() {\n    s::fs::read(\"x\");\n}"
    assert scan(code) == [Violation("filesystem", "s::fs::read (std::fs::read)", 3)]


def test_forbidden_import_and_each_use_through_it_are_reported() -> None:
    code = "use std::process as p;\nfn main() { p::exit(0); }"
    assert scan(code) == [
        Violation("process", "use std::process as p", 1),
        Violation("process", "p::exit (std::process::exit)", 2),
    ]


def test_glob_import_of_forbidden_module_flags_import_and_member_use() -> None:
    code = "use std::fs::*;\nfn f() {\n    File::open(\"x\");\n}"
    assert scan(code) == [
        Violation("filesystem", "use std::fs::*", 1),
        Violation("filesystem", "File::open (std::fs::File::open)", 3),
    ]


def test_group_import_names_the_forbidden_leaf() -> None:
    code = "use std::{collections::HashMap, fs};"
    assert scan(code) == [Violation("filesystem", "use std::fs", 1)]


def test_unsafe_constructs_are_named() -> None:
    code = "unsafe fn f() {}\nunsafe impl Send for S {}\nfn g() { unsafe { f() } }"
    assert scan(code) == [
        Violation("unsafe", "unsafe fn", 1),
        Violation("unsafe", "unsafe impl", 2),
        Violation("unsafe", "unsafe block", 3),
    ]


def test_edition_2024_unsafe_attribute_reports_unsafe_linkage_and_ffi() -> None:
    code = "#[unsafe(no_mangle)]\npub extern \"C\" fn f() {}"
    assert scan(code) == [
        Violation("unsafe", "unsafe attribute", 1),
        Violation("linkage", "#[no_mangle]", 1),
        Violation("ffi", "extern \"C\" fn", 2),
    ]


def test_macro_path_is_reported_with_its_written_path() -> None:
    assert scan("let s = core::include_str!(\"/etc/passwd\");") == [
        Violation("include_macro", "core::include_str!", 1)
    ]


def test_raw_string_containing_unsafe_block_is_not_flagged() -> None:
    code = 'fn f() -> &\'static str { r##"fn g() { unsafe { *p } } "# still"## }'
    assert scan(code) == []


def test_code_after_a_raw_string_is_still_scanned() -> None:
    code = 'let s = r#"unsafe { "#;\nunsafe { 0 }'
    assert scan(code) == [Violation("unsafe", "unsafe block", 2)]


def test_exit_used_to_fake_a_pass_is_a_violation() -> None:
    code = "fn add(a: i32, b: i32) -> i32 {\n    std::process::exit(0)\n}"
    assert scan(code) == [Violation("process", "std::process::exit", 2)]


def test_same_violation_on_one_line_is_reported_once() -> None:
    assert scan("unsafe { 1 }; unsafe { 2 };") == [Violation("unsafe", "unsafe block", 1)]


@pytest.mark.parametrize(
    "code",
    ["use std::{fs", '"open', "/* open", "#[", "extern crate", "use", 'r#"x', "unsafe", "mod",
     "type", "struct S<", "type A<'p, 'q> = &'p &'q", "A<'a, 'b", "fn(", "fn(_", "&'a", "&&", "safe"],
)
def test_truncated_input_never_raises(code: str) -> None:
    scan(code)


def test_truncated_use_tree_is_still_checked() -> None:
    assert scan("use std::{fs") == [Violation("filesystem", "use std::fs", 1)]


def test_path_completed_by_a_macro_argument_is_named() -> None:
    code = "macro_rules! m {\n    ($m:ident) => { std::$m::read(1) };\n}"
    assert scan(code) == [Violation("macro_path", "std::$m", 2)]


# ---------- soundness holes: rust-lang/rust#25860 (the "cve-rs" family) ----------

# Disguises of the lifetime relation that the variants (all compiled on 1.95) do not spell out.
RELATING_LOOKS = [
    "fn h<'a, 'b>(_: &'a &'b (), v: &'b u8) -> &'a u8 { v }",
    "fn h<'long, 'x>(w: &'long &'x u8) {}",  # any names
    "fn h<'a, 'b>(w: &'a mut &'b mut ()) {}",
    "fn h<'a, 'b>(w: (u8, &'a (&'b (), u8))) {}",  # nested in tuples
    "fn h<'a, 'b>(w: &'a [&'b (); 1]) {}",
    "fn h<'a, 'b>(w: &'a Vec<Option<&'b str>>) {}",
    "fn h<'b>(w: &'static &'b ()) {}",
    "fn h<'a, 'b>(w: &'a dyn Fn(&'b ())) {}",
    "fn h<'a, 'b>(w: &'a (dyn std::any::Any + 'b)) {}",
    "let c = |w: &'a &'b (), v: &'b T| -> &'a T { v };",  # a closure
    "trait Tr { fn h<'a, 'b>(w: &'a &'b ()); }",
    "impl<'a, 'b> Tr for &'a &'b () {}",
    "type A<'p, 'q> = &'p &'q ();\ntype B<'x, 'y> = A<'x, 'y>;\nfn h<'a, 'b>(w: B<'a, 'b>) {}",
    "type W<'p, T> = &'p T;\nfn h<'a, 'b>(w: W<'a, &'b ()>) {}",
    "struct S<'x, T: ?Sized>(&'x T);\nstruct U<'m, 'n>(S<'m, &'n ()>);\nfn h<'a, 'b>(w: U<'a, 'b>) {}",
    "enum E<'x, 'y> { A(&'x Option<&'y ()>) }",
    "let f: for<'x> fn(_, &'x T) -> &'o T = helper;",  # the coercion alone
    "let f = helper as fn(_, &u8) -> &'static u8;",
]

LIFETIME_LOOK_ALIKES = [
    "fn f<'a>(x: &'a str) -> &'a str { x }",
    "fn longest<'a>(a: &'a str, b: &'a str) -> &'a str { if a.len() >= b.len() { a } else { b } }",
    "fn f<'a, 'b>(x: &'a str, y: &'b str) -> (&'a str, &'b str) { (x, y) }",
    "fn f(words: &[&str]) -> usize { words.iter().filter(|w| !w.is_empty()).count() }",
    "fn f(x: &&str) -> usize { x.len() }",
    "fn f<'a>(x: &&'a str) -> &'a str { *x }",  # outer lifetime elided: nothing to extend to
    "fn f<'a>(v: &[&'a str]) -> Vec<&'a str> { v.to_vec() }",
    "fn f<'a>(v: &'a [&'a str]) -> &'a str { v[0] }",
    "fn f(v: &[&'static str]) -> usize { v.len() }",
    "fn f<'a>(m: &'a HashMap<&'static str, i32>) -> i32 { m[\"x\"] }",
    "fn f<'a>(x: &'a Vec<&'_ str>) -> usize { x.len() }",
    "v.iter().filter(|&&x| x > 0).count()",
    "v.iter().filter(|x| **x > 0).map(|&x| x).collect::<Vec<i32>>()",
    "v.iter().filter(|x: &&i32| **x > 0).count()",
    "let s: Vec<&&str> = v.iter().filter(|s| s.len() > 1).collect();",
    "if a && b || !c && &x == &y { }",
    "struct Parser<'a> { input: &'a str, words: Vec<&'a str> }\n"
    "impl<'a> Parser<'a> { fn next(&mut self) -> Option<&'a str> { self.words.pop() } }",
    "fn apply(f: fn(i32) -> i32, x: i32) -> i32 { f(x) }\nlet g = apply as fn(fn(i32) -> i32, i32) -> i32;",
    "let v: Vec<_> = (0..3).collect(); let m = v.iter().map(|_| 1).sum::<i32>();",
    "fn f<'a, 'b: 'a>(x: &'b str) -> &'a str { x }",  # an explicit bound is checked: sound
]


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_every_soundness_hole_variant_is_flagged(name: str) -> None:
    code = VARIANTS[name] if name in WITH_MAIN else VARIANTS[name] + DEMO_MAIN
    violations = scan(code)
    assert "soundness_hole" in {v.rule for v in violations}
    assert "unsafe" not in {v.rule for v in violations}  # the point of the family: none needed


@pytest.mark.parametrize("code", RELATING_LOOKS)
def test_disguised_lifetime_relation_is_flagged(code: str) -> None:
    assert "soundness_hole" in rules(code)


@pytest.mark.parametrize("code", LIFETIME_LOOK_ALIKES)
def test_ordinary_references_and_double_references_are_allowed(code: str) -> None:
    assert scan(code) == []


def test_soundness_hole_names_the_relation_and_the_coercion_with_their_lines() -> None:
    code = ("static UNIT: &&() = &&();\n"
            "fn helper<'a, 'b, T: ?Sized>(_: &'a &'b (), v: &'b T) -> &'a T { v }\n"
            "fn extend<'a, 'b, T: ?Sized>(x: &'a T) -> &'b T {\n"
            "    let f: for<'x> fn(_, &'x T) -> &'b T = helper;\n"
            "    f(UNIT, x)\n}\n")
    assert scan(code) == [
        Violation("soundness_hole", "&'a … 'b (a nested reference relates two lifetimes)", 2),
        Violation("soundness_hole", "fn(_, …) (a fn-pointer type with an inferred parameter)", 4),
    ]


def test_relation_through_a_type_alias_is_reported_at_the_use() -> None:
    code = "type Anchor<'p, 'q> = &'p &'q ();\nfn h<'a, 'b>(w: Anchor<'a, 'b>) {}"
    assert Violation("soundness_hole", "Anchor<'a, … 'b …> (relates two lifetimes)", 2) in scan(code)


FFI_GAPS = [
    "unsafe extern \"C\" { safe fn abs(x: i32) -> i32; }",
    "unsafe extern \"C\" { pub safe static environ: *const u8; }",
    "use std::ffi::CString;",
    "let s = std::ffi::CStr::from_bytes_with_nul(b\"x\\0\");",
    "fn f(x: core::ffi::c_int) -> core::ffi::c_int { x }",
    "use std::os::raw::c_char;",
    "let p = dlsym(handle, name);",
    "let f = GetProcAddress(m, n);",
    "extern \"C\" { fn write(fd: i32, b: *const u8, n: usize) -> isize; }",
    "extern \"C\" fn callback() {}",
    "#[link(name = \"c\")]\nextern {}",
]


@pytest.mark.parametrize("code", FFI_GAPS)
def test_every_way_into_libc_is_flagged(code: str) -> None:
    assert rules(code) & {"ffi", "os", "linkage"}


def test_safe_and_dlsym_as_plain_identifiers_are_allowed() -> None:
    assert scan("let safe = 1; let r#safe = 2; fn is_safe() -> bool { true }\nlet dl = \"dlsym\";") == []


def test_transmute_the_family_would_otherwise_rebuild_is_already_flagged() -> None:
    assert rules("let f: fn() = std::mem::transmute(0usize);") == {"memory"}
    assert rules("use std::mem::transmute as t;") == {"memory"}


@pytest.fixture(scope="module")
def humaneval_references() -> list[str]:
    problems = load_benchmark("humaneval-rust").by_id().values()
    return [p.prompt + (p.canonical_solution or "") + "\n" + p.test for p in problems]


def test_no_seed_benchmark_reference_trips_the_soundness_or_ffi_rules(humaneval_references) -> None:
    assert len(humaneval_references) == 180
    hits = [v for code in humaneval_references for v in scan(code)]
    assert hits == []


@pytest.mark.parametrize("name", ["humaneval-rs-reworded.jsonl", "mbpp-rs-reworded.jsonl"])
def test_no_multipl_e_prompt_or_test_trips_the_soundness_or_ffi_rules(name: str) -> None:
    path = Path(__file__).resolve().parents[2] / "shared" / "datasets" / name
    if not path.is_file():
        pytest.skip(f"{path} is not beside the repository")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) in (156, 354)
    flagged = [row["name"] for row in rows
               if {v.rule for v in scan(row["prompt"] + "\n" + row["tests"])} & {"soundness_hole", "ffi"}]
    assert flagged == []
