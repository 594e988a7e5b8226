"""Tests for dplab.optics.distortion: the division model of RDPD Eq. 5 / supplement Eq. S5."""

from __future__ import annotations

import math

import pytest
import torch

from dplab.optics.distortion import (
    RDPD_DISTORTION_COEFFS,
    RDPD_DISTORTION_FOCAL_LENGTHS_MM,
    distort,
    distort_points,
    distortion_center,
    fold_radius,
    image_radius,
    normalization_radius,
    undistort,
    undistort_points,
)

H, W = 60, 80  # half-diagonal 50 px, centre (39.5, 29.5)


def test_normalisation_is_half_diagonal():
    assert normalization_radius(H, W) == 50.0
    assert normalization_radius(1080, 1920) == pytest.approx(0.5 * math.hypot(1080, 1920))


def test_barrel_and_pincushion_by_hand():
    # A point 40 px right of the centre has R = 40 / 50 = 0.8.
    p = torch.tensor([[39.5 + 40.0, 29.5]], dtype=torch.float64)
    # c1 = 0.1: R_d = 0.8 / (1 + 0.1 * 0.64) = 0.751880 -> x_d = 39.5 + 50 * 0.751880 = 77.0940
    barrel = distort_points(p, (0.1, 0.0, 0.0), size=(H, W))
    assert barrel[0, 0].item() == pytest.approx(39.5 + 40.0 / 1.064, abs=1e-9)
    assert barrel[0, 0].item() == pytest.approx(77.09398, abs=1e-4)
    assert barrel[0, 1].item() == pytest.approx(29.5, abs=1e-12)
    # c1 = -0.1: R_d = 0.8 / 0.936 -> x_d = 82.2350 (pushed outwards: pincushion)
    pin = distort_points(p, (-0.1, 0.0, 0.0), size=(H, W))
    assert pin[0, 0].item() == pytest.approx(82.23504, abs=1e-4)
    # a diagonal point keeps its direction: both offsets scale by 1 / (1 + c R^2 + c R^4 + c R^6)
    q = torch.tensor([[39.5 + 30.0, 29.5 - 40.0]], dtype=torch.float64)  # R = 1
    out = distort_points(q, (0.01, 0.02, 0.03), size=(H, W))
    assert out[0, 0].item() == pytest.approx(39.5 + 30.0 / 1.06, abs=1e-9)
    assert out[0, 1].item() == pytest.approx(29.5 - 40.0 / 1.06, abs=1e-9)


def test_undistort_matches_closed_form_for_one_coefficient():
    # With c2 = c3 = 0, r_d = r / (1 + c r^2) gives r = (1 - sqrt(1 - 4 c r_d^2)) / (2 c r_d).
    c = 0.05
    rd = torch.linspace(0.05, 0.95, 19, dtype=torch.float64)
    pts = torch.stack((39.5 + 50.0 * rd, torch.full_like(rd, 29.5)), dim=-1)
    got = (undistort_points(pts, (c, 0.0, 0.0), size=(H, W))[:, 0] - 39.5) / 50.0
    want = (1.0 - torch.sqrt(1.0 - 4.0 * c * rd**2)) / (2.0 * c * rd)
    assert torch.allclose(got, want, atol=1e-10, rtol=0)


@pytest.mark.parametrize("coeffs", list(RDPD_DISTORTION_COEFFS) + [(0.1, -0.02, 0.01), (-0.2, 0.0, 0.0)])
def test_point_round_trip(coeffs):
    g = torch.Generator().manual_seed(0)
    size = (1080, 1920)
    pts = torch.rand(2000, 2, generator=g, dtype=torch.float64) * torch.tensor([1919.0, 1079.0], dtype=torch.float64)
    back = undistort_points(distort_points(pts, coeffs, size), coeffs, size)
    assert (back - pts).abs().max().item() < 1e-5
    again = distort_points(undistort_points(pts, coeffs, size), coeffs, size)
    assert (again - pts).abs().max().item() < 1e-5


def test_off_centre_round_trip():
    pts = torch.tensor([[0.0, 0.0], [79.0, 59.0], [10.0, 50.0]], dtype=torch.float64)
    center = (30.0, 20.0)
    d = distort_points(pts, (0.02, 0.0, 0.0), (H, W), center=center)
    assert torch.allclose(undistort_points(d, (0.02, 0.0, 0.0), (H, W), center=center), pts, atol=1e-9)
    # the centre itself is a fixed point
    c = torch.tensor([center], dtype=torch.float64)
    assert torch.equal(distort_points(c, (0.02, 0.0, 0.0), (H, W), center=center), c)


def test_rdpd_sets_barrel_then_pincushion():
    assert len(RDPD_DISTORTION_COEFFS) == len(RDPD_DISTORTION_FOCAL_LENGTHS_MM) == 5
    corner = torch.tensor([[79.5, 59.5]], dtype=torch.float64)  # pixel-area corner: R = 1
    moved = [distort_points(corner, c, (H, W))[0, 0].item() - 39.5 for c in RDPD_DISTORTION_COEFFS]
    # R_d = 1 / (1 + c1 + c2 + c3) at R = 1: 0.934579, 0.987947, 1.004016, 1.014610, 1.017812
    want = [40.0 / (1.0 + sum(c)) for c in RDPD_DISTORTION_COEFFS]
    assert moved == pytest.approx(want, abs=1e-9)
    assert moved[0] == pytest.approx(40.0 * 0.934579, abs=1e-4)
    assert [m < 40.0 for m in moved] == [True, True, False, False, False]


def test_zero_coefficients_are_identity():
    img = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(distort(img, (0.0, 0.0, 0.0)), img, atol=1e-6)
    assert torch.allclose(undistort(img, (0.0,)), img, atol=1e-6)
    p = torch.rand(5, 2, dtype=torch.float64) * 16
    assert torch.equal(distort_points(p, (0, 0, 0), (17, 23)), p)
    assert torch.allclose(undistort_points(p, (0, 0, 0), (17, 23)), p, atol=1e-12)


def test_distort_samples_at_undistorted_position():
    # A horizontal ramp I(x, y) = x is reproduced exactly by bilinear sampling, so the distorted
    # image must hold the undistorted x coordinate of every (interior) output pixel.
    coeffs = (0.05, 0.01, 0.0)
    ramp = torch.arange(W, dtype=torch.float32).expand(1, 1, H, W).contiguous()
    out = distort(ramp, coeffs, padding_mode="border")
    ys, xs = torch.meshgrid(torch.arange(H, dtype=torch.float64), torch.arange(W, dtype=torch.float64), indexing="ij")
    src = undistort_points(torch.stack((xs, ys), -1), coeffs, (H, W))
    inside = (src[..., 0] >= 0) & (src[..., 0] <= W - 1)
    assert (out[0, 0][inside].double() - src[..., 0][inside]).abs().max().item() < 1e-4


def _smooth_image(h, w):
    y, x = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return (0.5 + 0.2 * torch.sin(7 * x + 1) * torch.cos(5 * y) + 0.1 * torch.cos(11 * x * y))[None, None]


@pytest.mark.parametrize("coeffs", [RDPD_DISTORTION_COEFFS[0], RDPD_DISTORTION_COEFFS[4], (-0.05, 0.01, 0.0)])
def test_image_round_trip(coeffs):
    img = _smooth_image(120, 160)
    back = undistort(distort(img, coeffs), coeffs)
    interior = (back - img)[..., 12:-12, 12:-12]
    # two bilinear resamplings of a smooth image (max 2nd derivative ~ 0.03 per px^2):
    # error bound ~ 2 * (1/8) * 0.03 < 1e-2; interior excludes the zero-padded border
    assert interior.abs().max().item() < 1e-2
    psnr = 10 * math.log10(1.0 / interior.pow(2).mean().item())
    assert psnr > 45.0


def test_batched_coefficients_match_single_calls():
    img = _smooth_image(30, 40).expand(2, 1, 30, 40)
    c = torch.tensor([RDPD_DISTORTION_COEFFS[0], RDPD_DISTORTION_COEFFS[3]], dtype=torch.float64)
    out = distort(img, c)
    assert torch.allclose(out[0:1], distort(img[0:1], RDPD_DISTORTION_COEFFS[0]), atol=1e-6)
    assert torch.allclose(out[1:2], distort(img[1:2], RDPD_DISTORTION_COEFFS[3]), atol=1e-6)


def test_fold_radius_by_hand():
    # c1 = 0.8: 1 - 0.8 r^2 = 0 at r = sqrt(1.25) = 1.118034; g = 1.118034 / 2 = 0.559017
    r_u, r_d = fold_radius((0.8, 0.0, 0.0))
    assert r_u == pytest.approx(math.sqrt(1.25), abs=1e-12)
    assert r_d == pytest.approx(math.sqrt(1.25) / 2.0, abs=1e-12)
    # c1 = -1: the denominator 1 - r^2 vanishes at r = 1 and g grows without bound
    assert fold_radius((-1.0,)) == (pytest.approx(1.0), math.inf)


@pytest.mark.parametrize("coeffs", [(0.8, 0.0, 0.0), (0.0, 0.0, 2.0), (-1.2, 0.0, 0.0)])
def test_folding_coefficients_raise(coeffs):
    img = torch.rand(1, 1, H, W)
    for fn in (distort, undistort):
        with pytest.raises(ValueError, match="coeffs"):
            fn(img, coeffs)
    with pytest.raises(ValueError, match="coeffs"):
        distort_points(torch.zeros(1, 2), coeffs, (H, W))


def test_input_errors():
    img = torch.rand(1, 1, 8, 8)
    with pytest.raises(ValueError, match="points"):
        distort_points(torch.zeros(3, 3), (0.01,), (8, 8))
    with pytest.raises(ValueError, match="points"):
        undistort_points(torch.tensor([[float("nan"), 1.0]]), (0.01,), (8, 8))
    with pytest.raises(ValueError, match="size"):
        distort_points(torch.zeros(1, 2), (0.01,), (0, 8))
    with pytest.raises(ValueError, match="coeffs"):
        distort(img, (0.1, 0.1, 0.1, 0.1))
    with pytest.raises(ValueError, match="coeffs"):
        distort(img, (float("nan"), 0.0, 0.0))
    with pytest.raises(ValueError, match="coeffs"):
        distort(img, torch.zeros(3, 3))  # batch of 3 coefficient rows for 1 image
    with pytest.raises(TypeError, match="coeffs"):
        distort(img, "barrel")
    with pytest.raises(ValueError, match="padding_mode"):
        distort(img, (0.01,), padding_mode="wrap")
    with pytest.raises(ValueError, match="image"):
        distort(torch.rand(8, 8), (0.01,))
    with pytest.raises(ValueError, match="image"):
        undistort(torch.full((1, 1, 4, 4), float("nan")), (0.01,))


def test_center_and_image_radius():
    assert distortion_center(None, H, W) == ((W - 1) / 2, (H - 1) / 2)
    assert distortion_center((3, 4.5), H, W) == (3.0, 4.5)
    with pytest.raises(TypeError):
        distortion_center("middle", H, W)
    # the farthest pixel centre of a centred image: the corner pixel, just inside R = 1
    assert image_radius(H, W, distortion_center(None, H, W)) == pytest.approx(
        math.hypot((W - 1) / 2, (H - 1) / 2) / normalization_radius(H, W), abs=1e-15)
    assert image_radius(H, W, (0.0, 0.0)) == pytest.approx(math.hypot(W - 1, H - 1) / 50.0, abs=1e-15)
