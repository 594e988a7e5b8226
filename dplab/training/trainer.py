"""One trainer for every network chapter (DPDNet, RDPD, DRBNet, MDP).

:class:`Trainer` runs a model over a map-style dataset of sample dicts. The model's forward is
generic: by default it is called as ``model(batch)`` with the batch dict (``"combined"``,
``"left"``, ``"right"``, ``"sharp"``, ... as ``(B, C, H, W)`` tensors), and any other calling
convention is a ``forward(model, batch)`` function. The loss is a callable
``loss_fn(prediction, batch)`` returning a scalar tensor, or a dict with a ``"loss"`` entry plus
named terms that are logged.

What it does:

* epochs and/or a step budget; learning-rate schedules per epoch or per step: constant,
  ``"step"`` (multiply by ``gamma`` every ``every`` epochs: DPDNet, RDPD, MDP) and
  ``"linear_decay"`` (constant, then linear towards zero: DRBNet, after Zhu et al. 2017);
* Adam or RAdam (DRBNet, Sec. 5.1), gradient clipping, AMP (float16 + GradScaler) on CUDA only,
  optional ``torch.compile``;
* a ``tqdm`` progress bar, a CSV log (``log.csv``) and a JSON summary (``log.json``);
* checkpoints written atomically (temporary file, fsync, rename) every ``checkpoint_every``
  steps and at the end, holding only tensors and plain containers so that they load with
  ``torch.load(..., weights_only=True)``;
* exact resume: model, optimizer, scheduler, AMP scaler, RNG states (torch, CUDA, NumPy,
  Python) and the position in the data order. The data order is a function of
  ``(seed, epoch)`` alone, and datasets that have ``set_epoch`` (the patch samplers of
  :mod:`dplab.data.patches`) are told the epoch, so a resumed run sees the same batches;
* validation every ``val_every`` epochs, keeping the best model in ``best.pt``;
* :class:`~torch.nn.parallel.DistributedDataParallel` when started by ``torchrun`` (NCCL on
  CUDA, gloo on CPU). ``batch_size`` is the *global* batch; each of the ``W`` processes takes
  ``batch_size / W`` samples of every global batch, so the gradient equals the one-process
  gradient of the same global batch.

Recipes of the papers are plain dicts in :data:`RECIPES`; :func:`recipe` copies one and
applies overrides.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import random
import tempfile  # noqa: F401  (the doctests use it)
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from dplab._io import atomic_file, to_plain, write_json_atomic
from dplab._validate import require_choice, require_number, require_positive

__all__ = [
    "TrainingDiverged",
    "DEFAULTS",
    "RECIPES",
    "recipe",
    "lr_factor",
    "Trainer",
    "load_checkpoint",
    "save_checkpoint_atomic",
    "distributed_info",
    "concat_inputs",
]

CHECKPOINT_FORMAT = 1


class TrainingDiverged(FloatingPointError):
    """The loss turned non-finite or left its running range by orders of magnitude.

    Raised by :meth:`Trainer.train_step` before the offending step changes any weight, so the
    last checkpoint (``checkpoints/last.pt``, written before the blow-up) is the last good
    model. Attributes ``step`` (the step that diverged) and ``loss``.
    """

    def __init__(self, message: str, step: int, loss: float):
        super().__init__(message)
        self.step, self.loss = step, loss

#: Trainer settings and their defaults. ``epochs`` or ``max_steps`` must be set.
DEFAULTS: dict = {
    "epochs": None,  # number of passes over the training data
    "max_steps": None,  # optimizer steps (stops at whichever of the two comes first)
    "batch_size": 8,  # global batch (summed over processes)
    "shuffle": True,
    "optimizer": "adam",  # "adam" | "radam"
    "lr": 1e-4,
    "betas": (0.9, 0.999),
    "eps": 1e-8,
    "weight_decay": 0.0,
    "schedule": {"kind": "constant"},  # see lr_factor
    "grad_clip": None,  # max global gradient norm, or None
    "amp": "auto",  # "auto" (on for CUDA) | True | False
    "compile": False,  # torch.compile the model
    "seed": 0,  # data order, patch sampling, global RNG at a fresh start
    "num_workers": 0,
    "device": "auto",
    "log_every": 1,  # steps between log rows
    "checkpoint_every": 100,  # steps between checkpoints (0: only at the end)
    "val_every": 1,  # epochs between validations (0: only at the end)
    "val_batch_size": 1,
    "best_metric": "psnr",  # "psnr" (or whatever metric_fn measures; higher is better) | "loss"
    "progress": True,
    "find_unused_parameters": False,
    # Divergence guard: stop when the loss is non-finite, or (after `divergence_window` steps)
    # exceeds `divergence_factor` times the largest loss of the last `divergence_window` steps
    # and the run's first loss.
    "divergence_factor": 100.0,  # None: never stop on a large loss (non-finite still stops)
    "divergence_window": 50,
}
# Keys a recipe may carry for the chapter (data and loss settings); the trainer ignores them.
_INFO_KEYS = ("paper", "data", "loss", "notes")

#: The papers' training recipes (REFERENCE_FACTS and the papers' implementation sections).
RECIPES: dict = {
    "dpdnet": {
        "paper": "Abuolaim and Brown, ECCV 2020, Sec. 4 (and DPDNet/config.py)",
        "optimizer": "adam",
        "lr": 2e-5,
        "schedule": {"kind": "step", "every": 60, "gamma": 0.5},
        "epochs": 200,
        "batch_size": 5,
        "data": {"patch_size": 512, "overlap": 0.6, "drop_fraction": 0.3, "dropout": 0.4},
        "loss": {"kind": "mse"},
    },
    "rdpd": {
        "paper": "Abuolaim et al., ICCV 2021, Sec. 5 (and rdpd_code/config.py)",
        "optimizer": "adam",
        "lr": 5e-5,
        "schedule": {"kind": "step", "every": 40, "gamma": 0.5},
        "epochs": 140,
        "batch_size": 8,
        "data": {"patch_size": 512, "frames": 4, "video_batch": 2, "image_batch": 8, "radial": True, "filter_extra": 3},
        "loss": {"kind": "mse+edge", "edge_weight_x": 0.03, "edge_weight_y": 0.02},
        "notes": "odd iterations synthetic video clips, even iterations real single images",
    },
    "drbnet_lfdof": {
        "paper": "Ruan et al., CVPR 2022, Sec. 5.1 (stage 1 on LFDOF)",
        "optimizer": "radam",
        "lr": 1e-4,
        "betas": (0.9, 0.99),
        "schedule": {"kind": "linear_decay", "constant": 100, "decay": 100},
        "epochs": 200,
        "batch_size": 8,
        "data": {"patch_size": 320, "augment": ["gaussian_noise", "grayscale", "scaling"]},
        "loss": {"kind": "l1"},
    },
    "drbnet_dpdd": {
        "paper": "Ruan et al., CVPR 2022, Sec. 5.1 (stage 2 fine-tuning on DPDD)",
        "optimizer": "radam",
        "lr": 1e-5,
        "betas": (0.9, 0.99),
        "schedule": {"kind": "linear_decay", "constant": 50, "decay": 50},
        "epochs": 100,
        "batch_size": 8,
        "data": {"patch_size": 320},
        "loss": {"kind": "l1+vgg"},
    },
    "mdp_step1": {
        "paper": "Abuolaim et al., WACV 2022, Sec. 4.1 (step 1: DP-view synthesis on DLDP)",
        "optimizer": "adam",
        "lr": 3e-4,
        "schedule": {"kind": "step", "every": 8, "gamma": 0.5},
        "epochs": 60,
        "batch_size": 8,
        "data": {"patch_size": 512, "dataset": "dldp"},
        "loss": {"kind": "mdp_step1", "weights_code": [1, 1, 0.2, 0.2]},
        "notes": "the sharp-image decoder is frozen (pass only trainable parameters)",
    },
    "mdp_step2": {
        "paper": "Abuolaim et al., WACV 2022, Sec. 4.1 (step 2: joint training on DPDD)",
        "optimizer": "adam",
        "lr": 6e-4,
        "schedule": {"kind": "step", "every": 8, "gamma": 0.5},
        "epochs": 80,
        "batch_size": 8,
        "data": {"patch_size": 512, "dataset": "dpdd"},
        "loss": {"kind": "mdp_step2", "weights_code": [1, 0.2, 0.2, 0.2], "lambdas_paper": [0.8, 0.5, 0.5]},
    },
}


def recipe(name: str, **overrides) -> dict:
    """A deep copy of a paper's recipe with ``overrides`` applied (e.g. a shorter run).

    Args:
        name: a key of :data:`RECIPES`.
        **overrides: settings that replace the recipe's.

    Returns:
        A plain dict for :class:`Trainer`.

    Raises:
        KeyError: unknown recipe (the message lists them).

    Example:
        >>> cfg = recipe("dpdnet", epochs=2)
        >>> cfg["lr"], cfg["epochs"], cfg["schedule"]["every"]
        (2e-05, 2, 60)
    """
    if name not in RECIPES:
        raise KeyError(f"no recipe {name!r}; known: {sorted(RECIPES)}")
    config = copy.deepcopy(RECIPES[name])
    config.update(copy.deepcopy(overrides))
    return config


def lr_factor(schedule: dict, t: int) -> float:
    """Learning-rate multiplier at epoch (or step) ``t``, counted from 0.

    ``{"kind": "constant"}``: 1.
    ``{"kind": "step", "every": k, "gamma": g}``: ``g ** (t // k)`` (halve every k epochs with
    ``g = 0.5``).
    ``{"kind": "linear_decay", "constant": n, "decay": d}``: 1 for the first ``n`` epochs, then
    ``1 - (t + 1 - n) / (d + 1)`` (Zhu et al.'s rule that DRBNet follows: linear towards 0 over
    the next ``d`` epochs), never below 0.
    ``{"kind": "cosine", "total": n, "floor": f}``: half a cosine from 1 down to ``f`` (default
    0.01) over ``n`` epochs (or steps), then ``f`` (Loshchilov and Hutter, 2017, without
    restarts; dplab's shipped CPU-trained weights use it per step).
    Every kind accepts ``"unit": "epoch"`` (default) or ``"step"``.

    Raises:
        ValueError: unknown kind or bad parameters.

    Example:
        >>> [lr_factor({"kind": "step", "every": 2, "gamma": 0.5}, t) for t in range(5)]
        [1.0, 1.0, 0.5, 0.5, 0.25]
        >>> [round(lr_factor({"kind": "linear_decay", "constant": 2, "decay": 3}, t), 2) for t in range(6)]
        [1.0, 1.0, 0.75, 0.5, 0.25, 0.0]
        >>> [round(lr_factor({"kind": "cosine", "total": 4, "floor": 0.0}, t), 3) for t in range(6)]
        [1.0, 0.854, 0.5, 0.146, 0.0, 0.0]
    """
    if not isinstance(schedule, dict) or "kind" not in schedule:
        raise ValueError(f"schedule must be a dict with a 'kind', got {schedule!r}")
    kind = schedule["kind"]
    if kind == "constant":
        return 1.0
    if kind == "step":
        every = require_positive("schedule['every']", schedule.get("every"), integer=True)
        gamma = require_positive("schedule['gamma']", schedule.get("gamma", 0.5))
        return float(gamma ** (t // every))
    if kind == "linear_decay":
        constant = require_positive("schedule['constant']", schedule.get("constant"), allow_zero=True, integer=True)
        decay = require_positive("schedule['decay']", schedule.get("decay"), integer=True)
        return float(max(0.0, 1.0 - max(0, t + 1 - constant) / (decay + 1)))
    if kind == "cosine":
        if schedule.get("total") is None:
            raise ValueError("a cosine schedule needs schedule['total'], the epochs (or steps) it decays over")
        total = require_positive("schedule['total']", schedule.get("total"), integer=True)
        floor = float(require_number("schedule['floor']", schedule.get("floor", 0.01)))
        if not 0 <= floor <= 1:
            raise ValueError(f"schedule['floor'] must be in [0, 1], got {floor!r}")
        return float(floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(t, total) / total)))
    raise ValueError(f"schedule kind must be 'constant', 'step', 'linear_decay' or 'cosine', got {kind!r}")


# --- checkpoints ----------------------------------------------------------------------------
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
        path: a file written by :class:`Trainer` or :func:`save_checkpoint_atomic`.
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


def _rng_state() -> dict:
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


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())  # map_location may have moved them to the GPU
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].cpu().numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


# --- distributed ----------------------------------------------------------------------------
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


class _GlobalBatchSampler(Sampler):
    """Batches of one process: a permutation fixed by ``(seed, epoch)``, cut into global
    batches, each split into equal per-process slices; starts at batch ``start``."""

    def __init__(self, n: int, global_batch: int, world: int, rank: int, seed: int, epoch: int, start: int, shuffle: bool):
        self.n, self.global_batch, self.world, self.rank = n, global_batch, world, rank
        self.seed, self.epoch, self.start, self.shuffle = seed, epoch, start, shuffle
        self.per_rank = global_batch // world
        self.steps = n // global_batch

    def __len__(self) -> int:
        return self.steps - self.start

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=torch.Generator().manual_seed(_mix(self.seed, self.epoch))).tolist()
        else:
            order = list(range(self.n))
        for i in range(self.start, self.steps):
            begin = i * self.global_batch + self.rank * self.per_rank
            yield order[begin : begin + self.per_rank]


def _mix(seed: int, epoch: int) -> int:
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch), 0x5EED]).generate_state(2, np.uint32)
    return int(state[0]) << 32 | int(state[1])


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def concat_inputs(*keys: str) -> Callable:
    """A ``forward(model, batch)`` that feeds ``model(cat([batch[k] for k in keys], dim=-3))``.

    For networks whose ``forward`` takes one tensor: DPDNet ``concat_inputs("left", "right")``,
    RDPD ``concat_inputs("left", "right", "radial")``, single-image networks
    ``concat_inputs("combined")``. Concatenating along dim -3 (channels) also serves sequence
    batches ``(B, T, C, H, W)``.

    Raises:
        ValueError: no keys.

    Example:
        >>> fwd = concat_inputs("left", "right")
        >>> fwd(torch.nn.Identity(), {"left": torch.zeros(1, 3, 4, 4), "right": torch.ones(1, 3, 4, 4)}).shape
        torch.Size([1, 6, 4, 4])
    """
    if not keys or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"give one or more batch keys, got {keys!r}")

    def forward(model, batch):
        missing = [k for k in keys if k not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing} (keys: {sorted(batch)})")
        x = batch[keys[0]] if len(keys) == 1 else torch.cat([batch[k] for k in keys], dim=-3)
        return model(x)

    forward.keys = keys
    return forward


def _default_forward(model, batch):
    return model(batch)


def _default_metric(pred, batch) -> torch.Tensor:
    from dplab.metrics.image import psnr

    if not isinstance(pred, torch.Tensor):
        raise TypeError("the default validation metric (PSNR) needs a tensor prediction; pass metric_fn=")
    if "sharp" not in batch:
        raise KeyError("the default validation metric compares with batch['sharp'], which is missing; pass metric_fn=")
    return psnr(pred.detach().float().clamp(0, 1), batch["sharp"].float())


class Trainer:
    """Train a model on a dataset of sample dicts; checkpoint, resume, validate, log.

    Args:
        model: the network (``torch.nn.Module``), already built (seeded by the caller).
        loss_fn: ``loss_fn(prediction, batch)`` -> scalar tensor, or a dict with ``"loss"``
            and other named terms (logged).
        train_data: a map-style dataset returning sample dicts (or anything the default
            collate stacks); ``set_epoch(epoch)`` is called on it when it has one.
        config: settings overriding :data:`DEFAULTS` (a recipe from :func:`recipe`, say).
        output_dir: where ``checkpoints/last.pt``, ``checkpoints/best.pt``, ``log.csv`` and
            ``log.json`` go.
        val_data: optional validation dataset.
        forward: ``forward(model, batch)`` -> prediction; default ``model(batch)``.
        metric_fn: ``metric_fn(prediction, batch)`` -> per-image values (higher is better);
            default PSNR against ``batch["sharp"]``.
        parameters: the parameters to optimise (default: those with ``requires_grad``).
        resume: ``"auto"`` resumes from ``checkpoints/last.pt`` when it exists; True requires
            it; False starts afresh and refuses to overwrite an existing checkpoint.
        callbacks: functions ``cb(trainer, row)`` called after every step with the log row.
        collate_fn: passed to the DataLoader.

    A fresh run seeds torch, NumPy and ``random`` with ``seed + rank`` (dropout and other
    in-model randomness); a resumed run restores the generators from the checkpoint instead.
    ``fit()`` returns ``{"step", "epoch", "final_loss", "best", "checkpoint",
    "best_checkpoint", "history", "val_history"}``.

    Raises:
        ValueError, TypeError: bad settings (unknown keys are refused).
        FileExistsError: ``resume=False`` and a checkpoint exists.
        FileNotFoundError: ``resume=True`` and no checkpoint exists.

    Example:
        >>> import tempfile
        >>> data = [{"combined": torch.full((1, 4, 4), 0.5), "sharp": torch.full((1, 4, 4), 0.25)}] * 4
        >>> model = torch.nn.Conv2d(1, 1, 1)
        >>> trainer = Trainer(model, lambda p, b: ((p - b["sharp"]) ** 2).mean(), data,
        ...                   {"epochs": 3, "batch_size": 2, "lr": 1e-2, "progress": False},
        ...                   output_dir=tempfile.mkdtemp(), forward=lambda m, b: m(b["combined"]))
        >>> summary = trainer.fit()
        >>> summary["step"], summary["epoch"]
        (6, 3)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        loss_fn: Callable,
        train_data,
        config: dict | None = None,
        *,
        output_dir: Path | str,
        val_data=None,
        forward: Callable | None = None,
        metric_fn: Callable | None = None,
        parameters: Iterable[torch.nn.Parameter] | None = None,
        resume: bool | str = "auto",
        callbacks: Iterable[Callable] = (),
        collate_fn: Callable | None = None,
    ):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable: loss_fn(prediction, batch) -> tensor or dict")
        if forward is not None and not callable(forward):
            raise TypeError("forward must be callable: forward(model, batch) -> prediction")
        if resume not in (True, False, "auto"):
            raise ValueError(f"resume must be True, False or 'auto', got {resume!r}")
        self.config = self._check_config(config or {})
        cfg = self.config
        self.model = model
        self.loss_fn = loss_fn
        self.train_data = train_data
        self.val_data = val_data
        self.forward_fn = forward or _default_forward
        self.metric_fn = metric_fn or _default_metric
        self.callbacks = list(callbacks)
        self.collate_fn = collate_fn
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.ckpt_dir = self.output_dir / "checkpoints"
        self.last_path, self.best_path = self.ckpt_dir / "last.pt", self.ckpt_dir / "best.pt"
        self.log_csv, self.log_json = self.output_dir / "log.csv", self.output_dir / "log.json"

        # distributed setup and device
        info = distributed_info()
        self.world_size, self.rank, self.local_rank = info["world_size"], info["rank"], info["local_rank"]
        self.device = self._pick_device(cfg["device"])
        self._owns_pg = False
        if self.world_size > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if self.device.type == "cuda" else "gloo")
                self._owns_pg = True
        if cfg["batch_size"] % self.world_size:
            raise ValueError(f"batch_size {cfg['batch_size']} (global) must be divisible by the {self.world_size} processes")
        self.is_main = self.rank == 0

        n = len(train_data)
        if n < cfg["batch_size"]:
            raise ValueError(f"the training set has {n} items, fewer than one batch of {cfg['batch_size']}")
        self.steps_per_epoch = n // cfg["batch_size"]
        budget = [b for b in (
            cfg["epochs"] * self.steps_per_epoch if cfg["epochs"] is not None else None,
            cfg["max_steps"],
        ) if b is not None]
        self.total_steps = min(budget)

        # model, optimiser, schedule, AMP
        self.model.to(self.device)
        self.amp = self._pick_amp(cfg["amp"])
        params = [p for p in (parameters if parameters is not None else self.model.parameters()) if p.requires_grad]
        if not params:
            raise ValueError("there are no trainable parameters (all have requires_grad=False)")
        self._params = params
        opt_cls = {"adam": torch.optim.Adam, "radam": torch.optim.RAdam}[cfg["optimizer"]]
        self.optimizer = opt_cls(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"], weight_decay=cfg["weight_decay"])
        schedule = cfg["schedule"]
        lr_factor(schedule, 0)  # validates
        per_step = schedule.get("unit", "epoch") == "step"
        spe = self.steps_per_epoch
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(schedule, s if per_step else s // spe)
        )
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.ddp_model = self.model
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.ddp_model = DistributedDataParallel(
                self.model,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=cfg["find_unused_parameters"],
            )
        self.train_model = torch.compile(self.ddp_model) if cfg["compile"] else self.ddp_model

        # state
        self.step = 0
        self.best = {"metric": cfg["best_metric"], "value": None, "step": None}
        self.history: list[dict] = []
        self.val_history: list[dict] = []
        self._last_val_step = None
        self._recent_losses: list[float] = []
        self._start_loss: float | None = None
        self._start_resume(resume)

    # -- configuration ----------------------------------------------------------------------
    @staticmethod
    def _check_config(config: dict) -> dict:
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        unknown = sorted(set(config) - set(DEFAULTS) - set(_INFO_KEYS))
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; known: {sorted(DEFAULTS)}")
        cfg = copy.deepcopy(DEFAULTS)
        cfg.update({k: copy.deepcopy(v) for k, v in config.items() if k in DEFAULTS})
        if cfg["epochs"] is None and cfg["max_steps"] is None:
            raise ValueError("set epochs or max_steps (or both)")
        for key in ("epochs", "max_steps"):
            if cfg[key] is not None:
                cfg[key] = int(require_positive(key, cfg[key], integer=True))
        for key in ("batch_size", "log_every", "val_batch_size"):
            cfg[key] = int(require_positive(key, cfg[key], integer=True))
        for key in ("checkpoint_every", "val_every", "num_workers"):
            cfg[key] = int(require_positive(key, cfg[key], allow_zero=True, integer=True))
        cfg["lr"] = float(require_positive("lr", cfg["lr"]))
        cfg["eps"] = float(require_positive("eps", cfg["eps"]))
        cfg["weight_decay"] = float(require_positive("weight_decay", cfg["weight_decay"], allow_zero=True))
        if cfg["grad_clip"] is not None:
            cfg["grad_clip"] = float(require_positive("grad_clip", cfg["grad_clip"]))
        if cfg["divergence_factor"] is not None:
            cfg["divergence_factor"] = float(require_positive("divergence_factor", cfg["divergence_factor"]))
            if cfg["divergence_factor"] <= 1:
                raise ValueError(f"divergence_factor must be > 1 (or None), got {cfg['divergence_factor']}")
        cfg["divergence_window"] = int(require_positive("divergence_window", cfg["divergence_window"], integer=True))
        require_choice("optimizer", cfg["optimizer"], ("adam", "radam"))
        require_choice("amp", cfg["amp"], ("auto", True, False))
        betas = cfg["betas"]
        if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(0 <= float(require_number("betas", b)) < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1), got {betas!r}")
        cfg["seed"] = int(require_number("seed", cfg["seed"], integer=True))
        return cfg

    def _pick_device(self, device) -> torch.device:
        if isinstance(device, torch.device):
            return device
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.local_rank if self.world_size > 1 else torch.cuda.current_device())
            return torch.device("cpu")
        resolved = torch.device(device)
        if resolved.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} asked for, but this machine has no CUDA; use 'auto'")
        return resolved

    def _pick_amp(self, amp) -> bool:
        if amp == "auto":
            return self.device.type == "cuda"
        if amp and self.device.type != "cuda":
            raise ValueError("amp=True needs a CUDA device; AMP is off on CPU (use amp='auto')")
        return bool(amp)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a resumed run needs, as tensors and plain containers."""
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "steps_per_epoch": self.steps_per_epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict() if self.amp else {},
            "rng": _rng_state(),
            "best": dict(self.best),
            "last_val_step": self._last_val_step,
            "config": to_plain(dict(self.config), unknown="repr"),
            **self._model_spec(),
        }

    def _model_spec(self) -> dict:
        """``{"model_spec": ...}`` when the model was made by :func:`dplab.models.build` (so
        :func:`dplab.models.from_checkpoint` can rebuild it), else ``{}``."""
        spec = getattr(self.model, "dplab_spec", None)
        return {"model_spec": to_plain(spec, unknown="repr")} if isinstance(spec, dict) else {}

    def save(self, path: Path | str | None = None) -> Path | None:
        """Write a checkpoint atomically (main process only); default ``checkpoints/last.pt``."""
        path = Path(path) if path is not None else self.last_path
        if self.is_main:
            save_checkpoint_atomic(self.state_dict(), path)
            self._write_json()
        self._barrier()
        return path

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (model, optimizer, scheduler, scaler, RNG, position)."""
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"checkpoint format {state.get('format')!r} is not {CHECKPOINT_FORMAT}")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            raise ValueError(
                f"the checkpoint has {state['steps_per_epoch']} steps per epoch, this run {self.steps_per_epoch}: "
                "the training set or batch size changed, so the data order cannot be resumed"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        _set_rng_state(state["rng"])
        self.step = int(state["step"])
        self.best = dict(state["best"])
        self._last_val_step = state.get("last_val_step")

    def _start_resume(self, resume) -> None:
        exists = self.last_path.is_file()
        if resume is True and not exists:
            raise FileNotFoundError(f"resume=True, but there is no checkpoint at {self.last_path}")
        if resume is False and exists:
            raise FileExistsError(
                f"{self.last_path} exists; pass resume=True (or 'auto') to continue it, or choose another output_dir"
            )
        if exists:
            self.load_state_dict(load_checkpoint(self.last_path, map_location=self.device))
            self._trim_csv()
        else:
            torch.manual_seed(self.config["seed"] + self.rank)
            np.random.seed((self.config["seed"] + self.rank) % 2**32)
            random.seed(self.config["seed"] + self.rank)
            if self.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                for stale in (self.log_csv, self.log_json):  # the trainer's own files of a run that never checkpointed
                    stale.unlink(missing_ok=True)
        self._barrier()

    # -- logs -------------------------------------------------------------------------------
    def _trim_csv(self) -> None:
        """On resume, drop log rows after the checkpoint's step and reload the history."""
        if not self.log_csv.is_file():
            return
        with open(self.log_csv, newline="") as handle:
            reader = csv.DictReader(handle)
            fields = reader.fieldnames or []
            rows = [r for r in reader if r.get("step") and int(r["step"]) <= self.step]
        self._csv_fields = list(fields)
        for r in rows:
            parsed = {k: _parse(v) for k, v in r.items() if v not in ("", None)}
            (self.val_history if r.get("kind") == "val" else self.history).append(parsed)
        if self.is_main:
            buffer = io.StringIO()
            writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
            with atomic_file(self.log_csv, "w", newline="") as handle:
                handle.write(buffer.getvalue())

    def _log_row(self, row: dict) -> None:
        if not self.is_main:
            return
        if not hasattr(self, "_csv_fields"):
            extra = sorted(k for k in row if k not in ("kind", "step", "epoch", "lr", "loss", "time_s"))
            metric = self.config["best_metric"]
            self._csv_fields = ["kind", "step", "epoch", "lr", "loss", *extra, "val_loss", f"val_{metric}", "time_s"]
        new = not self.log_csv.is_file()
        with open(self.log_csv, "a", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=self._csv_fields, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _write_json(self) -> None:
        if self.is_main:
            write_json_atomic(
                self.log_json,
                {
                    "step": self.step,
                    "epoch": self.step // self.steps_per_epoch,
                    "total_steps": self.total_steps,
                    "best": self.best,
                    "train": self.history,
                    "val": self.val_history,
                    "config": to_plain(self.config, unknown="repr"),
                    "world_size": self.world_size,
                    "device": str(self.device),
                },
            )

    # -- loops ------------------------------------------------------------------------------
    def _barrier(self) -> None:
        if self.world_size > 1:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()

    def _loader(self, dataset, batch_sampler, epoch: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.config["num_workers"],
            collate_fn=self.collate_fn,
            pin_memory=self.device.type == "cuda",
            generator=torch.Generator().manual_seed(_mix(self.config["seed"], epoch)),
        )

    def _compute_loss(self, pred, batch) -> tuple[torch.Tensor, dict]:
        out = self.loss_fn(pred, batch)
        if isinstance(out, dict):
            if "loss" not in out:
                raise KeyError("a loss_fn that returns a dict must include the total under 'loss'")
            terms = {k: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for k, v in out.items() if k != "loss"}
            out = out["loss"]
        else:
            terms = {}
        if not isinstance(out, torch.Tensor) or out.numel() != 1:
            raise TypeError("loss_fn must return a scalar tensor (or a dict with one under 'loss')")
        return out.reshape(()), terms

    def _check_divergence(self, value: float) -> None:
        """Raise :class:`TrainingDiverged` for a non-finite loss, or one more than
        ``divergence_factor`` times the largest of the last ``divergence_window`` losses and
        larger than the first loss of this run (or of this resumed segment)."""
        step = self.step + 1
        where = (f"; the last checkpoint ({self.last_path}) holds the model before it. Lower the "
                 "learning rate (or set grad_clip) and resume from it, or check the data")
        if not math.isfinite(value):
            if self.amp:        # a float16 overflow: GradScaler skips the step and lowers its scale
                return
            raise TrainingDiverged(f"training diverged at step {step}: the loss is {value}{where}", step, value)
        recent = self._recent_losses
        factor, window = self.config["divergence_factor"], self.config["divergence_window"]
        if self._start_loss is None:
            self._start_loss = value
        # Also above the first loss of the run: a loss that converges towards zero may jump by
        # orders of magnitude at rounding-noise level without anything going wrong.
        if (factor is not None and len(recent) >= window and value > factor * max(recent)
                and value > self._start_loss):
            raise TrainingDiverged(
                f"training diverged at step {step}: the loss {value:.4g} is more than {factor:g} times the "
                f"largest of the previous {window} steps ({min(recent):.4g} to {max(recent):.4g}) and above "
                f"the run's first loss ({self._start_loss:.4g}){where}", step, value)
        recent.append(value)
        del recent[:-window]

    def train_step(self, batch) -> dict:
        """One optimizer step on one (per-process) batch; returns the log row."""
        self.train_model.train()
        batch = _to_device(batch, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            pred = self.forward_fn(self.train_model, batch)
            loss, terms = self._compute_loss(pred, batch)
        self._check_divergence(float(loss.detach()))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.config["grad_clip"] is not None:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self._params, self.config["grad_clip"])
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        value = loss.detach().float()
        if self.world_size > 1:
            import torch.distributed as dist

            value = value.clone()
            dist.all_reduce(value)
            value /= self.world_size
        row = {"kind": "train", "step": self.step, "epoch": (self.step - 1) // self.steps_per_epoch, "lr": lr, "loss": float(value)}
        row.update(terms)
        return row

    @torch.no_grad()
    def validate(self) -> dict:
        """Mean loss and metric over ``val_data`` (main process); keeps ``best.pt``."""
        result = {}
        if self.is_main:
            self.model.eval()
            loader = DataLoader(
                self.val_data,
                batch_size=self.config["val_batch_size"],
                shuffle=False,
                num_workers=self.config["num_workers"],
                collate_fn=self.collate_fn,
                generator=torch.Generator().manual_seed(0),
            )
            losses, metrics, count = 0.0, 0.0, 0
            for batch in loader:
                batch = _to_device(batch, self.device)
                with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
                    pred = self.forward_fn(self.model, batch)
                    loss, _ = self._compute_loss(pred, batch)
                values = torch.as_tensor(self.metric_fn(pred, batch), dtype=torch.float64).flatten()
                size = values.numel()
                losses += float(loss) * size
                metrics += float(values.sum())
                count += size
            self.model.train()
            metric = self.config["best_metric"]
            result = {"kind": "val", "step": self.step, "epoch": self.step // self.steps_per_epoch, "val_loss": losses / count}
            if metric != "loss":
                result[f"val_{metric}"] = metrics / count
            value = result["val_loss"] if metric == "loss" else result[f"val_{metric}"]
            better = self.best["value"] is None or (value < self.best["value"] if metric == "loss" else value > self.best["value"])
            if better:
                self.best = {"metric": metric, "value": value, "step": self.step}
                save_checkpoint_atomic({"format": CHECKPOINT_FORMAT, "step": self.step, "metric": metric, "value": value,
                                        "model": self.model.state_dict(), **self._model_spec()}, self.best_path)
            self.val_history.append(result)
            self._log_row(result)
        self._last_val_step = self.step
        self._barrier()
        return result

    def fit(self) -> dict:
        """Train until the step budget is spent (or resume and finish); returns a summary."""
        from tqdm.auto import tqdm

        cfg = self.config
        bar = tqdm(total=self.total_steps, initial=self.step, desc="train", disable=not (cfg["progress"] and self.is_main))
        started = time.perf_counter()
        try:
            while self.step < self.total_steps:
                epoch, start = divmod(self.step, self.steps_per_epoch)
                if hasattr(self.train_data, "set_epoch"):
                    self.train_data.set_epoch(epoch)
                sampler = _GlobalBatchSampler(
                    len(self.train_data), cfg["batch_size"], self.world_size, self.rank, cfg["seed"], epoch, start, cfg["shuffle"]
                )
                for batch in self._loader(self.train_data, sampler, epoch):
                    row = self.train_step(batch)
                    row["time_s"] = round(time.perf_counter() - started, 4)
                    if self.step % cfg["log_every"] == 0 or self.step == self.total_steps:
                        self.history.append(row)
                        self._log_row(row)
                        bar.set_postfix(loss=f"{row['loss']:.4g}", lr=f"{row['lr']:.3g}", refresh=False)
                    bar.update(1)
                    epoch_done = self.step % self.steps_per_epoch == 0
                    if (
                        self.val_data is not None
                        and cfg["val_every"]
                        and epoch_done
                        and (self.step // self.steps_per_epoch) % cfg["val_every"] == 0
                    ):
                        self.validate()
                    if cfg["checkpoint_every"] and self.step % cfg["checkpoint_every"] == 0 and self.step < self.total_steps:
                        self.save()
                    for callback in self.callbacks:
                        callback(self, row)
                    if self.step >= self.total_steps:
                        break
            if self.val_data is not None and self._last_val_step != self.step:
                self.validate()
            self.save()
        finally:
            bar.close()
        summary = {
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "final_loss": self.history[-1]["loss"] if self.history else None,
            "best": dict(self.best),
            "checkpoint": str(self.last_path),
            "best_checkpoint": str(self.best_path) if self.best["value"] is not None else None,
            "history": list(self.history),
            "val_history": list(self.val_history),
        }
        if self._owns_pg:
            import torch.distributed as dist

            dist.destroy_process_group()
            self._owns_pg = False
        return summary


def _parse(value: str):
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
