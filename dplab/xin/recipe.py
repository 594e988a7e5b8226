"""Xin et al. (ICCV 2021) on real Pixel 4 dual-pixel scenes: loading, the two methods, scoring.

Recipes that tie :mod:`dplab.data.pixel4`, :func:`dplab.xin.wiener.wiener_defocus` and
:func:`dplab.xin.mpi.optimize` together the way the paper evaluates them (Sec. 5, Table 1,
supplement B and D), so that chapters and benchmarks run the same code:

* :func:`load_xin_scene`: raw views decoded (black level 1024, ``/ (2^14 - 1)``), the right
  view multiplied by the white-sheet vignetting gain (supplement B, the authors' code), the
  central 1008x1344 calibrated field, an optional crop and integer box downsampling; the
  calibrated 6x8 kernel grid (each view's kernel summing to 1/2, dplab's convention) resized by
  ``1 / downscale``.
* :func:`run_wiener`, :func:`run_mpi`: the Wiener depth-from-defocus baseline and the MPI
  optimisation; both return the all-in-focus image at the brightness of **one view** (the
  units of the release's ground truth, whose maximum equals that of the views) and the
  defocus map in kernel-scale units (Eq. 15).
* :func:`score`: PSNR / SSIM / MAE of the all-in-focus image and AIWE(1) / AIWE(2) /
  1 - |rho_s| of the defocus map (Garg et al. 2019 via :mod:`dplab.metrics.defocus`).

Scoring (Table 1, supplement D, :mod:`dplab.xin.protocol`): the paper aligns the ground-truth
all-in-focus image to each algorithm's output with an affine transform found by OpenCV on one
scene per algorithm and crops an 8-pixel border, and does not give the intensity units of its
PSNR. :func:`score` and :func:`align_to_gt` use :data:`dplab.xin.protocol.TABLE1` unless told
otherwise: estimate and ground truth divided by the maximum of the two views and clipped to
[0, 1], the integer shift within ``+-6`` px (``ceil(6 / downscale)`` after downsampling) that
best aligns the estimate, an 8-px border (``ceil(8 / downscale)``); with it dplab's
full-resolution Wiener lands closest to the paper's Wiener row (the candidates side by side:
``benchmarks/results/xin_table1/protocol.json``). The same rule is applied to every method and
to the blurred input; ``protocol=`` and ``affine=`` select another :class:`~dplab.xin.protocol.Protocol`
(e.g. the supplement's affine alignment, one map per method). Defocus maps are not shifted (the
ambiguity the paper corrects, a transform of the kernels undone on the latent image, does not
move the defocus map); they are scored on the same cropped window with the release's confidence
(ground truth > 0, :func:`dplab.data.pixel4.defocus_confidence`).

Synthetic check (:func:`synthetic_scene`): a three-plane scene rendered with Eq. 2 itself from
a known MPI, so the all-in-focus image and the defocus map are known exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from dplab._io import atomic_file
from dplab._validate import require_image, require_positive
from dplab.data import pixel4
from dplab.data.manifest import DatasetNotFoundError, dataset_dir
from dplab.metrics.image import mae, psnr, ssim
from dplab.metrics.defocus import aiwe1, aiwe2, spearman_error
from dplab.optics.kernels import rescale_kernel
from dplab.optics.psf import butterworth_dp
from dplab.xin.mpi import MPIResult, optimize
from dplab.xin.mpi_losses import LossWeights
from dplab.xin.multiplane import MPI, render_mpi
from dplab.xin.protocol import TABLE1, Protocol, prepare
from dplab.xin.wiener import wiener_defocus

__all__ = ["XinScene", "load_xin_scene", "blurred_input", "run_wiener", "run_mpi", "observation_stats",
           "align_to_gt", "score", "synthetic_scene", "save_results", "METRIC_KEYS", "PAPER_TABLE1"]

#: Keys :func:`score` returns (all-in-focus metrics, then defocus-map metrics).
METRIC_KEYS = ("psnr", "ssim", "mae", "aiwe1", "aiwe2", "spearman_error")

#: Xin et al. Table 1, means over their 17 Pixel 4 scenes (the paper's numbers, not ours).
PAPER_TABLE1 = {
    "Xin et al. (MPI)": {"psnr": 26.692, "ssim": 0.804, "mae": 0.027,
                         "aiwe1": 0.047, "aiwe2": 0.076, "spearman_error": 0.178},
    "Wiener deconvolution": {"psnr": 25.806, "ssim": 0.704, "mae": 0.032,
                             "aiwe1": 0.156, "aiwe2": 0.197, "spearman_error": 0.665},
}

_FULL_WINDOW_PX = 31    # Wiener energy window at full resolution


@dataclass
class XinScene:
    """One scene, ready for :func:`run_wiener` / :func:`run_mpi` / :func:`score`.

    Attributes:
        name: scene id (``"001"``) or a synthetic label.
        left: ``(1, 1, H, W)`` float32 linear left view.
        right: ``(1, 1, H, W)`` right view, vignetting-corrected (supplement B).
        all_in_focus: ``(1, 1, H, W)`` ground truth at the brightness of one view, or None.
        defocus: ``(1, 1, H, W)`` ground-truth defocus map (relative scale; 0 = no data), or None.
        k_left: left kernels, ``(R, C, k, k)`` grid (or ``(k, k)``), each summing to 1/2.
        k_right: right kernels, same shape.
        cell_hw: grid cell size in pixels after downscaling.
        settings: :func:`dplab.data.pixel4.scene_settings` (``near``, ``far`` scales and loss
            weights).
        origin: image coordinates of the kernel grid's top-left corner (``-crop / downscale``).
        crop: ``(top, left, h, w)`` in the 1008x1344 field, or None for synthetic scenes.
        downscale: box-downsampling factor.
    """

    name: str
    left: torch.Tensor
    right: torch.Tensor
    all_in_focus: torch.Tensor | None
    defocus: torch.Tensor | None
    k_left: torch.Tensor
    k_right: torch.Tensor
    cell_hw: tuple
    settings: dict
    origin: tuple = (0, 0)
    crop: tuple | None = None
    downscale: int = 1
    extra: dict = field(default_factory=dict)

    @property
    def image_hw(self) -> tuple[int, int]:
        return tuple(self.left.shape[-2:])

    @property
    def blend_px(self) -> int:
        """Cross-fade between kernel cells (:class:`dplab.xin.kernels.KernelGrid`): dplab's 8 px
        at full resolution, scaled down with the image (at least 1 px, at most half a cell)."""
        return max(1, min(round(8 / self.downscale), min(self.cell_hw) // 2))

    @property
    def view_gain(self) -> float:
        """Mean kernel sum of the views (1/2 with dplab's kernels): MPI brightness -> view."""
        return float((self.k_left.sum((-2, -1)).mean() + self.k_right.sum((-2, -1)).mean()) / 2)


def _check_scene(s) -> XinScene:
    if not isinstance(s, XinScene):
        raise TypeError(f"s must be a dplab.xin.recipe.XinScene, got {type(s).__name__}")
    return s


def _check_downscale(downscale) -> int:
    if isinstance(downscale, bool) or not isinstance(downscale, int):
        raise TypeError(f"downscale must be an integer >= 1, got {downscale!r}")
    if downscale < 1:
        raise ValueError(f"downscale must be >= 1, got {downscale}")
    if pixel4.CELL_PX % downscale:
        raise ValueError(f"downscale must divide the 168-px calibration cell, got {downscale} "
                         "(use 1, 2, 3, 4, 6, 7, 8, 12, ...)")
    return downscale


def _check_crop(crop, downscale: int) -> tuple[int, int, int, int]:
    H, W = pixel4.CROP_HW
    if crop is None:
        return (0, 0, H, W)
    if not isinstance(crop, (tuple, list)) or len(crop) != 4 or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in crop):
        raise ValueError(f"crop must be four integers (top, left, h, w), got {crop!r}")
    top, left, h, w = crop
    if top < 0 or left < 0 or h <= 0 or w <= 0 or top + h > H or left + w > W:
        raise ValueError(f"crop {tuple(crop)} must lie inside the {H}x{W} calibrated field "
                         "(top, left >= 0; h, w > 0)")
    if any(v % downscale for v in crop):
        raise ValueError(f"every entry of crop {tuple(crop)} must be a multiple of downscale={downscale}")
    if min(h, w) // downscale < 16:
        raise ValueError(f"crop {tuple(crop)} at downscale {downscale} is smaller than 16 px")
    return top, left, h, w


def _box(x: torch.Tensor, f: int) -> torch.Tensor:
    return x if f == 1 else F.avg_pool2d(x, f)


def _box_defocus(d: torch.Tensor, f: int) -> torch.Tensor:
    """Box-average a defocus map over valid pixels; a block with any invalid (0) pixel -> 0."""
    if f == 1:
        return d
    valid = (d > 0).float()
    all_valid = -F.max_pool2d(-valid, f)
    return F.avg_pool2d(d, f) * all_valid


_GAIN_CACHE: dict = {}


def _vignetting_gain(folder: Path) -> torch.Tensor:
    """:func:`dplab.data.pixel4.vignetting_gain` of a release folder, computed once per folder."""
    key = str(Path(folder).resolve())
    if key not in _GAIN_CACHE:
        _GAIN_CACHE[key] = pixel4.vignetting_gain(Path(folder).parent)
    return _GAIN_CACHE[key]


def kernel_size_for(downscale: int) -> int:
    """Odd kernel size that holds the 61x61 calibration resized by ``1 / downscale``."""
    return 2 * math.ceil(30 / downscale) + 1


def load_xin_scene(scene: str, data_dir=None, *, crop=None, downscale: int = 1) -> XinScene:
    """Load one Pixel 4 scene of Xin et al. as the paper prepares it (Sec. 5, supplement B).

    Args:
        scene: three-digit id, e.g. ``"001"`` (the data folder holds 001-010).
        data_dir: data directory holding ``xin_pixel4_dp/`` (default ``$DPLAB_DATA``).
        crop: ``(top, left, h, w)`` in the central 1008x1344 field's coordinates (None: all
            of it); every entry a multiple of ``downscale``.
        downscale: integer box-downsampling factor dividing 168; the kernels are resized by
            ``1 / downscale`` (:func:`dplab.optics.kernels.rescale_kernel`, sums kept).

    Returns:
        :class:`XinScene` (views, ground truth, kernel grid, cell size, the authors' settings).

    Raises:
        DatasetNotFoundError: no data directory, or the release is missing (names the path).
        ValueError: unknown scene (lists the available ones), bad crop or downscale.
        TypeError: non-integer downscale.

    Example:
        >>> load_xin_scene("001", "/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        DatasetNotFoundError: dataset 'xin_pixel4_dp' not found at /nonexistent/xin_pixel4_dp
    """
    f = _check_downscale(downscale)
    top, left0, h, w = _check_crop(crop, f)
    folder = dataset_dir(pixel4.NAME, data_dir)
    available = pixel4.list_scenes(data_dir)
    if scene not in available:
        raise ValueError(f"scene {scene!r} is not in {folder} (available: {', '.join(available) or 'none'})")
    raw = pixel4.load_scene(scene, data_dir)
    gain = _vignetting_gain(folder)
    window = (..., slice(top, top + h), slice(left0, left0 + w))
    L = _box(raw["left"][window], f).contiguous()
    R = _box((raw["right"] * gain)[window], f).contiguous()
    aif = raw["all_in_focus"]
    aif = None if aif is None else _box(aif[window], f).contiguous()
    dmap = raw["defocus"]
    dmap = None if dmap is None else _box_defocus(dmap[window], f).contiguous()
    kl, kr = pixel4.load_kernel_grid(data_dir)
    if f > 1:
        size = kernel_size_for(f)
        kl, kr = rescale_kernel(kl, 1.0 / f, size), rescale_kernel(kr, 1.0 / f, size)
    cell = pixel4.CELL_PX // f
    return XinScene(scene, L, R, aif, dmap, kl, kr, (cell, cell), pixel4.scene_settings(scene),
                    origin=(-top // f, -left0 // f), crop=(top, left0, h, w), downscale=f)


def blurred_input(s: XinScene) -> torch.Tensor:
    """The conventional (blurred) image at view brightness, ``(left + right) / 2``."""
    s = _check_scene(s)
    return (s.left + s.right) / 2


def _scales(s: XinScene, n: int) -> torch.Tensor:
    return torch.linspace(float(s.settings["near"]), float(s.settings["far"]), n)


def run_wiener(s: XinScene, *, bias: bool = True, n_hypotheses: int = 16, window: int | None = None,
               **kw) -> tuple[torch.Tensor, torch.Tensor]:
    """Wiener depth-from-defocus baseline of Table 1 (Zhou et al. 2009; supplement Eq. 27).

    ``n_hypotheses`` kernel scales evenly spaced over the scene's ``[near, far]``; each pixel
    takes the hypothesis of least window-averaged energy, minus ``B(d)`` (Eq. 5) when ``bias``.

    Args:
        s: the scene.
        bias: subtract the bias correction ``B`` (False: the ablation of Sec. 4.2).
        n_hypotheses: number of scale hypotheses (>= 2).
        window: odd energy-averaging window; default 31 px at full resolution, scaled by
            ``1 / downscale`` (at least 3).
        **kw: passed to :func:`dplab.xin.wiener.wiener_defocus` (``sigma2``, ``phi2``, ``blend_px``:
            default 8 px scaled by ``1 / downscale``).

    Returns:
        ``(all_in_focus, defocus)``, each ``(1, 1, H, W)``: the estimate at one view's
        brightness and the chosen scale per pixel.

    Raises:
        TypeError / ValueError: not a scene, bad ``n_hypotheses`` or ``window``.
    """
    s = _check_scene(s)
    n = require_positive("n_hypotheses", n_hypotheses, integer=True)
    if n < 2:
        raise ValueError(f"n_hypotheses must be >= 2, got {n}")
    if window is None:
        window = max(3, 2 * round(_FULL_WINDOW_PX / s.downscale / 2 - 0.5) + 1)
    kw.setdefault("blend_px", s.blend_px)
    out = wiener_defocus(s.left, s.right, s.k_left, s.k_right, _scales(s, n), window=window,
                         bias=bool(bias), cell_hw=s.cell_hw, origin=s.origin, **kw)
    return out.all_in_focus * s.view_gain, out.defocus


def run_mpi(s: XinScene, *, n_layers: int = 12, iterations: int = 10_000, device="cpu", seed: int = 0,
            bias: bool = True, **kw) -> tuple[torch.Tensor, torch.Tensor, MPIResult]:
    """Fit the MPI of Xin et al. (Sec. 4.3, supplement C-D) with the scene's settings.

    Layer scales ``linspace(far, near, n_layers)`` and the loss weights of the authors' code
    for this scene (``intensity``, ``alpha``, ``entropy`` of
    :func:`dplab.data.pixel4.scene_settings`, scaled with ``n_layers`` by
    :class:`dplab.xin.mpi_losses.LossWeights`).

    Args:
        s: the scene.
        n_layers: MPI layers (paper: 12).
        iterations: Adam iterations (paper: 10,000).
        device: where to optimise (``"cpu"``, ``"cuda"``...); outputs come back on the CPU.
        seed: seed of the (optional) initial noise, for reproducibility.
        bias: bias-corrected losses (Eqs. 7-9); False for the "no B" ablation (Fig. 12).
        **kw: passed to :func:`dplab.xin.mpi.optimize` (``log_every``, ``callback``, ``progress``,
            ``blend_px`` (default 8 px scaled by ``1 / downscale``), ``init_noise``, ``weights``...).

    Returns:
        ``(all_in_focus, defocus, result)``: ``(1, 1, H, W)`` each on the CPU, the image at one
        view's brightness, and the :class:`dplab.xin.mpi.MPIResult`.
    """
    s = _check_scene(s)
    st = s.settings
    weights = kw.pop("weights", None) or LossWeights(intensity=st["intensity"], alpha=st["alpha"],
                                                     entropy=st["entropy"])
    kw.setdefault("blend_px", s.blend_px)
    res = optimize(s.left, s.right, s.k_left.to(device), s.k_right.to(device), n_layers=n_layers,
                   iterations=iterations, scales=(st["near"], st["far"]), weights=weights,
                   bias=bool(bias), cell_hw=s.cell_hw, origin=s.origin, seed=seed, device=device, **kw)
    return (res.all_in_focus * s.view_gain).cpu(), res.defocus.cpu(), res


def _window_px(s: XinScene, protocol: Protocol) -> tuple[int, int]:
    f = s.downscale
    return math.ceil(protocol.max_shift / f), math.ceil(protocol.border / f)


def observation_stats(s: XinScene) -> tuple[float, float]:
    """``(max, mean)`` over both views of the scene (the units of :mod:`dplab.xin.protocol`)."""
    s = _check_scene(s)
    obs = torch.cat([s.left, s.right])
    return float(obs.max()), float(obs.mean())


def align_to_gt(s: XinScene, all_in_focus: torch.Tensor, *, protocol: Protocol | None = None,
                affine=None, max_shift: int | None = None, border: int | None = None):
    """An estimate and the ground truth as Table 1 compares them (:func:`dplab.xin.protocol.prepare`).

    Args:
        s: the scene (with ``all_in_focus`` ground truth).
        all_in_focus: ``(1, 1, H, W)`` estimate at one view's brightness.
        protocol: the :class:`dplab.xin.protocol.Protocol` (default
            :data:`dplab.xin.protocol.TABLE1`: both images divided by the views' maximum, the
            ground truth warped onto the estimate by an affine map, an 8-px border cropped).
        affine: ``(2, 3)`` map found on another scene for the same method (full-resolution
            pixels), or None to fit it on this image.
        max_shift: search radius in this image's pixels (default ``ceil(6 / downscale)``).
        border: cropped border in this image's pixels (default ``ceil(8 / downscale)``).

    Returns:
        ``(pred, gt, (dy, dx))``: the cropped, aligned estimate and ground truth, float64, in
        the protocol's units (clipped to [0, 1]), and the shift (for an affine map, its translation
        rounded; ``pred[y, x] ~ gt[y - dy, x - dx]``).

    Raises:
        ValueError: no ground truth, wrong shape, border smaller than the shift.
    """
    s = _check_scene(s)
    if s.all_in_focus is None:
        raise ValueError(f"scene {s.name!r} has no all-in-focus ground truth")
    x = require_image("all_in_focus", all_in_focus).detach().cpu().float()
    if x.shape != s.all_in_focus.shape:
        raise ValueError(f"all_in_focus must have shape {tuple(s.all_in_focus.shape)}, got {tuple(x.shape)}")
    protocol = TABLE1 if protocol is None else protocol
    m0, b0 = _window_px(s, protocol)
    m = m0 if max_shift is None else require_positive("max_shift", max_shift, allow_zero=True, integer=True)
    b = max(b0, m) if border is None else require_positive("border", border, allow_zero=True, integer=True)
    if b < m:
        raise ValueError(f"border ({b}) must be at least max_shift ({m})")
    mx, mean = observation_stats(s)
    p, g, info = prepare(x, s.all_in_focus, obs_max=mx, obs_mean=mean, protocol=protocol, affine=affine,
                         downscale=s.downscale, max_shift=m, border=b)
    return p, g, info["shift"]


def score(s: XinScene, all_in_focus: torch.Tensor | None = None,
          defocus: torch.Tensor | None = None, *, protocol: Protocol | None = None, affine=None,
          **align_kw) -> dict:
    """Table 1 metrics of an estimate against the scene's ground truth.

    Args:
        s: the scene. all_in_focus: ``(1, 1, H, W)`` estimate at one view's brightness, or None.
        defocus: ``(1, 1, H, W)`` defocus map (any affine scale), or None.
        protocol: :class:`dplab.xin.protocol.Protocol` of the image metrics (default :data:`TABLE1`).
        affine: the method's ``(2, 3)`` alignment found on another scene (:func:`align_to_gt`), or None.
        **align_kw: ``max_shift`` / ``border`` of :func:`align_to_gt`.

    Returns ``psnr``, ``ssim``, ``mae`` (all-in-focus, after :func:`align_to_gt`) and ``aiwe1``, ``aiwe2``,
    ``spearman_error`` (defocus, not aligned, same border, confidence = ground truth > 0); keys of a missing
    input or ground truth are omitted. Raises ValueError for bad shapes, under 2 confident defocus pixels, or a
    scored window whose ground truth has no variance (AIWE 0 for any estimate, no rank correlation).
    """
    s = _check_scene(s)
    protocol, (H, W) = TABLE1 if protocol is None else protocol, s.image_hw

    def varies(what: str, g: torch.Tensor, b: int) -> None:
        lo, hi = float(g.min()), float(g.max())
        if hi - lo <= 1e-6 * max(1.0, abs(lo), abs(hi)):
            where = "the whole image" if s.crop is None else f"crop={tuple(s.crop)} at downscale {s.downscale}"
            raise ValueError(f"scene {s.name!r}, window {where}, rows {b}:{H - b}, columns {b}:{W - b}: the ground-truth "
                             f"{what} has no variance ({g.numel()} pixels, all {lo:.6g}), so its metrics rank nothing; "
                             "score another or a larger crop of this scene (crop=None: the whole field) or another scene")
    out = {}
    if all_in_focus is not None and s.all_in_focus is not None:
        p, g, _ = align_to_gt(s, all_in_focus, protocol=protocol, affine=affine, **align_kw)
        varies("all-in-focus image", g, (H - g.shape[-2]) // 2)
        out.update(psnr=float(psnr(p, g)), ssim=float(ssim(p, g)), mae=float(mae(p, g)))
    if defocus is not None and s.defocus is not None:
        d = require_image("defocus", defocus).detach().cpu().double()
        if d.shape != s.defocus.shape:
            raise ValueError(f"defocus must have shape {tuple(s.defocus.shape)}, got {tuple(d.shape)}")
        b = max(_window_px(s, protocol)[1], int(align_kw.get("border") or 0))
        gt, d = s.defocus[..., b:H - b, b:W - b].double(), d[..., b:H - b, b:W - b]
        conf = pixel4.defocus_confidence(gt)
        if float(conf.sum()) < 2:
            raise ValueError(f"scene {s.name!r}: fewer than 2 confident ground-truth defocus pixels")
        varies("defocus map over its confident pixels (ground truth > 0)", gt[conf > 0], b)
        out.update(aiwe1=float(aiwe1(d, gt, conf)), aiwe2=float(aiwe2(d, gt, conf)),
                   spearman_error=float(spearman_error(d, gt, conf)))
    return out


def synthetic_scene(hw=(96, 128), *, image=("brick", "gravel", "astronaut"), radius_px: float = 5.0,
                    near: float = 0.2, far: float = 1.4, noise: float = 0.0, seed: int = 0) -> XinScene:
    """A three-plane DP scene rendered by Eq. 2 from a known MPI (ground truth known exactly).

    Background at the ``far`` scale, a rectangle at the middle scale and an ellipse at ``near``,
    each textured with a photo (the all-in-focus image is their composite, Eq. 1); the DP views are
    :func:`dplab.xin.multiplane.render_mpi` of that MPI with Butterworth DP kernels of radius
    ``radius_px`` at scale 1. The same forward model as the optimiser: a check of the
    optimisation, not of the image-formation model.

    Args:
        hw: image size ``(H, W)``.
        image: one name of :data:`dplab.render.scenes.BUNDLED_IMAGES`, or three (back, middle, front
            plane), converted to grey.
        radius_px: blur radius of the reference kernel (scale 1).
        near, far: scales of the front and back planes (``0 < near < far``).
        noise: std of Gaussian noise added to each view.
        seed: seed of the noise.

    Returns:
        :class:`XinScene` with ``name="synthetic"``, a single kernel pair and
        ``settings = {near, far, intensity 30, alpha 7.5e4, entropy 30}``.

    Example:
        >>> s = synthetic_scene((48, 64))
        >>> s.left.shape, round(float(s.defocus.max()), 2)
        (torch.Size([1, 1, 48, 64]), 1.4)
    """
    from dplab.render.scenes import load_image

    H, W = (require_positive("hw", v, integer=True) for v in hw)
    if H < 32 or W < 32:
        raise ValueError(f"hw must be at least 32x32, got {tuple(hw)}")
    near, far = float(require_positive("near", near)), float(require_positive("far", far))
    if near >= far:
        raise ValueError(f"near ({near}) must be smaller than far ({far})")
    noise = float(require_positive("noise", noise, allow_zero=True))
    names = (image,) * 3 if isinstance(image, str) else tuple(image)
    if len(names) != 3:
        raise ValueError(f"image must be one name or three (back, middle, front), got {image!r}")
    photos = torch.cat([load_image(n, (H, W)).mean(1, keepdim=True) for n in names]).clamp(0.02, 0.98)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    rect = ((xx > -0.75) & (xx < 0.05) & (yy > -0.6) & (yy < 0.7)).float()
    ell = (((xx - 0.45) / 0.35) ** 2 + ((yy + 0.05) / 0.5) ** 2 < 1).float()
    alphas = torch.stack([torch.ones(1, H, W), rect[None], ell[None]])              # back to front
    scales = torch.tensor([far, (near + far) / 2, near])
    mpi = MPI(photos.contiguous(), alphas, scales)
    size = 2 * math.ceil(radius_px * far * 1.3 + 2) + 1
    kl, kr = butterworth_dp(float(radius_px), size=size)
    views = render_mpi(mpi, kl, kr)
    left, right = views.left, views.right
    if noise > 0:
        g = torch.Generator().manual_seed(int(seed))
        left = left + noise * torch.randn(left.shape, generator=g)
        right = right + noise * torch.randn(right.shape, generator=g)
    gain = float((kl.sum() + kr.sum()) / 2)
    settings = {"near": near, "far": far, "intensity": 30.0, "alpha": 7.5e4, "entropy": 30.0}
    return XinScene("synthetic", left.clamp_min(0), right.clamp_min(0), mpi.all_in_focus() * gain,
                    mpi.defocus_map(), kl, kr, (H, W), settings, extra={"mpi": mpi})


def save_results(output_dir, s: XinScene, method: str, all_in_focus: torch.Tensor | None,
                 defocus: torch.Tensor | None, metrics: dict) -> Path:
    """Write ``<output_dir>/<scene>_<method>.pt`` atomically (for reuse by other chapters).

    The file holds ``{"scene", "method", "crop", "downscale", "all_in_focus", "defocus",
    "metrics"}`` (tensors on the CPU, float32).

    Returns:
        The path written.
    """
    s = _check_scene(s)
    if not isinstance(method, str) or not method.replace("_", "").isalnum():
        raise ValueError(f"method must be a short identifier such as 'mpi', got {method!r}")
    path = Path(output_dir) / f"{s.name}_{method}.pt"
    payload = {"scene": s.name, "method": method, "crop": s.crop, "downscale": s.downscale,
               "all_in_focus": None if all_in_focus is None else all_in_focus.detach().cpu().float(),
               "defocus": None if defocus is None else defocus.detach().cpu().float(),
               "metrics": dict(metrics)}
    with atomic_file(path) as fh:
        torch.save(payload, fh)
    return path
