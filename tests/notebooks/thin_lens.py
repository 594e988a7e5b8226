"""Checks for book/thin_lens.ipynb against hand calculations and closed forms."""

import math

MIN_FIGURES = 4  # ray diagrams, camera sets, DP half-discs, the explorer's static view


def check(metrics, output_dir):
    # Eq. 1 by hand for f = 50 mm, N = 2, s = 2 m: r = (q/2) (f/(s-f)) (d-s)/d.
    q_half, ratio = 0.05 / 2 / 2, 0.05 / 1.95
    assert math.isclose(metrics["hand_coc_behind_um"], q_half * ratio * (2 / 4) * 1e6, rel_tol=1e-9)
    assert math.isclose(metrics["hand_coc_front_um"], q_half * ratio * (-1 / 1) * 1e6, rel_tol=1e-9)
    # The ray tracer is an independent method; it must agree to round-off.
    assert metrics["eq1_vs_raytrace_max_rel_err"] < 1e-9
    # Phone camera: CoC at infinity = f^2 / (2 N (s - f)) / pitch.
    f, n, s, p = 4.38e-3, 1.73, 1.0, 1.4e-6
    assert math.isclose(metrics["phone_coc_infinity_px"], f * f / (2 * n * (s - f)) / p, rel_tol=1e-9)
    assert metrics["phone_coc_30cm_px"] < 0  # in front of the focal plane
    # RDPD camera sets: at 250 m the CoC approaches S (d - d_f)/d with S = f^2 / (N (d_f - f)).
    for (lo, hi), (fl, nn, df) in zip(metrics["camera_set_coc_range_px"],
                                      [(4, 6, 5), (5, 8, 6), (7, 5, 8), (10, 13, 12), (22, 10, 30)]):
        big_s = fl * fl / (nn * (df - fl))
        assert math.isclose(hi, big_s * (250 - df) / 250, rel_tol=1e-9)
        assert math.isclose(lo, big_s * (1 - df) / 1, rel_tol=1e-9)
    assert metrics["generator_max_gap_px"] <= 0.5 + 1e-9  # only rounding separates them
    # Half-aperture spots: centroid of a half-disc at 4 |r| / (3 pi); Monte Carlo with 2e4 rays
    # has a standard error of about 0.002 r, so 2% is > 4 sigma. The left view is the x > 0
    # half of the aperture: behind focus (r > 0) its rays have crossed and land on -x, in
    # front (r < 0) they stay on +x, so its centroid is -4 r / (3 pi) on both sides (RDPD
    # Sec. 2.2, dplab.optics.psf, the Pixel 4 kernels), and left minus right is -8 r / (3 pi).
    theory = 4 / (3 * math.pi)
    assert math.isclose(metrics["half_disc_centroid_theory"], theory, rel_tol=1e-12)
    for key in ("left_centroid_over_r_behind", "left_centroid_over_r_front"):
        assert math.isclose(metrics[key], -theory, rel_tol=0.02), key
    assert math.isclose(metrics["disparity_over_r"], -2 * theory, rel_tol=0.02)
    # Exercise 1: the CoC diameter at infinity, f^2 / (N (s - f)), in 5.4 um pixels.
    assert math.isclose(metrics["exercise_1_px"], 0.05**2 / (1.8 * 2.95) / 5.4e-6, rel_tol=1e-9)
