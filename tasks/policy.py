"""Policy mode: reject completions that reach for capabilities a benchmark answer never needs.

A pure function of the completion text (only the model-written code), so the `policy` and
`no_policy` verdicts of one sample come from the same execution. The scan works on tokens
(`tasks.rust_lexer`), never on substrings: comments and string/char literals are invisible,
`std :: /* x */ fs` is the path `std::fs`, and `external`, `is_unsafe` or `r#unsafe` are
identifiers, not the keyword.

Decisions: `std::io` (stdin included), `std::thread`, `std::sync`, `std::time` are allowed.
`std::net` is forbidden wholesale (so is parsing an `Ipv4Addr`), as is every `unsafe` token
(fn-pointer types included) and every inner attribute `#![…]`, even a lint inside a body.

How names are resolved (conservative: one flat scope for the whole completion):
- Paths are rooted at `std`/`core`/`alloc` (also `::std`), `libc` or `proc_macro`, or at a name
  bound anywhere in the completion by a `use` tree (groups, nesting, `self`, `as`) or
  `extern crate … as`, chains included (`use std as s; use s::fs as f;`). A bound name is also
  tried mid-path, so `self::s::fs`, `crate::s::fs` and `m::s::fs` resolve too.
- A name bound twice keeps every meaning; a path is flagged if any meaning is forbidden.
- Globs are followed: after `use std::*`, `fs::read` is `std::fs::read` (flagged) while a bare
  `env` without `::` is still a local value; `File` stays local after `use std::*` (std's root
  does not export it) but is `std::fs::File` after `use std::fs::*`. Globs are never shadowed
  by local items, so `use std::*` plus a local `mod env` and `env::f()` is a false positive.
- Names never imported from std (`let env = 3`, `fn process`, `mod net { … }` + `net::f()`) are
  local and allowed.

What a token scan cannot see, honestly:
- `macro_rules!` expansion. Tokens in a macro body or its arguments are scanned like any others,
  and paths, macro names or attributes assembled from macro arguments (`$a::$b`, `std::$m`,
  `$($s)::*`, `$name!`, `#[$attr]`) are flagged as `macro_path` (so is the rare legitimate
  `$t::new()`). Indirection that never puts `::` next to a metavariable (fragments forwarded
  through several macros) can still build a path the scan never sees whole. `concat_idents!`
  is unstable and needs `#![feature]`, which is flagged.
- Types. `Path` methods that touch the file system are caught by name (`.read_dir()`,
  `.metadata()`, …), which also flags a user method of that name; `.exists()`, `.is_file()`,
  `.is_dir()` are not caught (a one-bit oracle, and too common a name).
- Runtime behaviour (loops, memory, fake test output): the sandbox's and verdict parser's job.
  Safe Rust can still reach raw memory through rustc's soundness bugs; the known #25860 family
  is `soundness_hole` (`tasks.policy_soundness`, which says what it cannot see).
"""

from __future__ import annotations

from dataclasses import dataclass

from tasks.policy_rules import (
    _ATTRIBUTE_RULES,
    _FS_METHODS,
    _MACRO_RULES,
    _ROOTS,
    _STD_ROOTS,
    PathKey,
    _forbidden,
    _glob_exports,
)
from tasks.policy_soundness import soundness_findings
from tasks.rust_lexer import IDENT, PUNCT, STRING, Token, matching_brace, tokenize

POLICY_VERSION = "2"  # 2: soundness_hole (rust-lang/rust#25860), std::ffi, `safe fn`, dlsym-like names


@dataclass(frozen=True)
class Violation:
    rule: str  # e.g. "filesystem", "unsafe", "macro_path"
    detail: str  # the reconstructed path or construct, e.g. "std::fs::read", "unsafe block"
    line: int  # 1-based line in the completion


def scan(code: str) -> list[Violation]:
    """Every policy violation in `code`, in source order; [] means allowed."""
    return _Scanner(code).run()


@dataclass(frozen=True)
class _Import:
    """One leaf of a `use` tree (or an `extern crate`), as written."""

    path: PathKey  # `self` leaves already folded into their parent
    local: str | None  # the name it binds; None for a glob
    alias: str | None  # the `as` name, if any
    start: int  # index of the `use`/`extern` token

    def describe(self) -> str:
        text = "use " + "::".join(self.path)
        if self.local is None:
            return text + "::*"
        return f"{text} as {self.alias}" if self.alias else text


def _describe(written: str, resolved: PathKey, suffix: str = "") -> str:
    canonical = "::".join(resolved) + suffix
    return written if canonical == written else f"{written} ({canonical})"


class _Scanner:
    """One scan: imports first (a name may be used before its `use`), then every other token."""

    def __init__(self, code: str) -> None:
        self.code = code
        self.tokens: list[Token] = tokenize(code)
        self.aliases: dict[str, set[PathKey]] = {}
        self.globs: set[PathKey] = set()
        self.found: list[tuple[int, str, str]] = []  # (offset, rule, detail)

    def run(self) -> list[Violation]:
        imports, skipped = self._collect_imports()
        self._bind(imports)
        for item in imports:
            for target in self._resolve(item.path):
                hit = _forbidden(target)
                if hit:
                    written = item.describe()
                    resolved = "" if target == item.path else f" ({'::'.join(target)})"
                    self._add(item.start, hit[0], written + resolved)
                    break
        self._scan_code(skipped)
        for index, rule, detail in soundness_findings(self.code, self.tokens):
            self._add(index, rule, detail)
        return self._violations()

    # ---- token helpers -------------------------------------------------------------------

    def _punct(self, i: int, text: str) -> bool:
        return 0 <= i < len(self.tokens) and self.tokens[i].is_punct(text)

    def _ident(self, i: int) -> bool:
        return 0 <= i < len(self.tokens) and self.tokens[i].kind == IDENT

    def _keyword(self, i: int, word: str) -> bool:
        """A keyword, not the raw identifier `r#word` (which the lexer spells `word`)."""
        return (
            self._ident(i)
            and self.tokens[i].text == word
            and not self.code.startswith("r#", self.tokens[i].start)
        )

    def _add(self, index: int, rule: str, detail: str) -> None:
        self.found.append((self.tokens[index].start, rule, detail))

    def _violations(self) -> list[Violation]:
        seen: set[Violation] = set()
        result = []
        for offset, rule, detail in sorted(self.found, key=lambda found: found[0]):
            violation = Violation(rule, detail, self.code.count("\n", 0, offset) + 1)
            if violation not in seen:
                seen.add(violation)
                result.append(violation)
        return result

    # ---- imports ---------------------------------------------------------------------------

    def _collect_imports(self) -> tuple[list[_Import], dict[int, int]]:
        """Every `use` leaf and `extern crate`, and the token ranges they span (start -> end)."""
        imports: list[_Import] = []
        skipped: dict[int, int] = {}
        resume = 0
        for i, token in enumerate(self.tokens):
            if i < resume or token.text not in ("use", "extern"):
                continue
            if self._keyword(i, "use") and not self._punct(i + 1, "<"):  # `use<'a>` captures
                end = self._parse_use_tree(i + 1, (), i, imports)
                resume = skipped[i] = max(end + self._punct(end, ";"), i + 1)
            elif self._keyword(i, "extern") and self._keyword(i + 1, "crate"):
                if not self._ident(i + 2):
                    continue
                resume = self._extern_crate(i, imports, skipped)
        return imports, skipped

    def _parse_use_tree(self, i: int, prefix: PathKey, start: int, out: list[_Import]) -> int:
        """Parse one use tree at token `i` under `prefix`; returns the index after it."""
        if self._punct(i, "::"):
            i += 1
        if self._punct(i, "*"):
            out.append(_Import(prefix, None, None, start))
            return i + 1
        if self._punct(i, "{"):
            i += 1
            while i < len(self.tokens) and not self._punct(i, "}") and not self._punct(i, ";"):
                after = self._parse_use_tree(i, prefix, start, out)
                i = after if after > i else i + 1  # skip a comma or anything unexpected
            return i + self._punct(i, "}")
        segments = list(prefix)
        while self._ident(i):
            segments.append(self.tokens[i].text)
            i += 1
            if not self._punct(i, "::"):
                break
            if self._punct(i + 1, "{") or self._punct(i + 1, "*"):
                return self._parse_use_tree(i + 1, tuple(segments), start, out)
            i += 1
        if len(segments) == len(prefix):
            return i
        alias = None
        if self._keyword(i, "as") and self._ident(i + 1):
            alias = self.tokens[i + 1].text
            i += 2
        if segments[-1] == "self" and len(segments) > 1:  # `{self}`: the parent module itself
            segments.pop()
        path = tuple(segments)
        out.append(_Import(path, alias or path[-1], alias, start))
        return i

    def _extern_crate(self, i: int, imports: list[_Import], skipped: dict[int, int]) -> int:
        name = self.tokens[i + 2].text
        has_alias = self._keyword(i + 3, "as") and self._ident(i + 4)
        alias = self.tokens[i + 4].text if has_alias else None
        if name == "proc_macro":
            self._add(i, "proc_macro", "extern crate proc_macro")
        elif name not in _STD_ROOTS and name != "self":
            self._add(i, "extern_crate", f"extern crate {name}")
        if name in _ROOTS:
            imports.append(_Import((name,), alias or name, alias, i))
        end = i + (5 if alias else 3)
        end += self._punct(end, ";")
        skipped[i] = end
        return end

    def _bind(self, imports: list[_Import]) -> None:
        """Record what every imported name may mean; repeats until chained aliases settle."""
        for _ in range(len(imports) + 1):
            changed = False
            for item in imports:
                for target in self._resolve(item.path):
                    if item.local is None:
                        bucket = self.globs
                    else:
                        bucket = self.aliases.setdefault(item.local, set())
                    if target not in bucket:
                        bucket.add(target)
                        changed = True
            if not changed:
                return

    def _resolve(self, segments: PathKey) -> list[PathKey]:
        """Every crate-rooted path `segments` may denote (empty when it is purely local)."""
        meanings: list[PathKey] = []
        for k, segment in enumerate(segments):
            rest = segments[k + 1 :]
            if segment in _ROOTS:
                meanings.append((segment,) + rest)
            for target in self.aliases.get(segment, ()):
                meanings.append(target + rest)
            for source in self.globs:
                if _glob_exports(source, segment):
                    meanings.append(source + (segment,) + rest)
        return meanings

    # ---- everything else -----------------------------------------------------------------

    def _scan_code(self, skipped: dict[int, int]) -> None:
        tokens, n = self.tokens, len(self.tokens)
        has_metavariables = "$" in self.code
        always_resolve = bool(self.globs)
        i = 0
        while i < n:
            if i in skipped:
                i = skipped[i]
                continue
            token, text = tokens[i], tokens[i].text
            if token.kind == PUNCT:
                if text == "#":
                    self._attribute(i)
                elif text == "::" and has_metavariables:
                    self._assembled_path(i)
                i += 1
            elif token.kind != IDENT:
                i += 1
            elif text in _KEYWORD_CHECKS and self._keyword(i, text):
                _KEYWORD_CHECKS[text](self, i)
                i += 1
            elif (  # cheap filter: most identifiers are plain local names
                always_resolve
                or text in _ROOTS
                or text in self.aliases
                or text in _FS_METHODS
                or (i + 1 < n and tokens[i + 1].text in ("::", "!"))
                or (i and tokens[i - 1].text in ("::", "$"))
            ):
                i = self._path(i)
            else:
                i += 1

    def _unsafe(self, i: int) -> None:
        nxt = self.tokens[i + 1] if i + 1 < len(self.tokens) else None
        if nxt is not None and nxt.kind == IDENT and nxt.text in ("fn", "impl", "trait", "extern"):
            detail = f"unsafe {nxt.text}"
        elif nxt is not None and nxt.is_punct("{"):
            detail = "unsafe block"
        elif nxt is not None and nxt.is_punct("("):  # edition 2024 `#[unsafe(no_mangle)]`
            detail = "unsafe attribute"
        else:
            detail = "unsafe"
        self._add(i, "unsafe", detail)

    def _extern(self, i: int) -> None:
        k, abi = i + 1, ""
        if k < len(self.tokens) and self.tokens[k].kind == STRING:
            abi = " " + self.tokens[k].text
            k += 1
        if self._punct(k, "{"):
            self._add(i, "ffi", f"extern{abi} block")
        elif self._keyword(k, "fn"):
            self._add(i, "ffi", f"extern{abi} fn")
        else:
            self._add(i, "ffi", f"extern{abi}")

    def _module_declaration(self, i: int) -> None:
        """`mod name;` loads another file (any, with `#[path]`); inline `mod name { }` is fine."""
        k = i + 1 + self._punct(i + 1, "$")
        if self._ident(k) and self._punct(k + 1, ";"):
            self._add(i, "external_module", f"mod {self.tokens[k].text};")

    def _attribute(self, i: int) -> None:
        inner = self._punct(i + 1, "!")
        open_index = i + 1 + inner
        if not self._punct(open_index, "["):
            return
        close = matching_brace(self.tokens, open_index) or len(self.tokens)
        marker = "#!" if inner else "#"
        body = range(open_index + 1, close)
        if inner:
            name = next((self.tokens[k].text for k in body if self._ident(k)), "")
            self._add(i, "inner_attribute", f"#![{name}]")
        for k in body:
            token = self.tokens[k]
            if token.is_punct("$"):
                self._add(i, "macro_path", f"{marker}[$…] (attribute from a macro argument)")
            elif token.kind == IDENT and token.text in _ATTRIBUTE_RULES:
                if self._punct(k + 1, "::"):  # a path prefix, not the attribute's name
                    continue
                # also `#[std::prelude::v1::global_allocator]`, `#[cfg_attr(all(), no_mangle)]`
                self._add(k, _ATTRIBUTE_RULES[token.text], f"{marker}[{token.text}]")

    def _assembled_path(self, i: int) -> None:
        """A `::` whose neighbour comes from a macro argument: the scan cannot see the path."""
        before = self.tokens[i - 1] if i else None
        if self._punct(i + 1, "$") and self._ident(i + 2):
            left = before.text if before is not None and before.kind == IDENT else ""
            left = "$" + left if left and self._punct(i - 2, "$") else left
            self._add(i, "macro_path", f"{left}::${self.tokens[i + 2].text}")
        elif before is not None and before.kind == PUNCT and before.text in (")", "*", "+", "?"):
            self._add(i, "macro_path", f"{before.text}:: (path from a macro repetition)")

    def _path(self, start: int) -> int:
        """Check the path starting at identifier `start`; returns the index after it."""
        segments = [self.tokens[start].text]
        j = start + 1
        while self._punct(j, "::") and self._ident(j + 1):
            segments.append(self.tokens[j + 1].text)
            j += 2
        path = tuple(segments)
        written = "::".join(path)
        is_macro = self._punct(j, "!") and written != "macro_rules"
        if self._punct(start - 1, "."):
            if path[0] in _FS_METHODS and self._punct(start + 1, "("):
                self._add(start, "filesystem", f".{path[0]}()")
            return j
        if self._punct(start - 1, "$") and path[0] != "crate":  # a macro metavariable
            continues_a_path = self._punct(start - 2, "::")  # `std::$m`: already reported
            if (len(path) > 1 or is_macro) and not continues_a_path:
                self._add(start, "macro_path", "$" + written + ("!" if is_macro else ""))
            return j
        if self._punct(start - 1, "::") and start >= 2:
            before = self.tokens[start - 2]
            if before.is_punct(">") or before.is_punct(")"):  # `Vec::<T>::new`: not a root
                return j
        if is_macro:
            self._macro(start, path)
            return j
        bare = len(path) == 1 and not self._punct(j, "::")
        for meaning in self._resolve(path):
            hit = _forbidden(meaning)
            if hit and not (bare and hit[1]):  # a bare `env` is a local value, not the module
                self._add(start, hit[0], _describe(written, meaning))
                break
        if len(path) >= 2 and path[-2] in ("Path", "PathBuf") and path[-1] in _FS_METHODS:
            self._add(start, "filesystem", written)
        return j

    def _macro(self, start: int, path: PathKey) -> None:
        written = "::".join(path) + "!"
        rule = _MACRO_RULES.get(path[-1])
        if rule:
            self._add(start, rule, written)
            return
        for meaning in self._resolve(path):
            hit = _forbidden(meaning)
            if hit:
                self._add(start, hit[0], _describe(written, meaning, "!"))
                return


_KEYWORD_CHECKS = {
    "unsafe": _Scanner._unsafe,
    "extern": _Scanner._extern,
    "mod": _Scanner._module_declaration,
}
