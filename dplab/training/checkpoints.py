"""What makes a training run resumable, exactly: atomic checkpoints, the random generators'
states, and a data order that is a function of ``(seed, epoch)`` alone.

Checkpoints are written through a temporary file in the same folder, fsync'ed and renamed
(:func:`save_checkpoint_atomic`), so a reader or a resumed run never sees half of one, and hold
only tensors and plain containers so that they load with ``torch.load(..., weights_only=True)``
(:func:`load_checkpoint`, which names a file it cannot read). A full disk surfaces as an
:class:`OSError` (``ENOSPC``) naming the checkpoint, with the previous one intact. :func:`rng_state` / :func:`set_rng_state` carry the torch, CUDA,
NumPy and Python generators across a resume. :class:`GlobalBatchSampler` fixes the order of an
epoch by :func:`mix_seed` and gives each of the processes ``torchrun`` started
(:func:`distributed_info`) its slice of every global batch, so the gradient equals the
one-process gradient of the same global batch.
"""

from __future__ import annotations

import io
import os
import random
import tempfile  # noqa: F401  (the doctests use it)
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from dplab._io import CheckpointError, atomic_file, read_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint_atomic",
    "load_checkpoint",
    "restore_training_state",
    "rng_state",
    "set_rng_state",
    "distributed_info",
    "mix_seed",
    "GlobalBatchSampler",
]

#: Version of the trainer's checkpoint layout (a resume refuses another).
CHECKPOINT_FORMAT = 1


def save_checkpoint_atomic(payload: dict, path: Path | str) -> Path:
    """``torch.save`` through a temporary file in the same folder, fsync, then rename, so a
    reader (or a resumed run after a crash) never sees half a checkpoint.

    The bytes are made in memory first and then written, so that a full disk raises the
    operating system's error (``OSError`` ``ENOSPC``, ``filename`` the checkpoint) rather
    than an error of torch's zip writer; the file is the same as ``torch.save(payload, path)``.

    Example:
        >>> p = save_checkpoint_atomic({"w": torch.ones(2)}, Path(tempfile.mkdtemp()) / "c.pt")
        >>> load_checkpoint(p)["w"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    with atomic_file(path, fsync=True) as handle:
        handle.write(buffer.getbuffer())
    return path


def load_checkpoint(path: Path | str, map_location="cpu") -> dict:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    Args:
        path: a file written by :class:`dplab.training.trainer.Trainer` or :func:`save_checkpoint_atomic`.
        map_location: device for the tensors.

    Returns:
        The checkpoint dict; a trainer checkpoint has ``"model"`` (a state dict), ``"step"``,
        ``"optimizer"``, ``"scheduler"``, ``"rng"``, ``"best"`` and ``"config"``, and
        ``"model_spec"`` when the model was made by :func:`dplab.models.build` (see
        :func:`dplab.models.from_checkpoint`).

    Raises:
        FileNotFoundError: no such file.
        dplab._io.CheckpointError: the file is empty, truncated or not a checkpoint (the
            message names it).

    Example:
        >>> p = save_checkpoint_atomic({"step": 3}, Path(tempfile.mkdtemp()) / "c.pt")
        >>> load_checkpoint(p)["step"]
        3
    """
    return read_checkpoint(path, map_location=map_location)


def _first_line(err: BaseException) -> str:
    lines = [t.strip() for t in str(err).splitlines() if t.strip()]
    return "; ".join(lines[:2])[:300]


def restore_training_state(state, source, *, model, optimizer, scheduler, steps_per_epoch: int,
                           model_spec: dict | None = None) -> None:
    """Check a trainer checkpoint against the run that resumes it, then load its model,
    optimizer and scheduler states (the rest is the trainer's).

    Args:
        state: what :func:`load_checkpoint` returned.
        source: the file, for the messages.
        model, optimizer, scheduler: the resuming run's.
        steps_per_epoch: the resuming run's (the data order depends on it).
        model_spec: the resuming model's spec (:func:`dplab.models.registry.model_spec`), or
            None to skip that check.

    Raises:
        dplab._io.CheckpointError: not a trainer checkpoint of :data:`CHECKPOINT_FORMAT`, an
            entry missing, another model spec, weights of other shapes, or other trained
            parameters; each message names ``source`` and says what to do.
        ValueError: another number of steps per epoch (other data or batch size).

    Example:
        >>> net = torch.nn.Linear(2, 2)
        >>> restore_training_state({"format": 0}, "c.pt", model=net, optimizer=None, scheduler=None,
        ...                        steps_per_epoch=1)
        Traceback (most recent call last):
        ...
        dplab._io.CheckpointError: c.pt is not a checkpoint of dplab's Trainer (format 0, expected 1); use another output folder
    """
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{source} is not a checkpoint of dplab's Trainer (format {found!r}, expected "
                              f"{CHECKPOINT_FORMAT}); use another output folder")
    missing = [k for k in ("step", "steps_per_epoch", "model", "optimizer", "scheduler", "rng", "best")
               if k not in state]
    if missing:
        raise CheckpointError(f"{source} lacks {', '.join(missing)}: it is not a complete trainer checkpoint; "
                              "use another output folder")
    if state["steps_per_epoch"] != steps_per_epoch:
        raise ValueError(
            f"{source} has {state['steps_per_epoch']} steps per epoch, this run {steps_per_epoch}: "
            "the training set or batch size changed, so the data order cannot be resumed"
        )
    spec = state.get("model_spec")
    if spec is not None and model_spec is not None and spec != model_spec:
        raise CheckpointError(f"{source} holds {spec}, this run builds {model_spec}: it was written with other "
                              "model options; use another output folder, or the options it was trained with")
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:                   # missing/unexpected keys, size mismatches
        raise CheckpointError(f"{source} holds another network than this run's ({_first_line(err)}); use "
                              "another output folder, or the options it was trained with") from None
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:                     # other parameter groups: other parameters trained
        raise CheckpointError(f"{source} was trained with another set of parameters ({_first_line(err)}); "
                              "use another output folder") from None
    scheduler.load_state_dict(state["scheduler"])


def rng_state() -> dict:
    """The states of every random generator a run draws from (torch, CUDA, NumPy, Python), as
    tensors and plain containers (loadable with ``weights_only=True``).

    Example:
        >>> sorted(rng_state())
        ['cuda', 'numpy', 'python', 'torch']
    """
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    """Restore the generators from :func:`rng_state` (on the CPU whatever ``map_location`` was).

    Example:
        >>> state = rng_state(); a = torch.rand(2); set_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved them to the GPU
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def distributed_info() -> dict:
    """``{"world_size", "rank", "local_rank"}`` from the environment ``torchrun`` sets.

    Example:
        >>> sorted(distributed_info())
        ['local_rank', 'rank', 'world_size']
    """
    return {
        "world_size": int(os.environ.get("WORLD_SIZE", "1")),
        "rank": int(os.environ.get("RANK", "0")),
        "local_rank": int(os.environ.get("LOCAL_RANK", "0")),
    }


class GlobalBatchSampler(Sampler):
    """Batches of one process: a permutation fixed by ``(seed, epoch)`` alone, cut into
    global batches of ``global_batch`` items, each split into ``world`` equal per-process
    slices; iteration starts at batch ``start`` (a resumed epoch).

    Example:
        >>> list(GlobalBatchSampler(8, 4, 2, 1, 0, 0, 0, shuffle=False))
        [[2, 3], [6, 7]]
    """

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, epoch: int, start: int, shuffle: bool):
        self.n, self.global_batch, self.world, self.rank = n, global_batch, world, rank
        self.seed, self.epoch, self.start, self.shuffle = seed, epoch, start, shuffle
        self.per_rank = global_batch // world
        self.steps = n // global_batch

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(mix_seed(self.seed, self.epoch))).tolist()
        else:
            order = list(range(self.n))
        for i in range(self.start, self.steps):
            begin = i * self.global_batch + self.rank * self.per_rank
            yield order[begin : begin + self.per_rank]


def mix_seed(seed: int, epoch: int) -> int:
    """A 64-bit seed determined by ``(seed, epoch)`` (NumPy ``SeedSequence``): the data order
    and the DataLoader's generator of an epoch.

    Example:
        >>> mix_seed(0, 1) == mix_seed(0, 1) != mix_seed(0, 2)
        True
    """
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch), 0x5EED]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])
