"""The calibrated dual-pixel kernels as the Wiener and MPI code of Xin et al. takes them.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Sec. 3-4.

* :func:`kernel_pair`: the checks every function applies to a left/right kernel pair (same
  shape and device, non-negative, finite, positive sums).
* :func:`kernel_spectrum`: the real FFT of a kernel on an FFT grid with its centre at the
  origin (the ``K_v`` of supplement Eq. 20).
* :func:`scales_tensor`, :func:`scaled_kernels`: defocus sizes (kernel scales) and the
  reference kernels resized to each (Sec. 4: the kernels at defocus size ``d'`` are the
  calibrated ones scaled by ``d'/d``).
* :func:`grid_kernels`, :class:`KernelGrid`: spatially varying kernels.

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
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_kernel, require_number, require_positive
from dplab.ops.fftconv import pad_index
from dplab.optics.kernels import rescale_kernel

__all__ = ["kernel_pair", "kernel_spectrum", "scales_tensor", "grid_kernels", "scaled_kernels",
           "KernelGrid"]


def kernel_pair(k_left, k_right):
    """Check a left/right kernel pair: tensors of the same shape and device, each kernel summing > 0.

    Args:
        k_left: left kernel(s) ``(..., kh, kw)``, non-negative and finite.
        k_right: right kernel(s), same shape.

    Returns:
        ``(k_left, k_right)`` unchanged.

    Raises:
        TypeError: non-tensor kernels.
        ValueError: negative or non-finite entries, different shapes or devices, an even
            height or width (no centre pixel), a kernel with a zero sum.

    Example:
        >>> kl, kr = kernel_pair(torch.ones(3, 3), torch.ones(3, 3))
        >>> kernel_pair(torch.ones(3, 3), torch.zeros(3, 3))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: k_left and k_right must have a positive sum
    """
    k_left, k_right = require_kernel("k_left", k_left), require_kernel("k_right", k_right)
    if k_left.shape != k_right.shape:
        raise ValueError(f"k_left and k_right must have the same shape, got {tuple(k_left.shape)} "
                         f"and {tuple(k_right.shape)}")
    if k_left.device != k_right.device:
        raise ValueError(f"k_left is on {k_left.device} but k_right is on {k_right.device}")
    kh, kw = k_left.shape[-2:]
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"kernels must have odd height and width (a centre pixel), got {kh}x{kw}; pad an "
                         "even kernel with one row/column of zeros on the side its centre should move away from")
    sums = torch.cat([k_left.sum((-2, -1)).reshape(-1), k_right.sum((-2, -1)).reshape(-1)])
    if bool((sums <= 0).any()):
        raise ValueError("k_left and k_right must have a positive sum (an all-zero kernel has no "
                         "spectrum to deconvolve)")
    return k_left, k_right


def kernel_spectrum(k: torch.Tensor, n1: int, n2: int) -> torch.Tensor:
    """Real FFT of kernels on an ``n1 x n2`` grid with their centre (index ``k//2``) at the origin.

    The kernel is zero-padded to ``n1 x n2`` and rolled so that its centre sits at index
    ``(0, 0)``: multiplying an image's ``rfft2`` by this spectrum is the circular convolution
    with the centre convention of :func:`dplab.ops.fftconv.fft_conv2d`.

    Args:
        k: ``(..., kh, kw)`` kernels.
        n1: FFT rows (>= kh).
        n2: FFT columns (>= kw).

    Returns:
        ``(..., n1, n2 // 2 + 1)`` complex tensor.

    Raises:
        ValueError: kernel larger than the FFT grid.

    Example:
        >>> delta = torch.zeros(3, 3); delta[1, 1] = 1.0
        >>> bool(torch.allclose(kernel_spectrum(delta, 8, 8), torch.ones(8, 5, dtype=torch.complex64)))
        True
    """
    kh, kw = k.shape[-2:]
    if kh > n1 or kw > n2:
        raise ValueError(f"the kernel ({kh}x{kw}) is larger than the FFT grid ({n1}x{n2}); "
                         "use a larger image or padding")
    grid = F.pad(k, (0, n2 - kw, 0, n1 - kh))
    grid = torch.roll(grid, shifts=(-(kh // 2), -(kw // 2)), dims=(-2, -1))
    return torch.fft.rfft2(grid)


def scales_tensor(scales, device) -> torch.Tensor:
    """Defocus sizes (kernel scales) as a checked 1-D float64 tensor.

    Args:
        scales: 1-D sequence or tensor of numbers, all finite and > 0.
        device: device of the result.

    Returns:
        ``(D,)`` float64 tensor.

    Raises:
        TypeError: not a sequence of numbers.
        ValueError: empty, non-finite or non-positive scales.

    Example:
        >>> scales_tensor([0.5, 1.0], "cpu")
        tensor([0.5000, 1.0000], dtype=torch.float64)
    """
    if isinstance(scales, torch.Tensor):
        sc = scales.detach().to(device=device, dtype=torch.float64).reshape(-1)
    else:
        try:
            sc = torch.tensor([float(require_number("scales", s)) for s in scales],
                              dtype=torch.float64, device=device)
        except TypeError:
            raise TypeError(f"scales must be a 1-D sequence or tensor of numbers, got "
                            f"{type(scales).__name__}") from None
    if sc.numel() == 0:
        raise ValueError("scales is empty")
    if not bool(torch.isfinite(sc).all()) or bool((sc <= 0).any()):
        raise ValueError(f"scales must be finite and > 0, got {sc.tolist()}")
    return sc


def grid_kernels(k_left, k_right):
    """``(kh, kw)`` or ``(R, C, kh, kw)`` kernel pairs -> ``(R*C, kh, kw)`` each and ``(R, C)``.

    Args:
        k_left: one left kernel ``(kh, kw)`` or a grid ``(R, C, kh, kw)`` of them (row-major
            cells, as :func:`dplab.data.pixel4.load_kernel_grid` returns them).
        k_right: right kernel(s), same shape.

    Returns:
        ``(kl, kr, (R, C))`` with ``kl``, ``kr`` of shape ``(R*C, kh, kw)`` (``(1, 1)`` grid for
        a single pair).

    Raises:
        TypeError / ValueError: as :func:`kernel_pair`; a shape other than 2-D or 4-D.

    Example:
        >>> kl, kr, grid = grid_kernels(torch.ones(2, 3, 5, 5), torch.ones(2, 3, 5, 5))
        >>> kl.shape, grid
        (torch.Size([6, 5, 5]), (2, 3))
    """
    k_left, k_right = kernel_pair(k_left, k_right)  # same checks as the Wiener functions
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


def scaled_kernels(kl, kr, scales, kernel_size):
    """Resized kernels ``(D, R*C, k, k)`` for each scale (:func:`dplab.optics.kernels.rescale_kernel`).

    Args:
        kl: left kernels ``(R*C, kh, kw)`` (:func:`grid_kernels`).
        kr: right kernels, same shape.
        scales: ``(D,)`` tensor of scales (:func:`scales_tensor`).
        kernel_size: size ``k`` of the resized kernels, or None for the reference size.

    Returns:
        ``(left, right)``, each ``(D, R*C, k, k)`` (kernel sums kept).

    Example:
        >>> kl = torch.ones(1, 5, 5) / 50
        >>> out_l, out_r = scaled_kernels(kl, kl, torch.tensor([0.5, 1.0]), None)
        >>> out_l.shape
        torch.Size([2, 1, 5, 5])
    """
    size = None if kernel_size is None else require_positive("kernel_size", kernel_size, integer=True)
    out_l = torch.stack([rescale_kernel(kl, float(s), size) for s in scales.tolist()])
    out_r = torch.stack([rescale_kernel(kr, float(s), size) for s in scales.tolist()])
    return out_l, out_r


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
        top, bottom, lft, rgt = self.extension_pads(halo)
        return pad_index(H, top, bottom, mode, device), pad_index(W, lft, rgt, mode, device)

    def extension_pads(self, halo=(0, 0, 0, 0)) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)``: how far the extended image that :meth:`split` cuts
        into tiles reaches beyond the image (all >= 0), for a tile input of ``tile_hw`` plus
        ``halo``; tile ``(r, c)`` starts at row ``r * ch`` and column ``c * cw`` of it."""
        ht, hb, hl, hr = halo
        H, W = self.image_hw
        (ch, cw), (by, bx), (nR, nC) = self.cell_hw, self.blend, self.grid_hw
        return (by + ht - self._y0, self._y0 + nR * ch + by + hb - H,
                bx + hl - self._x0, self._x0 + nC * cw + bx + hr - W)

    def tile_origins(self) -> list[list[tuple[int, int]]]:
        """Image coordinates ``(y, x)`` of the top-left output pixel of every tile (may be
        negative or reach beyond the image: the tile's output is clipped to it by :meth:`merge`)."""
        (nR, nC), (ch, cw), (by, bx) = self.grid_hw, self.cell_hw, self.blend
        return [[(self._y0 + r * ch - by, self._x0 + c * cw - bx) for c in range(nC)] for r in range(nR)]

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

