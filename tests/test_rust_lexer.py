"""The tokenizer every Rust-reading step relies on: code vs comments vs literals."""

from tasks.rust_lexer import brace_depth, has_unterminated, tokenize


def kinds_and_texts(source: str, **kwargs) -> list[tuple[str, str]]:
    return [(t.kind, t.text) for t in tokenize(source, **kwargs)]


def test_braces_inside_strings_chars_raw_strings_and_comments_are_not_code():
    source = 'fn f() { let c = \'{\'; let s = r#"}}"#; /* { /* } */ */ // }\n let t = "\\"}"; }'
    assert brace_depth(source) == 0
    assert [t.text for t in tokenize(source) if t.text in "{}"] == ["{", "}"]


def test_a_lifetime_is_not_a_char_literal():
    assert kinds_and_texts("fn f<'a>(x: &'a str) -> char { 'a' }")[2:4] == [("punct", "<"), ("lifetime", "'a")]
    assert ("char", "'a'") in kinds_and_texts("'a'")


def test_paths_are_reconstructable_across_whitespace_and_comments():
    tokens = [t.text for t in tokenize("std :: /* x */ fs :: read")]
    assert tokens == ["std", "::", "fs", "::", "read"]


def test_raw_identifier_is_an_identifier_and_byte_literals_are_literals():
    assert kinds_and_texts("r#fn b'x' b\"y\" br#\"z\"#") == [
        ("ident", "fn"), ("char", "b'x'"), ("string", 'b"y"'), ("string", 'br#"z"#')
    ]


def test_a_b_before_a_stray_quote_is_an_identifier():
    assert kinds_and_texts("b'") == [("ident", "b"), ("punct", "'")]


def test_unterminated_constructs_are_flagged_not_raised():
    for source in ['let s = "open', "/* open /* nested */", 'r##"open"#', "'"]:
        assert has_unterminated(source), source
    assert not has_unterminated('let s = "closed"; /* c */')


def test_comments_are_kept_only_on_request():
    assert kinds_and_texts("a // c\nb") == [("ident", "a"), ("ident", "b")]
    assert kinds_and_texts("a // c\nb", keep_comments=True)[1] == ("comment", "// c")
