"""Training data as one phone sees: the Pixel 4's calibrated DP kernels, its noise, its scale.

Xin et al. (ICCV 2021, Sec. 3 and supplement B) calibrate the Pixel 4's left and right DP
kernels once, on a 6x8 grid over the central 1008x1344 field, at one reference defocus, and
model a capture as a multiplane image whose layers are blurred by those kernels resized to the
layer's defocus size (Eq. 2). That forward model is also a data generator: put a random scene
into an MPI and render its two views with the phone's own kernels. :class:`PhoneRenderer` does
that per sample, so that a network trained on the result sees what the phone delivers after
:func:`dplab.xin.recipe.load_xin_scene`:

* one channel (the raw green channel): the green channel of a procedural scene of
  :func:`dplab.render.scenes.random_scene`, replicated to 3 channels on disk so that the
  RGB networks and loaders run unchanged (:func:`dplab.eval.zoo.deblur_gray` feeds the real
  views the same way);
* spatially varying PSFs: each sample is a random window of the calibrated field, rendered
  with the kernel grid at that position (:class:`dplab.xin.blur.DPBlur`, 168-px cells,
  cross-faded), so the network sees every cell's kernels;
* defocus: the scene's inverse depth mapped to kernel scales ``[near, far]`` (defocus is
  linear in inverse depth, focus at the nearest point: the release's scenes lie at or behind
  the focus plane, supplement B), quantised to 12 layers as the paper's MPI; ``near`` is
  drawn from the range of the authors' per-scene front scales and ``far`` between it and
  their largest back scale, so that mild and strong blur both occur;
* brightness: the all-in-focus image at one view's brightness (as the release's ground truth)
  with a mean drawn log-uniformly over the range of the released captures' means;
* noise: signal-dependent Gaussian noise ``var = a x + b`` per view in the release's units,
  correlated down the columns as the release's views are, with ``a, b`` and the correlation
  estimated from the calibration white sheets (:func:`estimate_noise`), not from any scene;
* scale: the same gain :func:`dplab.eval.zoo.deblur_gray` applies to a real capture (the
  99.5th percentile of ``left + right`` to 0.9), so training and inference see one scale.

Files are written in the DPDD layout by :func:`dplab.render.synth.synthesize` (its
``renderer`` argument): ``python -m dplab synth --camera pixel4``.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from dplab.data import pixel4
from dplab.ops.box import box_mean
from dplab.data.manifest import dataset_dir
from dplab.render.scenes import random_scene
from dplab.render.synth import png16_array, sample_generator
from dplab.xin.blur import DPBlur
from dplab.xin.multiplane import MPI, layer_scales, render_mpi

__all__ = ["NoiseModel", "noise_from_flats", "estimate_noise", "PhoneConfig", "PhoneRenderer", "NEAR_RANGE", "FAR_RANGE",
           "VIEW_MEAN_RANGE"]

#: The authors' per-scene MPI settings (:func:`dplab.data.pixel4.scene_settings`) put the
#: front layer at kernel scales 0.1-0.7 and the back layer at 1.3-1.6 (settings, not
#: measurements of any scene). A sample's front scale is drawn from ``NEAR_RANGE`` and its back
#: scale from ``[max(FAR_RANGE[0], near + 0.1), FAR_RANGE[1]]``.
NEAR_RANGE = (0.1, 0.7)
FAR_RANGE = (0.5, 1.6)
#: Mean view brightness of the released captures, release units (0.04-0.23 over 001-010), widened.
VIEW_MEAN_RANGE = (0.03, 0.3)


@dataclass(frozen=True)
class NoiseModel:
    """Sensor noise of one DP view: variance ``a x + b`` at intensity ``x`` (release units),
    correlated between vertical neighbours with coefficient ``rho`` (the release's views are
    measured so: see :func:`estimate_noise`), independent between horizontal ones.

    Attributes:
        a: shot-noise slope.
        b: signal-independent variance (>= 0).
        rho: correlation of vertically adjacent pixels' noise, in [0, 1/sqrt(2)] (what the
            three-tap filter of :meth:`sample` can make).
        points: the ``(mean, variance)`` pairs ``a, b`` were fitted to.

    Example:
        >>> NoiseModel(2e-5, 1e-7).sigma(torch.tensor([0.0, 0.2]))
        tensor([0.0003, 0.0020])
    """

    a: float
    b: float
    rho: float = 0.0
    points: tuple = field(default=(), repr=False, compare=False)

    def __post_init__(self):
        if not (self.a >= 0 and self.b >= 0 and math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"noise model needs a >= 0 and b >= 0, got a={self.a!r}, b={self.b!r}")
        if not 0 <= self.rho <= 2 ** -0.5 + 1e-12:
            raise ValueError(f"rho must lie in [0, 1/sqrt(2)], got {self.rho!r}")

    def sigma(self, x: torch.Tensor) -> torch.Tensor:
        """Standard deviation of the noise at intensity ``x`` (clipped at 0)."""
        return (self.a * x.clamp_min(0) + self.b).sqrt()

    def sample(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``x`` plus noise: unit white noise filtered vertically by ``[u, 1, u] / sqrt(1 + 2 u^2)``
        (lag-1 correlation ``2u / (1 + 2u^2) = rho``, unit variance), times :meth:`sigma`."""
        n = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        if self.rho > 0:
            u = (1 - math.sqrt(max(1 - 2 * self.rho ** 2, 0.0))) / (2 * self.rho)
            taps = torch.tensor([u, 1.0, u], dtype=x.dtype) / math.sqrt(1 + 2 * u * u)
            flat = n.reshape(-1, 1, *n.shape[-2:])
            n = F.conv2d(F.pad(flat, (0, 0, 1, 1), mode="reflect"), taps.view(1, 1, 3, 1)).reshape(n.shape)
        return x + self.sigma(x) * n


def _box(x: np.ndarray, window: int) -> np.ndarray:
    return box_mean(torch.from_numpy(x)[None, None], window, padding="replicate")[0, 0].numpy()


def noise_from_flats(flats, *, window: int = 15, bins: int = 10, axis: int = 1) -> NoiseModel:
    """Fit ``var = a x + b`` to images of a smooth, flat-field target (see :func:`estimate_noise`).

    For neighbouring pixels ``x, y`` of a smooth signal, ``var(x - y) = 2 var(noise)``: the
    differences along ``axis`` of each image, less their local mean (the signal's gradient;
    for the noise that mean telescopes to almost nothing), are binned by the local mean (a ``window`` box)
    into ``bins`` quantile bins and half their variance is the noise variance at that
    brightness. A least-squares line through those points (all images) is the model; a
    negative intercept (the line extrapolated below the darkest pixel) is replaced by the line
    through the origin.

    Args:
        flats: 2-D arrays (or tensors) of a smooth target, each with a spread of brightness.
        window: odd box size of the local mean (>= 3).
        bins: brightness bins per image (>= 2).
        axis: 1 (horizontal neighbours) or 0 (vertical).

    Returns:
        :class:`NoiseModel`.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> x = np.tile(np.linspace(0.1, 0.3, 400), (300, 1))
        >>> m = noise_from_flats([x + np.sqrt(2e-5 * x) * rng.standard_normal(x.shape)])
        >>> round(m.a / 2e-5, 1)
        1.0
    """
    if not isinstance(window, int) or window < 3 or window % 2 == 0:
        raise ValueError(f"window must be an odd integer >= 3, got {window!r}")
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer >= 2, got {bins!r}")
    if axis not in (0, 1):
        raise ValueError(f"axis must be 0 or 1, got {axis!r}")
    points = []
    for x in flats:
        x = np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        if x.ndim != 2 or min(x.shape) < 2 * window:
            raise ValueError(f"flats must be 2-D images larger than 2 x window, got shape {x.shape}")
        diff = np.diff(x, axis=axis)
        diff = diff - _box(diff, window)          # the target's own gradient (vignetting) out
        mean = _box(x, window)[:, :-1] if axis == 1 else _box(x, window)[:-1]
        edges = np.quantile(mean, np.linspace(0, 1, bins + 1))
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = (mean >= lo) & (mean < hi)
            if sel.sum() > 100:
                points.append((float(mean[sel].mean()), float(diff[sel].var() / 2)))
    if len(points) < 2:
        raise ValueError("flats hold too few pixels per brightness bin (need > 100 in at least 2 bins)")
    m, v = np.array(points).T
    a, b = np.polyfit(m, v, 1)
    if b < 0:
        a, b = float((m * v).sum() / (m * m).sum()), 0.0
    return NoiseModel(float(a), float(b), points=tuple(points))


def estimate_noise(data_dir=None, *, window: int = 15, bins: int = 10) -> NoiseModel:
    """Noise of the Pixel 4 views from the two calibration white sheets (not from any scene).

    A white sheet through a diffuser is smooth, and its vignetting spreads its brightness over
    a range (about 0.06-0.32 in release units), so :func:`noise_from_flats` can fit the noise
    level at every brightness of that range (below it the line is an extrapolation). Fitted
    on horizontal neighbours it gives ``a, b``; on vertical neighbours about a quarter of that,
    because the views' noise is correlated down the columns (measured on the sheets: lag-1
    correlation about 0.73, lag 2 about 0.26, horizontal about 0); ``rho = 1 - (vertical /
    horizontal)`` of the two fits, capped at what :meth:`NoiseModel.sample` can make.

    Args:
        data_dir: data directory holding ``xin_pixel4_dp/calibration`` (default ``$DPLAB_DATA``).
        window, bins: see :func:`noise_from_flats`.

    Returns:
        :class:`NoiseModel`.

    Raises:
        DatasetNotFoundError: the release or its white sheets are missing.
    """
    folder = dataset_dir(pixel4.NAME, data_dir) / "calibration"
    flats = [pixel4.read_view(folder / f"white_sheet_{v}.png")[0, 0].double() for v in ("left", "right")]
    across = noise_from_flats(flats, window=window, bins=bins, axis=1)
    down = noise_from_flats(flats, window=window, bins=bins, axis=0)
    # var(x - y) = 2 var (1 - rho) for neighbours with correlation rho; horizontal ones are
    # independent (the residual's horizontal correlation is about 0), vertical ones are not
    m = np.array([p[0] for p in across.points])
    ratio = float(np.mean([down.a * x + down.b for x in m]) / np.mean([across.a * x + across.b for x in m]))
    rho = min(max(1 - ratio, 0.0), 2 ** -0.5)
    return NoiseModel(across.a, across.b, rho, across.points)


@dataclass(frozen=True)
class PhoneConfig:
    """What :class:`PhoneRenderer` draws (see the module docstring).

    Attributes:
        size: ``(H, W)`` of a sample, at most the calibrated field (1008, 1344).
        n_layers: MPI layers (the paper: 12).
        near_range: range of the front layer's kernel scale.
        far_range: range of the back layer's kernel scale (above the front's by 0.1 at least).
        view_mean_range: range of the mean view brightness (log-uniform).
        noise: ``True`` to add the white-sheet noise model, ``False`` for none.
        level: the 99.5th percentile of ``left + right`` is scaled to this.
        percentile: see ``level`` (the same as :func:`dplab.eval.zoo.deblur_gray`).
        blend_px: cross-fade half-width between kernel cells (as the MPI).
    """

    size: tuple = (256, 256)
    n_layers: int = 12
    near_range: tuple = NEAR_RANGE
    far_range: tuple = FAR_RANGE
    view_mean_range: tuple = VIEW_MEAN_RANGE
    noise: bool = True
    level: float = 0.9
    percentile: float = 99.5
    blend_px: int = 8

    def __post_init__(self):
        H, W = (int(v) for v in self.size)
        field_h, field_w = pixel4.CROP_HW
        problems = []
        if not (16 <= H <= field_h and 16 <= W <= field_w):
            problems.append(f"size must lie within 16x16 .. {field_h}x{field_w} (the calibrated field), "
                            f"got {tuple(self.size)}")
        if not (isinstance(self.n_layers, int) and self.n_layers >= 2):
            problems.append(f"n_layers must be an integer >= 2, got {self.n_layers!r}")
        for name in ("near_range", "far_range", "view_mean_range"):
            lo, hi = getattr(self, name)
            if not (0 < lo <= hi and math.isfinite(hi)):
                problems.append(f"{name} must be (min, max) with 0 < min <= max, got {getattr(self, name)!r}")
        if self.near_range[1] + 0.1 > self.far_range[1]:
            problems.append(f"far_range {self.far_range} must reach 0.1 above near_range {self.near_range}")
        if not (0 < self.percentile <= 100 and self.level > 0):
            problems.append(f"percentile must be in (0, 100] and level > 0, got {self.percentile!r}, {self.level!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _file_digest(paths) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class PhoneRenderer:
    """Renders sample ``index`` of a Pixel 4 training set (a function of ``(seed, index)``).

    The interface :func:`dplab.render.synth.synthesize` takes as ``renderer``: :meth:`config`
    (recorded in the dataset's manifest; a resumed run must match it) and :meth:`sample`.

    Args:
        cfg: :class:`PhoneConfig`.
        seed: base seed.
        data_dir: data directory with the release's calibration (default ``$DPLAB_DATA``).

    Raises:
        DatasetNotFoundError: the calibration is missing.
    """

    def __init__(self, cfg: PhoneConfig, seed: int, data_dir=None):
        if not isinstance(cfg, PhoneConfig):
            raise TypeError(f"cfg must be a PhoneConfig, got {type(cfg).__name__}")
        self.cfg, self.seed = cfg, int(seed)
        self.k_left, self.k_right = pixel4.load_kernel_grid(data_dir)
        self.noise = estimate_noise(data_dir) if cfg.noise else NoiseModel(0.0, 0.0)
        folder = dataset_dir(pixel4.NAME, data_dir) / "calibration"
        self.calibration = _file_digest(sorted(folder.glob("*")))

    def config(self) -> dict:
        """JSON record: the settings, the noise model and a digest of the calibration files."""
        return {"camera": "pixel4", **self.cfg.to_json(), "noise_a": self.noise.a, "noise_b": self.noise.b,
                "noise_rho": self.noise.rho,
                "calibration_sha256_16": self.calibration}

    def sample(self, index: int) -> tuple[dict, dict]:
        """``(arrays, meta)`` as :func:`dplab.render.synth.render_sample`: ``(H, W, 3)`` uint16
        ``combined``, ``target``, ``left``, ``right`` (views at full brightness) and an
        ``(H, W)`` float32 ``defocus`` map in kernel-scale units (Xin et al.'s defocus size)."""
        cfg = self.cfg
        g = sample_generator(self.seed, 0, int(index))
        H, W = cfg.size
        scene = random_scene((H, W), g)
        shot = scene.render(0)
        gray = shot.image[:, 1:2].float()                                   # the green channel
        inv = 1.0 / shot.depth_m.double()
        t = ((inv.max() - inv) / (inv.max() - inv.min()).clamp_min(1e-12)).float()  # 0 nearest, 1 farthest
        near = _uniform(g, *cfg.near_range)
        far = _uniform(g, max(cfg.far_range[0], near + 0.1), cfg.far_range[1])
        scales = layer_scales(cfg.n_layers, near, far)                      # back (far) to front
        layer = ((1 - t) * (cfg.n_layers - 1)).round().long()               # 0 = back layer
        alphas = torch.stack([(layer == i).float() for i in range(cfg.n_layers)], 1)[0]
        alphas[0] = 1.0
        view_mean = math.exp(_uniform(g, *(math.log(v) for v in cfg.view_mean_range)))
        sharp = gray * (view_mean / float(gray.mean().clamp_min(1e-6)))   # one view's brightness
        colors = (2 * sharp).expand(cfg.n_layers, 1, H, W)                  # left + right's brightness
        field_h, field_w = pixel4.CROP_HW
        top = int(torch.randint(field_h - H + 1, (), generator=g))
        left = int(torch.randint(field_w - W + 1, (), generator=g))
        blur = DPBlur(self.k_left, self.k_right, scales, (H, W), cell_hw=(pixel4.CELL_PX, pixel4.CELL_PX),
                      origin=(-top, -left), blend_px=cfg.blend_px)
        views = render_mpi(MPI(colors, alphas, scales), blur=blur)
        out = []
        for v in (views.left, views.right):
            out.append(self.noise.sample(v, g).clamp_min(0))
        L, R = out
        gain = cfg.level / float(torch.quantile((L + R).flatten(), cfg.percentile / 100).clamp_min(1e-6))
        rgb = lambda x: png16_array(x[0].expand(3, H, W) * gain)                   # noqa: E731
        arrays = {"combined": rgb(L + R), "target": rgb(2 * sharp), "left": rgb(2 * L), "right": rgb(2 * R),
                  "defocus": scales[layer[0, 0]].numpy().astype(np.float32)}
        meta = {"index": int(index), "near": near, "far": far, "field_top_left": [top, left],
                "view_mean": view_mean, "gain": gain,
                "noise": [self.noise.a, self.noise.b, self.noise.rho]}
        return arrays, meta


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return float(lo + (hi - lo) * torch.rand((), generator=g, dtype=torch.float64))

