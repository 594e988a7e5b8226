"""What a registry network is trained on: its forward and the papers' losses by recipe kind.

The input of each network is its registry entry's (:func:`dplab.models.registry.network_forward`);
the loss follows a recipe's ``"loss"`` kind (:data:`dplab.training.recipes.RECIPES`), the default
being the entry's (:class:`dplab.models.registry.ModelEntry`):

| kind | paper | ``loss_fn(prediction, batch)`` |
| --- | --- | --- |
| ``mse`` | DPDNet, ECCV 2020, Sec. 4 | MSE to ``sharp`` |
| ``mse+edge`` | RDPD, ICCV 2021, Eq. 16 | :func:`dplab.training.rdpd.make_loss` (3 edge scales) |
| ``l1`` | DRBNet, CVPR 2022, Eq. 6 | :func:`dplab.training.losses.multiscale_l1` on every scale |
| ``l1+vgg`` | DRBNet, Eq. 7 | :func:`dplab.training.drbnet.finetune_loss`: VGG-19 features, else Eq. 6 (Table 5, row c) |
| ``mdp_step1`` / ``mdp_step2`` | MDP, WACV 2022, Eqs. 8-9 | :func:`dplab.training.mdp.mdp_loss_fn` with the paper's weights |
"""

from __future__ import annotations

from typing import Callable

import torch.nn.functional as F

from dplab._validate import require_choice
from dplab.models.registry import model_entry, network_forward
from dplab.training.drbnet import finetune_loss
from dplab.training.losses import multiscale_l1
from dplab.training.mdp import mdp_loss_fn
from dplab.training.rdpd import make_loss

__all__ = ["LOSSES", "recipe_loss", "forward_and_loss"]

#: Recipe loss kinds (see the module docstring).
LOSSES = ("mse", "mse+edge", "l1", "l1+vgg", "mdp_step1", "mdp_step2")


def _mse(pred, batch):
    return F.mse_loss(pred, batch["sharp"])


def recipe_loss(kind: str) -> Callable:
    """The :class:`dplab.training.trainer.Trainer` ``loss_fn(prediction, batch)`` of a recipe
    loss kind (see the module docstring). ``"l1+vgg"`` without the VGG-19 weights file prints
    a note and uses the multi-scale L1.

    For ``"mdp_step1"`` / ``"mdp_step2"`` with an ``mdp_single_task`` model, the terms whose
    prediction the single decoder does not make drop out, so its deblurring baseline of MDP
    Table 3 trains on the sharp-image term alone.

    Raises:
        ValueError: unknown kind.

    Example:
        >>> import torch
        >>> x = torch.rand(1, 3, 8, 8)
        >>> float(recipe_loss("mse")(x, {"sharp": x})), float(recipe_loss("l1")([x], {"sharp": x}))
        (0.0, 0.0)
    """
    require_choice("loss kind", kind, LOSSES)
    if kind == "mse":
        return _mse
    if kind == "mse+edge":
        return make_loss(3)
    if kind == "l1":
        return lambda p, b: multiscale_l1(p, b["sharp"])
    if kind == "l1+vgg":
        loss, got = finetune_loss()
        if got == "l1":
            from dplab.training.vgg import default_vgg19_path

            print(f"train: no VGG-19 weights at {default_vgg19_path()} (set DPLAB_VGG19); using the multi-scale "
                  "L1 loss instead (DRBNet Table 5, row c)")
        return lambda p, b: loss(p, b["sharp"])
    return mdp_loss_fn("paper_step1" if kind == "mdp_step1" else "paper_step2")


def forward_and_loss(model_name: str, loss_kind: str | None = None, in_channels: int | None = None):
    """The Trainer's ``forward(model, batch)`` and ``loss_fn(pred, batch)`` for a registry
    network and a recipe's loss kind.

    Args:
        model_name: a :func:`dplab.models.build` name.
        loss_kind: the recipe's loss (default: the registry entry's).
        in_channels: the model's input channels (RDPD/RSPD: with or without the radial
            channel, :func:`dplab.models.registry.model_inputs`).

    Returns:
        ``(forward, loss_fn)``; with the multi-scale losses (``"l1"``, ``"l1+vgg"``) DRBNet's
        forward returns every output scale.

    Raises:
        ValueError: an MDP loss with another model or the reverse.

    Example:
        >>> forward, loss_fn = forward_and_loss("drbnet")
        >>> forward.inputs
        ('combined',)
    """
    entry = model_entry(model_name)
    loss_kind = entry.loss if loss_kind is None else loss_kind
    is_mdp = model_name in ("mdp", "mdp_single_task")
    if is_mdp != loss_kind.startswith("mdp"):
        raise ValueError(f"model {model_name!r} and the recipe's loss {loss_kind!r} do not go together: "
                         "the mdp_step1/mdp_step2 recipes are for --model mdp or mdp_single_task, and only they")
    loss_fn = recipe_loss(loss_kind)
    scales = model_name in ("drbnet", "drbnet_dual") and loss_kind in ("l1", "l1+vgg")   # Eqs. 6-7, every scale
    forward = network_forward(model_name, in_channels=in_channels, **({"return_scales": True} if scales else {}))
    return forward, loss_fn
