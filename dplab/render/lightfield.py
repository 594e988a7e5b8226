"""Light-field-like defocus blur: the stage-1 data of DRBNet when LFDOF is not at hand.

DRBNet (Ruan et al., CVPR 2022) trains first on LFDOF, whose defocused images are made by the
synthetic aperture of a Lytro light field: a refocused image is the *mean of sub-aperture
views*, each a pinhole image seen from a point ``(u, v)`` of the main-lens aperture and
shifted in proportion to its disparity (Sec. 3, Fig. 2b). A scene point at signed blur radius
``r`` (pixels; positive behind the focal plane, as dplab's CoC) lands, in view ``(u, v)``
with ``u^2 + v^2 <= 1``, at ``r (u, v)`` from its in-focus position, so its PSF is a set of
discrete points on a grid inside the disc of radius ``|r|``, not a smooth disc: the "multiple
Airy disks" of the paper's Fig. 2b against the single disc of a conventional camera.

Orientation. ``(u, v)`` here labels a view by where it moves a point behind the focal plane:
view ``(u, v)`` sees the aperture point ``-(u, v)`` of :mod:`dplab.optics.raytrace` (rays through
the ``x > 0`` half of the aperture cross and land on the ``-x`` side behind focus). The views
with ``u < 0`` therefore make up the *left* DP view of dplab's convention (for ``r > 0`` its
mass lies on the ``-x`` side, as :func:`dplab.optics.psf.butterworth_dp`'s left view). Only the mean
over all views, which is symmetric, is used below, so this labelling never changes a result.

:func:`render_lightfield` renders that blur for a sharp image and a blur-radius map, in depth
layers composited back to front (the layer's shifted mask is its alpha, as in
:func:`dplab.render.layered.render_views`), :func:`lightfield_psf` gives the PSF of one radius, and
:class:`LightFieldDataset` draws random scenes (:func:`dplab.render.scenes.random_scene`) and
blurs them, a map-style dataset of ``{"combined", "sharp", "radius", "name"}`` items that
:class:`dplab.training.trainer.Trainer` and :class:`dplab.data.RandomPatches` accept like LFDOF.

Conventions: ``(B, C, H, W)`` float tensors in [0, 1]; shifts are bilinear with replicated
borders; randomness only through an explicit generator or seed.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dplab._validate import require_image, require_positive
from dplab.ops.compositing import over

__all__ = ["subaperture_offsets", "shift_views", "lightfield_psf", "render_lightfield",
           "lightfield_sample", "LightFieldDataset"]


def subaperture_offsets(grid: int = 5, *, dtype=torch.float32) -> torch.Tensor:
    """``(N, 2)`` aperture positions ``(u, v)`` of a ``grid x grid`` lattice on ``[-1, 1]^2``
    that lie in the unit disc (a round synthetic aperture). ``grid=1`` is the pinhole.

    Example:
        >>> subaperture_offsets(3).shape, subaperture_offsets(5).shape
        (torch.Size([5, 2]), torch.Size([13, 2]))
    """
    grid = require_positive("grid", grid, integer=True)
    if grid == 1:
        return torch.zeros(1, 2, dtype=dtype)
    t = torch.linspace(-1.0, 1.0, grid, dtype=torch.float64)
    v, u = torch.meshgrid(t, t, indexing="ij")
    keep = u * u + v * v <= 1.0 + 1e-9
    return torch.stack([u[keep], v[keep]], -1).to(dtype)


def shift_views(image: torch.Tensor, radius, offsets: torch.Tensor) -> torch.Tensor:
    """Every sub-aperture view of ``image``: view ``n`` is ``image`` translated by
    ``radius * offsets[n]`` pixels (x right, y down), bilinear, borders replicated.

    Args:
        image: ``(B, C, H, W)``.
        radius: a number, or ``(B,)`` per image.
        offsets: ``(N, 2)`` from :func:`subaperture_offsets`.

    Returns:
        ``(B, N, C, H, W)``.
    """
    b, c, h, w = image.shape
    r = torch.as_tensor(radius, dtype=image.dtype, device=image.device).reshape(-1)
    r = r.expand(b) if r.numel() == 1 else r
    off = offsets.to(image.device, image.dtype)
    n = off.shape[0]
    ys = torch.arange(h, dtype=image.dtype, device=image.device)
    xs = torch.arange(w, dtype=image.dtype, device=image.device)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    # out(x) = in(x - r u): sample the source at x - r u, in align_corners=True coordinates
    sx = gx[None, None] - r[:, None, None, None] * off[None, :, 0, None, None]
    sy = gy[None, None] - r[:, None, None, None] * off[None, :, 1, None, None]
    grid = torch.stack([2 * sx / max(w - 1, 1) - 1, 2 * sy / max(h - 1, 1) - 1], -1)
    src = image[:, None].expand(b, n, c, h, w).reshape(b * n, c, h, w)
    out = F.grid_sample(src, grid.reshape(b * n, h, w, 2), mode="bilinear", padding_mode="border",
                        align_corners=True)
    return out.reshape(b, n, c, h, w)


def lightfield_psf(radius: float, grid: int = 5, *, size: int | None = None,
                   dtype=torch.float64) -> torch.Tensor:
    """PSF of the synthetic aperture for blur radius ``radius`` px: the mean of bilinear deltas
    at ``radius * (u, v)``; ``(size, size)``, sums to 1 (``size`` default ``2 ceil|r| + 3``).

    Example:
        >>> k = lightfield_psf(4.0, 3)
        >>> k.shape, round(float(k.sum()), 6), float(k[5, 5]), float(k[5, 9])
        (torch.Size([11, 11]), 1.0, 0.2, 0.2)
    """
    r = float(radius)
    size = size or 2 * math.ceil(abs(r)) + 3
    delta = torch.zeros(1, 1, size, size, dtype=dtype)
    delta[..., size // 2, size // 2] = 1.0
    views = shift_views(delta, r, subaperture_offsets(grid, dtype=dtype))
    return views.mean(1)[0, 0]


def render_lightfield(image: torch.Tensor, radius_px: torch.Tensor, *, grid: int = 5,
                      max_layers: int = 16, normalize: bool = True):
    """Light-field synthetic-aperture blur of ``image`` for a signed blur-radius map.

    The radius map is cut into at most ``max_layers`` levels (evenly spaced between its
    minimum and maximum, nearest level per pixel). Layers are composited back to front
    (decreasing radius: farther behind the focal plane first): for layer ``i`` with mask
    ``M_i``, colour ``c_i = mean_n shift_n(I M_i)`` and alpha ``a_i = mean_n shift_n(M_i)``,
    ``out <- out (1 - a_i) + c_i`` (:func:`dplab.ops.compositing.over`); with ``normalize``
    divided by the coverage ``1 - prod_i (1 - a_i)``. A single layer of radius ``r`` is the
    convolution with :func:`lightfield_psf` (up to the border rule).

    Args:
        image: ``(B, C, H, W)`` in [0, 1].
        radius_px: ``(B, 1, H, W)``, ``(1, 1, H, W)`` or ``(H, W)`` signed radius in pixels.
        grid: sub-aperture grid per side (5: 13 views in the disc; the Lytro Illum has 14 x 14).
        max_layers: most depth layers.
        normalize: divide by the accumulated coverage.

    Returns:
        ``(blurred, radius_quantized)``, shapes ``(B, C, H, W)`` and ``(B, 1, H, W)``.

    Example:
        >>> img = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
        >>> out, q = render_lightfield(img, torch.zeros(16, 16))
        >>> torch.allclose(out, img, atol=1e-6)
        True
    """
    image = require_image("image", image)
    max_layers = require_positive("max_layers", max_layers, integer=True)
    b, c, h, w = image.shape
    r = torch.as_tensor(radius_px, dtype=image.dtype, device=image.device)
    if r.ndim == 2:
        r = r[None, None]
    if r.ndim != 4 or r.shape[1] != 1 or tuple(r.shape[-2:]) != (h, w) or r.shape[0] not in (1, b):
        raise ValueError(f"radius_px must be (H, W) or (B or 1, 1, H, W) matching {tuple(image.shape)}, "
                         f"got {tuple(r.shape)}")
    if not torch.isfinite(r).all():
        raise ValueError("radius_px holds NaN or inf")
    r = r.expand(b, 1, h, w)
    offsets = subaperture_offsets(grid, dtype=image.dtype)
    out = torch.zeros_like(image)
    trans = torch.ones(b, 1, h, w, dtype=image.dtype, device=image.device)
    quant = torch.empty_like(r)
    for k in range(b):
        lo, hi = float(r[k].min()), float(r[k].max())
        n = 1 if hi - lo < 1e-6 else max_layers
        levels = torch.linspace(lo, hi, n, dtype=image.dtype, device=image.device) if n > 1 else r.new_tensor([lo])
        idx = (r[k] - levels.view(-1, 1, 1)).abs().argmin(0, keepdim=True) if n > 1 else torch.zeros_like(r[k], dtype=torch.long)
        quant[k] = levels[idx[0]][None]
        for i in sorted(set(idx.unique().tolist()), key=lambda j: -float(levels[j])):
            m = (idx == i).to(image.dtype)[None]                      # (1, 1, H, W)
            both = torch.cat([image[k:k + 1] * m, m], 1)
            views = shift_views(both, float(levels[i]), offsets).mean(1)
            col, alpha = views[:, :c], views[:, c:].clamp(0, 1)
            out[k:k + 1] = over(out[k:k + 1], col, alpha)
            trans[k:k + 1] = trans[k:k + 1] * (1 - alpha)
    if normalize:
        out = out / (1 - trans).clamp_min(1e-6)
    return out.clamp(0, 1), quant


def lightfield_sample(size, generator: torch.Generator, *, grid: int = 5,
                      max_radius_px: tuple[float, float] = (4.0, 10.0), max_layers: int = 16,
                      noise_sigma: float = 0.0) -> dict:
    """One random light-field-blurred scene (a stand-in for an LFDOF pair).

    A :func:`dplab.render.scenes.random_scene` gives the sharp image and depth ``d``; a focus depth
    ``d_f`` is drawn log-uniformly between the nearest and farthest depth, and the radius is
    ``r = g (d - d_f) / d`` (the thin-lens form of dplab's CoC) with a gain ``g`` drawn
    uniformly in ``max_radius_px`` and ``|r|`` clipped at that gain.

    Returns:
        ``{"combined": (3, H, W), "sharp": (3, H, W), "radius": (1, H, W)}``.
    """
    from dplab.render.scenes import random_scene

    scene = random_scene(size, generator)
    image, depth = scene.render(0)
    d = depth.double()
    lo, hi = math.log(float(d.min())), math.log(float(d.max()))
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    focus = math.exp(lo + (hi - lo) * u)
    a, bnd = max_radius_px
    gain = a + (bnd - a) * float(torch.rand((), generator=generator, dtype=torch.float64))
    radius = (gain * (d - focus) / d).clamp(-gain, gain).float()
    blurred, _ = render_lightfield(image, radius, grid=grid, max_layers=max_layers)
    if noise_sigma > 0:
        noise = torch.randn(blurred.shape, generator=generator) * noise_sigma
        blurred = (blurred + noise).clamp(0, 1)
    return {"combined": blurred[0], "sharp": image[0], "radius": radius[0]}


class LightFieldDataset(torch.utils.data.Dataset):
    """``count`` light-field-blurred random scenes, item ``i`` a function of ``(seed, i)``,
    rendered on first access and kept in memory: DRBNet's stage-1 data when LFDOF is absent.

    Args:
        count: number of images.
        size: ``(H, W)``.
        seed: base seed.
        grid, max_radius_px, max_layers, noise_sigma: as :func:`lightfield_sample`.

    Example:
        >>> ds = LightFieldDataset(2, (16, 24), seed=1, max_layers=4)
        >>> len(ds), tuple(ds[1]["combined"].shape), ds[1]["name"]
        (2, (3, 16, 24), 'lf_00001')
    """

    def __init__(self, count: int, size, *, seed: int = 0, grid: int = 5,
                 max_radius_px: tuple[float, float] = (4.0, 10.0), max_layers: int = 16,
                 noise_sigma: float = 0.0):
        self.count = require_positive("count", count, integer=True)
        self.size = (int(size[0]), int(size[1]))
        self.seed, self.grid, self.max_radius_px = int(seed), int(grid), tuple(max_radius_px)
        self.max_layers, self.noise_sigma = int(max_layers), float(noise_sigma)
        self._cache: dict[int, dict] = {}

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.count:
            raise IndexError(f"index {index} out of range for {self.count} images")
        if index not in self._cache:
            state = np.random.SeedSequence([self.seed, 7, index]).generate_state(2, np.uint32)
            g = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
            item = lightfield_sample(self.size, g, grid=self.grid, max_radius_px=self.max_radius_px,
                                     max_layers=self.max_layers, noise_sigma=self.noise_sigma)
            self._cache[index] = {**item, "name": f"lf_{index:05d}"}
        return dict(self._cache[index])
