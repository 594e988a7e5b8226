"""The papers' training recipes, the Trainer's settings and the learning-rate schedules.

A recipe is a plain dict of :class:`dplab.training.trainer.Trainer` settings (optimizer,
learning rate, schedule, epochs, batch) plus notes for the chapter (``"paper"``, ``"data"``,
``"loss"``, ``"notes"``); :func:`recipe` copies one of :data:`RECIPES` and applies overrides,
:func:`check_config` fills in :data:`DEFAULTS` and checks every setting.

Schedules (:func:`lr_factor`), per epoch or per step: constant, ``"step"`` (multiply by
``gamma`` every ``every`` epochs: DPDNet, ECCV 2020, Sec. 4; RDPD, ICCV 2021, Sec. 5; MDP,
WACV 2022, Sec. 4.1), ``"linear_decay"`` (constant, then linear towards zero: DRBNet, CVPR
2022, Sec. 5.1, after Zhu et al. 2017) and ``"cosine"`` (the shipped CPU-trained weights).
"""

from __future__ import annotations

import copy
import math

from dplab._validate import require_choice, require_number, require_positive

__all__ = ["DEFAULTS", "INFO_KEYS", "RECIPES", "recipe", "lr_factor", "check_config"]

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
#: Keys a recipe may carry for the chapter (data and loss settings); the trainer ignores them.
INFO_KEYS = ("paper", "data", "loss", "notes")

#: The papers' training recipes (their implementation sections and the authors' code).
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


def check_config(config: dict) -> dict:
    """:data:`DEFAULTS` updated with ``config`` (a deep copy), every setting checked.

    Keys of :data:`INFO_KEYS` (a recipe's data and loss notes) are accepted and dropped.

    Raises:
        TypeError: ``config`` is not a dict, or a setting has the wrong type.
        ValueError: an unknown key, a bad value, or neither ``epochs`` nor ``max_steps``.

    Example:
        >>> cfg = check_config(recipe("dpdnet", epochs=2))
        >>> cfg["epochs"], cfg["batch_size"], "loss" in cfg
        (2, 5, False)
    """
    if not isinstance(config, dict):
        raise TypeError(f"config must be a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS) - set(INFO_KEYS))
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
