"""``write_text_atomic``: the old file or the new one, never half; never through a link."""

from __future__ import annotations

import os

import pytest

import ntkmonitor
from ntkmonitor._files import write_text_atomic


def test_replaces_a_link_instead_of_writing_through_it(tmp_path):
    (tmp_path / "victim.txt").write_text("precious")
    os.symlink(tmp_path / "victim.txt", tmp_path / "report.html")
    write_text_atomic(tmp_path / "report.html", "<html></html>")
    assert (tmp_path / "victim.txt").read_text() == "precious"
    assert not (tmp_path / "report.html").is_symlink()
    assert (tmp_path / "report.html").read_text() == "<html></html>"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    (tmp_path / "report.json").write_text("old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_text_atomic(tmp_path / "report.json", "new")
    assert (tmp_path / "report.json").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_a_directory_in_the_way_is_named(tmp_path):
    (tmp_path / "report.json").mkdir()
    with pytest.raises(ntkmonitor.InputError, match="is a directory"):
        write_text_atomic(tmp_path / "report.json", "{}")


def test_new_files_get_the_usual_permissions(tmp_path):
    path = write_text_atomic(tmp_path / "a.json", "{}")
    mask = os.umask(0)
    os.umask(mask)
    assert (path.stat().st_mode & 0o777) == (0o666 & ~mask)
