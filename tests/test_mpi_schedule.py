"""The MPI step of Xin et al. (ICCV 2021, Sec. 4.3): hand-written gradients against autograd,
the coarse-to-fine schedule of dplab.xin.mpi.optimize, checkpoints and progress bars."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from dplab.optics.kernels import rescale_kernel
from dplab.optics.psf import butterworth_dp
from dplab.xin import recipe as rx
from dplab.xin.blur import DPBlur
from dplab.xin.mpi import optimize
from dplab.xin.mpi_losses import LossWeights, _tv, charbonnier, collision_entropy, local_variance, mpi_loss
from dplab.xin.multiplane import render_layers, render_mpi


def _reference_data_aux(colors, alphas, obs, blur, gain, bias, gamma=0.1):
    """Eqs. 7-9 written with autograd through render_layers (the step before the fused one)."""
    N = colors.shape[0]
    s = 0.5 / obs.mean()
    B = bias.reshape(N, 1, 1, 1, 1)
    views, trans_b, bc = render_layers(colors, alphas, blur, gain)
    l_data = s * charbonnier((views - obs).square(), gamma, (trans_b * B).sum(0)).mean()
    l_aux = s * N * (trans_b.detach() * charbonnier((bc - obs.unsqueeze(0)).square(), gamma, B)).mean()
    return l_data, l_aux


def test_fused_data_and_aux_gradients_match_autograd():
    g = torch.Generator().manual_seed(0)
    kl, kr = butterworth_dp(2.5, size=11, dtype=torch.float64)
    N, C, H, W = 4, 2, 14, 18
    blur = DPBlur(kl, kr * 1.1, [1.2, 0.9, 0.6, 0.3], (H, W))
    gain = blur.to_view_brightness()
    colors = torch.rand(N, C, H, W, generator=g, dtype=torch.float64, requires_grad=True)
    a = torch.rand(N, 1, H, W, generator=g, dtype=torch.float64)
    a[0] = 1
    alphas = a.requires_grad_()
    obs = torch.rand(2, C, H, W, generator=g, dtype=torch.float64)
    bias = torch.rand(N, generator=g, dtype=torch.float64) * 1e-2
    w = LossWeights(intensity=0.0, alpha=0.0, entropy=0.0).resolved(N)
    total, terms = mpi_loss(colors, alphas, obs, blur, gain, bias, w, detail=True)
    ref_data, ref_aux = _reference_data_aux(colors, alphas, obs, blur, gain, bias)
    assert float(terms["data"]) == pytest.approx(float(w.data * ref_data.detach()), rel=1e-12)
    assert float(terms["aux"]) == pytest.approx(float(w.aux * ref_aux.detach()), rel=1e-12)
    got = torch.autograd.grad(total, (colors, alphas))
    want = torch.autograd.grad(w.data * ref_data + w.aux * ref_aux, (colors, alphas))
    for x, y in zip(got, want):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-12 * float(y.abs().max()))


def test_total_variation_and_entropy_gradients():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 9, 11, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(local_variance, (x,))
    x4 = torch.rand(2, 2, 7, 8, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: _tv(t, 0.1), (x4,))
    assert torch.allclose(_tv(x4, 0.1), charbonnier(local_variance(x4), 0.1), atol=1e-12)
    y = (torch.rand(5, 6, 7, generator=g, dtype=torch.float64) + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: collision_entropy(t, 0), (y,))
    assert torch.autograd.gradcheck(lambda t: collision_entropy(t, -1), (y,))
    # an all-zero column: log n and zero gradient, no NaN
    z = torch.rand(4, 3, dtype=torch.float64)
    z[:, 0] = 0
    z.requires_grad_()
    e = collision_entropy(z, 0)
    e.sum().backward()
    assert float(e[0].detach()) == pytest.approx(torch.log(torch.tensor(4.0)).item())
    assert torch.equal(z.grad[:, 0], torch.zeros(4, dtype=torch.float64))


@pytest.fixture(scope="module")
def syn():
    return rx.synthetic_scene((48, 64), radius_px=3.0)


def _run(s, **kw):
    kw.setdefault("progress", False)
    return optimize(s.left, s.right, s.k_left, s.k_right, n_layers=4, scales=(0.2, 1.4), log_every=5, **kw)


def test_coarse_to_fine_carries_the_mpi_up_and_lowers_the_loss(syn):
    snaps = {}

    def keep(it, entry, mpi):
        snaps[entry.get("level", 1)] = mpi

    res = _run(syn, iterations=0, coarse=((2, 60),), callback=keep)
    assert [h["level"] for h in res.history][-1] == 1 and res.history[0]["level"] == 2
    coarse, carried = snaps[2], res.mpi
    assert coarse.colors.shape == (4, 1, 24, 32) and carried.colors.shape == (4, 1, 48, 64)
    assert res.all_in_focus.shape == res.defocus.shape == (1, 1, 48, 64)
    # the carried MPI renders (box-downsampled) close to the coarse MPI's rendering
    size = 2 * math.ceil(syn.k_left.shape[-1] // 2 / 2) + 1              # as optimize resizes them
    kc = [rescale_kernel(k, 0.5, size) for k in (syn.k_left, syn.k_right)]
    coarse_view = render_mpi(coarse, *kc, blend_px=0).left
    fine_view = F.avg_pool2d(render_mpi(carried, syn.k_left, syn.k_right, blend_px=0).left, 2)
    err = float((coarse_view - fine_view).abs().mean() / coarse_view.mean())
    assert err < 0.03, err
    # the carried MPI starts far below a fresh start at full size, and the fine level lowers it
    fresh = _run(syn, iterations=0).history[0]["total"]
    res2 = _run(syn, iterations=20, coarse=((2, 60),))
    fine = [h["total"] for h in res2.history if h["level"] == 1]
    assert fine[0] < 0.5 * fresh and fine[-1] < fine[0]
    # compute spent at the fine level only: iterations 0-20, logged every 5
    assert [h["iteration"] for h in res2.history if h["level"] == 1] == [0, 5, 10, 15, 20]


def test_coarse_levels_are_validated(syn):
    with pytest.raises(ValueError, match="decrease"):
        _run(syn, iterations=1, coarse=((2, 5), (4, 5)))
    with pytest.raises(ValueError, match="divide"):
        _run(syn, iterations=1, coarse=((5, 5),))
    with pytest.raises(ValueError, match="pairs"):
        _run(syn, iterations=1, coarse=((2,),))


def test_a_stopped_run_resumes_from_its_checkpoint(tmp_path, syn):
    path = tmp_path / "ckpt.pt"
    full = _run(syn, iterations=9, coarse=((2, 6),))

    class Stop(Exception):
        pass

    def stop(it, entry, mpi):
        if entry.get("level") == 1 and it == 5:
            raise Stop

    with pytest.raises(Stop):
        _run(syn, iterations=9, coarse=((2, 6),), checkpoint=path, checkpoint_every=2, callback=stop)
    assert path.is_file()
    resumed = _run(syn, iterations=9, coarse=((2, 6),), checkpoint=path, checkpoint_every=2)
    assert torch.allclose(resumed.all_in_focus, full.all_in_focus, rtol=0, atol=1e-6)
    assert [h["total"] for h in resumed.history] == pytest.approx([h["total"] for h in full.history], rel=1e-6)
    # a finished run returns at once with the same result; another run's checkpoint is refused
    again = _run(syn, iterations=9, coarse=((2, 6),), checkpoint=path)
    assert torch.allclose(again.all_in_focus, full.all_in_focus, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="another run"):
        _run(syn, iterations=12, checkpoint=path)


def _stderr_of(code: str, *, tqdm_disable: bool) -> str:
    """Run ``code`` in a fresh interpreter and return its stderr. tqdm reads TQDM_DISABLE once,
    when it is imported, so the setting is only testable per process (the book's runner sets
    it before the kernel starts)."""
    env = {k: v for k, v in os.environ.items() if k != "TQDM_DISABLE"}
    if tqdm_disable:
        env["TQDM_DISABLE"] = "1"
    done = subprocess.run([sys.executable, "-c", code + "; print('ran')"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "ran" in done.stdout, done.stderr
    return done.stderr


_MPI_SNIPPET = ("import torch; from dplab.xin.mpi import optimize; from dplab.optics.psf import butterworth_dp; "
                "kl, kr = butterworth_dp(2.0, size=9); x = torch.rand(1, 1, 24, 24) / 2; "
                "optimize(x, x, kl, kr, n_layers=2, iterations=2, progress={progress})")


def test_progress_bar_shows_for_long_runs_and_obeys_tqdm_disable():
    assert "MPI" not in _stderr_of(_MPI_SNIPPET.format(progress=None), tqdm_disable=False)  # short: no bar
    assert "MPI" in _stderr_of(_MPI_SNIPPET.format(progress=True), tqdm_disable=False)
    assert "MPI" not in _stderr_of(_MPI_SNIPPET.format(progress=True), tqdm_disable=True)


def test_calibration_fits_and_trials_show_progress():
    code = ("import torch; from dplab.optics.calibration import square_grid_target; "
            "from dplab.optics.distortion import distort; from dplab.optics.distortion_fit import fit_distortion; "
            "from dplab.optics.psf import butterworth_dp; from dplab.optics.psf_fit import fit_butterworth; "
            "from dplab.xin.noise_bias import noise_bias_trials; "
            "left, right = butterworth_dp(3.0, size=11); "
            "grid = dict(orders=(3, 6), alphas=(0.5,), betas=(0.3,), kappas=(0.1,)); "
            "fit_butterworth(left, right, radius_px=3.0, progress={progress}, **grid); "
            "pattern, _ = square_grid_target(32, 40, 8); "
            "fit_distortion(distort(pattern, (0.02, 0.0, 0.0)), pattern, [0.0, 0.02], refine=0, progress={progress}); "
            "kls, krs = butterworth_dp(torch.tensor([2.0, 3.0]), size=9, dtype=torch.float64); "
            "noise_bias_trials(kls[0], krs[0], kls, krs, 0.01, 2, size=16, "
            "generator=torch.Generator().manual_seed(0), progress={progress})")
    err = _stderr_of(code.format(progress=True), tqdm_disable=False)
    assert "fit_butterworth" in err and "fit_distortion" in err and "noise-bias trials" in err
    # defaults: small searches stay quiet
    err = _stderr_of(code.format(progress=None), tqdm_disable=False)
    assert not any(name in err for name in ("fit_butterworth", "fit_distortion", "noise-bias trials")), err
