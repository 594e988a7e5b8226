"""MDP training (Abuolaim, Afifi & Brown, WACV 2022, Secs. 3.2-3.4 and 4.1).

The losses: ``L_C`` (:func:`combined_loss`, Eq. 6), ``L_D`` (:func:`difference_loss`, Eq. 7)
and their weighted sum with the MSE terms (:func:`mdp_loss`, Eqs. 8-9; the weights of the paper
and of the authors' code in :data:`MDP_LOSS_WEIGHTS`); the :class:`dplab.training.trainer.Trainer`
loss built from it (:func:`mdp_loss_fn`); the two training steps (:func:`train_mdp`: step 1
with the sharp decoder frozen, step 2 on both tasks); and the scores the chapter reports for
deblurring and for DP-view synthesis (:func:`mdp_scores`).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_number
from dplab.models.registry import network_forward
from dplab.training.losses import check_pair

__all__ = ["MDP_LOSS_WEIGHTS", "combined_loss", "difference_loss", "mdp_loss", "mdp_loss_fn", "train_mdp",
           "mdp_scores"]


#: Loss weights ``(w_sharp, w_views, w_C, w_D)`` of MDP's two training steps.
#: "paper_step1": Eq. 8 (views only; Dec_s frozen); "paper_step2": Eq. 9 with
#: lambda = (0.8, 0.5, 0.5) of Sec. 4.1; "code_step1"/"code_step2": the authors' Keras code,
#: [1, 1, 0.2, 0.2] and [1, 0.2, 0.2, 0.2] (its training script).
MDP_LOSS_WEIGHTS = {
    "paper_step1": (0.0, 1.0, 1.0, 1.0),
    "paper_step2": (1.0, 0.8, 0.5, 0.5),
    "code_step1": (1.0, 1.0, 0.2, 0.2),
    "code_step2": (1.0, 0.2, 0.2, 0.2),
}


def combined_loss(image: torch.Tensor, left_pred: torch.Tensor, right_pred: torch.Tensor,
                  convention: str = "sum") -> torch.Tensor:
    """MDP's ``L_C`` (Eq. 6): ``mean((I_c - (L* + R*))^2)``, the predicted views must add up
    to the input combined image (DP image formation, Eq. 3).

    ``convention="sum"`` is the paper's Eq. 6 and dplab's convention (each view about half
    the brightness). ``"average"`` is the authors' code, whose views are full-brightness
    images: ``mean((I_c - (L* + R*) / 2)^2)``.

    Args:
        image: input combined image ``(B, C, H, W)``.
        left_pred, right_pred: predicted views, same shape.
        convention: ``"sum"`` or ``"average"``.

    Returns:
        Scalar loss (0 when the views sum to the image).

    Example:
        >>> img = torch.rand(1, 3, 8, 8); a = torch.rand(1, 3, 8, 8) * img
        >>> round(float(combined_loss(img, a, img - a)), 12)
        0.0
    """
    image, left_pred = check_pair(image, left_pred, "image", "left_pred")
    _, right_pred = check_pair(image, right_pred, "image", "right_pred")
    require_choice("convention", convention, ("sum", "average"))
    views = left_pred + right_pred
    if convention == "average":
        views = views / 2
    return F.mse_loss(views, image)


def difference_loss(left_pred: torch.Tensor, right_pred: torch.Tensor,
                    left: torch.Tensor, right: torch.Tensor) -> torch.Tensor:
    """MDP's ``L_D`` (Eq. 7): ``mean(((L - R) - (L* - R*))^2)``, the view difference whose
    sign tells front from back focus.

    The same formula in the paper and the code; it does not depend on the brightness
    convention as long as predictions and ground truth share it.

    Args:
        left_pred, right_pred: predicted views ``(B, C, H, W)``.
        left, right: ground-truth views, same shape.

    Returns:
        Scalar loss.

    Example:
        >>> l, r = torch.rand(2, 1, 3, 4, 4)
        >>> round(float(difference_loss(l + 0.2, r + 0.2, l, r)), 12), float(difference_loss(r, l, l, r)) > 0
        (0.0, True)
    """
    left_pred, right_pred = check_pair(left_pred, right_pred, "left_pred", "right_pred")
    left, right = check_pair(left, right, "left", "right")
    check_pair(left_pred, left, "left_pred", "left")
    return F.mse_loss(left_pred - right_pred, left - right)


def mdp_loss(pred, image: torch.Tensor, *, left: torch.Tensor | None = None,
             right: torch.Tensor | None = None, sharp: torch.Tensor | None = None,
             weights: str | Sequence[float] = "paper_step2",
             convention: str = "sum") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MDP training loss (Eqs. 8-9): ``w_s MSE(s) + w_v MSE(l, r) + w_C L_C + w_D L_D``.

    Terms whose weight is 0, whose ground truth is None, or whose prediction is None (a
    single-task model) are skipped. ``MSE(l, r)`` is the MSE over both views together.

    Args:
        pred: :class:`~dplab.models.MDPOutput` or a ``(left, right, sharp)`` triple.
        image: the input combined image (for ``L_C``).
        left, right: ground-truth views (``MSE(l, r)`` and ``L_D``).
        sharp: ground-truth sharp image (``MSE(s)``).
        weights: a key of :data:`MDP_LOSS_WEIGHTS` or 4 numbers ``(w_s, w_v, w_C, w_D)``.
        convention: ``L_C`` convention, see :func:`combined_loss`.

    Returns:
        ``(total, terms)`` with ``terms`` the unweighted values by name
        (``"mse_sharp"``, ``"mse_views"``, ``"L_C"``, ``"L_D"``) that were computed.

    Raises:
        ValueError: bad weights, shapes, or no term left to compute.

    Example:
        >>> img = torch.rand(1, 3, 8, 8); l = img * 0.4; r = img - l
        >>> total, terms = mdp_loss((l, r, img), img, left=l, right=r, sharp=img)
        >>> round(float(total), 12), sorted(terms)
        (0.0, ['L_C', 'L_D', 'mse_sharp', 'mse_views'])
    """
    if isinstance(weights, str):
        w = MDP_LOSS_WEIGHTS[require_choice("weights", weights, tuple(MDP_LOSS_WEIGHTS))]
    else:
        w = tuple(float(require_number("weights", v)) for v in weights)
        if len(w) != 4:
            raise ValueError(f"weights must have 4 entries (w_s, w_v, w_C, w_D), got {len(w)}")
    lp, rp, sp = pred
    terms: dict[str, torch.Tensor] = {}
    if w[0] and sp is not None and sharp is not None:
        terms["mse_sharp"] = F.mse_loss(*check_pair(sp, sharp, "pred.sharp", "sharp"))
    views_ok = lp is not None and rp is not None
    if w[1] and views_ok and left is not None and right is not None:
        check_pair(lp, left, "pred.left", "left")
        check_pair(rp, right, "pred.right", "right")
        # equal to the MSE over the 6 channels [left, right] of the code's mse_l_r
        terms["mse_views"] = (F.mse_loss(lp, left) + F.mse_loss(rp, right)) / 2
    if w[2] and views_ok:
        terms["L_C"] = combined_loss(image, lp, rp, convention)
    if w[3] and views_ok and left is not None and right is not None:
        terms["L_D"] = difference_loss(lp, rp, left, right)
    if not terms:
        raise ValueError("mdp_loss has nothing to compute: give the ground truth of a term with non-zero weight")
    names = {"mse_sharp": w[0], "mse_views": w[1], "L_C": w[2], "L_D": w[3]}
    total = sum(names[k] * v for k, v in terms.items())
    return total, terms


def mdp_loss_fn(weights):
    """A :class:`dplab.training.trainer.Trainer` ``loss_fn(prediction, batch)`` for MDP: the total of
    :func:`mdp_loss` with ``weights`` (a key of ``MDP_LOSS_WEIGHTS`` or four
    numbers ``(w_s, w_v, w_C, w_D)``) and its terms, read from the batch's ``combined``,
    ``left``, ``right`` and (when present) ``sharp``."""

    def loss_fn(pred, batch):
        total, terms = mdp_loss(pred, batch["combined"], left=batch.get("left"),
                                right=batch.get("right"), sharp=batch.get("sharp"), weights=weights)
        return {"loss": total, **terms}

    return loss_fn


def _branch_params(model, branch: str) -> dict:
    if not hasattr(model, "early") or not isinstance(model.early, torch.nn.ModuleDict):
        return {}
    parts = (model.early[branch], model.late[branch])
    return {f"{i}.{k}": v.detach().clone() for i, p in enumerate(parts) for k, v in p.state_dict().items()}


def _max_change(before: dict, after: dict) -> float:
    return max((float((after[k].cpu() - v.cpu()).abs().max()) for k, v in before.items()), default=0.0)


def train_mdp(model, data, weights, config: dict, output_dir, *, freeze_sharp: bool = False) -> dict:
    """One MDP training step (Sec. 3.4) with :class:`dplab.training.trainer.Trainer`.

    Args:
        model: an :class:`~dplab.models.MDP` or :class:`~dplab.models.MDPSingleTask`.
        data: a dataset of sample dicts (``combined``, ``left``, ``right``, maybe ``sharp``).
        weights: loss weights for :func:`mdp_loss_fn`.
        config: Trainer settings (e.g. ``recipe("mdp_step1", ...)``).
        output_dir: where the Trainer writes checkpoints and logs (resumes when present).
        freeze_sharp: step 1: freeze the sharp decoder ``Dec_s`` (``set_trainable``); otherwise
            every branch is trainable (step 2).

    Returns:
        The Trainer's summary plus ``"sharp_max_change"`` and ``"encoder_max_change"``: the
        largest absolute change of any weight of ``Dec_s`` and of the encoder during the run
        (``nan`` for a single-task model without ``Dec_s``), and ``"losses"``, the logged
        total loss per step.
    """
    from dplab.training.trainer import Trainer

    if hasattr(model, "set_trainable"):
        model.set_trainable("sharp", not freeze_sharp)
    sharp0 = _branch_params(model, "sharp")
    enc0 = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    trainer = Trainer(model, mdp_loss_fn(weights), data, config, output_dir=output_dir,
                      forward=network_forward("mdp"))     # MDP and its single-task baselines: the combined image
    summary = trainer.fit()
    summary["sharp_max_change"] = _max_change(sharp0, _branch_params(model, "sharp")) if sharp0 else float("nan")
    summary["encoder_max_change"] = _max_change(enc0, model.encoder.state_dict())
    summary["losses"] = [float(row["loss"]) for row in summary["history"] if "loss" in row]
    if hasattr(model, "set_trainable"):
        model.set_trainable("sharp", True)
    return summary


def mdp_scores(model, dataset, device="cpu") -> dict:
    """Mean PSNR (dB) of an MDP-like model over a DP dataset with ground truth.

    Keys: ``"deblur"`` (predicted sharp image vs ``sharp``), ``"input"`` (the blurred input vs
    ``sharp``), ``"views"`` (predicted views vs ground-truth views, both doubled to the full
    brightness of DPDD's stored views, 6 channels), ``"lc"`` (mean ``L_C`` of the predicted
    views) and ``"n"``; entries a model does not predict are None.
    """
    from dplab.metrics.image import psnr

    device = torch.device(device)
    model = model.to(device).eval()
    acc = {"deblur": [], "input": [], "views": [], "lc": []}
    with torch.no_grad():
        for i in range(len(dataset)):
            s = dataset[i]
            x = s["combined"][None].to(device)
            out = model(x)
            if "sharp" in s:
                gt = s["sharp"][None].to(device)
                acc["input"].append(float(psnr(x.clamp(0, 1), gt)))
                if out.sharp is not None:
                    acc["deblur"].append(float(psnr(out.sharp.clamp(0, 1), gt)))
            if out.left is not None:
                pred = torch.cat([out.left, out.right], 1) * 2
                gt = torch.cat([s["left"], s["right"]], 0)[None].to(device) * 2
                acc["views"].append(float(psnr(pred.clamp(0, 1), gt.clamp(0, 1))))
                acc["lc"].append(float(combined_loss(x, out.left, out.right)))
    res = {k: (float(np.mean(v)) if v else None) for k, v in acc.items()}
    res["n"] = len(dataset)
    return res
