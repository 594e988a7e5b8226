"""The multiplane image (MPI) of a dual-pixel capture: compositing and DP rendering.

Xin, Wadhwa, Xue, Barron, Srinivasan, Chen, Gkioulekas, Garg, "Defocus Map Estimation and
Deblurring from a Single Dual-Pixel Image", ICCV 2021, Sec. 4 and supplement C.1.

An MPI has ``N`` fronto-parallel layers ordered **back to front** (index 0 is the farthest,
as in the paper's products ``prod_{j=i+1}^N``), each with an intensity ``c_i`` and an alpha
``alpha_i``; layer ``i`` sits at the defocus size ``d_i`` (a kernel scale, evenly spaced,
:func:`layer_scales`). The farthest layer is opaque (``alpha_0 = 1``, Sec. 4.3).

* Eq. 1, all-in-focus image: ``I_s = sum_i t_i c_i`` with transmittance
  ``t_i = alpha_i prod_{j>i} (1 - alpha_j)`` (:func:`composite`, :func:`transmittance`,
  :func:`visibility`).
* Eq. 15 (supp. C.1), defocus map: ``D = sum_i t_i d_i`` (:func:`defocus_map`).
* Eq. 2, DP views: ``I_v = sum_i (k_v^{d_i} * (c_i alpha_i)) prod_{j>i} (1 - k_v^{d_j} * alpha_j)``
  (:func:`render_mpi`, :func:`render_layers`; the blur is :class:`dplab.xin.blur.DPBlur`).
  The alphas are blurred with unit-sum kernels ``k / sum(k)``; the colour term is multiplied
  by the view's kernel sum relative to the mean of both, so with dplab's half-sum kernels the
  MPI intensities have the brightness of the conventional image ``left + right`` while each
  rendered view has the brightness of a view.

The MPI is fitted to a DP pair by :func:`dplab.xin.mpi.optimize`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dplab._validate import require_positive, require_tensor
from dplab.xin.blur import DPBlur

__all__ = ["MPI", "DPRender", "layer_scales", "visibility", "transmittance", "composite",
           "defocus_map", "blur_layers", "render_layers", "render_mpi"]


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


def visibility(a: torch.Tensor) -> torch.Tensor:
    """``prod_{j>i} (1 - a_j)`` over dim 0 (exclusive reverse cumulative product).

    The fraction of layer ``i`` that the layers in front of it let through (Eqs. 1-2; the
    front layer is fully visible).

    Args:
        a: ``(N, ...)`` alphas (or blurred alphas), back to front.

    Returns:
        Tensor of the shape of ``a``.

    Example:
        >>> visibility(torch.tensor([1.0, 0.5, 0.25])).tolist()
        [0.375, 0.75, 1.0]
    """
    # front to back, one product per layer: the same products as a reversed cumprod, without
    # its strided pass over the layer dimension and its expensive backward
    layers = a.unbind(0)                     # (unbind: one gradient buffer, not one per layer)
    out = [torch.ones_like(layers[0])]
    for i in range(len(layers) - 1, 0, -1):
        out.append(out[-1] * (1 - layers[i]))
    return torch.stack(out[::-1])


def _check_alphas(alphas):
    alphas = require_tensor("alphas", alphas)
    if alphas.ndim != 4 or alphas.shape[1] != 1:
        raise ValueError(f"alphas must have shape (N, 1, H, W), got {tuple(alphas.shape)}")
    if not bool(((alphas >= 0) & (alphas <= 1)).all()):  # also False for NaN
        raise ValueError("alphas must lie in [0, 1] (opacities) and be finite; found "
                         f"min {float(alphas.min()):g}, max {float(alphas.max()):g}")
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
        TypeError / ValueError: wrong type or shape, or an alpha outside [0, 1] or NaN.

    Example:
        >>> a = torch.tensor([1.0, 0.5, 0.5]).reshape(3, 1, 1, 1)
        >>> transmittance(a).flatten().tolist()
        [0.25, 0.25, 0.5]
    """
    alphas = _check_alphas(alphas)
    return alphas * visibility(alphas)


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


@dataclass
class DPRender:
    """Output of :func:`render_mpi`.

    Attributes:
        left: ``(1, C, H, W)`` rendered left view.
        right: ``(1, C, H, W)`` rendered right view.
        transmittance: ``(N, 2, 1, H, W)`` blurred transmittance of each layer and view,
            ``(k * alpha_i) prod_{j>i} (1 - k * alpha_j)`` (the weights of Eq. 8).
    """

    left: torch.Tensor
    right: torch.Tensor
    transmittance: torch.Tensor


def blur_layers(colors, alphas, blur: DPBlur) -> torch.Tensor:
    """The blurred maps Eq. 2 composites: ``k_v^{d_i} * [c_i alpha_i, alpha_i, c_i]``.

    Args:
        colors: ``(N, C, H, W)`` layer intensities.
        alphas: ``(N, 1, H, W)`` layer alphas.
        blur: the :class:`dplab.xin.blur.DPBlur` of the layers.

    Returns:
        ``(N, 2, 2C + 1, H, W)``: per layer and view, the blurred ``c alpha`` (``C`` maps), the
        blurred alpha and the blurred intensity (``C`` maps). Differentiable.
    """
    return blur(torch.cat([colors * alphas, alphas, colors], 1))


def render_layers(colors, alphas, blur: DPBlur, gain: torch.Tensor):
    """Eq. 2 for both views of an MPI's colours and alphas, with the blurred layers it composites.

    Args:
        colors: ``(N, C, H, W)`` layer intensities, back to front.
        alphas: ``(N, 1, H, W)`` layer alphas.
        blur: the :class:`dplab.xin.blur.DPBlur` of the layers.
        gain: ``(2,)`` factor on each view's colour term
            (:meth:`dplab.xin.blur.DPBlur.to_view_brightness`).

    Returns:
        ``(views, transmittance, colours)``: the rendered views ``(2, C, H, W)``, the blurred
        transmittance of each layer and view ``(N, 2, 1, H, W)`` (the weights of Eq. 8) and
        the blurred intensities times ``gain`` ``(N, 2, C, H, W)`` (the per-layer renderings
        of the auxiliary loss, Eq. 9). Differentiable.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> kl, kr = butterworth_dp(2.0, size=9)
        >>> blur = DPBlur(kl, kr, [1.0, 0.5], (16, 16))
        >>> views, t, c = render_layers(torch.full((2, 1, 16, 16), 0.4), torch.ones(2, 1, 16, 16),
        ...                             blur, torch.ones(2))
        >>> views.shape, t.shape, round(float(views.mean()), 4)
        (torch.Size([2, 1, 16, 16]), torch.Size([2, 2, 1, 16, 16]), 0.4)
    """
    C = colors.shape[1]
    b = blur_layers(colors, alphas, blur)                                 # (N, 2, 2C+1, H, W)
    bca, ba, bc = b.split([C, 1, C], dim=2)                               # (split: cheap backward)
    vis = visibility(ba)
    g = gain.reshape(1, 2, 1, 1, 1).to(colors.dtype)
    views = (g * bca * vis).sum(0)                                        # (2, C, H, W)
    return views, ba * vis, g * bc


def render_mpi(mpi: MPI, k_left=None, k_right=None, *, blur: DPBlur | None = None, cell_hw=None,
               origin=(0, 0), blend_px=8) -> DPRender:
    """Render the left and right DP views of an MPI (Xin et al. Eq. 2).

    Each layer's ``c_i alpha_i`` and ``alpha_i`` are blurred with the layer's left/right
    kernels (the reference kernels resized to ``mpi.scales``, spatially varying over the
    calibration grid, see :class:`dplab.xin.kernels.KernelGrid`) and composited back to front
    (:func:`render_layers`). Pass a :class:`dplab.xin.blur.DPBlur` to reuse its precomputed
    spectra.

    Args:
        mpi: the :class:`MPI`.
        k_left: reference left kernel ``(kh, kw)`` or ``(R, C, kh, kw)`` (ignored with ``blur``).
        k_right: reference right kernel(s).
        blur: a precomputed :class:`dplab.xin.blur.DPBlur` for ``mpi.scales`` and the image size.
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
        >>> r = render_mpi(m, kl, kr)
        >>> round(float(r.left.mean() + r.right.mean()), 4)    # a flat MPI stays flat
        0.6
    """
    if not isinstance(mpi, MPI):
        raise TypeError(f"mpi must be a dplab.xin.multiplane.MPI, got {type(mpi).__name__}")
    H, W = mpi.alphas.shape[-2:]
    if blur is None:
        if k_left is None or k_right is None:
            raise ValueError("pass k_left and k_right, or a precomputed blur=DPBlur(...)")
        blur = DPBlur(k_left, k_right, mpi.scales, (H, W), cell_hw=cell_hw, origin=origin,
                      blend_px=blend_px)
    if blur.grid.image_hw != (H, W) or blur.n_layers != mpi.n_layers:
        raise ValueError(f"blur was built for {blur.n_layers} layers of {blur.grid.image_hw}, "
                         f"the MPI has {mpi.n_layers} of {(H, W)}")
    views, trans, _ = render_layers(mpi.colors, mpi.alphas, blur, blur.gains)
    return DPRender(views[0:1], views[1:2], trans)

