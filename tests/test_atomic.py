"""detsearch.atomic.replace_directory: the target is the old directory or the whole new one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from detsearch.atomic import replace_directory


def make(path: Path, content: str) -> Path:
    path.mkdir()
    (path / "file.txt").write_text(content)
    return path


def test_replaces_an_existing_directory_and_leaves_nothing_beside_it(tmp_path):
    target = make(tmp_path / "out", "old")
    (target / "stale.txt").write_text("only in the old one")
    replace_directory(make(tmp_path / ".out.tmp", "new"), target)
    assert sorted(p.name for p in target.iterdir()) == ["file.txt"]
    assert (target / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_moves_into_an_absent_target(tmp_path):
    assert replace_directory(make(tmp_path / "tmp", "new"), tmp_path / "out") == tmp_path / "out"
    assert (tmp_path / "out" / "file.txt").read_text() == "new"


def test_a_failed_move_puts_the_old_directory_back(tmp_path, monkeypatch):
    target = make(tmp_path / "out", "old")
    tmp = make(tmp_path / "tmp", "new")
    real = os.replace

    def fail_on_tmp(src, dst):
        if Path(src) == tmp:
            raise OSError("disk full")
        return real(src, dst)

    monkeypatch.setattr(os, "replace", fail_on_tmp)
    with pytest.raises(OSError, match="disk full"):
        replace_directory(tmp, target)
    assert (target / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "tmp"]


def test_refuses_a_missing_source(tmp_path):
    with pytest.raises(FileNotFoundError):
        replace_directory(tmp_path / "absent", tmp_path / "out")
