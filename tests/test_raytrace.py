"""dplab.optics.raytrace against the closed-form CoC and the geometry of half discs."""

import math

import pytest
import torch

from dplab.optics import thin_lens as optics

from dplab.optics import raytrace


@pytest.mark.parametrize("depth", [0.3, 1.0, 1.99, 2.0, 2.01, 5.0, 1e4])
def test_rim_ray_lands_at_the_coc_radius(depth):
    hit = raytrace.trace_to_sensor(torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64), depth, 0.05, 2.0, 2.0)
    r = optics.coc_radius(depth, 0.05, 2.0, 2.0)
    # Behind focus the rays have crossed: the +x rim ray lands at -r.
    assert hit[0, 0].item() == pytest.approx(-r, abs=1e-15, rel=1e-9)
    assert hit[1, 1].item() == pytest.approx(-r, abs=1e-15, rel=1e-9)
    assert raytrace.spot_radius(depth, 0.05, 2.0, 2.0) == pytest.approx(r, abs=1e-15, rel=1e-9)


def test_off_axis_spot_is_centred_on_the_chief_ray():
    # Chief ray through the lens centre: the spot centre is at -h s'/d.
    f, n, s, d, h = 0.05, 2.0, 2.0, 4.0, 0.2
    hits = raytrace.trace_to_sensor(raytrace.sample_aperture(20000, generator=torch.Generator().manual_seed(0)), d, f, n, s, height=h)
    centre = hits.mean(0)
    assert centre[0].item() == pytest.approx(-h * optics.sensor_distance(f, s) / d, rel=1e-2)


def test_half_aperture_centroid_is_that_of_a_half_disc():
    pts = raytrace.sample_aperture(200000, half="neg", generator=torch.Generator().manual_seed(1))
    assert pts[:, 0].mean().item() == pytest.approx(-4 / (3 * math.pi), abs=3e-3)


@pytest.mark.parametrize("depth", [4.0, 1.5])
def test_left_photodiodes_see_the_positive_half_and_match_dplab_psf(depth):
    """The left view is the x > 0 half of the aperture: behind focus (r > 0) its rays have
    crossed and its centroid is -4 r / (3 pi); in front it is on +x. dplab.optics.psf's left views
    (Butterworth and Punnappurath) put their mass on the same side for the same signed radius."""
    from dplab.optics.psf import butterworth_dp, punnappurath_dp

    f, n, s = 0.05, 2.0, 2.0
    r = optics.coc_radius(depth, f, n, s)
    gen = torch.Generator().manual_seed(2)
    left = raytrace.trace_to_sensor(raytrace.sample_aperture(100000, half="pos", generator=gen), depth, f, n, s)
    right = raytrace.trace_to_sensor(raytrace.sample_aperture(100000, half="neg", generator=gen), depth, f, n, s)
    cl, cr = left[:, 0].mean().item(), right[:, 0].mean().item()
    assert cl / r == pytest.approx(-4 / (3 * math.pi), abs=5e-3)
    assert cr / r == pytest.approx(4 / (3 * math.pi), abs=5e-3)
    sign = 1.0 if r > 0 else -1.0
    for model in (butterworth_dp, punnappurath_dp):
        kl, kr = model(sign * 6.0, dtype=torch.float64)
        x = torch.arange(kl.shape[-1], dtype=torch.float64) - kl.shape[-1] // 2
        kcl = float((kl.sum(0) * x).sum() / kl.sum())
        kcr = float((kr.sum(0) * x).sum() / kr.sum())
        assert kcl * cl > 0 and kcr * cr > 0 and (kcl - kcr) * (cl - cr) > 0, model.__name__


def test_sampling_is_reproducible_and_uniform():
    a = raytrace.sample_aperture(1000, generator=torch.Generator().manual_seed(3))
    b = raytrace.sample_aperture(1000, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    big = raytrace.sample_aperture(100000, generator=torch.Generator().manual_seed(4))
    # Uniform over the disc: P(|p| < 1/2) = 1/4.
    assert (big.norm(dim=1) < 0.5).double().mean().item() == pytest.approx(0.25, abs=0.01)


def test_impossible_optics_are_refused():
    p = torch.zeros(1, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="depth"):
        raytrace.trace_to_sensor(p, 0.04, 0.05, 2.0, 2.0)
    with pytest.raises(ValueError, match="focus_distance"):
        raytrace.trace_to_sensor(p, 3.0, 0.05, 2.0, 0.05)
    with pytest.raises(ValueError, match="f_number"):
        raytrace.spot_radius(3.0, 0.05, -2.0, 2.0)
    with pytest.raises(ValueError, match="aperture_points"):
        raytrace.trace_to_sensor(torch.zeros(3), 3.0, 0.05, 2.0, 2.0)
    with pytest.raises(ValueError, match="half"):
        raytrace.sample_aperture(10, half="left")
