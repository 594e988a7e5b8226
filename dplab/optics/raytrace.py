"""Geometric ray tracing through an ideal thin lens: an independent check of RDPD Eq. 1.

:mod:`dplab.optics.thin_lens` gives the circle of confusion in closed form. Here we trace individual
rays instead: a ray leaves a point source at depth ``d`` (lateral offset ``h``), passes the
aperture at ``a``, is bent by the thin lens towards the point's image at distance
``d' = f d / (d - f)`` behind the lens (lateral position ``-h d'/d``) and is stopped by the
sensor at ``s' = f s / (s - f)``. Along the straight segment from ``a`` to the image point,
the sensor hit is

    x = a + (x_img - a) * s'/d' = a (1 - s'/d') + x_img s'/d'.

The spot is the aperture scaled by ``1 - s'/d' = -f (d - s) / (d (s - f))``, so its radius is
``q/2 * |1 - s'/d'|`` (Eq. 1 in magnitude) and its sign tells whether the spot is the
aperture seen upright (point in front of the focal plane, rays not yet crossed) or mirrored
(behind it, rays crossed before the sensor). With half of the aperture blocked, which is what
each photodiode of a dual pixel sees, the mirroring moves the half-disc spot to the other
side: the front/back flip of dual-pixel PSFs (RDPD Fig. 2).

Which half is which view. The microlens over a dual pixel images the aperture upside down
onto the photodiode pair, so the *left* photodiodes collect the light that passed through the
*right* half of the aperture, ``x > 0`` (``half="pos"`` of :func:`sample_aperture`), and the
right photodiodes the ``x < 0`` half. Behind the focal plane (``r > 0``) those rays have
crossed, and the left view's half-disc lands on the ``-x`` side of the spot (centroid
``-4 r / (3 pi)``); in front of it (``r < 0``) it stays on the ``+x`` side. This is the
orientation of :mod:`dplab.optics.psf` (RDPD Sec. 2.2: for a positive CoC the left PSF falls off
towards the right) and of the calibrated Pixel 4 kernels.
"""

from __future__ import annotations

import math

import torch

from dplab._validate import require_number, require_positive

__all__ = ["sample_aperture", "trace_to_sensor", "spot_radius"]


def sample_aperture(
    n: int, *, half: str | None = None, generator: torch.Generator | None = None, dtype=torch.float64
) -> torch.Tensor:
    """``n`` points uniform over the unit disc (the aperture, in units of its radius).

    Args:
        n: number of points.
        half: ``None`` for the full disc, ``"neg"`` for x < 0 only, ``"pos"`` for x > 0 only.
            ``"pos"`` is the half the *left* photodiodes see, ``"neg"`` the right ones' (see
            the module docstring).
        generator: random generator for reproducible samples.

    Returns:
        ``(n, 2)`` tensor of (x, y).

    Example:
        >>> pts = sample_aperture(1000, half="pos", generator=torch.Generator().manual_seed(0))
        >>> bool((pts[:, 0] >= 0).all()), bool((pts.norm(dim=1) <= 1).all())
        (True, True)
    """
    n = require_positive("n", n, integer=True)
    if half not in (None, "neg", "pos"):
        raise ValueError(f"half must be None, 'neg' or 'pos', got {half!r}")
    radius = torch.rand(n, generator=generator, dtype=dtype).sqrt()
    angle = torch.rand(n, generator=generator, dtype=dtype) * 2 * math.pi
    x, y = radius * torch.cos(angle), radius * torch.sin(angle)
    if half == "neg":
        x = -x.abs()
    elif half == "pos":
        x = x.abs()
    return torch.stack([x, y], dim=1)


def _image_distance(depth: float, focal_length: float) -> float:
    if depth <= focal_length:
        raise ValueError(
            f"depth must exceed focal_length for the thin lens to form a real image, got "
            f"depth={depth!r} <= focal_length={focal_length!r}"
        )
    return focal_length * depth / (depth - focal_length)


def trace_to_sensor(
    aperture_points: torch.Tensor,
    depth: float,
    focal_length: float,
    f_number: float,
    focus_distance: float,
    height: float = 0.0,
) -> torch.Tensor:
    """Where rays from a point source through the given aperture points hit the sensor.

    Args:
        aperture_points: ``(N, 2)`` points in units of the aperture radius (|p| <= 1).
        depth: distance of the point source from the lens (same unit as focal_length).
        focal_length: f.
        f_number: N; the aperture diameter is f / N.
        focus_distance: s, the distance the lens is focused at.
        height: lateral offset of the point source along x.

    Returns:
        ``(N, 2)`` sensor positions in the same length unit.

    Raises:
        ValueError: non-positive optics, focus or depth not beyond the focal length.

    Example:
        >>> hits = trace_to_sensor(torch.tensor([[1.0, 0.0]]), 4.0, 0.05, 2.0, 2.0)
        >>> round(float(hits[0, 0]) * 1e6, 1)  # micrometres: the rim ray of a point behind focus
        -160.3
    """
    f = float(require_positive("focal_length", focal_length))
    n = float(require_positive("f_number", f_number))
    s = float(require_positive("focus_distance", focus_distance))
    d = float(require_positive("depth", depth))
    h = float(require_number("height", height))
    if not isinstance(aperture_points, torch.Tensor) or aperture_points.ndim != 2 or aperture_points.shape[1] != 2:
        raise ValueError("aperture_points must be an (N, 2) tensor")
    if s <= f:
        raise ValueError(f"focus_distance must exceed focal_length, got {s!r} <= {f!r}")
    sensor = _image_distance(s, f)
    image = _image_distance(d, f)
    a = aperture_points * (f / n / 2)
    image_point = torch.tensor([-h * image / d, 0.0], dtype=a.dtype)
    return a + (image_point - a) * (sensor / image)


def spot_radius(depth: float, focal_length: float, f_number: float, focus_distance: float) -> float:
    """Signed spot radius from the ray geometry: ``-(q/2) (1 - s'/d')``.

    Positive when the rays have crossed before the sensor (point behind the focal plane), which
    is dplab's sign convention for the CoC. Equals RDPD Eq. 1 (:func:`dplab.optics.thin_lens.coc_radius`).

    Example:
        >>> round(spot_radius(4.0, 0.05, 2.0, 2.0) * 1e6, 1)
        160.3
    """
    f = float(require_positive("focal_length", focal_length))
    s = float(require_positive("focus_distance", focus_distance))
    if s <= f:
        raise ValueError(f"focus_distance must exceed focal_length, got {s!r} <= {f!r}")
    q = f / float(require_positive("f_number", f_number))
    return -(q / 2) * (1 - _image_distance(s, f) / _image_distance(float(require_positive("depth", depth)), f))
