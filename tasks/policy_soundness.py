"""Safe Rust that reaches raw memory or libc without an `unsafe` token: checks of `tasks.policy`.

**`soundness_hole`**: rust-lang/rust#25860 (the "cve-rs" family) still compiles on rustc 1.95. A
function whose parameter is a nested reference such as `&'a &'b ()` gets the *implied* bound
`'b: 'a`; coerced to a higher-ranked fn pointer whose witness parameter is left to inference,
`let f: for<'x> fn(_, &'x T) -> &'b T = helper;`, the bound is forgotten and `f(&&(), x)` returns
`x` with any lifetime. From that dangling `&'static mut` and one enum, a "transmute" follows,
then arbitrary reads, writes and calls. Two independent token-level signs are flagged:

1. A *lifetime relation through a nesting type*: a reference `&'L1 …` whose referent (up to the
   end of that type) names another lifetime `'L2` (`&'a &'b ()`, `&'a Option<&'b ()>`,
   `&'static (&'b (), u8)`, `&'a dyn Tr<'b>`), anywhere in the code (fn and closure parameters,
   trait methods, `impl` headers, fields). Type aliases, structs, enums and unions defined in the
   same code are followed: `type A<'p, 'q> = &'p &'q ();`, `struct W<'x, 'y>(PhantomData<&'x &'y ()>)`,
   `struct H<'x, T>(&'x T)` make `A<'a, 'b>`, `W<'a, 'b>` and `H<'a, &'b ()>` relations too, through
   chains of such definitions. `'L1` must be named (`'static` counts) and `'L2` a named lifetime
   other than `'static` and `'L1`: an elided outer lifetime (`&&'b str`, `&[&'a str]`) cannot be
   named by the function's output, and `'static` inside relates nothing. So `&&str`, `&&i32`,
   `|&&x| …` and `fn f<'a>(x: &'a str) -> &'a str` are fine.
2. A fn-pointer type with an inferred parameter type, `fn(_, …)`: with every parameter written
   out, rustc checks the fn-pointer type and rejects the coercion (checked on 1.95), so the
   family needs a `_` there. No benchmark answer writes one.

A token scan cannot prove the absence of the family: a relation the scan cannot see (through a
trait's associated type, a macro-built type, a definition it does not follow such as a generic
alias applied through another alias's type argument) and a coercion without a written
`fn(_ …)` type are not excluded. Neither sign is flagged where `$` builds the type (the
`macro_path` rule covers what `macro_rules!` assembles only partly).

**`ffi`** gaps: edition 2024 `safe fn`/`safe static` items of an `unsafe extern` block (callable
without `unsafe`) and names of the dynamic loader's lookups (`dlsym`, `dlopen`, …) as
identifiers (the `extern` block itself is `tasks.policy`'s `ffi`, `std::ffi` a forbidden path).
"""

from __future__ import annotations

from collections.abc import Sequence

from tasks.rust_lexer import IDENT, LIFETIME, PUNCT, Token, matching_brace

SOUNDNESS_RULE = "soundness_hole"
FFI_NAMES = frozenset(
    "dlsym dlvsym dlopen dlmopen dladdr dlinfo dlerror GetProcAddress LoadLibraryA LoadLibraryW "
    "LoadLibraryExA LoadLibraryExW".split()
)
_CLOSERS = frozenset({",", ";", "=", ")", "]", "}", "{", "|", "where"})
_DEFINITIONS = frozenset({"type", "struct", "enum", "union"})
_UNNAMED = frozenset({"'static", "'_"})

Finding = tuple[int, str, str]  # (token index, rule, detail)


def soundness_findings(code: str, tokens: Sequence[Token]) -> list[Finding]:
    """Every `soundness_hole` and `ffi`-gap finding in `tokens` (the lexed `code`)."""
    return _Soundness(code, tokens).run()


class _Definition:
    """A type alias / struct / enum / union of the code: its generic parameters and body range."""

    def __init__(self, name: str, lifetimes: list[str], types: list[str], body: range) -> None:
        self.name, self.lifetimes, self.types, self.body = name, lifetimes, types, body
        # (outer lifetime: a parameter or 'static, inner parameter): `&'outer …inner…` in the body
        self.relations: set[tuple[str, str]] = set()


class _Soundness:
    def __init__(self, code: str, tokens: Sequence[Token]) -> None:
        self.code, self.tokens = code, list(tokens)
        self.found: list[Finding] = []

    def _text(self, i: int) -> str:
        return self.tokens[i].text if 0 <= i < len(self.tokens) else ""

    def _punct(self, i: int, text: str) -> bool:
        return 0 <= i < len(self.tokens) and self.tokens[i].is_punct(text)

    def _keyword(self, i: int, word: str) -> bool:
        token = self.tokens[i] if 0 <= i < len(self.tokens) else None
        return (token is not None and token.kind == IDENT and token.text == word
                and not self.code.startswith("r#", token.start))

    def run(self) -> list[Finding]:
        definitions = self._definitions()
        self._settle(definitions)
        for i, token in enumerate(self.tokens):
            if token.kind == PUNCT and token.text in ("&", "&&"):
                self._reference(i)
            elif token.kind != IDENT:
                continue
            elif token.text in definitions and self._punct(self._after_turbofish(i), "<"):
                self._application(i, definitions[token.text])
            elif self._keyword(i, "fn") and self._punct(i + 1, "("):
                self._fn_pointer(i)
            elif self._keyword(i, "safe") and (self._keyword(i + 1, "fn") or self._keyword(i + 1, "static")):
                detail = f"safe {self._text(i + 1)} (an extern item callable without unsafe)"
                self.found.append((i, "ffi", detail))
            elif token.text in FFI_NAMES:
                self.found.append((i, "ffi", token.text))
        return self.found

    # ---- types ---------------------------------------------------------------------------

    def _type_end(self, start: int) -> int:
        """Index after the type starting at `start`: the first closer at bracket depth 0."""
        depth, i = 0, start
        while i < len(self.tokens):
            token = self.tokens[i]
            if token.kind == PUNCT or token.text == "where":
                text = token.text
                if text in ("(", "[", "<"):
                    depth += 1
                elif text in (")", "]", ">"):
                    if depth == 0:
                        return i
                    depth -= 1
                elif depth == 0 and text in _CLOSERS:
                    return i
            i += 1
        return i

    def _outer_lifetime(self, i: int) -> tuple[str | None, int]:
        """The lifetime of the reference at token `i` (None when elided) and where its referent starts."""
        if self.tokens[i].text == "&&":  # `&&'b T`: the outer reference's lifetime is elided
            return None, i
        k = i + 1
        if k < len(self.tokens) and self.tokens[k].kind == LIFETIME:
            return self.tokens[k].text, k + 1
        return None, k

    def _reference(self, i: int) -> None:
        outer, start = self._outer_lifetime(i)
        if outer is None or outer == "'_":
            return
        for k in range(start, self._type_end(start)):
            inner = self.tokens[k]
            if inner.kind == LIFETIME and inner.text not in _UNNAMED and inner.text != outer:
                detail = f"&{outer} … {inner.text} (a nested reference relates two lifetimes)"
                self.found.append((i, SOUNDNESS_RULE, detail))
                return

    def _fn_pointer(self, i: int) -> None:
        end = matching_brace(self.tokens, i + 1) or len(self.tokens)
        if any(self.tokens[k].is_ident("_") for k in range(i + 2, end)):
            detail = "fn(_, …) (a fn-pointer type with an inferred parameter)"
            self.found.append((i, SOUNDNESS_RULE, detail))

    # ---- definitions of the code ---------------------------------------------------------

    def _after_turbofish(self, i: int) -> int:
        return i + 2 if self._punct(i + 1, "::") else i + 1

    def _generic_arguments(self, open_index: int) -> tuple[list[list[Token]], int]:
        """The comma-separated arguments of the `<` at `open_index`, and the index after `>`."""
        args: list[list[Token]] = [[]]
        depth, i = 0, open_index
        while i < len(self.tokens):
            text = self.tokens[i].text if self.tokens[i].kind == PUNCT else ""
            if text in ("<", "(", "["):
                depth += 1
                if depth == 1:
                    i += 1
                    continue
            elif text in (">", ")", "]"):
                depth -= 1
                if depth == 0:
                    return [a for a in args if a], i + 1
            elif text in (";", "{", "}") or self._keyword(i, "where"):
                break
            elif text == "," and depth == 1:
                args.append([])
                i += 1
                continue
            args[-1].append(self.tokens[i])
            i += 1
        return [a for a in args if a], i

    def _definitions(self) -> dict[str, _Definition]:
        found: dict[str, _Definition] = {}
        for i, token in enumerate(self.tokens):
            if not (token.text in _DEFINITIONS and self._keyword(i, token.text)):
                continue
            if not (0 <= i + 1 < len(self.tokens) and self.tokens[i + 1].kind == IDENT):
                continue
            lifetimes: list[str] = []
            types: list[str] = []
            k = i + 2
            if self._punct(k, "<"):
                params, k = self._generic_arguments(k)
                for param in params:
                    first = param[0]
                    if first.kind == LIFETIME:
                        lifetimes.append(first.text)
                    elif first.kind == IDENT and first.text != "const":
                        types.append(first.text)
            end = k
            while end < len(self.tokens) and not self.tokens[end].is_punct(";"):
                if self.tokens[end].is_punct("{"):
                    end = matching_brace(self.tokens, end) or len(self.tokens)
                    break
                if self.tokens[end].is_punct("("):
                    end = matching_brace(self.tokens, end) or len(self.tokens)
                end += 1
            name = self.tokens[i + 1].text
            found[name] = _Definition(name, lifetimes, types, range(k, min(end + 1, len(self.tokens))))
        return found

    def _settle(self, definitions: dict[str, _Definition]) -> None:
        """Each definition's relations among its parameters, through the definitions it uses."""
        for definition in definitions.values():
            self._direct_relations(definition)
        for _ in range(len(definitions)):
            changed = [self._inherited_relations(d, definitions) for d in definitions.values()]
            if not any(changed):
                return

    def _direct_relations(self, definition: _Definition) -> None:
        """`&'outer …param…` in the body, `'outer` a lifetime parameter or `'static`."""
        params = set(definition.lifetimes) | set(definition.types)
        for i in definition.body:
            if self.tokens[i].kind != PUNCT or self.tokens[i].text not in ("&", "&&"):
                continue
            outer, start = self._outer_lifetime(i)
            if outer is None or (outer not in definition.lifetimes and outer != "'static"):
                continue
            for k in range(start, min(self._type_end(start), definition.body.stop)):
                if self.tokens[k].text in params and self.tokens[k].text != outer:
                    definition.relations.add((outer, self.tokens[k].text))

    def _inherited_relations(self, definition: _Definition, definitions: dict[str, _Definition]) -> bool:
        """Relations through another definition applied in the body; True when one was added."""
        params = set(definition.lifetimes) | set(definition.types)
        outers = set(definition.lifetimes) | {"'static"}
        added = False
        for i in definition.body:
            other = definitions.get(self.tokens[i].text)
            if other is None or not other.relations or self.tokens[i].kind != IDENT:
                continue
            if not self._punct(self._after_turbofish(i), "<"):
                continue
            for outer_arg, inner_arg in self._applied(other, self._after_turbofish(i)):
                for outer in {t.text for t in outer_arg} & outers:
                    for inner in {t.text for t in inner_arg} & params - {outer}:
                        if (outer, inner) not in definition.relations:
                            definition.relations.add((outer, inner))
                            added = True
        return added

    def _applied(self, definition: _Definition, open_index: int) -> list[tuple[list[Token], list[Token]]]:
        """(outer argument, inner argument) for each relation of `definition` at this use."""
        args, _ = self._generic_arguments(open_index)
        lifetime_args = [a for a in args if len(a) == 1 and a[0].kind == LIFETIME]
        type_args = [a for a in args if not (len(a) == 1 and a[0].kind == LIFETIME)]
        bound = dict(zip(definition.lifetimes, lifetime_args))
        bound.update(zip(definition.types, type_args))
        pairs = []
        for outer, inner in definition.relations:
            outer_arg = [Token(LIFETIME, "'static", 0, 0)] if outer == "'static" else bound.get(outer)
            if outer_arg is not None and inner in bound:
                pairs.append((outer_arg, bound[inner]))
        return pairs

    def _application(self, i: int, definition: _Definition) -> None:
        if not definition.relations or self._text(i - 1) in _DEFINITIONS:  # its own header
            return
        for outer_arg, inner_arg in self._applied(definition, self._after_turbofish(i)):
            outer = outer_arg[0].text if len(outer_arg) == 1 and outer_arg[0].kind == LIFETIME else None
            if outer is None or outer == "'_":
                continue
            for token in inner_arg:
                if token.kind == LIFETIME and token.text not in _UNNAMED and token.text != outer:
                    detail = f"{definition.name}<{outer}, … {token.text} …> (relates two lifetimes)"
                    self.found.append((i, SOUNDNESS_RULE, detail))
                    return
