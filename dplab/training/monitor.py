"""What the trainer records and watches while it runs: the run log and the divergence guard.

:class:`RunLog` keeps ``log.csv`` (one row per logged step and per validation, appended as the
run goes, cut back to the checkpoint's step on resume) and ``log.json`` (a summary rewritten
atomically at every checkpoint). :class:`DivergenceGuard` stops a run whose loss turns
non-finite or leaves its running range by orders of magnitude (as DRBNet's did in the book's
first runs, 0.09 to 2,040 within 21 steps), raising :class:`TrainingDiverged` before the bad
step changes any weight.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from dplab._io import atomic_file, write_json_atomic

__all__ = ["TrainingDiverged", "DivergenceGuard", "RunLog"]


class TrainingDiverged(FloatingPointError):
    """The loss turned non-finite or left its running range by orders of magnitude.

    Raised by :meth:`dplab.training.trainer.Trainer.train_step` before the offending step
    changes any weight, so the last checkpoint (``checkpoints/last.pt``, written before the
    blow-up) is the last good model. Attributes ``step`` (the step that diverged) and ``loss``.
    """

    def __init__(self, message: str, step: int, loss: float):
        super().__init__(message)
        self.step, self.loss = step, loss


class DivergenceGuard:
    """Raise :class:`TrainingDiverged` for a non-finite loss, or for one more than ``factor``
    times the largest of the last ``window`` losses and larger than the first loss it saw
    (the first of the run, or of a resumed segment).

    Args:
        factor: the jump that stops the run (> 1), or None to stop on non-finite losses only.
        window: how many recent losses the jump is measured against.
        skip_non_finite: let a non-finite loss pass (AMP: ``GradScaler`` skips that step and
            lowers its scale).
        checkpoint: the checkpoint the error message points to.

    Example:
        >>> guard = DivergenceGuard(100.0, 2)
        >>> for step, loss in enumerate([1.0, 0.5, 0.4], 1):
        ...     guard.check(loss, step)
        >>> guard.check(500.0, 4)
        Traceback (most recent call last):
        ...
        dplab.training.monitor.TrainingDiverged: training diverged at step 4: the loss 500 is more than 100 times the largest of the previous 2 steps (0.4 to 0.5) and above the run's first loss (1)
    """

    def __init__(self, factor: float | None, window: int, *, skip_non_finite: bool = False, checkpoint=None):
        self.factor, self.window = factor, int(window)
        self.skip_non_finite, self.checkpoint = bool(skip_non_finite), checkpoint
        self.recent: list[float] = []
        self.start: float | None = None

    def check(self, value: float, step: int) -> None:
        """Check the loss ``value`` of ``step``; remember it when it passes."""
        where = (f"; the last checkpoint ({self.checkpoint}) holds the model before it. Lower the "
                 "learning rate (or set grad_clip) and resume from it, or check the data"
                 if self.checkpoint is not None else "")
        if not math.isfinite(value):
            if self.skip_non_finite:
                return
            raise TrainingDiverged(f"training diverged at step {step}: the loss is {value}{where}", step, value)
        recent, factor, window = self.recent, self.factor, self.window
        if self.start is None:
            self.start = value
        # Also above the first loss of the run: a loss that converges towards zero may jump by
        # orders of magnitude at rounding-noise level without anything going wrong.
        if factor is not None and len(recent) >= window and value > factor * max(recent) and value > self.start:
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss {value:.4g} is more than {factor:g} times the "
                f"largest of the previous {window} steps ({min(recent):.4g} to {max(recent):.4g}) and above "
                f"the run's first loss ({self.start:.4g}){where}", step, value)
        recent.append(value)
        del recent[:-window]


def _parse(value: str):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


class RunLog:
    """The trainer's ``log.csv`` and ``log.json`` in ``output_dir``.

    Args:
        output_dir: the run folder.
        metric: the validation metric (its column is ``val_<metric>``).
        write: whether this process writes the files (the main process of a distributed run);
            the others only read them.

    The CSV columns are fixed by the first row written (``kind, step, epoch, lr, loss``, the
    loss terms, ``val_loss, val_<metric>, time_s``), or by the header of an existing log.

    Example:
        >>> import tempfile
        >>> log = RunLog(tempfile.mkdtemp(), metric="psnr")
        >>> log.append({"kind": "train", "step": 1, "epoch": 0, "lr": 0.1, "loss": 0.5, "time_s": 0.01})
        >>> log.append({"kind": "train", "step": 2, "epoch": 0, "lr": 0.1, "loss": 0.25, "time_s": 0.02})
        >>> log.trim(1)
        ([{'kind': 'train', 'step': 1, 'epoch': 0, 'lr': 0.1, 'loss': 0.5, 'time_s': 0.01}], [])
    """

    def __init__(self, output_dir, *, metric: str, write: bool = True):
        self.csv_path = Path(output_dir) / "log.csv"
        self.json_path = Path(output_dir) / "log.json"
        self.metric, self.write = metric, bool(write)
        self.fields: list[str] | None = None

    def clear(self) -> None:
        """Delete both files (the trainer's own files of a run that never checkpointed)."""
        for stale in (self.csv_path, self.json_path):
            stale.unlink(missing_ok=True)

    def trim(self, step: int) -> tuple[list[dict], list[dict]]:
        """On resume: drop the rows after ``step`` (rewriting the CSV) and return the rows kept,
        parsed, as ``(train_rows, val_rows)``."""
        if not self.csv_path.is_file():
            return [], []
        with open(self.csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            rows = [r for r in reader if r.get("step") and int(r["step"]) <= step]
        self.fields = list(fields)
        train, val = [], []
        for r in rows:
            parsed = {k: _parse(v) for k, v in r.items() if v not in ("", None)}
            (val if r.get("kind") == "val" else train).append(parsed)
        if self.write:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            with atomic_file(self.csv_path, "w", newline="") as handle:
                handle.write(buffer.getvalue())
        return train, val

    def append(self, row: dict) -> None:
        """Append one row to ``log.csv`` (writing the header first for a new file)."""
        if not self.write:
            return
        if self.fields is None:
            extra = sorted(k for k in row if k not in ("kind", "step", "epoch", "lr", "loss", "time_s"))
            self.fields = ["kind", "step", "epoch", "lr", "loss", *extra, "val_loss", f"val_{self.metric}", "time_s"]
        new = not self.csv_path.is_file()
        with open(self.csv_path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def write_json(self, summary: dict) -> None:
        """Write ``log.json`` atomically."""
        if self.write:
            write_json_atomic(self.json_path, summary)
