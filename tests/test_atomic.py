"""atomic_file / atomic_write: a failed write keeps the old file and leaves no temporary."""

from __future__ import annotations

import pytest

from jax_musicvae.atomic import atomic_file, atomic_write


def test_write_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "new" / "report.json"
    assert atomic_write(path, "{}\n") == path and path.read_text() == "{}\n"
    atomic_write(path, b"[]")
    assert path.read_bytes() == b"[]"
    assert sorted(p.name for p in path.parent.iterdir()) == ["report.json"]


def test_an_error_keeps_the_old_file(tmp_path):
    path = atomic_write(tmp_path / "table.md", "old")
    with pytest.raises(RuntimeError, match="interrupted"), atomic_file(path, "w") as handle:
        handle.write("half of the new")
        raise RuntimeError("interrupted")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["table.md"]
