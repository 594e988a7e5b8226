"""Fitting dual-pixel PSF models to estimated kernels (RDPD supplement S2, Eqs. S2-S3).

The Butterworth DP model (RDPD main paper Eqs. 2-4, :func:`dplab.optics.psf.butterworth_dp`)
is fitted to an estimated PSF (e.g. from :func:`dplab.optics.calibration.estimate_psf`, Eq.
S1) by brute force over the grid of Eq. S2 (``n in 1..15``, ``alpha, beta in 0.1..1.0``,
``kappa in {0.14, 0.21, ..., 0.42}``) minimising Eq. S3,
``sum_i || D_i (E - H(n, alpha, beta, kappa)) ||^2`` with the five derivative filters of
:func:`dplab.optics.calibration.derivative_filters` (:func:`fit_butterworth`);
:func:`fit_punnappurath` does the same for the model of Punnappurath et al., ICCP 2020
(:func:`dplab.optics.psf.punnappurath_dp`). Comparing the two fits' cross-correlations
reproduces RDPD Fig. 5 / Fig. S2.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from tqdm.auto import tqdm

from dplab._validate import require_kernel, require_number, require_positive
from dplab.optics.calibration import apply_derivative_filters, candidate_values
from dplab.optics.kernels import xcorr
from dplab.optics.psf import butterworth_dp, psf_bank, punnappurath_dp

__all__ = [
    "S2_ORDERS",
    "S2_ALPHAS",
    "S2_BETAS",
    "S2_KAPPAS",
    "PSFFit",
    "fit_butterworth",
    "fit_punnappurath",
]

#: The parameter grid of RDPD supplement Eq. S2.
S2_ORDERS: tuple[int, ...] = tuple(range(1, 16))
S2_ALPHAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(1, 11))
S2_BETAS: tuple[float, ...] = S2_ALPHAS
S2_KAPPAS: tuple[float, ...] = (0.14, 0.21, 0.28, 0.35, 0.42)


# ----------------------------------------------------------------------------- S2: model fitting
@dataclass(frozen=True)
class PSFFit:
    """Result of :func:`fit_butterworth` / :func:`fit_punnappurath`.

    Attributes:
        model: ``"butterworth"`` or ``"punnappurath"``.
        params: best parameters: ``radius_px`` (signed; negative swaps the views, as in
            :mod:`dplab.optics.psf`) and, for the Butterworth model, ``order``, ``alpha``, ``beta``,
            ``kappa``.
        objective: Eq. S3 at the optimum, summed over the fitted views (kernels normalised
            as described in the fitting function).
        xcorr: :func:`dplab.optics.kernels.xcorr` between the (normalised) estimate and the
            best model, averaged over the fitted views (1 for a perfect fit).
        left: best model left kernel, ``(K, K)``.
        right: best model right kernel, ``(K, K)``.
        evaluated: number of (parameter, radius, sign) candidates scored.
    """

    model: str
    params: dict
    objective: float
    xcorr: float
    left: torch.Tensor = field(repr=False)
    right: torch.Tensor = field(repr=False)
    evaluated: int = 0


def _fit_kernels(kernel_left, kernel_right, normalize: bool) -> torch.Tensor:
    """Check the kernels; return a float64 stack (V, K, K), V = 1 or 2."""
    views = [("kernel_left", kernel_left)] + ([("kernel_right", kernel_right)] if kernel_right is not None else [])
    out = []
    for name, k in views:
        k = require_kernel(name, k)
        if k.ndim != 2 or k.shape[0] != k.shape[1] or k.shape[0] % 2 == 0:
            raise ValueError(f"{name} must be a square kernel of odd size (K, K), got {tuple(k.shape)}")
        out.append(k.detach().to(torch.float64))
    if len(out) == 2 and out[0].shape != out[1].shape:
        raise ValueError(f"kernel_left {tuple(out[0].shape)} and kernel_right {tuple(out[1].shape)} differ in shape")
    if len(out) == 2 and out[0].device != out[1].device:
        raise ValueError("kernel_left and kernel_right are on different devices")
    e = torch.stack(out)
    total = float(e.sum())
    if total <= 0:
        raise ValueError("kernel_left (and kernel_right) sum to 0; nothing to fit")
    if normalize:  # each view of the model sums to 1/2: scale the estimate alike, views together
        e = e * (0.5 * e.shape[0] / total)
    return e


def _candidate_radii(radius_px, radii, size: int, device) -> tuple[torch.Tensor, bool]:
    """Radii to search (magnitudes, float64) and whether the sign is searched too."""
    if radius_px is not None:
        r = float(require_number("radius_px", radius_px))
        if r == 0:
            raise ValueError("radius_px must be non-zero (its sign picks the orientation: r > 0, behind "
                             "the focal plane, puts the left view's mass on the -x side)")
        return torch.tensor([r], dtype=torch.float64, device=device), False
    if radii is None:
        radii = torch.arange(1.0, size // 2 + 1e-9, 0.5, dtype=torch.float64)
    r = torch.as_tensor(radii, dtype=torch.float64).reshape(-1).to(device)
    if r.numel() == 0 or not bool(torch.isfinite(r).all()) or bool((r <= 0).any()):
        raise ValueError(f"radii must be a non-empty sequence of positive finite radii, got {radii!r}")
    return r, True


#: Candidates (parameter sets x radii) above which :func:`fit_butterworth` shows a progress bar.
PROGRESS_CANDIDATES = 10_000


def _score(e_d: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """Eq. S3 for model left views ``h`` (P, N, K, K) -> (2, P, N): [as given, mirrored].

    ``e_d``: derivatives of the estimate, (V, 5, K+2, K+2). Mirrored = the views swapped
    (negative radius): left model ``h.flip(-1)``, right model ``h``.
    """
    p, n, k, _ = h.shape
    flat = h.reshape(p * n, k, k)
    d_h = apply_derivative_filters(flat, full=True).reshape(p, n, 5, k + 2, k + 2)
    d_f = apply_derivative_filters(flat.flip(-1), full=True).reshape(p, n, 5, k + 2, k + 2)

    def sq(a, b):
        return (a - b).square().sum(dim=(-3, -2, -1))

    pos = sq(d_h, e_d[0])
    neg = sq(d_f, e_d[0])
    if e_d.shape[0] == 2:
        pos = pos + sq(d_f, e_d[1])
        neg = neg + sq(d_h, e_d[1])
    return torch.stack((pos, neg))


def _grid_search(e, make, radii, params, signed, chunk_size, per_radius=False, bar=None):
    """Best (objective, param index, radius index, mirrored) over params x radii x signs.

    ``per_radius``: make the candidates one radius at a time (the Butterworth generator sizes
    its working grid by the largest radius of a call). ``bar``: a tqdm bar counting parameter
    sets x radii.
    """
    e_d = apply_derivative_filters(e, full=True)
    best = (math.inf, 0, 0, False)
    n_eval = 0
    groups = [(j, radii[j:j + 1]) for j in range(radii.numel())] if per_radius else [(0, radii)]
    for r0, group in groups:
        for start in range(0, len(params), chunk_size):
            chunk = params[start:start + chunk_size]
            scores = _score(e_d, make(group, chunk))  # (2, P, N)
            if not signed:
                scores = scores[:1]
            n_eval += scores.numel()
            val, idx = scores.reshape(-1).min(0)
            if float(val) < best[0]:
                s, rest = divmod(int(idx), scores.shape[1] * scores.shape[2])
                p, r = divmod(rest, scores.shape[2])
                best = (float(val), start + p, r0 + r, bool(s))
            if bar is not None:
                bar.update(len(chunk) * group.numel())
    return best, n_eval


def _finish_fit(model, e, params_dict, objective, left, right, n_eval, dtype) -> PSFFit:
    scores = [float(xcorr(e[0], left))]
    if e.shape[0] == 2:
        scores.append(float(xcorr(e[1], right)))
    return PSFFit(model, params_dict, objective, sum(scores) / len(scores), left.to(dtype), right.to(dtype), n_eval)


def fit_butterworth(
    kernel_left: torch.Tensor,
    kernel_right: torch.Tensor | None = None,
    radius_px: float | None = None,
    orders: Sequence[float] = S2_ORDERS,
    alphas: Sequence[float] = S2_ALPHAS,
    betas: Sequence[float] = S2_BETAS,
    kappas: Sequence[float] = S2_KAPPAS,
    *,
    radii: Sequence[float] | None = None,
    normalize: bool = True,
    chunk_size: int = 1000,
    progress: bool | None = None,
) -> PSFFit:
    """Brute-force fit of the Butterworth DP PSF (RDPD supplement S2, Eqs. S2-S3).

    Minimises ``sum_i || D_i (E - H(n, alpha, beta, kappa)) ||^2`` (Eq. S3, the five
    derivative filters of :func:`dplab.optics.calibration.derivative_filters`, full support)
    over every combination of ``orders x alphas x betas x kappas`` (default: the grid of
    Eq. S2, 7,500 candidates).
    ``H`` is :func:`dplab.optics.psf.butterworth_dp` at the estimate's size; with ``kernel_right``
    both views are fitted with one parameter set (right = mirrored left). Candidates are made
    in chunks of ``chunk_size`` parameter sets by :func:`dplab.optics.psf.psf_bank` (vectorised) and
    scored with one batched convolution; the mirrored pair (negative radius) is scored too
    when the radius is searched.

    Radius: with ``radius_px`` given it is used as is (its sign picks the orientation: for
    ``r > 0``, behind the focal plane, the left view's mass lies on the ``-x`` side, RDPD
    Sec. 2.2; the calibrated Pixel 4 kernels of Xin et al. fit with ``r > 0``).
    Otherwise the magnitudes ``radii`` (default ``1, 1.5, ..., size // 2``) and both signs are
    searched in two stages: all radii on a sub-grid (every 3rd order, alpha and beta, every
    2nd kappa: 240 sets for Eq. S2), then the full grid on the best radius and its two
    neighbours. Runtime on a 2-core CPU for a 17x17 pair: about 0.5 s for the full grid at a
    given radius, about 2.5 s with the radius searched (15 radii, 26,100 parameter sets).

    Args:
        kernel_left: estimated left PSF ``E`` (e.g. from
            :func:`dplab.optics.calibration.estimate_psf`), odd square.
        kernel_right: estimated right PSF, same shape, or None to fit the left view alone.
        radius_px: signed CoC radius in pixels, or None to search ``radii``.
        orders: Butterworth orders ``n`` to try.
        alphas: cut-off factors to try.
        betas: lower bounds to try.
        kappas: smoothing factors to try.
        radii: radius magnitudes to search when ``radius_px`` is None.
        normalize: rescale the estimate so that each view sums to 1/2 on average (the model's
            normalisation; the views keep their relative brightness).
        chunk_size: parameter sets generated at once (memory vs. speed).
        progress: show a tqdm progress bar over the candidates; None (default): when more than
            :data:`PROGRESS_CANDIDATES` (parameter sets x radii) are scored, e.g. with the
            radius searched. ``TQDM_DISABLE=1`` in the environment silences it.

    Returns:
        A :class:`PSFFit` with ``params = {"radius_px", "order", "alpha", "beta", "kappa"}``.

    Shape:
        kernel_left, kernel_right: ``(K, K)``; fitted kernels ``(K, K)``.

    Raises:
        TypeError: non-tensor kernels, non-numeric parameters.
        ValueError: non-square, even-sized, negative or NaN kernels; mismatched shapes;
            ``radius_px == 0``; empty or out-of-range parameter lists.

    Example:
        >>> from dplab.optics.psf import butterworth_dp
        >>> left, right = butterworth_dp(4.0, order=6, alpha=0.6, beta=0.3, kappa=0.14, size=13)
        >>> fit = fit_butterworth(left, right, radius_px=4.0, orders=(3, 6, 9), kappas=(0.14,))
        >>> [fit.params[k] for k in ("order", "alpha", "beta")], round(fit.xcorr, 4)
        ([6, 0.6, 0.3], 1.0)
    """
    out_dtype = kernel_left.dtype if isinstance(kernel_left, torch.Tensor) else torch.float32
    e = _fit_kernels(kernel_left, kernel_right, normalize)
    size = e.shape[-1]
    grid = [candidate_values(n, v)
            for n, v in (("orders", orders), ("alphas", alphas), ("betas", betas), ("kappas", kappas))]
    params = list(itertools.product(*grid))
    chunk_size = require_positive("chunk_size", chunk_size, integer=True)
    r_all, signed = _candidate_radii(radius_px, radii, size, e.device)

    def make(r, chunk):
        return psf_bank(r, chunk, size=size, device=e.device, dtype=torch.float64)[0]

    n_eval = 0
    r_cand = r_all
    sub = list(itertools.product(grid[0][::3], grid[1][::3], grid[2][::3], grid[3][::2]))
    total = (len(sub) * r_all.numel() + len(params) * min(3, r_all.numel())) if r_all.numel() > 1 else len(params)
    bar = None
    if (total > PROGRESS_CANDIDATES) if progress is None else progress:
        bar = tqdm(total=total, desc="fit_butterworth", unit="set")
    if r_all.numel() > 1:
        (_, _, ri, _), n_eval = _grid_search(e, make, r_all, sub, signed, chunk_size, True, bar)
        r_cand = r_all[max(0, ri - 1):ri + 2]
    (obj, pi, ri, mirrored), n2 = _grid_search(e, make, r_cand, params, signed, chunk_size, True, bar)
    if bar is not None:
        bar.close()
    n, a, b, k = params[pi]
    r = float(r_cand[ri]) * (-1.0 if mirrored else 1.0)
    left, right = butterworth_dp(r, n, a, b, k, size=size, device=e.device, dtype=torch.float64)
    order = int(n) if float(n).is_integer() else n
    params_dict = {"radius_px": r, "order": order, "alpha": a, "beta": b, "kappa": k}
    return _finish_fit("butterworth", e, params_dict, obj, left, right, n_eval + n2, out_dtype)


def fit_punnappurath(
    kernel_left: torch.Tensor,
    kernel_right: torch.Tensor | None = None,
    radius_px: float | None = None,
    *,
    radii: Sequence[float] | None = None,
    normalize: bool = True,
) -> PSFFit:
    """Fit the DP PSF of Punnappurath et al. (ICCP 2020) by the same Eq. S3 search.

    That model (:func:`dplab.optics.psf.punnappurath_dp`) has a single parameter, the signed
    radius (RDPD Sec. 2.2, Fig. 5 middle column), so the search runs over ``radii`` (default
    ``0.5, 0.55, ..., size // 2``) and both signs, all candidates in one batch. With
    ``radius_px`` given there is nothing to search and the result just scores that radius.
    Comparing ``fit_punnappurath(E).xcorr`` with ``fit_butterworth(E).xcorr`` reproduces the
    comparison of RDPD Fig. 5 / Fig. S2.

    Args:
        kernel_left: estimated left PSF, odd square.
        kernel_right: estimated right PSF or None.
        radius_px: signed radius in pixels, or None to search.
        radii: radius magnitudes to search.
        normalize: rescale the estimate as in :func:`fit_butterworth`.

    Returns:
        A :class:`PSFFit` with ``params = {"radius_px"}``.

    Shape:
        kernel_left, kernel_right: ``(K, K)``.

    Raises:
        TypeError: non-tensor kernels.
        ValueError: bad kernels (see :func:`fit_butterworth`), ``radius_px == 0``, bad radii.

    Example:
        >>> from dplab.optics.psf import punnappurath_dp
        >>> left, right = punnappurath_dp(-3.5, size=11)
        >>> fit = fit_punnappurath(left, right)
        >>> fit.params["radius_px"], round(fit.xcorr, 4)
        (-3.5, 1.0)
    """
    out_dtype = kernel_left.dtype if isinstance(kernel_left, torch.Tensor) else torch.float32
    e = _fit_kernels(kernel_left, kernel_right, normalize)
    size = e.shape[-1]
    if radii is None and radius_px is None:
        radii = torch.arange(10, 20 * (size // 2) + 1, dtype=torch.float64) / 20.0
    r_all, signed = _candidate_radii(radius_px, radii, size, e.device)

    def make(r, chunk):
        return punnappurath_dp(r, size=size, device=e.device, dtype=torch.float64)[0][None]

    (obj, _, ri, mirrored), n_eval = _grid_search(e, make, r_all, [()], signed, 1)
    r = float(r_all[ri]) * (-1.0 if mirrored else 1.0)
    left, right = punnappurath_dp(r, size=size, device=e.device, dtype=torch.float64)
    return _finish_fit("punnappurath", e, {"radius_px": r}, obj, left, right, n_eval, out_dtype)
