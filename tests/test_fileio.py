"""Atomic writes keep what the user had, and give the file the permissions a plain write would."""

from __future__ import annotations

import os
import stat

import pytest

from tlplan.errors import BadInputError
from tlplan.fileio import write_atomic, write_atomic_with


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_file_gets_the_umask_mode(tmp_path) -> None:
    umask = os.umask(0o022)
    try:
        write_atomic(tmp_path / "a.txt", "hello")
        (tmp_path / "plain.txt").write_text("hello")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == _mode(tmp_path / "plain.txt") == 0o644  # not mkstemp's 0600


def test_replaced_file_keeps_its_mode(tmp_path) -> None:
    path = tmp_path / "b.txt"
    path.write_text("old")
    path.chmod(0o640)
    write_atomic(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path) -> None:
    path = tmp_path / "c.txt"
    path.write_text("old")

    def boom(f):
        f.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomic_with(path, boom)
    assert path.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]
    with pytest.raises(BadInputError, match="directory"):
        write_atomic(tmp_path, "x")
