"""A realistic, seeded mix of model-like samples made from the benchmark itself.

Every sample starts from a task's canonical solution (so the mix covers the benchmark's real
programs and tests) and becomes one of the kinds below, each carrying a unique comment so no
two samples are the same program (deduplication is measured separately). Kinds and weights
follow what models produce: right answers, wrong answers, compile errors of several kinds
(type, name, borrow, method, syntax, answers cut off mid-way), and a few crashes, early exits
and, when asked for, hangs.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from tasks.schema import Problem

# kind -> weight (compile-error kinds add up to ~0.37; mutants add a few more)
KINDS: dict[str, float] = {
    "canonical": 0.30,
    "full_function": 0.04,  # the whole function in a markdown fence, as chat models answer
    "mutant": 0.20,  # an operator or literal changed: mostly wrong answers
    "type_error": 0.08,
    "unresolved_name": 0.07,
    "borrow_error": 0.05,
    "missing_method": 0.05,
    "syntax_error": 0.05,
    "truncated": 0.07,  # generation stopped mid-answer: unclosed delimiters
    "exit_cheat": 0.03,  # std::process::exit(0) before the work
    "abort": 0.02,
    "stack_overflow": 0.02,
    "exit_code": 0.02,
}
HANG_KINDS = ("hang_spin", "hang_sleep")

STATEMENTS = {
    "type_error": 'let _ferris: u32 = "ferris";',
    "unresolved_name": "let _ferris = undefined_helper(1);",
    "borrow_error": "let mut _v = vec![1]; let _r = &_v; _v.push(2); let _ = _r.len();",
    "missing_method": "let _ferris = 5i32.lenn();",
    "syntax_error": "let _ferris = ;",
    "exit_cheat": "std::process::exit(0);",
    "abort": "std::process::abort();",
    "stack_overflow": (
        "fn _ferris_deep(n: u64) -> u64 { if n == u64::MAX { 0 } else { _ferris_deep(n + 1) + 1 } } "
        "let _ = _ferris_deep(0);"
    ),
    "exit_code": "std::process::exit(3);",
    "hang_spin": "let mut _ferris = 0u64; loop { _ferris = _ferris.wrapping_add(1); std::hint::black_box(_ferris); }",
    "hang_sleep": "std::thread::sleep(std::time::Duration::from_secs(3600));",
}
_MUTATIONS = [
    (re.compile(r"<="), "<"), (re.compile(r"(?<![<-])<(?![=<])"), "<="), (re.compile(r">="), ">"),
    (re.compile(r"(?<![->=])>(?![=>])"), ">="), (re.compile(r"=="), "!="), (re.compile(r"\+ 1\b"), "+ 2"),
    (re.compile(r"- 1\b"), "- 2"), (re.compile(r"\btrue\b"), "false"), (re.compile(r"\bfalse\b"), "true"),
    (re.compile(r"(?<![\w.])0(?![\w.])"), "1"),
]

_LOOP_HEADER = re.compile(r"\b(?:while|loop|for)\b[^{]*")


@dataclass(frozen=True)
class Sample:
    task_id: str
    completion: str
    kind: str


def make_mix(problems: list[Problem], count: int, seed: int, hang_fraction: float = 0.0,
             per_task: int = 8) -> list[Sample]:
    """`count` samples, `per_task` for each task in turn (a model's samples file lists a task's samples
    together), deterministic in `seed`."""
    kinds, weights = zip(*KINDS.items())
    hangs = set(random.Random(f"{seed}:hangs").sample(range(count), round(hang_fraction * count)))
    samples = []
    for number in range(count):
        rng = random.Random(f"{seed}:{number}")  # per sample: adding hangs leaves the others as they were
        problem = problems[(number // per_task) % len(problems)]
        kind = rng.choices(kinds, weights)[0]
        if number in hangs:
            kind = HANG_KINDS[number % 2]
        samples.append(Sample(problem.task_id, _completion(problem, kind, number, rng), kind))
    return samples


def _completion(problem: Problem, kind: str, number: int, rng: random.Random) -> str:
    body = problem.canonical_solution or ""
    tag = f"\n    // sample {number}\n"
    if kind == "canonical":
        return tag + body
    if kind == "full_function":
        signature = problem.prompt[problem.prompt.rindex("fn ") :]
        return f"Here is the function:\n\n```rust\n{signature.strip()}{tag}{body}\n```\n"
    if kind == "mutant":
        return tag + _mutate(body, rng)
    if kind == "truncated":
        cut = int(len(body) * rng.uniform(0.4, 0.9))
        return tag + body[:cut]
    return tag + "    " + STATEMENTS[kind] + "\n" + body


def _mutate(body: str, rng: random.Random) -> str:
    """One operator or literal changed, never in a loop header: a mutant is a wrong answer, and a
    loop that no longer ends is a hang (those come only from `hang_fraction`)."""
    loop_headers = [(m.start(), m.end()) for m in _LOOP_HEADER.finditer(body)]
    sites = [(m.start(), m.end(), replacement) for pattern, replacement in _MUTATIONS for m in pattern.finditer(body)
             if not any(start <= m.start() < end for start, end in loop_headers)]
    if not sites:
        return body
    start, end, replacement = rng.choice(sites)
    return body[:start] + replacement + body[end:]
