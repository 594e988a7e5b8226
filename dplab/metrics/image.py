"""Image-quality metrics with the DPDD conventions (DPDNet, Abuolaim & Brown, ECCV 2020, and its
code's ``metrics.py``).

All metrics take ``(B, C, H, W)`` float tensors in [0, 1] and return one value per image,
a ``(B,)`` float64 tensor, computed in float64:

* :func:`psnr` -- ``10 log10(data_range^2 / MSE)``, the MSE over all pixels and channels of an
  image (DPDNet ``metrics.py``; equals ``skimage.metrics.peak_signal_noise_ratio``);
* :func:`ssim` -- scikit-image's ``structural_similarity`` defaults as the papers call it:
  7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03``, sample covariance (``N / (N - 1)``),
  ``data_range = 1``, ``channel_axis`` -> per-channel SSIM averaged; the mean is taken over
  the windows that lie fully inside the image (scikit-image crops ``(7 - 1) / 2`` pixels at
  each border after filtering, which leaves exactly those windows);
* :func:`mae` -- mean absolute error over all pixels and channels;
* :func:`mse`.

The defocus-map metrics of Xin et al. / Garg et al. (AIWE(1), AIWE(2), 1 - |rho_s|) are
defined in :mod:`dplab.metrics.defocus` and re-exported here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dplab._validate import require_image, require_positive

# Defocus-map metrics (Garg et al., ICCV 2019) live in dplab.metrics.defocus; re-exported here so
# that every metric is reachable as dplab.metrics.image.<name>.
from dplab.metrics.defocus import aiwe1, aiwe2, spearman_error  # noqa: E402

__all__ = ["mse", "psnr", "ssim", "mae", "aiwe1", "aiwe2", "spearman_error"]


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    pred = require_image("pred", pred)
    target = require_image("target", target)
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    return pred.to(torch.float64), target.to(torch.float64)


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image.

    Shape:
        ``(B, C, H, W)`` x 2 -> ``(B,)`` float64.

    Example:
        >>> mse(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), 0.5)).tolist()
        [0.25]
    """
    pred, target = _pair(pred, target)
    return ((pred - target) ** 2).mean(dim=(1, 2, 3))


def psnr(pred: torch.Tensor, target: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image: ``10 log10(data_range^2 / MSE)``.

    Args:
        pred: estimate, ``(B, C, H, W)``.
        target: ground truth, same shape.
        data_range: the span of valid values (1 for images in [0, 1]).

    Returns:
        ``(B,)`` float64; ``inf`` for an exact match.

    Shape:
        ``(B, C, H, W)`` x 2 -> ``(B,)``.

    Raises:
        TypeError, ValueError: not float ``(B, C, H, W)`` tensors of equal shape, or NaN/inf.

    Example:
        >>> psnr(torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.1)).round(decimals=6).tolist()
        [20.0]
    """
    data_range = require_positive("data_range", data_range)
    return 10.0 * torch.log10(data_range**2 / mse(pred, target))


def mae(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean absolute error per image, over all pixels and channels.

    Shape:
        ``(B, C, H, W)`` x 2 -> ``(B,)`` float64.

    Example:
        >>> mae(torch.zeros(2, 1, 2, 2), torch.ones(2, 1, 2, 2)).tolist()
        [1.0, 1.0]
    """
    pred, target = _pair(pred, target)
    return (pred - target).abs().mean(dim=(1, 2, 3))


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Structural similarity per image with scikit-image's defaults (Wang et al. 2004).

    Equals ``skimage.metrics.structural_similarity(p, t, data_range=1, channel_axis=-1)`` on
    each ``(H, W, C)`` image: local means, variances and covariance from a uniform
    ``win_size x win_size`` window, variances with the sample normalisation
    ``N / (N - 1)``, ``C1 = (k1 L)^2``, ``C2 = (k2 L)^2``, the SSIM map averaged over the
    windows fully inside the image and over channels.

    Args:
        pred: estimate, ``(B, C, H, W)``.
        target: ground truth, same shape.
        data_range: ``L``, the span of valid values.
        win_size: odd window side (scikit-image: 7).
        k1, k2: stabilising constants.

    Returns:
        ``(B,)`` float64.

    Shape:
        ``(B, C, H, W)`` x 2 -> ``(B,)``; H and W must be at least ``win_size``.

    Raises:
        ValueError: shapes differ, the image is smaller than the window, or ``win_size`` is
            even.

    Example:
        >>> x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> ssim(x, x).tolist()
        [1.0, 1.0]
    """
    pred, target = _pair(pred, target)
    win_size = int(require_positive("win_size", win_size, integer=True))
    if win_size % 2 == 0:
        raise ValueError(f"win_size must be odd, got {win_size}")
    if min(pred.shape[-2:]) < win_size:
        raise ValueError(f"images of size {tuple(pred.shape[-2:])} are smaller than the {win_size}x{win_size} SSIM window")
    data_range = require_positive("data_range", data_range)
    b, c, h, w = pred.shape
    x, y = pred.reshape(b * c, 1, h, w), target.reshape(b * c, 1, h, w)
    n = win_size * win_size
    cov_norm = n / (n - 1.0)

    def mean(z):
        return F.avg_pool2d(z, win_size, stride=1)

    ux, uy = mean(x), mean(y)
    vx = cov_norm * (mean(x * x) - ux * ux)
    vy = cov_norm * (mean(y * y) - uy * uy)
    vxy = cov_norm * (mean(x * y) - ux * uy)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3)).reshape(b, c).mean(dim=1)
