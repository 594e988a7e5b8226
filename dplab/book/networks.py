"""The network chapters' checkpoints in the book's ``outputs/`` folder, for the benchmark.

Each network chapter trains its main model into a folder of its own under ``outputs/``
(:data:`CHAPTER_CHECKPOINTS`) and records the profile it ran in (``metrics.json``,
:class:`dplab.book.chapter.Chapter`). :func:`load_or_train` takes such a checkpoint when one
of the right profile exists (:func:`dplab.models.from_checkpoint`), else trains briefly
(e.g. :func:`dplab.training.brief.train_brief`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from dplab._validate import require_choice
from dplab.models.registry import from_checkpoint

__all__ = ["CHAPTER_CHECKPOINTS", "chapter_profile", "find_checkpoint", "LoadedModel", "load_or_train"]

#: Per benchmark network, the checkpoint paths relative to the book's ``outputs/`` folder where
#: its chapter saves its main model (first found wins).
CHAPTER_CHECKPOINTS = {
    "dpdnet": ("dpdnet/train_dp/checkpoints/last.pt",),
    "rdpd": ("rdpd/train_RDPD/checkpoints/last.pt",),
    "drbnet": ("drbnet/two_stage/checkpoints/last.pt",),
    "mdp": ("mdp/mdp/step2/checkpoints/last.pt",),
}


def chapter_profile(checkpoint) -> str | None:
    """The profile recorded in the ``metrics.json`` of the chapter folder holding
    ``checkpoint`` (nearest parent with one), or None when there is none.

    Example:
        >>> import tempfile
        >>> chapter_profile(Path(tempfile.mkdtemp()) / "x" / "last.pt") is None
        True
    """
    for parent in Path(checkpoint).resolve().parents:
        path = parent / "metrics.json"
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("profile")
            except (OSError, ValueError):
                return None
    return None


def find_checkpoint(method: str, search_dirs: Sequence) -> list[Path]:
    """Existing chapter checkpoints of ``method`` (a key of :data:`CHAPTER_CHECKPOINTS`) under
    the folders ``search_dirs`` (each a book ``outputs/`` folder), in search order.

    Raises:
        ValueError: unknown method.
    """
    require_choice("method", method, tuple(CHAPTER_CHECKPOINTS))
    found = []
    for d in search_dirs:
        for rel in CHAPTER_CHECKPOINTS[method]:
            p = Path(d) / rel
            if p.is_file():
                found.append(p)
    return found


@dataclass
class LoadedModel:
    """Result of :func:`load_or_train`: the network, ``source`` (``"chapter"`` or
    ``"trained"``), the checkpoint it came from, and why chapter checkpoints were skipped."""

    model: torch.nn.Module
    source: str
    checkpoint: Path | None = None
    skipped: list = field(default_factory=list)


def load_or_train(method: str, search_dirs: Sequence, train_fn: Callable[[str], torch.nn.Module], *,
                  profile: str | None = None, map_location="cpu") -> LoadedModel:
    """A chapter's weights when present, else a brief training run.

    Looks for the chapter checkpoints of ``method`` (:func:`find_checkpoint`); a checkpoint
    is used when its chapter ran in ``profile`` (:func:`chapter_profile`; any profile when
    None) and it rebuilds with :func:`dplab.models.from_checkpoint`. Otherwise
    ``train_fn(method)`` is called (e.g. :func:`dplab.training.brief.train_brief` on the
    benchmark's own data).

    Returns:
        :class:`LoadedModel`; ``skipped`` lists ``(path, reason)`` of rejected checkpoints.

    Example:
        >>> from dplab.models import build
        >>> got = load_or_train("dpdnet", [], lambda m: build("dpdnet", widths=(4, 4, 4, 4)))
        >>> got.source, got.checkpoint
        ('trained', None)
    """
    if not callable(train_fn):
        raise TypeError("train_fn must be callable: train_fn(method) -> model")
    skipped = []
    for path in find_checkpoint(method, search_dirs):
        ran = chapter_profile(path)
        if profile is not None and ran != profile:
            skipped.append((str(path), f"chapter ran in the {ran!r} profile, not {profile!r}"))
            continue
        try:
            model = from_checkpoint(path, map_location=map_location)
        except (ValueError, RuntimeError) as exc:
            chapter = CHAPTER_CHECKPOINTS[method][0].split("/")[0]
            skipped.append((str(path), f"{exc} (the chapter that writes it: book/{chapter}.ipynb)"))
            continue
        return LoadedModel(model, "chapter", path, skipped)
    return LoadedModel(train_fn(method).eval(), "trained", None, skipped)
