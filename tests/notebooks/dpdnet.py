"""Checks for book/dpdnet.ipynb (chapter 6: DPDNet, DP input vs single input).

Independent derivations: the parameter count of the U-Net from a closed form in the widths
(the authors' head at paper width, the residual head at the live run's width); the shipped
weights' numbers against their cards, the showcase PSNRs and one held-out image's scores
recomputed by running the shipped networks on a re-rendered sample with a numpy PSNR, the
comparison (margin, wins, verdict) recomputed from the per-image scores; the live run's
blurred-input PSNR recomputed with numpy from the synthetic PNGs the chapter wrote, its
mean |CoC| from the saved defocus maps, its checkpoint on disk reloaded and re-evaluated on
one test image; the overfitting experiment's starting points (the residual head starts at
the input exactly); and the verdict strings against the numbers.
"""

import math
from pathlib import Path

import numpy as np

MIN_FIGURES = 5  # showcase, DP-vs-single scatter, data example, loss curves, result panels, overfit curves


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def _dpdnet_params(cin, widths, head="paper"):
    """Closed form: two 3x3 convs per level, bottleneck 2*w4, 2x2 up-convs, and the head:
    3x3 -> 3 (ReLU) -> 1x1 -> 3 for the authors' head, one 3x3 conv to 3 for the residual head."""
    w1, w2, w3, w4 = widths
    n = 0
    for a, b in [(cin, w1), (w1, w2), (w2, w3), (w3, w4), (w4, 2 * w4)]:
        n += _conv(a, b, 3) + _conv(b, b, 3)
    for a, b in [(2 * w4, w4), (w4, w3), (w3, w2), (w2, w1)]:
        n += _conv(a, b, 2) + _conv(2 * b, b, 3) + _conv(b, b, 3)
    if head == "paper":
        return n + _conv(w1, 3, 3) + _conv(3, 3, 1)
    return n + _conv(w1, 3, 3)


def _psnr_np(a, b):
    return 10 * math.log10(1.0 / float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _check_shipped(metrics):
    """The shipped weights: card numbers, showcase and comparison, recomputed."""
    import torch

    from dplab.models import count_parameters, shipped

    from dplab.eval import heldout

    cards = {n: shipped.load_card(n) for n in ("dpdnet", "dpdnet_single")}
    held = {n: c["heldout"] for n, c in cards.items()}
    assert metrics["card_images"] == held["dpdnet"]["images"] == held["dpdnet_single"]["images"] == 48
    assert math.isclose(metrics["card_psnr_input"], held["dpdnet"]["blurred_input"]["psnr"], abs_tol=1e-9)
    assert math.isclose(metrics["card_psnr_dp"], held["dpdnet"]["network"]["psnr"], abs_tol=1e-9)
    assert math.isclose(metrics["card_psnr_single"], held["dpdnet_single"]["network"]["psnr"], abs_tol=1e-9)
    assert math.isclose(metrics["card_ssim_dp"], held["dpdnet"]["network"]["ssim"], abs_tol=1e-9)
    # both cards were scored on the same held-out images: the same blurred input
    assert math.isclose(held["dpdnet"]["blurred_input"]["psnr"], held["dpdnet_single"]["blurred_input"]["psnr"],
                        abs_tol=1e-6)
    assert metrics["card_steps_dp"] == cards["dpdnet"]["steps"] and metrics["card_steps_single"] == cards["dpdnet_single"]["steps"]
    assert math.isclose(metrics["card_time_dp_min"], cards["dpdnet"]["train_wall_s"] / 60, rel_tol=1e-9)
    widths = tuple(metrics["card_widths"])
    assert widths == tuple(cards["dpdnet"]["model_spec"]["kwargs"]["widths"])
    assert metrics["card_params_dp"] == _dpdnet_params(6, widths, "residual")
    assert count_parameters(shipped.pretrained("dpdnet_single")) == _dpdnet_params(3, widths, "residual")

    # per-image scores: the blurred input recomputed with numpy on every image; means, margin,
    # wins and the verdict from the per-image lists
    per = metrics["shipped_per_image"]
    images = metrics["shipped_images"]
    assert images == list(range(metrics["heldout_n"])) and metrics["shipped_n"] == len(images) == 8
    samples = heldout.heldout_samples(images)
    for k, s in enumerate(samples):
        ours = _psnr_np(s["combined"][0].numpy(), s["sharp"][0].numpy())
        assert math.isclose(ours, per["blurred input"]["psnr"][k], abs_tol=1e-3), k
    mean = {k: float(np.mean(per[k]["psnr"])) for k in per}
    assert math.isclose(metrics["shipped_psnr_dp"], mean["dpdnet"], abs_tol=1e-9)
    assert math.isclose(metrics["shipped_psnr_single"], mean["dpdnet_single"], abs_tol=1e-9)
    assert math.isclose(metrics["shipped_psnr_input"], mean["blurred input"], abs_tol=1e-9)
    margin = mean["dpdnet"] - mean["dpdnet_single"]
    assert math.isclose(metrics["shipped_margin_db"], margin, abs_tol=1e-3)
    wins = sum(a > b for a, b in zip(per["dpdnet"]["psnr"], per["dpdnet_single"]["psnr"]))
    assert metrics["shipped_wins"] == wins
    assert metrics["shipped_verdict"] == ("reproduced" if margin > 0 else "not reproduced")
    assert math.isclose(metrics["shipped_gain_dp"], mean["dpdnet"] - mean["blurred input"], abs_tol=1e-3)
    assert math.isclose(metrics["shipped_gain_single"], mean["dpdnet_single"] - mean["blurred input"], abs_tol=1e-3)
    assert metrics["shipped_dp_beats_input"] == sum(
        a > b for a, b in zip(per["dpdnet"]["psnr"], per["blurred input"]["psnr"]))
    # mean |CoC| per image from the defocus maps; its correlation with what the views add
    coc = [float(s["defocus"].abs().mean()) for s in samples]
    assert np.allclose(coc, metrics["shipped_coc"], rtol=1e-6)
    gain = np.array(per["dpdnet"]["psnr"]) - np.array(per["dpdnet_single"]["psnr"])
    # (outputs recomputed here with another thread count differ in the last float digits)
    assert math.isclose(metrics["shipped_coc_corr"], float(np.corrcoef(coc, gain)[0, 1]), abs_tol=1e-4)
    corr = metrics["shipped_coc_corr"]
    assert metrics["shipped_coc_reading"].split(":")[0] == ("negative" if corr <= -0.2 else "positive" if corr >= 0.2
                                                            else "weak")
    assert math.isclose(metrics["shipped_coc_max"], max(float(s["defocus"].abs().max()) for s in samples), rel_tol=1e-6)
    assert math.isclose(metrics["shipped_size_ratio"], 31_035_151 / metrics["card_params_dp"], rel_tol=1e-9)

    # the showcase image: the one with the largest DP gain; its PSNRs recomputed by running
    # the shipped networks on the re-rendered sample (numpy PSNR of the clipped outputs)
    idx = metrics["show_index"]
    assert idx == images[int(np.argmax(gain))]
    s = samples[images.index(idx)]
    sharp = s["sharp"][0].numpy()
    with torch.no_grad():
        y_dp = shipped.pretrained("dpdnet")(torch.cat([s["left"], s["right"]], 1))[0].clamp(0, 1).numpy()
        y_single = shipped.pretrained("dpdnet_single")(s["combined"])[0].clamp(0, 1).numpy()
    assert math.isclose(_psnr_np(y_dp, sharp), metrics["show_psnr_dp"], abs_tol=1e-3)
    assert math.isclose(_psnr_np(y_single, sharp), metrics["show_psnr_single"], abs_tol=1e-3)
    assert math.isclose(_psnr_np(s["combined"][0].numpy(), sharp), metrics["show_psnr_input"], abs_tol=1e-3)
    # ... and they are the per-image scores of that image
    k = images.index(idx)
    assert math.isclose(metrics["show_psnr_dp"], per["dpdnet"]["psnr"][k], abs_tol=1e-4)
    assert math.isclose(metrics["show_psnr_single"], per["dpdnet_single"]["psnr"][k], abs_tol=1e-4)


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    # --- parameter counts: paper width equals the authors' code and the closed form (paper head)
    assert metrics["params_full_dp"] == 31_035_151 == _dpdnet_params(6, (64, 128, 256, 512))
    assert metrics["params_full_single"] == 31_033_423 == _dpdnet_params(3, (64, 128, 256, 512))
    assert metrics["params_full_diff"] == 3 * 9 * 64
    w = tuple(metrics["widths"])
    head = metrics["head"]
    assert head == "residual"
    assert metrics["params_small_dp"] == _dpdnet_params(6, w, head)
    assert metrics["params_small_single"] == _dpdnet_params(3, w, head)
    # shapes: each level halves the patch, the head returns 3 channels at full size
    p = metrics["patch"]
    shp = metrics["shapes"]
    assert shp["enc1"] == [1, w[0], p, p] and shp["enc4"] == [1, w[3], p // 8, p // 8]
    assert shp["bottleneck"] == [1, 2 * w[3], p // 16, p // 16] and shp["head"] == [1, 3, p, p]

    # --- the shipped weights (present in the repository)
    assert metrics["shipped_available"] is True, "dplab/weights/dpdnet*.pt are missing"
    _check_shipped(metrics)

    # --- live run data: blurred-input PSNR recomputed from the PNGs on disk with numpy
    assert metrics["data_source"].startswith("synthetic")
    from dplab.data.pngio import read_png

    root = output_dir / "synth"
    names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert len(names) == metrics["n_test"] >= 2
    ours, coc = [], []
    for n in names:
        src = read_png(root / "test_c" / "source" / f"{n}.png").astype(np.float64) / 65535
        tgt = read_png(root / "test_c" / "target" / f"{n}.png").astype(np.float64) / 65535
        ours.append(_psnr_np(src, tgt))
        coc.append(np.abs(np.load(root / "test_c" / "defocus" / f"{n}.npy")).ravel())
    assert np.allclose(ours, metrics["per_image_psnr"]["blurred input"], atol=1e-3)
    assert math.isclose(np.mean(ours), metrics["test_psnr_input"], abs_tol=1e-3)
    coc = np.concatenate(coc)
    assert math.isclose(coc.mean(), metrics["coc_mean_abs_px"], rel_tol=1e-5)
    assert metrics["coc_mean_abs_px"] > 2.0, "the live run's blur must be several pixels"

    # --- training: same number of steps for both inputs; the loss went down
    steps = metrics["steps_dp"]
    assert steps == metrics["steps_single"] == metrics["steps_planned"] > 0
    for key in ("loss_dp", "loss_single"):
        loss = np.array(metrics[key])
        assert len(loss) == steps and np.isfinite(loss).all()
        third = max(1, len(loss) // 3)
        assert loss[-third:].mean() < loss[:third].mean(), (key, loss[:third].mean(), loss[-third:].mean())

    # --- the saved DP weights reproduce the recorded PSNR of the first test image
    import torch

    from dplab.models import build
    from dplab.training.checkpoints import load_checkpoint

    ck = load_checkpoint(metrics["checkpoint_dp"])
    net = build("dpdnet", widths=w, head=head)
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
    assert math.isclose(metrics["gain_dp_db"], gin, abs_tol=1e-9)
    assert ("does not beat" in metrics["verdict_input"]) == (gin <= 0)
    assert math.isclose(metrics["gain_single_db"], metrics["test_psnr_single"] - metrics["test_psnr_input"], abs_tol=1e-9)
    wins = sum(a > b for a, b in zip(metrics["per_image_psnr"]["DPDNet (DP)"], metrics["per_image_psnr"]["DPDNet (single)"]))
    assert metrics["dp_wins"] == wins
    for m in ("psnr", "ssim", "mae"):
        for k in ("input", "single", "dp"):
            assert math.isfinite(metrics[f"test_{m}_{k}"])

    # --- why the first version did not learn: the residual head starts at the input exactly,
    # the paper head well below it (near grey)
    assert metrics["overfit_steps"] > 0 and metrics["overfit_n"] == 4
    assert math.isclose(metrics["overfit_psnr_start_residual"], metrics["overfit_psnr_input"], abs_tol=1e-4)  # float32
    assert metrics["overfit_psnr_start_paper"] < metrics["overfit_psnr_input"] - 3
    assert math.isclose(metrics["overfit_gap_db"], metrics["overfit_psnr_residual"] - metrics["overfit_psnr_paper"],
                        abs_tol=1e-9)
