"""Checks for book/rdpd.ipynb (chapter 7: RDPD, why the first version did not learn, the live
run on images and sequences, the shipped weights and their edge-loss comparison).

Independent derivations: RDPD's parameter count from a closed form (encoder/decoder convs plus
the ConvLSTM's ``4 h (9 c_in + 9 h + 1)``), the radial map from numpy, the alternation of
mini-batch shapes, the blurred-input PSNR of the test images and sequences recomputed with
numpy from the synthetic PNGs, the mean |CoC| from the written defocus maps, the one-batch
experiment's input PSNR and the old data's blur from re-rendered images, the shipped cards'
numbers from ``load_card``, the held-out PSNRs (blurred input on every scored image, the
showcase image's network output) recomputed with numpy from ``heldout_samples``, the showcase
index from the recorded per-image gains, the edge-loss comparison (margin, wins, verdict)
from the per-image scores and the paper's Table S5, and the Pixel 4 numbers only when the
data is present.
"""

import math
import os
from pathlib import Path

import numpy as np
import torch

MIN_FIGURES = 8  # showcase, radial patch, one-batch curves, sequence, losses, per-frame PSNR,
#                  live results, edge-loss comparison (+ Pixel 4 with data)

PAPER_S5 = {"0": [25.06, 0.765, 0.042], "1": [25.11, 0.763, 0.042], "3": [25.39, 0.772, 0.040]}
OLD = {"old_psnr_rdpd": 17.29, "old_psnr_input": 29.75, "old_pixel4_rdpd": 19.67, "old_pixel4_input": 24.49}
DIAG_KEYS = ("old", "zero_bias", "st", "lr", "mse", "on_input", "residual")


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def _rdpd_params(cin, widths, lstm, peephole, head="linear"):
    w1, w2, w3, w4 = widths
    n = 0
    for a, b in [(cin, w1), (w1, w2), (w2, w3), (w3, w4)]:
        n += _conv(a, b, 3) + _conv(b, b, 3)
    n += _conv(w4, lstm, 3)
    n += 4 * lstm * (9 * lstm + 1) + 4 * lstm * 9 * lstm + (3 * lstm if peephole else 0)
    for a, b in [(lstm, w4), (w4, w3), (w3, w2), (w2, w1)]:
        n += _conv(a, b, 2) + _conv(2 * b, b, 3) + _conv(b, b, 3)
    # the authors' head: 3x3 conv to 3 ReLU channels + 1x1 linear; the residual head: one 3x3 conv
    return n + _conv(w1, 3, 3) + (_conv(3, 3, 1) if head == "linear" else 0)


def _psnr_np(a, b):
    return 10 * math.log10(1.0 / float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _read(path):
    from dplab.data.pngio import read_png

    return read_png(path).astype(np.float64) / 65535


def _np(t):
    return t.detach().double().cpu().numpy()


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    m = metrics
    # --- parameter counts (closed form; the authors' code count for peephole=False)
    paper_w = (32, 64, 128, 256)
    assert m["params_rdpd_code"] == 24_278_703 == _rdpd_params(7, paper_w, 512, False)
    assert m["params_rdpd"] == _rdpd_params(7, paper_w, 512, True) == 24_278_703 + 3 * 512
    assert m["params_rspd_code"] == 24_278_703 - 864
    assert m["params_lstm"] == 18_876_416
    w, h = tuple(m["widths"]), m["lstm_channels"]
    assert m["head"] == "residual"
    assert m["params_small"] == _rdpd_params(7, w, h, True, head="residual")
    # --- shapes of the probe: 2 clips x T frames, flattened for the convs, LSTM at 1/16
    p, t = m["patch"], m["clip_len"]
    shp = m["shapes"]
    assert m["probe_in_shape"] == [2, t, 7, p, p] and m["probe_out_shape"] == [2, t, 3, p, p]
    assert shp["enc1"] == [2 * t, w[0], p, p]
    assert shp["pre_lstm"] == [2 * t, h, p // 16, p // 16]
    assert shp["lstm (h, c per frame)"] == [2, h, p // 16, p // 16]
    assert shp["head"] == [2 * t, 3, p, p]
    # --- radial map: corners 1, centre minimum, bottom-right patch from numpy
    H, W = m["synth_size"]
    assert (H, W) == (48, 64)  # the test profile's synthetic size
    assert m["radial_corner"] == 1.0
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - (H - 1) / 2, xx - (W - 1) / 2) / math.hypot((H - 1) / 2, (W - 1) / 2)
    d = np.round(255 * d) / 255
    assert math.isclose(m["radial_centre_min"], d.min(), abs_tol=1e-6)
    assert np.allclose(np.array(m["radial_patch_br"]), d[H - p:, W - p:], atol=1e-6)
    # --- alternation: image mini-batch, then a clip mini-batch
    a0, a1 = m["alternation_shapes"]
    assert a0 == [m["image_batch"], 3, p, p]
    assert a1 == [m["video_batch"], t, 3, p, p]

    _check_shipped(m)
    _check_one_batch_experiment(m)
    _check_live_run(m, output_dir)
    _check_pixel4(m)


def _check_shipped(m):
    """The result-first figure and the edge-loss comparison, against the cards and numpy."""
    from dplab.models.shipped import load_card, pretrained
    from dplab.eval.heldout import heldout_samples
    from dplab.eval.zoo import NetworkMethod

    cards = {n: load_card(n) for n in ("rdpd", "rdpd_mse")}
    h = cards["rdpd"]["heldout"]
    assert m["card_images"] == h["images"] == 48
    assert m["card_steps"] == cards["rdpd"]["steps"] == m["card_steps_mse"] == cards["rdpd_mse"]["steps"]
    assert m["card_psnr_rdpd"] == h["network"]["psnr"] and m["card_psnr_input"] == h["blurred_input"]["psnr"]
    assert m["card_ssim_rdpd"] == h["network"]["ssim"] and m["card_ssim_input"] == h["blurred_input"]["ssim"]
    assert m["card_gain_rdpd"] == h["gain_psnr"]
    assert m["card_psnr_mse"] == cards["rdpd_mse"]["heldout"]["network"]["psnr"]
    assert m["card_arch"] == cards["rdpd"]["model_spec"]["kwargs"]
    assert m["card_arch"]["head"] == "residual"
    assert math.isclose(m["card_train_min"], cards["rdpd"]["train_wall_s"] / 60)
    assert m["shipped_size"] == [192, 256]

    # per-image scores: the test profile scores the first 8 held-out images
    scores = m["heldout_scores"]
    idx = scores["images"]
    assert idx == list(range(8)) and m["n_heldout_scored"] == 8
    for label in ("blurred input", "rdpd", "rdpd_mse"):
        assert len(scores[label]["psnr"]) == len(scores[label]["ssim"]) == 8
    samples = heldout_samples(idx)
    for i, s in zip(idx, samples):
        ours = _psnr_np(_np(s["combined"].clamp(0, 1)), _np(s["sharp"]))
        assert math.isclose(ours, scores["blurred input"]["psnr"][i], abs_tol=1e-3), i
    # the card's "check" numbers were measured by `make weights` on these same 8 images
    for label, card_key in (("rdpd", "network"), ("blurred input", "blurred_input")):
        card_mean = cards["rdpd"]["check"][card_key]["psnr"]
        assert math.isclose(np.mean(scores[label]["psnr"]), card_mean, abs_tol=0.05), label
    assert math.isclose(np.mean(scores["rdpd_mse"]["psnr"]), cards["rdpd_mse"]["check"]["network"]["psnr"], abs_tol=0.05)

    # showcase: the median-gain image, its PSNRs recomputed with numpy from the network output
    gain = np.array(scores["rdpd"]["psnr"]) - np.array(scores["blurred input"]["psnr"])
    k = int(np.argsort(gain, kind="stable")[len(gain) // 2])
    assert m["showcase_index"] == idx[k]
    s = samples[k]
    with torch.no_grad():
        out = NetworkMethod(pretrained("rdpd"))(s).clamp(0, 1)
    sharp = _np(s["sharp"])
    assert math.isclose(m["showcase_psnr"]["rdpd"], _psnr_np(_np(out), sharp), abs_tol=1e-3)
    assert math.isclose(m["showcase_psnr"]["blurred input"], _psnr_np(_np(s["combined"].clamp(0, 1)), sharp), abs_tol=1e-3)
    assert math.isclose(m["showcase_psnr"]["rdpd"], scores["rdpd"]["psnr"][k], abs_tol=1e-6)

    # the edge-loss comparison follows from the per-image scores and Table S5
    for key, row in PAPER_S5.items():
        assert m[f"paper_s5_{key}"] == row
    assert math.isclose(m["paper_edge_margin"], 25.39 - 25.06, abs_tol=1e-9)
    a, b = np.array(scores["rdpd"]["psnr"]), np.array(scores["rdpd_mse"]["psnr"])
    margin = float(a.mean() - b.mean())
    assert math.isclose(m["edge_margin_db"], margin, abs_tol=1e-4)
    assert m["edge_wins"] == int((a > b).sum()) and m["edge_images"] == 8
    assert m["edge_comparison"] == {"margin_db": m["edge_margin_db"], "wins": m["edge_wins"], "images": 8,
                                    "reproduced": margin > 0}
    assert m["edge_verdict"] == ("reproduced" if margin > 0 else "not reproduced")
    lo, hi = m["edge_ci"]
    assert lo <= margin <= hi
    assert m["edge_ci_note"].startswith("the interval excludes zero") == (lo > 0 or hi < 0)
    for key, label in (("input", "blurred input"), ("rdpd", "rdpd"), ("mse", "rdpd_mse")):
        assert math.isclose(m[f"heldout_psnr_{key}"], np.mean(scores[label]["psnr"]), abs_tol=1e-9)
    ssim_margin = np.mean(scores["rdpd"]["ssim"]) - np.mean(scores["rdpd_mse"]["ssim"])
    assert math.isclose(m["edge_ssim_margin"], ssim_margin, abs_tol=1e-9)


def _check_one_batch_experiment(m):
    from dplab.render.synth import SynthConfig, render_sample

    for k, v in OLD.items():
        assert m[k] == v
    assert m["old_steps"] == 216 and m["old_lr"] == 2e-3 and m["old_coc_gain"] == 4.0
    assert m["old_bias"] == 0.5 and m["old_size"] == [96, 128]
    # the old data's blur and input PSNR, re-rendered
    cfg = SynthConfig(count=8, seed=0, size=(96, 128), coc_gain=4.0, psf="butterworth", max_layers=24)
    coc, pin = [], []
    for i in range(cfg.count):
        arrays, _ = render_sample(cfg, i)
        coc.append(np.abs(arrays["defocus"]).mean())
        pin.append(_psnr_np(arrays["combined"] / 65535, arrays["target"] / 65535))
    assert m["old_cfg_images"] == 8
    assert math.isclose(m["old_mean_coc"], np.mean(coc), rel_tol=1e-5)
    assert math.isclose(m["old_cfg_input_psnr"], np.mean(pin), abs_tol=1e-4)
    assert m["old_mean_coc"] < 1.5 < m["diag_mean_coc"]  # the old data held little blur

    # the fixed batch of tests/models/test_overfit.py: input PSNR from numpy
    cfg = SynthConfig(count=4, size=(128, 160), coc_gain=8.0, seed=123)
    psnrs, cocs = [], []
    for i in range(4):
        arrays, _ = render_sample(cfg, i)
        crop = lambda a: a[32:96, 48:112].astype(np.float64)  # noqa: E731
        psnrs.append(_psnr_np(np.clip(crop(arrays["combined"]) / 65535, 0, 1), crop(arrays["target"]) / 65535))
        cocs.append(np.abs(crop(arrays["defocus"])).mean())
    assert m["diag_batch"] == 4 and m["diag_coc_gain"] == 8.0
    assert math.isclose(m["diag_input_psnr"], np.mean(psnrs), abs_tol=1e-3)
    assert math.isclose(m["diag_mean_coc"], np.mean(cocs), rel_tol=1e-5)

    hist = m["diag_history"]
    assert sorted(hist) == sorted(DIAG_KEYS) == sorted(m["diag_labels"]) and m["n_diag"] == len(DIAG_KEYS)
    steps, every = m["diag_steps"], m["diag_every"]
    expected_steps = [0] + [s for s in range(1, steps + 1) if s % every == 0 or s == steps]
    for key in DIAG_KEYS:
        assert [r["step"] for r in hist[key]] == expected_steps, key
        assert all(math.isfinite(r["psnr"]) for r in hist[key])
    end = {key: hist[key][-1]["psnr"] for key in DIAG_KEYS}
    for key in DIAG_KEYS:
        assert m[f"diag_end_{key}"] == end[key]
    old, zero = hist["old"][0], hist["zero_bias"][0]
    # the residual head, and the authors' layers on the input with their last layer zeroed,
    # return their input untrained
    for key in ("on_input", "residual"):
        assert math.isclose(hist[key][0]["psnr"], m["diag_input_psnr"], abs_tol=1e-4), key
    # a straight-through clamp changes no forward value, nor do the learning rate and the loss
    for key in ("st", "lr", "mse"):
        assert math.isclose(hist[key][0]["psnr"], old["psnr"], abs_tol=1e-9), key
    assert m["diag_start_psnr"] == old["psnr"] < m["diag_input_psnr"] - 5
    assert math.isclose(m["diag_start_gap"], m["diag_input_psnr"] - old["psnr"], abs_tol=1e-9)
    assert m["diag_outside_zero"] == zero["outside"] > m["diag_outside_old"] == old["outside"]
    assert m["diag_dead_relu_old"] == [old["dead_relu"], hist["old"][-1]["dead_relu"]]
    assert math.isclose(m["diag_edge_share"], old["edge"] / (old["edge"] + old["mse"]), abs_tol=1e-12)
    for key in ("zero_bias", "st", "lr", "mse"):
        assert math.isclose(m[f"diag_delta_{key}"], end[key] - end["old"], abs_tol=1e-12)
    assert math.isclose(m["diag_gap_old"], end["old"] - m["diag_input_psnr"], abs_tol=1e-12)
    assert math.isclose(m["diag_residual_gain"], end["residual"] - m["diag_input_psnr"], abs_tol=1e-12)
    assert math.isclose(m["diag_bottleneck_cost"], end["residual"] - end["on_input"], abs_tol=1e-12)
    assert m["diag_bottleneck_verdict"].startswith("the gate costs") == (end["on_input"] > m["diag_input_psnr"])
    above = sorted(k for k in DIAG_KEYS if end[k] > m["diag_input_psnr"])
    assert m["diag_above"] == above
    if set(above) == {"on_input", "residual"}:
        assert m["diag_cause"].startswith("only the two networks that start from the blurred input")
    elif not above:
        assert m["diag_cause"].startswith("no variant")
    else:
        assert m["diag_cause"].startswith("the variants that end above")


def _check_live_run(m, output_dir):
    # --- data: the blur the training images hold, from the written defocus maps
    root = output_dir / "synth"
    maps = sorted((root / "train_c" / "defocus").glob("*.npy"))
    assert len(maps) == m["n_train_images"] > 0
    coc = np.concatenate([np.abs(np.load(f)).ravel() for f in maps])
    assert math.isclose(m["mean_coc"], coc.mean(), rel_tol=1e-5)
    assert math.isclose(m["max_coc"], coc.max(), rel_tol=1e-5)
    assert m["coc_gain"] == 16.0 and m["mean_coc"] > 1.5

    # --- training: one run, half images and half clips, cosine schedule over all steps
    losses = m["losses"]
    steps = m["steps"]
    assert steps % 2 == 0 and len(losses) == steps
    assert steps == m["epochs"] * 2 * max(1, m["n_train_images"] * 4 // m["image_batch"])  # 4 patches per image
    assert all(math.isfinite(x) and x > 0 for x in losses)
    assert Path(m["checkpoint"]).is_file()
    assert math.isclose(m["step_ms"], 1000 * m["train_time_rdpd_s"] / steps, rel_tol=1e-9)
    ratio = np.array(m["loss_ratio"])
    assert len(ratio) == steps and np.all(ratio > 0)
    # untrained, the residual head returns its input: the first mini-batch's ratio is 1, which
    # also shows that the input's losses were taken on the trainer's own mini-batches
    assert abs(ratio[0] - 1) < 1e-2
    tenth = max(1, steps // 10)
    assert math.isclose(m["loss_ratio_first"], ratio[:tenth].mean(), rel_tol=1e-9)
    assert math.isclose(m["loss_ratio_last"], ratio[-tenth:].mean(), rel_tol=1e-9)

    # --- blurred-input PSNR on the test images and sequences, recomputed from the PNGs
    names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert len(names) == m["n_test_images"]
    ours = np.mean([_psnr_np(_read(root / "test_c" / "source" / f"{n}.png"),
                             _read(root / "test_c" / "target" / f"{n}.png")) for n in names])
    assert math.isclose(ours, m["img_psnr"]["blurred input"], abs_tol=1e-3)
    assert m["img_psnr_input"] == m["img_psnr"]["blurred input"]
    seq_root = root / "sequences" / "test_c"
    frames = sorted((seq_root / "source").glob("seq_*/*.png"))
    assert len(frames) == m["seq_frames"] == m["n_test_seqs"] * m["frames"]
    ours_seq = np.mean([_psnr_np(_read(f), _read(seq_root / "target" / f.parent.name / f.name)) for f in frames])
    assert math.isclose(ours_seq, m["seq_input_psnr"], abs_tol=1e-3)
    assert set(m["seq_psnr"]) == {"RDPD, live run", "RDPD, live run, state reset", "RDPD, shipped weights",
                                  "RDPD, shipped weights, state carried"}
    for k, v in m["seq_per_frame"].items():
        assert len(v) == m["frames"]
        assert math.isclose(np.mean(v), m["seq_psnr"][k], abs_tol=1e-6)  # equal-length sequences
    assert len(m["seq_input_per_frame"]) == m["frames"]
    assert math.isclose(np.mean(m["seq_input_per_frame"]), m["seq_input_psnr"], abs_tol=1e-6)
    # with the state reset, the live run's first frame equals the carried run's (both start at zero)
    assert math.isclose(m["seq_per_frame"]["RDPD, live run"][0], m["seq_per_frame"]["RDPD, live run, state reset"][0],
                        abs_tol=1e-3)

    live, inp = m["img_psnr"]["RDPD, live run"], m["img_psnr"]["blurred input"]
    assert m["img_psnr_rdpd"] == live and m["img_psnr_shipped"] == m["img_psnr"]["RDPD, shipped weights"]
    assert math.isclose(m["img_gain_rdpd"], live - inp, abs_tol=1e-12)
    assert m["rdpd_vs_input"] == ("above the blurred input" if live > inp else "below the blurred input")
    assert m["seq_psnr_rdpd"] == m["seq_psnr"]["RDPD, live run"]
    assert math.isclose(m["state_gain_db"], m["seq_psnr_rdpd"] - m["seq_psnr_rdpd_reset"], abs_tol=1e-12)
    assert math.isclose(m["shipped_state_gain_db"], m["seq_psnr_shipped_carry"] - m["seq_psnr_shipped"], abs_tol=1e-12)
    # a residual-head network cannot stray far from its input in a few steps
    assert abs(m["img_gain_rdpd"]) < 3


def _check_pixel4(m):
    data = os.environ.get("DPLAB_DATA")
    present = bool(data) and (Path(data) / "xin_pixel4_dp" / "001_left.png").is_file()
    assert m["pixel4_available"] is present
    if present:
        assert m["pixel4_scenes"] == ["001"]
        per = m["pixel4_per_scene"]["001"]
        assert per["input"] == m["pixel4_psnr_in"]
        assert per["RDPD, live run"] == m["pixel4_psnr_out"]
        assert per["RDPD, shipped weights"] == m["pixel4_psnr_shipped"]
        for k in ("pixel4_psnr_in", "pixel4_psnr_out", "pixel4_psnr_shipped"):
            assert 5 < m[k] < 60
        for key, verdict in (("pixel4_psnr_out", "pixel4_verdict"), ("pixel4_psnr_shipped", "pixel4_verdict_shipped")):
            assert m[verdict] == ("closer to" if m[key] > m["pixel4_psnr_in"] else "not closer to")
    else:
        assert m["pixel4_psnr_in"] is None and m["pixel4_psnr_shipped"] is None
