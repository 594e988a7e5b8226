"""The dual-pixel blur of an MPI's layers, ``k_v^{d_i} * x_i``, as a linear operator with its adjoint.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Eq. 2 (and Eq. 8, which blurs the same layers).

Every layer ``x_i`` of a multiplane image is convolved with the left and right kernels resized
to the layer's defocus size ``d_i`` (Sec. 4), spatially varying over the calibration grid
(:class:`dplab.xin.kernels.KernelGrid`, whose module docstring describes the tiles, halos and
cross-fades). :class:`DPBlur` precomputes the kernels' spectra for every (layer, view, tile):
the forward pass (calling the operator) costs one real FFT per tile and map and one inverse
FFT per view. :meth:`DPBlur.adjoint` is the transposed operator (cross-fade weights, circular
correlation of each tile with the same spectra, overlap-add of the tiles and the replicated
border folded back onto the image); autograd uses it as the backward pass, which keeps no
intermediate tensors and costs the same FFTs as the forward pass.

Speed on a CPU (the MPI step at 1008x1344 with 12 layers runs 1,728 forward and 3,456 inverse
FFTs of 256x256 points in each direction; profiled with ``torch.profiler``): the work is done one
layer at a time and, within a layer, one row of tiles at a time, so that each batch of FFTs
and its products with the spectra (a few MB) stay in the caches instead of streaming tensors
of several hundred MB through memory for every operation; the inverse FFT of the forward pass
computes only the rows it keeps (the spectra are stored transposed, so that this pruned
transform runs along contiguous memory); each layer's kernels are trimmed to their non-zero
support (exact: the resized kernels are zero outside it) and get their own FFT size, the
smallest ``2^a 3^b (5)`` with ``a >= 2`` that holds tile plus kernel (256 instead of the
5-smooth 250 for a 61-px kernel: MKL's 250-point transforms are 1.6x slower); the replicated
border is one ``F.pad`` (indexing the columns was 50x slower) and the tiles are views of it.
``benchmarks/mpi.py --reference`` times this against the batched step it replaced.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dplab._validate import require_tensor
from dplab.xin.bias import PHI2, SIGMA2, bias_correction
from dplab.xin.kernels import KernelGrid, grid_kernels, kernel_spectrum, scaled_kernels, scales_tensor

__all__ = ["DPBlur"]


#: Elements of the tile batch that one FFT call transforms (rows of tiles are grouped up to it):
#: one row of 8 tiles x 3 maps at full resolution (1.6M), several rows of a small image.
_CHUNK = 2 ** 21


def _fft_len(n: int) -> int:
    """Smallest ``m >= n`` of the form ``2^a 3^b 5^c`` with ``a >= 2`` and ``c <= 1``.

    Sizes with a factor 4 and at most one factor 5 are the fast ones for MKL's and cuFFT's
    real 2-D transforms (measured on a 2-core CPU: 256 points cost 0.14 ms per real FFT, 250 =
    2 5^3 points 0.22 ms).

    Example:
        >>> [_fft_len(n) for n in (1, 130, 214, 226, 244)]
        [4, 144, 216, 240, 256]
    """
    best = 4
    while best < n:
        best *= 2
    p = 1
    while p < best:
        for q in (p, 5 * p):
            m = 4 * q
            while m < n:
                m *= 2
            best = min(best, m)
        p *= 3
    return best


def _support(k: torch.Tensor) -> tuple[int, int]:
    """Half-height and half-width of the smallest centred window that holds every non-zero
    entry of the kernels ``(..., kh, kw)`` (the rest is exactly zero: trimming it is exact)."""
    kh, kw = k.shape[-2:]
    nz = k.reshape(-1, kh, kw).abs().amax(0) > 0
    rows, cols = nz.any(1).nonzero().flatten(), nz.any(0).nonzero().flatten()
    if rows.numel() == 0:
        return 0, 0
    return int((rows - kh // 2).abs().max()), int((cols - kw // 2).abs().max())


def _pad_adjoint(ext: torch.Tensor, pads, hw) -> torch.Tensor:
    """Adjoint of ``F.pad(x, (left, right, top, bottom), mode="replicate")``: the extension
    summed back onto the edge rows and columns of ``(..., H, W)``."""
    top, bottom, left, right = pads
    H, W = hw
    rows = ext[..., top:top + H, :].clone()
    if top:
        rows[..., :1, :] += ext[..., :top, :].sum(-2, keepdim=True)
    if bottom:
        rows[..., -1:, :] += ext[..., top + H:, :].sum(-2, keepdim=True)
    out = rows[..., left:left + W].clone()
    if left:
        out[..., :1] += rows[..., :left].sum(-1, keepdim=True)
    if right:
        out[..., -1:] += rows[..., left + W:].sum(-1, keepdim=True)
    return out


class _Layer:
    """Per-layer FFT plan: size, halo, padding of the extended image and the kernel spectra."""

    def __init__(self, kernels: torch.Tensor, grid: KernelGrid):
        hy, hx = _support(kernels)                                        # kernels (2, T, k, k)
        kh, kw = kernels.shape[-2:]
        k = kernels[..., kh // 2 - hy:kh // 2 + hy + 1, kw // 2 - hx:kw // 2 + hx + 1]
        th, tw = grid.tile_hw
        self.fft_hw = n1, n2 = _fft_len(th + 2 * hy), _fft_len(tw + 2 * hx)
        self.halo = (hy, n1 - th - hy, hx, n2 - tw - hx)
        self.pads = grid.extension_pads(self.halo)                       # (top, bottom, left, right)
        spectra = kernel_spectrum(k, n1, n2)                              # (2, T, n1, n2 // 2 + 1)
        # the forward pass multiplies transposed spectra (2, T, n2 // 2 + 1, n1): its inverse
        # FFT along the rows is then a contiguous 1-D transform, cut to the kept rows
        self.spectra_t = spectra.transpose(-1, -2).contiguous()
        real = torch.float64 if spectra.dtype == torch.complex128 else torch.float32
        u = torch.fft.fftfreq(n1, device=k.device, dtype=real).reshape(-1, 1)
        v = torch.fft.rfftfreq(n2, device=k.device, dtype=real).reshape(1, -1)
        # conj(K) times the phase that moves a tile placed at the origin to (hy, hx)
        phase = torch.polar(torch.ones((), dtype=real, device=k.device), -2 * math.pi * (u * hy + v * hx))
        self.adjoint = spectra.conj() * phase


class DPBlur:
    """Spatially varying DP blur of an MPI's layers, ``k_v^{d_i} * x_i`` (Xin et al. Eq. 2).

    Resizes the reference kernels to every layer's scale once, normalises them to unit sum
    (for alpha compositing; the views' kernel sums are kept in :attr:`gains`), trims each
    layer's kernels to their non-zero support and stores the spectra of every (layer, view,
    tile) on that layer's FFT grid; a call then costs one real FFT per tile and map and one
    inverse FFT per view, and :meth:`adjoint` applies the transposed operator (the backward
    pass). Works on CPU and CUDA (the kernels' device).

    Speed (the module docstring of :mod:`dplab.xin.blur`): the layers are processed one at a
    time and each layer a few rows of tiles at a time (one row at full resolution; every row of
    a layer at once on CUDA), so that the FFTs work on a few MB that stay in the CPU's caches;
    the inverse FFT only computes the rows it keeps; FFT sizes are
    ``2^a 3^b (5)`` with ``a >= 2`` and fit each layer's kernel; the replicated border is one
    ``F.pad`` and the tiles are views of it.

    Args:
        k_left: reference left kernel ``(kh, kw)`` or grid ``(R, C, kh, kw)``.
        k_right: reference right kernel(s), same shape.
        scales: ``(N,)`` scale of each layer (back to front).
        image_hw: ``(H, W)``.
        cell_hw: grid cell size (see :class:`dplab.xin.kernels.KernelGrid`).
        origin: grid origin (see :class:`dplab.xin.kernels.KernelGrid`).
        blend_px: cross-fade half-width between cells (0: the authors' hard cells).
        kernel_size: size of the resized kernels (default the reference size; odd).

    Attributes:
        grid: the :class:`dplab.xin.kernels.KernelGrid`.
        gains: ``(2,)`` mean kernel sum of the left and right views (1/2 for dplab).
        kernels: ``(left, right)`` unit-sum resized kernels ``(N, R*C, k, k)``.
        fft_hw: ``(n1, n2)`` FFT size of each layer (a list).

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
        kl, kr, grid_shape = grid_kernels(k_left, k_right)
        device = kl.device
        self.scales = scales_tensor(scales, device).to(torch.float32)
        self.grid = KernelGrid(image_hw, grid_shape, cell_hw=cell_hw, origin=origin,
                               blend_px=blend_px)
        work = torch.float32 if kl.dtype != torch.float64 else torch.float64
        kl, kr = kl.to(work), kr.to(work)
        self.gains = torch.stack([kl.sum((-2, -1)).mean(), kr.sum((-2, -1)).mean()])
        kls, krs = scaled_kernels(kl, kr, self.scales.double(), kernel_size)
        kls = kls / kls.sum((-2, -1), keepdim=True)
        krs = krs / krs.sum((-2, -1), keepdim=True)
        self.kernels = (kls, krs)
        idx = self.grid.kernel_index.reshape(-1).to(device)
        self._tile_kernels = (kls[:, idx], krs[:, idx])                  # (N, T, k, k)
        self._layers = [_Layer(torch.stack([kls[i, idx], krs[i, idx]]), self.grid)
                        for i in range(self.scales.numel())]
        self.fft_hw = [layer.fft_hw for layer in self._layers]
        g = self.grid
        (th, tw), (H, W) = g.tile_hw, g.image_hw
        # where each tile's output lands in the image: (rows, cols) of the image and of the tile
        (nR, nC), (ch, cw), (by, bx) = g.grid_hw, g.cell_hw, g.blend
        # where each tile's output lands in the image, in the order the forward pass writes the
        # tiles (row by row): (add, image rows, image cols, tile rows, tile cols); the band a
        # tile shares with the tile above or to its left is added, the rest copied (the output
        # needs no zero fill)
        self._place = []
        for r, row in enumerate(g.tile_origins()):
            places = []
            for c, (oy, ox) in enumerate(row):
                y0, y1, x0, x1 = max(oy, 0), min(oy + th, H), max(ox, 0), min(ox + tw, W)
                ym = min(max(oy + 2 * by, y0), y1) if r > 0 else y0     # end of the band shared above
                xm = min(max(ox + 2 * bx, x0), x1) if c > 0 else x0     # end of the band shared left
                parts = [(True, y0, ym, x0, x1), (True, ym, y1, x0, xm), (False, ym, y1, xm, x1)]
                places.append([(add, slice(a, b), slice(e, f), slice(a - oy, b - oy), slice(e - ox, f - ox))
                               for add, a, b, e, f in parts if b > a and f > e])
            self._place.append(places)
        oy, ox = g.tile_origins()[0][0]
        # zero padding of an image onto the canvas the tiles' outputs tile (left, right, top, bottom)
        self._canvas = (-ox, nC * cw + 2 * bx - W + ox, -oy, nR * ch + 2 * by - H + oy)
        self._weighted = g.n_tiles > 1 and (by > 0 or bx > 0)

    @property
    def n_layers(self) -> int:
        return self.scales.numel()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Blur ``x`` ``(N, M, H, W)`` (``M`` maps per layer) -> ``(N, 2, M, H, W)``.

        Differentiable; the backward pass is the operator's explicit adjoint (:meth:`adjoint`:
        circular correlation of the tiles with the same stored spectra), which keeps no
        intermediate tensors and costs the same FFTs as the forward pass.
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

    def _weights(self, x: torch.Tensor):
        return self.grid.weights(x.dtype, x.device) if self._weighted else None

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        N, M = x.shape[:2]
        g = self.grid
        (nR, nC), (th, tw), (ch, cw) = g.grid_hw, g.tile_hw, g.cell_hw
        w = self._weights(x)
        out = x.new_empty((N, 2) + tuple(x.shape[1:]))
        for i, layer in enumerate(self._layers):
            (n1, n2), (ht, _, hl, _) = layer.fft_hw, layer.halo
            top, bottom, left, right = layer.pads
            ext = F.pad(x[i:i + 1], (left, right, top, bottom), mode="replicate")[0]
            tiles = ext.unfold(-2, n1, ch).unfold(-2, n2, cw)                # (M, nR, nC, n1, n2)
            step = nR if x.is_cuda else max(1, _CHUNK // (M * nC * n1 * n2))  # rows of tiles at once
            for r0 in range(0, nR, step):
                r1 = min(nR, r0 + step)
                X = torch.fft.rfft2(tiles[:, r0:r1].flatten(1, 2))             # (M, k nC, n1, n2h)
                X = X.transpose(-1, -2).contiguous()                           # (M, k nC, n2h, n1)
                Y = X.unsqueeze(0) * layer.spectra_t[:, None, r0 * nC:r1 * nC]
                Z = torch.fft.ifft(Y, dim=-1).narrow(-1, ht, th)              # only the kept rows
                y = torch.fft.irfft(Z.transpose(-1, -2), n=n2, dim=-1).narrow(-1, hl, tw)  # (2, M, k nC, th, tw)
                for r in range(r0, r1):
                    for c, parts in enumerate(self._place[r]):
                        tile = y[:, :, (r - r0) * nC + c]
                        for add, ys, xs, tys, txs in parts:
                            dst = out[i, :, :, ys, xs]
                            if w is None:
                                dst.add_(tile[..., tys, txs]) if add else dst.copy_(tile[..., tys, txs])
                            elif add:
                                dst.addcmul_(tile[..., tys, txs], w[r, c, tys, txs])
                            else:
                                torch.mul(tile[..., tys, txs], w[r, c, tys, txs], out=dst)
        return out

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """The transposed operator: ``(N, 2, M, H, W)`` -> ``(N, M, H, W)``.

        ``<blur(x), y> = <x, blur.adjoint(y)>`` for all ``x`` and ``y`` (the sum of products
        over all entries); this is also the gradient that :meth:`__call__` passes back.

        Args:
            y: ``(N, 2, M, H, W)`` tensor, one map per layer, view and map of ``x``.

        Returns:
            ``(N, M, H, W)`` tensor.

        Raises:
            TypeError / ValueError: wrong type or shape.
        """
        y = require_tensor("y", y)
        N, (H, W) = self.n_layers, self.grid.image_hw
        if y.ndim != 5 or y.shape[0] != N or y.shape[1] != 2 or tuple(y.shape[-2:]) != (H, W):
            raise ValueError(f"y must have shape ({N}, 2, M, {H}, {W}), got {tuple(y.shape)}")
        return self._adjoint(y.contiguous())

    def _adjoint(self, grad: torch.Tensor) -> torch.Tensor:
        """:meth:`adjoint` without the checks."""
        N, _, M, H, W = grad.shape
        g = self.grid
        (nR, nC), (th, tw), (ch, cw) = g.grid_hw, g.tile_hw, g.cell_hw
        w = self._weights(grad)
        out = grad.new_empty(N, M, H, W)
        for i, layer in enumerate(self._layers):
            (n1, n2), pads = layer.fft_hw, layer.pads
            canvas = F.pad(grad[i], self._canvas)          # (2, M, Ho, Wo), zeros
            tiles = canvas.unfold(-2, th, ch).unfold(-2, tw, cw)             # (2, M, nR, nC, th, tw)
            ext = grad.new_zeros(M, H + pads[0] + pads[1], W + pads[2] + pads[3])
            step = nR if grad.is_cuda else max(1, _CHUNK // (M * nC * n1 * n2))  # rows of tiles at once
            buf = grad.new_zeros(2, M, min(step, nR), nC, n1, n2)            # tiles, zero-padded
            for r0 in range(0, nR, step):
                r1 = min(nR, r0 + step)
                b = buf[:, :, :r1 - r0]
                if w is None:
                    b[..., :th, :tw] = tiles[:, :, r0:r1]
                else:
                    torch.mul(tiles[:, :, r0:r1], w[r0:r1], out=b[..., :th, :tw])
                G = torch.fft.rfft2(b.flatten(2, 3))                          # (2, M, k nC, n1, n2h)
                A = layer.adjoint[:, None, r0 * nC:r1 * nC]
                xt = torch.fft.irfft2((G[0] * A[0]).addcmul_(G[1], A[1]), s=(n1, n2))  # (M, k nC, n1, n2)
                for r in range(r0, r1):
                    for c in range(nC):
                        ext[:, r * ch:r * ch + n1, c * cw:c * cw + n2] += xt[:, (r - r0) * nC + c]
            out[i] = _pad_adjoint(ext, pads, (H, W))
        return out

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

