"""Measurements on rendered dual-pixel views: their horizontal shift and the pixels near edges.

* :func:`horizontal_shift`: the sub-pixel shift between two views (the DP disparity) by
  zero-mean normalised correlation, refined by a parabola through the peak;
* :func:`edge_band`: the band of pixels near a change of a label map (a depth edge), where
  occlusion makes the renderers of RDPD (Abuolaim et al., ICCV 2021, Sec. 3) differ, and the
  flat rest, to score errors separately on each.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["horizontal_shift", "edge_band"]


def horizontal_shift(a, b, mask=None, max_shift=20):
    """Sub-pixel horizontal shift ``s`` (px) with ``a(x) ~ b(x - s)``, by normalised correlation.

    ``a``, ``b``: 2-D arrays or tensors (e.g. the left and right view); ``mask``: boolean
    ``(H, W)`` of the pixels to compare. The zero-mean normalised correlation is evaluated at
    integer shifts ``-max_shift .. max_shift`` and refined by a parabola through the peak.
    Positive: ``a`` is ``b`` moved to the right.

    Example:
        >>> x = np.random.default_rng(0).random((8, 64))
        >>> round(horizontal_shift(np.roll(x, 3, axis=1), x, max_shift=5), 6)
        3.0
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    shifts = np.arange(-max_shift, max_shift + 1)
    scores = []
    for s in shifts:
        mm = m & np.roll(m, s, axis=1)
        x, y = a[mm], np.roll(b, s, axis=1)[mm]
        x, y = x - x.mean(), y - y.mean()
        scores.append((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-300))
    scores = np.array(scores)
    k = int(np.argmax(scores))
    off = 0.0
    if 0 < k < len(shifts) - 1:
        lo, c, hi = scores[k - 1:k + 2]
        den = lo - 2 * c + hi
        off = 0.5 * (lo - hi) / den if den != 0 else 0.0
    return float(shifts[k] + off)


def edge_band(labels, radius, *, border=None):
    """Pixels within ``radius`` (Chebyshev) of a change of ``labels`` ``(H, W)``, away from the frame.

    Returns ``(band, flat)``: boolean ``(H, W)`` tensors of the band and of the rest, both
    without the outer ``border`` pixels (default ``radius``).

    Example:
        >>> labels = torch.zeros(6, 8, dtype=torch.long)
        >>> labels[:, 4:] = 1
        >>> band, flat = edge_band(labels, 1)
        >>> band[2].int().tolist(), flat[2].int().tolist()
        ([0, 0, 1, 1, 1, 1, 0, 0], [0, 1, 0, 0, 0, 0, 1, 0])
    """
    lab = torch.as_tensor(labels)
    edge = torch.zeros(lab.shape, dtype=torch.bool)
    e = lab[:, 1:] != lab[:, :-1]
    edge[:, 1:] |= e
    edge[:, :-1] |= e
    e = lab[1:] != lab[:-1]
    edge[1:] |= e
    edge[:-1] |= e
    r = int(radius)
    band = F.max_pool2d(edge[None, None].float(), 2 * r + 1, 1, r)[0, 0] > 0
    b = r if border is None else int(border)
    inner = torch.zeros_like(band)
    inner[b:lab.shape[0] - b, b:lab.shape[1] - b] = True
    return band & inner, ~band & inner
