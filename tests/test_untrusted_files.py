"""Specification of root-side access to sandbox-writable places (`tasks.untrusted_files`).

A hostile program may leave anything its uid can make where root later looks: symlinks to
secrets or to /dev/zero, FIFOs that would block an `open()`, sockets, huge files, trees deeper
than any recursion. Root must read only regular files, up to a cap, never follow a link, never
block, and remove whatever was left without touching anything outside.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from tasks.untrusted_files import (
    MAX_OPEN_DEPTH,
    UntrustedFileError,
    copy_regular,
    make_dir,
    read_capped,
    remove_tree,
    seal_binary,
    sweep_stale,
    write_new,
)
from tests.helpers import requires_root


@pytest.fixture
def planted(tmp_path: Path) -> Path:
    """A directory as a hostile program could leave it, pointing at a secret outside."""
    secret = tmp_path / "secret"
    secret.write_text("SECRET-TOKEN")
    secret.chmod(0o600)
    place = tmp_path / "place"
    place.mkdir()
    (place / "ok").write_bytes(b"0123456789")
    os.symlink(secret, place / "to_secret")
    os.symlink("/proc/self/environ", place / "to_environ")
    os.symlink("/dev/zero", place / "to_zero")
    os.mkfifo(place / "fifo")
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(place / "sock"))
    listener.close()
    return place


def test_a_regular_file_is_read_up_to_the_cap(planted):
    assert read_capped(planted, "ok", 4) == b"0123"
    assert read_capped(planted, "ok", 100) == b"0123456789"
    assert read_capped(planted, "missing", 100) == b""


@pytest.mark.parametrize("name", ["to_secret", "to_environ", "to_zero"])
def test_a_symlink_is_never_followed(planted, name):
    with pytest.raises(OSError):
        read_capped(planted, name, 100)


@pytest.mark.timeout(10)
def test_a_fifo_neither_blocks_nor_is_read(planted):
    started = time.monotonic()
    with pytest.raises(UntrustedFileError, match="not a regular file"):
        read_capped(planted, "fifo", 100)
    assert time.monotonic() - started < 1.0


def test_a_socket_is_not_read(planted):
    with pytest.raises(OSError):
        read_capped(planted, "sock", 100)


def test_a_file_of_another_owner_is_refused(planted):
    with pytest.raises(UntrustedFileError, match="belongs to uid"):
        read_capped(planted, "ok", 100, owner=os.geteuid() + 1)


def test_names_with_a_path_are_refused(planted):
    with pytest.raises(ValueError):
        read_capped(planted, "../secret", 100)


@pytest.mark.parametrize("name", ["to_secret", "to_zero", "fifo", "sock"])
@pytest.mark.timeout(10)
def test_a_binary_is_copied_only_from_a_regular_file(planted, tmp_path, name):
    target = tmp_path / "held"
    with pytest.raises(OSError):
        copy_regular(planted, name, target, owner=None)
    assert not target.exists()


def test_a_binary_over_the_size_cap_is_not_copied(planted, tmp_path):
    with pytest.raises(UntrustedFileError, match="over 4"):
        copy_regular(planted, "ok", tmp_path / "held", owner=None, max_bytes=4)


def test_a_copy_is_exact_and_never_lands_on_a_planted_link(planted, tmp_path):
    copy_regular(planted, "ok", tmp_path / "held", owner=None, mode=0o700)
    assert (tmp_path / "held").read_bytes() == b"0123456789"
    assert (tmp_path / "held").stat().st_mode & 0o777 == 0o700
    os.symlink(tmp_path / "secret", tmp_path / "planted")
    with pytest.raises(FileExistsError):
        copy_regular(planted, "ok", tmp_path / "planted", owner=None)
    assert (tmp_path / "secret").read_text() == "SECRET-TOKEN"


@requires_root  # chown
def test_a_sealed_binary_is_roots_and_execute_only(tmp_path):
    (tmp_path / "prog").write_bytes(b"\x7fELF")
    os.chown(tmp_path / "prog", 61999, 61999)
    seal_binary(tmp_path, "prog", owner=61999)
    info = (tmp_path / "prog").stat()
    assert (info.st_uid, info.st_gid, info.st_mode & 0o777) == (0, 0, 0o711)
    os.symlink(tmp_path / "prog", tmp_path / "link")
    with pytest.raises(OSError):
        seal_binary(tmp_path, "link", owner=0)


def test_new_files_and_dirs_are_never_made_through_a_planted_link(planted, tmp_path):
    with pytest.raises(FileExistsError):
        write_new(planted / "to_secret", "overwritten")
    with pytest.raises(FileExistsError):
        make_dir(planted / "to_secret", None, 0o755)
    assert (tmp_path / "secret").read_text() == "SECRET-TOKEN"


@pytest.mark.timeout(60)
def test_removal_unlinks_links_fifos_and_sockets_without_following_them(planted, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("kept")
    os.symlink(outside, planted / "to_dir")
    remove_tree(planted)
    assert not planted.exists()
    assert (outside / "keep").read_text() == "kept"
    assert (tmp_path / "secret").read_text() == "SECRET-TOKEN"


@pytest.mark.timeout(120)
def test_a_tree_deeper_than_any_recursion_or_fd_budget_is_removed(tmp_path):
    top = tmp_path / "deep"
    top.mkdir()
    fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY)
    depth = 20 * MAX_OPEN_DEPTH + 3000  # deeper than Python's recursion limit
    for level in range(depth):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, dir_fd=fd))
        if level % 500 == 0:
            os.mkfifo("p", dir_fd=fd)
        child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = child
    os.close(fd)
    remove_tree(top)
    assert os.listdir(tmp_path) == []  # nothing moved up for removal is left behind


def test_a_wide_directory_is_removed_in_linear_time(tmp_path):
    wide = tmp_path / "wide"
    wide.mkdir()
    for number in range(20_000):
        (wide / f"f{number}").touch()
    started = time.monotonic()
    remove_tree(wide)
    assert not wide.exists()
    assert time.monotonic() - started < 10.0


def test_removing_a_link_removes_only_the_link(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep").touch()
    os.symlink(target, tmp_path / "link")
    remove_tree(tmp_path / "link")
    assert not os.path.lexists(tmp_path / "link") and (target / "keep").exists()


def test_stale_work_dirs_are_swept_and_nothing_else(tmp_path):
    for name in ("job-a", "job-b", "other"):
        (tmp_path / name / "x").mkdir(parents=True)
    os.mkfifo(tmp_path / "job-a" / "x" / "fifo")
    assert sweep_stale(tmp_path, "job-") == 2
    assert sorted(os.listdir(tmp_path)) == ["other"]
    assert sweep_stale(tmp_path / "missing", "job-") == 0


def test_a_fifo_left_for_root_does_not_block_a_concurrent_reader(planted):
    done = threading.Event()

    def read() -> None:
        try:
            read_capped(planted, "fifo", 100)
        except OSError:
            pass
        done.set()

    threading.Thread(target=read, daemon=True).start()
    assert done.wait(5.0)
