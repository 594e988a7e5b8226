"""Calibrating the radial distortion from a photographed grid (RDPD supplement S3, Eq. S6).

A grid of squares (Fig. S3-A, :func:`dplab.optics.calibration.square_grid_target`)
photographed in focus gives the coefficients of the division model (Eq. S5,
:mod:`dplab.optics.distortion`) by a brute-force search maximising the cross-correlation
between the capture and the distorted synthetic pattern, Eq. S6 (:func:`fit_distortion`; the
supplement writes ``argmin X``, a typo for ``argmax``).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Sequence

import torch
from tqdm.auto import tqdm

from dplab._validate import require_image, require_positive
from dplab.optics.calibration import candidate_values
from dplab.optics.distortion import distort, distortion_center, fold_radius, image_radius
from dplab.optics.kernels import xcorr

__all__ = ["DistortionFit", "fit_distortion"]


#: Candidates above which :func:`fit_distortion` shows a progress bar.
PROGRESS_CANDIDATES = 500


# ----------------------------------------------------------------------------- S3: distortion
@dataclass(frozen=True)
class DistortionFit:
    """Result of :func:`fit_distortion`.

    Attributes:
        coeffs: best ``(c1, c2, c3)`` (division model, R normalised by the half-diagonal,
            see :mod:`dplab.optics.distortion`).
        xcorr: normalised cross-correlation (zero shift) between the observation and the
            pattern distorted with ``coeffs``; 1 for a perfect match.
        evaluated: number of coefficient sets scored (folding sets are skipped).
    """

    coeffs: tuple[float, float, float]
    xcorr: float
    evaluated: int


def _values_list(name: str, values) -> list[float]:
    out = sorted(set(candidate_values(name, values)))
    return out


def _local_values(best: float, values: list[float], width: float, count: int = 5) -> list[float]:
    """``count`` values spanning ``best +- width``; a coefficient given one value stays fixed."""
    if len(values) == 1 or width == 0:
        return [best]
    return [best + width * (2 * i / (count - 1) - 1) for i in range(count)]


def fit_distortion(
    observed: torch.Tensor,
    pattern: torch.Tensor,
    c1_values: Sequence[float],
    c2_values: Sequence[float] = (0.0,),
    c3_values: Sequence[float] = (0.0,),
    *,
    center=None,
    refine: int = 2,
    chunk_size: int = 32,
    progress: bool | None = None,
) -> DistortionFit:
    """Brute-force search of the division-model coefficients, RDPD supplement Eq. S6.

    Finds ``argmax_{c1, c2, c3} X(I_f, I_d(c1, c2, c3))``: ``I_d`` is the synthetic
    ``pattern`` (e.g. :func:`dplab.optics.calibration.square_grid_target`) warped by
    :func:`dplab.optics.distortion.distort` and ``I_f`` the ``observed`` capture, already
    re-centred (the paper re-centres by hand). ``X`` is the normalised cross-correlation at
    zero shift (:func:`dplab.optics.kernels.xcorr` with ``shift=False``) over all pixels and
    channels: maximising over shifts would let a periodic pattern match one period off.
    (Eq. S6 is printed as ``argmin``, a typo.)

    Coarse-to-fine: every combination of the given values is scored (folding ones skipped);
    then ``refine`` times a 5 x 5 x 5 grid spanning +- one grid step (the largest gap
    between the given values of each coefficient, halved each round) is centred on the best
    set. A coefficient given a single value stays fixed. The best set found is kept, so
    refinement never lowers the score. Candidates are warped ``chunk_size`` at a time.

    Args:
        observed: the captured pattern ``I_f``.
        pattern: the undistorted synthetic pattern, same shape.
        c1_values: candidate ``c1`` values (coarse grid).
        c2_values: candidate ``c2`` values.
        c3_values: candidate ``c3`` values.
        center: distortion centre ``(x_o, y_o)`` in pixels; default the image centre.
        refine: number of refinement rounds (>= 0).
        chunk_size: candidates warped at once.
        progress: show a tqdm progress bar over the candidates; None (default): when the
            search warps more than :data:`PROGRESS_CANDIDATES` candidates (the coarse grid plus
            ``refine`` rounds of up to 125). ``TQDM_DISABLE=1`` in the environment silences it.

    Returns:
        A :class:`DistortionFit`.

    Shape:
        observed, pattern: ``(1, C, H, W)``.

    Raises:
        TypeError: non-tensor images, non-numeric values.
        ValueError: shape mismatch, batch size other than 1, NaN, constant images, empty
            value lists, or no candidate that leaves the image unfolded.

    Example:
        >>> from dplab.optics.calibration import square_grid_target
        >>> pattern, _ = square_grid_target(48, 64, 12)
        >>> from dplab.optics.distortion import distort
        >>> observed = distort(pattern, (0.04, 0.0, 0.0))
        >>> fit = fit_distortion(observed, pattern, [-0.04, 0.0, 0.04], refine=0)
        >>> fit.coeffs, round(fit.xcorr, 4)
        ((0.04, 0.0, 0.0), 1.0)
    """
    observed = require_image("observed", observed)
    pattern = require_image("pattern", pattern)
    if observed.shape != pattern.shape:
        raise ValueError(f"observed {tuple(observed.shape)} and pattern {tuple(pattern.shape)} differ in shape")
    if observed.shape[0] != 1:
        raise ValueError(f"observed and pattern must hold one image (1, C, H, W), got {tuple(observed.shape)}")
    if pattern.device != observed.device:
        raise ValueError(f"pattern is on {pattern.device} but observed is on {observed.device}")
    grids = [_values_list(n, v) for n, v in (("c1_values", c1_values), ("c2_values", c2_values), ("c3_values", c3_values))]
    refine = require_positive("refine", refine, integer=True, allow_zero=True)
    chunk_size = require_positive("chunk_size", chunk_size, integer=True)
    _, c, h, w = pattern.shape
    ctr = distortion_center(center, h, w)
    r_img = image_radius(h, w, ctr)
    obs_flat = observed.reshape(1, c * h, w)
    for name, img in (("observed", observed), ("pattern", pattern)):
        if float(img.std()) == 0:
            raise ValueError(f"{name} is constant; its correlation is undefined")

    best = (-math.inf, None)
    n_eval = 0
    seen: set[tuple[float, float, float]] = set()
    n_local = math.prod(1 if len(g) == 1 else 5 for g in grids)
    total = math.prod(len(g) for g in grids) + refine * n_local
    bar = None
    if (total > PROGRESS_CANDIDATES) if progress is None else progress:
        bar = tqdm(total=total, desc="fit_distortion", unit="cand")

    def score(cands):
        nonlocal best, n_eval
        ok = []
        for cand in cands:
            key = tuple(round(v, 15) for v in cand)
            if key in seen:
                continue
            seen.add(key)
            r_u, r_d = fold_radius(cand)
            if r_u > r_img and r_d > r_img:
                ok.append(cand)
        for start in range(0, len(ok), chunk_size):
            chunk = ok[start:start + chunk_size]
            coeffs = torch.tensor(chunk, dtype=torch.float64)
            warped = distort(pattern.expand(len(chunk), c, h, w), coeffs, center=ctr)
            x = xcorr(obs_flat, warped.reshape(len(chunk), c * h, w), shift=False)
            n_eval += len(chunk)
            if bar is not None:
                bar.update(len(chunk))
            val, idx = x.max(0)
            if float(val) > best[0]:
                best = (float(val), tuple(chunk[int(idx)]))

    score(list(itertools.product(*grids)))
    if best[1] is None:
        raise ValueError("every (c1, c2, c3) candidate folds the image; choose values of smaller magnitude")
    widths = [max((b - a for a, b in zip(g, g[1:])), default=0.0) for g in grids]
    for _ in range(refine):
        local = [_local_values(best[1][i], grids[i], widths[i]) for i in range(3)]
        score(list(itertools.product(*local)))
        widths = [wd / 2 for wd in widths]
    if bar is not None:
        bar.close()
    return DistortionFit(tuple(float(v) for v in best[1]), best[0], n_eval)
