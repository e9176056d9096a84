"""rundir.atomic_dir: a folder appears whole or not at all, and no temporary folder is left behind."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from robustscale.rundir import atomic_dir


class Boom(Exception):
    pass


def _tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def _fill(tmp: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (tmp / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp / name).write_text(text)


def test_a_new_folder_appears_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.")
        _fill(tmp, {"a.json": "1", "sub/b.txt": "2"})
        assert not target.exists()  # nothing at the target until the block ends
    assert _tree(target) == {"a.json": "1", "sub/b.txt": "2"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failing_fill_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(Boom):
        with atomic_dir(target) as tmp:
            _fill(tmp, {"a.json": "1", "sub/b.txt": "2"})
            raise Boom
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("replace", [False, True])
def test_a_failing_fill_leaves_an_existing_folder_as_it_was(tmp_path, replace):
    target = tmp_path / "out"
    _fill(target, {"a.json": "old", "keep.txt": "k"})
    with pytest.raises(Boom):
        with atomic_dir(target, replace=replace) as tmp:
            _fill(tmp, {"a.json": "new"})
            raise Boom
    assert _tree(target) == {"a.json": "old", "keep.txt": "k"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_replace_swaps_the_whole_folder(tmp_path):
    target = tmp_path / "out"
    _fill(target, {"a.json": "old", "keep.txt": "k"})
    with atomic_dir(target, replace=True) as tmp:
        _fill(tmp, {"a.json": "new"})
    assert _tree(target) == {"a.json": "new"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # the old folder moved aside is gone too


def test_without_replace_entries_are_merged(tmp_path):
    target = tmp_path / "out"
    _fill(target, {"a.json": "old", "keep.txt": "k"})
    with atomic_dir(target) as tmp:
        _fill(tmp, {"a.json": "new", "b.json": "b"})
    assert _tree(target) == {"a.json": "new", "b.json": "b", "keep.txt": "k"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_mkdir_and_the_usual_permissions(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    mask = os.umask(0o022)
    try:
        with atomic_dir(target, mkdir=True) as tmp:
            _fill(tmp, {"x": "1"})
    finally:
        os.umask(mask)
    # The folder is made with mkdir, not mkdtemp (0700): others may read an export or a download.
    assert stat.S_IMODE(target.stat().st_mode) == 0o755
