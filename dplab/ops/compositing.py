"""Back-to-front "over" compositing of a premultiplied layer (Porter & Duff, SIGGRAPH 1984).

A layer with colour ``c`` and opacity ``a`` seen in front of what is already there, ``back``,
gives ``back (1 - a) + a c``. With the colour *premultiplied* by its opacity (``front = a c``,
what blurring the colour times the layer's mask gives), that is ``back (1 - a) + front``.
Applied layer by layer from the farthest to the nearest, this is the compositing of RDPD's
layered dual-pixel renderer (Abuolaim et al., ICCV 2021, Sec. 3: each layer's blurred colour
over the running result, its blurred mask as the opacity) and of the light-field and aperture
references that the book checks it against. The opacities composited with themselves,
``over(coverage, a, a)``, give the coverage ``1 - prod_i (1 - a_i)`` used to normalise.
"""

from __future__ import annotations

import torch

__all__ = ["over"]


def over(back: torch.Tensor, front: torch.Tensor, alpha: torch.Tensor, *,
         inplace: bool = False) -> torch.Tensor:
    """``back * (1 - alpha) + front``: the premultiplied layer ``front`` over ``back``.

    Args:
        back: what lies behind (the running result of the farther layers).
        front: the layer's colour premultiplied by its opacity (for a colour ``c`` that is
            not premultiplied, pass ``alpha * c``).
        alpha: the layer's opacity in [0, 1] (not clamped here); broadcasts against ``back``
            and ``front`` (e.g. ``(B, 1, H, W)`` against ``(B, C, H, W)``).
        inplace: write the result into ``back`` (which must then have the result's shape)
            and return it; ``back`` may be a view, such as a window of a larger image.

    Returns:
        The composite, of the broadcast shape (``back`` itself when ``inplace``).

    Example:
        >>> back = torch.tensor([0.2, 0.8])
        >>> over(back, torch.tensor([0.25, 0.25]), torch.tensor([0.5, 0.5]))
        tensor([0.3500, 0.6500])
    """
    if inplace:
        return back.mul_(1.0 - alpha).add_(front)
    return back * (1.0 - alpha) + front
