"""Checks for book/benchmark.ipynb (chapter 10: every method side by side).

Independent derivations: the synthetic test set is the shipped weights' held-out set (its
manifest against ``heldout.heldout_config()``, its first image against the in-memory
``shipped.heldout_samples``); the blurred input's PSNR recomputed with numpy from the PNGs the
chapter wrote; every method's PSNR and MAE on the first synthetic image recomputed from the
saved outputs; the shipped DPDNet re-run directly on the first image read from the PNGs (not
through ``dplab.eval.zoo``); the real-scene PSNR/MAE recomputed from the saved aligned arrays; the
parameter counts against the shipped networks (or the checkpoints of a brief training run);
the largest CoC from its closed form; the front-of-focus fraction from the saved defocus
maps; and the verdict strings against the table numbers.
"""

import math
from pathlib import Path

import numpy as np

MIN_FIGURES = 2  # grid of crops, PSNR vs time (the tables are markdown)

METHODS = ("blurred", "wiener", "mpi", "dpdnet", "rdpd", "drbnet", "mdp")
NETWORKS = ("dpdnet", "rdpd", "drbnet", "mdp")
LABELS = {"blurred": "blurred input", "wiener": "Wiener (Xin et al.)", "mpi": "MPI (Xin et al.)",
          "dpdnet": "DPDNet", "rdpd": "RDPD", "drbnet": "DRBNet", "mdp": "MDP"}


def _psnr(a, b):
    return 10 * math.log10(1.0 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def _mae(a, b):
    return float(np.mean(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def _check_verdicts(metrics, prefix, psnr):
    base = psnr["blurred"]
    best = max(METHODS, key=lambda m: psnr[m])
    assert metrics[f"{prefix}_best"] == LABELS[best]
    assert metrics[f"{prefix}_best_is_network"] == (best in NETWORKS)
    assert math.isclose(metrics[f"{prefix}_best_gain_db"], psnr[best] - base, abs_tol=1e-9)
    beat = [LABELS[m] for m in NETWORKS if psnr[m] > base]
    assert metrics[f"{prefix}_nets_beating_input"] == len(beat)
    assert metrics[f"{prefix}_nets_beating_list"] == (", ".join(beat) if beat else "none")
    assert math.isclose(metrics[f"{prefix}_mpi_minus_wiener_db"], psnr["mpi"] - psnr["wiener"], abs_tol=1e-9)
    assert metrics[f"{prefix}_best_net"] == LABELS[max(NETWORKS, key=lambda m: psnr[m])]
    assert metrics[f"{prefix}_best_classical"] == LABELS[max(("wiener", "mpi"), key=lambda m: psnr[m])]


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    import json

    import torch

    from dplab.data.pngio import read_png
    from dplab.models import count_parameters, from_checkpoint, shipped
    from dplab.eval import heldout

    # --- the held-out synthetic set is the shipped weights' held-out set (its first images)
    root = output_dir / "data" / "heldout"
    manifest = json.loads((root / "dplab_synth.json").read_text())
    expected = heldout.heldout_config().to_json()
    assert {k: v for k, v in manifest["config"].items() if k != "count"} == \
        {k: v for k, v in expected.items() if k != "count"}
    assert manifest["config"]["count"] == metrics["n_heldout"] == 4
    train_seed = int(shipped.DATASETS["train"][shipped.DATASETS["train"].index("--seed") + 1])
    assert manifest["config"]["seed"] == metrics["heldout_seed"] == 1000 != train_seed == metrics["train_seed"]
    all_names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert len(all_names) == metrics["n_heldout"]
    names = all_names[:metrics["n_test"]]
    assert names == metrics["synth_names"] and len(names) == metrics["n_test"] == 2
    first = heldout.heldout_samples(0)[0]
    png0 = read_png(root / "test_c" / "source" / f"{names[0]}.png").astype(np.float64) / 65535
    assert np.allclose(png0, first["combined"][0].permute(1, 2, 0).double().numpy(), atol=1e-6)

    # --- blurred-input PSNR from the PNGs, with numpy; the front-of-focus fraction; mean |CoC|
    ours, front = [], []
    for n in all_names:
        src = read_png(root / "test_c" / "source" / f"{n}.png").astype(np.float64) / 65535
        tgt = read_png(root / "test_c" / "target" / f"{n}.png").astype(np.float64) / 65535
        ours.append(_psnr(src, tgt))
        front.append(np.load(root / "test_c" / "defocus" / f"{n}.npy").ravel())
    k = metrics["n_test"]
    assert np.allclose(ours[:k], metrics["synth_per_image_psnr"]["blurred"], atol=1e-3)
    assert math.isclose(np.mean(ours[:k]), metrics["synth_psnr_blurred"], abs_tol=1e-3)
    assert np.allclose(ours, metrics["heldout_per_image_psnr"]["blurred"], atol=1e-3)
    sub = np.concatenate(front[:k])
    assert math.isclose(100 * np.mean(sub < -0.5), metrics["front_fraction_pct"], abs_tol=1e-6)
    assert math.isclose(np.abs(sub).mean(), metrics["coc_mean_abs_px"], rel_tol=1e-5)
    assert math.isclose(np.abs(np.concatenate(front)).mean(), metrics["heldout_coc_mean_abs_px"], rel_tol=1e-5)
    assert metrics["heldout_coc_mean_abs_px"] > 2.0, "the synthetic test set must hold real blur"
    # the largest CoC: 40 px for 1920-px frames, scaled to 256 px width and by the gain 8
    assert math.isclose(metrics["r_max_px"], 40 * 256 / 1920 * 8, rel_tol=1e-12)
    assert metrics["wiener_n_radii"] == 2 * math.ceil(metrics["r_max_px"] / metrics["wiener_step"]) + 1

    # --- every method's PSNR and MAE on the first image, from its saved output
    saved = np.load(output_dir / "synth_image0.npz")
    sharp = saved["sharp"]
    for m in METHODS:
        out = saved[m]
        assert out.shape == sharp.shape and out.min() >= 0 and out.max() <= 1, m
        assert math.isclose(_psnr(out, sharp), metrics["synth_per_image_psnr"][m][0], abs_tol=1e-3), m
        assert math.isclose(_mae(out, sharp), metrics["synth_per_image_mae"][m][0], abs_tol=1e-5), m
        assert math.isclose(np.mean(metrics["synth_per_image_psnr"][m]), metrics[f"synth_psnr_{m}"], abs_tol=1e-9)
        assert metrics[f"synth_time_s_{m}"] >= 0
    assert np.allclose(saved["blurred"], png0.transpose(2, 0, 1), atol=1e-6)
    for m in ("wiener", "mpi"):
        assert np.abs(saved[m] - saved["blurred"]).max() > 1e-3, m
    # the networks on every held-out image: the first n_test agree with the main table
    for m in ("blurred", *NETWORKS):
        per = metrics["heldout_per_image_psnr"][m]
        assert len(per) == metrics["n_heldout"]
        assert np.allclose(per[:k], metrics["synth_per_image_psnr"][m], atol=1e-4), m
        assert math.isclose(np.mean(per), metrics[f"heldout_psnr_{m}"], abs_tol=1e-9), m

    # --- parameters: none for the classical methods; the shipped networks' counts (or the
    # brief training's checkpoints, for a network whose weights file is missing)
    assert metrics["params_blurred"] is None and metrics["params_wiener"] is None and metrics["params_mpi"] is None
    available = set(shipped.list_pretrained())
    for m in NETWORKS:
        if m in available:
            assert metrics["weights_source"][m] == "shipped", m
            net = shipped.pretrained(m)
            assert metrics["specs"][m] == net.dplab_card["model_spec"], m
            assert math.isclose(metrics["card_heldout_psnr"][m], net.dplab_card["heldout"]["network"]["psnr"])
        else:
            assert metrics["weights_source"][m] == "trained here", m
            net = from_checkpoint(output_dir / f"train_{m}" / "checkpoints" / "last.pt")
        assert count_parameters(net) == metrics[f"params_{m}"] > 0, m
        assert metrics["specs"][m]["name"] == m
    assert metrics["n_shipped"] == sum(m in available for m in NETWORKS)
    # the shipped DPDNet, run directly on the first image read from the PNGs (views at half brightness)
    if "dpdnet" in available:
        left = read_png(root / "test_l" / "source" / f"{names[0]}_L.png").astype(np.float32) / 65535 / 2
        right = read_png(root / "test_r" / "source" / f"{names[0]}_R.png").astype(np.float32) / 65535 / 2
        x = torch.from_numpy(np.concatenate([left, right], axis=2)).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = shipped.pretrained("dpdnet")(x)[0].clamp(0, 1).double().numpy()
        assert math.isclose(_psnr(y, sharp), metrics["synth_per_image_psnr"]["dpdnet"][0], abs_tol=1e-3)

    _check_verdicts(metrics, "synth", {m: metrics[f"synth_psnr_{m}"] for m in METHODS})
    hb = {m: metrics[f"heldout_psnr_{m}"] for m in ("blurred", *NETWORKS)}
    assert metrics["heldout_best_net"] == LABELS[max(NETWORKS, key=lambda m: hb[m])]
    assert metrics["heldout_nets_beating_input"] == sum(hb[m] > hb["blurred"] for m in NETWORKS)

    # --- real Pixel 4 scenes (CI has them): PSNR/MAE of the aligned arrays, recomputed
    if metrics["real_available"]:
        assert metrics["n_real"] == 1
        real = np.load(output_dir / "real_scene0.npz")
        gt = real["gt"]
        for m in METHODS:
            p = np.clip(real[m], 0, 1)
            assert p.shape == gt.shape, m
            assert math.isclose(_psnr(p, gt), metrics["real_per_scene"][m][0]["psnr"], abs_tol=1e-3), m
            assert math.isclose(_mae(p, gt), metrics["real_per_scene"][m][0]["mae"], abs_tol=1e-5), m
            assert math.isclose(metrics[f"real_psnr_{m}"], metrics["real_per_scene"][m][0]["psnr"], abs_tol=1e-9)
        _check_verdicts(metrics, "real", {m: metrics[f"real_psnr_{m}"] for m in METHODS})
        best_net = next(m for m in NETWORKS if LABELS[m] == metrics["real_best_net"])
        gains = [a["psnr"] - b["psnr"] for a, b in zip(metrics["real_per_scene"][best_net],
                                                       metrics["real_per_scene"]["blurred"])]
        assert np.allclose(gains, metrics["real_best_net_gains"], atol=1e-9)
        # the blurred input is (left + right) / 2, so its error is not zero (the scene is blurred)
        assert metrics["real_psnr_blurred"] < 60
    else:
        assert metrics["real_best"].startswith("n/a")
