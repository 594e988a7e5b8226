"""Tests for dplab.optics.psf and dplab.optics.kernels: closed forms (areas, Butterworth values, ramp),
symmetries, second methods."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from dplab.optics.kernels import disk, gaussian, rescale_kernel, xcorr
from dplab.optics.psf import (
    PSF_BANK_PARAMS, RDPD_CODE_BANK_PARAMS, butterworth_dp, butterworth_filter, butterworth_profile,
    psf_bank, punnappurath_dp, ramp_half_width,
)

f64 = dict(dtype=torch.float64)


def _centroid_x(k):
    c = torch.arange(k.shape[-1], dtype=k.dtype) - k.shape[-1] // 2
    return float((k.sum(-2) * c).sum() / k.sum())


def _m2(k):
    c = torch.arange(k.shape[-1], dtype=k.dtype) - k.shape[-1] // 2
    r2 = c[:, None] ** 2 + c[None, :] ** 2
    return float((k * r2).sum() / k.sum())


def _pad_to(k, size):
    p = (size - k.shape[-1]) // 2
    return F.pad(k, (p, p, p, p))


# ------------------------------------------------------------------ disk, gaussian
@pytest.mark.parametrize("r", [2.0, 3.7, 10.0, 25.5])
def test_disk_area_is_pi_r2(r):
    d = disk(r, **f64)
    assert d.shape == (2 * math.ceil(r) + 1,) * 2
    assert float(d.sum()) == pytest.approx(1.0, abs=1e-12)
    area = 1.0 / float(d.max())  # interior pixels are fully covered: value 1/area
    assert area == pytest.approx(math.pi * r * r, rel=2e-3)


def test_disk_symmetry_delta_and_batch():
    d = disk(4.3, **f64)
    for t in (d.flip(-1), d.flip(-2), d.T):
        torch.testing.assert_close(t, d)
    z = disk(0.0)
    assert z.shape == (1, 1) and float(z) == 1.0
    radii = torch.tensor([1.0, 3.0, 5.5])
    batch = disk(radii, **f64)
    assert batch.shape == (3, 13, 13)
    for i, r in enumerate(radii.tolist()):
        torch.testing.assert_close(batch[i], disk(r, size=13, **f64))
    assert disk(2.0).dtype == torch.float32


def test_gaussian_moments():
    g = gaussian(3.0, **f64)
    assert g.shape == (19, 19) and float(g.sum()) == pytest.approx(1.0, abs=1e-12)
    # second moment of a sampled Gaussian truncated at 3 sigma: close to 2 sigma^2
    assert _m2(g) == pytest.approx(2 * 9.0, rel=0.03)
    assert gaussian(0.0).shape == (1, 1)
    assert gaussian(torch.tensor([0.5, 2.0])).shape == (2, 13, 13)


# ------------------------------------------------------------------ Butterworth
def test_butterworth_3db_point():
    assert butterworth_profile(7.0, 7.0, 3) == 0.5
    assert 10 * math.log10(butterworth_profile(7.0, 7.0, 9)) == pytest.approx(-3.0103, abs=1e-4)
    assert butterworth_profile(0.0, 7.0, 3) == 0.0
    # Eq. 2 by hand at D = 2 D0, n = 2: 1 / (1 + (1/2)^4) = 16/17
    assert butterworth_profile(14.0, 7.0, 2) == pytest.approx(16 / 17, rel=1e-12)
    B = butterworth_filter(5.0, 3, 15, **f64)
    assert float(B[7, 12]) == pytest.approx(0.5, abs=1e-12)   # (0, 5) from the centre
    assert float(B[10, 11]) == pytest.approx(0.5, abs=1e-12)  # (3, 4): distance 5
    assert float(B[7, 7]) == 0.0
    d = torch.linspace(0, 20, 50, **f64)
    assert bool((butterworth_profile(d, 5.0, 3).diff() >= 0).all())


def test_butterworth_dp_sums_mirror_and_nonnegative():
    for r in (1.0, 4.0, 12.5, 40.0):
        left, right = butterworth_dp(r, **f64)
        assert float(left.sum()) == pytest.approx(0.5, abs=1e-12)
        assert float(right.sum()) == pytest.approx(0.5, abs=1e-12)
        assert torch.equal(right, left.flip(-1))
        assert bool((left >= 0).all())
        torch.testing.assert_close(left, left.flip(-2))          # up-down symmetric
        comb = left + right
        torch.testing.assert_close(comb, comb.T)                 # combined is isotropic-symmetric


def test_butterworth_dp_sign_swap_and_orientation():
    lp, rp = butterworth_dp(6.0, **f64)
    ln, rn = butterworth_dp(-6.0, **f64)
    torch.testing.assert_close(ln, rp)
    torch.testing.assert_close(rn, lp)
    # r > 0 (behind the focal plane): the left view is weighted to -x (RDPD Sec. 2.2)
    assert _centroid_x(lp) < 0 < _centroid_x(rp)
    assert _centroid_x(ln) > 0 > _centroid_x(rn)


def test_butterworth_dp_zero_radius_is_half_delta():
    left, right = butterworth_dp(0.0)
    assert left.shape == (1, 1) and float(left) == 0.5 and float(right) == 0.5
    left, right = butterworth_dp(torch.tensor([0.0, 2.0]), **f64)
    k = left.shape[-1]
    assert float(left[0, k // 2, k // 2]) == 0.5 and float(left[0].sum()) == 0.5


def test_butterworth_rescale_and_disc_closed_form():
    """kappa = 0: combined = H / sum(H) with H = (beta + (1-beta) B / B(sqrt2 R)) on the disc."""
    R, n, alpha, beta = 10.0, 3, 0.6, 0.2
    left, right = butterworth_dp(R, order=n, alpha=alpha, beta=beta, kappa=0.0, **f64)
    comb = left + right
    c = comb.shape[-1] // 2
    d0 = 2 * R * alpha

    def hs(dist):
        bmax = 1 / (1 + (d0 / (math.sqrt(2) * R)) ** (2 * n))
        b = 0.0 if dist == 0 else 1 / (1 + (d0 / dist) ** (2 * n))
        return beta + (1 - beta) * b / bmax

    for x in (0, 3, 6, 8):
        assert float(comb[c, c + x] / comb[c, c + 5]) == pytest.approx(hs(x) / hs(5), rel=1e-9)
    assert float(comb[c, c] / comb[c, c + 5]) == pytest.approx(beta / hs(5), rel=1e-9)


def _code_half_width(R):
    """The authors' ramp half-width, by hand from generate_bw_kernel.py: kernel k = 2R + 1,
    Gaussian window g = round(k / 7) + 1 made odd, padding g // 2 on each side."""
    k = int(2 * R + 1)
    g = round(k / 7) + 1
    g += g % 2 == 0
    return R + g // 2


def test_ramp_half_width_is_the_authors():
    assert [_code_half_width(R) for R in (3, 8, 10, 20, 40)] == [4, 9, 12, 23, 46]
    assert [ramp_half_width(R) for R in (3, 8, 10, 20, 40)] == [4, 9, 12, 23, 46]
    assert ramp_half_width(torch.tensor([3.0, 8.0])).tolist() == [4.0, 9.0]
    with pytest.raises(ValueError, match="radius_px"):
        ramp_half_width(float("nan"))
    with pytest.raises(TypeError, match="radius_px"):
        ramp_half_width("8")


def test_butterworth_ramp_mask_is_linear_in_x():
    """left / (left + right) = M(x) = 1/2 - x / (2 w), w = R + p of the authors' code (Eq. 4; kappa = 0)."""
    R = 10.0
    w = _code_half_width(R)
    left, right = butterworth_dp(R, kappa=0.0, **f64)
    c = left.shape[-1] // 2
    for x in (-9, -7, -5, 0, 2, 5, 9):
        ratio = float(left[c + 1, c + x] / (left + right)[c + 1, c + x])
        assert ratio == pytest.approx(0.5 - x / (2 * w), abs=1e-12)


@pytest.mark.parametrize("R", [3.0, 8.0, 20.0, 40.0])
def test_butterworth_ramp_ends_at_the_authors_half_width(R):
    """With smoothing the PSF reaches beyond w = R + p: there M is 0 (x >= w) or 1 (x <= -w)."""
    left, right = butterworth_dp(R, kappa=1 / 7, **f64)
    comb = left + right
    c = left.shape[-1] // 2
    x = torch.arange(left.shape[-1], **f64) - c
    w = _code_half_width(R)
    beyond, before = x >= w, x <= -w
    assert bool(beyond.any()) and float(comb[:, beyond].sum()) > 0   # the support passes w
    assert float(left[:, beyond].abs().max()) == 0.0
    torch.testing.assert_close(left[:, before], comb[:, before], rtol=1e-12, atol=1e-15)
    inside = (x > -w) & (x < w)
    ratio = left[:, inside] / comb[:, inside]
    keep = comb[:, inside] > 1e-9
    torch.testing.assert_close(ratio[keep], (0.5 - x[inside] / (2 * w)).expand_as(ratio)[keep],
                               rtol=1e-9, atol=1e-12)


def _numpy_left_view(R, order, alpha, beta, kappa, supersample=16):
    """Independent numpy construction of the left view (RDPD Eqs. 2-4, as the authors' generator
    builds them): Butterworth with D0 = 2 R alpha rescaled to [beta, 1] over [-R, R]^2, times a
    disc (brute-force supersampled coverage), convolved with a separable Gaussian of sigma
    kappa R (truncated at 3 sigma), times the ramp 1/2 - x / (2 w), w = R + p of the code, clipped to
    [0, 1]; normalised to 1/2."""
    import numpy as np

    k = 2 * math.ceil(R) + 1 + 2 * math.ceil(3 * kappa * R)
    c = np.arange(k) - k // 2
    sub = (np.arange(k * supersample) + 0.5) / supersample - 0.5 - k // 2
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= R * R
    cov = inside.reshape(k, supersample, k, supersample).mean(axis=(1, 3))
    dist = np.hypot(c[:, None], c[None, :])
    d0 = 2 * R * alpha
    with np.errstate(divide="ignore"):
        b = 1.0 / (1.0 + (d0 / dist) ** (2 * order))
    b_corner = 1.0 / (1.0 + (d0 / (math.sqrt(2) * R)) ** (2 * order))
    h = np.minimum(beta + (1 - beta) * b / b_corner, 1.0) * cov
    sigma = kappa * R
    half = math.ceil(3 * sigma)
    t = np.arange(-half, half + 1)
    g = np.exp(-t ** 2 / (2 * sigma ** 2))
    g /= g.sum()
    h = np.pad(h, half)
    h = np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 0, h)
    h = np.apply_along_axis(lambda v: np.convolve(v, g, "valid"), 1, h)
    w = _code_half_width(R)
    left = h * np.clip(0.5 - c / (2 * w), 0.0, 1.0)[None, :]
    return 0.5 * left / left.sum()


@pytest.mark.parametrize("R", [3.0, 8.0, 20.0, 40.0])
def test_butterworth_left_centroid_matches_numpy_construction(R):
    import numpy as np

    ref = _numpy_left_view(R, 3, 0.6, 0.2, 1 / 7)
    left, _ = butterworth_dp(R, order=3, alpha=0.6, beta=0.2, kappa=1 / 7, **f64)
    assert left.shape == ref.shape
    x = np.arange(ref.shape[-1]) - ref.shape[-1] // 2
    ref_cx = float((ref.sum(0) * x).sum() / ref.sum())
    assert ref_cx < -0.25 * R                        # behind focus: the left view sits on -x
    assert _centroid_x(left) == pytest.approx(ref_cx, rel=0.02)
    assert float((left - torch.from_numpy(ref)).abs().max()) < 0.01 * float(left.max())


def test_butterworth_smoothing_is_gaussian_of_kappa_r():
    R, kappa = 8.0, 0.14
    sharp_l, sharp_r = butterworth_dp(R, kappa=0.0, **f64)
    smooth_l, smooth_r = butterworth_dp(R, kappa=kappa, **f64)
    K = smooth_l.shape[-1]
    sharp = _pad_to(sharp_l + sharp_r, K)
    g = gaussian(kappa * R, **f64)
    ref = F.conv2d(sharp[None, None], g[None, None], padding=g.shape[-1] // 2)[0, 0]
    torch.testing.assert_close(smooth_l + smooth_r, ref / ref.sum(), rtol=1e-9, atol=1e-12)


def test_butterworth_batch_equals_single():
    radii = torch.tensor([-3.0, 0.0, 2.5, 9.0])
    left, right = butterworth_dp(radii, order=6, alpha=0.8, beta=0.3, **f64)
    K = left.shape[-1]
    assert left.shape == (4, K, K) and K == 2 * 9 + 1 + 2 * math.ceil(3 * 0.14 * 9)
    for i, r in enumerate(radii.tolist()):
        l1, r1 = butterworth_dp(r, order=6, alpha=0.8, beta=0.3, **f64)
        torch.testing.assert_close(left[i], _pad_to(l1, K), rtol=1e-9, atol=1e-13)
        torch.testing.assert_close(right[i], _pad_to(r1, K), rtol=1e-9, atol=1e-13)


def test_butterworth_explicit_size_crops_and_renormalises():
    left, _ = butterworth_dp(10.0, size=15, **f64)
    assert left.shape == (15, 15) and float(left.sum()) == pytest.approx(0.5)
    big, _ = butterworth_dp(3.0, size=31, **f64)
    torch.testing.assert_close(big, _pad_to(butterworth_dp(3.0, **f64)[0], 31))


def test_psf_bank_48_distinct_entries():
    left, right, params = psf_bank(7.0, **f64)
    assert left.shape[0] == right.shape[0] == len(params) == 48
    eq_s4 = itertools.product((3, 6, 9), (0.4, 0.6, 0.8, 1.0), (0.1, 0.2, 0.3, 0.4), (0.14,))
    assert set(params) == set(eq_s4)
    torch.testing.assert_close(left.sum((-2, -1)), torch.full((48,), 0.5, **f64))
    flat = left.reshape(48, -1)
    dist = torch.cdist(flat, flat, p=1) + torch.eye(48, **f64)
    assert float(dist.min()) > 1e-6      # distinct; the closest pair is (9, 0.8, b) vs (9, 1.0, b)
    assert float(torch.median(dist)) > 1e-2
    for i in (0, 17, 47):
        torch.testing.assert_close(left[i], butterworth_dp(7.0, *params[i], **f64)[0])
    assert len(RDPD_CODE_BANK_PARAMS) == 12 and len(PSF_BANK_PARAMS) == 48
    lb, _, _ = psf_bank(torch.tensor([2.0, -5.0]), params=RDPD_CODE_BANK_PARAMS)
    assert lb.shape[:2] == (12, 2)


# ------------------------------------------------------------------ Punnappurath et al.
def test_punnappurath_sums_mirror_sign():
    left, right = punnappurath_dp(6.0, **f64)
    assert float(left.sum()) == pytest.approx(0.5) and torch.equal(right, left.flip(-1))
    ln, rn = punnappurath_dp(-6.0, **f64)
    torch.testing.assert_close(ln, right)
    assert _centroid_x(left) < 0 < _centroid_x(right)   # r > 0: left view on -x, as Butterworth
    l0, r0 = punnappurath_dp(0.0)
    assert float(l0) == 0.5 == float(r0)


def test_punnappurath_equals_sum_of_translated_disc_products():
    """Second method: the authors' definition, sum_i C . shift_x(C, -i) for i = 0..2R+1 (their
    ``ker_disk`` with a negative parameter: copies translated towards -x)."""
    R = 5.0
    left, _ = punnappurath_dp(R, **f64)
    cov = disk(R, **f64)
    cov = cov / cov.max()                       # coverage fraction, 1 inside
    acc = torch.zeros_like(cov)
    for i in range(int(2 * R) + 2):
        shifted = torch.zeros_like(cov)
        shifted[:, : cov.shape[-1] - i] = cov[:, i:] if i else cov
        acc += cov * shifted
    torch.testing.assert_close(left, acc / (2 * acc.sum()), rtol=1e-6, atol=1e-9)


def test_punnappurath_rows_ramp_linearly():
    left, _ = punnappurath_dp(12.0, **f64)
    c = left.shape[-1] // 2
    row = left[c, c - 9: c + 10]
    step = row.diff()
    torch.testing.assert_close(step, torch.full_like(step, float(step[0])))   # constant slope
    assert float(step[0]) < 0                   # r > 0: the left view grows towards -x


# ------------------------------------------------------------------ rescale
@pytest.mark.parametrize("scale", [0.5, 0.8, 1.5, 2.0])
def test_rescale_preserves_sum_and_scales_second_moment(scale):
    base = butterworth_dp(8.0, **f64)[0]
    out = rescale_kernel(base, scale, size=61)
    assert float(out.sum()) == pytest.approx(0.5, abs=1e-12)
    assert _m2(out) == pytest.approx(scale ** 2 * _m2(base), rel=0.02)


def test_rescale_strong_shrink_adds_only_the_antialias_blur():
    base = disk(8.0, size=41, **f64)
    s = 0.25
    out = rescale_kernel(base, s)
    # s^2 M2 plus the prefilter: 2 * (0.5 sqrt(1 - s^2))^2 px^2 in output pixels
    assert float(out.sum()) == pytest.approx(1.0)
    assert _m2(out) == pytest.approx(s * s * _m2(base) + 0.5 * (1 - s * s), rel=0.03)


def test_rescale_identity_batch_and_disc_of_scaled_radius():
    k = torch.rand(3, 2, 9, 9, **f64)
    torch.testing.assert_close(rescale_kernel(k, 1.0), k)
    out = rescale_kernel(k, 1.3, size=(11, 13))
    assert out.shape == (3, 2, 11, 13)
    torch.testing.assert_close(out.sum((-2, -1)), k.sum((-2, -1)))
    big = rescale_kernel(disk(4.0, size=21, **f64), 2.0)
    assert float(xcorr(big, disk(8.0, size=21, **f64), shift=False)) > 0.97


# ------------------------------------------------------------------ xcorr
def _brute_xcorr(a, b):
    best = -2.0
    for dy in range(a.shape[0]):
        for dx in range(a.shape[1]):
            bs = torch.roll(b, (-dy, -dx), (0, 1))
            best = max(best, float(torch.corrcoef(torch.stack([a.flatten(), bs.flatten()]))[0, 1]))
    return best


def test_xcorr_matches_brute_force_pearson_over_cyclic_shifts():
    g = torch.Generator().manual_seed(0)
    for _ in range(3):
        a, b = torch.rand(5, 6, generator=g, **f64), torch.rand(5, 6, generator=g, **f64)
        assert float(xcorr(a, b)) == pytest.approx(_brute_xcorr(a, b), abs=1e-12)
        assert float(xcorr(a, b, shift=False)) == pytest.approx(
            float(torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1]), abs=1e-12)


def test_xcorr_identical_shifted_scaled():
    k = punnappurath_dp(6.0, **f64)[0]
    assert float(xcorr(k, k)) == pytest.approx(1.0, abs=1e-12)
    moved = torch.roll(k, (1, -2), (-2, -1))
    assert float(xcorr(k, moved)) == pytest.approx(1.0, abs=1e-12)
    assert float(xcorr(k, moved, shift=False)) < 0.99
    assert float(xcorr(k, 3 * k + 2)) == pytest.approx(1.0, abs=1e-12)
    assert float(xcorr(k, -k, shift=False)) == pytest.approx(-1.0, abs=1e-12)
    assert float(xcorr(k, F.pad(k, (2, 2, 2, 2)))) == pytest.approx(1.0, abs=1e-12)


def test_xcorr_range_and_batch():
    g = torch.Generator().manual_seed(5)
    a, b = torch.rand(4, 7, 7, generator=g), torch.rand(4, 7, 7, generator=g)
    v = xcorr(a, b)
    assert v.shape == (4,) and bool(((v >= -1) & (v <= 1)).all())
    for i in range(4):
        assert float(v[i]) == pytest.approx(float(xcorr(a[i], b[i])), abs=1e-6)
    bw = butterworth_dp(8.0, **f64)[0]
    pu = punnappurath_dp(8.0, size=bw.shape[-1], **f64)[0]
    assert 0.0 < float(xcorr(bw, pu)) < 1.0


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("call, exc, name", [
    (lambda: disk(float("nan")), ValueError, "radius_px"),
    (lambda: disk(-1.0), ValueError, "radius_px"),
    (lambda: disk("3"), TypeError, "radius_px"),
    (lambda: disk([3.0]), TypeError, "radius_px"),
    (lambda: disk(3.0, size=8), ValueError, "size"),
    (lambda: disk(3.0, dtype=torch.int32), TypeError, "dtype"),
    (lambda: gaussian(-0.5), ValueError, "sigma_px"),
    (lambda: gaussian(torch.tensor([1.0, float("nan")])), ValueError, "sigma_px"),
    (lambda: butterworth_dp(float("nan")), ValueError, "radius_px"),
    (lambda: butterworth_dp("5"), TypeError, "radius_px"),
    (lambda: butterworth_dp([5.0, 6.0]), TypeError, "radius_px"),
    (lambda: butterworth_dp(torch.ones(2, 2)), ValueError, "radius_px"),
    (lambda: butterworth_dp(torch.tensor([1, 2])), TypeError, "radius_px"),
    (lambda: butterworth_dp(5.0, order=0), ValueError, "order"),
    (lambda: butterworth_dp(5.0, alpha=-0.1), ValueError, "alpha"),
    (lambda: butterworth_dp(5.0, beta=1.5), ValueError, "beta"),
    (lambda: butterworth_dp(5.0, kappa=-0.1), ValueError, "kappa"),
    (lambda: butterworth_profile(-1.0, 2.0, 3), ValueError, "distance"),
    (lambda: butterworth_profile(1.0, 0.0, 3), ValueError, "d0"),
    (lambda: psf_bank(5.0, params=[(3, 0.4, 0.1)]), ValueError, "params"),
    (lambda: punnappurath_dp(float("inf")), ValueError, "radius_px"),
    (lambda: rescale_kernel(torch.full((5, 5), float("nan")), 2.0), ValueError, "kernel"),
    (lambda: rescale_kernel(-torch.ones(5, 5), 2.0), ValueError, "kernel"),
    (lambda: rescale_kernel(torch.ones(5, 5), 0.0), ValueError, "scale"),
    (lambda: rescale_kernel([[1.0]], 2.0), TypeError, "kernel"),
    (lambda: xcorr(torch.ones(5, 5), torch.rand(5, 5)), ValueError, "constant"),
    (lambda: xcorr(torch.rand(5, 5), torch.tensor([[float("nan")] * 5] * 5)), ValueError, "b"),
    (lambda: xcorr(torch.rand(5), torch.rand(5, 5)), ValueError, "a"),
    (lambda: xcorr(torch.rand(2, 5, 5), torch.rand(3, 5, 5)), ValueError, "broadcast"),
])
def test_validation(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


@pytest.mark.parametrize("radius", [1e-4, 0.01, 0.03, -0.01])
def test_tiny_radii_give_a_split_delta_not_nan(radius):
    # A disc much smaller than a pixel is a point: each view is half a delta (found by synth).
    left, right = butterworth_dp(radius)
    assert not torch.isnan(left).any() and not torch.isnan(right).any()
    assert left.sum().item() == pytest.approx(0.5) and right.sum().item() == pytest.approx(0.5)
