"""The Pixel 4 training-data generator (dplab.xin.phone_data) and ``synth --camera pixel4``.

Independent references: a noise level planted in synthetic flat fields (the estimator must
find it), the correlation a three-tap filter makes (closed form), the brightness a blur with
kernels summing to 1/2 per view keeps (each view's mean equals one view of the sharp image),
and the gain's definition (the 99.5th percentile of left + right).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from dplab.cli.main import main as cli
from dplab.data.pngio import read_png
from dplab.eval.zoo import deblur_gray
from dplab.render.synth import SynthConfig, synthesize
from dplab.xin.phone_data import NoiseModel, PhoneConfig, PhoneRenderer, estimate_noise, noise_from_flats

DATA = os.environ.get("DPLAB_DATA")
HAVE_PIXEL4 = bool(DATA) and (Path(DATA) / "xin_pixel4_dp" / "calibration").is_dir()
needs_pixel4 = pytest.mark.skipif(not HAVE_PIXEL4, reason="needs the Pixel 4 release under $DPLAB_DATA/xin_pixel4_dp")


def _flat(a, b, rho, shape=(240, 320), seed=0):
    """A vignetted flat field (0.08-0.32) with noise var = a x + b, vertical correlation rho."""
    y, x = np.mgrid[0:shape[0], 0:shape[1]]
    r2 = ((y - shape[0] / 2) ** 2 + (x - shape[1] / 2) ** 2) / (shape[1] / 2) ** 2
    clean = torch.from_numpy(0.32 - 0.2 * r2).double()
    return NoiseModel(a, b, rho).sample(clean[None, None], torch.Generator().manual_seed(seed))[0, 0]


def test_noise_from_flats_finds_a_planted_noise_level():
    flats = [_flat(2e-5, 4e-7, 0.0, seed=s) for s in range(2)]
    m = noise_from_flats(flats)
    assert m.a == pytest.approx(2e-5, rel=0.1)
    assert m.b == pytest.approx(4e-7, abs=3e-7)
    # vertical neighbours with correlation rho: var(diff) = 2 var (1 - rho) -> a quarter at rho 0.7
    corr = [_flat(2e-5, 0.0, 0.7, seed=s) for s in range(2)]
    across, down = noise_from_flats(corr, axis=1), noise_from_flats(corr, axis=0)
    assert across.a == pytest.approx(2e-5, rel=0.1)
    assert down.a / across.a == pytest.approx(1 - 0.7, abs=0.05)


def test_noise_sample_has_the_closed_form_correlation():
    x = torch.full((1, 1, 300, 300), 0.25, dtype=torch.float64)
    n = (NoiseModel(1e-5, 0.0, 0.5).sample(x, torch.Generator().manual_seed(1)) - x)[0, 0].numpy()
    assert n.var() == pytest.approx(2.5e-6, rel=0.05)
    # taps [u, 1, u]: lag-1 correlation 2u / (1 + 2u^2) = rho, lag 2 u^2 / (1 + 2u^2)
    u = (1 - np.sqrt(1 - 2 * 0.5 ** 2)) / (2 * 0.5)
    assert np.corrcoef(n[:-1].ravel(), n[1:].ravel())[0, 1] == pytest.approx(0.5, abs=0.02)
    assert np.corrcoef(n[:-2].ravel(), n[2:].ravel())[0, 1] == pytest.approx(u * u / (1 + 2 * u * u), abs=0.02)
    assert abs(np.corrcoef(n[:, :-1].ravel(), n[:, 1:].ravel())[0, 1]) < 0.02


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="a >= 0"):
        NoiseModel(-1.0, 0.0)
    with pytest.raises(ValueError, match="rho"):
        NoiseModel(1e-5, 0.0, 0.9)
    with pytest.raises(ValueError, match="size"):
        PhoneConfig(size=(2000, 64))
    with pytest.raises(ValueError, match="far_range"):
        PhoneConfig(near_range=(0.1, 1.0), far_range=(0.5, 1.05))
    with pytest.raises(ValueError, match="window"):
        noise_from_flats([np.zeros((64, 64))], window=4)
    with pytest.raises(TypeError, match="cfg must be a PhoneConfig"):
        PhoneRenderer({"size": (64, 64)}, seed=0)
    from dplab.eval.heldout import heldout_config
    from dplab.models.shipped import datasets_of
    with pytest.raises(ValueError, match="dataset must be one of"):
        heldout_config("nope")
    with pytest.raises(ValueError, match="no shipped network"):
        datasets_of("nope")


def test_gain_matches_deblur_gray():
    """Training data and real captures go through the same scale: PhoneConfig's defaults are
    deblur_gray's (a second definition would drift)."""
    defaults = inspect.signature(deblur_gray).parameters
    cfg = PhoneConfig()
    assert (cfg.level, cfg.percentile) == (defaults["level"].default, defaults["percentile"].default)


@needs_pixel4
def test_white_sheet_noise_is_column_correlated():
    m = estimate_noise(DATA)
    # the sheets' horizontal-difference variance at mean 0.2 is about 3.6e-6 (2 x 1.8e-6)
    assert 1.2e-5 < m.a < 2.5e-5 and m.b < 2e-6
    assert m.rho > 0.6                        # measured lag-1 correlation about 0.73, capped at 0.707


@needs_pixel4
def test_phone_sample_brightness_scale_and_determinism():
    r = PhoneRenderer(PhoneConfig(size=(96, 128), noise=False), seed=3, data_dir=DATA)
    arrays, meta = r.sample(5)
    again, _ = r.sample(5)
    assert all(np.array_equal(arrays[k], again[k]) for k in arrays)
    f = {k: arrays[k][..., 0].astype(np.float64) / 65535 for k in ("combined", "target", "left", "right")}
    assert np.array_equal(arrays["left"][..., 0], arrays["left"][..., 2])       # gray, three channels
    # the gain: the 99.5th percentile of left + right is 0.9
    assert np.percentile(f["combined"], 99.5) == pytest.approx(0.9, abs=0.01)
    # kernels of 1/2 per view keep the brightness away from the borders: each stored view
    # (x2, full brightness) has the sharp target's mean in the interior
    inner = (slice(24, -24), slice(24, -24))
    for v in ("left", "right"):
        assert f[v][inner].mean() == pytest.approx(f["target"][inner].mean(), rel=0.08)
    assert f["combined"] == pytest.approx(0.5 * (f["left"] + f["right"]), abs=2 / 65535)
    d = arrays["defocus"]
    assert meta["near"] - 1e-6 <= d.min() and d.max() <= meta["far"] + 1e-6
    top, left = meta["field_top_left"]
    assert 0 <= top <= 1008 - 96 and 0 <= left <= 1344 - 128
    # the target is sharper than the views (more high-frequency energy)
    hf = lambda x: np.abs(np.diff(x, axis=1)).mean()                             # noqa: E731
    assert hf(f["target"]) > 1.5 * hf(f["left"])


@needs_pixel4
def test_synth_cli_writes_a_resumable_phone_dataset(tmp_path, capsys):
    out = tmp_path / "phone"
    args = ["synth", "--camera", "pixel4", "--data-dir", DATA, "--out", str(out), "--count", "2",
            "--size", "48x64", "--split-fractions", "0.5", "0.5", "0", "--quiet"]
    assert cli(args) == 0
    manifest = json.loads((out / "dplab_synth.json").read_text())
    assert manifest["complete"] and manifest["config"]["renderer"]["camera"] == "pixel4"
    assert "psf" not in manifest["config"]                  # RDPD's options are not recorded
    left = read_png(out / "train_l" / "source" / "00000_L.png")
    assert left.shape[:2] == (48, 64)
    assert cli(args) == 0 and "2 already complete" in capsys.readouterr().out
    assert cli([*args[:-1], "--psf", "punnappurath", "--quiet"]) == 2
    assert "drop the RDPD options --psf" in capsys.readouterr().err
    assert cli(["synth", "--camera", "pixel4", "--data-dir", str(tmp_path / "nope"), "--out",
                str(tmp_path / "x"), "--count", "1"]) == 2
    assert "--data-dir" in capsys.readouterr().err


def test_renderer_refuses_sequences_and_other_sizes(tmp_path):
    class Fake:
        def config(self):
            return {"size": [8, 8]}

        def sample(self, index):
            raise AssertionError("not reached")

    with pytest.raises(ValueError, match="sequences"):
        synthesize(tmp_path / "a", SynthConfig(count=1, size=(8, 8), sequences=1), renderer=Fake(), progress=False)
    with pytest.raises(ValueError, match="same size"):
        synthesize(tmp_path / "b", SynthConfig(count=1, size=(16, 16)), renderer=Fake(), progress=False)
