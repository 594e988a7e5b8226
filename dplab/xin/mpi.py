"""Multiplane image (MPI) of a dual-pixel capture: compositing, DP rendering, optimisation.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Sec. 4 and supplement C-D.

An MPI has ``N`` fronto-parallel layers ordered **back to front** (index 0 is the farthest,
as in the paper's products ``prod_{j=i+1}^N``), each with an intensity ``c_i`` and an alpha
``alpha_i``; layer ``i`` sits at the defocus size ``d_i`` (a kernel scale, evenly spaced,
:func:`layer_scales`). The farthest layer is opaque (``alpha_0 = 1``, Sec. 4.3).

* Eq. 1, all-in-focus image: ``I_s = sum_i t_i c_i`` with transmittance
  ``t_i = alpha_i prod_{j>i} (1 - alpha_j)`` (:func:`composite`, :func:`transmittance`).
* Eq. 15 (supp. C.1), defocus map: ``D = sum_i t_i d_i`` (:func:`defocus_map`).
* Eq. 2, DP views: ``I_v = sum_i (k_v^{d_i} * (c_i alpha_i)) prod_{j>i} (1 - k_v^{d_j} * alpha_j)``
  (:func:`render_dp`, :class:`DPBlur`). The alphas are blurred with unit-sum kernels
  ``k / sum(k)``; the colour term is multiplied by the view's kernel sum relative to the mean
  of both, so with dplab's half-sum kernels the MPI intensities have the brightness of the
  conventional image ``left + right`` while each rendered view has the brightness of a view.

Spatially varying kernels. The Pixel 4 calibration has one kernel pair per cell of a 6x8 grid
of 168-px cells. :class:`KernelGrid` cuts the image into one tile per cell, each enlarged by
``blend_px`` on every side and by a halo of the kernel's half-size of real (or, at the image
border, replicated) content; each tile is convolved with its cell's kernels by one FFT of a
5-smooth size (circular convolution on the tile, exact on the kept part since the FFT is at
least ``tile + kernel - 1`` long), and neighbouring tiles are cross-faded linearly over
``2 blend_px`` pixels around each cell boundary (a partition of unity, so a constant image
stays constant). ``blend_px=0`` is the authors' code exactly (each cell rendered with its own
kernels, hard seams); ``blend_px = cell/2`` is bilinear interpolation of the blurred images
between cell centres. The default 8 px removes the seams for about 8 % more FFT work than
hard cells (a 168 + 16 + 60 = 244 px tile uses a 250-point FFT instead of 240).

Optimisation (:func:`optimize`): intensities and alphas live in logit space; Adam with the
learning rate decaying exponentially from 0.3 to 0.1 (Sec. 5.1); the loss of Eq. 6 with the
terms and weights of the authors' code (:mod:`dplab.xin.mpi_losses`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from dplab._validate import (require_choice, require_image, require_kernel, require_number,
                        require_positive, require_tensor)
from dplab.xin.deconv import PHI2, SIGMA2, _kernel_pair, _scales_tensor, _spectrum, bias_correction
from dplab.ops.fftconv import _pad_index, fast_len
from dplab.optics.psf import rescale_kernel

__all__ = [
    "MPI", "KernelGrid", "DPBlur", "DPRender", "MPIResult", "layer_scales", "transmittance",
    "composite", "defocus_map", "render_dp", "optimize", "lr_schedule",
]


# ============================================================================ MPI basics
def layer_scales(n_layers: int, near: float, far: float, *, device=None) -> torch.Tensor:
    """Defocus sizes (kernel scales) of ``n_layers`` layers, evenly spaced, back to front.

    The authors' code uses ``linspace(far, near, N)`` (``mpi_end_scale`` to ``mpi_start_scale``,
    e.g. 1.6 to 0.5 for scenes 1-2): layer 0 is the farthest and most blurred.

    Args:
        n_layers: number of layers ``N >= 1``.
        near: scale of the front layer (> 0).
        far: scale of the back layer (> 0).
        device: output device.

    Returns:
        ``(N,)`` float32 tensor.

    Raises:
        TypeError / ValueError: non-integer or non-positive arguments.

    Example:
        >>> layer_scales(3, 0.5, 1.5)
        tensor([1.5000, 1.0000, 0.5000])
    """
    n = require_positive("n_layers", n_layers, integer=True)
    near = float(require_positive("near", near))
    far = float(require_positive("far", far))
    return torch.linspace(far, near, n, device=device)


def _visibility(a: torch.Tensor) -> torch.Tensor:
    """``prod_{j>i} (1 - a_j)`` over dim 0 (exclusive reverse cumulative product)."""
    ones = torch.ones_like(a[:1])
    if a.shape[0] == 1:
        return ones
    cp = torch.cumprod((1 - a[1:]).flip(0), 0).flip(0)
    return torch.cat([cp, ones], 0)


def _check_alphas(alphas):
    alphas = require_tensor("alphas", alphas)
    if alphas.ndim != 4 or alphas.shape[1] != 1:
        raise ValueError(f"alphas must have shape (N, 1, H, W), got {tuple(alphas.shape)}")
    return alphas


def transmittance(alphas: torch.Tensor) -> torch.Tensor:
    """Per-layer transmittance ``t_i = alpha_i prod_{j>i} (1 - alpha_j)`` (Xin et al. Eq. 1).

    Args:
        alphas: ``(N, 1, H, W)`` layer alphas, back to front.

    Returns:
        ``(N, 1, H, W)`` transmittances; they sum to 1 where ``alpha_0 = 1``.

    Shape:
        ``(N, 1, H, W) -> (N, 1, H, W)``.

    Raises:
        TypeError / ValueError: wrong type or shape.

    Example:
        >>> a = torch.tensor([1.0, 0.5, 0.5]).reshape(3, 1, 1, 1)
        >>> transmittance(a).flatten().tolist()
        [0.25, 0.25, 0.5]
    """
    alphas = _check_alphas(alphas)
    return alphas * _visibility(alphas)


def composite(colors: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
    """All-in-focus image of an MPI, ``sum_i t_i c_i`` (Xin et al. Eq. 1, "over" operator).

    Args:
        colors: ``(N, C, H, W)`` layer intensities, back to front.
        alphas: ``(N, 1, H, W)`` layer alphas.

    Returns:
        ``(1, C, H, W)`` image.

    Shape:
        See Args and Returns.

    Raises:
        TypeError / ValueError: wrong types or mismatched shapes.

    Example:
        >>> c = torch.tensor([0.2, 0.9]).reshape(2, 1, 1, 1)
        >>> a = torch.tensor([1.0, 0.25]).reshape(2, 1, 1, 1)
        >>> round(float(composite(c, a)), 6)   # 0.2 * 0.75 + 0.9 * 0.25
        0.375
    """
    colors = require_tensor("colors", colors)
    alphas = _check_alphas(alphas)
    if colors.ndim != 4 or colors.shape[0] != alphas.shape[0] or colors.shape[-2:] != alphas.shape[-2:]:
        raise ValueError(f"colors (N, C, H, W) must match alphas (N, 1, H, W), got "
                         f"{tuple(colors.shape)} and {tuple(alphas.shape)}")
    return (transmittance(alphas) * colors).sum(0, keepdim=True)


def defocus_map(alphas: torch.Tensor, scales) -> torch.Tensor:
    """Defocus map ``sum_i t_i d_i`` of an MPI (Xin et al. supplement Eq. 15).

    Args:
        alphas: ``(N, 1, H, W)`` layer alphas, back to front.
        scales: ``(N,)`` defocus size of each layer.

    Returns:
        ``(1, 1, H, W)`` continuous defocus map, in the units of ``scales``.

    Shape:
        See Args and Returns.

    Raises:
        ValueError: ``scales`` does not have ``N`` entries.

    Example:
        >>> a = torch.tensor([1.0, 0.5]).reshape(2, 1, 1, 1)
        >>> float(defocus_map(a, torch.tensor([2.0, 1.0])))
        1.5
    """
    alphas = _check_alphas(alphas)
    sc = torch.as_tensor(scales, dtype=alphas.dtype, device=alphas.device).reshape(-1)
    if sc.numel() != alphas.shape[0]:
        raise ValueError(f"scales has {sc.numel()} entries but there are {alphas.shape[0]} layers")
    return (transmittance(alphas) * sc.reshape(-1, 1, 1, 1)).sum(0, keepdim=True)


@dataclass
class MPI:
    """An MPI of one image, back to front.

    Attributes:
        colors: ``(N, C, H, W)`` intensities (with dplab's kernels: the brightness of
            ``left + right``).
        alphas: ``(N, 1, H, W)`` alphas in [0, 1], ``alphas[0] == 1``.
        scales: ``(N,)`` defocus size (kernel scale) of each layer.

    Example:
        >>> m = MPI(torch.full((2, 1, 4, 4), 0.5), torch.ones(2, 1, 4, 4), torch.tensor([1.0, 0.5]))
        >>> float(m.defocus_map().mean()), m.n_layers
        (0.5, 2)
    """

    colors: torch.Tensor
    alphas: torch.Tensor
    scales: torch.Tensor

    @property
    def n_layers(self) -> int:
        return self.alphas.shape[0]

    def transmittance(self) -> torch.Tensor:
        """``(N, 1, H, W)`` transmittances (Eq. 1)."""
        return transmittance(self.alphas)

    def all_in_focus(self) -> torch.Tensor:
        """``(1, C, H, W)`` composite (Eq. 1)."""
        return composite(self.colors, self.alphas)

    def defocus_map(self) -> torch.Tensor:
        """``(1, 1, H, W)`` defocus map (Eq. 15)."""
        return defocus_map(self.alphas, self.scales)

    def to(self, *args, **kwargs) -> "MPI":
        return MPI(self.colors.to(*args, **kwargs), self.alphas.to(*args, **kwargs),
                   self.scales.to(*args, **kwargs))


# ============================================================================ kernel grid
def _pair(name, v):
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {v!r}")
        return tuple(v)
    return (v, v)


class KernelGrid:
    """How a grid of calibrated kernels covers an image: tiles, halos and cross-fades.

    Cell ``(r, c)`` of an ``R x C`` kernel grid covers image rows
    ``[oy + r ch, oy + (r+1) ch)`` and columns ``[ox + c cw, ox + (c+1) cw)`` with
    ``(oy, ox) = origin`` and ``(ch, cw) = cell_hw``. Every cell that meets the image becomes
    a tile; pixels outside the calibrated grid take the nearest cell's kernels. Each tile's
    output covers its cell plus ``blend_px`` on each side; neighbouring tiles overlap by
    ``2 blend_px`` and are cross-faded with linear ramps that sum to one (see the module
    docstring). Axes with a single tile use no blending.

    Args:
        image_hw: ``(H, W)`` of the images.
        grid_shape: ``(R, C)`` of the kernel grid (``(1, 1)``: one kernel for the image).
        cell_hw: cell size, int or ``(h, w)``; default the image split evenly (must divide).
        origin: image coordinates of the grid's top-left corner; for a crop at ``(top, left)``
            of the calibrated field, ``(-top, -left)``.
        blend_px: cross-fade half-width, at most half a cell.

    Attributes:
        grid_hw: ``(nR, nC)`` number of tiles.
        tile_hw: output size of a tile, ``(ch + 2 by, cw + 2 bx)``.
        kernel_index: ``(nR, nC)`` long index into the ``R * C`` kernels (row-major).

    Raises:
        ValueError: non-positive sizes, cells that do not divide the image, ``blend_px`` larger
            than half a cell.

    Example:
        >>> g = KernelGrid((336, 448), (6, 8), cell_hw=168, origin=(-168, -336))
        >>> g.grid_hw, g.kernel_index.tolist()
        ((2, 3), [[10, 11, 12], [18, 19, 20]])
        >>> x = torch.rand(1, 1, 336, 448)
        >>> bool(torch.allclose(g.merge(g.split(x)), x))   # tiles of a partition of unity
        True
    """

    def __init__(self, image_hw, grid_shape=(1, 1), *, cell_hw=None, origin=(0, 0), blend_px=8):
        H, W = (require_positive("image_hw", v, integer=True) for v in _pair("image_hw", image_hw))
        R, C = (require_positive("grid_shape", v, integer=True) for v in _pair("grid_shape", grid_shape))
        if cell_hw is None:
            if H % R or W % C:
                raise ValueError(f"an image of {H}x{W} does not split evenly into a {R}x{C} grid; "
                                 "pass cell_hw (and origin for a crop)")
            cell_hw = (H // R, W // C)
        ch, cw = (require_positive("cell_hw", v, integer=True) for v in _pair("cell_hw", cell_hw))
        oy, ox = (require_number("origin", v, integer=True) for v in _pair("origin", origin))
        b = require_positive("blend_px", blend_px, allow_zero=True, integer=True)
        r0, r1 = (0 - oy) // ch, (H - 1 - oy) // ch
        c0, c1 = (0 - ox) // cw, (W - 1 - ox) // cw
        nR, nC = r1 - r0 + 1, c1 - c0 + 1
        by, bx = (b if nR > 1 else 0), (b if nC > 1 else 0)
        if 2 * by > ch or 2 * bx > cw:
            raise ValueError(f"blend_px={b} is more than half a cell ({ch}x{cw})")
        self.image_hw, self.grid_shape, self.cell_hw = (H, W), (R, C), (ch, cw)
        self.origin, self.blend = (oy, ox), (by, bx)
        self.grid_hw = (nR, nC)
        self.n_tiles = nR * nC
        self.tile_hw = (ch + 2 * by, cw + 2 * bx)
        self._y0, self._x0 = oy + r0 * ch, ox + c0 * cw
        krow = torch.arange(r0, r1 + 1).clamp(0, R - 1)
        kcol = torch.arange(c0, c1 + 1).clamp(0, C - 1)
        self.kernel_index = krow[:, None] * C + kcol[None, :]
        self._wy = self._ramps(nR, ch, by)
        self._wx = self._ramps(nC, cw, bx)

    @staticmethod
    def _ramps(n: int, cell: int, b: int) -> torch.Tensor:
        w = torch.ones(n, cell + 2 * b, dtype=torch.float64)
        if b > 0:
            up = (torch.arange(2 * b, dtype=torch.float64) + 0.5) / (2 * b)
            w[1:, : 2 * b] = up
            w[:-1, cell:] = 1 - up
        return w

    def split(self, x: torch.Tensor, halo=(0, 0, 0, 0), mode: str = "replicate") -> torch.Tensor:
        """Tiles of ``x`` with a halo ``(top, bottom, left, right)`` around each tile's output.

        Args:
            x: ``(..., H, W)`` tensor.
            halo: extra rows/columns of input around each tile.
            mode: ``"replicate"`` or ``"reflect"`` extension beyond the image.

        Returns:
            ``(..., nR, nC, th + top + bottom, tw + left + right)`` (a strided view of one
            extended copy of ``x``).
        """
        H, W = self.image_hw
        if tuple(x.shape[-2:]) != (H, W):
            raise ValueError(f"x must end in the grid's image size {(H, W)}, got {tuple(x.shape)}")
        ht, hb, hl, hr = halo
        (ch, cw), th, tw = self.cell_hw, *self.tile_hw
        rows, cols = self._extension(halo, mode, x.device)
        x = x.index_select(-2, rows).index_select(-1, cols)
        if self.n_tiles == 1:                      # contiguous, cheap backward
            return x.unsqueeze(-3).unsqueeze(-3)
        # unfold rows -> (..., nR, W', th'), then columns -> (..., nR, nC, th', tw')
        return x.unfold(-2, th + ht + hb, ch).unfold(-2, tw + hl + hr, cw)

    def _extension(self, halo, mode, device):
        """Source rows and columns of the extended image that :meth:`split` cuts into tiles."""
        require_choice("mode", mode, ("replicate", "reflect"))
        H, W = self.image_hw
        ht, hb, hl, hr = halo
        (ch, cw), (by, bx), (nR, nC) = self.cell_hw, self.blend, self.grid_hw
        top, bottom = -(self._y0 - by - ht), self._y0 + nR * ch + by + hb - H
        lft, rgt = -(self._x0 - bx - hl), self._x0 + nC * cw + bx + hr - W
        return _pad_index(H, top, bottom, mode, device), _pad_index(W, lft, rgt, mode, device)

    def split_adjoint(self, tiles: torch.Tensor, halo=(0, 0, 0, 0), mode: str = "replicate") -> torch.Tensor:
        """Adjoint of :meth:`split`: overlap-add tiles ``(..., nR, nC, th', tw')`` onto the
        extended image and fold the extension back onto ``(..., H, W)``."""
        H, W = self.image_hw
        (nR, nC), (ch, cw) = self.grid_hw, self.cell_hw
        a, b = tiles.shape[-2:]
        lead = tiles.shape[:-4]
        rows, cols = self._extension(halo, mode, tiles.device)
        Hp, Wp = rows.numel(), cols.numel()
        if self.n_tiles == 1:
            ext = tiles[..., 0, 0, :, :]
        else:
            m = math.prod(lead)
            t = tiles.reshape(m, nR * nC, a * b).transpose(1, 2)
            ext = F.fold(t, (Hp, Wp), (a, b), stride=(ch, cw)).reshape(lead + (Hp, Wp))
        out = ext.new_zeros(lead + (H, Wp)).index_add_(-2, rows, ext)
        return out.new_zeros(lead + (H, W)).index_add_(-1, cols, out)

    def merge_adjoint(self, image: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`merge`: ``(..., H, W)`` -> weighted tiles ``(..., nR, nC, th, tw)``."""
        H, W = self.image_hw
        (nR, nC), (th, tw), (ch, cw), (by, bx) = self.grid_hw, self.tile_hw, self.cell_hw, self.blend
        y0, x0 = by - self._y0, bx - self._x0
        Ho, Wo = nR * ch + 2 * by, nC * cw + 2 * bx
        g = F.pad(image, (x0, Wo - W - x0, y0, Ho - H - y0))
        tiles = g.unfold(-2, th, ch).unfold(-2, tw, cw)
        if self.n_tiles > 1 and (by or bx):
            tiles = tiles * self.weights(image.dtype, image.device)
        return tiles

    def weights(self, dtype=torch.float32, device=None) -> torch.Tensor:
        """``(nR, nC, th, tw)`` cross-fade weights of the tiles."""
        w = self._wy[:, None, :, None] * self._wx[None, :, None, :]
        return w.to(dtype=dtype, device=device)

    def merge(self, tiles: torch.Tensor, *, weighted: bool = True) -> torch.Tensor:
        """Weighted overlap-add of tile outputs ``(..., nR, nC, th, tw)`` into ``(..., H, W)``."""
        (nR, nC), (th, tw) = self.grid_hw, self.tile_hw
        if tuple(tiles.shape[-4:]) != (nR, nC, th, tw):
            raise ValueError(f"tiles must end in {(nR, nC, th, tw)}, got {tuple(tiles.shape)}")
        H, W = self.image_hw
        (ch, cw), (by, bx) = self.cell_hw, self.blend
        y0, x0 = by - self._y0, bx - self._x0
        lead = tiles.shape[:-4]
        if self.n_tiles == 1:
            out = tiles[..., 0, 0, :, :]
        elif by == 0 and bx == 0:
            out = tiles.transpose(-3, -2).reshape(lead + (nR * th, nC * tw))
        else:
            if weighted:
                tiles = tiles * self.weights(tiles.dtype, tiles.device)
            m = math.prod(lead)
            t = tiles.reshape(m, nR * nC, th * tw).transpose(1, 2)
            out = F.fold(t, (nR * ch + 2 * by, nC * cw + 2 * bx), (th, tw), stride=(ch, cw))
            out = out.reshape(lead + out.shape[-2:])
        return out[..., y0:y0 + H, x0:x0 + W]

    def cell_map(self) -> torch.Tensor:
        """``(H, W)`` long map: the kernel index of the cell that owns each pixel."""
        H, W = self.image_hw
        (ch, cw), (R, C) = self.cell_hw, self.grid_shape
        rows = ((torch.arange(H) - self.origin[0]).div(ch, rounding_mode="floor")).clamp(0, R - 1)
        cols = ((torch.arange(W) - self.origin[1]).div(cw, rounding_mode="floor")).clamp(0, C - 1)
        return rows[:, None] * C + cols[None, :]


def _grid_kernels(k_left, k_right):
    """``(kh, kw)`` or ``(R, C, kh, kw)`` kernel pairs -> ``(R*C, kh, kw)`` each and ``(R, C)``."""
    k_left, k_right = _kernel_pair(k_left, k_right)  # same checks as the Wiener functions
    if k_left.ndim == 2:
        grid = (1, 1)
    elif k_left.ndim == 4:
        grid = tuple(k_left.shape[:2])
    else:
        raise ValueError(f"kernels must be (kh, kw) or a grid (R, C, kh, kw), got {tuple(k_left.shape)}; "
                         "reshape the 48 Pixel 4 kernels with .reshape(6, 8, 61, 61) "
                         "(or use dplab.data.pixel4.load_kernel_grid)")
    kl, kr = k_left.reshape((-1,) + k_left.shape[-2:]), k_right.reshape((-1,) + k_right.shape[-2:])
    if bool((kl.sum((-2, -1)) <= 0).any()) or bool((kr.sum((-2, -1)) <= 0).any()):
        raise ValueError("every kernel must have a positive sum")
    return kl, kr, grid


def _scaled_kernels(kl, kr, scales, kernel_size):
    """Resized kernels ``(D, R*C, k, k)`` for each scale (:func:`dplab.optics.psf.rescale_kernel`)."""
    size = None if kernel_size is None else require_positive("kernel_size", kernel_size, integer=True)
    out_l = torch.stack([rescale_kernel(kl, float(s), size) for s in scales.tolist()])
    out_r = torch.stack([rescale_kernel(kr, float(s), size) for s in scales.tolist()])
    return out_l, out_r


class DPBlur:
    """Spatially varying DP blur of an MPI's layers, ``k_v^{d_i} * x_i`` (Xin et al. Eq. 2).

    Resizes the reference kernels to every layer's scale once, normalises them to unit sum
    (for alpha compositing; the views' kernel sums are kept in :attr:`gains`), and stores the
    spectra of every (layer, view, tile); a call then costs one batched real FFT of the layer
    tiles and one inverse FFT per view. Works on CPU and CUDA (the kernels' device).

    Args:
        k_left: reference left kernel ``(kh, kw)`` or grid ``(R, C, kh, kw)``.
        k_right: reference right kernel(s), same shape.
        scales: ``(N,)`` scale of each layer (back to front).
        image_hw: ``(H, W)``.
        cell_hw: grid cell size (see :class:`KernelGrid`).
        origin: grid origin (see :class:`KernelGrid`).
        blend_px: cross-fade half-width between cells (0: the authors' hard cells).
        kernel_size: size of the resized kernels (default the reference size; odd).

    Attributes:
        grid: the :class:`KernelGrid`.
        gains: ``(2,)`` mean kernel sum of the left and right views (1/2 for dplab).
        kernels: ``(left, right)`` unit-sum resized kernels ``(N, R*C, k, k)``.

    Raises:
        TypeError / ValueError: invalid kernels, scales or grid.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(4.0, size=21)
        >>> blur = DPBlur(kl, kr, [1.0, 0.5], (32, 40))
        >>> out = blur(torch.ones(2, 1, 32, 40))          # (N, 2 views, M, H, W)
        >>> out.shape, bool(torch.allclose(out, torch.ones(()), atol=1e-5))
        (torch.Size([2, 2, 1, 32, 40]), True)
    """

    def __init__(self, k_left, k_right, scales, image_hw, *, cell_hw=None, origin=(0, 0),
                 blend_px=8, kernel_size=None):
        kl, kr, grid_shape = _grid_kernels(k_left, k_right)
        device = kl.device
        self.scales = _scales_tensor(scales, device).to(torch.float32)
        self.grid = KernelGrid(image_hw, grid_shape, cell_hw=cell_hw, origin=origin,
                               blend_px=blend_px)
        work = torch.float32 if kl.dtype != torch.float64 else torch.float64
        kl, kr = kl.to(work), kr.to(work)
        self.gains = torch.stack([kl.sum((-2, -1)).mean(), kr.sum((-2, -1)).mean()])
        kls, krs = _scaled_kernels(kl, kr, self.scales.double(), kernel_size)
        kls = kls / kls.sum((-2, -1), keepdim=True)
        krs = krs / krs.sum((-2, -1), keepdim=True)
        self.kernels = (kls, krs)
        kh, kw = kls.shape[-2:]
        th, tw = self.grid.tile_hw
        self.fft_hw = n1, n2 = (fast_len(th + kh - 1), fast_len(tw + kw - 1))
        # halo: the kernel's reach, plus replicated/real content up to the FFT size (no
        # zero-padding copy inside rfft2; the kept part of the circular result is exact).
        ht, hl = kh - 1 - kh // 2, kw - 1 - kw // 2
        self.halo = (ht, n1 - th - ht, hl, n2 - tw - hl)
        idx = self.grid.kernel_index.reshape(-1).to(device)
        self._tile_kernels = (kls[:, idx], krs[:, idx])                  # (N, T, k, k)
        stacked = torch.stack(self._tile_kernels, 1)                      # (N, 2, T, k, k)
        self.spectra = _spectrum(stacked, *self.fft_hw)                   # (N, 2, T, n1, n2h)

    @property
    def n_layers(self) -> int:
        return self.scales.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` ``(N, M, H, W)`` (``M`` maps per layer) -> ``(N, 2, M, H, W)``.

        Differentiable; the backward pass is the operator's explicit adjoint (circular
        correlation of the tiles with the same stored spectra), which keeps no intermediate
        tensors and costs the same FFTs as the forward pass.
        """
        x = require_tensor("x", x)
        N = self.n_layers
        if x.ndim != 4 or x.shape[0] != N:
            raise ValueError(f"x must have shape ({N}, M, H, W), got {tuple(x.shape)}")
        if tuple(x.shape[-2:]) != self.grid.image_hw:
            raise ValueError(f"x must be {self.grid.image_hw} images, got {tuple(x.shape)}")
        if torch.is_grad_enabled() and x.requires_grad:
            return _BlurFunction.apply(x, self)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        N, M = x.shape[:2]
        g = self.grid
        (nR, nC), (th, tw), (n1, n2) = g.grid_hw, g.tile_hw, self.fft_hw
        tiles = g.split(x, self.halo, "replicate")                      # (N, M, nR, nC, n1, n2)
        X = torch.fft.rfft2(tiles).reshape(N, 1, M, g.n_tiles, n1, n2 // 2 + 1)
        Y = X * self.spectra.unsqueeze(2)                                 # (N, 2, M, T, ., .)
        ht, _, hl, _ = self.halo
        y = torch.fft.irfft2(Y, s=(n1, n2))[..., ht:ht + th, hl:hl + tw]
        return g.merge(y.reshape(N, 2, M, nR, nC, th, tw))

    def _adjoint(self, grad: torch.Tensor) -> torch.Tensor:
        """Adjoint of :meth:`_forward`: ``(N, 2, M, H, W)`` -> ``(N, M, H, W)``."""
        N, _, M = grad.shape[:3]
        g = self.grid
        (nR, nC), (n1, n2) = g.grid_hw, self.fft_hw
        tiles = g.merge_adjoint(grad)                                     # (N, 2, M, nR, nC, th, tw)
        G = torch.fft.rfft2(tiles, s=(n1, n2)).reshape(N, 2, M, g.n_tiles, n1, n2 // 2 + 1)
        X = (G * self._adjoint_spectra.unsqueeze(2)).sum(1)             # (N, M, T, ., .)
        xt = torch.fft.irfft2(X, s=(n1, n2)).reshape(N, M, nR, nC, n1, n2)
        return g.split_adjoint(xt, self.halo, "replicate")

    @property
    def _adjoint_spectra(self) -> torch.Tensor:
        """``conj(K)`` times the phase that moves a tile from the origin to ``(ht, hl)``."""
        if getattr(self, "_adj", None) is None:
            n1, n2 = self.fft_hw
            ht, _, hl, _ = self.halo
            dev = self.spectra.device
            real = torch.float64 if self.spectra.dtype == torch.complex128 else torch.float32
            u = torch.fft.fftfreq(n1, device=dev, dtype=real).reshape(-1, 1)
            v = torch.fft.rfftfreq(n2, device=dev, dtype=real).reshape(1, -1)
            phase = torch.polar(torch.ones((), dtype=real, device=dev), -2 * math.pi * (u * ht + v * hl))
            self._adj = self.spectra.conj() * phase
        return self._adj

    def bias(self, sigma2=SIGMA2, phi2=PHI2) -> torch.Tensor:
        """``(N,)`` bias correction ``B(d_i)`` (Eq. 5, per pixel) averaged over the tiles' cells,
        as the authors' code averages over the 48 cells."""
        kl, kr = self._tile_kernels
        return bias_correction(kl, kr, sigma2, phi2).mean(-1)

    def to_view_brightness(self) -> torch.Tensor:
        """``(2,)`` factors ``gain_v / mean(gain)`` applied to the colour term of each view."""
        return self.gains / self.gains.mean()


class _BlurFunction(torch.autograd.Function):
    """:class:`DPBlur` with its explicit adjoint as the backward pass."""

    @staticmethod
    def forward(ctx, x, blur):
        ctx.blur = blur
        return blur._forward(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.blur._adjoint(grad.contiguous()), None


@dataclass
class DPRender:
    """Output of :func:`render_dp`.

    Attributes:
        left: ``(1, C, H, W)`` rendered left view.
        right: ``(1, C, H, W)`` rendered right view.
        transmittance: ``(N, 2, 1, H, W)`` blurred transmittance of each layer and view,
            ``(k * alpha_i) prod_{j>i} (1 - k * alpha_j)`` (the weights of Eq. 8).
    """

    left: torch.Tensor
    right: torch.Tensor
    transmittance: torch.Tensor


def _render(colors, alphas, blur: DPBlur, gain: torch.Tensor):
    """Eq. 2 for both views; returns views (2, C, H, W), blurred transmittance, blurred colours."""
    C = colors.shape[1]
    stack = torch.cat([colors * alphas, alphas, colors], 1)               # (N, 2C+1, H, W)
    b = blur(stack)                                                       # (N, 2, 2C+1, H, W)
    bca, ba, bc = b.split([C, 1, C], dim=2)                               # (split: cheap backward)
    vis = _visibility(ba)
    g = gain.reshape(1, 2, 1, 1, 1).to(colors.dtype)
    views = (g * bca * vis).sum(0)                                        # (2, C, H, W)
    return views, ba * vis, g * bc


def render_dp(mpi: MPI, k_left=None, k_right=None, *, blur: DPBlur | None = None, cell_hw=None,
              origin=(0, 0), blend_px=8) -> DPRender:
    """Render the left and right DP views of an MPI (Xin et al. Eq. 2).

    Each layer's ``c_i alpha_i`` and ``alpha_i`` are blurred with the layer's left/right
    kernels (the reference kernels resized to ``mpi.scales``, spatially varying over the
    calibration grid, see :class:`KernelGrid`) and composited back to front. Pass a
    :class:`DPBlur` to reuse its precomputed spectra.

    Args:
        mpi: the :class:`MPI`.
        k_left: reference left kernel ``(kh, kw)`` or ``(R, C, kh, kw)`` (ignored with ``blur``).
        k_right: reference right kernel(s).
        blur: a precomputed :class:`DPBlur` for ``mpi.scales`` and the image size.
        cell_hw: grid cell size.
        origin: grid origin.
        blend_px: cross-fade half-width.

    Returns:
        :class:`DPRender` with ``left``, ``right`` (views at view brightness: with half-sum
        kernels ``left + right`` has the brightness of the MPI) and the blurred
        transmittances.

    Raises:
        ValueError: neither kernels nor ``blur`` given; mismatched sizes.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(3.0, size=15)
        >>> m = MPI(torch.full((2, 1, 24, 24), 0.6), torch.ones(2, 1, 24, 24), torch.tensor([1.0, 0.5]))
        >>> r = render_dp(m, kl, kr)
        >>> round(float(r.left.mean() + r.right.mean()), 4)    # a flat MPI stays flat
        0.6
    """
    if not isinstance(mpi, MPI):
        raise TypeError(f"mpi must be a dplab.xin.mpi.MPI, got {type(mpi).__name__}")
    H, W = mpi.alphas.shape[-2:]
    if blur is None:
        if k_left is None or k_right is None:
            raise ValueError("pass k_left and k_right, or a precomputed blur=DPBlur(...)")
        blur = DPBlur(k_left, k_right, mpi.scales, (H, W), cell_hw=cell_hw, origin=origin,
                      blend_px=blend_px)
    if blur.grid.image_hw != (H, W) or blur.n_layers != mpi.n_layers:
        raise ValueError(f"blur was built for {blur.n_layers} layers of {blur.grid.image_hw}, "
                         f"the MPI has {mpi.n_layers} of {(H, W)}")
    views, trans, _ = _render(mpi.colors, mpi.alphas, blur, blur.gains)
    return DPRender(views[0:1], views[1:2], trans)


# ============================================================================ optimisation
def lr_schedule(iteration: int, iterations: int, lr_start: float = 0.3, lr_end: float = 0.1) -> float:
    """Learning rate decaying exponentially (log-linearly) from ``lr_start`` to ``lr_end``.

    ``lr = exp((1 - t) log lr_start + t log lr_end)``, ``t = clip(iteration / iterations, 0, 1)``
    (Xin et al. Sec. 5.1; the authors' ``_log_decay``).

    Example:
        >>> round(lr_schedule(0, 100), 6), round(lr_schedule(50, 100), 6), round(lr_schedule(100, 100), 6)
        (0.3, 0.173205, 0.1)
    """
    t = min(max(iteration / max(iterations, 1), 0.0), 1.0)
    return math.exp((1 - t) * math.log(lr_start) + t * math.log(lr_end))


@dataclass
class MPIResult:
    """Output of :func:`optimize`.

    Attributes:
        all_in_focus: ``(1, C, H, W)`` composite (Eq. 1), in the input's units with the
            brightness the kernels imply (``left + right`` for half-sum kernels).
        defocus: ``(1, 1, H, W)`` defocus map (Eq. 15), in kernel-scale units.
        mpi: the optimised :class:`MPI` (same units).
        history: one dict per logged iteration: ``iteration``, ``lr``, ``total`` and each loss
            term (``data``, ``aux``, ``intensity``, ``alpha``, ``entropy``), and ``seconds``.
        left: ``(1, C, H, W)`` rendered left view (input units).
        right: ``(1, C, H, W)`` rendered right view.
        seconds: wall time of the iterations.
    """

    all_in_focus: torch.Tensor
    defocus: torch.Tensor
    mpi: MPI
    history: list = field(default_factory=list)
    left: torch.Tensor | None = None
    right: torch.Tensor | None = None
    seconds: float = 0.0


def optimize(left, right, k_left, k_right, n_layers: int = 12, iterations: int = 10_000, scales=None,
             *, weights=None, bias: bool = True, sigma2: float = SIGMA2, phi2: float = PHI2,
             lr=(0.3, 0.1), cell_hw=None, origin=(0, 0), blend_px: int = 8, kernel_size=None,
             generator: torch.Generator | None = None, seed: int | None = None,
             init_noise: float = 0.0, device=None, callback: Callable | None = None,
             log_every: int = 50, progress: bool = False) -> MPIResult:
    """Fit an MPI to a DP pair (Xin et al. Sec. 4.3, supplement D): defocus map + deblurring.

    Steps (the authors' code, REFERENCE_FACTS):

    1. Observations are divided by their common maximum; ``s = 0.5 / mean(obs)`` is the
       intensity normalisation of supplement D (applied to the smoothness terms and to the
       data-term weights, as the code does).
    2. Layers at ``scales`` (back to front; :func:`layer_scales`); reference kernels resized per
       layer and made unit-sum (:class:`DPBlur`); per-layer bias ``B(d_i)`` of Eq. 5 averaged
       over the grid cells and multiplied by ``mean(obs) / 0.5``.
    3. Parameters in logit space: intensities initialised to ``mean(obs)`` (view units), alphas
       to ``1 / (i + 1)`` so that all layers start with equal transmittance; the back layer is
       held opaque (the code reaches the same with ``logit(1) = inf``).
    4. Adam (betas 0.9/0.999, eps 1e-8), learning rate from ``lr[0]`` to ``lr[1]`` log-linearly
       over ``iterations``; non-finite gradient entries are zeroed (the code zeroes NaNs).
    5. Loss of Eq. 6 (:func:`dplab.xin.mpi_losses.mpi_loss`).

    Speed: each iteration costs one batched FFT of the layer tiles and two inverse FFTs per
    view and map (forward and backward). On a CPU shared with other jobs, PyTorch's
    intra-op threads can stall each other badly (measured here: 168x224, 8 layers, 0.13-0.27
    s/iteration with ``torch.set_num_threads(1)``, 0.5-1.7 s with 2 threads on 2 busy cores);
    set the thread count to the cores you actually have free.

    Args:
        left: left view ``(1, C, H, W)`` (vignetting-corrected; see
            :func:`dplab.data.pixel4.vignetting_gain`).
        right: right view, same shape.
        k_left: reference left kernel ``(kh, kw)`` or grid ``(R, C, kh, kw)``.
        k_right: reference right kernel(s).
        n_layers: number of layers ``N`` (paper: 12).
        iterations: Adam iterations (paper: 10,000).
        scales: a pair ``(near, far)`` (tuple or list of two numbers: ``N`` layers evenly
            spaced from ``far`` at the back to ``near`` at the front, :func:`layer_scales`), or
            a 1-D tensor (or a sequence of ``N != 2`` numbers) of the ``N`` scales back to
            front; default ``(0.5, 1.6)`` (scenes 1-2 of the authors' settings,
            :func:`dplab.data.pixel4.scene_settings`).
        weights: :class:`dplab.xin.mpi_losses.LossWeights` (default: supplement D / the code).
        bias: use the bias-corrected losses (Eqs. 7-9); False for the "no B" ablation.
        sigma2: noise variance of Eq. 5.
        phi2: ``|Phi|^2`` of Eq. 5 (unit-sum views).
        lr: ``(start, end)`` learning rates.
        cell_hw: kernel-grid cell size (see :class:`KernelGrid`).
        origin: kernel-grid origin.
        blend_px: cross-fade between grid cells (0: the code's hard cells).
        kernel_size: size of the resized kernels.
        generator: random generator for ``init_noise``.
        seed: seed for ``init_noise`` when no generator is given.
        init_noise: std of Gaussian noise added to the initial logits (0: the code's
            deterministic start).
        device: where to run (default: the inputs' device); CPU and CUDA alike.
        callback: called as ``callback(iteration, terms, mpi)`` at every logged iteration.
        log_every: logging period (also the period of the history).
        progress: show a tqdm progress bar.

    Returns:
        :class:`MPIResult`.

    Raises:
        TypeError / ValueError: invalid inputs (batch size other than 1, shapes, kernels,
            scales, iterations).

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(3.0, size=15)
        >>> img = torch.rand(1, 1, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> res = optimize(img / 2, img / 2, kl, kr, n_layers=3, iterations=5, scales=(0.5, 1.5))
        >>> res.all_in_focus.shape, res.defocus.shape, len(res.history)
        (torch.Size([1, 1, 32, 32]), torch.Size([1, 1, 32, 32]), 2)
    """
    from dplab.xin.mpi_losses import LossWeights, mpi_loss

    left = require_image("left", left)
    right = require_image("right", right)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {tuple(left.shape)} and "
                         f"{tuple(right.shape)}")
    if left.shape[0] != 1:
        raise ValueError(f"optimize fits one image at a time: left has batch size {left.shape[0]}")
    n_layers = require_positive("n_layers", n_layers, integer=True)
    if n_layers < 2:
        raise ValueError(f"n_layers must be >= 2, got {n_layers}")
    iterations = require_positive("iterations", iterations, allow_zero=True, integer=True)
    log_every = require_positive("log_every", log_every, integer=True)
    init_noise = float(require_positive("init_noise", init_noise, allow_zero=True))
    if not (isinstance(lr, (tuple, list)) and len(lr) == 2):
        raise ValueError(f"lr must be a pair (start, end), got {lr!r}")
    lr0, lr1 = (float(require_positive("lr", v)) for v in lr)
    weights = LossWeights() if weights is None else weights
    if not isinstance(weights, LossWeights):
        raise TypeError(f"weights must be a dplab.xin.mpi_losses.LossWeights, got {type(weights).__name__}")
    dev = torch.device(device) if device is not None else left.device
    left, right = left.to(dev, torch.float32), right.to(dev, torch.float32)
    k_left, k_right = require_kernel("k_left", k_left), require_kernel("k_right", k_right)
    k_left, k_right = k_left.to(dev, torch.float32), k_right.to(dev, torch.float32)

    if scales is None:
        scales = (0.5, 1.6)
    if isinstance(scales, (tuple, list)) and len(scales) == 2:
        sc = layer_scales(n_layers, scales[0], scales[1], device=dev)
    else:
        sc = _scales_tensor(scales, dev).float()
        if sc.numel() != n_layers:
            raise ValueError(f"scales has {sc.numel()} entries but n_layers is {n_layers}")

    H, W = left.shape[-2:]
    C = left.shape[1]
    blur = DPBlur(k_left, k_right, sc, (H, W), cell_hw=cell_hw, origin=origin,
                  blend_px=blend_px, kernel_size=kernel_size)
    gain = blur.to_view_brightness()

    obs_max = torch.maximum(left.max(), right.max())
    if float(obs_max) <= 0:
        raise ValueError("left and right are all zero")
    obs = torch.cat([left, right], 0) / obs_max                           # (2, C, H, W)
    mean_obs = obs.mean()
    layer_bias = blur.bias(sigma2, phi2) * (mean_obs / 0.5) if bias else torch.zeros(n_layers, device=dev)
    w = weights.resolved(n_layers)

    init_c = float(mean_obs.clamp(1e-4, 1 - 1e-4))
    theta_c = torch.full((n_layers, C, H, W), math.log(init_c / (1 - init_c)), device=dev)
    a0 = 1.0 / torch.arange(2, n_layers + 1, dtype=torch.float32, device=dev)
    theta_a = torch.logit(a0).reshape(-1, 1, 1, 1).expand(n_layers - 1, 1, H, W).clone()
    if init_noise > 0:
        gen = generator if generator is not None else torch.Generator().manual_seed(
            0 if seed is None else int(seed))
        theta_c += init_noise * torch.randn(theta_c.shape, generator=gen).to(dev)
        theta_a += init_noise * torch.randn(theta_a.shape, generator=gen).to(dev)
    theta_c.requires_grad_(True)
    theta_a.requires_grad_(True)
    opt = torch.optim.Adam([theta_c, theta_a], lr=lr0, betas=(0.9, 0.999), eps=1e-8)
    one = torch.ones(1, 1, H, W, device=dev)

    def params():
        return torch.sigmoid(theta_c), torch.cat([one, torch.sigmoid(theta_a)], 0)

    def snapshot() -> MPI:
        with torch.no_grad():
            c, a = params()
            return MPI(c * obs_max / blur.gains.mean(), a, sc)

    history = []
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=iterations, desc="MPI")
    t0 = time.perf_counter()
    for it in range(iterations + 1):
        for group in opt.param_groups:
            group["lr"] = lr_schedule(it, iterations, lr0, lr1)
        log = it % log_every == 0 or it == iterations
        c, a = params()
        total, terms = mpi_loss(c, a, obs, blur, gain, layer_bias, w, detail=log)
        if log:
            entry = {"iteration": it, "lr": opt.param_groups[0]["lr"], "total": float(total.detach())}
            entry.update({k: float(v) for k, v in terms.items()})
            entry["seconds"] = time.perf_counter() - t0
            history.append(entry)
            if callback is not None:
                callback(it, entry, snapshot())
        if it == iterations:
            break                      # the last pass only evaluates (like the code's final loss)
        opt.zero_grad(set_to_none=True)
        total.backward()
        for p in (theta_c, theta_a):
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        opt.step()
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    seconds = time.perf_counter() - t0
    mpi = snapshot()
    with torch.no_grad():
        c, a = params()
        views, _, _ = _render(c, a, blur, gain)
        views = views * obs_max
    return MPIResult(mpi.all_in_focus(), mpi.defocus_map(), mpi, history,
                     views[0:1], views[1:2], seconds)
