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
import json
import math
from pathlib import Path

from dplab._io import atomic_file, write_json_atomic

__all__ = ["TrainingDiverged", "DivergenceGuard", "RunLog"]


class TrainingDiverged(FloatingPointError):
    """The loss turned non-finite or left its running range by orders of magnitude.

    Raised by :meth:`dplab.training.trainer.Trainer.train_step` before the offending step
    changes any weight, so the last checkpoint (``checkpoints/last.pt``, written before the
    blow-up) is the last good model. Attributes ``step`` (the step that diverged), ``loss`` and
    ``reason`` (what happened, without the advice the message adds).
    """

    def __init__(self, message: str, step: int, loss: float, reason: str | None = None):
        super().__init__(message)
        self.step, self.loss = step, loss
        self.reason = reason or message


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

    def _advice(self) -> str:
        if self.checkpoint is None:
            return ""
        if Path(self.checkpoint).is_file():
            return (f"; the last checkpoint ({self.checkpoint}) holds the model before it. Lower the "
                    "learning rate (or set grad_clip) and resume from it, or check the data")
        return ("; no checkpoint was written before it. Lower the learning rate (or set grad_clip) and "
                "start again, or check the data")

    def check(self, value: float, step: int) -> None:
        """Check the loss ``value`` of ``step``; remember it when it passes."""
        if not math.isfinite(value):
            if self.skip_non_finite:
                return
            reason = f"training diverged at step {step}: the loss is {value}"
            raise TrainingDiverged(reason + self._advice(), step, value, reason)
        recent, factor, window = self.recent, self.factor, self.window
        if self.start is None:
            self.start = value
        # Also above the first loss of the run: a loss that converges towards zero may jump by
        # orders of magnitude at rounding-noise level without anything going wrong.
        if factor is not None and len(recent) >= window and value > factor * max(recent) and value > self.start:
            reason = (f"training diverged at step {step}: the loss {value:.4g} is more than {factor:g} times the "
                      f"largest of the previous {window} steps ({min(recent):.4g} to {max(recent):.4g}) and above "
                      f"the run's first loss ({self.start:.4g})")
            raise TrainingDiverged(reason + self._advice(), step, value, reason)
        recent.append(value)
        del recent[:-window]


def _parse(value: str):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number


_HEAD = ["kind", "step", "epoch", "lr", "loss"]
_SUMMARY_KEYS = {"step", "epoch", "total_steps", "best", "train", "val", "config"}


def _named(err: OSError, path: Path) -> OSError:
    """``err`` naming ``path`` when it names no file (a full disk raises it from a flush)."""
    if err.filename is None and err.errno is not None:
        return OSError(err.errno, err.strerror or "", str(path))
    return err


class RunLog:
    """The trainer's ``log.csv`` and ``log.json`` in ``output_dir``.

    Args:
        output_dir: the run folder.
        metric: the validation metric (its column is ``val_<metric>``).
        write: whether this process writes the files (the main process of a distributed run);
            the others only read them.

    The CSV columns are fixed by the first row written (``kind, step, epoch, lr, loss``, the
    loss terms, ``val_loss, val_<metric>, time_s``), or by the header of an existing log. A
    last row cut short by a crash is dropped on resume (it was written after the checkpoint);
    a log damaged anywhere else is refused with a message naming it.

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

    def _written_here(self, path: Path) -> bool:
        """Whether ``path`` looks like a file of this class (its header or summary keys)."""
        try:
            if path == self.csv_path:
                with open(path, newline="") as handle:
                    head = handle.readline().rstrip("\r\n\0")
                return not head or head.split(",")[:5] == _HEAD
            summary = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            return False
        return isinstance(summary, dict) and _SUMMARY_KEYS <= set(summary)

    def clear(self) -> None:
        """Delete both files: the trainer's own files of a run that never checkpointed.

        Raises:
            FileExistsError: a ``log.csv`` or ``log.json`` that this class did not write
                (another header, or another summary) is there; nothing is deleted.
        """
        present = [p for p in (self.csv_path, self.json_path) if p.is_file()]
        foreign = [p for p in present if not self._written_here(p)]
        if foreign:
            raise FileExistsError(f"{foreign[0]} was not written by dplab's Trainer and there is no checkpoint "
                                  "to resume; move it away, or choose another output folder")
        for stale in present:
            stale.unlink(missing_ok=True)

    def _rows(self) -> tuple[list[str] | None, list[dict]]:
        """Header and rows of ``log.csv``; a last line cut short by a crash is left out."""
        text = self.csv_path.read_bytes().decode("utf-8", "replace").rstrip("\0")
        if not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        lines = [values for values in csv.reader(io.StringIO(text, newline="")) if values]
        if not lines:
            return None, []
        fields, rows = lines[0], []

        def damaged(number: int, what: str) -> ValueError:
            return ValueError(f"{self.csv_path} is damaged at line {number} ({what}); the run's checkpoint is "
                              "intact: move the log away to resume with a new one, or restore it")

        if fields[:5] != _HEAD:
            raise damaged(1, f"header {','.join(fields)[:60]!r}, expected one starting with {','.join(_HEAD)!r}")
        for number, values in enumerate(lines[1:], 2):   # (blank lines left out of the count)
            row = dict(zip(fields, values))
            if len(values) != len(fields) or row["kind"] not in ("train", "val"):
                raise damaged(number, f"{','.join(values)[:60]!r}")
            try:
                int(row["step"])
            except ValueError:
                raise damaged(number, f"step {row['step'][:20]!r}") from None
            rows.append(row)
        return fields, rows

    def trim(self, step: int) -> tuple[list[dict], list[dict]]:
        """On resume: drop the rows after ``step`` (rewriting the CSV) and return the rows kept,
        parsed, as ``(train_rows, val_rows)``.

        Raises:
            ValueError: ``log.csv`` is damaged (the message names the file and the line).
        """
        if not self.csv_path.is_file():
            return [], []
        fields, rows = self._rows()
        if fields is None:                 # empty, or cut within its header: start a new log
            if self.write:
                self.csv_path.unlink()
            return [], []
        rows = [r for r in rows if int(r["step"]) <= step]
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
        try:
            with open(self.csv_path, "a", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=self.fields, extrasaction="ignore")
                if new:
                    writer.writeheader()
                writer.writerow(row)
        except OSError as err:
            named = _named(err, self.csv_path)
            if named is err:
                raise
            raise named from err

    def write_json(self, summary: dict) -> None:
        """Write ``log.json`` atomically."""
        if self.write:
            write_json_atomic(self.json_path, summary)
