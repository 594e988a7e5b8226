"""Affine-invariant defocus-map metrics (Garg et al. ICCV 2019, google-research get_metrics.py)
against hand-computed cases, an independent numpy implementation and their invariances."""

import numpy as np
import pytest
import torch

from dplab.metrics.defocus import affine_fit, aiwe1, aiwe2, spearman_error


def _reference_numpy(pred, gt, conf, irls_iters=5, epsilon=1e-3):
    """The reference algorithm written with numpy.linalg.lstsq (row-scaled design matrix)."""
    x, y, w = (np.asarray(a, np.float64).ravel() for a in (pred, gt, conf))
    A = np.stack([x, np.ones_like(x)], 1)
    irls = np.ones_like(w)
    for _ in range(irls_iters):
        s = np.sqrt(w * irls)
        (a, b), *_ = np.linalg.lstsq(s[:, None] * A, s * y, rcond=None)
        resid = np.abs(a * x + b - y)
        irls = 1 / np.maximum(epsilon, resid)
    wmae = (w * resid).sum() / w.sum()
    s = np.sqrt(w)
    (a, b), *_ = np.linalg.lstsq(s[:, None] * A, s * y, rcond=None)
    wrmse = np.sqrt((w * (a * x + b - y) ** 2).sum() / w.sum())
    n = x.size

    def ranks(z):
        r = np.argsort(np.argsort(z, kind="stable"), kind="stable")
        return (r - n // 2) / (n // 2)

    def pearson(u, v):
        e = lambda z: (w * z).sum() / w.sum()
        return (e(u * v) - e(u) * e(v)) / np.sqrt((e(u * u) - e(u) ** 2) * (e(v * v) - e(v) ** 2))

    rho = max(pearson(ranks(x), ranks(y)), pearson(ranks(-x), ranks(y)))
    return wmae, wrmse, 1 - rho


def test_hand_computed_cases():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0])
    y = torch.tensor([0.0, 1.0, 1.0, 2.0])
    assert float(aiwe2(x, y)) == pytest.approx(np.sqrt(0.05), rel=1e-6)    # fit 0.6x + 0.1
    # L1 fit through three collinear points, one outlier of 7: error 7 / 4
    assert float(aiwe1(x, torch.tensor([0.0, 1.0, 2.0, 10.0]))) == pytest.approx(1.75, abs=0.02)
    # Spearman without ties: rho = 1 - 6 sum d^2 / (n (n^2 - 1)) = 0.8
    assert float(spearman_error(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 2.0, 4.0]))) \
        == pytest.approx(0.2, abs=1e-6)
    a, b = affine_fit(x, 3 * x - 2)
    assert (float(a), float(b)) == pytest.approx((3.0, -2.0))


def test_matches_an_independent_numpy_implementation():
    rng = np.random.default_rng(0)
    gt = rng.random((40, 50))
    pred = 2.5 * gt - 0.3 + 0.05 * rng.standard_normal(gt.shape)
    pred[5:10, 5:10] += 1.0                                  # outliers
    conf = (rng.random(gt.shape) > 0.2).astype(np.float64)
    ref = _reference_numpy(pred, gt, conf)
    got = (aiwe1(pred, gt, conf), aiwe2(pred, gt, conf), spearman_error(pred, gt, conf))
    for g, r in zip(got, ref):
        assert float(g) == pytest.approx(r, rel=1e-5, abs=1e-7)


def test_affine_invariance_and_rank_invariance():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(30, 30, generator=g, dtype=torch.float64)    # float64: exact affine maps
    pred = gt + 0.1 * torch.rand(30, 30, generator=g, dtype=torch.float64)
    base = (aiwe1(pred, gt), aiwe2(pred, gt), spearman_error(pred, gt))
    for a, b in ((3.0, 1.0), (-0.5, 2.0), (1e-3, -7.0)):
        moved = (aiwe1(a * pred + b, gt), aiwe2(a * pred + b, gt), spearman_error(a * pred + b, gt))
        for m, o in zip(moved, base):
            assert float(m) == pytest.approx(float(o), rel=1e-4, abs=1e-6)
    # Spearman only sees the order, and either orientation
    assert float(spearman_error(torch.exp(3 * pred), gt)) == pytest.approx(float(base[2]), abs=1e-6)
    # scaling the ground truth scales AIWE
    assert float(aiwe2(pred, 2 * gt)) == pytest.approx(2 * float(base[1]), rel=1e-5)
    # a perfect affine copy has no error
    assert float(aiwe1(2 * gt + 1, gt)) < 1e-5 and float(aiwe2(-gt, gt)) < 1e-6
    assert float(spearman_error(-gt, gt)) == pytest.approx(0.0, abs=1e-6)


def test_confidence_weights_exclude_pixels():
    x = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([1.0, 3.0, 5.0, 7.0, -50.0])
    w = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0])
    assert float(aiwe2(x, y, w)) < 1e-6 and float(aiwe1(x, y, w)) < 1e-5
    assert float(aiwe2(x, y)) > 1.0


def test_batched_inputs_give_one_value_per_image():
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(3, 1, 8, 8, generator=g)
    pred = gt + 0.1 * torch.rand(3, 1, 8, 8, generator=g)
    for fn in (aiwe1, aiwe2, spearman_error):
        out = fn(pred, gt)
        assert out.shape == (3,)
        assert float(out[1]) == pytest.approx(float(fn(pred[1], gt[1])), rel=1e-6)


def test_errors():
    with pytest.raises(ValueError, match="same shape"):
        aiwe1(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="weight"):
        aiwe2(torch.rand(4), torch.rand(4), -torch.ones(4))
    with pytest.raises(ValueError, match="weight sums to 0"):
        spearman_error(torch.rand(4), torch.rand(4), torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        aiwe2(torch.tensor([0.0, float("nan")]), torch.zeros(2))


def test_a_constant_map_has_no_rank_correlation():
    y = torch.tensor([1.0, 3.0, 2.0, 4.0])
    assert torch.isnan(spearman_error(torch.full((4,), 2.0), y))       # was 0.95: positions as ranks
    assert torch.isnan(spearman_error(y, torch.zeros(4)))
    # constant over the pixels that count (weight > 0), whatever the others hold
    assert torch.isnan(spearman_error(torch.tensor([1.0, 1.0, 1.0, 9.0]), y, torch.tensor([1.0, 1.0, 1.0, 0.0])))
    batch = torch.stack([y.reshape(1, 2, 2), torch.ones(1, 2, 2)])     # one value per image
    out = spearman_error(batch, batch.flip(0))
    assert out.shape == (2,) and torch.isnan(out).all()
    assert float(spearman_error(batch[:1], batch[:1])) == pytest.approx(0.0, abs=1e-6)
