"""The scoring protocols of Table 1 of Xin et al. (ICCV 2021, supplement D), dplab.xin.protocol."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dplab.xin import protocol as P


def _image(h=40, w=56, seed=0):
    g = torch.rand(1, 1, h // 4, w // 4, generator=torch.Generator().manual_seed(seed))
    return F.interpolate(g, size=(h, w), mode="bicubic", align_corners=False).clamp(0.05, 0.95)


def _numpy_bilateral(img, sigma_s=3.0, sigma_v=0.05, reg=1e-8):
    """The authors' util.filter_bilateral transcribed: every shift of the 21x21 window."""
    gaussian = lambda r2, sigma: (np.exp(-0.5 * r2 / sigma ** 2) * 3).astype(np.int32) * 1.0 / 3.0
    win = int(3 * sigma_s + 1)
    wsum = np.ones(img.shape) * reg
    out = img * reg
    for sx in range(-win, win + 1):
        for sy in range(-win, win + 1):
            w = gaussian(np.float32(sx ** 2 + sy ** 2), sigma_s)
            off = np.roll(img, [sy, sx], axis=[0, 1])
            tw = w * gaussian((off - img) ** 2, sigma_v)
            out = out + off * tw
            wsum = wsum + tw
    return out / wsum


def test_bilateral_is_the_authors_filter():
    x = _image() * 0.4 + 0.02 * torch.rand(1, 1, 40, 56, generator=torch.Generator().manual_seed(1))
    mean = 0.3
    s = 0.5 / mean
    want = _numpy_bilateral((x[0, 0] * s).numpy().astype(np.float32)) / s
    got = P.authors_bilateral(x, mean)[0, 0].numpy()
    # equal up to the few pixels where a quantised weight floor(3 exp(.)) / 3 sits on a step and
    # one ulp of exp (torch's against numpy's float32) flips it
    off = np.abs(got - want) > 1e-5
    assert off.mean() < 0.01 and np.abs(got - want).max() < 1e-3
    # it smooths noise but keeps an edge
    step = torch.zeros(1, 1, 20, 20)
    step[..., 10:] = 0.6
    assert torch.allclose(P.authors_bilateral(step, 0.3), step, atol=1e-6)


def test_quantize_truncates_like_save_16_bit_figure():
    x = torch.tensor([-0.1, 0.0, 0.5, 1.0, 1.2])
    assert P.quantize(x, 16).tolist() == pytest.approx([0.0, 0.0, 32767 / 65535, 1.0, 1.0])
    assert float(P.quantize(torch.tensor(0.999), 8)) == pytest.approx(254 / 255)


def test_fit_affine_recovers_scale_and_translation():
    g = _image(64, 80, seed=2).double()
    m = torch.tensor([[1.004, 0.002, 1.7], [-0.001, 0.997, -2.2]], dtype=torch.float64)
    p = P.warp_affine(g, m)
    got = P.fit_affine(p, g)
    assert (got - m).abs().max() < 2e-3
    pred, gt, info = P.prepare(p, g, obs_max=1.0, obs_mean=0.5, protocol=P.Protocol(scale="raw", align="affine"))
    assert info["shift"] == (2, -2) and float((pred - gt).abs().max()) < 1e-3
    # a transform found on another scene is used as given (translation in full-resolution pixels)
    _, _, info2 = P.prepare(p, g, obs_max=1.0, obs_mean=0.5, protocol=P.Protocol(align="affine"), affine=m)
    assert torch.equal(info2["affine"], m)


@pytest.mark.parametrize("scale,factor", [("raw", 1.0), ("obs_max", 1 / 0.8), ("gt_max", None),
                                          ("obs_mean", 0.5 / 0.25), ("own_max", None)])
def test_intensity_scales(scale, factor):
    gt = _image(48, 64, seed=3) * 0.7
    pred = (gt + 0.01 * torch.randn(gt.shape, generator=torch.Generator().manual_seed(4))).clamp_min(0)
    proto = P.Protocol(scale=scale, align="none")
    p, g, _ = P.prepare(pred, gt, obs_max=0.8, obs_mean=0.25, protocol=proto)
    b = 8
    want_g = gt[..., b:-b, b:-b].double()
    want_p = pred[..., b:-b, b:-b].double()
    if scale == "own_max":
        want_p, want_g = want_p / pred.max(), want_g / gt.max()
    elif scale == "gt_max":
        want_p, want_g = want_p / gt.max(), want_g / gt.max()
    else:
        want_p, want_g = want_p * factor, want_g * factor
    assert torch.allclose(p, want_p.clamp(0, 1), atol=1e-6) and torch.allclose(g, want_g.clamp(0, 1), atol=1e-6)
    out = P.score_all_in_focus(pred, gt, obs_max=0.8, obs_mean=0.25, protocol=proto)
    mse = float((want_p.clamp(0, 1) - want_g.clamp(0, 1)).square().mean())
    assert out["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-6)


def test_table1_default_and_candidates():
    assert P.TABLE1 == P.Protocol() and P.TABLE1.scale == "obs_max" and P.TABLE1.align == "shift"
    assert P.TABLE1.border == 8 and P.TABLE1 in P.CANDIDATES.values()
    # shift alignment: sizes scale with the downsampling (ceil), like the shift of dplab before
    gt = _image(48, 64, seed=5)
    moved = torch.roll(gt, (1, -1), (-2, -1))
    _, _, info = P.prepare(moved, gt, obs_max=1.0, obs_mean=0.5, downscale=4)
    assert info["shift"] == (1, -1)
    with pytest.raises(ValueError, match="scale"):
        P.Protocol(scale="gamma")
    with pytest.raises(ValueError, match="quantize"):
        P.Protocol(quantize=12)
    with pytest.raises(ValueError, match="border"):
        P.Protocol(border=2, max_shift=4)
