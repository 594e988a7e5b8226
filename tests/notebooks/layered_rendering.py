"""Checks for book/layered_rendering.ipynb (chapter 3: layered DP rendering, RDPD Secs. 2.3, 3).

Numbers are compared with values derived here: Eq. 1 for the scene's CoCs, a scipy
convolution of a random image for the left + right split, PSF centroids computed from
dplab.optics.psf for the disparity, closed forms for distortion and noise, and the synthetic dataset
on disk (file counts, a bit-exact re-render of sample 0, combined == left + right within PNG
quantisation, the wiggle GIF's two frames).
"""

import json
import math
from pathlib import Path

import numpy as np

# scene, layers step by step, occlusion crops, coverage curve, distortion/noise,
# wiggle (static), staircase disparity, dataset grid
MIN_FIGURES = 8


def _coc(depth_m, px_scale):
    # Camera(50 mm, f/2, focus 2 m, pitch 40 / px_scale um), RDPD Eq. 1 in pixels
    f, n, s, p = 0.05, 2.0, 2.0, 40e-6 / px_scale
    return f * f * (depth_m - s) / (2 * n * (s - f) * depth_m) / p


def check(metrics, output_dir):
    import torch
    from scipy import ndimage

    from dplab.optics import psf

    from dplab.render import layered as render

    from dplab.render import synth
    from dplab.data.pngio import read_png

    output_dir = Path(output_dir)
    stair = metrics["stair_coc_px"]
    px_scale = -stair[0] / 8.0
    # --- the scene's CoCs follow Eq. 1; the focus object is on the focal plane
    for key, d in (("coc_near", 1.0), ("coc_mid", 4.0), ("coc_far", 16.0)):
        assert math.isclose(metrics[key], _coc(d, px_scale), rel_tol=1e-6), key
    assert metrics["num_layers"] == 4
    assert np.allclose(sorted(metrics["layer_levels_px"]),
                       sorted([_coc(d, px_scale) for d in (1.0, 2.0, 4.0, 16.0)]), atol=1e-5)

    # --- compositing by hand == render_views; in-focus region == sharp; L + R == I * (Hl + Hr)
    assert metrics["by_hand_max_abs_diff"] < 1e-5
    assert metrics["infocus_pixels"] > 100
    assert metrics["infocus_max_abs_diff"] < 1e-6
    assert metrics["split_max_abs_diff"] < 1e-5
    # independent: a random image at one CoC, left + right against scipy's convolution with
    # the summed PSF (replicated borders = mode "nearest")
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 1, 40, 52, generator=g)
    c = 3.5
    left, right, _ = render.render_views(img, torch.full((40, 52), c))
    hl, hr = psf.butterworth_dp(c, dtype=torch.float64)
    want = ndimage.convolve(img[0, 0].double().numpy(), (hl + hr).numpy(), mode="nearest")
    assert np.abs((left + right)[0, 0].double().numpy() - want).max() < 1e-6
    assert math.isclose(float((hl + hr).sum()), 1.0, abs_tol=1e-9)

    # --- occlusion: the reference agrees away from edges; alpha wins on the far side where
    # occlusion matters; the hard mask wins on the near side (hidden content); alpha with
    # complete layers beats the hard mask at depth edges in every case; normalising helps.
    occ = metrics["occlusion_mae"]
    assert set(occ) == {"focus on background", "focus on object", "both blurred"}
    for name, res in occ.items():
        assert res["alpha"]["flat"] < 3e-3, name
        assert res["alpha, complete layers"]["edge"] < res["hard mask"]["edge"], name
        assert res["alpha"]["edge"] < res["alpha, raw"]["edge"], name
        assert res["alpha, complete layers"]["edge"] <= res["alpha"]["edge"] + 1e-9, name
    for name in ("focus on background", "focus on object"):
        assert occ[name]["alpha"]["far_side"] < 0.5 * occ[name]["hard mask"]["far_side"], name
    assert occ["focus on object"]["alpha"]["edge"] < occ["focus on object"]["hard mask"]["edge"]
    assert occ["focus on object"]["alpha"]["near_side"] < 1e-5  # the in-focus object is exact
    bg = occ["focus on background"]
    assert bg["hard mask"]["near_side"] < bg["alpha"]["near_side"]
    wins = [n for n in occ if occ[n]["alpha"]["edge"] < occ[n]["hard mask"]["edge"]]
    assert sorted(metrics["edge_alpha_wins"]) == sorted(wins)
    assert sorted(metrics["edge_hard_wins"]) == sorted(n for n in occ if n not in wins)

    # --- coverage normalisation: a uniform grey survives; the raw formula darkens it, but never
    # below 1 - e^-1 (Exercise 1: the coverage of n layers of alpha 1/n decreases towards it)
    assert metrics["floor_layers"] > 20
    assert metrics["floor_norm_max_dev"] < 1e-5
    assert 1 - math.exp(-1) - 0.02 < metrics["floor_raw_min"] <= metrics["floor_raw_mean"] < 0.9
    assert math.isclose(metrics["ex1_cov5"], 1 - 0.8 ** 5, rel_tol=1e-12)

    # --- distortion: the corner moves by (1 - 1 / (1 + c1 + c2 + c3)) half-diagonals
    coeffs = metrics["distortion_coeffs"]
    assert np.allclose(coeffs, (2e-2, 2e-2, 3e-2))
    h, w = 240 * px_scale, 360 * px_scale  # the chapter's (H, W)
    assert math.isclose(metrics["corner_shift_px"], (1 - 1 / 1.07) * 0.5 * math.hypot(h, w), rel_tol=1e-6)
    assert metrics["sharp_warp_max_abs_diff"] < 1e-6
    # --- noise I + I N: relative std = sigma within 5 standard errors; L and R independent
    n = metrics["noise_samples"]
    sigma = metrics["noise_sigma"]
    assert abs(metrics["noise_rel_std"] - sigma) < 5 * sigma / math.sqrt(2 * n)
    assert abs(metrics["noise_lr_corr"]) < 5 / math.sqrt(n)

    # --- disparity: zero on the focal plane, sign opposite to the CoC's (behind focus the left
    # view lies left of the right one, RDPD Sec. 2.2), close to the PSF centroid distance
    disp = metrics["disparity_px"]
    assert len(disp) == len(stair) == 8
    for cc, d in zip(stair, disp):
        if abs(cc) < 0.5:
            assert abs(d) < 0.05
            continue
        kl, kr = psf.butterworth_dp(cc, dtype=torch.float64)
        x = np.arange(kl.shape[-1]) - kl.shape[-1] // 2
        cen = float((kl.sum(0).numpy() * x).sum() / kl.sum() - (kr.sum(0).numpy() * x).sum() / kr.sum())
        assert np.sign(d) == np.sign(cen) == -np.sign(cc), (cc, d, cen)
        assert 0.8 * abs(cen) < abs(d) < 1.4 * abs(cen) + 0.1, (cc, d, cen)
    # decreasing in the CoC from |CoC| >= 2 px on; below, the authors' ramp half-width R + p
    # jumps with their integer Gaussian window (psf.ramp_half_width), as in their generator
    big = [d for cc, d in zip(stair, disp) if abs(cc) >= 2]
    assert all(b < a for a, b in zip(big, big[1:]))
    assert max(abs(v) for v in metrics["ex2_disk_disparity_px"]) < 0.05  # disc PSF: no disparity

    # --- wiggle GIF: two frames, the size of the (2x enlarged) scene
    from PIL import Image

    with Image.open(output_dir / "wiggle.gif") as gif:
        assert gif.n_frames == 2
        up = 2 if w <= 360 else 1
        assert gif.size == (int(round(w)) * up, int(round(h)) * up)

    # --- dataset: file counts, manifest, combined == L + R, bit-exact re-render of sample 0
    cfg = synth.SynthConfig(**{k: tuple(v) if isinstance(v, list) else v
                               for k, v in metrics["dataset_config"].items()})
    root = output_dir / "synth"
    manifest = json.loads((root / synth.MANIFEST_NAME).read_text())
    assert manifest["complete"] is True
    total = 0
    for split, (a, b) in manifest["splits"].items():
        names = sorted(p.name for p in (root / f"{split}_c" / "source").glob("*.png"))
        assert names == [f"{i:05d}.png" for i in range(a, b)], split
        for sub, pattern in (("c/target", "*.png"), ("l/source", "*_L.png"), ("r/source", "*_R.png"),
                             ("c/defocus", "*.npy"), ("c/meta", "*.json")):
            folder, kind = sub.split("/")
            assert len(list((root / f"{split}_{folder}" / kind).glob(pattern))) == b - a, (split, sub)
        total += len(names)
    assert total == cfg.count == metrics["dataset_count"]
    assert metrics["dataset_split_counts"] == {s: b - a for s, (a, b) in manifest["splits"].items()}
    frames = list((root / "sequences").glob("*_c/source/seq_*/*.png"))
    assert len(frames) == cfg.sequences * cfg.frames
    first = next(p for s in synth.SPLITS for p in sorted((root / f"{s}_c" / "source").glob("*.png")))
    arrays, _ = synth.render_sample(cfg, int(first.stem))
    assert np.array_equal(read_png(first), arrays["combined"])
    split = first.parent.parent.name[:-2]
    left = read_png(root / f"{split}_l" / "source" / f"{first.stem}_L.png").astype(np.int64)
    right = read_png(root / f"{split}_r" / "source" / f"{first.stem}_R.png").astype(np.int64)
    comb = read_png(first).astype(np.int64)
    # stored: round(65535 (l + r)) and round(65535 * 2 l): |2 comb - L - R| <= 2 (rounding)
    assert np.abs(2 * comb - left - right).max() <= 2
    assert metrics["same_seed_same_bytes"] is True and metrics["file_matches_rerender"] is True
