"""Layered dual-pixel (DP) rendering: sharp image + defocus map -> left and right DP views.

The data generator of RDPD (Abuolaim, Delbracio, Kelly, Brown, Milanfar, ICCV 2021), Secs. 2.3
and 3, in four steps that :func:`render_dp` chains:

1. **Layers.** The signed circle-of-confusion (CoC) map in pixels (:mod:`dplab.optics.thin_lens`; positive
   behind the focal plane) is cut into at most ``max_layers`` (500 in the paper) depth layers;
   pixels with equal (quantised) CoC form one layer (:func:`quantize_coc`). Larger CoC = farther
   away, so the layers are ordered back to front by decreasing CoC.
2. **Blur** (Eq. 6, ``I_l = I_s * H_l``, ``I_r = I_s * H_r``). Each layer's colour ``I M`` and
   mask ``M`` are convolved with the layer's left and right PSFs through FFTs padded to fast
   sizes, on a window around the layer, several layers per batched FFT within a memory budget
   (:mod:`dplab.render.engine`). Each view's PSF sums to 1/2, so ``left + right`` is a conventional
   defocused image. Image borders are extended by replication. The PSFs are convolution
   kernels with dplab's orientation (:mod:`dplab.optics.psf`, RDPD Sec. 2.2): behind the focal plane
   (``r > 0``) the left view's PSF has its mass on the ``-x`` side, so there the left view is
   shifted to the left of the right view; in front of it (``r < 0``) to the right.
3. **Compositing.** ``composite="alpha"`` (the paper's Sec. 3): the blurred layers are
   alpha-blended back to front, the blurred mask being the alpha,
   ``out <- out (1 - a_i) + c_i`` with ``c_i = (I M_i) * H`` and ``a_i = M_i * 2H``, so that a
   near layer is never covered by a farther one. The blurred masks of many thin layers do not
   add up to full coverage (with ``n`` thin layers about ``1 - e^{-1}`` of the light would
   remain), so by default the result is divided by the accumulated coverage
   ``1 - prod_i (1 - a_i)`` (``normalize=True``; the raw paper formula with
   ``normalize=False``). What lies behind an object is not in the sharp image: next to the
   edge of a blurred occluder the normalisation fills that hidden part with the occluder's own
   colour (its silhouette stays sharper than in a photograph), the raw formula with black (a
   dark fringe). ``composite="hard_mask"`` is what the authors' generator does: blur the whole
   image with each layer's PSF and keep the layer's own pixels, ``sum_i M_i (I * H_i)`` (no
   occlusion: colours of near objects bleed into blurred far pixels and vice versa).
4. **Camera artefacts** (Sec. 2.3, in the order of Sec. 3): radial distortion with the division
   model (Eq. 5, :func:`dplab.optics.distortion.distort`) on left, right, sharp image and defocus map,
   then signal-dependent noise ``I + I N`` with ``N ~ N(0, sigma^2)`` drawn independently for the
   two views (:func:`add_dp_noise`); ``combined = left + right``.

Conventions: ``(B, C, H, W)`` float32 tensors in [0, 1]; CPU or CUDA (everything
follows ``image.device``); randomness only through an explicit generator or seed.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, fields

import numpy as np
import torch

from dplab.render import engine as _layered
from dplab._validate import (require_choice, require_image, require_number, require_positive,
                        require_tensor)
from dplab.optics.distortion import distort
from dplab.optics.thin_lens import Camera
from dplab.optics.kernels import disk
from dplab.optics.psf import butterworth_dp, punnappurath_dp

__all__ = ["DPSample", "PSF_MODELS", "RDPD_NOISE_SIGMAS", "quantize_coc", "layer_psfs",
           "render_views", "add_dp_noise", "render_dp"]

#: Named PSF models accepted by ``psf=``: RDPD's Butterworth DP PSF (Eqs. 2-4, default
#: parameters of :func:`dplab.optics.psf.butterworth_dp`), Punnappurath et al.'s DP PSF, and a plain
#: disc split in two equal halves (no DP disparity), for comparison.
PSF_MODELS = ("butterworth", "punnappurath", "disk")
#: The noise levels RDPD lists for its data generator: 0.05, 0.055, ..., 0.5 (RDPD Sec. 5).
RDPD_NOISE_SIGMAS: tuple[float, ...] = tuple(round(0.05 + 0.005 * k, 3) for k in range(91))
_COMPOSITE = ("alpha", "hard_mask")
_BACKENDS = ("fft", "direct")


@dataclass
class DPSample:
    """A rendered DP sample; every image is ``(B, C, H, W)``, the defocus map ``(B, 1, H, W)``.

    Attributes:
        left: left DP view (half brightness: its PSF sums to 1/2).
        right: right DP view.
        combined: ``left + right``, the conventional defocused image.
        sharp: the all-in-focus input after the same distortion (the training target).
        coc_px: signed CoC in pixels of the layer each pixel was rendered in (the defocus map),
            distorted like the images.
        noise_sigma: ``(B,)`` noise level used per sample.
        num_layers: number of depth layers per sample.
    """

    left: torch.Tensor
    right: torch.Tensor
    combined: torch.Tensor
    sharp: torch.Tensor
    coc_px: torch.Tensor
    noise_sigma: torch.Tensor
    num_layers: tuple[int, ...]

    def as_dict(self) -> dict:
        """The fields as a plain dict (for ``**`` unpacking or saving)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def to(self, device) -> "DPSample":
        """Copy with every tensor moved to ``device``."""
        return DPSample(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in self.as_dict().items()})


# ----------------------------------------------------------------------------- layers
def quantize_coc(coc_px: torch.Tensor, *, max_layers: int = 500, step_px: float | None = None):
    """Cut a CoC map into depth layers (RDPD Sec. 3: "at most 500 layers").

    If the map holds at most ``max_layers`` distinct values, each value is a layer (exact).
    Otherwise, or when ``step_px`` is given, values are rounded to multiples of a step
    (anchored at 0, so in-focus pixels stay exactly in focus) and equal rounded values are
    merged; without ``step_px`` the step starts at ``(max - min) / (max_layers - 1)`` and
    grows by 5 % until at most ``max_layers`` layers remain. (The authors' generator rounds
    the CoC to whole pixels, i.e. ``step_px=1``.) With ``max_layers=1`` the single layer
    has the median CoC.

    Args:
        coc_px: signed CoC map in pixels, any shape, finite.
        max_layers: largest number of layers (integer >= 1).
        step_px: quantisation step in pixels (> 0), or None as above.

    Returns:
        ``(levels, labels)``: the layers' CoC values ``(L,)`` sorted back to front (decreasing
        CoC, float64) and the layer index of each pixel (int64, shape of ``coc_px``), so
        ``levels[labels]`` is the quantised map.

    Raises:
        TypeError: non-tensor or non-floating ``coc_px``, non-integer ``max_layers``.
        ValueError: NaN/inf CoC, empty map, ``max_layers < 1``, ``step_px <= 0``.

    Example:
        >>> levels, labels = quantize_coc(torch.tensor([[0.0, 2.0], [-1.5, 2.0]]))
        >>> levels.tolist(), labels.tolist()
        ([2.0, 0.0, -1.5], [[1, 0], [2, 0]])
        >>> quantize_coc(torch.linspace(-3, 3, 101), max_layers=7)[0].tolist()
        [3.0, 2.0, 1.0, 0.0, -1.0, -2.0, -3.0]
    """
    coc = _finite_tensor("coc_px", coc_px)
    if coc.numel() == 0:
        raise ValueError("coc_px is empty")
    max_layers = require_positive("max_layers", max_layers, integer=True)
    if step_px is not None:
        step_px = float(require_positive("step_px", step_px))
    return _quantize(coc, max_layers, step_px)


def _quantize(coc: torch.Tensor, max_layers: int, step_px: float | None):
    """:func:`quantize_coc` on a map already checked (finite, not empty, valid arguments)."""
    c = coc.detach().to(torch.float64)
    if max_layers == 1:
        level = c.reshape(-1).median().reshape(1)
        return level.cpu(), torch.zeros(coc.shape, dtype=torch.long, device=coc.device)
    if step_px is None:
        # numpy's sort is several times faster than torch.unique's on the CPU; same values
        uniq = torch.from_numpy(np.unique(c.numpy())) if c.device.type == "cpu" else torch.unique(c)
        if uniq.numel() <= max_layers:
            inv = torch.searchsorted(uniq, c.contiguous())
            return uniq.flip(0).cpu(), (uniq.numel() - 1 - inv).reshape(coc.shape)
        lo, hi = float(uniq[0]), float(uniq[-1])
        step = (hi - lo) / max(max_layers - 1, 1)
    else:
        step = step_px
    while True:
        uniq, inv = torch.unique(torch.round(c / step), return_inverse=True)
        if uniq.numel() <= max_layers:
            return (uniq * step).flip(0).cpu(), (uniq.numel() - 1 - inv).reshape(coc.shape)
        step *= 1.05


def _psf_function(psf):
    if callable(psf):
        return psf
    if isinstance(psf, str):
        require_choice("psf", psf, PSF_MODELS)
        fn = {"butterworth": butterworth_dp, "punnappurath": punnappurath_dp,
              "disk": lambda r: (0.5 * disk(r.abs()),) * 2}[psf]
    elif isinstance(psf, dict):
        fn = lambda r: butterworth_dp(r, **psf)  # noqa: E731
    elif isinstance(psf, (tuple, list)) and len(psf) == 4:
        fn = lambda r: butterworth_dp(r, *psf)  # noqa: E731
    else:
        raise TypeError(f"psf must be one of {list(PSF_MODELS)}, Butterworth parameters "
                        f"(order, alpha, beta, kappa) or a dict of them, or a callable "
                        f"radius_px -> (left, right); got {type(psf).__name__} {psf!r}")
    # A disc of radius < 1/2 px lies inside one pixel: the model's PSF is a delta (and
    # butterworth_dp returns NaN below 1/32 px, where its anti-aliased disc is empty).
    return lambda r: fn(torch.where(r.abs() < 0.5, torch.zeros_like(r), r))


def layer_psfs(levels: torch.Tensor, psf="butterworth", *, group: int = 64):
    """Left/right PSF pair of every layer, each cropped to its support.

    Args:
        levels: ``(L,)`` signed CoC radii in pixels.
        psf: ``"butterworth"`` (RDPD Eqs. 2-4), ``"punnappurath"`` (ICCP 2020), ``"disk"``
            (no disparity), Butterworth parameters ``(order, alpha, beta, kappa)`` or a dict of
            :func:`dplab.optics.psf.butterworth_dp` keywords, or a callable taking a 1-D float64
            tensor of radii and returning ``(left, right)`` stacks ``(N, K, K)`` (odd ``K``)
            that should each sum to 1/2. The named models render radii below 1/2 px as a
            delta (the disc lies inside one pixel); a callable gets every radius as it is.
        group: radii per call of the PSF function (bounds its memory).

    Returns:
        A list of ``L`` pairs ``(left, right)`` of float64 CPU tensors ``(k_i, k_i)``.

    Raises:
        TypeError: unknown ``psf`` kind; the callable returns something else than two tensors.
        ValueError: the callable's kernels have the wrong shape, NaN or negative entries.

    Example:
        >>> [tuple(k[0].shape) for k in layer_psfs(torch.tensor([4.0, 0.0, -2.0]))]
        [(13, 13), (1, 1), (7, 7)]
    """
    fn = _psf_function(psf)
    r = require_tensor("levels", levels).detach().to("cpu", torch.float64).reshape(-1)
    out = []
    for i in range(0, r.numel(), group):
        part = r[i:i + group]
        pair = fn(part)
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2
                and all(isinstance(t, torch.Tensor) for t in pair)):
            raise TypeError("psf callable must return a pair (left, right) of tensors")
        left, right = (t.detach().to("cpu", torch.float64) for t in pair)
        n, k = part.numel(), left.shape[-1]
        if left.shape != (n, k, k) or right.shape != left.shape or k % 2 == 0:
            raise ValueError(f"psf callable must return two (N, K, K) stacks with odd K for "
                             f"N = {n} radii, got {tuple(left.shape)} and {tuple(right.shape)}")
        for name, t in (("left", left), ("right", right)):
            if not bool(torch.isfinite(t).all()) or bool((t < 0).any()):
                raise ValueError(f"psf callable returned a {name} kernel with NaN/inf or "
                                 "negative entries")
        out += _layered.trim_kernels(left, right)
    return out


# ----------------------------------------------------------------------------- validation
def _finite_tensor(name, x):
    x = require_tensor(name, x)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(f"{name} contains {int(bad.sum())} NaN or infinite value(s)")
    return x


def _map(name: str, x, image: torch.Tensor) -> torch.Tensor:
    """A per-pixel map as ``(B, 1, H, W)`` on the image's device, or a clear error."""
    x = _finite_tensor(name, x)
    B, _, H, W = image.shape
    if x.ndim == 2:
        x = x[None, None]
    if x.ndim != 4 or x.shape[1] != 1 or x.shape[0] not in (1, B) or tuple(x.shape[-2:]) != (H, W):
        raise ValueError(f"{name} must have shape ({B}, 1, {H}, {W}) (or (1, 1, {H}, {W}) or "
                         f"({H}, {W})) to match image {tuple(image.shape)}, got {tuple(x.shape)}")
    return x.to(device=image.device, dtype=torch.float32).expand(B, 1, H, W)


def _coc_from(image, coc_px, depth_m, camera, max_coc_px):
    if (coc_px is None) == (depth_m is None):
        raise ValueError("give exactly one of coc_px (signed CoC in pixels) or depth_m "
                         "(depth in metres, with camera=)")
    if depth_m is not None:
        if not isinstance(camera, Camera):
            raise TypeError(f"depth_m needs camera=dplab.optics.thin_lens.Camera(...), got {camera!r}")
        depth = _map("depth_m", depth_m, image)
        if bool((depth <= 0).any()):
            raise ValueError("depth_m must be > 0 everywhere (metres), "
                             f"got min {float(depth.min())!r}")
        coc = camera.coc_px(depth.double()).float()
    else:
        coc = _map("coc_px", coc_px, image)
    if max_coc_px is not None:
        m = float(require_positive("max_coc_px", max_coc_px))
        coc = coc.clamp(-m, m)
    return coc


def _sigmas(sigma, batch: int) -> torch.Tensor:
    if isinstance(sigma, numbers.Real) and not isinstance(sigma, bool):
        s = torch.full((batch,), float(require_positive("noise_sigma", sigma, allow_zero=True)),
                       dtype=torch.float64)
    else:
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).cpu()
        if s.numel() not in (1, batch):
            raise ValueError(f"noise_sigma must be a number or hold one value per sample "
                             f"(B = {batch}), got {s.numel()} values")
        if not bool(torch.isfinite(s).all()) or bool((s < 0).any()):
            raise ValueError(f"noise_sigma must be finite and >= 0, got {s.tolist()}")
        s = s.expand(batch)
    return s


def _generator(seed):
    if seed is None or isinstance(seed, torch.Generator):
        return seed
    return torch.Generator().manual_seed(require_number("generator", seed, integer=True))


# ----------------------------------------------------------------------------- rendering
def render_views(image: torch.Tensor, coc_px: torch.Tensor, *, psf="butterworth",
                 composite: str = "alpha", normalize: bool = True, max_layers: int = 500,
                 layer_step_px: float | None = None, backend: str = "fft",
                 chunk_mb: float = 512.0):
    """Left and right DP views of a sharp image with a per-pixel CoC (RDPD Sec. 3, Eq. 6).

    Steps 1-3 of the module docstring, without distortion and noise.

    Args:
        image: sharp images, 1 or 3 channels, finite.
        coc_px: signed CoC radius in pixels (positive behind the focal plane).
        psf: PSF model, as in :func:`layer_psfs`.
        composite: ``"alpha"`` (back-to-front over-compositing with blurred masks, the paper)
            or ``"hard_mask"`` (sum of hard-masked whole-image blurs, the authors' code).
        normalize: divide the ``"alpha"`` result by the accumulated coverage.
        max_layers: most depth layers per sample (:func:`quantize_coc`).
        layer_step_px: CoC quantisation step (None: exact values or as fine as fits).
        backend: ``"fft"``, or ``"direct"`` (``torch.nn.functional.conv2d``; slow, reference).
        chunk_mb: memory budget of one batched FFT over layers, in MiB.

    Returns:
        ``(left, right, coc_layers)``: the two views and the quantised CoC map used.

    Shape:
        image ``(B, C, H, W)``, ``coc_px`` ``(B, 1, H, W)``, ``(1, 1, H, W)`` or ``(H, W)``;
        outputs ``(B, C, H, W)``, ``(B, C, H, W)``, ``(B, 1, H, W)``.

    Raises:
        TypeError / ValueError: bad image (shape, channels, NaN), CoC map of another size or
            with NaN, unknown ``composite``/``backend``/``psf``.

    Example:
        >>> img = torch.zeros(1, 1, 21, 21); img[..., 10, 10] = 1.0
        >>> left, right, _ = render_views(img, torch.full((21, 21), 3.0))   # behind focus
        >>> x = torch.arange(21.0)
        >>> centroid = lambda v: float((v[0, 0].sum(0) * x).sum() / v.sum())
        >>> centroid(left) < 10 < centroid(right)   # left view moves left (-x), right view right
        True
    """
    left, right, coc_q, _ = _views(image, coc_px, psf, composite, normalize, max_layers,
                                   layer_step_px, backend, chunk_mb)
    return left, right, coc_q


def _views(image, coc_px, psf, composite, normalize, max_layers, layer_step_px, backend, chunk_mb):
    image = require_image("image", image, channels=(1, 3))
    coc = _map("coc_px", coc_px, image)
    require_choice("composite", composite, _COMPOSITE)
    require_choice("backend", backend, _BACKENDS)
    budget = float(require_positive("chunk_mb", chunk_mb)) * 2**20
    max_layers = require_positive("max_layers", max_layers, integer=True)
    step = None if layer_step_px is None else float(require_positive("layer_step_px", layer_step_px))
    views, coc_q, counts = [], torch.empty_like(coc), []
    for b in range(image.shape[0]):
        levels, labels = _quantize(coc[b, 0], max_layers, step)
        counts.append(levels.numel())
        coc_q[b, 0] = levels.to(coc.device, torch.float32)[labels]
        kernels = layer_psfs(levels, psf)
        views.append(_layered.render_sample(
            image[b].float(), labels, kernels, mode=composite, normalize=bool(normalize),
            backend=backend, budget_bytes=budget))
    out = torch.stack(views, 1).to(image.dtype)  # (2, B, C, H, W)
    return out[0], out[1], coc_q, tuple(counts)


def add_dp_noise(left: torch.Tensor, right: torch.Tensor, sigma, generator=None):
    """Signal-dependent Gaussian noise ``I + I N`` on both views (RDPD Sec. 2.3).

    ``N_l`` and ``N_r`` are independent, with the same ``sigma`` (Sec. 3). The noise is drawn
    on the generator's device (CPU by default) and moved to the images', so a seed gives the
    same noise on every device.

    Args:
        left: left views.
        right: right views, same shape.
        sigma: noise standard deviation (>= 0): a number, or one value per sample.
        generator: ``torch.Generator`` or integer seed; None uses torch's global generator.

    Returns:
        ``(left_noisy, right_noisy)`` (not clipped).

    Shape:
        ``(B, C, H, W)`` in and out; ``sigma``: number, ``(1,)`` or ``(B,)``.

    Raises:
        TypeError: non-tensor views.
        ValueError: different shapes, negative or NaN ``sigma``.

    Example:
        >>> l, r = add_dp_noise(torch.ones(1, 1, 64, 64), torch.ones(1, 1, 64, 64), 0.1, 0)
        >>> round(float((l - 1).std()), 1), torch.equal(l, r)
        (0.1, False)
    """
    left = require_image("left", left)
    right = require_image("right", right)
    if left.shape != right.shape:
        raise ValueError(f"left {tuple(left.shape)} and right {tuple(right.shape)} differ in shape")
    s = _sigmas(sigma, left.shape[0])
    if not bool((s > 0).any()):
        return left, right
    gen = _generator(generator)
    dev = gen.device if gen is not None else torch.device("cpu")
    s = s.to(left.device, left.dtype).reshape(-1, 1, 1, 1)
    noisy = []
    for view in (left, right):
        n = torch.randn(view.shape, generator=gen, device=dev, dtype=torch.float32)
        noisy.append(view + view * n.to(view.device, view.dtype) * s)
    return noisy[0], noisy[1]


def render_dp(image: torch.Tensor, coc_px: torch.Tensor | None = None, *,
              depth_m: torch.Tensor | None = None, camera: Camera | None = None,
              psf="butterworth", composite: str = "alpha", normalize: bool = True,
              max_layers: int = 500, layer_step_px: float | None = None,
              max_coc_px: float | None = None, distortion=None,
              distortion_padding: str = "zeros", noise_sigma=0.0, generator=None,
              clip: bool = True, backend: str = "fft", chunk_mb: float = 512.0) -> DPSample:
    """Render a DP sample from a sharp image and its defocus (RDPD Secs. 2.3 and 3).

    Layers, per-layer DP blur, compositing (:func:`render_views`), radial distortion of
    left, right, sharp and the defocus map (Eq. 5), noise ``I + I N`` with independent
    ``N_l``, ``N_r`` (:func:`add_dp_noise`), ``combined = left + right``.

    Args:
        image: sharp (all-in-focus) images in [0, 1], 1 or 3 channels.
        coc_px: signed CoC radius in pixels per pixel (positive behind the focal plane).
        depth_m: instead of ``coc_px``: depth in metres (> 0), converted with ``camera``.
        camera: a :class:`dplab.optics.thin_lens.Camera` (e.g. one of ``RDPD_CAMERA_SETS``).
        psf: PSF model (:func:`layer_psfs`).
        composite: ``"alpha"`` or ``"hard_mask"`` (:func:`render_views`).
        normalize: normalise the alpha composite by its coverage.
        max_layers: most depth layers per sample (500 in the paper).
        layer_step_px: CoC quantisation step (None: exact values or as fine as fits).
        max_coc_px: clip ``|CoC|`` to this many pixels (the authors' generator: 40).
        distortion: None, or division-model coefficients ``(c1, c2, c3)`` or ``(B, 3)``
            (:data:`dplab.optics.distortion.RDPD_DISTORTION_COEFFS`).
        distortion_padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        noise_sigma: noise level, a number or one per sample (0: no noise).
        generator: ``torch.Generator`` or integer seed for the noise.
        clip: clamp each view to [0, 1/2] (a saturated DP photodiode) and ``sharp`` to [0, 1],
            so ``combined`` stays in [0, 1].
        backend: ``"fft"`` or ``"direct"``.
        chunk_mb: memory budget of one batched FFT over layers, in MiB.

    Returns:
        A :class:`DPSample`.

    Shape:
        image ``(B, C, H, W)``; ``coc_px``/``depth_m`` ``(B, 1, H, W)``, ``(1, 1, H, W)`` or
        ``(H, W)``; outputs as in :class:`DPSample`.

    Raises:
        TypeError: non-tensor inputs, ``depth_m`` without a ``Camera``.
        ValueError: wrong shapes or channel counts, NaN/inf, depth <= 0, both or neither of
            ``coc_px`` and ``depth_m``, folding distortion, negative noise.

    Example:
        >>> img = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
        >>> s = render_dp(img, torch.full((32, 32), -4.0), noise_sigma=0.05, generator=1)
        >>> s.left.shape, torch.equal(s.combined, s.left + s.right), s.num_layers
        (torch.Size([2, 3, 32, 32]), True, (1, 1))
    """
    image = require_image("image", image, channels=(1, 3))
    coc = _coc_from(image, coc_px, depth_m, camera, max_coc_px)
    sigma = _sigmas(noise_sigma, image.shape[0])
    left, right, coc_q, num_layers = _views(image, coc, psf, composite, normalize, max_layers,
                                            layer_step_px, backend, chunk_mb)
    sharp = image
    if distortion is not None:
        left, right, sharp, coc_q = (distort(x, distortion, padding_mode=distortion_padding)
                                     for x in (left, right, sharp, coc_q))
    left, right = add_dp_noise(left, right, sigma, generator)
    if clip:
        left, right, sharp = left.clamp(0.0, 0.5), right.clamp(0.0, 0.5), sharp.clamp(0.0, 1.0)
    return DPSample(left=left, right=right, combined=left + right, sharp=sharp, coc_px=coc_q,
                    noise_sigma=sigma.float(), num_layers=num_layers)
