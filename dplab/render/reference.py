"""Slow references for the dual-pixel renderer: blur computed by sampling the lens aperture.

Both follow the thin lens of :mod:`dplab.optics.thin_lens` with a uniform disc aperture, point
by point, and so check the layered renderer of RDPD (Abuolaim et al., ICCV 2021, Sec. 3;
:mod:`dplab.render.layered`) without its approximations:

* :func:`spot_image`: the PSF that rays traced through the aperture
  (:mod:`dplab.optics.raytrace`) paint on the sensor, as a normalised 2-D histogram;
* :func:`aperture_reference`: the defocused image of a stack of flat layers as the mean of the
  pinhole views from points of the aperture, occlusion included (the book's reference for the
  compositing of the layered renderer).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dplab.ops.compositing import over

__all__ = ["spot_image", "aperture_reference"]


def spot_image(hits: torch.Tensor, extent: float, bins: int = 41) -> np.ndarray:
    """2-D histogram of sensor hits on a ``bins x bins`` grid over ``[-extent, extent]^2``,
    normalised to sum 1: the PSF that the traced rays paint on the sensor. Rows are y.

    Args:
        hits: ``(N, 2)`` sensor positions ``(x, y)``, e.g. from
            :func:`dplab.optics.raytrace.trace_to_sensor`.
        extent: half-width of the histogram's square.
        bins: bins per side.

    Example:
        >>> spot_image(torch.tensor([[0.0, 0.0], [0.5, 0.0]]), 1.0, bins=4)[1:3]
        array([[0. , 0. , 0. , 0. ],
               [0. , 0. , 0.5, 0.5]])
    """
    h, _, _ = np.histogram2d(
        hits[:, 1].numpy(), hits[:, 0].numpy(), bins=bins, range=[[-extent, extent], [-extent, extent]]
    )
    return h / max(h.sum(), 1)


def aperture_reference(layers, *, samples_per_px=2.0, half=None, chunk=32):
    """Defocused image of a stack of flat layers, averaging pinhole views over the aperture.

    A slow reference that handles occlusion exactly for a thin lens with a uniform disc
    aperture: the aperture point ``u`` (uniform in the unit disc) sees each layer shifted by
    ``r u`` pixels (``r`` its signed CoC radius), nearer layers hide farther ones with their
    hard masks (:func:`dplab.ops.compositing.over`, back to front), and the image is the mean
    of these views. Unlike a layered renderer it needs
    every layer's full content, also where a nearer layer hides it. Shifts are bilinear.

    Args:
        layers: back to front, a list of ``(colour (1, C, H, W), mask (1, 1, H, W) or None,
            coc_px)``; the first (farthest) layer should cover the frame (mask None).
        samples_per_px: aperture samples per pixel of the largest shift, per axis.
        half: None (whole aperture), ``"pos"`` (``u_x > 0``) or ``"neg"`` (``u_x < 0``).
        chunk: aperture samples per batched ``grid_sample`` call.

    Returns:
        ``(1, C, H, W)`` float32 image.
    """
    rmax = max(abs(float(r)) for _, _, r in layers)
    n = max(1, int(np.ceil(samples_per_px * rmax)))
    g = torch.arange(-n, n + 1, dtype=torch.float64) / n
    uy, ux = torch.meshgrid(g, g, indexing="ij")
    keep = ux ** 2 + uy ** 2 <= 1.0
    if half == "pos":
        keep &= ux > 0
    elif half == "neg":
        keep &= ux < 0
    us = torch.stack([ux[keep], uy[keep]], 1).float()
    _, C, H, W = layers[0][0].shape
    ys = torch.arange(H, dtype=torch.float32).reshape(1, -1, 1)
    xs = torch.arange(W, dtype=torch.float32).reshape(1, 1, -1)
    acc = torch.zeros(1, C, H, W, dtype=torch.float64)
    stacks = [torch.cat([c.float().cpu(), (torch.ones_like(c[:, :1]) if m is None else m).float().cpu()], 1)
              for c, m, _ in layers]
    for u in us.split(chunk):
        out = None
        for x, (_, _, r) in zip(stacks, layers):
            dx = (float(r) * u[:, 0]).reshape(-1, 1, 1)
            dy = (float(r) * u[:, 1]).reshape(-1, 1, 1)
            grid = torch.stack(torch.broadcast_tensors((2 * (xs - dx) + 1) / W - 1,
                                                       (2 * (ys - dy) + 1) / H - 1), -1)
            v = F.grid_sample(x.expand(u.shape[0], -1, -1, -1), grid, mode="bilinear",
                              padding_mode="border", align_corners=False)
            col, a = v[:, :C], v[:, C:]
            out = col if out is None else over(out, a * col, a)
        acc += out.double().sum(0, keepdim=True)
    return (acc / us.shape[0]).float()
