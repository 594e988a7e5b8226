"""Checks for book/mdp.ipynb (MDP, Abuolaim et al., WACV 2022) in the test profile."""

import math
from pathlib import Path

import numpy as np

# DP flip figure, sample images, loss curves, results, NIMAT grid of the photo, Pixel 4 grid
# and its difference panel (the last two only with the Pixel 4 data).
MIN_FIGURES = 5


def _read16(path: Path) -> np.ndarray:
    from dplab.data.pngio import read_png

    a = np.asarray(read_png(path), dtype=np.float64)
    return a / 65535.0


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    # --- Fig. 2d: the first moment of H_l - H_r flips sign between behind and in front.
    behind, front = metrics["diff_moment_behind"], metrics["diff_moment_front"]
    assert behind * front < 0 and math.isclose(behind, -front, rel_tol=1e-5)

    # --- L_C is zero when the views sum to the input; blind to swapping; L_D sees the swap.
    assert metrics["lc_exact_split"] < 1e-12
    # 16-bit rounding of the stored combined image and the two (doubled) views bounds L_C.
    assert metrics["lc_data"] < (1.5 / 65535) ** 2
    assert metrics["lc_swapped"] == metrics["lc_data"]
    assert metrics["ld_data"] == 0.0
    # Independent recomputation of mean((L - R)^2) from the PNG files the notebook wrote.
    name = metrics["sample_name"]
    root = output_dir / "data" / "paired"
    left = _read16(root / "test_l" / "source" / f"{name}_L.png") * 0.5
    right = _read16(root / "test_r" / "source" / f"{name}_R.png") * 0.5
    ms = float(((left - right) ** 2).mean())
    assert math.isclose(metrics["view_diff_ms"], ms, rel_tol=1e-4), (metrics["view_diff_ms"], ms)
    assert math.isclose(metrics["ld_swapped"], 4 * ms, rel_tol=1e-4)
    assert ms > 0  # the synthetic test image has defocus disparity

    # --- Step 1 leaves the frozen sharp decoder exactly unchanged; the rest does train.
    assert metrics["steps_step1"] > 0 and metrics["steps_step2"] > 0
    assert metrics["step1_sharp_max_change"] == 0.0
    assert metrics["step1_encoder_max_change"] > 0
    assert metrics["step2_sharp_max_change"] > 0

    # --- Parameter counts: the paper's 46,860,397 at full width; the widths shrink them.
    assert metrics["paper_width_params"] == 46_860_397
    p = metrics["chapter_params"]
    assert p["none"] < p["late"] < p["middle"] < metrics["paper_width_params"]
    for n in metrics["single_task_params"].values():
        assert abs(n / p["middle"] - 1) < 0.01

    # --- Scores are PSNRs of real numbers; input PSNR recomputed bounds (finite, sensible).
    scores = metrics["ablation_scores"]
    assert set(scores) == {"mdp", "mt_wo", "st_deblur", "st_views_wo", "st_views_w", "none", "late"}
    assert scores["st_deblur"]["views"] is None and scores["st_views_w"]["deblur"] is None
    for k, s in scores.items():
        assert s["n"] == metrics["n_paired_test"]
        assert 5 < s["input"] < 60
    # every ablation row got the same number of optimizer steps, the glued count of the prose
    assert metrics["steps_per_network"] == metrics["steps_step1"] + metrics["steps_step2"]
    assert set(metrics["ablation_steps"].values()) == {metrics["steps_per_network"]}
    # The yes/no/tie verdicts, recomputed from the scores.
    tie = metrics["tie_db"]

    def verdict(a, b):
        return "yes" if a - b >= tie else ("tie" if abs(a - b) < tie else "no")

    s = {k: v for k, v in scores.items()}
    expected = {
        "dir_mt_beats_st_deblur": verdict(s["mdp"]["deblur"], s["st_deblur"]["deblur"]),
        "dir_mt_wo_beats_st_deblur": verdict(s["mt_wo"]["deblur"], s["st_deblur"]["deblur"]),
        "dir_dp_losses_help_mt_deblur": verdict(s["mdp"]["deblur"], s["mt_wo"]["deblur"]),
        "dir_dp_losses_help_st_views": verdict(s["st_views_w"]["views"], s["st_views_wo"]["views"]),
        "dir_dp_losses_help_mt_views": verdict(s["mdp"]["views"], s["mt_wo"]["views"]),
        "dir_mt_beats_st_views": verdict(s["mdp"]["views"], s["st_views_w"]["views"]),
        "dir_middle_beats_none": verdict(s["mdp"]["deblur"], s["none"]["deblur"]),
        "dir_middle_beats_late": verdict(s["mdp"]["deblur"], s["late"]["deblur"]),
    }
    for k, v in expected.items():
        assert metrics[k] == v, k
    assert metrics["n_directions"] == 8
    assert metrics["n_directions_reproduced"] == sum(v == "yes" for v in expected.values())
    gap = s["mdp"]["deblur"] - s["mdp"]["input"]
    assert math.isclose(metrics["mdp_minus_input_db"], gap, rel_tol=1e-9)
    assert metrics["mdp_vs_input"] == ("better" if gap > 0 else "worse")

    # --- NIMAT: eight views aligned with the input.
    shape, inp = metrics["nimat_shape"], metrics["nimat_input_shape"]
    assert shape[:2] == [1, 8] and shape[2:] == inp[1:]
    err = metrics["nimat_identity_err"]
    assert len(err) == 8
    assert max(err[0], err[2], err[4], err[6]) < 1e-6  # 0 and 90 degrees: exact rot90
    assert max(err[1], err[3], err[5], err[7]) < 0.03  # 45 and 135: two bilinear resamplings
    from PIL import Image

    with Image.open(output_dir / "nimat_photo.gif") as im:
        assert im.n_frames == 8 and im.size == (inp[3], inp[2])
    if metrics["pixel4_available"]:
        ps, pi = metrics["pixel4_nimat_shape"], metrics["pixel4_input_shape"]
        assert ps[:2] == [1, 8] and ps[2:] == pi[1:]
        assert (output_dir / "nimat_pixel4.gif").is_file()
        assert -1 <= metrics["pixel4_diff_corr"] <= 1

    # --- Exercise 1: canvas side = ceil(diagonal) rounded up to a multiple of 16.
    side = -(-math.ceil(math.hypot(1120, 1680)) // 16) * 16
    assert metrics["exercise_canvas"] == side
