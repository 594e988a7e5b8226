"""dplab.render.lightfield: the synthetic-aperture (light-field) blur used as DRBNet's stage-1 data."""

import math

import pytest
import torch
import torch.nn.functional as F

from dplab.render import lightfield as lf


def test_offsets_lie_in_the_unit_disc_and_are_symmetric():
    off = lf.subaperture_offsets(7, dtype=torch.float64)
    assert (off.pow(2).sum(1) <= 1 + 1e-9).all()
    assert torch.allclose(off.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-12)
    # a 7x7 lattice on [-1, 1]^2 (spacing 1/3): count the points inside the disc by hand
    t = [i / 3 for i in range(-3, 4)]
    assert off.shape[0] == sum(1 for u in t for v in t if u * u + v * v <= 1 + 1e-9)
    assert lf.subaperture_offsets(1).tolist() == [[0.0, 0.0]]


@pytest.mark.parametrize("radius", [0.0, 2.0, -3.5, 6.25])
def test_psf_sums_to_one_and_has_the_right_support(radius):
    k = lf.lightfield_psf(radius, 5)
    assert math.isclose(float(k.sum()), 1.0, abs_tol=1e-12)
    ys, xs = torch.nonzero(k > 1e-12, as_tuple=True)
    c = k.shape[-1] // 2
    reach = max((ys - c).abs().max(), (xs - c).abs().max()).item()
    assert reach <= math.ceil(abs(radius)) + 1e-9
    # centroid at the centre (symmetric aperture), second moment = r^2 <u^2> (+ bilinear spread)
    x = torch.arange(k.shape[-1], dtype=k.dtype) - c
    assert abs(float((k.sum(0) * x).sum())) < 1e-9


def test_integer_radius_psf_is_the_lattice():
    # radius 2 with a 3x3 lattice: deltas at the centre and at (+-2, 0), (0, +-2), weight 1/5 each
    k = lf.lightfield_psf(2.0, 3)
    c = k.shape[-1] // 2
    expected = torch.zeros_like(k)
    for dy, dx in ((0, 0), (0, 2), (0, -2), (2, 0), (-2, 0)):
        expected[c + dy, c + dx] = 0.2
    assert torch.allclose(k, expected, atol=1e-12)


def test_views_with_negative_u_form_the_left_dp_view():
    """The module's labelling: views with u < 0 make up dplab's left DP view, whose mass lies on
    -x behind the focal plane (r > 0), like dplab.optics.psf.butterworth_dp's left view."""
    from dplab.optics.psf import butterworth_dp

    r, size = 4.0, 15
    delta = torch.zeros(1, 1, size, size, dtype=torch.float64)
    delta[..., size // 2, size // 2] = 1.0
    off = lf.subaperture_offsets(7, dtype=torch.float64)
    views = lf.shift_views(delta, r, off)[0, :, 0]           # (N, H, W)
    x = torch.arange(size, dtype=torch.float64) - size // 2
    left = views[off[:, 0] < 0].mean(0)
    right = views[off[:, 0] > 0].mean(0)
    cx = lambda k: float((k.sum(0) * x).sum() / k.sum())     # noqa: E731
    kl, _ = butterworth_dp(r, dtype=torch.float64)
    kx = torch.arange(kl.shape[-1], dtype=torch.float64) - kl.shape[-1] // 2
    assert cx(left) < 0 < cx(right)
    assert float((kl.sum(0) * kx).sum() / kl.sum()) < 0


def test_zero_radius_is_identity_and_constant_stays_constant():
    g = torch.Generator().manual_seed(0)
    img = torch.rand(2, 3, 20, 24, generator=g)
    out, _ = lf.render_lightfield(img, torch.zeros(20, 24))
    assert torch.allclose(out, img, atol=1e-6)
    const = torch.full((1, 3, 20, 24), 0.3)
    radius = torch.linspace(-4, 5, 24).expand(20, 24)
    out, q = lf.render_lightfield(const, radius, max_layers=6)
    assert torch.allclose(out, const, atol=1e-5)
    assert q.unique().numel() <= 6


def test_single_layer_equals_convolution_with_the_psf():
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 1, 40, 40, generator=g, dtype=torch.float64)
    r = 3.0
    out, _ = lf.render_lightfield(img, torch.full((40, 40), r, dtype=torch.float64), grid=5)
    k = lf.lightfield_psf(r, 5)
    p = k.shape[-1] // 2
    # correlation with the flipped PSF = convolution; compare away from the borders
    ref = F.conv2d(img, k.flip(0, 1)[None, None], padding=p)
    assert torch.allclose(out[..., 8:-8, 8:-8], ref[..., 8:-8, 8:-8], atol=1e-10)


def test_near_layer_occludes_far_layer():
    img = torch.zeros(1, 1, 32, 32)
    img[..., :, 16:] = 1.0                      # right half bright, far; left half dark, near
    radius = torch.full((32, 32), 4.0)
    radius[:, :16] = -1e-3                      # near layer in focus
    out, _ = lf.render_lightfield(img, radius, max_layers=2)
    # the in-focus near layer is composited last and stays dark where it is opaque
    assert float(out[0, 0, :, :14].max()) < 1e-3


def test_dataset_is_deterministic_and_blurs():
    a = lf.LightFieldDataset(2, (32, 48), seed=3, max_layers=4)
    b = lf.LightFieldDataset(2, (32, 48), seed=3, max_layers=4)
    s, t = a[1], b[1]
    assert torch.equal(s["combined"], t["combined"]) and torch.equal(s["sharp"], t["sharp"])
    assert s["combined"].shape == (3, 32, 48) and s["radius"].shape == (1, 32, 48)
    assert not torch.equal(s["combined"], s["sharp"])
    with pytest.raises(IndexError):
        a[2]


def test_bad_radius_shape_is_refused():
    with pytest.raises(ValueError):
        lf.render_lightfield(torch.rand(1, 3, 8, 8), torch.zeros(4, 4))
