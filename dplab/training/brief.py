"""Brief training of the benchmark's four networks, for when no trained weights are at hand.

:func:`train_brief` trains one of :data:`NETWORKS` for a few hundred steps on a DP dataset with
:class:`dplab.training.trainer.Trainer`: the network's registry input and default loss
(:mod:`dplab.models.registry`, :func:`dplab.training.objectives.forward_and_loss`), the
optimizer of its paper's recipe at a constant, higher learning rate (the papers' rates are for
hundreds of epochs), on random patches. The benchmark chapter uses it when a shipped weights
file is missing; :func:`dplab.book.networks.load_or_train` prefers a chapter's checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dplab._validate import require_choice, require_positive
from dplab.data.patches import RandomPatches
from dplab.models.registry import build, model_inputs
from dplab.training.drbnet import zero_drb_heads
from dplab.training.objectives import forward_and_loss
from dplab.training.rdpd import init_output_bias
from dplab.training.recipes import recipe
from dplab.training.trainer import Trainer

__all__ = ["NetworkRecipe", "NETWORKS", "train_brief"]


@dataclass(frozen=True)
class NetworkRecipe:
    """How :func:`train_brief` trains one network.

    Attributes:
        registry: :func:`dplab.models.build` name (its entry gives the input and the loss).
        recipe: the :data:`dplab.training.recipes.RECIPES` entry whose optimizer it uses.
        lr: learning rate of the brief training.
        loss: what it optimises, in words (for the chapter's prose).
    """

    registry: str
    recipe: str
    lr: float
    loss: str


#: The benchmark's networks, in the book's order.
NETWORKS = {
    "dpdnet": NetworkRecipe("dpdnet", "dpdnet", 2e-3, "MSE"),
    "rdpd": NetworkRecipe("rdpd", "rdpd", 2e-3, "MSE + multi-scale Sobel edge loss (Eq. 16), single images"),
    "drbnet": NetworkRecipe("drbnet", "drbnet_dpdd", 1e-3, "multi-scale L1 (Eq. 6), one stage"),
    "mdp": NetworkRecipe("mdp", "mdp_step2", 1e-3, "MDP step-2 loss (sharp + DP views + L_C + L_D), step 2 only"),
}


def train_brief(method: str, train_set, output_dir, *, options: dict | None = None, steps: int = 100,
                patch: int = 48, batch_size: int = 8, patches_per_image: int = 4, lr: float | None = None,
                seed: int = 0, device="cpu") -> torch.nn.Module:
    """Train one of the book's networks briefly on a DP dataset with :class:`dplab.training.trainer.Trainer`.

    The losses are the papers' (the registry defaults, see :data:`NETWORKS`): DPDNet MSE
    (Sec. 4), RDPD Eq. 16 on single-image batches (no sequence batches), DRBNet multi-scale L1
    (Eq. 6, stage 2 only, DRB heads zeroed; no VGG-19 weights file is assumed), MDP's step-2
    loss (Sec. 3.4, joint training only, no step 1). Adam (RAdam for DRBNet, Sec. 5.1) at a
    constant learning rate. The checkpoint (with the model spec) is
    ``output_dir/checkpoints/last.pt``; a finished run is resumed (not retrained).

    Args:
        method: a key of :data:`NETWORKS`.
        train_set: dataset of sample dicts with ``left``, ``right``, ``combined``, ``sharp``.
        output_dir: the Trainer's folder.
        options: :func:`dplab.models.build` options (e.g. ``{"widths": (8, 16, 32, 32)}``).
        steps: optimizer steps.
        patch: patch size (a multiple of 16).
        batch_size: patches per step.
        patches_per_image: patches drawn per image per epoch.
        lr: learning rate (default: the recipe's of :data:`NETWORKS`).
        seed: seed of the initial weights and of the patches.
        device: where to train.

    Returns:
        The trained network in eval mode.

    Raises:
        ValueError: unknown method, patch not a multiple of 16.
    """
    require_choice("method", method, tuple(NETWORKS))
    steps = int(require_positive("steps", steps, integer=True))
    patch = int(require_positive("patch", patch, integer=True))
    if patch % 16:
        raise ValueError(f"patch must be a multiple of 16 (four poolings), got {patch}")
    net = NETWORKS[method]
    torch.manual_seed(seed)
    model = build(net.registry, **(options or {}))
    in_channels = getattr(model, "in_channels", None)
    if method == "rdpd" and getattr(model.head, "kind", "paper") == "paper":   # a residual head starts at its input
        model = init_output_bias(model)
    if method == "drbnet":
        model = zero_drb_heads(model)
    forward, loss_fn = forward_and_loss(net.registry, None, in_channels)
    cfg = recipe(net.recipe, epochs=None, max_steps=steps, batch_size=batch_size, lr=lr or net.lr,
                 schedule={"kind": "constant"}, progress=False, checkpoint_every=0, val_every=0,
                 seed=seed, device=str(device))
    radial = "radial" in model_inputs(net.registry, in_channels)
    patches = RandomPatches(train_set, patch, patches_per_image=patches_per_image, seed=seed, radial=radial)
    Trainer(model, loss_fn, patches, cfg, output_dir=output_dir, forward=forward).fit()
    return model.eval()
