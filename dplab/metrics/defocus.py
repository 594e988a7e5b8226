"""Affine-invariant metrics for defocus (inverse-depth) maps: AIWE(1), AIWE(2), 1 - |rho_s|.

Garg, Wadhwa, Ansari, Barron, "Learning Single Camera Depth Estimation using Dual-Pixels",
ICCV 2019, Sec. 5; used for the defocus maps of Xin et al., ICCV 2021, Table 1. A defocus map
from dual pixels is known only up to an affine transform (``d = A + B / Z``), so the prediction
``x`` is first mapped by the affine function ``a x + b`` that best fits the ground truth ``y``
under confidence weights ``w``, then:

* AIWE(1) (:func:`aiwe1`): weighted mean absolute error, the affine fit being the weighted
  L1 fit found by iteratively reweighted least squares (5 iterations, IRLS weights
  ``1 / max(1e-3, |r|)``, the first iteration unweighted);
* AIWE(2) (:func:`aiwe2`): weighted root mean squared error after one weighted least-squares
  fit;
* 1 - |rho_s| (:func:`spearman_error`): one minus the absolute weighted Spearman rank
  correlation, computed as the weighted Pearson correlation of the ranks of ``(x, y)`` and of
  ``(-x, y)``, keeping the larger.

Details follow the authors' code (google-research ``dual_pixels/eval/get_metrics.py``): ranks
are ordinal (``argsort(argsort(z))``, ties broken by position, not averaged), are computed
over *all* pixels (zero-weight pixels included) and rescaled to about ``[-1, 1]``; the
reference passes ``l2_regularizer=1e-5`` to ``tf.linalg.lstsq`` with ``fast=False``, a mode
in which TensorFlow ignores the regulariser, so the fits here are plain weighted least squares
(closed form, float64). A constant prediction fits as the weighted mean of ``y`` (the
minimum-norm least-squares solution gives the same fitted values). Without weights all pixels
count equally.

Inputs are torch tensors or numpy arrays of one shape. A 4-D ``(B, C, H, W)`` input gives one
value per image (shape ``(B,)``); any other shape is treated as one map (0-dim result).
"""

from __future__ import annotations

import torch

__all__ = ["aiwe1", "aiwe2", "spearman_error", "affine_fit"]


def _prepare(pred, gt, weight):
    """float64 tensors of shape (B, n) and whether the input was batched."""
    def as_t(name, v):
        t = torch.as_tensor(v)
        if not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int16, torch.int32,
                                                      torch.int64, torch.bool)):
            raise TypeError(f"{name} must be a real array or tensor, got dtype {t.dtype}")
        return t.to(torch.float64)

    x, y = as_t("pred", pred), as_t("gt", gt)
    if x.shape != y.shape:
        raise ValueError(f"pred and gt must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.numel() < 2:
        raise ValueError(f"pred must have at least 2 elements, got shape {tuple(x.shape)}")
    w = torch.ones_like(x) if weight is None else as_t("weight", weight).to(x.device)
    if w.shape != x.shape:
        try:
            w = w.expand(x.shape)
        except RuntimeError:
            raise ValueError(f"weight of shape {tuple(w.shape)} does not broadcast to {tuple(x.shape)}") from None
    y, w = y.to(x.device), w.to(x.device)
    for name, t in (("pred", x), ("gt", y), ("weight", w)):
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"{name} contains NaN or infinite values")
    if bool((w < 0).any()):
        raise ValueError("weight must be >= 0")
    batched = x.ndim == 4
    shape = (x.shape[0], -1) if batched else (1, -1)
    x, y, w = x.reshape(shape), y.reshape(shape), w.reshape(shape)
    if bool((w.sum(1) <= 0).any()):
        raise ValueError("weight sums to 0 (for at least one image): no pixel to evaluate")
    return x, y, w, batched


def _finish(v: torch.Tensor, batched: bool) -> torch.Tensor:
    return v.float() if batched else v[0].float()


def _wls(x, y, w):
    """Weighted least-squares ``a x + b ~ y`` per row; returns (a, b) of shape (B, 1)."""
    sw = w.sum(1, keepdim=True)
    mx = (w * x).sum(1, keepdim=True) / sw
    my = (w * y).sum(1, keepdim=True) / sw
    dx = x - mx
    vxx = (w * dx * dx).sum(1, keepdim=True)
    cxy = (w * dx * (y - my)).sum(1, keepdim=True)
    ok = vxx > 0
    a = torch.where(ok, cxy / torch.where(ok, vxx, torch.ones_like(vxx)), torch.zeros_like(vxx))
    return a, my - a * mx


def affine_fit(pred, gt, weight=None):
    """Weighted least-squares affine map of ``pred`` onto ``gt``: ``(a, b)`` with ``a pred + b ~ gt``.

    Args:
        pred: predicted map (any shape; 4-D for per-image fits).
        gt: ground truth, same shape.
        weight: optional non-negative confidence, same shape.

    Returns:
        ``(a, b)``: float64 tensors, 0-dim or ``(B,)``.

    Raises:
        TypeError / ValueError: see :func:`aiwe2`.

    Example:
        >>> a, b = affine_fit(torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 3.0, 5.0]))
        >>> float(a), float(b)
        (2.0, 1.0)
    """
    x, y, w, batched = _prepare(pred, gt, weight)
    a, b = _wls(x, y, w)
    return (a[:, 0], b[:, 0]) if batched else (a[0, 0], b[0, 0])


def aiwe1(pred, gt, weight=None, *, irls_iters: int = 5, epsilon: float = 1e-3) -> torch.Tensor:
    """Affine-invariant weighted mean absolute error, AIWE(1) (Garg et al. 2019).

    ``sum(w |a x + b - y|) / sum(w)`` with ``(a, b)`` from ``irls_iters`` iterations of
    reweighted least squares (weights ``w / max(epsilon, |r|)``, the first with ``w``).

    Args:
        pred: predicted defocus map ``x``.
        gt: ground-truth map ``y``, same shape.
        weight: confidence ``w >= 0`` (default all ones), e.g. ``gt > 0`` for the Pixel 4 maps.
        irls_iters: number of IRLS fits (5 in the reference).
        epsilon: floor of ``|r|`` in the IRLS weights (1e-3).

    Returns:
        0-dim float32 tensor, or ``(B,)`` for 4-D inputs.

    Shape:
        any; ``(B, C, H, W) -> (B,)``.

    Raises:
        TypeError: non-numeric inputs.
        ValueError: mismatched shapes, NaN/inf, negative weights, all-zero weights.

    Example:
        >>> x = torch.tensor([0.0, 1.0, 2.0, 3.0])
        >>> round(float(aiwe1(x, 2 * x + 1)), 6)   # an affine copy has no error
        0.0
    """
    x, y, w, batched = _prepare(pred, gt, weight)
    if int(irls_iters) < 1:
        raise ValueError(f"irls_iters must be >= 1, got {irls_iters}")
    irls = torch.ones_like(w)
    for _ in range(int(irls_iters)):
        a, b = _wls(x, y, w * irls)
        resid = (a * x + b - y).abs()
        irls = 1.0 / resid.clamp_min(float(epsilon))
    return _finish((w * resid).sum(1) / w.sum(1), batched)


def aiwe2(pred, gt, weight=None) -> torch.Tensor:
    """Affine-invariant weighted root mean squared error, AIWE(2) (Garg et al. 2019).

    ``sqrt(sum(w (a x + b - y)^2) / sum(w))`` with ``(a, b)`` the weighted least-squares fit.

    Args:
        pred: predicted defocus map.
        gt: ground truth, same shape.
        weight: confidence (default all ones).

    Returns:
        0-dim float32 tensor, or ``(B,)`` for 4-D inputs.

    Shape:
        any; ``(B, C, H, W) -> (B,)``.

    Raises:
        TypeError / ValueError: as :func:`aiwe1`.

    Example:
        >>> x = torch.tensor([0.0, 1.0, 2.0, 3.0]); y = torch.tensor([0.0, 1.0, 1.0, 2.0])
        >>> round(float(aiwe2(x, y)), 4)   # fit 0.6 x + 0.1, residuals (0.1, -0.3, 0.3, -0.1)
        0.2236
    """
    x, y, w, batched = _prepare(pred, gt, weight)
    a, b = _wls(x, y, w)
    r2 = (a * x + b - y).square()
    return _finish(((w * r2).sum(1) / w.sum(1)).sqrt(), batched)


def _ranks(z: torch.Tensor) -> torch.Tensor:
    """Ordinal ranks per row (stable: ties by position), rescaled as the reference."""
    n = z.shape[1]
    order = torch.argsort(z, dim=1, stable=True)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(n, device=z.device).expand_as(order))
    half = n // 2
    return (rank - half).to(torch.float64) / half


def _pearson(x, y, w):
    sw = w.sum(1)
    e = lambda z: (w * z).sum(1) / sw
    mx, my = e(x), e(y)
    vx, vy = e(x * x) - mx ** 2, e(y * y) - my ** 2
    return (e(x * y) - mx * my) / (vx * vy).sqrt()


def spearman_error(pred, gt, weight=None) -> torch.Tensor:
    """``1 - |rho_s|``, one minus the absolute weighted Spearman rank correlation.

    ``rho = max(pearson_w(rank(x), rank(y)), pearson_w(rank(-x), rank(y)))`` (the reference's
    way of taking the absolute value). NaN when either map is constant over the pixels of
    positive weight: a correlation with a constant is undefined (the ordinal ranks alone would
    order its equal values by position and give a meaningless number).

    Args:
        pred: predicted defocus map.
        gt: ground truth, same shape.
        weight: confidence (default all ones).

    Returns:
        0-dim float32 tensor, or ``(B,)`` for 4-D inputs.

    Shape:
        any; ``(B, C, H, W) -> (B,)``.

    Raises:
        TypeError / ValueError: as :func:`aiwe1`.

    Example:
        >>> x = torch.tensor([1.0, 2.0, 3.0, 4.0]); y = torch.tensor([1.0, 3.0, 2.0, 4.0])
        >>> round(float(spearman_error(x, y)), 6)   # rho = 1 - 6 * 2 / (4 * 15) = 0.8
        0.2
        >>> spearman_error(torch.ones(4), y)       # constant: no correlation to measure
        tensor(nan)
    """
    x, y, w, batched = _prepare(pred, gt, weight)
    ry = _ranks(y)
    rho = torch.maximum(_pearson(_ranks(x), ry, w), _pearson(_ranks(-x), ry, w))
    # Ordinal ranks break ties by position, so a constant map would get a made-up order
    # (and, say, 0.95): a correlation with a constant is undefined.
    rho = torch.where(_constant(x, w) | _constant(y, w), torch.nan, rho)
    return _finish(1.0 - rho, batched)


def _constant(z: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per row: whether ``z`` takes one value over the pixels of positive weight."""
    counted = w > 0
    high = torch.where(counted, z, -torch.inf).amax(1)
    low = torch.where(counted, z, torch.inf).amin(1)
    return high == low
