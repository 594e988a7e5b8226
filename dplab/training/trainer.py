"""One trainer for every network chapter (DPDNet, RDPD, DRBNet, MDP).

:class:`Trainer` runs a model over a map-style dataset of sample dicts. The model's forward is
generic: by default it is called as ``model(batch)`` with the batch dict (``"combined"``,
``"left"``, ``"right"``, ``"sharp"``, ... as ``(B, C, H, W)`` tensors); any other calling
convention is a ``forward(model, batch)`` function, for the book's networks
:func:`dplab.models.registry.network_forward` (the inputs their registry entry declares). The
loss is a callable ``loss_fn(prediction, batch)`` returning a scalar tensor, or a dict with a
``"loss"`` entry plus named terms that are logged (:func:`dplab.training.objectives.recipe_loss`
makes the papers').

What it does:

* epochs and/or a step budget; learning-rate schedules per epoch or per step
  (:func:`dplab.training.recipes.lr_factor`; the papers' settings are
  :data:`dplab.training.recipes.RECIPES`);
* Adam or RAdam (DRBNet, Sec. 5.1), gradient clipping, AMP (float16 + GradScaler) on CUDA only,
  optional ``torch.compile``;
* a ``tqdm`` progress bar, a CSV log (``log.csv``) and a JSON summary (``log.json``), and a
  guard that stops a diverging run (:mod:`dplab.training.monitor`);
* checkpoints written atomically every ``checkpoint_every`` steps and at the end, loadable with
  ``torch.load(..., weights_only=True)`` (:mod:`dplab.training.checkpoints`);
* exact resume: model, optimizer, scheduler, AMP scaler, RNG states (torch, CUDA, NumPy,
  Python) and the position in the data order. The data order is a function of
  ``(seed, epoch)`` alone, and datasets that have ``set_epoch`` (the patch samplers of
  :mod:`dplab.data.patches`) are told the epoch, so a resumed run sees the same batches;
* validation every ``val_every`` epochs, keeping the best model in ``best.pt``;
* :class:`~torch.nn.parallel.DistributedDataParallel` when started by ``torchrun`` (NCCL on
  CUDA, gloo on CPU). ``batch_size`` is the *global* batch; each of the ``W`` processes takes
  ``batch_size / W`` samples of every global batch, so the gradient equals the one-process
  gradient of the same global batch.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader

from dplab._io import to_plain
from dplab._validate import resolve_device
from dplab.training.checkpoints import (CHECKPOINT_FORMAT, GlobalBatchSampler, distributed_info, load_checkpoint,
                                        mix_seed, restore_training_state, rng_state, save_checkpoint_atomic,
                                        set_rng_state)
from dplab.training.monitor import DivergenceGuard, RunLog
from dplab.training.recipes import check_config, lr_factor

__all__ = ["Trainer"]


def _to_device(batch, device: torch.device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


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
        config: settings overriding :data:`dplab.training.recipes.DEFAULTS` (a recipe from
            :func:`dplab.training.recipes.recipe`, say).
        output_dir: where ``checkpoints/last.pt``, ``checkpoints/best.pt``, ``log.csv`` and
            ``log.json`` go.
        val_data: optional validation dataset.
        forward: ``forward(model, batch)`` -> prediction; default ``model(batch)``
            (:func:`dplab.models.registry.network_forward` for the book's networks).
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
        ValueError, TypeError: bad settings (unknown keys are refused; an unknown device).
        FileExistsError: ``resume=False`` and a checkpoint exists; or none exists and a
            ``log.csv``/``log.json`` the trainer did not write is there (it deletes only its own).
        FileNotFoundError: ``resume=True`` and no checkpoint exists.
        dplab._io.CheckpointError: ``checkpoints/last.pt`` is unreadable or of another network.

    One run at a time per ``output_dir`` is the caller's affair (``python -m dplab train``
    holds :func:`dplab._io.folder_lock` on it).

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
        self.config = check_config(config or {})
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
        self.log = RunLog(self.output_dir, metric=cfg["best_metric"], write=self.is_main)
        self.log_csv, self.log_json = self.log.csv_path, self.log.json_path

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
        self._guard = DivergenceGuard(cfg["divergence_factor"], cfg["divergence_window"], skip_non_finite=self.amp,
                                      checkpoint=self.last_path)
        self._start_resume(resume)

    # -- configuration ----------------------------------------------------------------------
    def _pick_device(self, device) -> torch.device:
        if isinstance(device, torch.device):
            return device
        if device == "auto":
            if torch.cuda.is_available():
                return torch.device("cuda", self.local_rank if self.world_size > 1 else torch.cuda.current_device())
            return torch.device("cpu")
        resolved = resolve_device(device)          # ValueError for 'tpu9' or CUDA on a machine without
        if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r} asked for, but this machine has {torch.cuda.device_count()} CUDA "
                             "device(s), numbered from 0; use 'auto'")
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
            "rng": rng_state(),
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
            self._write_summary()
        self._barrier()
        return path

    def load_state_dict(self, state: dict, source: str | Path = "the checkpoint") -> None:
        """Restore a :meth:`state_dict` (model, optimizer, scheduler, scaler, RNG, position).

        Raises what :func:`dplab.training.checkpoints.restore_training_state` raises for a
        checkpoint of another run, naming ``source``."""
        restore_training_state(state, source, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                               steps_per_epoch=self.steps_per_epoch, model_spec=self._model_spec().get("model_spec"))
        if self.amp and state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"])
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
            self.load_state_dict(load_checkpoint(self.last_path, map_location=self.device), source=self.last_path)
            train_rows, val_rows = self.log.trim(self.step)
            self.history.extend(train_rows)
            self.val_history.extend(val_rows)
        else:
            torch.manual_seed(self.config["seed"] + self.rank)
            np.random.seed((self.config["seed"] + self.rank) % 2**32)
            random.seed(self.config["seed"] + self.rank)
            if self.is_main:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                self.log.clear()    # the trainer's own files of a run that never checkpointed
        self._barrier()

    # -- logs -------------------------------------------------------------------------------
    def _write_summary(self) -> None:
        self.log.write_json({
            "step": self.step,
            "epoch": self.step // self.steps_per_epoch,
            "total_steps": self.total_steps,
            "best": self.best,
            "train": self.history,
            "val": self.val_history,
            "config": to_plain(self.config, unknown="repr"),
            "world_size": self.world_size,
            "device": str(self.device),
        })

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
            generator=torch.Generator().manual_seed(mix_seed(self.config["seed"], epoch)),
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

    def train_step(self, batch) -> dict:
        """One optimizer step on one (per-process) batch; returns the log row."""
        self.train_model.train()
        batch = _to_device(batch, self.device)
        lr = self.optimizer.param_groups[0]["lr"]
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=self.amp):
            pred = self.forward_fn(self.train_model, batch)
            loss, terms = self._compute_loss(pred, batch)
        self._guard.check(float(loss.detach()), self.step + 1)
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
            self.log.append(result)
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
                sampler = GlobalBatchSampler(
                    len(self.train_data), cfg["batch_size"], self.world_size, self.rank, cfg["seed"], epoch, start, cfg["shuffle"]
                )
                for batch in self._loader(self.train_data, sampler, epoch):
                    row = self.train_step(batch)
                    row["time_s"] = round(time.perf_counter() - started, 4)
                    if self.step % cfg["log_every"] == 0 or self.step == self.total_steps:
                        self.history.append(row)
                        self.log.append(row)
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

