"""Which code made a record: the git commit of the dplab checkout, for cards and benchmark records."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]

#: The checkout's root (the folder that holds ``dplab/``).
_ROOT = Path(__file__).resolve().parents[1]


def git_commit(*, short: bool = False) -> str | None:
    """The commit of the checkout dplab is imported from, or None outside a git checkout.

    Args:
        short: the abbreviated hash (``git rev-parse --short``) instead of the full one.

    Returns:
        The hash, followed by ``" (with uncommitted changes in dplab/)"`` when the package's
        files differ from that commit (the record then does not name the code exactly); None
        when dplab is not a git checkout (an installed wheel) or git is missing.

    Example:
        >>> c = git_commit(short=True)
        >>> c is None or len(c.split()[0]) >= 7
        True
    """
    args = ["git", "rev-parse", "--short", "HEAD"] if short else ["git", "rev-parse", "HEAD"]
    try:
        head = subprocess.run(args, cwd=_ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dplab"], cwd=_ROOT, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + (" (with uncommitted changes in dplab/)" if dirty else "")
