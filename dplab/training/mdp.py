"""MDP training helpers (Abuolaim, Afifi & Brown, WACV 2022, Secs. 3.4 and 4.1).

The two training steps of MDP through :class:`dplab.training.trainer.Trainer` (step 1 with the sharp
decoder frozen, step 2 on both tasks), the Trainer loss built from
:func:`dplab.training.losses.mdp_loss`, and the scores the chapter reports for deblurring and for
DP-view synthesis.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["mdp_loss_fn", "train_mdp", "mdp_scores"]


def mdp_loss_fn(weights):
    """A :class:`dplab.training.trainer.Trainer` ``loss_fn(prediction, batch)`` for MDP: the total of
    :func:`dplab.training.losses.mdp_loss` with ``weights`` (a key of ``MDP_LOSS_WEIGHTS`` or four
    numbers ``(w_s, w_v, w_C, w_D)``) and its terms, read from the batch's ``combined``,
    ``left``, ``right`` and (when present) ``sharp``."""
    from dplab.training.losses import mdp_loss

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
    from dplab.training.trainer import Trainer, concat_inputs

    if hasattr(model, "set_trainable"):
        model.set_trainable("sharp", not freeze_sharp)
    sharp0 = _branch_params(model, "sharp")
    enc0 = {k: v.detach().clone() for k, v in model.encoder.state_dict().items()}
    trainer = Trainer(model, mdp_loss_fn(weights), data, config, output_dir=output_dir,
                      forward=concat_inputs("combined"))
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
    from dplab.training.losses import combined_loss
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
