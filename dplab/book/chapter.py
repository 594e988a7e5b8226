"""The small runtime every chapter notebook starts with.

A chapter's ``parameters`` cell holds literals only (``profile``, ``device``, ``data_dir``,
``output_dir``, ``seed``). The next cell builds a :class:`Chapter` from them, which

* checks the profile and picks profile-dependent sizes (:meth:`Chapter.pick`),
* resolves ``device="auto"`` to CUDA when present,
* seeds torch, numpy and Python's ``random`` from ``seed``,
* records numbers the prose cites: :meth:`Chapter.record` glues them for myst-nb and
  keeps them for ``metrics.json``, which :meth:`Chapter.finish` writes atomically.

The regression tests (``tests/test_notebooks.py``) run each chapter in the ``test`` profile
and assert on its ``metrics.json``.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from dplab._io import to_plain, write_json_atomic
from dplab._validate import require_choice, require_number, resolve_device
from dplab.data.manifest import data_root

__all__ = ["PROFILES", "Chapter"]

PROFILES = ("test", "book", "full")


class Chapter:
    """Per-notebook settings, seeding and the metrics record.

    Args:
        name: chapter id, e.g. ``"thin_lens"``.
        profile: ``"test"`` (seconds), ``"book"`` (minutes on a laptop CPU) or ``"full"``
            (the paper's recipe, GPU).
        device: ``"auto"``, ``"cpu"``, ``"cuda"``...
        data_dir: data directory, or None for ``$DPLAB_DATA``.
        output_dir: where ``metrics.json`` and any artefacts go; created if missing.
        seed: seeds torch, numpy and ``random``.

    Example:
        >>> import tempfile
        >>> ch = Chapter("demo", profile="test", output_dir=tempfile.mkdtemp())
        >>> ch.pick(test=2, book=20, full=200)
        2
        >>> ch.record("answer", 42.0, glue=False)
        >>> ch.finish(glue=False)
        >>> sorted(json.loads(ch.metrics_path.read_text())["metrics"])
        ['answer']

    :meth:`record` and :meth:`finish` return None, so that a cell ending with one of them
    shows nothing on the rendered page.
    """

    def __init__(
        self,
        name: str,
        *,
        profile: str = "book",
        device: str = "auto",
        data_dir: str | None = None,
        output_dir: str | os.PathLike = "outputs",
        seed: int = 0,
    ):
        if not isinstance(name, str) or not name:
            raise TypeError(f"name must be a non-empty string, got {name!r}")
        self.name = name
        self.profile = require_choice("profile", profile, PROFILES)
        self.device = resolve_device(device)
        self.data_dir = data_root(data_dir, must_exist=True)
        self.output_dir = Path(output_dir).resolve()
        self.output_dir.mkdir(parents=True, exist_ok=True)
        self.seed = require_number("seed", seed, integer=True)
        self.metrics: dict = {}
        self._started = time.perf_counter()
        self.generator = self.seed_everything()

    def seed_everything(self) -> torch.Generator:
        """Seed the global generators and return a fresh CPU ``torch.Generator``."""
        random.seed(self.seed)
        np.random.seed(self.seed % 2**32)
        torch.manual_seed(self.seed)
        return torch.Generator().manual_seed(self.seed)

    def pick(self, *, test, book, full):
        """Return the value for the current profile."""
        return {"test": test, "book": book, "full": full}[self.profile]

    def record(self, key: str, value, *, glue: bool = True, display=None):
        """Keep ``value`` for ``metrics.json`` and glue it under ``key`` for the prose.

        Args:
            key: a name usable in ``{glue:text}`key``` roles.
            value: a number, tensor, string or a list/dict of them.
            glue: also register it with myst-nb (no-op outside a notebook kernel).
            display: the value to glue instead, for text that is not just the number (a
                number's rounding belongs in the prose: ``{glue:text}`key:.2f```).
        """
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"key must be an identifier-like string, got {key!r}")
        plain = to_plain(value)
        if isinstance(plain, float) and not math.isfinite(plain):
            raise ValueError(f"metric {key!r} is {plain}; a chapter must not report NaN/inf")
        self.metrics[key] = plain
        if glue:
            from myst_nb import glue as _glue

            _glue(key, plain if display is None else display, display=False)

    def glue_figure(self, key: str, fig) -> None:
        """Glue the matplotlib figure ``fig`` under ``key`` without showing it, so that the
        page can show it earlier (a chapter's "result first" section uses
        ``{glue:figure} key``). A no-op outside a notebook kernel, like :meth:`record`."""
        if not isinstance(key, str) or not key.isidentifier():
            raise ValueError(f"key must be an identifier-like string, got {key!r}")
        if not hasattr(fig, "savefig"):
            raise TypeError(f"fig must be a matplotlib Figure, got {type(fig).__name__}")
        from myst_nb import glue as _glue

        _glue(key, fig, display=False)

    @property
    def metrics_path(self) -> Path:
        """Where :meth:`finish` writes the record: ``output_dir/metrics.json``."""
        return self.output_dir / "metrics.json"

    def finish(self, *, glue: bool = True) -> None:
        """Write :attr:`metrics_path` (atomically).

        Also glues ``run_time`` (e.g. ``"12 s (book profile, cpu)"``) so that a chapter's
        overview can state its measured run time instead of a typed-in guess.
        """
        elapsed = time.perf_counter() - self._started
        payload = {
            "chapter": self.name,
            "profile": self.profile,
            "device": str(self.device),
            "seed": self.seed,
            "elapsed_s": round(elapsed, 3),
            "metrics": self.metrics,
        }
        if glue:
            from myst_nb import glue as _glue

            _glue("run_time", f"{elapsed:.0f} s ({self.profile} profile, {self.device.type})", display=False)
        write_json_atomic(self.metrics_path, payload)
