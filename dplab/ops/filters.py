"""Sobel kernels of any odd size, as OpenCV builds them (``cv2.getDerivKernels``).

One definition for the two places the book filters with Sobel kernels: DPDNet's patch filter
(Abuolaim & Brown, ECCV 2020, its ``image_to_patch_filter.py``: the raw OpenCV kernels,
:mod:`dplab.data.sharpness`) and RDPD's multi-scale edge loss (Abuolaim et al., ICCV 2021,
Eqs. 13-14: the kernels divided by their maximum, :func:`dplab.training.losses.edge_loss`).
"""

from __future__ import annotations

import math

import torch

from dplab._validate import require_positive

__all__ = ["sobel_factors", "sobel_kernels"]


def sobel_factors(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The separable factors of the ``size x size`` Sobel kernel (float64).

    Smoothing: the binomial row of length ``size``; derivative: the binomial row of length
    ``size - 1`` convolved with ``[-1, 1]`` (equivalently, that of length ``size - 2``
    convolved with ``[-1, 0, 1]``), rising to the right (correlation order, ``F.conv2d``).

    Raises:
        ValueError: ``size`` is not an odd integer >= 3.

    Example:
        >>> [v.tolist() for v in sobel_factors(5)]
        [[1.0, 4.0, 6.0, 4.0, 1.0], [-1.0, -2.0, 0.0, 2.0, 1.0]]
    """
    size = int(require_positive("size", size, integer=True))
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd integer >= 3, got {size}")
    smooth = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    inner = torch.tensor([math.comb(size - 2, k) for k in range(size - 1)], dtype=torch.float64)
    deriv = torch.zeros(size, dtype=torch.float64)
    deriv[1:] += inner      # full convolution with [-1, 1] (correlation order):
    deriv[:-1] -= inner     # deriv[j] = inner[j - 1] - inner[j]
    return smooth, deriv


def sobel_kernels(size: int, *, normalize: bool = False, dtype=torch.float64,
                  device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``size x size`` Sobel kernels ``(S^x, S^y)``.

    ``S^x = smooth^T deriv`` differentiates along x (the width axis, across columns),
    ``S^y = S^x^T`` along y (:func:`sobel_factors`). The entries are correlation weights
    (``F.conv2d``), rising to the right and downwards.

    Args:
        size: odd kernel size >= 3.
        normalize: divide each kernel by its maximum (2, 100 and 12,096 for sizes 3, 7, 11),
            as RDPD's edge loss does (Eqs. 13-14, the authors' code); False keeps OpenCV's
            integer weights (DPDNet's patch filter).
        dtype, device: of the result (computed in float64).

    Returns:
        ``(S^x, S^y)``, each ``(size, size)``.

    Raises:
        ValueError: ``size`` is not an odd integer >= 3.

    Example:
        >>> kx, ky = sobel_kernels(3)
        >>> kx.tolist()
        [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
        >>> torch.equal(ky, kx.T), (sobel_kernels(3, normalize=True)[0] * 2).equal(kx)
        (True, True)
    """
    smooth, deriv = sobel_factors(size)
    kx = smooth[:, None] * deriv[None, :]
    if normalize:
        kx = kx / kx.max()
    return kx.to(dtype=dtype, device=device), kx.T.contiguous().to(dtype=dtype, device=device)
