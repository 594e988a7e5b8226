"""NIMAT: eight-view "new image motion attribute" effect (MDP, Abuolaim et al., WACV 2022, Sec. 4.4).

A DP-view synthesis network predicts a left/right pair whose disparity is horizontal.
Rotating the input by 0, 45, 90 and 135 degrees before prediction and rotating the predicted
views back gives eight views whose disparity points in eight directions, 45 degrees apart;
cycling through them makes the image "move" (Fig. 6, supplement Figs. S3-S7).

Steps (the authors' code, ``mdp_code/data.py``: ``test_generator_image_nimat``):

1. pad the image with zeros to a centred square of side ``ceil(sqrt(H^2 + W^2))`` rounded up
   to a multiple of 16, so no rotation cuts off image content and the U-Net's four poolings
   fit (the code pads the extra multiple-of-16 rows at the top/left; dplab keeps it centred);
2. rotate the square about its centre (bilinear ``grid_sample``; exact ``rot90`` for 90);
3. predict ``(left, right)`` with any callable (e.g. :func:`mdp_predictor`);
4. rotate both views back and crop the original frame.

Rotation sense: the paper rotates "by a 45 degree clockwise step"; dplab rotates clockwise as
displayed (y pointing down). The authors' code uses OpenCV's positive (counter-clockwise)
angles, which gives the same eight views in another order.

View order of :func:`nimat_views` (:data:`VIEW_NAMES`): ``L0, L45, L90, L135, R0, R45, R90,
R135``. Since the right view's disparity is opposite to the left's, this order walks once
around the circle of disparity directions (0, -45, ..., -315 degrees), a smooth loop.
"""

from __future__ import annotations

import math
import os
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dplab._validate import require_image, require_number, require_positive

__all__ = ["nimat_views", "rotate", "nimat_canvas_size", "mdp_predictor", "save_nimat_gif",
           "VIEW_NAMES", "ANGLES"]

ANGLES = (0, 45, 90, 135)
VIEW_NAMES = tuple(f"{side}{a}" for side in "LR" for a in ANGLES)


def rotate(image: torch.Tensor, angle_deg: float, mode: str = "bilinear") -> torch.Tensor:
    """Rotate square images clockwise (as displayed) about their centre, same size, zeros outside.

    Multiples of 90 degrees use ``torch.rot90`` (exact); other angles an affine
    ``grid_sample`` with ``align_corners=False`` (pixel centres rotate about the image centre).

    Args:
        image: ``(B, C, S, S)``.
        angle_deg: clockwise angle in degrees (negative: counter-clockwise).
        mode: ``grid_sample`` interpolation, ``"bilinear"`` or ``"nearest"``.

    Returns:
        ``(B, C, S, S)``.

    Raises:
        ValueError: non-square image.

    Example:
        >>> x = torch.zeros(1, 1, 3, 3); x[0, 0, 0, 1] = 1          # top centre
        >>> rotate(x, 90)[0, 0].tolist()                          # moves to the right
        [[0.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
        >>> torch.allclose(rotate(x, 45, "bilinear").sum(), torch.tensor(1.0), atol=0.3)
        True
    """
    image = require_image("image", image)
    angle = float(require_number("angle_deg", angle_deg))
    if image.shape[-1] != image.shape[-2]:
        raise ValueError(f"image must be square to rotate, got {tuple(image.shape[-2:])}")
    quarter = angle / 90.0
    if quarter.is_integer():
        return torch.rot90(image, -int(quarter) % 4, dims=(-2, -1))
    t = math.radians(angle)
    c, s = math.cos(t), math.sin(t)
    # output (x, y) samples the input at R(-angle) (x, y), y pointing down
    theta = image.new_tensor([[c, s, 0.0], [-s, c, 0.0]]).expand(image.shape[0], 2, 3)
    grid = F.affine_grid(theta, list(image.shape), align_corners=False)
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)


def nimat_canvas_size(height: int, width: int, multiple: int = 16) -> int:
    """Side of the square canvas: ``ceil(sqrt(H^2 + W^2))`` rounded up to ``multiple``.

    Example:
        >>> nimat_canvas_size(30, 40), nimat_canvas_size(1120, 1680)
        (64, 2032)
    """
    height = require_positive("height", height, integer=True)
    width = require_positive("width", width, integer=True)
    multiple = require_positive("multiple", multiple, integer=True)
    diag = math.ceil(math.sqrt(height ** 2 + width ** 2) - 1e-9)
    return -(-diag // multiple) * multiple


def mdp_predictor(model: torch.nn.Module) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """Wrap an :class:`~dplab.models.MDP` (or any model returning ``(left, right, ...)``) as a
    NIMAT predictor ``image -> (left, right)``.

    Example:
        >>> from dplab.models import MDP
        >>> net = MDP(widths=(4, 4, 4, 4), decoder_widths=(4, 4, 4, 4, 4)).eval()
        >>> l, r = mdp_predictor(net)(torch.rand(1, 3, 16, 16)); tuple(l.shape)
        (1, 3, 16, 16)
    """
    def predict(x):
        out = model(x)
        return out[0], out[1]

    return predict


def nimat_views(image: torch.Tensor, predict: Callable[[torch.Tensor], Sequence[torch.Tensor]],
                angles: Sequence[float] = ANGLES, multiple: int = 16,
                mode: str = "bilinear") -> torch.Tensor:
    """Eight DP views aligned with ``image`` (MDP Sec. 4.4, NIMAT); see the module docstring.

    Args:
        image: ``(B, C, H, W)`` single image in [0, 1].
        predict: callable mapping a ``(B, C, S, S)`` canvas to ``(left, right)``, each
            ``(B, C', S, S)``; it runs under ``torch.no_grad``.
        angles: clockwise rotations in degrees (paper: 0, 45, 90, 135).
        multiple: canvas side multiple (16 for four 2x poolings).
        mode: interpolation of the rotations (``"bilinear"``).

    Returns:
        ``(B, 2 * len(angles), C', H, W)``: the left views for each angle, then the right
        views (:data:`VIEW_NAMES` for the default angles). Pixels near the image border mix
        with the zero padding through the interpolation (within ~3 px for 45 degrees).

    Raises:
        ValueError: bad image, or a predictor returning the wrong shapes.
        TypeError: a predictor that does not return two tensors.

    Example:
        >>> x = torch.rand(1, 3, 10, 14)
        >>> v = nimat_views(x, lambda c: (c, c)); tuple(v.shape)
        (1, 8, 3, 10, 14)
        >>> torch.allclose(v[:, 2], x, atol=1e-6)              # L90: rot90 there and back
        True
    """
    image = require_image("image", image)
    b, _, h, w = image.shape
    side = nimat_canvas_size(h, w, multiple)
    top, left = (side - h) // 2, (side - w) // 2
    canvas = F.pad(image, (left, side - w - left, top, side - h - top))
    lefts, rights = [], []
    with torch.no_grad():
        for a in angles:
            a = float(require_number("angles", a))
            out = predict(rotate(canvas, a, mode))
            if not (isinstance(out, (tuple, list)) and len(out) >= 2
                    and all(isinstance(t, torch.Tensor) for t in out[:2])):
                raise TypeError("predict must return (left, right) tensors")
            for name, v in zip(("left", "right"), out[:2]):
                if v.ndim != 4 or v.shape[0] != b or tuple(v.shape[-2:]) != (side, side):
                    raise ValueError(f"predict returned {name} of shape {tuple(v.shape)}; "
                                     f"expected ({b}, C, {side}, {side})")
            for store, v in ((lefts, out[0]), (rights, out[1])):
                store.append(rotate(v, -a, mode)[..., top:top + h, left:left + w])
    return torch.stack(lefts + rights, dim=1)


def save_nimat_gif(views, path: str | os.PathLike, *, duration_ms: int = 120, gain: float = 2.0,
                   loop: int = 0) -> str:
    """Write views as an animated GIF (the NIMAT image motion) with Pillow.

    Args:
        views: ``(N, C, H, W)`` or ``(1, N, C, H, W)`` tensor (e.g. from :func:`nimat_views`),
            or a list of ``(C, H, W)`` tensors; C is 1 or 3.
        path: output ``.gif`` path (parent folders are created).
        duration_ms: display time per frame in milliseconds.
        gain: brightness factor before clipping to [0, 1]. dplab's DP views each carry about
            half the brightness of the image (``combined = left + right``), hence 2 by default.
        loop: number of loops, 0 = forever.

    Returns:
        The path written, as a string. Pillow merges identical consecutive frames into one
        longer frame, so a GIF of repeated views has fewer frames.

    Raises:
        ValueError: bad shapes or empty input.

    Example:
        >>> import tempfile, os
        >>> p = save_nimat_gif(torch.rand(8, 3, 6, 5) / 2, os.path.join(tempfile.mkdtemp(), "n.gif"))
        >>> from PIL import Image; im = Image.open(p); (im.n_frames, im.size)
        (8, (5, 6))
    """
    from PIL import Image

    if isinstance(views, (list, tuple)):
        if not views:
            raise ValueError("views is empty")
        views = torch.stack([torch.as_tensor(v) for v in views])
    if not isinstance(views, torch.Tensor):
        raise TypeError(f"views must be a tensor or a list of tensors, got {type(views).__name__}")
    if views.ndim == 5:
        if views.shape[0] != 1:
            raise ValueError(f"views with a batch axis must have batch size 1, got {tuple(views.shape)}")
        views = views[0]
    if views.ndim != 4 or views.shape[1] not in (1, 3) or views.shape[0] == 0:
        raise ValueError(f"views must have shape (N, C, H, W) with C = 1 or 3, got {tuple(views.shape)}")
    gain = float(require_number("gain", gain))
    frames = (views.detach().float().cpu() * gain).clamp(0, 1).mul(255).round().to(torch.uint8)
    arrays = [np.ascontiguousarray(f.permute(1, 2, 0).numpy()) for f in frames]
    imgs = [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=int(duration_ms), loop=int(loop),
                 disposal=2)
    return path
