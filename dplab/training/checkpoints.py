"""What makes a training run resumable, exactly: atomic checkpoints, the random generators'
states, and a data order that is a function of ``(seed, epoch)`` alone.

Checkpoints are written through a temporary file in the same folder, fsync'ed and renamed
(:func:`save_checkpoint_atomic`), so a reader or a resumed run never sees half of one, and hold
only tensors and plain containers so that they load with ``torch.load(..., weights_only=True)``
(:func:`load_checkpoint`). :func:`rng_state` / :func:`set_rng_state` carry the torch, CUDA,
NumPy and Python generators across a resume. :class:`GlobalBatchSampler` fixes the order of an
epoch by :func:`mix_seed` and gives each of the processes ``torchrun`` started
(:func:`distributed_info`) its slice of every global batch, so the gradient equals the
one-process gradient of the same global batch.
"""

from __future__ import annotations

import os
import random
import tempfile  # noqa: F401  (the doctests use it)
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Sampler

from dplab._io import atomic_file

__all__ = [
    "CHECKPOINT_FORMAT",
    "save_checkpoint_atomic",
    "load_checkpoint",
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

    Example:
        >>> p = save_checkpoint_atomic({"w": torch.ones(2)}, Path(tempfile.mkdtemp()) / "c.pt")
        >>> load_checkpoint(p)["w"].tolist()
        [1.0, 1.0]
    """
    path = Path(path)
    with atomic_file(path, fsync=True) as handle:
        torch.save(payload, handle)
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

    Example:
        >>> p = save_checkpoint_atomic({"step": 3}, Path(tempfile.mkdtemp()) / "c.pt")
        >>> load_checkpoint(p)["step"]
        3
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location=map_location, weights_only=True)


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
