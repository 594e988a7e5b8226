"""Thin-lens optics: signed circle of confusion (CoC), depth <-> defocus, camera presets.

The thin-lens model of RDPD (Abuolaim et al., ICCV 2021, Sec. 2.1, Eq. 1): a lens of focal
length ``f`` and f-number ``N`` focused at distance ``s`` has aperture diameter ``q = f / N``
and lens-to-sensor distance ``s' = f s / (s - f)``; a point at distance ``d`` is imaged as a
disc of radius

    r = q/2 * s'/s * (d - s)/d = f^2 (d - s) / (2 N (s - f) d).                  (Eq. 1)

``r`` is signed: positive for points behind the focal plane (``d > s``), negative in front,
zero in focus (dplab's convention). It is affine in inverse depth,
``r = A + B / d`` with ``A = f^2 / (2 N (s - f))`` (the CoC at infinity) and ``B = -A s``,
which is the form ``d = A + B / Z`` used by Xin et al. (ICCV 2021, Sec. 3).

Units. The functions taking ``focal_length``/``focus_distance``/``depth`` want one length
unit for all of them and return the radius in that unit; the ``_px`` variants divide by a
pixel pitch given in the same unit. :class:`Camera` takes the customary units (mm, m, um)
and converts.

The RDPD camera sets and how dplab reads them. The paper (Sec. 5 and supplement S3) lists
five sets ``{focal length, aperture, focus distance}`` = {4,5,6}, {5,8,6}, {7,5,8},
{10,13,12}, {22,10,30}; the authors' generator uses (f, N, d_f) = (4,6,5), (5,8,6), (7,5,8),
(10,13,12), (22,10,30) (first set differs) and computes, with SYNTHIA depth ``d`` in metres,

    c = round(S (d - d_f) / d),  S = f^2 / (N (d_f - f)),  clipped to [-40, 40],

taking ``c`` directly as the PSF radius in pixels. ``S`` is ``q s'/s`` of Eq. 1, i.e. the CoC
*diameter* (Eq. 1 has ``q/2``), used as a radius, and it subtracts ``f`` (a number of mm,
by the code's comments) from ``d_f`` (a number of metres), so no consistent choice of length
units makes ``S`` a physical size. What is physical is the depth dependence: ``(d - d_f)/d``
is exactly the thin-lens law for a lens focused at ``d_f`` metres, and ``S`` is the CoC at
infinity in pixels. dplab therefore reads each set as a physical camera with focal length
``f`` mm, f-number ``N`` and focus distance ``d_f`` m (the code's values, since they made
the published data; :data:`RDPD_CAMERA_SETS_PAPER` keeps the paper's), and gives it the
*effective* pixel pitch ``p = A_phys / S`` for which ``Camera.coc_px(d)`` equals the
generator's unrounded, unclipped ``S (d - d_f)/d`` at every depth. These pitches are
0.063-0.133 um, 10-80x finer than real DP sensors (Pixel 4: 1.4 um; Canon 5D Mark IV:
about 5.4 um): on real sensors those lens settings would give sub-pixel blur over most of
SYNTHIA's depth range, so the sets are best read as thin-lens-shaped depth-to-blur maps whose
scale was picked to span the +-40 px the generator allows. :func:`rdpd_generator_coc_px`
reproduces the generator's mapping (rounding and clipping included) for comparison.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch

from dplab._validate import require_finite, require_number, require_positive, require_tensor

__all__ = [
    "sensor_distance",
    "aperture_diameter",
    "coc_radius",
    "coc_radius_px",
    "depth_from_coc",
    "defocus_affine",
    "Camera",
    "rdpd_generator_coc_px",
    "RDPD_CAMERA_SETS",
    "RDPD_CAMERA_SETS_CODE",
    "RDPD_CAMERA_SETS_PAPER",
    "RDPD_COC_CLIP_PX",
]


def _lens(focal_length, f_number, focus_distance) -> tuple[float, float, float]:
    f = float(require_positive("focal_length", focal_length))
    n = float(require_positive("f_number", f_number))
    s = float(require_positive("focus_distance", focus_distance))
    if s <= f:
        raise ValueError(
            f"focus_distance must exceed focal_length (a thin lens cannot focus closer than f), "
            f"got focus_distance={focus_distance!r} <= focal_length={focal_length!r}"
        )
    return f, n, s


def _depth(name: str, depth):
    """Validate a depth: positive finite number or floating tensor with positive entries."""
    if isinstance(depth, torch.Tensor):
        require_finite(name, require_tensor(name, depth))
        if bool((depth <= 0).any()):
            raise ValueError(f"{name} must be > 0 everywhere, got min {float(depth.min())!r}")
        return depth
    if isinstance(depth, bool) or not isinstance(depth, numbers.Real):
        raise TypeError(
            f"{name} must be a real number or a floating-point torch.Tensor, "
            f"got {type(depth).__name__} {depth!r}"
        )
    return float(require_positive(name, depth))


def _coc_value(name: str, coc):
    if isinstance(coc, torch.Tensor):
        return require_finite(name, require_tensor(name, coc))
    if isinstance(coc, bool) or not isinstance(coc, numbers.Real):
        raise TypeError(
            f"{name} must be a real number or a floating-point torch.Tensor, "
            f"got {type(coc).__name__} {coc!r}"
        )
    return float(require_number(name, coc))


def sensor_distance(focal_length, focus_distance) -> float:
    """Lens-to-sensor distance ``s' = f s / (s - f)`` of a thin lens focused at ``s``.

    RDPD Sec. 2.1 (text above Eq. 1).

    Args:
        focal_length: ``f`` (> 0).
        focus_distance: ``s`` (> f), same unit as ``focal_length``.

    Returns:
        ``s'`` in the same unit.

    Raises:
        TypeError: non-numeric argument.
        ValueError: non-positive or non-finite values, or ``focus_distance <= focal_length``.

    Example:
        >>> round(sensor_distance(50.0, 2000.0), 4)
        51.2821
    """
    f, _, s = _lens(focal_length, 1.0, focus_distance)
    return f * s / (s - f)


def aperture_diameter(focal_length, f_number) -> float:
    """Aperture diameter ``q = f / N`` (RDPD Sec. 2.1).

    Args:
        focal_length: ``f`` (> 0).
        f_number: ``N`` (> 0).

    Returns:
        ``q`` in the unit of ``focal_length``.

    Raises:
        TypeError: non-numeric argument.
        ValueError: non-positive or non-finite values.

    Example:
        >>> aperture_diameter(50.0, 2.0)
        25.0
    """
    f = float(require_positive("focal_length", focal_length))
    n = float(require_positive("f_number", f_number))
    return f / n


def coc_radius(depth, focal_length, f_number, focus_distance):
    """Signed CoC radius of a point at ``depth`` (RDPD Eq. 1).

    ``r = q/2 * s'/s * (d - s)/d``; positive behind the focal plane, negative in front.

    Args:
        depth: ``d`` (> 0), a number or a floating-point tensor of any shape.
        focal_length: ``f`` (> 0), same unit as ``depth``.
        f_number: ``N`` (> 0).
        focus_distance: ``s`` (> f), same unit as ``depth``.

    Returns:
        ``r`` in the length unit of the inputs; a float for a number, a tensor (same shape,
        dtype, device) for a tensor.

    Shape:
        depth: any; output: same as ``depth``.

    Raises:
        TypeError: wrong argument types (e.g. a string or list depth).
        ValueError: ``depth <= 0``, NaN, ``f_number <= 0``, ``focal_length <= 0``,
            ``focus_distance <= focal_length``.

    Example:
        >>> round(coc_radius(4000.0, 50.0, 2.0, 2000.0), 6)   # mm; behind focus
        0.160256
        >>> coc_radius(torch.tensor([1.0, 2.0]), 0.05, 2.0, 2.0)  # metres; in front, in focus
        tensor([-0.0003,  0.0000])
    """
    f, n, s = _lens(focal_length, f_number, focus_distance)
    d = _depth("depth", depth)
    a = f * f / (2.0 * n * (s - f))  # CoC radius at infinity
    return a * (d - s) / d


def coc_radius_px(depth, focal_length, f_number, focus_distance, pixel_pitch):
    """Signed CoC radius in pixels: :func:`coc_radius` divided by ``pixel_pitch``.

    Args:
        depth: ``d`` (> 0), number or tensor.
        focal_length: ``f`` (> 0).
        f_number: ``N`` (> 0).
        focus_distance: ``s`` (> f).
        pixel_pitch: sensor pixel pitch (> 0). All four lengths in the same unit.

    Returns:
        CoC radius in pixels, same kind as ``depth``.

    Shape:
        depth: any; output: same as ``depth``.

    Raises:
        TypeError: wrong argument types.
        ValueError: as :func:`coc_radius`, or ``pixel_pitch <= 0``.

    Example:
        >>> round(coc_radius_px(4.0, 0.05, 2.0, 2.0, 5e-6), 3)
        32.051
    """
    p = float(require_positive("pixel_pitch", pixel_pitch))
    return coc_radius(depth, focal_length, f_number, focus_distance) / p


def depth_from_coc(coc, focal_length, f_number, focus_distance, pixel_pitch=None):
    """Depth whose signed CoC radius is ``coc`` (inverse of RDPD Eq. 1).

    From ``r = A (1 - s/d)`` with ``A = f^2 / (2 N (s - f))``: ``d = s / (1 - r/A)``. Radii
    ``r >= A`` (the CoC at infinity) have no finite depth and are refused.

    Args:
        coc: signed CoC radius, number or tensor; in the length unit of the other arguments,
            or in pixels when ``pixel_pitch`` is given.
        focal_length: ``f`` (> 0).
        f_number: ``N`` (> 0).
        focus_distance: ``s`` (> f).
        pixel_pitch: optional pixel pitch (> 0) in the same length unit.

    Returns:
        Depth in the length unit, same kind as ``coc``.

    Shape:
        coc: any; output: same as ``coc``.

    Raises:
        TypeError: wrong argument types.
        ValueError: NaN or infinite ``coc``, ``coc`` >= the CoC at infinity, bad lens values.

    Example:
        >>> round(depth_from_coc(0.16025641, 50.0, 2.0, 2000.0), 2)
        4000.0
    """
    f, n, s = _lens(focal_length, f_number, focus_distance)
    r = _coc_value("coc", coc)
    a = f * f / (2.0 * n * (s - f))
    if pixel_pitch is not None:
        a = a / float(require_positive("pixel_pitch", pixel_pitch))
    too_big = (r >= a).any() if isinstance(r, torch.Tensor) else r >= a
    if bool(too_big):
        worst = float(r.max()) if isinstance(r, torch.Tensor) else r
        raise ValueError(
            f"coc must be < {a!r} (the CoC radius at infinity for this lens); "
            f"got {worst!r}, which corresponds to no finite depth"
        )
    return s / (1.0 - r / a)


def defocus_affine(focal_length, f_number, focus_distance, pixel_pitch=None) -> tuple[float, float]:
    """Coefficients ``(A, B)`` with ``CoC = A + B / depth`` (Xin et al. Sec. 3: d = A + B/Z).

    ``A = f^2 / (2 N (s - f))`` is the CoC at infinity and ``B = -A s``.

    Args:
        focal_length: ``f`` (> 0).
        f_number: ``N`` (> 0).
        focus_distance: ``s`` (> f).
        pixel_pitch: optional pixel pitch in the same unit; if given, ``A`` is in pixels and
            ``B`` in pixel x length, else ``A`` is a length and ``B`` a length squared.

    Returns:
        ``(A, B)`` as floats.

    Raises:
        TypeError: wrong argument types.
        ValueError: bad lens values or ``pixel_pitch <= 0``.

    Example:
        >>> A, B = defocus_affine(0.05, 2.0, 2.0, 5e-6)
        >>> round(A + B / 4.0, 3)
        32.051
    """
    f, n, s = _lens(focal_length, f_number, focus_distance)
    a = f * f / (2.0 * n * (s - f))
    if pixel_pitch is not None:
        a = a / float(require_positive("pixel_pitch", pixel_pitch))
    return a, -a * s


@dataclass(frozen=True)
class Camera:
    """A thin-lens camera in customary units.

    Args:
        focal_length_mm: focal length in millimetres (> 0).
        f_number: f-number ``N`` (> 0).
        focus_distance_m: focus distance in metres (> focal length).
        pixel_pitch_um: pixel pitch in micrometres (> 0).

    Raises:
        TypeError: non-numeric fields.
        ValueError: non-positive or NaN fields, focus distance not beyond the focal length.

    Example:
        >>> cam = Camera(50.0, 2.0, 2.0, 5.0)
        >>> round(cam.coc_px(4.0), 3), round(cam.depth_m(cam.coc_px(4.0)), 6)
        (32.051, 4.0)
    """

    focal_length_mm: float
    f_number: float
    focus_distance_m: float
    pixel_pitch_um: float

    def __post_init__(self):
        f_mm = require_positive("focal_length_mm", self.focal_length_mm)
        require_positive("f_number", self.f_number)
        s_m = require_positive("focus_distance_m", self.focus_distance_m)
        require_positive("pixel_pitch_um", self.pixel_pitch_um)
        if s_m * 1000.0 <= f_mm:
            raise ValueError(
                f"focus_distance_m must exceed the focal length, got focus_distance_m="
                f"{self.focus_distance_m!r} <= focal_length_mm={self.focal_length_mm!r} / 1000"
            )

    def _si(self) -> tuple[float, float, float, float]:
        return (self.focal_length_mm * 1e-3, float(self.f_number),
                float(self.focus_distance_m), self.pixel_pitch_um * 1e-6)

    def coc_px(self, depth_m):
        """Signed CoC radius in pixels at ``depth_m`` metres (number or tensor).

        Example:
            >>> round(Camera(50.0, 2.0, 2.0, 5.0).coc_px(1.0), 3)
            -64.103
        """
        f, n, s, p = self._si()
        return coc_radius_px(depth_m, f, n, s, p)

    def depth_m(self, coc_px):
        """Depth in metres whose signed CoC radius is ``coc_px`` pixels.

        Example:
            >>> round(Camera(50.0, 2.0, 2.0, 5.0).depth_m(0.0), 6)
            2.0
        """
        f, n, s, p = self._si()
        return depth_from_coc(coc_px, f, n, s, p)

    def affine(self) -> tuple[float, float]:
        """``(A, B)`` with ``coc_px = A + B / depth_m`` (A in px, B in px m).

        Example:
            >>> [round(v, 3) for v in Camera(50.0, 2.0, 2.0, 5.0).affine()]
            [64.103, -128.205]
        """
        f, n, s, p = self._si()
        return defocus_affine(f, n, s, p)


#: (focal length mm, f-number, focus distance m) as in the authors' generator (set_0..set_4).
RDPD_CAMERA_SETS_CODE: tuple[tuple[float, float, float], ...] = (
    (4.0, 6.0, 5.0), (5.0, 8.0, 6.0), (7.0, 5.0, 8.0), (10.0, 13.0, 12.0), (22.0, 10.0, 30.0))
#: The same sets as printed in the paper (Sec. 5, supplement S3); only the first differs.
RDPD_CAMERA_SETS_PAPER: tuple[tuple[float, float, float], ...] = (
    (4.0, 5.0, 6.0), (5.0, 8.0, 6.0), (7.0, 5.0, 8.0), (10.0, 13.0, 12.0), (22.0, 10.0, 30.0))
#: The generator clips the CoC radius to +-40 px.
RDPD_COC_CLIP_PX = 40


def _generator_scale(f: float, n: float, d_f: float) -> float:
    """The generator's ``S = f^2 / (N (d_f - f))`` (mixed units, see module docstring)."""
    return f * f / (n * (d_f - f))


def _rdpd_camera(f_mm: float, n: float, d_f_m: float) -> Camera:
    a_phys_m = (f_mm * 1e-3) ** 2 / (2.0 * n * (d_f_m - f_mm * 1e-3))
    pitch_um = a_phys_m / _generator_scale(f_mm, n, d_f_m) * 1e6
    return Camera(f_mm, n, d_f_m, pitch_um)


#: The five RDPD cameras with the effective pixel pitch that reproduces the generator's
#: (unrounded, unclipped) CoC in pixels; see the module docstring.
RDPD_CAMERA_SETS: tuple[Camera, ...] = tuple(_rdpd_camera(*c) for c in RDPD_CAMERA_SETS_CODE)


def rdpd_generator_coc_px(depth_m, camera_set, *, clip_px: float = RDPD_COC_CLIP_PX):
    """The CoC radius in pixels exactly as the authors' RDPD data generator computes it.

    ``c = round(S (d - d_f) / d)``, ``S = f^2 / (N (d_f - f))`` with the set's raw numbers,
    clipped to ``[-clip_px, clip_px]``; rounding is half-to-even like Python's/numpy's.
    The generator evaluates this at the centres of 2000 depth bins over [0, 250] m and later
    replaces ``c = 0`` by 1 when it builds the PSF; neither step is applied here.

    Args:
        depth_m: depth in metres (> 0), number or tensor.
        camera_set: index 0-4 into :data:`RDPD_CAMERA_SETS_CODE`, or an ``(f, N, d_f)``
            triple of numbers.
        clip_px: clipping bound (> 0); ``math.inf`` disables clipping.

    Returns:
        Rounded, clipped CoC radius in pixels; a float for a number, a tensor for a tensor.

    Shape:
        depth_m: any; output: same as ``depth_m``.

    Raises:
        TypeError: wrong types (e.g. a string set or depth).
        ValueError: unknown set index, bad lens numbers, ``depth_m <= 0`` or NaN.

    Example:
        >>> rdpd_generator_coc_px(1.0, 0), rdpd_generator_coc_px(100.0, 4)
        (-11.0, 4.0)
        >>> rdpd_generator_coc_px(torch.tensor([0.1, 250.0]), 2)
        tensor([-40.,   9.])
    """
    if isinstance(camera_set, numbers.Integral) and not isinstance(camera_set, bool):
        if not 0 <= camera_set < len(RDPD_CAMERA_SETS_CODE):
            raise ValueError(f"camera_set must be in 0..{len(RDPD_CAMERA_SETS_CODE) - 1}, "
                             f"got {camera_set!r}")
        f, n, d_f = RDPD_CAMERA_SETS_CODE[camera_set]
    elif isinstance(camera_set, (tuple, list)) and len(camera_set) == 3:
        f, n, d_f = (require_number(f"camera_set[{i}]", v) for i, v in enumerate(camera_set))
        _lens(f, n, d_f)
    else:
        raise TypeError(f"camera_set must be an index 0-4 or an (f, N, d_f) triple, "
                        f"got {type(camera_set).__name__} {camera_set!r}")
    if not (isinstance(clip_px, numbers.Real) and clip_px == math.inf):
        clip_px = require_positive("clip_px", clip_px)
    d = _depth("depth_m", depth_m)
    c = _generator_scale(float(f), float(n), float(d_f)) * (d - d_f) / d
    if isinstance(c, torch.Tensor):
        return torch.round(c).clamp(-clip_px, clip_px)
    return float(max(-clip_px, min(clip_px, round(c))))
