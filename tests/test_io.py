"""dplab._io.atomic_file: all-or-nothing writes with ordinary permissions."""

import os
import stat

import pytest

from dplab._io import atomic_file


def test_replaces_file_only_on_success(tmp_path):
    target = tmp_path / "sub" / "a.txt"
    with atomic_file(target, "w") as f:
        f.write("first")
    with pytest.raises(RuntimeError):
        with atomic_file(target, "w") as f:
            f.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["a.txt"]  # no temporary left behind


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o027)
    try:
        with atomic_file(tmp_path / "b.bin") as f:
            f.write(b"x")
    finally:
        os.umask(old)
    # mkstemp alone would give 0o600; a plain open() gives 0o666 & ~umask.
    assert stat.S_IMODE((tmp_path / "b.bin").stat().st_mode) == 0o640
