"""Pixel and edge losses of the deblurring networks.

* :func:`charbonnier` -- smooth L1, ``sqrt(d^2 + eps^2)``.
* RDPD (Abuolaim et al., ICCV 2021, Sec. 4, Eqs. 13-16): :func:`edge_loss` (multi-scale Sobel
  edges, kernels from :func:`dplab.ops.filters.sobel_kernels`) and :func:`rdpd_loss` (MSE +
  edge loss, Eq. 16).
* DRBNet (Ruan et al., CVPR 2022, Sec. 4): :func:`multiscale_l1` (Eq. 6, main training) on
  every output scale; its VGG feature loss (Eq. 7) is :mod:`dplab.training.vgg`.

MDP's view losses ``L_C`` and ``L_D`` are in :mod:`dplab.training.mdp`. All functions take
``(B, C, H, W)`` tensors (RDPD's also ``(B, T, C, H, W)`` sequences) and return scalar tensors
that can be back-propagated.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_number, require_positive, require_tensor
from dplab.ops.filters import sobel_kernels

__all__ = [
    "charbonnier",
    "edge_loss",
    "rdpd_loss",
    "EDGE_SCALES",
    "multiscale_l1",
    "check_pair",
    "as_scales",
    "resize_target",
]


def check_pair(pred, target, pred_name="pred", target_name="target", ndims=(4,)):
    """Check that ``pred`` and ``target`` are tensors of one shape with ``ndim`` in ``ndims``
    (4: ``(B, C, H, W)``, 5: ``(B, T, C, H, W)``); return them.

    Example:
        >>> check_pair(torch.zeros(1, 3, 2, 2), torch.ones(1, 3, 2, 2))[1].shape
        torch.Size([1, 3, 2, 2])
    """
    pred = require_tensor(pred_name, pred)
    target = require_tensor(target_name, target)
    if pred.ndim not in ndims:
        shapes = " or ".join("(B, C, H, W)" if n == 4 else "(B, T, C, H, W)" for n in ndims)
        raise ValueError(f"{pred_name} must have shape {shapes}, got {tuple(pred.shape)}")
    if pred.shape != target.shape:
        raise ValueError(f"{pred_name} {tuple(pred.shape)} and {target_name} {tuple(target.shape)} "
                         "must have the same shape")
    return pred, target


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Charbonnier loss ``mean(sqrt((pred - target)^2 + eps^2))``, a smooth L1.

    Args:
        pred: prediction, any shape.
        target: same shape as ``pred``.
        eps: smoothing constant (> 0); below ``eps`` the loss is quadratic.

    Returns:
        Scalar tensor (``eps`` for equal inputs).

    Raises:
        ValueError: shapes differ or ``eps <= 0``.

    Example:
        >>> float(charbonnier(torch.zeros(4), torch.full((4,), 3.0), eps=4.0))
        5.0
    """
    pred = require_tensor("pred", pred)
    target = require_tensor("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must have the same shape")
    eps = require_positive("eps", eps)
    return torch.sqrt((pred - target) ** 2 + eps ** 2).mean()


# --------------------------------------------------------------------------- RDPD edge loss

#: Sobel sizes for the number of edge-loss scales of supplement Table S5 (RDPD+(0/1/3)).
EDGE_SCALES = {0: (), 1: (3,), 3: (3, 7, 11)}


def _flatten_seq(x):
    return x.flatten(0, 1) if x.ndim == 5 else x


def _sobel(x, k):
    c = x.shape[1]
    return F.conv2d(x, k.expand(c, 1, *k.shape), groups=c)   # 'valid', like the code


def edge_loss(pred: torch.Tensor, target: torch.Tensor,
              sizes: Sequence[int] = (3, 7, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    """Multi-scale Sobel edge loss of RDPD, Eq. 15, per direction.

    The Sobel kernels ``S_m`` are divided by their maximum (Eqs. 13-14,
    :func:`dplab.ops.filters.sobel_kernels` with ``normalize=True``).

    ``L_edge^x = mean_m MSE(I_s * S^x_m, I_d * S^x_m)`` over the sizes ``m`` (and the same
    for y), each colour channel filtered separately with 'valid' borders (as in the code).

    Args:
        pred: deblurred output ``I_d``, ``(B, C, H, W)`` or ``(B, T, C, H, W)``.
        target: ground truth ``I_s``, same shape.
        sizes: Sobel sizes ``m`` (paper: 3, 7, 11); each must be <= H and W.

    Returns:
        ``(L_edge^x, L_edge^y)``; zeros if ``sizes`` is empty.

    Raises:
        ValueError: shapes differ, a size is not odd >= 3 or exceeds the image.

    Example:
        >>> x = torch.rand(1, 3, 16, 16)
        >>> [float(v) for v in edge_loss(x, x)]
        [0.0, 0.0]
    """
    pred, target = check_pair(pred, target, ndims=(4, 5))
    pred, target = _flatten_seq(pred), _flatten_seq(target)
    sizes = tuple(sizes)
    zero = pred.new_zeros(())
    if not sizes:
        return zero, zero.clone()
    lx, ly = [], []
    for m in sizes:
        kx, ky = sobel_kernels(m, normalize=True, dtype=pred.dtype, device=pred.device)
        if m > min(pred.shape[-2:]):
            raise ValueError(f"Sobel size {m} exceeds the image size {tuple(pred.shape[-2:])}")
        lx.append(F.mse_loss(_sobel(pred, kx), _sobel(target, kx)))
        ly.append(F.mse_loss(_sobel(pred, ky), _sobel(target, ky)))
    return torch.stack(lx).mean(), torch.stack(ly).mean()


def rdpd_loss(pred: torch.Tensor, target: torch.Tensor, scales: int | Sequence[int] = 3,
              lambda_x: float = 0.03, lambda_y: float = 0.02) -> torch.Tensor:
    """RDPD training loss, Eq. 16: ``L = MSE + lambda_x L_edge^x + lambda_y L_edge^y``.

    ``lambda_x = 0.03`` and ``lambda_y = 0.02`` as in Sec. 5; ``x`` is the horizontal (width)
    axis, along which DP disparity lies. Code differences (dplab follows the paper): the code
    multiplies the lambdas into the Sobel kernels, so they act squared; its 7x7 branch reuses
    the 3x3 kernel (a bug); and it evaluates the edge terms on the first batch element only.

    Args:
        pred: output, ``(B, C, H, W)`` or a sequence ``(B, T, C, H, W)``.
        target: ground truth, same shape.
        scales: number of edge scales, 0, 1 (3x3 only, "RDPD+(1)") or 3 (3, 7, 11) as in
            supplement Table S5; or an explicit tuple of odd Sobel sizes.
        lambda_x, lambda_y: edge-loss weights (>= 0).

    Returns:
        Scalar loss (0 for equal inputs).

    Example:
        >>> x = torch.rand(2, 3, 16, 16)
        >>> float(rdpd_loss(x, x)), round(float(rdpd_loss(x, x + 0.1, scales=0)), 6)
        (0.0, 0.01)
    """
    pred, target = check_pair(pred, target, ndims=(4, 5))
    if isinstance(scales, (tuple, list)):
        sizes = tuple(scales)
    else:
        sizes = EDGE_SCALES[require_choice("scales", scales, tuple(EDGE_SCALES))]
    lambda_x = require_positive("lambda_x", lambda_x, allow_zero=True)
    lambda_y = require_positive("lambda_y", lambda_y, allow_zero=True)
    loss = F.mse_loss(pred, target)
    if sizes:
        lx, ly = edge_loss(pred, target, sizes)
        loss = loss + lambda_x * lx + lambda_y * ly
    return loss


# --------------------------------------------------------------------------- DRBNet's multi-scale L1

def as_scales(preds) -> list[torch.Tensor]:
    """A prediction or a list of per-scale predictions as a checked list of ``(B, C, H, W)``.

    Example:
        >>> len(as_scales(torch.zeros(1, 3, 4, 4)))
        1
    """
    if isinstance(preds, torch.Tensor):
        return [preds]
    preds = list(preds)
    if not preds:
        raise ValueError("preds is an empty list")
    for i, p in enumerate(preds):
        require_tensor(f"preds[{i}]", p)
        if p.ndim != 4:
            raise ValueError(f"preds[{i}] must have shape (B, C, H, W), got {tuple(p.shape)}")
    return preds


def resize_target(target: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``target`` area-downsampled to the size of ``like`` (itself when the sizes agree).

    Example:
        >>> resize_target(torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 4, 4)).shape
        torch.Size([1, 3, 4, 4])
    """
    if target.shape[-2:] == like.shape[-2:]:
        return target
    return F.interpolate(target, size=tuple(like.shape[-2:]), mode="area")


def multiscale_l1(preds, target: torch.Tensor, weights: Sequence[float] | None = None) -> torch.Tensor:
    """DRBNet main-training loss, Eq. 6, applied to every scale (Sec. 4: "the losses are
    applied to all scales"): ``sum_n w_n mean|y_n - down_n(y)|``.

    The target is area-downsampled to each prediction's size (as DRBNet downsamples its
    input). Weights default to 1 per scale.

    Args:
        preds: one ``(B, C, H, W)`` tensor or a list, e.g. ``DRBNet(...)(x, return_scales=True)``.
        target: full-resolution ground truth ``(B, C, H, W)``.
        weights: optional weight per scale.

    Returns:
        Scalar loss.

    Raises:
        ValueError: bad shapes or a weights list of the wrong length.

    Example:
        >>> y = torch.rand(1, 3, 16, 16)
        >>> preds = [F.interpolate(y, scale_factor=0.5, mode="area"), y]
        >>> float(multiscale_l1(preds, y)), float(multiscale_l1([y + 0.5], y))
        (0.0, 0.5)
    """
    preds = as_scales(preds)
    target = require_tensor("target", target)
    if target.ndim != 4:
        raise ValueError(f"target must have shape (B, C, H, W), got {tuple(target.shape)}")
    weights = [1.0] * len(preds) if weights is None else [float(require_number("weights", w)) for w in weights]
    if len(weights) != len(preds):
        raise ValueError(f"weights has {len(weights)} entries for {len(preds)} scales")
    total = target.new_zeros(())
    for w, p in zip(weights, preds):
        if p.shape[:2] != target.shape[:2]:
            raise ValueError(f"prediction {tuple(p.shape)} and target {tuple(target.shape)} differ in (B, C)")
        total = total + w * F.l1_loss(p, resize_target(target, p))
    return total
