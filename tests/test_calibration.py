"""Tests for RDPD's calibration: supplement S1 (targets, Eq. S1; dplab.optics.calibration), S2 (Eq. S3;
dplab.optics.psf_fit), S3 (Eq. S6; dplab.optics.distortion_fit)."""

from __future__ import annotations

import math

import pytest
import torch

from dplab.ops.fftconv import fft_conv2d
from dplab.optics.calibration import derivative_filters, disk_grid_target, estimate_psf, square_grid_target
from dplab.optics.distortion import distort, distort_points
from dplab.optics.distortion_fit import fit_distortion
from dplab.optics.kernels import xcorr
from dplab.optics.psf import butterworth_dp, punnappurath_dp
from dplab.optics.psf_fit import S2_ALPHAS, S2_KAPPAS, S2_ORDERS, fit_butterworth, fit_punnappurath


# ----------------------------------------------------------------------------- targets
def test_disk_grid_count_centres_and_area():
    target, centres = disk_grid_target(100, 150, 25, radius_fraction=0.3)
    assert target.shape == (1, 1, 100, 150)
    assert centres.shape == (4 * 6, 2)  # floor(100/25) rows x floor(150/25) columns
    # grid centred in the image: first centre at (149/2 - 2.5*25, 99/2 - 1.5*25) = (12, 12)
    assert centres[0].tolist() == [12.0, 12.0]
    assert centres[-1].tolist() == [137.0, 87.0]
    r = 0.3 * 25
    img = target[0, 0].double()
    for x, y in centres.tolist():
        cell = img[int(y) - 12:int(y) + 13, int(x) - 12:int(x) + 13]
        assert cell.sum().item() == pytest.approx(math.pi * r * r, rel=3e-3)  # 176.71 px^2
        ys, xs = torch.meshgrid(torch.arange(25.0), torch.arange(25.0), indexing="ij")
        cx = (cell * xs.double()).sum() / cell.sum() + int(x) - 12
        assert cx.item() == pytest.approx(x, abs=1e-6)
    assert img.max().item() == 1.0 and img.min().item() == 0.0


def test_disk_grid_foreground_background():
    target, _ = disk_grid_target(40, 40, 20, 0.25, foreground=0.0, background=1.0)
    assert target[0, 0, 0, 0].item() == 1.0  # between disks
    assert target[0, 0, 9, 9].item() == pytest.approx(0.0, abs=1e-12)  # a disk centre at (9.5, 9.5)


def test_square_grid_exact_area():
    target, centres = square_grid_target(45, 61, 15, side_fraction=0.4)
    assert centres.shape == (3 * 4, 2)
    side = 0.4 * 15
    assert target.sum().item() == pytest.approx(12 * side * side, abs=1e-3)  # 12 x 36 px^2
    assert target.max().item() == 1.0


# ----------------------------------------------------------------------------- Eq. S1
def test_derivative_filters_annihilate_constants_and_ramps():
    d = derivative_filters(dtype=torch.float64)
    assert d.sum(dim=(-2, -1)).abs().max().item() == 0.0
    ramp = torch.arange(5.0, dtype=torch.float64)[None, :].expand(5, 5)
    out = torch.nn.functional.conv2d(ramp[None, None], d[:, None])[0, :, 0, 0]
    assert out.tolist() == [1.0, 0.0, 0.0, 0.0, 0.0]  # Dx of x is 1, the rest vanish


def _blurred_target(radius, size, n=192, noise=0.0, seed=0):
    left, right = butterworth_dp(radius, 6, 0.6, 0.3, 0.14, size=size)
    hidden = torch.stack((left, right))
    target, _ = disk_grid_target(n, n, 32, 0.25)
    blurred = fft_conv2d(target, hidden[None])[0]  # (2, n, n)
    if noise:
        blurred = blurred + noise * torch.randn(blurred.shape, generator=torch.Generator().manual_seed(seed))
    return target[0, 0], blurred, hidden


def test_estimate_psf_noise_free_is_exact():
    sharp, blurred, hidden = _blurred_target(6.0, 17, n=128)
    est = estimate_psf(sharp, blurred, size=17, l1_weight=0.0)
    assert est.shape == (2, 17, 17)
    assert (est - hidden).abs().max().item() < 1e-5  # entries are ~1e-3
    assert est.sum(dim=(-2, -1)).tolist() == pytest.approx([0.5, 0.5], abs=1e-4)


def test_estimate_psf_noisy_butterworth():
    sharp, blurred, hidden = _blurred_target(6.0, 17, noise=0.005)
    est = estimate_psf(sharp, blurred, size=17)
    assert bool((est >= 0).all())
    assert xcorr(est, hidden).min().item() > 0.95  # measured 0.97-0.98
    assert est.sum(dim=(-2, -1)).tolist() == pytest.approx([0.5, 0.5], abs=0.025)


def test_estimate_psf_broadcasts_and_l1_lowers_sum():
    sharp, blurred, hidden = _blurred_target(3.0, 9, n=96)
    lo = estimate_psf(sharp[None], blurred[:1], size=9, l1_weight=0.0)
    hi = estimate_psf(sharp, blurred[0], size=9, l1_weight=1e-2)
    assert lo.shape == (1, 9, 9) and hi.shape == (9, 9)
    assert lo.sum().item() == pytest.approx(0.5, abs=1e-4)
    assert hi.sum().item() < 0.49


def test_estimate_psf_errors():
    sharp, blurred, _ = _blurred_target(3.0, 9, n=64)
    with pytest.raises(ValueError, match="size"):
        estimate_psf(sharp, blurred, size=8)
    with pytest.raises(ValueError, match="size|valid"):
        estimate_psf(sharp, blurred, size=61)
    with pytest.raises(ValueError, match="blurred"):
        estimate_psf(sharp, torch.full_like(blurred, float("nan")), size=9)
    with pytest.raises(ValueError, match="same"):
        estimate_psf(sharp, blurred[..., :50], size=9)
    with pytest.raises(ValueError, match="l1_weight"):
        estimate_psf(sharp, blurred, size=9, l1_weight=-1.0)
    with pytest.raises(ValueError, match="edges"):
        estimate_psf(torch.ones(64, 64), blurred, size=9)
    with pytest.raises(TypeError, match="sharp"):
        estimate_psf(sharp.numpy(), blurred, size=9)


# ----------------------------------------------------------------------------- Eq. S2-S3
def test_fit_butterworth_recovers_grid_point():
    left, right = butterworth_dp(6.0, order=6, alpha=0.6, beta=0.3, kappa=0.14, size=17)
    fit = fit_butterworth(left, right, radius_px=6.0)
    assert fit.evaluated == 15 * 10 * 10 * 5  # the whole Eq. S2 grid
    assert (fit.params["order"], fit.params["alpha"], fit.params["beta"], fit.params["kappa"]) == (6, 0.6, 0.3, 0.14)
    assert fit.objective < 1e-10
    assert fit.xcorr == pytest.approx(1.0, abs=1e-9)
    assert (fit.left - left).abs().max().item() < 1e-6


def test_fit_butterworth_searches_radius_and_sign():
    # a pair in front of the focal plane (negative radius): left view's mass on the +x side
    left, right = butterworth_dp(-4.5, order=9, alpha=0.8, beta=0.2, kappa=0.21, size=15)
    fit = fit_butterworth(left, orders=(3, 6, 9, 12), alphas=S2_ALPHAS[::2] + (0.8,), kappas=S2_KAPPAS[:3])
    assert fit.params["radius_px"] == -4.5
    assert (fit.params["order"], fit.params["alpha"], fit.params["beta"], fit.params["kappa"]) == (9, 0.8, 0.2, 0.21)
    assert fit.xcorr == pytest.approx(1.0, abs=1e-9)


def test_fit_punnappurath_radius_and_model_comparison():
    left, right = punnappurath_dp(3.5, size=11)
    fit = fit_punnappurath(left, right)
    assert fit.params == {"radius_px": 3.5}
    assert fit.objective < 1e-12
    # a Butterworth kernel is matched better by its own model than by Punnappurath's (RDPD Fig. 5)
    bl, br = butterworth_dp(5.0, order=3, alpha=0.6, beta=0.2, kappa=0.14, size=15)
    p = fit_punnappurath(bl, br)
    b = fit_butterworth(bl, br, radius_px=5.0, orders=(3,), kappas=(0.14,))
    assert b.xcorr == pytest.approx(1.0, abs=1e-9)
    assert p.xcorr < 0.99


def test_fit_errors():
    k = butterworth_dp(3.0, size=9)[0]
    with pytest.raises(ValueError, match="kernel_left"):
        fit_butterworth(k[:, :8], radius_px=3.0)
    with pytest.raises(ValueError, match="kernel_right"):
        fit_butterworth(k, torch.zeros(7, 7), radius_px=3.0)
    with pytest.raises(ValueError, match="kernel_left"):
        fit_butterworth(-k, radius_px=3.0)
    with pytest.raises(ValueError, match="radius_px"):
        fit_butterworth(k, radius_px=0.0)
    with pytest.raises(ValueError, match="orders"):
        fit_butterworth(k, radius_px=3.0, orders=())
    with pytest.raises(ValueError, match="radii"):
        fit_punnappurath(k, radii=[-1.0, 2.0])
    assert S2_ORDERS == tuple(range(1, 16)) and len(S2_ALPHAS) == 10 and S2_KAPPAS[-1] == 0.42


# ----------------------------------------------------------------------------- Eq. S6
def _max_displacement(a, b, size=(96, 128)):
    ys, xs = torch.meshgrid(torch.arange(size[0], dtype=torch.float64),
                            torch.arange(size[1], dtype=torch.float64), indexing="ij")
    p = torch.stack((xs, ys), -1)
    return (distort_points(p, a, size) - distort_points(p, b, size)).norm(dim=-1).max().item()


GRID = ([-0.04, -0.02, 0.0, 0.02, 0.04], [-0.02, 0.0, 0.02], [-0.02, 0.0, 0.02])


def test_fit_distortion_recovers_grid_coefficients():
    pattern, _ = square_grid_target(96, 128, 16)
    true = (0.02, 0.0, -0.02)
    fit = fit_distortion(distort(pattern, true), pattern, *GRID)
    assert fit.coeffs == pytest.approx(true, abs=1e-12)
    assert fit.xcorr == pytest.approx(1.0, abs=1e-6)


def test_fit_distortion_off_grid_matches_mapping():
    pattern, _ = square_grid_target(96, 128, 16)
    true = (0.013, -0.004, 0.007)  # not on the grid; c1..c3 trade off, the mapping must match
    fit = fit_distortion(distort(pattern, true), pattern, *GRID)
    assert _max_displacement(true, fit.coeffs) < 0.5  # pixels, measured 0.28
    assert fit.xcorr > 0.9999


def test_fit_distortion_errors():
    pattern, _ = square_grid_target(32, 32, 8)
    with pytest.raises(ValueError, match="differ"):
        fit_distortion(pattern[..., :16], pattern, [0.0])
    with pytest.raises(ValueError, match="constant"):
        fit_distortion(torch.zeros_like(pattern), pattern, [0.0])
    with pytest.raises(ValueError, match="c1_values"):
        fit_distortion(pattern, pattern, [])
    with pytest.raises(ValueError, match="fold"):
        fit_distortion(pattern, pattern, [2.0, 3.0])
    with pytest.raises(ValueError, match="spacing_px"):
        disk_grid_target(16, 16, 32)
    with pytest.raises(ValueError, match="radius_fraction"):
        disk_grid_target(64, 64, 16, radius_fraction=0.5)
    with pytest.raises(ValueError, match="height"):
        square_grid_target(0, 64, 16)
