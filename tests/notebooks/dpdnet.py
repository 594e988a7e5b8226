"""Checks for book/dpdnet.ipynb (chapter 6: DPDNet, DP input vs single input).

Independent derivations: the parameter count of the U-Net from a closed form in the widths,
the blurred-input PSNR recomputed with numpy from the synthetic PNGs the chapter wrote, the
checkpoint on disk reloaded and re-evaluated on one test image, and the verdict strings
against the numbers.
"""

import math
from pathlib import Path

import numpy as np

MIN_FIGURES = 3  # data example, loss curves, result panels (the shapes table is markdown)


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def _dpdnet_params(cin, widths):
    """Closed form: two 3x3 convs per level, bottleneck 2*w4, 2x2 up-convs, head 3x3 -> 1x1."""
    w1, w2, w3, w4 = widths
    n = 0
    for a, b in [(cin, w1), (w1, w2), (w2, w3), (w3, w4), (w4, 2 * w4)]:
        n += _conv(a, b, 3) + _conv(b, b, 3)
    for a, b in [(2 * w4, w4), (w4, w3), (w3, w2), (w2, w1)]:
        n += _conv(a, b, 2) + _conv(2 * b, b, 3) + _conv(b, b, 3)
    return n + _conv(w1, 3, 3) + _conv(3, 3, 1)


def _psnr_np(a, b):
    return 10 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    # --- parameter counts: paper width equals the authors' code and the closed form
    assert metrics["params_full_dp"] == 31_035_151 == _dpdnet_params(6, (64, 128, 256, 512))
    assert metrics["params_full_single"] == 31_033_423 == _dpdnet_params(3, (64, 128, 256, 512))
    assert metrics["params_full_diff"] == 3 * 9 * 64
    w = tuple(metrics["widths"])
    assert metrics["params_small_dp"] == _dpdnet_params(6, w)
    assert metrics["params_small_single"] == _dpdnet_params(3, w)
    # shapes: each level halves the patch, the head returns 3 channels at full size
    p = metrics["patch"]
    shp = metrics["shapes"]
    assert shp["enc1"] == [1, w[0], p, p] and shp["enc4"] == [1, w[3], p // 8, p // 8]
    assert shp["bottleneck"] == [1, 2 * w[3], p // 16, p // 16] and shp["head"] == [1, 3, p, p]

    # --- data: blurred-input PSNR recomputed from the PNGs on disk with numpy
    assert metrics["data_source"].startswith("synthetic")
    from dplab.data.pngio import read_png

    root = output_dir / "synth"
    names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert len(names) == metrics["n_test"] >= 2
    ours = []
    for n in names:
        src = read_png(root / "test_c" / "source" / f"{n}.png").astype(np.float64) / 65535
        tgt = read_png(root / "test_c" / "target" / f"{n}.png").astype(np.float64) / 65535
        ours.append(_psnr_np(src, tgt))
    assert np.allclose(ours, metrics["per_image_psnr"]["blurred input"], atol=1e-3)
    assert math.isclose(np.mean(ours), metrics["test_psnr_input"], abs_tol=1e-3)

    # --- training: same number of steps for both inputs; the loss went down
    steps = metrics["steps_dp"]
    assert steps == metrics["steps_single"] > 0
    for key in ("loss_dp", "loss_single"):
        loss = np.array(metrics[key])
        assert len(loss) == steps
        third = max(1, len(loss) // 3)
        assert loss[-third:].mean() < loss[:third].mean(), (key, loss[:third].mean(), loss[-third:].mean())

    # --- the saved DP weights reproduce the recorded PSNR of the first test image
    import torch

    from dplab.models import build
    from dplab.train import load_checkpoint

    ck = load_checkpoint(metrics["checkpoint_dp"])
    net = build("dpdnet", widths=w)
    net.load_state_dict(ck["model"])
    net.eval()
    n = names[0]
    left = read_png(root / "test_l" / "source" / f"{n}_L.png").astype(np.float32) / 65535 * 0.5
    right = read_png(root / "test_r" / "source" / f"{n}_R.png").astype(np.float32) / 65535 * 0.5
    tgt = read_png(root / "test_c" / "target" / f"{n}.png").astype(np.float64) / 65535
    x = torch.from_numpy(np.concatenate([left, right], axis=2)).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = net(x)[0].permute(1, 2, 0).double().numpy().clip(0, 1)
    assert math.isclose(_psnr_np(y, tgt), metrics["per_image_psnr"]["DPDNet (DP)"][0], abs_tol=0.05)

    # --- verdicts match the numbers
    gain = metrics["test_psnr_dp"] - metrics["test_psnr_single"]
    assert math.isclose(metrics["gain_dp_vs_single_db"], gain, abs_tol=1e-9)
    assert ("does not reproduce" in metrics["verdict_dp"]) == (gain <= 0)
    gin = metrics["test_psnr_dp"] - metrics["test_psnr_input"]
    assert ("does not yet beat" in metrics["verdict_input"]) == (gin <= 0)
    wins = sum(a > b for a, b in zip(metrics["per_image_psnr"]["DPDNet (DP)"], metrics["per_image_psnr"]["DPDNet (single)"]))
    assert metrics["dp_wins"] == wins
    for m in ("psnr", "ssim", "mae"):
        for k in ("input", "single", "dp"):
            assert math.isfinite(metrics[f"test_{m}_{k}"])
