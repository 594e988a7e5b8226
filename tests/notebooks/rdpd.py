"""Checks for book/rdpd.ipynb (chapter 7: RDPD, training on images and sequences, ablations).

Independent derivations: RDPD's parameter count from a closed form (encoder/decoder convs plus
the ConvLSTM's ``4 h (9 c_in + 9 h + 1)``), the radial map from numpy, the alternation of
mini-batch shapes, the blurred-input PSNR of the test images and sequences recomputed with
numpy from the synthetic PNGs, the ablation table recomputed from the recorded PSNRs and the
paper's numbers, and the Pixel 4 numbers only when the data is present.
"""

import math
import os
from pathlib import Path

import numpy as np

MIN_FIGURES = 6  # radial patch, sequence, losses, ablation bars, per-frame PSNR, results (+ Pixel 4)

PAPER = {  # supplement Tables S3-S5 (RDPD+ on Canon DPDD) and main Table 2 (synthetic sequences)
    "S3: DP views vs one view": (24.24, 25.39),
    "S4: radial patch": (25.00, 25.39),
    "S5: edge loss, 0 vs 3 scales": (25.06, 25.39),
    "S5: edge loss, 1 vs 3 scales": (25.11, 25.39),
    "Table 2: sequences vs single frames": (30.26, 31.09),
}


def _conv(cin, cout, k):
    return cin * cout * k * k + cout


def _rdpd_params(cin, widths, lstm, peephole):
    w1, w2, w3, w4 = widths
    n = 0
    for a, b in [(cin, w1), (w1, w2), (w2, w3), (w3, w4)]:
        n += _conv(a, b, 3) + _conv(b, b, 3)
    n += _conv(w4, lstm, 3)
    n += 4 * lstm * (9 * lstm + 1) + 4 * lstm * 9 * lstm + (3 * lstm if peephole else 0)
    for a, b in [(lstm, w4), (w4, w3), (w3, w2), (w2, w1)]:
        n += _conv(a, b, 2) + _conv(2 * b, b, 3) + _conv(b, b, 3)
    return n + _conv(w1, 3, 3) + _conv(3, 3, 1)


def _psnr_np(a, b):
    return 10 * math.log10(1.0 / float(np.mean((a - b) ** 2)))


def _read(path):
    from dplab.data.pngio import read_png

    return read_png(path).astype(np.float64) / 65535


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    # --- parameter counts (closed form; the authors' code count for peephole=False)
    paper_w = (32, 64, 128, 256)
    assert metrics["params_rdpd_code"] == 24_278_703 == _rdpd_params(7, paper_w, 512, False)
    assert metrics["params_rdpd"] == _rdpd_params(7, paper_w, 512, True) == 24_278_703 + 3 * 512
    assert metrics["params_rspd_code"] == 24_278_703 - 864
    assert metrics["params_lstm"] == 18_876_416
    w, h = tuple(metrics["widths"]), metrics["lstm_channels"]
    assert metrics["params_small"] == _rdpd_params(7, w, h, True)
    # --- shapes of the probe: 2 clips x T frames, flattened for the convs, LSTM at 1/16
    p, t = metrics["patch"], metrics["clip_len"]
    shp = metrics["shapes"]
    assert metrics["probe_in_shape"] == [2, t, 7, p, p] and metrics["probe_out_shape"] == [2, t, 3, p, p]
    assert shp["enc1"] == [2 * t, w[0], p, p]
    assert shp["pre_lstm"] == [2 * t, h, p // 16, p // 16]
    assert shp["lstm (h, c per frame)"] == [2, h, p // 16, p // 16]
    # --- radial map: corners 1, centre minimum, bottom-right patch from numpy
    H, W = 48, 64  # the test profile's synthetic size
    assert metrics["radial_corner"] == 1.0
    yy, xx = np.mgrid[0:H, 0:W]
    d = np.hypot(yy - (H - 1) / 2, xx - (W - 1) / 2) / math.hypot((H - 1) / 2, (W - 1) / 2)
    d = np.round(255 * d) / 255
    assert math.isclose(metrics["radial_centre_min"], d.min(), abs_tol=1e-6)
    assert np.allclose(np.array(metrics["radial_patch_br"]), d[H - p:, W - p:], atol=1e-6)
    # --- alternation: image mini-batch, then a clip mini-batch
    a0, a1 = metrics["alternation_shapes"]
    assert a0 == [metrics["image_batch"], 3, p, p]
    assert a1 == [metrics["video_batch"], t, 3, p, p]

    # --- training: all variants ran the same number of steps, half images and half clips
    losses = metrics["losses"]
    assert len(losses) == 6 and all(len(v) == metrics["steps"] for v in losses.values())
    assert metrics["steps"] % 2 == 0
    for name, loss in losses.items():
        assert all(math.isfinite(x) and x > 0 for x in loss), name
    for ck in metrics["checkpoints"].values():
        assert Path(ck).is_file()

    # --- blurred-input PSNR on the test images and sequences, recomputed from the PNGs
    root = output_dir / "synth"
    names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert len(names) == metrics["n_test_images"]
    ours = np.mean([_psnr_np(_read(root / "test_c" / "source" / f"{n}.png"),
                             _read(root / "test_c" / "target" / f"{n}.png")) for n in names])
    assert math.isclose(ours, metrics["img_psnr"]["blurred input"], abs_tol=1e-3)
    seq_root = root / "sequences" / "test_c"
    frames = sorted((seq_root / "source").glob("seq_*/*.png"))
    assert len(frames) == metrics["seq_frames"] == metrics["n_test_seqs"] * metrics["frames"]
    ours_seq = np.mean([_psnr_np(_read(f), _read(seq_root / "target" / f.parent.name / f.name)) for f in frames])
    assert math.isclose(ours_seq, metrics["seq_input_psnr"], abs_tol=1e-3)
    for k, v in metrics["seq_per_frame"].items():
        assert len(v) == metrics["frames"]
        assert math.isclose(np.mean(v), metrics["seq_psnr"][k], abs_tol=1e-6)  # equal-length sequences

    # --- the ablation table follows from the recorded numbers and the paper's
    rows = metrics["ablations"]
    assert [r["ablation"] for r in rows] == list(PAPER)
    n_ok = 0
    for r in rows:
        pv, pr = PAPER[r["ablation"]]
        assert (r["paper variant"], r["paper RDPD"]) == (pv, pr)
        src = metrics["img_psnr"] if r["test data"] == "images" else metrics["seq_psnr"]
        assert math.isclose(r["ours variant"], src[r["variant"]], abs_tol=1e-12)
        assert math.isclose(r["ours RDPD"], src["RDPD"], abs_tol=1e-12)
        d = r["ours RDPD"] - r["ours variant"]
        assert math.isclose(r["our gain (dB)"], d, abs_tol=1e-12)
        ok = d > 0  # every paper gain is positive
        assert r["reproduces"] == ("yes" if ok else "no")
        n_ok += ok
    assert metrics["n_reproduced"] == n_ok and metrics["n_ablations"] == 5
    assert metrics["seq_psnr_rdpd"] == metrics["seq_psnr"]["RDPD"]
    below = metrics["img_psnr"]["RDPD"] <= metrics["img_psnr"]["blurred input"]
    assert metrics["rdpd_vs_input"].startswith("still below") == below
    assert math.isclose(metrics["state_gain_db"], metrics["seq_psnr_rdpd"] - metrics["seq_psnr_rdpd_reset"], abs_tol=1e-12)

    # --- Pixel 4 (real data, present in CI)
    data = os.environ.get("DPLAB_DATA")
    present = bool(data) and (Path(data) / "xin_pixel4_dp" / "001_left.png").is_file()
    assert metrics["pixel4_available"] is present
    if present:
        assert metrics["pixel4_scenes"] == ["001"]
        for k in ("pixel4_psnr_in", "pixel4_psnr_out"):
            assert 5 < metrics[k] < 60
        better = metrics["pixel4_psnr_out"] > metrics["pixel4_psnr_in"]
        assert metrics["pixel4_verdict"] == ("closer to" if better else "not closer to")
    else:
        assert metrics["pixel4_psnr_in"] is None
