"""Variants of the rust-lang/rust#25860 ("cve-rs") construction, written for ferrisbench's tests.

Each one compiles on rustc 1.95 without an `unsafe` token and really extends a lifetime: with
`DEMO_MAIN` appended (`extend` variants) or alone (`dangling_static_mut_write`), the program reads
freed memory that a later allocation reused, so it prints `REUSED!!` where a sound program
would print `ORIGINAL` (`dangling_static_mut_write` writes through a stale `&'static mut` into a
later vector: `[2, 99, 2, 2]`); checked by `tests/test_soundness_forge.py`. `tests/test_policy.py` checks that
the policy flags every one as `soundness_hole`.
"""

from __future__ import annotations

# Appended to the variants that define `extend(&'a str) -> &'static str` (or a generic one).
DEMO_MAIN = """
fn main() {
    let original = String::from("ORIGINAL");
    let stale: &'static str = extend(original.as_str());
    drop(original);
    let reused = String::from("REUSED!!");
    println!("{}", stale);
    drop(reused);
}
"""

VARIANTS: dict[str, str] = {
    "classic": """\
static UNIT: &&() = &&();
fn helper<'a, 'b, T: ?Sized>(_: &'a &'b (), v: &'b T) -> &'a T { v }
fn extend<'a, 'b, T: ?Sized>(x: &'a T) -> &'b T {
    let f: for<'x> fn(_, &'x T) -> &'b T = helper;
    f(UNIT, x)
}
""",
    "concrete_str_elided_fn_pointer": """\
// no for<>: the elided lifetime of a fn-pointer type is higher-ranked anyway; concrete str
static UNIT: &&() = &&();
fn helper<'a, 'b>(_: &'a &'b (), v: &'b str) -> &'a str { v }
fn extend<'a>(x: &'a str) -> &'static str {
    let f: fn(_, &str) -> &'static str = helper;
    f(UNIT, x)
}
""",
    "type_alias": """\
// a type alias hides the nested reference
type Anchor<'p, 'q> = &'p &'q ();
const ANCHOR: Anchor<'static, 'static> = &&();
fn relay<'p, 'q, X: ?Sized>(_: Anchor<'p, 'q>, v: &'q X) -> &'p X { v }
fn extend<'s, 'o, X: ?Sized>(x: &'s X) -> &'o X {
    let g: for<'k> fn(_, &'k X) -> &'o X = relay;
    g(ANCHOR, x)
}
""",
    "phantom_struct": """\
// a struct with a PhantomData of the nested reference
use std::marker::PhantomData;
struct Witness<'x, 'y>(PhantomData<&'x &'y ()>);
fn relay<'x, 'y, X: ?Sized>(_: Witness<'x, 'y>, v: &'y X) -> &'x X { v }
fn extend<'s, 'o, X: ?Sized>(x: &'s X) -> &'o X {
    let g: for<'k> fn(_, &'k X) -> &'o X = relay;
    g(Witness(PhantomData), x)
}
""",
    "trait_provided_method": """\
// a trait's provided method
trait Launder {
    fn launder<'a, 'b, T: ?Sized>(_: &'a &'b (), v: &'b T) -> &'a T { v }
}
impl Launder for () {}
const U: &&() = &&();
fn extend<'a, 'o, T: ?Sized>(x: &'a T) -> &'o T {
    let f: for<'x> fn(_, &'x T) -> &'o T = <() as Launder>::launder;
    f(U, x)
}
""",
    "nested_fn_tuple_witness_closure": """\
// nested fn, tuple-wrapped witness, coercion inside a closure
fn extend<'a, 'o, T: ?Sized>(x: &'a T) -> &'o T {
    fn id<'long, 'short, Q: ?Sized>(_proof: (&'long &'short (), ()), v: &'short Q) -> &'long Q { v }
    let pick = || -> for<'z> fn(_, &'z T) -> &'o T { id };
    (pick())((&&(), ()), x)
}
""",
    "option_witness": """\
// the witness is &'a Option<&'b ()> (a covariant std wrapper), plus 'b: 'a hidden in the type
fn relay<'a, 'b, T: ?Sized>(_: &'a Option<&'b ()>, v: &'b T) -> &'a T { v }
fn extend<'a, 'o, T: ?Sized>(x: &'a T) -> &'o T {
    let f: for<'x> fn(_, &'x T) -> &'o T = relay;
    f(&None, x)
}
""",
    "static_outer": """\
// 'static as the outer lifetime of the witness
fn relay<'b, T: ?Sized>(_: &'static &'b (), v: &'b T) -> &'static T { v }
fn extend<'a>(x: &'a str) -> &'static str {
    let f: for<'x> fn(_, &'x str) -> &'static str = relay;
    f(&&(), x)
}
""",
    "generic_wrapper_struct": """\
// generic wrapper struct Hold<'x, T>(&'x T) applied to Hold<'a, &'b ()>, renamed everything
struct Hold<'x, T: ?Sized>(&'x T);
fn pass<'u, 'w, Q: ?Sized>(_h: Hold<'u, &'w ()>, v: &'w Q) -> &'u Q { v }
fn extend<'s, 'o, Q: ?Sized>(x: &'s Q) -> &'o Q {
    let g: for<'k> fn(_, &'k Q) -> &'o Q = pass;
    g(Hold(&&()), x)
}
""",
    "turbofish": """\
// trait impl for the nested reference itself, with an associated type
trait Bridge { type Target: ?Sized; fn cross<'v>(self, v: &'v Self::Target) -> &'v Self::Target; }
fn relay<'a, 'b, T: ?Sized>(w: &'a &'b (), v: &'b T) -> &'a T { let _ = w; v }
fn extend<'a, 'o, T: ?Sized>(x: &'a T) -> &'o T {
    let f: for<'x> fn(_, &'x T) -> &'o T = relay::<T>;
    f(&&(), x)
}
""",
    "dangling_static_mut_write": """\
// &mut: a dangling &'static mut, written after the owner is freed
static UNIT: &&() = &&();
fn helper<'a, 'b, T: ?Sized>(_: &'a &'b (), v: &'b mut T) -> &'a mut T { v }
fn extend_mut<'a, 'b, T: ?Sized>(x: &'a mut T) -> &'b mut T {
    let f: for<'x> fn(_, &'x mut T) -> &'b mut T = helper;
    f(UNIT, x)
}
fn main() {
    let mut first = vec![1u64; 4];
    let stale: &'static mut [u64] = extend_mut(&mut first[..]);
    drop(first);
    let second = vec![2u64; 4];
    stale[1] = 99; // writes into `second`'s buffer
    println!("{:?}", second);
}
""",
}

# Self-contained programs (their own `main`); the others need `DEMO_MAIN`.
WITH_MAIN = frozenset({"dangling_static_mut_write"})
