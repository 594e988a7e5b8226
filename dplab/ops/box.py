"""Box (moving-average) filter of an image: one definition for the places that smooth with one.

Two border rules are in use, and they are not interchangeable:

* ``"zeros"``: zero padding counted in the mean, as flax's ``avg_pool`` with 'SAME' padding,
  which the authors of Xin et al. (ICCV 2021) use for the vignetting gain of the DP views
  (:func:`dplab.data.pixel4.vignetting_gain`);
* ``"replicate"``: edge pixels repeated, so a smooth image stays smooth up to its border
  (the local means of the noise estimate, :func:`dplab.xin.phone_data.noise_from_flats`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dplab._validate import require_choice

__all__ = ["box_mean", "BOX_PADDINGS"]

#: Border rules of :func:`box_mean`.
BOX_PADDINGS = ("zeros", "replicate")


def box_mean(x: torch.Tensor, window: int, *, padding: str = "zeros") -> torch.Tensor:
    """Mean over the ``window x window`` square centred on each pixel of ``(N, C, H, W)`` ``x``.

    Args:
        x: ``(N, C, H, W)`` tensor.
        window: odd window size (>= 1).
        padding: ``"zeros"`` (padding counted in the mean) or ``"replicate"`` (see the module).

    Returns:
        A tensor of the shape of ``x``.

    Raises:
        ValueError: an even or non-positive window, an unknown padding, or ``x`` not 4-D.

    Example:
        >>> x = torch.ones(1, 1, 3, 3)
        >>> box_mean(x, 3)[0, 0, 0, 0].item(), box_mean(x, 3, padding="replicate")[0, 0, 0, 0].item()
        (0.4444444477558136, 1.0)
    """
    if not isinstance(window, int) or isinstance(window, bool) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer, got {window!r}")
    require_choice("padding", padding, BOX_PADDINGS)
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be an (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    h = window // 2
    if padding == "replicate":
        return F.avg_pool2d(F.pad(x, [h] * 4, mode="replicate"), window, stride=1)
    x = F.avg_pool2d(x, (window, 1), stride=1, padding=(h, 0), count_include_pad=True)
    return F.avg_pool2d(x, (1, window), stride=1, padding=(0, h), count_include_pad=True)
