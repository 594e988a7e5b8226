"""Atomic file writes: everything dplab writes (metrics, PNGs, datasets, checkpoints, logs)
goes through a temporary file in the target folder and a rename, so that a reader, or a run
resumed after a crash, never sees half a file and a failed write leaves the old file intact."""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file"]


def _umask() -> int:
    """The process umask (reading it requires setting it; restore at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", *, fsync: bool = False, **open_kwargs):
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    Args:
        path: the final file; its folder is created if missing.
        mode: ``"wb"`` or ``"w"`` (text; ``open_kwargs`` such as ``newline`` are passed on).
        fsync: flush to disk before the rename (checkpoints).

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_file(target, "w") as f:
        ...     _ = f.write("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
