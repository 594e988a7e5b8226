"""Atomic file writes: everything dplab writes (metrics, PNGs, datasets, checkpoints, logs)
goes through a temporary file in the target folder and a rename, so that a reader, or a run
resumed after a crash, never sees half a file and a failed write leaves the old file intact."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "write_json_atomic", "to_plain"]


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


def write_json_atomic(path: Path | str, payload: dict) -> Path:
    """Write JSON (indented, sorted keys) through :func:`atomic_file`, so a reader never sees half a file."""
    path = Path(path)
    with atomic_file(path, "w") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.write("\n")
    return path


def to_plain(value, *, unknown: str = "keep"):
    """A copy of ``value`` made of plain Python containers and scalars, for JSON files and for
    checkpoints that ``torch.load(..., weights_only=True)`` must read.

    Dicts keep their structure (keys become strings), lists and tuples become lists, tensors
    and numpy values become Python numbers (or nested lists). Anything else is handled as
    ``unknown`` says: ``"keep"`` returns it as is, ``"repr"`` records its ``repr``, ``"raise"``
    refuses it with a :class:`TypeError`.

    Example:
        >>> import numpy as np, torch
        >>> to_plain({"a": (1, 2), 3: torch.tensor(0.5), "b": np.float32(2.0)})
        {'a': [1, 2], '3': 0.5, 'b': 2.0}
        >>> to_plain({"f": print}, unknown="repr")
        {'f': '<built-in function print>'}
    """
    if unknown not in ("keep", "repr", "raise"):
        raise ValueError(f"unknown must be 'keep', 'repr' or 'raise', got {unknown!r}")
    return _plain(value, unknown)


def _plain(value, unknown):
    import numpy as np
    import torch

    if isinstance(value, dict):
        return {str(k): _plain(v, unknown) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, unknown) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    if unknown == "repr":
        return repr(value)
    if unknown == "raise":
        raise TypeError(f"{value!r} ({type(value).__name__}) cannot be recorded; pass numbers, strings, "
                        "booleans, None or lists/tuples/dicts of them")
    return value
