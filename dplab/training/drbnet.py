"""DRBNet training helpers (Ruan et al., CVPR 2022, Secs. 4 and 5.1).

* :func:`zero_drb_heads`: the start of short runs, every dynamic residual block reduced to its
  identity path (what the residual pyramid does at construction).
* :func:`finetune_loss`: the stage-2 loss, the VGG-19 feature loss (Eq. 7,
  :class:`dplab.training.vgg.VGGFeatureLoss`) when its local weights file exists, else the
  multi-scale L1 of Eq. 6 (:func:`dplab.training.losses.multiscale_l1`), the paper's own
  ablation (Table 5, row c).
"""

from __future__ import annotations

from typing import Callable

import torch

from dplab.training.losses import multiscale_l1
from dplab.training.vgg import VGGFeatureLoss, default_vgg19_path

__all__ = ["zero_drb_heads", "finetune_loss"]


def zero_drb_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Zero the last layer of every DRB's kernel and residual branch of a
    :class:`~dplab.models.DRBNet` (in place), so that it starts as its identity path (the
    input downsampled by 8 and upsampled back); the DRBNet chapter's start for short runs of
    the authors' pyramid.

    Raises:
        ValueError: the model has no DRBs.

    Example:
        >>> from dplab.models import build
        >>> net = zero_drb_heads(build("drbnet", width=4))
        >>> sum(float(p.detach().abs().sum()) for drb in net.drbs.values() for p in drb.res_branch[-1].parameters())
        0.0
    """
    drbs = getattr(model, "drbs", None)
    if drbs is None:
        raise ValueError("model has no DRBs (expected a dplab.models.DRBNet)")
    with torch.no_grad():
        for drb in drbs.values():
            for branch in (drb.kernel_branch, drb.res_branch):
                for p in (branch[-1].parameters() if branch is not None else ()):
                    p.zero_()
    return model


def finetune_loss(path=None) -> tuple[Callable, str]:
    """DRBNet's stage-2 loss ``loss(preds, target)`` on every output scale, and its kind.

    Args:
        path: the VGG-19 weights file; default :func:`dplab.training.vgg.default_vgg19_path`.

    Returns:
        ``(loss, "vgg")`` with the VGG feature loss (Eq. 7) when ``path`` is a file, else
        ``(loss, "l1")`` with the multi-scale L1 of Eq. 6 (Table 5, row c). The VGG loss
        follows the target to its device.

    Example:
        >>> import tempfile
        >>> loss, kind = finetune_loss(tempfile.mkdtemp() + "/missing.pth")
        >>> kind, float(loss([torch.ones(1, 3, 4, 4)], torch.zeros(1, 3, 4, 4)))
        ('l1', 1.0)
    """
    from pathlib import Path

    path = Path(path).expanduser() if path is not None else default_vgg19_path()
    if path.is_file():
        vgg = VGGFeatureLoss(path)
        return (lambda preds, target: vgg.to(target.device)(preds, target)), "vgg"
    return multiscale_l1, "l1"
