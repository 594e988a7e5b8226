"""dplab.raytrace against the closed-form CoC and the geometry of half discs."""

import math

import pytest
import torch

from dplab import optics, raytrace


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
