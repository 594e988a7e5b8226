"""Tests for dplab.optics.thin_lens: hand-computed thin-lens values, inverses, presets, validation."""

import dataclasses
import math

import pytest
import torch

from dplab.optics import thin_lens as optics
from dplab.optics.thin_lens import (
    RDPD_CAMERA_SETS, RDPD_CAMERA_SETS_CODE, RDPD_CAMERA_SETS_PAPER, Camera, aperture_diameter,
    coc_radius, coc_radius_px, defocus_affine, depth_from_coc, rdpd_generator_coc_px,
    sensor_distance,
)

# f = 50 mm, N = 2, s = 2 m. By hand: q = 25 mm, s' = 50*2000/1950 = 51.28205128 mm,
# s'/s = 0.02564102564, A = q/2 * s'/s = 12.5 * 0.02564102564 = 0.3205128205 mm (CoC at inf).
# d = 4 m: (d - s)/d = 1/2  -> r = 0.16025641 mm;  d = 1 m: (d - s)/d = -1 -> r = -0.32051282 mm.
F, N, S = 50.0, 2.0, 2000.0
A_HAND = 0.3205128205128205


def test_sensor_distance_and_aperture_by_hand():
    assert sensor_distance(F, S) == pytest.approx(51.28205128205128, rel=1e-12)
    assert aperture_diameter(F, N) == 25.0


@pytest.mark.parametrize("depth, expected", [(4000.0, 0.16025641025641027), (1000.0, -A_HAND),
                                             (2000.0, 0.0), (500.0, -3 * A_HAND)])
def test_coc_radius_hand_values_and_sign(depth, expected):
    r = coc_radius(depth, F, N, S)
    assert isinstance(r, float)
    assert r == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_coc_sign_convention_both_sides_of_focus():
    assert coc_radius(2500.0, F, N, S) > 0  # behind the focal plane
    assert coc_radius(1500.0, F, N, S) < 0  # in front of it


def test_coc_unit_consistency_mm_vs_m():
    assert coc_radius(4.0, 0.05, 2.0, 2.0) == pytest.approx(0.16025641025641027e-3, rel=1e-12)


def test_coc_tends_to_A_at_infinity():
    assert coc_radius(1e12, F, N, S) == pytest.approx(A_HAND, rel=1e-8)


def test_coc_tensor_in_tensor_out():
    d = torch.tensor([[1000.0, 4000.0]], dtype=torch.float64)
    r = coc_radius(d, F, N, S)
    assert isinstance(r, torch.Tensor) and r.shape == d.shape and r.dtype == torch.float64
    torch.testing.assert_close(r, torch.tensor([[-A_HAND, A_HAND / 2]], dtype=torch.float64))
    r32 = coc_radius(d.float(), F, N, S)
    assert r32.dtype == torch.float32


def test_coc_radius_px_divides_by_pitch():
    # 0.16025641 mm / 5 um = 32.051282 px
    assert coc_radius_px(4.0, 0.05, 2.0, 2.0, 5e-6) == pytest.approx(32.05128205128205, rel=1e-10)


def test_inverse_round_trip():
    d = torch.logspace(-0.5, 3, 50, dtype=torch.float64)  # 0.3 m .. 1 km
    r = coc_radius(d, 0.05, 2.0, 2.0)
    torch.testing.assert_close(depth_from_coc(r, 0.05, 2.0, 2.0), d, rtol=1e-10, atol=0)
    rpx = coc_radius_px(d, 0.05, 2.0, 2.0, 5e-6)
    torch.testing.assert_close(depth_from_coc(rpx, 0.05, 2.0, 2.0, 5e-6), d, rtol=1e-10, atol=0)
    assert depth_from_coc(-A_HAND, F, N, S) == pytest.approx(1000.0, rel=1e-12)


def test_inverse_refuses_coc_without_finite_depth():
    with pytest.raises(ValueError, match="coc"):
        depth_from_coc(defocus_affine(F, N, S)[0], F, N, S)   # exactly the CoC at infinity
    with pytest.raises(ValueError, match="coc"):
        depth_from_coc(1.001 * A_HAND, F, N, S)
    with pytest.raises(ValueError, match="coc"):
        depth_from_coc(torch.tensor([0.0, 1.0]), F, N, S)
    with pytest.raises(ValueError, match="coc"):
        depth_from_coc(float("nan"), F, N, S)


def test_defocus_affine_matches_coc_radius_px():
    a, b = defocus_affine(0.05, 2.0, 2.0, 5e-6)
    assert a == pytest.approx(A_HAND * 1e-3 / 5e-6, rel=1e-12)
    assert b == pytest.approx(-a * 2.0, rel=1e-12)
    d = torch.linspace(0.2, 50.0, 100, dtype=torch.float64)
    torch.testing.assert_close(a + b / d, coc_radius_px(d, 0.05, 2.0, 2.0, 5e-6))
    a_len, b_len = defocus_affine(F, N, S)
    assert a_len == pytest.approx(A_HAND) and -b_len / a_len == pytest.approx(S)  # zero at focus


def test_camera_converts_units():
    cam = Camera(50.0, 2.0, 2.0, 5.0)
    assert cam.coc_px(4.0) == pytest.approx(32.05128205128205, rel=1e-10)
    assert cam.coc_px(1.0) == pytest.approx(-64.1025641025641, rel=1e-10)
    assert cam.depth_m(cam.coc_px(7.5)) == pytest.approx(7.5, rel=1e-12)
    a, b = cam.affine()
    assert a + b / 4.0 == pytest.approx(cam.coc_px(4.0), rel=1e-12)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cam.f_number = 4.0


# Generator scale S = f^2 / (N (d_f - f)) for the code's sets, by hand.
S_HAND = [16 / 6, 25 / 8, 49 / 5, 100 / 26, 484 / 80]


def test_rdpd_sets_tables():
    assert len(RDPD_CAMERA_SETS) == 5
    assert RDPD_CAMERA_SETS_CODE[0] == (4.0, 6.0, 5.0) and RDPD_CAMERA_SETS_PAPER[0] == (4.0, 5.0, 6.0)
    assert RDPD_CAMERA_SETS_CODE[1:] == RDPD_CAMERA_SETS_PAPER[1:]
    for cam, (f, n, d_f) in zip(RDPD_CAMERA_SETS, RDPD_CAMERA_SETS_CODE):
        assert (cam.focal_length_mm, cam.f_number, cam.focus_distance_m) == (f, n, d_f)
        # effective pitch (d_f - f) / (2 (1000 d_f - f)) mm, derived by equating amplitudes
        assert cam.pixel_pitch_um == pytest.approx((d_f - f) / (2 * (1000 * d_f - f)) * 1e3, rel=1e-12)
        assert 0.06 < cam.pixel_pitch_um < 0.14


@pytest.mark.parametrize("i", range(5))
def test_rdpd_cameras_reproduce_generator_before_rounding(i):
    _, _, d_f = RDPD_CAMERA_SETS_CODE[i]
    d = torch.linspace(0.0625, 250.0, 400, dtype=torch.float64)
    expected = S_HAND[i] * (d - d_f) / d
    torch.testing.assert_close(RDPD_CAMERA_SETS[i].coc_px(d), expected, rtol=1e-9, atol=1e-9)
    assert RDPD_CAMERA_SETS[i].coc_px(d_f) == pytest.approx(0.0, abs=1e-12)
    gen = rdpd_generator_coc_px(d, i)
    torch.testing.assert_close(gen, torch.round(expected).clamp(-40, 40))


def test_rdpd_generator_hand_values():
    assert rdpd_generator_coc_px(1.0, 0) == -11.0            # 8/3 * (1 - 5) = -10.67
    assert rdpd_generator_coc_px(100.0, 4) == 4.0            # 6.05 * 0.7 = 4.235
    assert rdpd_generator_coc_px(1.0, 4) == -40.0            # 6.05 * (-29) clipped
    assert rdpd_generator_coc_px(250.0, 2) == 9.0            # 9.8 * 0.968 = 9.49
    assert rdpd_generator_coc_px(1.0, (4, 6, 5)) == -11.0
    assert rdpd_generator_coc_px(1.0, 4, clip_px=math.inf) == round(6.05 * -29)
    t = rdpd_generator_coc_px(torch.tensor([1.0, 100.0]), 0)
    assert isinstance(t, torch.Tensor) and t.tolist() == [-11.0, 3.0]   # 8/3*0.95 = 2.53


# ------------------------------------------------------------------ validation
@pytest.mark.parametrize("kwargs, exc, name", [
    (dict(f_number=0.0), ValueError, "f_number"),
    (dict(f_number=-2.0), ValueError, "f_number"),
    (dict(focal_length=0.0), ValueError, "focal_length"),
    (dict(focal_length=-1.0), ValueError, "focal_length"),
    (dict(focus_distance=50.0), ValueError, "focus_distance"),
    (dict(focus_distance=10.0), ValueError, "focus_distance"),
    (dict(depth=0.0), ValueError, "depth"),
    (dict(depth=-3.0), ValueError, "depth"),
    (dict(depth=float("nan")), ValueError, "depth"),
    (dict(depth=torch.tensor([1.0, float("nan")])), ValueError, "depth"),
    (dict(depth=torch.tensor([1.0, 0.0])), ValueError, "depth"),
    (dict(f_number=float("nan")), ValueError, "f_number"),
    (dict(depth="4"), TypeError, "depth"),
    (dict(depth=[4.0]), TypeError, "depth"),
    (dict(depth=torch.tensor([4])), TypeError, "depth"),
    (dict(depth=True), TypeError, "depth"),
    (dict(focal_length="50"), TypeError, "focal_length"),
    (dict(f_number=None), TypeError, "f_number"),
])
def test_coc_radius_validation(kwargs, exc, name):
    args = dict(depth=4000.0, focal_length=F, f_number=N, focus_distance=S)
    args.update(kwargs)
    with pytest.raises(exc, match=name):
        coc_radius(**args)


@pytest.mark.parametrize("call, exc, name", [
    (lambda: coc_radius_px(4.0, 0.05, 2.0, 2.0, 0.0), ValueError, "pixel_pitch"),
    (lambda: coc_radius_px(4.0, 0.05, 2.0, 2.0, "5e-6"), TypeError, "pixel_pitch"),
    (lambda: depth_from_coc("0.1", F, N, S), TypeError, "coc"),
    (lambda: defocus_affine(F, 0.0, S), ValueError, "f_number"),
    (lambda: sensor_distance(F, F), ValueError, "focus_distance"),
    (lambda: aperture_diameter(F, -1.0), ValueError, "f_number"),
    (lambda: Camera(50.0, 2.0, 0.04, 5.0), ValueError, "focus_distance_m"),
    (lambda: Camera(0.0, 2.0, 2.0, 5.0), ValueError, "focal_length_mm"),
    (lambda: Camera(50.0, 2.0, 2.0, -1.0), ValueError, "pixel_pitch_um"),
    (lambda: Camera(50.0, "f/2", 2.0, 5.0), TypeError, "f_number"),
    (lambda: Camera(50.0, 2.0, 2.0, 5.0).coc_px(-1.0), ValueError, "depth"),
    (lambda: rdpd_generator_coc_px(1.0, 5), ValueError, "camera_set"),
    (lambda: rdpd_generator_coc_px(1.0, "0"), TypeError, "camera_set"),
    (lambda: rdpd_generator_coc_px(0.0, 0), ValueError, "depth_m"),
    (lambda: rdpd_generator_coc_px(1.0, (5, 6, 4)), ValueError, "focus_distance"),
])
def test_other_validation(call, exc, name):
    with pytest.raises(exc, match=name):
        call()


def test_module_docstring_states_unit_choice():
    doc = optics.__doc__
    assert "effective" in doc and "pixel pitch" in doc and "diameter" in doc
