"""DPDNet's low-texture patch filter (Abuolaim & Brown, ECCV 2020, Sec. 4; its
``image_to_patch_filter.py``): per patch, the sum of the Sobel gradient magnitude of the
grayscale *target* at kernel sizes 3, 7, 11, 15; each of the four energies is min-max
normalised over the image's patches, the four are multiplied, and the lowest 30% are dropped.

RDPD and MDP use a cheaper variant for random patches (their code): draw a few extra
candidate windows and drop those with the lowest Sobel energy at kernel size 5
(:class:`dplab.data.patches.RandomPatches` with ``filter_extra``). The Sobel kernels are
OpenCV's (:func:`dplab.ops.filters.sobel_kernels`).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from dplab._validate import require_positive
from dplab.ops.filters import sobel_factors

__all__ = ["DPDNET_KSIZES", "to_gray", "sobel_energy", "sharpness_scores", "keep_sharpest"]

#: Sobel sizes of DPDNet's filter.
DPDNET_KSIZES = (3, 7, 11, 15)


def to_gray(image: torch.Tensor) -> torch.Tensor:
    """Luma ``0.299 R + 0.587 G + 0.114 B`` (OpenCV's RGB->gray, used by DPDNet's filter).

    Shape:
        ``(..., 3, H, W)`` -> ``(..., 1, H, W)``.

    Example:
        >>> to_gray(torch.ones(3, 2, 2)).flatten().tolist()
        [1.0, 1.0, 1.0, 1.0]
    """
    if not isinstance(image, torch.Tensor) or image.ndim < 3 or image.shape[-3] != 3:
        raise ValueError(f"image must have 3 channels at dim -3, got {getattr(image, 'shape', None)}")
    weights = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device)
    return (image * weights[:, None, None]).sum(dim=-3, keepdim=True)


def sobel_energy(gray: torch.Tensor, ksize: int) -> torch.Tensor:
    """Sum over each image of the Sobel gradient magnitude ``sqrt(gx^2 + gy^2)``.

    Borders are reflected without repeating the edge pixel (OpenCV's default
    ``BORDER_REFLECT_101``), as ``cv2.Sobel`` does on each patch. Computed in float64.

    Args:
        gray: ``(N, 1, H, W)`` grayscale patches (H, W > ksize // 2).
        ksize: odd Sobel size.

    Returns:
        ``(N,)`` float64 energies.

    Example:
        >>> ramp = torch.arange(5.).repeat(5, 1)[None, None]  # d/dx = 1 per pixel
        >>> float(sobel_energy(ramp, 3)[0])  # 3x3 Sobel gain 8; the reflected border columns give 0
        120.0
    """
    if not isinstance(gray, torch.Tensor) or gray.ndim != 4 or gray.shape[1] != 1:
        raise ValueError(f"gray must have shape (N, 1, H, W), got {getattr(gray, 'shape', None)}")
    pad = ksize // 2
    if min(gray.shape[-2:]) <= pad:
        raise ValueError(f"patches of size {tuple(gray.shape[-2:])} are too small for a {ksize}x{ksize} Sobel kernel")
    smooth, deriv = (v.to(gray.device) for v in sobel_factors(ksize))
    x = F.pad(gray.to(torch.float64), (pad, pad, pad, pad), mode="reflect")
    gx = F.conv2d(F.conv2d(x, deriv.view(1, 1, 1, -1)), smooth.view(1, 1, -1, 1))
    gy = F.conv2d(F.conv2d(x, smooth.view(1, 1, 1, -1)), deriv.view(1, 1, -1, 1))
    return torch.sqrt(gx * gx + gy * gy).sum(dim=(1, 2, 3))


def sharpness_scores(gray: torch.Tensor, ksizes: Sequence[int] = DPDNET_KSIZES) -> torch.Tensor:
    """DPDNet's patch score: product over ``ksizes`` of the min-max normalised Sobel energies.

    A kernel size at which all patches have the same energy contributes a factor 1 (DPDNet's
    code would divide by zero there).

    Args:
        gray: ``(N, 1, H, W)`` grayscale target patches of one image.
        ksizes: Sobel sizes (DPDNet: 3, 7, 11, 15).

    Returns:
        ``(N,)`` float64 scores in [0, 1].

    Example:
        >>> flat, ramp = torch.zeros(1, 1, 16, 16), torch.arange(16.).repeat(16, 1)[None, None]
        >>> sharpness_scores(torch.cat([flat, ramp])).tolist()
        [0.0, 1.0]
    """
    score = torch.ones(gray.shape[0], dtype=torch.float64, device=gray.device)
    for k in ksizes:
        e = sobel_energy(gray, k)
        span = e.max() - e.min()
        score = score * ((e - e.min()) / span if span > 0 else torch.ones_like(e))
    return score


def keep_sharpest(scores: torch.Tensor, drop: int) -> list[int]:
    """Indices (in order) left after dropping the ``drop`` lowest scores; ties drop the
    earlier index first, as DPDNet's repeated ``argmin``.

    Example:
        >>> keep_sharpest(torch.tensor([0.5, 0.1, 0.9, 0.1]), 2)
        [0, 2]
    """
    drop = int(require_positive("drop", drop, allow_zero=True, integer=True))
    if drop >= len(scores):
        raise ValueError(f"cannot drop {drop} of {len(scores)} patches")
    order = sorted(range(len(scores)), key=lambda i: (float(scores[i]), i))
    dropped = set(order[:drop])
    return [i for i in range(len(scores)) if i not in dropped]
