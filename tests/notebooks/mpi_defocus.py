"""Checks for book/mpi_defocus.ipynb (chapter 5: the MPI method of Xin et al. on Pixel 4 scenes).

Numbers are re-derived here independently of dplab's scoring code: the ground truth is read
straight from the release's PNGs with imageio and cropped / box-downsampled with numpy, PSNR
(the chapter's protocol: both images divided by the views' maximum, which is checked against
the raw left view, then the documented shift search and border crop) and AIWE(2) (a weighted
least-squares affine fit) are recomputed in numpy from the arrays the notebook saved, the ablation means are
recomputed from the saved defocus maps, and the synthetic scene's true planes are the closed
form of its construction. The real-data checks run when the Pixel 4 release is under
$DPLAB_DATA (as in CI); otherwise the chapter must say the data was missing.
"""

import json
import math
from pathlib import Path

import numpy as np

from harness import pixel4_folder, table1_psnr
import pytest
import torch

PAPER = {"Xin et al. (MPI)": [26.692, 0.804, 0.027, 0.047, 0.076, 0.178],
         "Wiener deconvolution": [25.806, 0.704, 0.032, 0.156, 0.197, 0.665]}   # Table 1
KEYS = ["psnr", "ssim", "mae", "aiwe1", "aiwe2", "spearman_error"]


FOLDER = pixel4_folder()
# data: inputs, Wiener maps, loss curve, MPI layers, images, errors, defocus maps, ablation,
# synthetic images and defocus maps; no data: the two synthetic figures only.
MIN_FIGURES = 10 if FOLDER is not None else 2


def _box(a, f):
    h, w = a.shape
    return a.reshape(h // f, f, w // f, f).mean(axis=(1, 3))


def _left_view_max(scene, crop, f):
    """Maximum of the raw left view (black level 1024, 14 bits), central 1008x1344 field, crop, box."""
    import imageio.v3 as iio

    raw = iio.imread(FOLDER / f"{scene}_left.png").astype(np.float64)
    v = np.clip(raw - 1024, 0, None) / (2 ** 14 - 1)
    oy, ox = (v.shape[0] - 1008) // 2, (v.shape[1] - 1344) // 2
    top, left, h, w = crop
    return float(_box(v[oy + top:oy + top + h, ox + left:ox + left + w], f).max())


def _aiwe2(pred, gt, f):
    b = max(math.ceil(8 / f), math.ceil(6 / f))
    H, W = gt.shape
    x, y = pred[b:H - b, b:W - b].ravel(), gt[b:H - b, b:W - b].ravel()
    w = (y > 0).astype(np.float64)
    A = np.stack([x, np.ones_like(x)], 1) * np.sqrt(w)[:, None]
    coef = np.linalg.lstsq(A, y * np.sqrt(w), rcond=None)[0]
    r = coef[0] * x + coef[1] - y
    return math.sqrt(np.sum(w * r * r) / np.sum(w))


def _load(path):
    d = torch.load(path)
    return {k: (v[0, 0].double().numpy() if isinstance(v, torch.Tensor) else v) for k, v in d.items()}


def _check_synthetic(metrics, results):
    truth, table = _load(results / "synthetic_truth.pt"), metrics["syn_table"]
    # the synthetic views are blurred renderings of the truth at one view's brightness
    obs_max = metrics["syn_obs_max"]
    assert 0.5 * truth["all_in_focus"].max() < obs_max <= 1.01 * truth["all_in_focus"].max()
    # the construction: three planes at the near, middle and far scales (0.2, 0.8, 1.4)
    assert np.allclose(np.unique(np.round(truth["defocus"], 5)), [0.2, 0.8, 1.4])
    for k in ("input", "wiener", "mpi"):
        est = _load(results / f"synthetic_{k}.pt")
        assert abs(table1_psnr(est["all_in_focus"], truth["all_in_focus"], obs_max, 1) - table[k]["psnr"]) < 1e-3, k
        if k != "input":
            assert abs(_aiwe2(est["defocus"], truth["defocus"], 1) - table[k]["aiwe2"]) < 1e-4, k
    assert metrics["syn_shift_mpi"] == [0, 0]        # rendered without any shift
    assert table["mpi"]["psnr"] > table["input"]["psnr"]
    assert table["mpi"]["aiwe1"] < table["wiener"]["aiwe1"]
    assert metrics["syn_loss_last"] < 0.1 * metrics["syn_loss_first"]


def _check_real(metrics, results):
    import imageio.v3 as iio

    assert metrics["real_data_available"] is True and metrics["n_scenes_available"] >= 1
    top, left, h, w = metrics["real_crop"]
    f = metrics["real_downscale"]
    assert metrics["real_hw"] == [h // f, w // f]
    for scene, rows in metrics["table"].items():
        obs_max = metrics["obs_max"][scene]
        left_max = _left_view_max(scene, (top, left, h, w), f)
        assert left_max <= obs_max * (1 + 1e-6) and obs_max <= 1.5 * left_max, (left_max, obs_max)
        gt = iio.imread(FOLDER / "gt_all_in_focus_im" / f"{scene}_gt.png").astype(np.float64) / 65535
        gt = _box(gt[top:top + h, left:left + w], f)
        raw_d = iio.imread(FOLDER / "gt_defocus_map" / f"{scene}_gt.png").astype(np.float64) / 255
        raw_d = raw_d[top:top + h, left:left + w]
        valid = _box((raw_d > 0).astype(np.float64), f) == 1.0
        gt_d = _box(raw_d, f) * valid
        for k in ("input", "wiener", "mpi", "mpi_nob"):
            est = _load(results / f"{scene}_{k}.pt")
            assert est["all_in_focus"].shape == gt.shape
            assert abs(table1_psnr(est["all_in_focus"], gt, obs_max, f) - rows[k]["psnr"]) < 1e-3, (scene, k)
            assert rows[k] == est["metrics"]
            if k != "input":
                assert abs(_aiwe2(est["defocus"], gt_d, f) - rows[k]["aiwe2"]) < 1e-4, (scene, k)
        # the MPI improves on the blurred input even at test scale
        assert rows["mpi"]["psnr"] > rows["input"]["psnr"] + 0.2, rows
        # ablation (paper Fig. 12): without B the mean defocus is smaller, recomputed here
        mean = {k: float(_load(results / f"{scene}_{k}.pt")["defocus"].mean())
                for k in ("mpi", "mpi_nob", "wiener", "wiener_nob")}
        for k, v in mean.items():
            assert abs(v - metrics["ablation"][scene][k]) < 1e-5
        assert mean["mpi_nob"] < mean["mpi"] and mean["wiener_nob"] < mean["wiener"], mean
        # defocus maps lie within the scene's layer range (Eq. 15 is a convex combination)
        d = _load(results / f"{scene}_mpi.pt")["defocus"]
        assert d.min() >= 0.5 - 1e-4 and d.max() <= 1.6 + 1e-4
    hist = metrics["loss_history"]
    assert hist[0] == metrics["loss_first"] and hist[-1] == metrics["loss_last"]
    assert hist[-1] < 0.05 * hist[0] and all(v < hist[0] for v in hist[1:])
    assert all(v["wiener_nob"] < v["wiener"] for v in metrics["sweep"].values())
    assert metrics["wiener_shrink_count"] == len(metrics["sweep"]) == metrics["wiener_sweep_count"]
    for name, values in PAPER.items():
        assert [metrics["paper_table1"][name][k] for k in KEYS] == values


def _check_protocol(metrics):
    """The chapter's Table 1 protocol is the one its record says fits the paper's Wiener row."""
    record = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "xin_table1" / "protocol.json"
    assert metrics["protocol"] == "scale obs_max, shift alignment, 8-px border"
    if not record.is_file():
        assert metrics["protocol_wiener_table1"] == "n/a"
        return
    rec = json.loads(record.read_text())
    assert rec["closest"] == rec["table1_protocol"] == "obs max, shift (TABLE1)"
    for key, label in (("table1", "obs max, shift (TABLE1)"), ("affine", "obs max, affine"),
                       ("own_max", "own max, shift"), ("raw", "raw, shift (dplab before issue 18)")):
        assert metrics[f"protocol_wiener_{key}"] == rec["candidates"][label]["wiener"]["mean"], key
    # the scale is what moves the numbers: raw units sit far above the paper's Wiener row
    assert metrics["protocol_wiener_raw"]["psnr"] > metrics["protocol_wiener_table1"]["psnr"] + 5
    # the prose's figures: the gap to the paper's Wiener row (typed in from Table 1 here, not
    # read from dplab) and the 8-bit saving's loss, recomputed from the record
    table1 = rec["candidates"]["obs max, shift (TABLE1)"]["wiener"]["mean"]
    assert metrics["protocol_gap"] == pytest.approx([table1["psnr"] - 25.806, table1["ssim"] - 0.704], abs=1e-9)
    assert abs(metrics["protocol_gap"][0]) < 1.5          # the target is 0.5: not met, the chapter says so
    affine16, affine8 = (rec["candidates"][k]["wiener"]["mean"]["psnr"] for k in ("obs max, affine", "obs max, affine, 8-bit"))
    assert metrics["quantize8_drop_db"] == pytest.approx(affine16 - affine8, abs=1e-9)
    raw_inputs = rec["candidates"]["raw, shift (dplab before issue 18)"]["input"]["per_scene"]
    assert metrics["raw_input_best"] == max(v["psnr"] for v in raw_inputs.values())
    # the full-resolution MPI estimate: seconds per iteration of the step record x 10,000
    step = json.loads((record.parent / "mpi_step_side_by_side.json").read_text())
    assert step["size"] == [1008, 1344] and step["layers"] == 12 and step["losses_equal"]
    assert metrics["full_mpi_hours"] == pytest.approx(step["dplab_s"] * 10_000 / 3600)
    assert metrics["full_scenes"] == 10


def check(metrics, output_dir):
    results = Path(output_dir) / "results"
    _check_protocol(metrics)
    assert metrics["iterations_used"] == 40 and metrics["n_layers_used"] == 4   # test profile
    _check_synthetic(metrics, results)
    if FOLDER is None:
        assert metrics["real_data_available"] is False
        assert not any(results.glob("0*.pt"))
    else:
        _check_real(metrics, results)
