"""Checks for book/dp_psf.ipynb (chapter 2: the Butterworth DP PSF, calibration, distortion).

Each number is compared with a value derived here independently of the notebook: closed forms
(ramp symmetry, Eq. 5 on the radius), a numpy re-implementation of the zero-mean normalised
cross-correlation, the kernels read straight from the ``.npy`` files and centred by numpy code,
and a re-run of the fits on two calibration cells. The real-data checks run when the Pixel 4
release is present under ``$DPLAB_DATA`` (as in CI); otherwise the chapter must say it skipped.
"""

import math

import numpy as np

from harness import pixel4_folder


PIXEL4 = pixel4_folder()
# Always: 2 model-construction figures, parameter sweep, 2 simulated-calibration figures,
# 2 distortion figures. With the Pixel 4 kernels: mosaics, example cell, radius sweep, heat maps.
MIN_FIGURES = 11 if PIXEL4 is not None else 7

HIDDEN = {"radius_px": 6.0, "order": 6, "alpha": 0.6, "beta": 0.3, "kappa": 0.14}
RDPD_SETS = [(2e-2, 2e-2, 3e-2), (8e-3, 2e-3, 2.2e-3), (-4e-3, 9e-4, -9e-4),
             (-7e-3, -3.8e-3, -3.6e-3), (-8e-3, -5e-3, -4.5e-3)]  # supplement Eq. S7


def _xcorr_np(a, b):
    """Zero-mean normalised cross-correlation, maximised over cyclic shifts (numpy, by FFT)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a, b = a - a.mean(), b - b.mean()
    corr = np.fft.irfft2(np.conj(np.fft.rfft2(a)) * np.fft.rfft2(b), s=a.shape)
    return float(corr.max() / (np.linalg.norm(a) * np.linalg.norm(b)))


def _recentre_np(left, right, size):
    """Shift by whole pixels so the centroid of left + right is on the centre pixel; crop."""
    k = left.shape[-1]
    grid = np.arange(k) - k // 2
    both = left + right
    cy = (both.sum(1) * grid).sum() / both.sum()
    cx = (both.sum(0) * grid).sum() / both.sum()
    o = (k - size) // 2

    def cut(t):
        t = np.roll(t, (-int(round(cy)), -int(round(cx))), (0, 1))
        return t[o:o + size, o:o + size]

    return cut(left), cut(right)


def _disc_coverage(radius, size, ss=64):
    """Fraction of each pixel inside a centred disc, by brute-force supersampling."""
    c = size // 2
    sub = (np.arange(size * ss) + 0.5) / ss - 0.5 - c
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius ** 2
    return inside.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _left_view_np(r, n, alpha, beta, kappa):
    """Left view of the Butterworth DP PSF (RDPD Eqs. 2-4) in numpy, on dplab's kernel size."""
    size = 2 * math.ceil(r) + 1 + 2 * math.ceil(3 * kappa * r)
    g = np.arange(size) - size // 2
    dist = np.hypot(g[:, None], g[None, :])
    d0 = 2 * r * alpha
    with np.errstate(divide="ignore"):
        b = 1.0 / (1.0 + (d0 / dist) ** (2 * n))
    b_corner = 1.0 / (1.0 + (d0 / (math.sqrt(2) * r)) ** (2 * n))
    h = np.minimum(beta + (1 - beta) * b / b_corner, 1.0) * _disc_coverage(r, size)
    sigma = kappa * r
    half = math.ceil(3 * sigma)
    t = np.arange(-half, half + 1)
    gauss = np.exp(-t ** 2 / (2 * sigma ** 2))
    gauss /= gauss.sum()
    h = np.pad(h, half)
    h = np.apply_along_axis(lambda v: np.convolve(v, gauss, "valid"), 0, h)
    h = np.apply_along_axis(lambda v: np.convolve(v, gauss, "valid"), 1, h)
    k = int(2 * r + 1)                    # the authors' ramp half-width r + p, by hand
    window = round(k / 7) + 1
    window += window % 2 == 0
    left = h * np.clip(0.5 - g / (2 * (r + window // 2)), 0.0, 1.0)[None, :]
    return 0.5 * left / left.sum()


def check(metrics, output_dir):
    # --- the model term by term: pieces assembled by hand == psf.butterworth_dp (float64)
    assert metrics["term_by_term_max_abs_diff"] < 1e-12
    assert metrics["kernel_size_px"] == 2 * 8 + 1 + 2 * math.ceil(3 * 0.14 * 8)  # 25
    assert math.isclose(metrics["left_view_sum"], 0.5, abs_tol=1e-9)
    # r > 0 (behind the focal plane, RDPD's "front focus") puts the left view's weight on -x
    # (RDPD Sec. 2.2: the left PSF falls off towards the right); r < 0 is its mirror image.
    assert metrics["left_centroid_front_px"] < -1.0
    # ... and its value follows from Eqs. 2-4 built here in numpy (r = 8, n = 3, alpha = 0.4,
    # beta = 0.2, kappa = 0.14; ramp 1/2 - x / (2 w), w = r + r/14, clipped to [0, 1]).
    ref = _left_view_np(8.0, 3, 0.4, 0.2, 0.14)
    xr = np.arange(ref.shape[-1]) - ref.shape[-1] // 2
    assert math.isclose(metrics["left_centroid_front_px"], (ref.sum(0) * xr).sum() / ref.sum(), rel_tol=5e-3)
    assert math.isclose(metrics["left_centroid_back_px"], -metrics["left_centroid_front_px"], abs_tol=1e-9)
    assert metrics["back_swaps_views"] is True

    # --- parameter effects (centre / max of left + right; the ramp cancels: M(x) + M(-x) = 1)
    depth = metrics["centre_over_max"]
    for name in ("alpha", "beta", "kappa"):
        assert all(b > a for a, b in zip(depth[name], depth[name][1:])), (name, depth[name])
    assert max(depth["order"]) - min(depth["order"]) < 0.05  # n shapes the edge, not the depth
    assert math.isclose(depth["beta"][-1], 1.0, abs_tol=1e-9)  # beta = 1: a smoothed disc
    # kappa = 0 (no smoothing): left + right = B_scaled * C, so centre/max follows in closed form
    # from Eq. 2 (n=3, alpha=0.4, beta=0.2, r=8) and the disc's pixel coverage.
    r, n, alpha, beta, size = 8.0, 3, 0.4, 0.2, 39
    d0 = 2 * r * alpha
    g = np.arange(size) - size // 2
    dist = np.hypot(g[:, None], g[None, :])
    with np.errstate(divide="ignore"):
        b = 1.0 / (1.0 + (d0 / dist) ** (2 * n))
    b_corner = 1.0 / (1.0 + (d0 / (math.sqrt(2) * r)) ** (2 * n))
    h = np.minimum(beta + (1 - beta) * b / b_corner, 1.0) * _disc_coverage(r, size)
    assert math.isclose(depth["kappa"][0], h[size // 2, size // 2] / h.max(), abs_tol=2e-3)

    # --- simulated calibration (supplement S1-S2)
    assert metrics["sim_hidden_params"] == HIDDEN
    rec = metrics["sim_recovered_params"]
    assert all(math.isclose(rec[k], v, abs_tol=1e-9) for k, v in HIDDEN.items()), rec
    assert metrics["sim_params_match"] is True
    assert metrics["sim_disks"] == (metrics["sim_side_px"] // 48) ** 2
    # Eq. S1 with noise sigma = 1e-3 on disks of peak 0.5: over seeds 0-9 the worse view reached
    # X = 0.9966-0.9979 (144-px target) and 0.9984-0.9989 (192 px); 0.99 leaves 3x margin on 1 - X.
    assert math.isclose(metrics["sim_noise_sigma"], 1e-3)
    assert 0.99 < metrics["sim_est_xcorr_min"] <= 1.0
    assert 0.97 < metrics["sim_est_sum"] < 1.01  # two views summing to 1, less the l1 shrinkage
    assert 0.99 < metrics["sim_fit_xcorr"] <= 1.0
    if metrics.get("sim_s2_vs_hidden_xcorr") is not None:  # book/full: near-equivalent kernels
        assert metrics["sim_s2_vs_hidden_xcorr"] > 0.99
    # A near-twin parameter set exists on the Eq. S2 grid: it is not the hidden set and its
    # kernel is closer to the hidden kernel than the noisy estimate is (the prose says so).
    twin = metrics["sim_twin_params"]
    assert tuple(twin) != (HIDDEN["order"], HIDDEN["alpha"], HIDDEN["beta"], HIDDEN["kappa"])
    assert metrics["sim_est_xcorr_min"] < metrics["sim_twin_xcorr"] < 1.0
    assert metrics["sim_s2_sets_above_est"] >= 1
    from dplab.optics import psf  # independent check of the twin's closeness, with numpy's xcorr
    import torch

    hl = psf.butterworth_dp(HIDDEN["radius_px"], *[HIDDEN[k] for k in ("order", "alpha", "beta", "kappa")],
                            size=19, dtype=torch.float64)[0]
    tl = psf.butterworth_dp(HIDDEN["radius_px"], *twin, size=19, dtype=torch.float64)[0]
    assert math.isclose(_xcorr_np(hl.numpy(), tl.numpy()), metrics["sim_twin_xcorr"], abs_tol=1e-9)

    # --- real Pixel 4 kernels (RDPD Fig. 5 / S2 claim)
    if PIXEL4 is None:
        assert metrics["real_kernels_available"] is False
        assert metrics["real_mean_butterworth"] is None and metrics["real_winner"] is None
    else:
        _check_real(metrics)

    # --- radial distortion (Eq. 5, supplement S3)
    assert metrics["points_roundtrip_max_px"] < 1e-9
    assert 0 < metrics["image_roundtrip_mean_abs"] < 0.1  # two bilinear resamplings, no bias
    true = metrics["dist_true"]
    assert np.allclose(true, RDPD_SETS[0])
    got = metrics["dist_recovered"]
    h_img, w_img = metrics["dist_image_hw"]
    half_diag = 0.5 * math.hypot(h_img, w_img)
    r_u = np.linspace(0, 1, 201)

    def r_d(c):
        return r_u / (1 + c[0] * r_u ** 2 + c[1] * r_u ** 4 + c[2] * r_u ** 6)

    mismatch = float(np.abs(r_d(got) - r_d(true)).max()) * half_diag
    assert math.isclose(metrics["dist_map_err_px"], mismatch, rel_tol=1e-6, abs_tol=1e-9)
    # The warp is what the S6 search pins down: within a third of a pixel everywhere, against a
    # corner displacement of 1 - 1/1.07 = 6.5 % of the half-diagonal.
    assert mismatch < 0.33
    assert math.isclose(metrics["dist_corner_shift_px"], (1 - 1 / (1 + sum(true))) * half_diag, rel_tol=1e-9)
    # Coefficients: R^2, R^4, R^6 are nearly collinear on [0, 1], so only c1 and the corner
    # combination c1 + c2 + c3 are well determined; a grid step of 0.025 refined 3+ times must
    # land within 0.01 for c1 and 0.005 for the sum.
    assert abs(got[0] - true[0]) <= 0.01, got
    assert abs(sum(got) - sum(true)) <= 0.005, got
    assert metrics["dist_fit_xcorr"] > 0.9999
    expected_pct = [100 * (1 / (1 + sum(c)) - 1) for c in RDPD_SETS]
    assert np.allclose(metrics["rdpd_corner_shift_pct"], expected_pct, rtol=1e-9)
    assert [p < 0 for p in metrics["rdpd_corner_shift_pct"]] == [True, True, False, False, False]


def _check_real(metrics):
    import torch

    from dplab.optics import psf
    from dplab.optics import psf_fit

    assert metrics["real_kernels_available"] is True
    cells = metrics["real_cell_table"]
    assert metrics["real_cells"] == 48 and len(cells) == 48
    assert [c["cell"] for c in cells] == list(range(48))
    assert all(c["row"] == c["cell"] // 8 and c["col"] == c["cell"] % 8 for c in cells)
    x_bw = np.array(metrics["real_xcorr_butterworth"])
    x_s3 = np.array(metrics["real_xcorr_pun_s3"])
    x_best = np.array(metrics["real_xcorr_pun_best"])
    for x in (x_bw, x_s3, x_best):
        assert x.shape == (48,) and np.all(x >= -1) and np.all(x <= 1)
    assert np.allclose(x_bw, [c["bw_xcorr"] for c in cells])
    assert math.isclose(metrics["real_mean_butterworth"], x_bw.mean(), rel_tol=1e-12)
    assert math.isclose(metrics["real_mean_pun_s3"], x_s3.mean(), rel_tol=1e-12)
    assert math.isclose(metrics["real_mean_pun_best"], x_best.mean(), rel_tol=1e-12)
    # The best-radius scan covers the radii of the Eq. S3 search: it can only score higher.
    assert np.all(x_best >= x_s3 - 1e-9)
    wins = int((x_bw > x_best).sum())
    assert metrics["real_bw_wins"] == wins
    expected_winner = "the Butterworth model" if x_bw.mean() > x_best.mean() else "the Punnappurath model"
    assert metrics["real_winner"] == expected_winner
    assert math.isclose(metrics["real_margin"], x_bw.mean() - x_best.mean(), rel_tol=1e-9, abs_tol=1e-12)
    holds = x_bw.mean() > x_best.mean() and wins > 24
    assert ("does not hold" not in metrics["real_verdict"]) == holds
    # Prose caveat: the Eq. S3 degeneracy costs Punnappurath more than Butterworth's lead over
    # the best-radius fit.
    assert (x_best - x_s3).mean() > (x_bw - x_best).mean()
    # Prose claims: the Eq. S3 Punnappurath radius sits at the edge of its search range in every
    # cell; both models fit best in the centre columns and worst at the left/right edges.
    edge = max(metrics["pun_radii_used"])
    assert all(math.isclose(abs(c["pun_s3_radius"]), edge) for c in cells)
    assert metrics["pun_s3_radius_text"] == [edge]
    for x in (x_bw, x_best):
        grid = x.reshape(6, 8)
        assert grid[:, [0, 7]].mean() < grid[:, [3, 4]].mean()
    # Orientation: the scenes lie at or behind focus (r > 0, Xin et al. supplement B) and every
    # cell's Butterworth fit says so; the released left kernel lies left of the right one.
    n_pos = sum(c["bw"]["radius_px"] > 0 for c in cells)
    assert metrics["real_bw_positive"] == n_pos == 48
    # centring and cropping 61x61 -> 33x33 keeps 98-99.8 % of the mass (worst in the corners)
    assert metrics["real_crop_mass_min"] == min(c["mass"] for c in cells) > 0.98

    # Independent re-derivation on two cells: kernels straight from the .npy files (each view
    # normalised to 1/2), centred by numpy, xcorr by numpy, fits re-run with the same grid.
    size = metrics["real_kernel_crop_px"]
    kl = np.load(PIXEL4 / "calibration" / "blur_kernels_left.npy").astype(np.float64)
    kr = np.load(PIXEL4 / "calibration" / "blur_kernels_right.npy").astype(np.float64)
    grid = metrics["real_grid_used"]
    radii = torch.tensor(metrics["real_radii_used"], dtype=torch.float64)
    pun_radii = np.array(metrics["pun_radii_used"])
    xk = np.arange(kl.shape[-1]) - kl.shape[-1] // 2
    lr = (kl.sum(1) * xk).sum(-1) / kl.sum((1, 2)) - (kr.sum(1) * xk).sum(-1) / kr.sum((1, 2))
    assert np.allclose(metrics["real_lr_centroid_diff"], lr, atol=1e-4)
    assert np.all(lr < 0) and math.isclose(metrics["real_lr_centroid_diff_px"], lr.mean(), abs_tol=1e-4)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for i in (0, 27):
            left = 0.5 * kl[i] / kl[i].sum()
            right = 0.5 * kr[i] / kr[i].sum()
            left, right = _recentre_np(left, right, size)
            c = cells[i]
            assert math.isclose(c["mass"], left.sum() + right.sum(), rel_tol=1e-5)
            # (a) the recorded Butterworth parameters reproduce the recorded X
            p = c["bw"]
            ml, mr = psf.butterworth_dp(p["radius_px"], p["order"], p["alpha"], p["beta"], p["kappa"],
                                        size=size, dtype=torch.float64)
            x = 0.5 * (_xcorr_np(left, ml.numpy()) + _xcorr_np(right, mr.numpy()))
            assert math.isclose(x, c["bw_xcorr"], abs_tol=1e-5), (i, x, c["bw_xcorr"])
            # (b) re-running the Eq. S3 search finds the same parameters and X
            fit = psf_fit.fit_butterworth(torch.from_numpy(left), torch.from_numpy(right), radii=radii,
                                          **{k: tuple(v) for k, v in grid.items()})
            assert fit.params == p, (i, fit.params, p)
            assert math.isclose(fit.xcorr, c["bw_xcorr"], abs_tol=1e-5)
            # (c) the best-radius Punnappurath score, scanned here with numpy's xcorr
            scores = []
            for s in np.concatenate([pun_radii, -pun_radii]):
                pl, pr = psf.punnappurath_dp(float(s), size=size, dtype=torch.float64)
                scores.append((0.5 * (_xcorr_np(left, pl.numpy()) + _xcorr_np(right, pr.numpy())), float(s)))
            best_x, best_r = max(scores)
            assert math.isclose(best_x, c["pun_best_xcorr"], abs_tol=1e-5), (i, best_x, c["pun_best_xcorr"])
            assert math.isclose(best_r, c["pun_best_radius"]), (i, best_r, c["pun_best_radius"])
    finally:
        torch.set_num_threads(threads)
