"""Checks for book/benchmark.ipynb (chapter 10: every method side by side).

Independent derivations: the blurred input's PSNR recomputed with numpy from the synthetic PNGs
the chapter wrote; every method's PSNR and MAE on the first synthetic image recomputed from the
saved outputs; the real-scene PSNR/MAE recomputed from the saved aligned arrays; the parameter
counts against networks rebuilt from the checkpoints on disk (dplab.models.from_checkpoint); the
largest CoC from its closed form; the front-of-focus fraction from the saved defocus maps; and
the verdict strings against the table numbers.
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
    assert math.isclose(metrics[f"{prefix}_best_gain_db"], psnr[best] - base, abs_tol=1e-9)
    beat = [LABELS[m] for m in NETWORKS if psnr[m] > base]
    assert metrics[f"{prefix}_nets_beating_input"] == len(beat)
    assert metrics[f"{prefix}_nets_beating_list"] == (", ".join(beat) if beat else "none")
    assert math.isclose(metrics[f"{prefix}_mpi_minus_wiener_db"], psnr["mpi"] - psnr["wiener"], abs_tol=1e-9)
    assert metrics[f"{prefix}_best_net"] == LABELS[max(NETWORKS, key=lambda m: psnr[m])]


def check(metrics, output_dir):
    output_dir = Path(output_dir)
    from dplab.data.pngio import read_png

    # --- the held-out synthetic set: blurred-input PSNR from the PNGs, with numpy
    root = output_dir / "data" / "test"
    names = sorted(q.stem for q in (root / "test_c" / "source").glob("*.png"))
    assert names == metrics["synth_names"] and len(names) == metrics["n_test"] == 2
    ours = []
    front = []
    for n in names:
        src = read_png(root / "test_c" / "source" / f"{n}.png").astype(np.float64) / 65535
        tgt = read_png(root / "test_c" / "target" / f"{n}.png").astype(np.float64) / 65535
        ours.append(_psnr(src, tgt))
        front.append(np.load(root / "test_c" / "defocus" / f"{n}.npy").ravel())
    assert np.allclose(ours, metrics["synth_per_image_psnr"]["blurred"], atol=1e-3)
    assert math.isclose(np.mean(ours), metrics["synth_psnr_blurred"], abs_tol=1e-3)
    front = np.concatenate(front)
    assert math.isclose(100 * np.mean(front < -0.5), metrics["front_fraction_pct"], abs_tol=1e-6)
    # the largest CoC: 40 px for 1920-px frames, scaled to 64 px width and by the gain 8
    assert math.isclose(metrics["r_max_px"], 40 * 64 / 1920 * 8, rel_tol=1e-12)
    # the test set is new: its seed differs from every training seed of the book (0, 101, 202)
    import json

    manifest = json.loads((root / "dplab_synth.json").read_text())
    assert manifest["config"]["seed"] == 1000 and manifest["config"]["seed"] not in (0, 101, 202)
    train_manifest = json.loads((output_dir / "data" / "train" / "dplab_synth.json").read_text())
    assert train_manifest["config"]["seed"] == 2000

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
    # the blurred input passes through unchanged; the optimisation methods do change the image
    assert np.allclose(saved["blurred"], read_png(root / "test_c" / "source" / f"{names[0]}.png").transpose(2, 0, 1) / 65535, atol=1e-6)
    for m in ("wiener", "mpi"):
        assert np.abs(saved[m] - saved["blurred"]).max() > 1e-3, m

    # --- parameters: none for the classical methods, the rebuilt networks' counts otherwise
    from dplab.models import count_parameters, from_checkpoint

    assert metrics["params_blurred"] is None and metrics["params_wiener"] is None and metrics["params_mpi"] is None
    for m in NETWORKS:
        assert metrics["weights_source"][m].startswith("trained here"), m    # the test profile trains
        net = from_checkpoint(output_dir / f"train_{m}" / "checkpoints" / "last.pt")
        assert count_parameters(net) == metrics[f"params_{m}"] > 0, m
        assert metrics["specs"][m]["name"] == m
    assert metrics["n_from_chapters"] == 0

    _check_verdicts(metrics, "synth", {m: metrics[f"synth_psnr_{m}"] for m in METHODS})

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
