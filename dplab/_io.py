"""Files: atomic writes, a lock on an output folder, and checkpoints read safely.

Everything dplab writes (metrics, PNGs, datasets, checkpoints, logs) goes through a temporary
file in the target folder and a rename (:func:`atomic_file`), so that a reader, or a run
resumed after a crash, never sees half a file and a failed write leaves the old file intact.
A write that fails for want of room or permission raises an :class:`OSError` that names the
file it was writing.

The commands that fill a folder (``python -m dplab synth``, ``python -m dplab train``) hold
:func:`folder_lock` on it for their whole run: a second run on the same folder is refused at
once with :class:`FolderInUseError`, which names the holder's pid. Only the holder of the lock
removes the temporary files that a killed run left behind (:func:`remove_stale_temporaries`),
so a live run's files are never touched.

:func:`read_checkpoint` loads a ``.pt`` file with ``torch.load(..., weights_only=True)`` (no
code in the file runs) and turns the errors of an empty, truncated or foreign file into a
:class:`CheckpointError` that names it.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_file", "write_json_atomic", "to_plain", "LOCK_NAME", "FolderInUseError", "folder_lock",
           "remove_stale_temporaries", "CheckpointError", "read_checkpoint"]

#: Name of the lock file :func:`folder_lock` keeps in the folder while it is held.
LOCK_NAME = ".dplab.lock"
#: errno values of a write that failed for want of room or permission (relabelled with the file).
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM}
#: Folders this process holds: resolved path -> [file descriptor, depth].
_HELD: dict[str, list[int]] = {}


def _umask() -> int:
    """The process umask (reading it requires setting it; restore at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _named(err: OSError, path: Path) -> OSError:
    """``err`` with ``path`` as its file name when it lacks one (or names a temporary file)."""
    temporary = err.filename is not None and Path(err.filename).name.startswith(f".{path.name}.")
    if err.errno in _NO_ROOM and (err.filename is None or temporary):
        named = OSError(err.errno, err.strerror or os.strerror(err.errno), str(path))
        named.__cause__ = err
        return named
    return err


@contextmanager
def atomic_file(path: Path | str, mode: str = "wb", *, fsync: bool = False, **open_kwargs):
    """Open a temporary file beside ``path``; on success rename it over ``path``.

    Args:
        path: the final file; its folder is created if missing.
        mode: ``"wb"`` or ``"w"`` (text; ``open_kwargs`` such as ``newline`` are passed on).
        fsync: flush to disk before the rename (checkpoints).

    Raises:
        OSError: the write failed (a full disk: ``ENOSPC``; a read-only folder: ``EACCES`` or
            ``EROFS``); ``filename`` is ``path``. The temporary file is removed and an
            existing ``path`` is left as it was.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "a.txt"
        >>> with atomic_file(target, "w") as f:
        ...     _ = f.write("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, mode, **open_kwargs) as handle:
            yield handle
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        # mkstemp creates the file 0600; give it the permissions a plain open() would.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as err:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        named = _named(err, path)
        if named is err:
            raise
        raise named from err
    except BaseException:
        if tmp is not None:
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
        >>> to_plain({"a": (1, 2), 3: torch.tensor(0.5), "b": np.float32(2.0), "c": np.float64(1.5)})
        {'a': [1, 2], '3': 0.5, 'b': 2.0, 'c': 1.5}
        >>> type(to_plain(np.float64(1.5))).__name__
        'float'
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
    # numpy scalars before the plain types: np.float64 is a float subclass whose repr
    # ("np.float64(1.1)") would reach the page through myst-nb's glue
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist() if isinstance(value, np.ndarray) else value.item()
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return value.item() if value.numel() == 1 else value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if unknown == "repr":
        return repr(value)
    if unknown == "raise":
        raise TypeError(f"{value!r} ({type(value).__name__}) cannot be recorded; pass numbers, strings, "
                        "booleans, None or lists/tuples/dicts of them")
    return value


# ----------------------------------------------------------------------------- folder lock
class FolderInUseError(RuntimeError):
    """Another process holds :func:`folder_lock` on ``folder``.

    Attributes ``folder`` and ``holder`` (what the holder recorded: ``pid``, ``host``,
    ``command``, ``since``; empty when it could not be read).
    """

    def __init__(self, folder: Path | str, holder: dict):
        self.folder, self.holder = Path(folder), dict(holder)
        who = f"pid {holder.get('pid', 'unknown')}"
        if holder.get("host") and holder.get("host") != socket.gethostname():
            who += f" on {holder['host']}"
        if holder.get("command"):
            who += f": {holder['command']}"
        if holder.get("since"):
            who += f", since {holder['since']}"
        super().__init__(f"{self.folder} is in use by another run ({who}); wait for it to finish, "
                         "or use another folder")


def _holder(fd: int) -> dict:
    """What the holder of the lock file ``fd`` recorded (it may be writing it: retry briefly)."""
    for _ in range(20):
        data = os.pread(fd, 65536, 0)
        try:
            record = json.loads(data.decode("utf-8", "replace")) if data else None
        except ValueError:
            record = None
        if isinstance(record, dict):
            return record
        time.sleep(0.05)
    return {}


def _same_file(path: Path, fd: int) -> bool:
    try:
        here, mine = os.stat(path), os.fstat(fd)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _acquire(folder: Path, command: str | None) -> int:
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} exists and is not a folder")
    path = folder / LOCK_NAME
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except FileNotFoundError:          # the folder went away meanwhile: make it again
            continue
        except OSError as err:
            if err.errno in _NO_ROOM:      # name the folder, not the lock file
                raise OSError(err.errno, err.strerror, str(folder)) from err
            raise
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise FolderInUseError(folder, holder) from None
        except BaseException:
            os.close(fd)
            raise
        if _same_file(path, fd):
            break
        os.close(fd)                       # the last holder removed it on release: lock the new file
    record = {"pid": os.getpid(), "host": socket.gethostname(),
              "command": command or " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
              "since": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError as err:
        _release(folder, fd)
        raise OSError(err.errno, err.strerror, str(path)) from err
    return fd


def _release(folder: Path, fd: int) -> None:
    """Remove the lock file while still holding it (a process that opened it meanwhile sees it
    gone and retries on a new one), then let go."""
    path = folder / LOCK_NAME
    try:
        if _same_file(path, fd):
            path.unlink(missing_ok=True)
    except OSError:
        pass                               # a read-only folder now: the lock goes with the descriptor
    finally:
        os.close(fd)


@contextmanager
def folder_lock(folder: Path | str, command: str | None = None):
    """Hold an exclusive lock on ``folder`` (created if missing) for the ``with`` block.

    The lock is ``fcntl.flock`` on the file :data:`LOCK_NAME` in the folder, which records the
    holder's pid, host, command and start time; the kernel releases it when the process ends,
    however it ends (a SIGKILL included), so a lock is never stale. The file is removed on
    release. Nested calls of one process on the same folder share the lock.

    Args:
        folder: the folder to hold.
        command: what the holder is doing, for the refusal message (default ``sys.argv``).

    Yields:
        The resolved folder.

    Raises:
        FolderInUseError: another process holds it (raised at once, no waiting).
        NotADirectoryError: ``folder`` is a file.
        OSError: the folder or its lock file cannot be written (``filename`` is the folder).

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> with folder_lock(out, "example") as held:
        ...     (held / LOCK_NAME).is_file()
        True
        >>> (out / LOCK_NAME).exists()
        False
    """
    folder = Path(folder).expanduser().resolve()
    key = str(folder)
    if key in _HELD:
        _HELD[key][1] += 1
        try:
            yield folder
        finally:
            _HELD[key][1] -= 1
        return
    fd = _acquire(folder, command)
    _HELD[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _HELD[key]
        _release(folder, fd)


def _holds(folder: Path) -> bool:
    return any(Path(k) == folder or Path(k) in folder.parents for k in _HELD)


def remove_stale_temporaries(folder: Path | str, names=None, *, recursive: bool = False) -> list[Path]:
    """Remove the temporary files (``.<name>.*.tmp``) that :func:`atomic_file` leaves when its
    process dies mid-write (a SIGKILL, a power cut).

    Only the holder of :func:`folder_lock` on ``folder`` (or on a folder above it) may call
    this: the lock guarantees that no live run is writing them.

    Args:
        folder: where to look.
        names: remove only the temporaries of these file names (e.g. ``["last.pt"]``); None:
            all of them.
        recursive: also look in sub-folders.

    Returns:
        The removed files, sorted.

    Raises:
        RuntimeError: this process does not hold the lock.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> _ = (out / ".last.pt.k2j4h1x0.tmp").write_bytes(b"half")
        >>> with folder_lock(out, "example"):
        ...     [p.name for p in remove_stale_temporaries(out, ["last.pt"])]
        ['.last.pt.k2j4h1x0.tmp']
    """
    folder = Path(folder).expanduser().resolve()
    if not _holds(folder):
        raise RuntimeError(f"remove_stale_temporaries({str(folder)!r}) needs folder_lock on it: without the "
                           "lock, another run may be writing these files")
    if not folder.is_dir():
        return []
    found = folder.rglob(".*.tmp") if recursive else folder.glob(".*.tmp")
    prefixes = None if names is None else tuple(f".{n}." for n in names)
    removed = []
    for p in found:
        if p.is_file() and (prefixes is None or p.name.startswith(prefixes)):
            p.unlink(missing_ok=True)
            removed.append(p)
    return sorted(removed)


# ----------------------------------------------------------------------------- checkpoints
class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or does not fit what it is loaded into; the message
    names the file and says what to do."""


def _reason(err: BaseException) -> str:
    """A short why from a ``torch.load`` error (its messages run to paragraphs)."""
    text = str(err)
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1]
    line = next((t.strip() for t in text.splitlines() if t.strip()), "")
    line = line.split(". This is an internal")[0]
    return f"{type(err).__name__}: {line[:160]}" if line else type(err).__name__


def read_checkpoint(path: Path | str, map_location="cpu"):
    """``torch.load(path, map_location, weights_only=True)`` with errors that name the file.

    Args:
        path: a ``.pt`` file.
        map_location: device of the loaded tensors.

    Returns:
        What the file holds (tensors and plain containers only).

    Raises:
        FileNotFoundError: no such file.
        IsADirectoryError: ``path`` is a folder.
        CheckpointError: the file is empty, truncated, not a PyTorch file, or holds objects
            that ``weights_only=True`` refuses.

    Example:
        >>> import tempfile, torch
        >>> p = Path(tempfile.mkdtemp()) / "c.pt"
        >>> torch.save({"step": 3}, p)
        >>> read_checkpoint(p)
        {'step': 3}
        >>> _ = p.write_bytes(b"")
        >>> read_checkpoint(p)
        Traceback (most recent call last):
        ...
        dplab._io.CheckpointError: ... cannot be read as a PyTorch checkpoint (EOFError): ...
    """
    import pickle

    import torch

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "a folder, not a checkpoint file", str(path))
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        with warnings.catch_warnings():    # a foreign pickle: the error below says it all
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(path, map_location=map_location, weights_only=True)
    except OSError as err:                 # a truncated archive can fail a seek with EINVAL
        if err.errno != errno.EINVAL:
            raise
        why = _reason(err)
    except RuntimeError as err:            # not a zip archive, or a cut one
        if "zip archive" not in str(err) and "mmap" not in str(err):
            raise
        why = _reason(err)
    except (EOFError, KeyError, pickle.UnpicklingError) as err:
        why = _reason(err)
    raise CheckpointError(f"{path} cannot be read as a PyTorch checkpoint ({why}): the file is empty, cut "
                          "short (a full disk, an interrupted copy) or not a checkpoint that "
                          "torch.load(weights_only=True) accepts; check the path, or restore the file")
