"""Root-side access to places a sandboxed program could have written, without trusting them.

A completion is hostile and may replace anything its uid can write with a symlink, a FIFO, a
socket or a huge file. So root never opens such a path by name the ordinary way: files are
opened relative to a directory fd with `O_NOFOLLOW | O_NONBLOCK` (a symlink fails, a FIFO does
not block), checked to be regular files of the expected owner, and read up to a cap; a binary
is copied only from such an fd; trees are removed fd by fd without following anything, however
deep they are. SECURITY.md lists every call site and why it is safe.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
MAX_BINARY_BYTES = 512 << 20  # a batch crate's test binary is tens of MiB; anything bigger is refused
MAX_OPEN_DEPTH = 32  # directory fds held at once while removing; deeper trees are flattened


class UntrustedFileError(OSError):
    """A sandbox-writable path is not what root expects (a link, a FIFO, another owner, too big)."""


def open_regular(directory: int | Path, name: str, owner: int | None = None,
                 max_bytes: int | None = None) -> int:
    """An fd of the regular file `name` in `directory` (an fd or a path opened without
    following links); never follows a symlink and never blocks on a FIFO or device."""
    if "/" in name or name in ("", ".", ".."):
        raise ValueError(f"not a plain file name: {name!r}")
    dir_fd = directory if isinstance(directory, int) else os.open(directory, _DIR_FLAGS)
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        if not isinstance(directory, int):
            os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise UntrustedFileError(f"{name} is not a regular file (mode {oct(info.st_mode)})")
        if owner is not None and info.st_uid != owner:
            raise UntrustedFileError(f"{name} belongs to uid {info.st_uid}, not {owner}")
        if max_bytes is not None and info.st_size > max_bytes:
            raise UntrustedFileError(f"{name} holds {info.st_size} bytes, over {max_bytes}")
        os.set_blocking(fd, True)
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_capped(directory: int | Path, name: str, cap: int, owner: int | None = None) -> bytes:
    """At most `cap` bytes of the regular file `name` (b"" when it does not exist)."""
    try:
        fd = open_regular(directory, name, owner)
    except FileNotFoundError:
        return b""
    with os.fdopen(fd, "rb", buffering=0) as handle:
        chunks, left = [], cap
        while left > 0:
            chunk = handle.read(min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)


def copy_regular(directory: Path, name: str, target: Path, owner: int | None,
                 mode: int = 0o711, max_bytes: int = MAX_BINARY_BYTES) -> None:
    """Copy the regular file `name` (of `owner`, at most `max_bytes`) to a new root-owned
    `target` with `mode`; the target is created exclusively, so it cannot be a planted link."""
    source = open_regular(directory, name, owner, max_bytes)
    try:
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            size = os.fstat(source).st_size
            copied = 0
            while copied < size:
                sent = os.sendfile(out, source, copied, size - copied)
                if sent == 0:
                    break
                copied += sent
            os.fchmod(out, mode)
        finally:
            os.close(out)
    finally:
        os.close(source)


def seal_binary(directory: Path, name: str, owner: int | None, mode: int = 0o711) -> None:
    """Make the compiler's output `name` root's, execute-only for the sandbox uids: no job can
    then read, replace or change it (its directory is not writable by them either)."""
    fd = open_regular(directory, name, owner, MAX_BINARY_BYTES)
    try:
        if os.geteuid() == 0:
            os.fchown(fd, 0, 0)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def write_new(path: Path, text: str, owner: int | None = None, mode: int = 0o600) -> None:
    """Create `path` exclusively (never through a planted link) with `text`, owned by `owner`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        data = text.encode("utf-8")
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner, owner)
    finally:
        os.close(fd)


def make_dir(path: Path, owner: int | None, mode: int) -> Path:
    """A new directory (never an existing one, never through a link) owned by `owner`."""
    os.mkdir(path, 0o700)
    fd = os.open(path, _DIR_FLAGS)
    try:
        if owner is not None and os.geteuid() == 0:
            os.fchown(fd, owner, owner)
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def remove_tree(path: Path) -> None:
    """Remove `path` and everything under it without following links or opening anything but
    directories (FIFOs, sockets and devices are unlinked, never opened). Iterative, with at most
    MAX_OPEN_DEPTH directory fds: a deeper subtree is moved up to `path`'s parent and removed
    from there, so a tree of any depth goes. `path` itself may be a link (then only it goes)."""
    path = Path(path)
    parent_fd = os.open(path.parent, _DIR_FLAGS)
    try:
        _remove_entry(parent_fd, path.name)
    finally:
        os.close(parent_fd)


def _remove_entry(parent_fd: int, name: str) -> None:
    try:
        info = os.stat(name, dir_fd=parent_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(info.st_mode):
        os.unlink(name, dir_fd=parent_fd)
        return
    pending = [name]  # directories directly under parent_fd still to empty and remove
    spill = 0
    while pending:
        top = pending.pop()
        stack = [_open_emptied(parent_fd, top)]
        while stack:
            entry_name, fd, subdirs = stack[-1]
            if not subdirs:  # emptied: remove it from its parent
                os.close(fd)
                stack.pop()
                os.rmdir(entry_name, dir_fd=stack[-1][1] if stack else parent_fd)
            elif len(stack) < MAX_OPEN_DEPTH:
                stack.append(_open_emptied(fd, subdirs.pop()))
            else:  # too deep: move the subtree up beside `top` and remove it from there later
                spill += 1
                moved = f".ferrisbench-spill-{os.getpid()}-{spill}"
                os.rename(subdirs.pop(), moved, src_dir_fd=fd, dst_dir_fd=parent_fd)
                pending.append(moved)


def _open_emptied(parent_fd: int, name: str) -> tuple[str, int, list[str]]:
    """Open directory `name`, unlink everything in it that is not a directory; (name, fd, subdirs)."""
    fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    subdirs = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return name, fd, subdirs


def sweep_stale(directory: Path, prefix: str) -> int:
    """Remove every entry named `prefix*` under `directory` (work dirs a killed run left)."""
    try:
        names = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except FileNotFoundError:
        return 0
    for name in names:
        remove_tree(Path(directory) / name)
    return len(names)
