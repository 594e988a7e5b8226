"""Checks of book/phone_network.ipynb (test profile: one crop of scene 001 at full resolution).

Independent of dplab: the noise level is re-measured in numpy from the white-sheet PNGs with
another estimator (the variance of each pixel around its 7x7 box mean, and the correlation of
vertical neighbours' residuals); the blurred input's PSNR is recomputed in numpy from the raw
PNGs (black level, vignetting gain from the white sheets, the views' maximum as 1, the best
integer shift within 6 px after an 8-px border), the way Table 1's protocol is described in
chapter 5.
"""


import numpy as np

from harness import pixel4_folder, table1_psnr

FOLDER = pixel4_folder()
CROP = (336, 448, 256, 384)          # the test profile's crop (top, left, h, w) of the 1008x1344 field


def _raw(path):
    import imageio.v3 as iio

    return np.clip(iio.imread(path).astype(np.float64) - 1024, 0, None) / (2 ** 14 - 1)


def _box(x, w):
    c = np.cumsum(np.cumsum(np.pad(x, w // 2 + 1, mode="edge"), 0), 1)
    return (c[w:, w:] - c[:-w, w:] - c[w:, :-w] + c[:-w, :-w])[:x.shape[0], :x.shape[1]] / (w * w)


def _check_noise(metrics):
    x = _raw(FOLDER / "calibration" / "white_sheet_left.png")
    r = x - _box(x, 7)
    m = _box(x, 15)
    sel = (m > 0.15) & (m < 0.25)
    slope = r[sel].var() / (1 - 1 / 49) / m[sel].mean()        # var = a x through the origin
    assert abs(slope / metrics["noise_a"] - 1) < 0.25, (slope, metrics["noise_a"])
    vertical = np.corrcoef(r[:-1].ravel(), r[1:].ravel())[0, 1]
    horizontal = np.corrcoef(r[:, :-1].ravel(), r[:, 1:].ravel())[0, 1]
    assert vertical > 0.6 and abs(horizontal) < 0.15
    assert metrics["noise_rho"] > 0.6


def _blurred_input_psnr():
    left, right = _raw(FOLDER / "001_left.png"), _raw(FOLDER / "001_right.png")
    wl, wr = _raw(FOLDER / "calibration" / "white_sheet_left.png"), _raw(FOLDER / "calibration" / "white_sheet_right.png")
    gain = _box(wl / np.maximum(wr, 1 / 16383), 101)
    import imageio.v3 as iio

    gt = iio.imread(FOLDER / "gt_all_in_focus_im" / "001_gt.png").astype(np.float64)
    oy, ox = (left.shape[0] - 1008) // 2, (left.shape[1] - 1344) // 2
    top, lft, h, w = CROP
    win = (slice(oy + top, oy + top + h), slice(ox + lft, ox + lft + w))
    L, R = left[win], (right * gain)[win]
    g = gt[top:top + h, lft:lft + w] / 65535             # the release's units (its maximum is the views')
    return table1_psnr((L + R) / 2, g, max(L.max(), R.max()))


def check(metrics, output_dir):
    if FOLDER is None:
        assert metrics["n_scenes"] == 0 and metrics["target_verdict"].startswith("not measured")
        return
    _check_noise(metrics)
    assert metrics["n_scenes"] == 1 and metrics["show_scene"] == "001"
    if metrics["mean_phone"] == "n/a":           # weights missing: said so, nothing scored
        assert metrics["card_steps"].startswith("n/a")
        return
    rows = {r["method"]: r for r in metrics["table"]["rows"]}
    assert abs(rows["blurred input"]["TABLE1_psnr"] - _blurred_input_psnr()) < 0.05
    assert metrics["mean_input"]["psnr"] == rows["blurred input"]["TABLE1_psnr"]
    # the phone's network deblurs this crop (a change that breaks its weights or its feeding fails here)
    assert metrics["mean_phone"]["psnr"] > metrics["mean_input"]["psnr"] + 0.3
    assert metrics["gain_phone"] == metrics["mean_phone"]["psnr"] - metrics["mean_input"]["psnr"]
    assert rows["paper (17 scenes): Xin et al. (MPI)"]["TABLE1_psnr"] == 26.692
