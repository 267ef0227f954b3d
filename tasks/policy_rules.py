"""Rule tables of `tasks.policy` (forbidden paths, macros, attributes, fs methods) and their lookups; split out to keep modules small."""

from __future__ import annotations

PathKey = tuple[str, ...]

_STD_ROOTS = frozenset({"std", "core", "alloc"})  # core and alloc are re-exported by std
_ROOTS = _STD_ROOTS | {"libc", "proc_macro"}


def _by_name(rules: dict[str, str]) -> dict[str, str]:
    """{"rule": "name name …"} -> {"name": "rule"}: keeps the tables below readable."""
    return {name: rule for rule, names in rules.items() for name in names.split()}


# Forbidden paths, rooted at "std" (core/alloc normalized to it) or at another crate:
# path -> (rule, is a module). Everything below a forbidden path is forbidden too.
_FORBIDDEN: dict[PathKey, tuple[str, bool]] = {
    **{("std", name): (rule, True) for name, rule in _by_name({
        "filesystem": "fs", "process": "process", "network": "net", "os": "os",
        "environment": "env", "memory": "ptr intrinsics", "inline_asm": "arch", "ffi": "ffi",
    }).items()},
    **{("std", *path.split("::")): (rule, False) for path, rule in _by_name({
        "memory": "mem::transmute mem::transmute_copy mem::zeroed mem::uninitialized",
        "include_macro": "include include_str include_bytes",
        "env_macro": "option_env",
        "panic_hook": "panic::set_hook panic::take_hook",
        "allocator": "alloc::GlobalAlloc",
    }).items()},
    ("libc",): ("ffi", True),
    ("proc_macro",): ("proc_macro", True),
}

# What a glob import of a forbidden module brings into scope that is worth naming at each use
# (the import itself is already a violation; this only adds the use sites).
_GLOB_MEMBERS: dict[PathKey, frozenset[str]] = {
    ("std", module): frozenset(names.split())
    for module, names in {
        "fs": "File OpenOptions DirEntry read read_to_string read_dir write remove_file "
        "remove_dir remove_dir_all create_dir create_dir_all copy rename metadata",
        "process": "Command Stdio Child exit abort",
        "net": "TcpStream TcpListener UdpSocket",
        "env": "args args_os var var_os vars set_var remove_var current_dir set_current_dir",
        "os": "unix fd raw linux windows",
    }.items()
}

# Macros forbidden by their last path segment, whatever path or import names them.
_MACRO_RULES = _by_name({
    "inline_asm": "asm global_asm naked_asm llvm_asm",
    "include_macro": "include include_str include_bytes",
    "env_macro": "env option_env",
})

_ATTRIBUTE_RULES = _by_name({
    "linkage": "link link_name link_section link_ordinal no_mangle export_name used",
    "allocator": "global_allocator",
    "path_attribute": "path",
    "proc_macro": "proc_macro proc_macro_derive proc_macro_attribute",
    "inline_asm": "naked",
})

# `std::path::Path` methods that touch the file system without naming `std::fs`.
_FS_METHODS = frozenset(
    "read_dir read_link canonicalize metadata symlink_metadata try_exists".split()
)


def _normalized(path: PathKey) -> PathKey:
    return ("std",) + path[1:] if path[0] in _STD_ROOTS else path


def _forbidden(path: PathKey) -> tuple[str, bool] | None:
    """(rule, path is exactly a forbidden module) for a resolved path, or None if allowed."""
    key = _normalized(path)
    for length in range(1, len(key) + 1):
        hit = _FORBIDDEN.get(key[:length])
        if hit:
            return hit[0], hit[1] and length == len(key)
    if key[0] == "std" and key[-1] in _MACRO_RULES:  # re-exports: `std::prelude::v1::include_str`
        return _MACRO_RULES[key[-1]], False
    return None


def _glob_exports(source: PathKey, name: str) -> bool:
    """Whether a glob import of `source` may have brought a forbidden `name` into scope."""
    key = _normalized(source)
    return key + (name,) in _FORBIDDEN or name in _GLOB_MEMBERS.get(key, ())
