"""The radial-distance channel of RDPD (Abuolaim et al., ICCV 2021, Sec. 4, change 2; supplement
S4.2, Fig. S4): every pixel's distance from the image centre over the centre-to-corner
distance, so a network can learn position-dependent (radially distorted, vignetted) DP blur.

One definition for the models, the patch samplers and the training and evaluation code:
:func:`radial_distance_map` is the map of a whole frame, :func:`radial_patch` the map of a
window of it (a training patch keeps its position in the full frame). Both return a channel
map ``(1, H, W)``, the layout of one channel of a sample dict; add the batch (and time) axes
with ``expand``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from dplab._validate import require_positive

__all__ = ["radial_distance_map", "radial_patch"]


@lru_cache(maxsize=16)
def _full_map(height: int, width: int, quantize: bool) -> torch.Tensor:
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    y = torch.arange(height, dtype=torch.float64)[:, None] - cy
    x = torch.arange(width, dtype=torch.float64)[None, :] - cx
    corner = math.hypot(cy, cx)
    d = torch.sqrt(y * y + x * x) / (corner if corner > 0 else 1.0)
    if quantize:
        d = torch.round(d * 255.0) / 255.0
    return d.to(torch.float32)[None]


def radial_distance_map(height: int, width: int, *, quantize: bool = True, dtype=torch.float32,
                        device=None) -> torch.Tensor:
    """Distance of every pixel from the image centre over the centre-to-corner distance.

    Pixel centres are at integer coordinates, so the centre is ``((H-1)/2, (W-1)/2)`` and the
    four corner pixels get exactly 1. The authors' data code stores ``round(255 d)`` in an
    8-bit PNG mask, reproduced by ``quantize=True``. Computed in float64 and rounded to
    float32 (then cast to ``dtype``).

    Args:
        height: image height in pixels (>= 1).
        width: image width in pixels (>= 1).
        quantize: round to multiples of 1/255 like the code's 8-bit masks.
        dtype: floating dtype of the result.
        device: torch device of the result.

    Returns:
        ``(1, H, W)`` tensor in [0, 1] (a new tensor the caller may modify).

    Raises:
        TypeError, ValueError: non-integer or non-positive sizes.

    Example:
        >>> m = radial_distance_map(5, 9)
        >>> tuple(m.shape), float(m[0, 0, 0]), float(m[0, 2, 4]), round(float(m[0, 2, 0]) * 255)
        ((1, 5, 9), 1.0, 0.0, 228)
    """
    height = int(require_positive("height", height, integer=True))
    width = int(require_positive("width", width, integer=True))
    full = _full_map(height, width, bool(quantize))
    out = full.to(dtype=dtype, device=device)
    return out.clone() if out is full else out


def radial_patch(image_size: tuple[int, int], top: int, left: int, patch_size, *,
                 quantize: bool = True) -> torch.Tensor:
    """The radial map of the window at ``(top, left)`` in a full image of ``image_size``.

    Args:
        image_size: ``(H, W)`` of the full image.
        top, left: the window's top-left corner.
        patch_size: ``p`` or ``(ph, pw)``.
        quantize: as :func:`radial_distance_map`.

    Returns:
        ``(1, ph, pw)`` float32.

    Raises:
        ValueError: the window does not fit the image.

    Example:
        >>> radial_patch((5, 9), 0, 0, 1).item()  # a corner of the full image
        1.0
    """
    sizes = tuple(patch_size) if isinstance(patch_size, (tuple, list)) else (patch_size, patch_size)
    if len(sizes) != 2:
        raise ValueError(f"patch_size must be an int or an (h, w) pair, got {patch_size!r}")
    ph, pw = (int(require_positive("patch_size", s, integer=True)) for s in sizes)
    full = _full_map(int(image_size[0]), int(image_size[1]), bool(quantize))
    if top < 0 or left < 0 or top + ph > full.shape[-2] or left + pw > full.shape[-1]:
        raise ValueError(f"window ({top}, {left}) + {(ph, pw)} does not fit an image of size {tuple(image_size)}")
    return full[:, top : top + ph, left : left + pw].clone()
