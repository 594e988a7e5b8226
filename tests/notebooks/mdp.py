"""Checks for book/mdp.ipynb (MDP, Abuolaim et al., WACV 2022) in the test profile."""

import math
from pathlib import Path

import numpy as np

# Shipped MDP on a held-out image, its views, DP flip figure, sample images, live loss curve,
# live result, the paper-vs-residual head curves and images, the Table 3 scatter, the NIMAT
# grid of the photo (Pixel 4 grid and difference panel come on top with the Pixel 4 data).
MIN_FIGURES = 10

# MDP Table 3 ("Defocus Deblurring" PSNR / SSIM, "DP-Pixel Synthesis" PSNR of MDP), as printed.
PAPER_T3 = {"mdp": (25.35, 0.763), "single": (24.34, 0.747), "mdp_views": 39.17}


def _read16(path: Path) -> np.ndarray:
    from dplab.data.pngio import read_png

    a = np.asarray(read_png(path), dtype=np.float64)
    return a / 65535.0


def _psnr(a, b) -> float:
    return float(10 * np.log10(1.0 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _split(root: Path, split: str):
    """(combined, left, right, sharp) arrays (H, W, 3), views at half brightness, in item order."""
    names = sorted(p.stem for p in (root / f"{split}_c" / "source").glob("*.png"))
    out = []
    for n in names:
        out.append((_read16(root / f"{split}_c" / "source" / f"{n}.png"),
                    _read16(root / f"{split}_l" / "source" / f"{n}_L.png") * 0.5,
                    _read16(root / f"{split}_r" / "source" / f"{n}_R.png") * 0.5,
                    _read16(root / f"{split}_c" / "target" / f"{n}.png")))
    return names, out


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

    # --- Blur that matters: the mean |CoC| of the paired training images, from the stored maps.
    maps = sorted((root / "train_c" / "defocus").glob("*.npy"))
    assert len(maps) == metrics["n_paired_train"]
    per_image = [float(np.abs(np.load(p)).mean()) for p in maps]
    assert np.allclose(per_image, metrics["mean_abs_coc_list"], rtol=1e-5)
    assert math.isclose(metrics["mean_abs_coc"], np.mean(per_image), rel_tol=1e-5)
    assert math.isclose(metrics["max_abs_coc"], max(float(np.abs(np.load(p)).max()) for p in maps), rel_tol=1e-5)
    assert metrics["mean_abs_coc"] > 2.0          # several pixels, not the first version's ~1 px
    w = metrics["image_size"][1]
    assert math.isclose(metrics["coc_gain"], 2048 / w)
    # the CoC is linear in the gain: the first version's gain 480 / W gives proportionally less
    assert math.isclose(metrics["first_version_mean_coc"], metrics["mean_abs_coc"] * (480 / w) / (2048 / w),
                        rel_tol=1e-9)

    # --- Step 1 leaves the frozen sharp decoder exactly unchanged; the rest does train.
    assert metrics["steps_step1"] > 0 and metrics["steps_step2"] > 0
    assert metrics["live_steps"] == metrics["steps_step1"] + metrics["steps_step2"]
    assert len(metrics["step1_losses"]) == metrics["steps_step1"]
    assert len(metrics["step2_losses"]) == metrics["steps_step2"]
    assert all(math.isfinite(v) and v > 0 for v in metrics["step1_losses"] + metrics["step2_losses"])
    assert metrics["step1_sharp_max_change"] == 0.0
    assert metrics["step1_encoder_max_change"] > 0
    assert metrics["step2_sharp_max_change"] > 0

    # --- Parameter counts: the paper's 46,860,397 at full width; the widths shrink them.
    assert metrics["paper_width_params"] == 46_860_397
    p = metrics["chapter_params"]
    assert p["none"] < p["late"] < p["middle"] < metrics["paper_width_params"]
    for n in metrics["single_task_params"].values():
        assert abs(n / p["middle"] - 1) < 0.01

    # --- Live run scores, the input and the half-input views recomputed from the PNG files.
    sc = metrics["live_scores"]
    _, test = _split(root, "test")
    assert sc["n"] == metrics["n_paired_test"] == len(test)
    assert math.isclose(sc["input"], np.mean([_psnr(c, s) for c, _, _, s in test]), abs_tol=1e-4)
    half = np.mean([_psnr(np.concatenate([c, c], -1), np.clip(2 * np.concatenate([l, r], -1), 0, 1))
                    for c, l, r, _ in test])
    assert math.isclose(metrics["live_half_views_psnr"], half, abs_tol=1e-4)
    gap = sc["deblur"] - sc["input"]
    assert math.isclose(metrics["mdp_minus_input_db"], gap, rel_tol=1e-9)
    assert metrics["mdp_vs_input"] == ("better" if gap > 0 else "worse")
    # the residual heads start at the input: a few steps cannot fall far below it
    assert gap > -0.5 and sc["views"] > half - 0.5

    # --- Why the first version did not learn: one fixed batch, both heads.
    rc_n, (rh, rw) = metrics["rc_n"], metrics["rc_hw"]
    _, train = _split(root, "train")
    batch = [tuple(a[:rh, :rw] for a in item) for item in train[:rc_n]]
    assert math.isclose(metrics["rc_input_psnr"], np.mean([_psnr(c, s) for c, _, _, s in batch]), abs_tol=1e-4)
    # an untrained residual head returns its base: the input, and half the input for each view
    assert math.isclose(metrics["rc_residual_sharp_start"], metrics["rc_input_psnr"], abs_tol=1e-9)
    views0 = np.mean([_psnr(np.concatenate([c, c], -1), np.clip(2 * np.concatenate([l, r], -1), 0, 1))
                      for c, l, r, _ in batch])
    assert math.isclose(metrics["rc_residual_views_start"], views0, abs_tol=1e-4)
    assert math.isclose(metrics["rc_residual_std_start"], metrics["rc_reference_std"], rel_tol=1e-5)
    # brightness: the views are at half the light; the "average" L_C of the true views is mean((c - c/2)^2)
    assert math.isclose(metrics["rc_view_target_mean"], np.mean([l for _, l, _, _ in batch]), rel_tol=1e-4)
    assert math.isclose(metrics["rc_view_sum_ratio"], 1.0, abs_tol=1e-4)
    lc_avg = np.mean([np.mean((c - (l + r) / 2) ** 2) for c, l, r, _ in batch])
    assert math.isclose(metrics["rc_lc_average"], lc_avg, rel_tol=1e-3)
    assert metrics["rc_lc_sum"] < (1.5 / 65535) ** 2
    # the paper head starts near a grey sigmoid: views too bright, sharp image far below the input
    assert metrics["rc_paper_view_mean_start"] > metrics["rc_view_target_mean"] + 0.1
    assert metrics["rc_paper_sharp_start"] < metrics["rc_input_psnr"] - 5
    # the summary numbers are those of the logged curves
    log = metrics["rc_log"]
    for kind in ("paper", "residual"):
        for q in ("sharp", "views"):
            assert len(log[kind][q]) == metrics["rc_steps"] + 1
            assert metrics[f"rc_{kind}_{q}_start"] == log[kind][q][0]
            assert metrics[f"rc_{kind}_{q}_end"] == log[kind][q][-1]
    pos = log["paper"]["pos"]
    assert all(len(step) == 3 and all(0 <= v <= 1 for v in step) for b in pos for step in pos[b])
    max_end = {b: max(pos[b][-1]) for b in pos}
    worst = min(("left", "right", "sharp"), key=lambda b: max_end[b])
    assert metrics["rc_worst_branch"] == worst
    assert metrics["rc_worst_pos_end"] == max_end[worst]
    assert metrics["rc_dead_branches"] == [b for b in ("left", "right", "sharp") if max_end[b] < 0.02]
    assert metrics["rc_paper_std_end"] == log["paper"]["std"][worst][-1]

    # --- The shipped weights (package data): result first and Table 3 at the shipped scale.
    assert metrics["shipped_available"] is True, "dplab/weights/mdp.pt and mdp_single_task.pt must ship"
    from dplab.models.shipped import load_card

    cards = {n: load_card(n) for n in ("mdp", "mdp_single_task")}
    images = metrics["held_images"]
    n = len(images)
    assert images == list(range(n)) and n == metrics["heldout_n"] == metrics["t3_images"]
    assert metrics["heldout_size"] == list(np.load(output_dir / "showcase_mdp.npz")["combined"].shape[-2:])
    p_in, p_mdp, p_st = (np.array(metrics[f"held_psnr_{k}"]) for k in ("input", "mdp", "single"))
    # the re-rendered held-out images score as on the cards (scored from the PNG files)
    part = "check" if n == cards["mdp"]["check"]["images"] else "heldout"
    assert cards["mdp"][part]["images"] == n
    for arr, name, key in ((p_in, "mdp", "blurred_input"), (p_mdp, "mdp", "network"),
                           (p_st, "mdp_single_task", "network")):
        assert abs(arr.mean() - cards[name][part][key]["psnr"]) < 0.01, (name, key, arr.mean())
    # the showcase image: the median gain, and its numbers recomputed from the saved outputs
    gain = p_mdp - p_in
    assert metrics["show_index"] == images[int(np.argsort(gain, kind="stable")[n // 2])]
    z = np.load(output_dir / "showcase_mdp.npz")
    assert int(z["index"]) == metrics["show_index"]
    i = images.index(metrics["show_index"])
    assert math.isclose(metrics["show_psnr_input"], _psnr(z["combined"], z["sharp"]), abs_tol=1e-4)
    assert math.isclose(metrics["show_psnr_input"], p_in[i], abs_tol=1e-4)
    assert math.isclose(metrics["show_psnr_mdp"], _psnr(np.clip(z["pred_sharp"], 0, 1), z["sharp"]), abs_tol=1e-3)
    assert math.isclose(metrics["show_psnr_mdp"], p_mdp[i], abs_tol=1e-3)
    for side in ("left", "right"):
        pred, true = np.clip(2 * z[f"pred_{side}"], 0, 1), np.clip(2 * z[side], 0, 1)
        assert math.isclose(metrics[f"show_psnr_{side}"], _psnr(pred, true), abs_tol=1e-3), side
        assert math.isclose(metrics[f"show_std_{side}"], float(z[f"pred_{side}"].std(ddof=1)), rel_tol=1e-3)
        assert metrics[f"show_std_{side}"] > 0.01            # not the first version's constant view
    # the predicted views add up to the input (L_C) far better than a constant could
    assert np.mean((z["pred_left"] + z["pred_right"] - z["combined"]) ** 2) < 1e-3
    half_show = _psnr(np.concatenate([z["combined"]] * 2), np.clip(2 * np.concatenate([z["left"], z["right"]]), 0, 1))
    assert math.isclose(metrics["show_psnr_half_input"], half_show, abs_tol=1e-3)
    n_better = 0
    for side in ("left", "right"):
        h_side = _psnr(z["combined"], np.clip(2 * z[side], 0, 1))
        assert math.isclose(metrics[f"show_psnr_half_{side}"], h_side, abs_tol=1e-3), side
        n_better += metrics[f"show_psnr_{side}"] > metrics[f"show_psnr_half_{side}"]
    assert metrics["show_views_vs_half"].startswith(("worse", "better than that guess for one", "better than that guess for both")[n_better])
    vl, hl = np.array(metrics["heldout_views_psnr_list"]), np.array(metrics["heldout_views_half_input_psnr_list"])
    assert len(vl) == len(hl) == n
    assert math.isclose(metrics["heldout_views_psnr"], vl.mean(), rel_tol=1e-9)
    assert metrics["heldout_views_beats_half"] == int(np.sum(vl > hl))
    pred6 = np.clip(2 * np.concatenate([z["pred_left"], z["pred_right"]]), 0, 1)
    assert math.isclose(vl[i], _psnr(pred6, np.clip(2 * np.concatenate([z["left"], z["right"]]), 0, 1)), abs_tol=1e-3)
    assert math.isclose(hl[i], half_show, abs_tol=1e-4)
    # the card's numbers, glued as they are
    h = cards["mdp"]["heldout"]
    assert metrics["card_psnr_mdp"] == h["network"]["psnr"] and metrics["card_gain_mdp"] == h["gain_psnr"]
    assert metrics["shipped_steps"] == cards["mdp"]["steps"]

    # Table 3: the paper's numbers as printed, the margin, wins and verdict recomputed.
    assert (metrics["paper_t3_mdp_psnr"], metrics["paper_t3_mdp_ssim"]) == PAPER_T3["mdp"]
    assert (metrics["paper_t3_single_psnr"], metrics["paper_t3_single_ssim"]) == PAPER_T3["single"]
    assert metrics["paper_t3_mdp_views"] == PAPER_T3["mdp_views"]
    assert math.isclose(metrics["paper_t3_margin_db"], 1.01, abs_tol=1e-9)
    d = p_mdp - p_st
    assert math.isclose(metrics["t3_margin_db"], d.mean(), abs_tol=1e-4)
    assert math.isclose(metrics["t3_mdp_psnr"] - metrics["t3_single_psnr"], d.mean(), abs_tol=1e-9)
    assert metrics["t3_wins"] == int(np.sum(d > 0))
    assert metrics["t3_verdict"] == ("reproduced" if d.mean() > 0 else "not reproduced")
    se = d.std(ddof=1) / np.sqrt(n)
    assert math.isclose(metrics["t3_margin_se"], se, rel_tol=1e-6)
    assert math.isclose(metrics["exercise_sd_db"], d.std(ddof=1), rel_tol=1e-6)
    assert metrics["exercise_n_needed"] == math.ceil((2 * d.std(ddof=1) / 0.1) ** 2)

    # --- NIMAT: eight views aligned with the input, from the shipped MDP.
    assert metrics["nimat_network"] == "shipped MDP"
    shape, inp = metrics["nimat_shape"], metrics["nimat_input_shape"]
    assert shape[:2] == [1, 8] and shape[2:] == inp[1:]
    err = metrics["nimat_identity_err"]
    assert len(err) == 8
    assert max(err[0], err[2], err[4], err[6]) < 1e-6  # 0 and 90 degrees: exact rot90
    assert max(err[1], err[3], err[5], err[7]) < 0.03  # 45 and 135: two bilinear resamplings
    assert metrics["nimat_std_left"] > 0.01 and metrics["nimat_std_right"] > 0.01
    assert metrics["nimat_lr_mad"] > 0
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
