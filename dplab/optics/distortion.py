"""Radial lens distortion with the division model (RDPD, Abuolaim et al. ICCV 2021, Eq. 5).

RDPD main paper Sec. 2.3 and supplement Sec. S3 (Eq. S5) distort a point as

.. math::

    (x_d, y_d) = (x_o, y_o) + \\frac{(x_u - x_o,\\ y_u - y_o)}{1 + c_1 R^2 + c_2 R^4 + c_3 R^6},

with :math:`R` the radial distance of the *undistorted* point from the centre
:math:`(x_o, y_o)`. The equation gives the distorted point in closed form; the inverse
(undistorted from distorted) has none for three coefficients and is solved per point by a
bracketed Newton iteration on the radius (:func:`undistort_points`).

**Normalisation of R.** dplab measures ``R`` in units of the image half-diagonal,
``R = |x - x_o| / (0.5 * hypot(H, W))``, so the image corners of a centred image lie at
``R = 1`` whatever the resolution or aspect ratio. The paper's coefficients (Eq. S7, of
order 1e-3 to 3e-2) only give lens-like distortions (a few percent at the corners) for a
radius of order one; in pixels they would fold any image, and with ImageMagick's
half-short-side normalisation (which the authors' generator passes them to) the corners
of a 16:9 frame sit at ``R = 2.04``, where the first set of Eq. S7 already folds the
division model. The half-diagonal is also what RDPD's radial-distance input channel uses
(distance divided by the corner distance).

**Barrel vs pincushion.** Under this convention positive coefficients shrink the radius
(``R_d = R_u / (1 + ...) < R_u``): *barrel* distortion; negative coefficients enlarge it:
*pincushion*. In :data:`RDPD_DISTORTION_COEFFS` the first two sets (4 mm and 5 mm focal
length) are barrel and the last three (7, 10 and 22 mm) are pincushion, the usual
behaviour of a zoom lens from its wide to its tele end, and what supplement Sec. S3 says
("five representative radial distortions that cover barrel as well as pincushion").

**Coordinates.** Points are ``(x, y)`` in pixels, ``x`` along the width (column) and ``y``
along the height (row), pixel centres at integers; the default centre is the image centre
``((W - 1) / 2, (H - 1) / 2)``.

**Folding.** The radius mapping ``g(r) = r / (1 + c1 r^2 + c2 r^4 + c3 r^6)`` is one-to-one
only while its denominator is positive and its derivative
``(1 - c1 r^2 - 3 c2 r^4 - 5 c3 r^6) / D(r)^2`` is positive. Every function here checks this
over the radii it needs (the whole image, both ways) and raises ``ValueError`` naming
``coeffs`` otherwise.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from dplab._validate import require_choice, require_finite, require_image, require_number, require_tensor

__all__ = [
    "RDPD_DISTORTION_COEFFS",
    "RDPD_DISTORTION_FOCAL_LENGTHS_MM",
    "normalization_radius",
    "distortion_center",
    "image_radius",
    "fold_radius",
    "distort_points",
    "undistort_points",
    "distort",
    "undistort",
]

#: The five coefficient sets (c1, c2, c3) of RDPD supplement Eq. S7, in the order of the five
#: virtual camera sets (focal length mm, f-number, focus distance) of
#: :data:`dplab.optics.thin_lens.RDPD_CAMERA_SETS_CODE`:
#: (4, 6, 5), (5, 8, 6), (7, 5, 8), (10, 13, 12), (22, 10, 30). Sec. S3 maps each capture to
#: one focal length; under dplab's half-diagonal normalisation of R the first two are barrel
#: (positive) and the last three pincushion (negative leading coefficient).
RDPD_DISTORTION_COEFFS: tuple[tuple[float, float, float], ...] = (
    (2e-2, 2e-2, 3e-2),
    (8e-3, 2e-3, 2.2e-3),
    (-4e-3, 9e-4, -9e-4),
    (-7e-3, -3.8e-3, -3.6e-3),
    (-8e-3, -5e-3, -4.5e-3),
)

#: Focal lengths (mm) of the five RDPD camera sets, aligned with :data:`RDPD_DISTORTION_COEFFS`.
RDPD_DISTORTION_FOCAL_LENGTHS_MM: tuple[float, ...] = (4.0, 5.0, 7.0, 10.0, 22.0)

_PADDING = ("zeros", "border", "reflection")


# ----------------------------------------------------------------------------- helpers
def _coeffs_tensor(coeffs, *, batched: bool = False) -> torch.Tensor:
    """Return ``coeffs`` as a float64 CPU tensor of shape (3,) (or (B, 3) when ``batched``)."""
    if isinstance(coeffs, torch.Tensor):
        require_tensor("coeffs", coeffs)
        c = coeffs.detach().to("cpu", torch.float64)
    else:
        if isinstance(coeffs, (str, bytes)) or not isinstance(coeffs, Sequence):
            raise TypeError(f"coeffs must be a sequence (c1, c2, c3) of numbers, got {coeffs!r}")
        c = torch.tensor([require_number("coeffs", v) for v in coeffs], dtype=torch.float64)
    if c.ndim == 1:
        c = c[None]
    elif c.ndim != 2 or not batched:
        raise ValueError(f"coeffs must have shape (3,) or (B, 3), got {tuple(c.shape)}")
    if not 1 <= c.shape[-1] <= 3:
        raise ValueError(f"coeffs must hold 1 to 3 coefficients (c1, c2, c3), got {c.shape[-1]}")
    require_finite("coeffs", c)
    c = F.pad(c, (0, 3 - c.shape[-1]))
    return c if batched else c[0]


def _image_size(size) -> tuple[int, int]:
    if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
        raise TypeError(f"size must be (height, width), got {size!r}")
    h, w = (require_number("size", v, integer=True) for v in size)
    if h <= 0 or w <= 0:
        raise ValueError(f"size must be positive (height, width), got {tuple(size)}")
    return h, w


def distortion_center(center, h: int, w: int) -> tuple[float, float]:
    """The distortion centre ``(x_o, y_o)`` in pixels: ``center`` checked, or the image centre.

    Args:
        center: ``(x_o, y_o)`` in pixels, or None for the image centre
            ``((w - 1) / 2, (h - 1) / 2)``.
        h: image height in pixels.
        w: image width in pixels.

    Returns:
        ``(x_o, y_o)`` as floats.

    Raises:
        TypeError: ``center`` not a pair of numbers. ValueError: NaN or infinite entries.

    Example:
        >>> distortion_center(None, 60, 80), distortion_center((40, 30), 60, 80)
        ((39.5, 29.5), (40.0, 30.0))
    """
    if center is None:
        return (w - 1) / 2.0, (h - 1) / 2.0
    if isinstance(center, (str, bytes)) or not isinstance(center, Sequence) or len(center) != 2:
        raise TypeError(f"center must be (x_o, y_o) in pixels or None, got {center!r}")
    return tuple(float(require_number("center", v)) for v in center)


def normalization_radius(height: int, width: int) -> float:
    """Pixel length that dplab's normalised radius ``R = 1`` stands for: the half-diagonal.

    Args:
        height: image height in pixels.
        width: image width in pixels.

    Returns:
        ``0.5 * hypot(height, width)`` in pixels.

    Raises:
        ValueError: if a size is not positive.

    Example:
        >>> normalization_radius(60, 80)
        50.0
    """
    h, w = _image_size((height, width))
    return 0.5 * math.hypot(h, w)


def image_radius(h: int, w: int, center: tuple[float, float]) -> float:
    """Largest normalised radius ``R`` in an ``(h, w)`` image: its farthest pixel centre.

    The distance from ``center`` to the farthest pixel centre, in units of the half-diagonal
    (:func:`normalization_radius`): the radius the division model must stay one-to-one up to
    (:func:`fold_radius`) for the whole image.

    Args:
        h: image height in pixels.
        w: image width in pixels.
        center: distortion centre ``(x_o, y_o)`` in pixels (:func:`distortion_center`).

    Returns:
        The radius (just under 1 for a centred image).

    Example:
        >>> round(image_radius(60, 80, (39.5, 29.5)), 4)
        0.986
    """
    xo, yo = center
    dx = max(abs(0 - xo), abs(w - 1 - xo))
    dy = max(abs(0 - yo), abs(h - 1 - yo))
    return math.hypot(dx, dy) / normalization_radius(h, w)


def _smallest_positive_root(poly_in_s: list[float]) -> float:
    """Smallest s > 0 with p(s) = 0 for p given highest power first; inf if none."""
    coefs = np.trim_zeros(np.asarray(poly_in_s, dtype=np.float64), "f")
    if coefs.size <= 1:
        return math.inf
    roots = np.roots(coefs)
    real = roots[np.abs(roots.imag) <= 1e-9 * np.maximum(1.0, np.abs(roots))].real
    real = real[real > 0]
    return float(real.min()) if real.size else math.inf


def fold_radius(coeffs) -> tuple[float, float]:
    """Where the division model stops being one-to-one (normalised radii).

    Eq. 5 maps the undistorted radius ``r`` to ``g(r) = r / D(r)`` with
    ``D(r) = 1 + c1 r^2 + c2 r^4 + c3 r^6``. ``g`` increases while ``D > 0`` and
    ``D - r D' = 1 - c1 r^2 - 3 c2 r^4 - 5 c3 r^6 > 0``; both are cubics in ``s = r^2``,
    whose smallest positive root gives the fold exactly.

    Args:
        coeffs: ``(c1, c2, c3)`` (1 to 3 numbers; missing ones are zero).

    Returns:
        ``(r_u, r_d)``: the largest undistorted radius over which ``g`` increases and the
        distorted radius ``g(r_u)`` it reaches (``inf`` where unbounded). Radii are in units
        of the image half-diagonal.

    Raises:
        TypeError: if ``coeffs`` is not a sequence of numbers.
        ValueError: if ``coeffs`` has the wrong length or non-finite entries.

    Example:
        >>> r_u, r_d = fold_radius((0.8, 0.0, 0.0))   # D - r D' = 1 - 0.8 r^2
        >>> round(r_u, 4), round(r_d, 4)
        (1.118, 0.559)
        >>> fold_radius((0.0, 0.0, 0.0))
        (inf, inf)
    """
    c1, c2, c3 = _coeffs_tensor(coeffs).tolist()
    s_den = _smallest_positive_root([c3, c2, c1, 1.0])
    s_der = _smallest_positive_root([-5.0 * c3, -3.0 * c2, -c1, 1.0])
    s = min(s_den, s_der)
    if math.isinf(s):
        return math.inf, math.inf
    r = math.sqrt(s)
    if s_den <= s_der:  # the denominator vanishes first: g grows without bound
        return r, math.inf
    return r, r / (1.0 + c1 * s + c2 * s * s + c3 * s**3)


def _check_no_fold(c: torch.Tensor, r_u_needed: float, r_d_needed: float) -> None:
    """Raise if a coefficient row folds the mapping below the needed radii.

    ``r_u_needed``/``r_d_needed``: largest undistorted/distorted radius that must lie on the
    increasing branch of ``g``.
    """
    for row in c.reshape(-1, 3).tolist():
        r_u, r_d = fold_radius(row)
        if r_u <= r_u_needed or r_d <= r_d_needed:
            raise ValueError(
                f"coeffs {tuple(row)} fold the image: the division-model radius mapping "
                f"r_d = r_u / (1 + c1 r^2 + c2 r^4 + c3 r^6) stops increasing at r_u = {r_u:.4g} "
                f"(r_d = {r_d:.4g}), but undistorted radii up to {r_u_needed:.4g} and distorted "
                f"radii up to {r_d_needed:.4g} are needed (R in units of the image "
                "half-diagonal); use coefficients of smaller magnitude"
            )


def _forward_radius(r: torch.Tensor, c1, c2, c3) -> torch.Tensor:
    s = r * r
    return r / (1.0 + s * (c1 + s * (c2 + s * c3)))


def _inverse_radius(rd: torch.Tensor, c1, c2, c3, hi, *, tol: float = 1e-12, max_iter: int = 60):
    """Solve ``g(r) = rd`` for r in [0, hi) by Newton steps kept inside a bisection bracket.

    ``g`` is increasing on [0, hi) (checked by the caller), so the bracket [lo, hi] always
    holds the root; a Newton step that leaves it is replaced by the bracket midpoint.
    """
    lo = torch.zeros_like(rd)
    hi = torch.broadcast_to(torch.as_tensor(hi, dtype=rd.dtype, device=rd.device), rd.shape).clone()
    hi = torch.where(torch.isinf(hi), 2.0 * rd + 1.0, hi)
    r = torch.minimum(rd, 0.5 * (lo + hi))
    for _ in range(max_iter):
        s = r * r
        den = 1.0 + s * (c1 + s * (c2 + s * c3))
        f = r / den - rd
        if float(f.abs().max()) <= tol:
            break
        lo = torch.where(f < 0, r, lo)
        hi = torch.where(f > 0, r, hi)
        deriv = (1.0 - s * (c1 + s * (3.0 * c2 + s * 5.0 * c3))) / (den * den)
        r_new = r - f / deriv
        ok = torch.isfinite(r_new) & (r_new >= lo) & (r_new <= hi)
        r_new = torch.where(ok, r_new, 0.5 * (lo + hi))
        r = torch.where(f.abs() <= tol, r, r_new)
    return r


def _fold_limits(c: torch.Tensor) -> torch.Tensor:
    """Undistorted fold radius per coefficient row, shape (B,)."""
    return torch.tensor([fold_radius(row)[0] for row in c.reshape(-1, 3).tolist()], dtype=torch.float64)


def _check_points(points) -> torch.Tensor:
    points = require_tensor("points", points)
    if points.ndim < 1 or points.shape[-1] != 2:
        raise ValueError(f"points must have shape (..., 2) holding (x, y), got {tuple(points.shape)}")
    return require_finite("points", points)


def _map_points(points, coeffs, size, center, inverse: bool) -> torch.Tensor:
    points = _check_points(points)
    h, w = _image_size(size)
    xo, yo = distortion_center(center, h, w)
    c = _coeffs_tensor(coeffs)
    scale = normalization_radius(h, w)
    p = points.to(torch.float64)
    offset = torch.tensor([xo, yo], dtype=torch.float64, device=p.device)
    v = (p - offset) / scale
    r = torch.linalg.vector_norm(v, dim=-1)
    r_img = image_radius(h, w, (xo, yo))
    r_pts = float(r.max()) if r.numel() else 0.0
    # the whole image both ways, and the given points on their own side of the mapping
    _check_no_fold(c, r_img if inverse else max(r_img, r_pts), max(r_img, r_pts) if inverse else r_img)
    c1, c2, c3 = c.tolist()
    if inverse:
        r_new = _inverse_radius(r, c1, c2, c3, fold_radius(c)[0])
    else:
        r_new = _forward_radius(r, c1, c2, c3)
    ratio = torch.where(r > 0, r_new / torch.where(r > 0, r, torch.ones_like(r)), torch.ones_like(r))
    out = p + (p - offset) * (ratio[..., None] - 1.0)  # exact identity when ratio == 1
    return out.to(points.dtype)


def distort_points(points: torch.Tensor, coeffs, size, center=None) -> torch.Tensor:
    """Distort undistorted pixel coordinates with the division model (RDPD Eq. 5 / Eq. S5).

    Args:
        points: undistorted points ``(x, y)`` in pixels.
        coeffs: ``(c1, c2, c3)`` for a radius normalised by the half-diagonal (module doc).
        size: ``(height, width)`` of the image the points live in (fixes the normalisation,
            the default centre and the fold check).
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.

    Returns:
        Distorted points, same shape and dtype as ``points``.

    Shape:
        ``points``: ``(..., 2)``; output: ``(..., 2)``.

    Raises:
        TypeError: on a non-float ``points`` or non-numeric ``coeffs``/``size``/``center``.
        ValueError: on a bad shape, NaN, a non-positive size, or ``coeffs`` that fold the
            mapping within the image or at the given points.

    Example:
        >>> p = torch.tensor([[79.5, 29.5]])      # 0.8 half-diagonals right of the centre
        >>> distort_points(p, (0.1, 0.0, 0.0), size=(60, 80))   # barrel: pulled inwards
        tensor([[77.0940, 29.5000]])
    """
    return _map_points(points, coeffs, size, center, inverse=False)


def undistort_points(points: torch.Tensor, coeffs, size, center=None) -> torch.Tensor:
    """Invert :func:`distort_points`: undistorted pixel coordinates from distorted ones.

    For each point the undistorted radius ``r`` solves ``r / (1 + c1 r^2 + c2 r^4 + c3 r^6)
    = r_d`` (RDPD Eq. 5 read backwards); Newton steps safeguarded by bisection on the
    bracket ``[0, r_fold)`` (:func:`fold_radius`) converge to ``1e-12`` in float64.

    Args:
        points: distorted points ``(x, y)`` in pixels.
        coeffs: ``(c1, c2, c3)``, same convention as :func:`distort_points`.
        size: ``(height, width)`` of the image.
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.

    Returns:
        Undistorted points, same shape and dtype as ``points``.

    Shape:
        ``points``: ``(..., 2)``; output: ``(..., 2)``.

    Raises:
        TypeError: on a non-float ``points`` or non-numeric arguments.
        ValueError: on a bad shape, NaN, a non-positive size, or folding ``coeffs``.

    Example:
        >>> p = torch.tensor([[77.0940, 29.5]])
        >>> undistort_points(p, (0.1, 0.0, 0.0), size=(60, 80))
        tensor([[79.5000, 29.5000]])
    """
    return _map_points(points, coeffs, size, center, inverse=True)


def _warp(image, coeffs, center, padding_mode, inverse_map: bool) -> torch.Tensor:
    image = require_image("image", image)
    require_choice("padding_mode", padding_mode, _PADDING)
    b, _, h, w = image.shape
    c = _coeffs_tensor(coeffs, batched=True)
    if c.shape[0] not in (1, b):
        raise ValueError(f"coeffs must have shape (3,) or (B, 3) with B = {b}, got {tuple(c.shape)}")
    xo, yo = distortion_center(center, h, w)
    r_img = image_radius(h, w, (xo, yo))
    _check_no_fold(c, r_img, r_img)
    dev = image.device
    scale = normalization_radius(h, w)
    ys = (torch.arange(h, dtype=torch.float64, device=dev) - yo) / scale
    xs = (torch.arange(w, dtype=torch.float64, device=dev) - xo) / scale
    vy, vx = torch.meshgrid(ys, xs, indexing="ij")
    r = torch.hypot(vx, vy)[None]  # (1, H, W)
    cd = c.to(dev)[:, :, None, None]  # (B', 3, 1, 1)
    c1, c2, c3 = cd[:, 0], cd[:, 1], cd[:, 2]
    if inverse_map:  # output is distorted: sample the input at the undistorted position
        hi = _fold_limits(c).to(dev)[:, None, None]
        r_src = _inverse_radius(r.expand(c.shape[0], h, w), c1, c2, c3, hi)
    else:  # output is undistorted: sample the distorted input at the distorted position
        r_src = _forward_radius(r, c1, c2, c3)
    ratio = torch.where(r > 0, r_src / torch.where(r > 0, r, torch.ones_like(r)), torch.ones_like(r_src))
    x_src = xo + vx * ratio * scale
    y_src = yo + vy * ratio * scale
    # pixel centres -> grid_sample's [-1, 1] with align_corners=False
    grid = torch.stack(((2.0 * x_src + 1.0) / w - 1.0, (2.0 * y_src + 1.0) / h - 1.0), dim=-1)
    grid = grid.to(image.dtype).expand(b, h, w, 2)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def distort(image: torch.Tensor, coeffs, center=None, padding_mode: str = "zeros") -> torch.Tensor:
    """Apply radial distortion (RDPD Eq. 5) to images, as the RDPD generator does (Sec. 2.3).

    Each output pixel is a distorted position ``p_d``; it takes the bilinear sample of the
    input at ``undistort_points(p_d)`` (inverse warping with ``grid_sample``). Where that
    position falls outside the input (the corners under barrel distortion) the value follows
    ``padding_mode``: ``"zeros"`` (default, black like the authors' transparent virtual
    pixels), ``"border"`` (nearest edge pixel) or ``"reflection"``.

    Args:
        image: undistorted images.
        coeffs: ``(c1, c2, c3)`` shared by the batch, or one row per image ``(B, 3)``.
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        The distorted images, same shape, dtype and device.

    Shape:
        ``image``: ``(B, C, H, W)``; ``coeffs``: ``(3,)`` or ``(B, 3)``; output ``(B, C, H, W)``.

    Raises:
        TypeError: on a non-tensor image or non-numeric coefficients.
        ValueError: on a bad shape, NaN, an unknown padding mode, or ``coeffs`` that fold
            the image.

    Example:
        >>> img = torch.rand(1, 3, 24, 32)
        >>> distort(img, (0.0, 0.0, 0.0)).sub(img).abs().max() < 1e-6   # zero coeffs: identity
        tensor(True)
    """
    return _warp(image, coeffs, center, padding_mode, inverse_map=True)


def undistort(image: torch.Tensor, coeffs, center=None, padding_mode: str = "zeros") -> torch.Tensor:
    """Remove radial distortion (inverse of :func:`distort`).

    Each output pixel is an undistorted position ``p_u``; it takes the bilinear sample of the
    distorted input at ``distort_points(p_u)`` (closed form, Eq. 5). ``padding_mode`` as in
    :func:`distort` (pixels that sample outside the input, the corners under pincushion).

    Args:
        image: distorted images.
        coeffs: ``(c1, c2, c3)`` shared by the batch, or ``(B, 3)``.
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        The undistorted images, same shape, dtype and device.

    Shape:
        ``image``: ``(B, C, H, W)``; output ``(B, C, H, W)``.

    Raises:
        TypeError: on a non-tensor image or non-numeric coefficients.
        ValueError: on a bad shape, NaN, an unknown padding mode, or folding ``coeffs``.

    Example:
        >>> y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 64), indexing="ij")
        >>> img = (0.5 + 0.25 * torch.sin(6 * x) * torch.cos(5 * y))[None, None]
        >>> back = undistort(distort(img, (-0.05, 0.0, 0.0)), (-0.05, 0.0, 0.0))
        >>> bool((back - img)[..., 8:-8, 8:-8].abs().max() < 1e-2)
        True
    """
    return _warp(image, coeffs, center, padding_mode, inverse_map=False)
