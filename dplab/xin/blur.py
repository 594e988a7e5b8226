"""The dual-pixel blur of an MPI's layers, ``k_v^{d_i} * x_i``, as a linear operator with its adjoint.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Eq. 2 (and Eq. 8, which blurs the same layers).

Every layer ``x_i`` of a multiplane image is convolved with the left and right kernels resized
to the layer's defocus size ``d_i`` (Sec. 4), spatially varying over the calibration grid
(:class:`dplab.xin.kernels.KernelGrid`, whose module docstring describes the tiles, halos and
cross-fades). :class:`DPBlur` precomputes the kernels' spectra for every (layer, view, tile):
the forward pass (calling the operator) costs one batched real FFT of the layer tiles and one
inverse FFT per view. :meth:`DPBlur.adjoint` is the transposed operator (cross-fade weights,
circular correlation of each tile with the same spectra, overlap-add of the tiles and the
replicated border folded back onto the image); autograd uses it as the backward pass, which
keeps no intermediate tensors and costs the same FFTs as the forward pass.
"""

from __future__ import annotations

import math

import torch

from dplab._validate import require_tensor
from dplab.ops.fftconv import fast_len
from dplab.xin.bias import PHI2, SIGMA2, bias_correction
from dplab.xin.kernels import KernelGrid, grid_kernels, kernel_spectrum, scaled_kernels, scales_tensor

__all__ = ["DPBlur"]


class DPBlur:
    """Spatially varying DP blur of an MPI's layers, ``k_v^{d_i} * x_i`` (Xin et al. Eq. 2).

    Resizes the reference kernels to every layer's scale once, normalises them to unit sum
    (for alpha compositing; the views' kernel sums are kept in :attr:`gains`), and stores the
    spectra of every (layer, view, tile); a call then costs one batched real FFT of the layer
    tiles and one inverse FFT per view, and :meth:`adjoint` applies the transposed operator
    (the backward pass). Works on CPU and CUDA (the kernels' device).

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
        self.spectra = kernel_spectrum(stacked, *self.fft_hw)             # (N, 2, T, n1, n2h)

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

