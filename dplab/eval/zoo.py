"""The book's methods behind one interface (the benchmark chapter).

Every method is a callable ``method(batch) -> (B, 3, H, W)`` on a DP sample dict (``"left"``,
``"right"``, ``"combined" = left + right``, each ``(B, 3, H, W)`` in [0, 1], dplab's
half-brightness views), so :func:`dplab.eval.evaluate.compare` runs them all the same way:

| method | paper | input | calibration / weights |
| --- | --- | --- | --- |
| ``blurred`` | - | ``combined`` | none |
| ``wiener`` | Xin et al. ICCV 2021, supp. Eq. 27 (baseline of Table 1) | ``left, right`` | kernels |
| ``mpi`` | Xin et al. ICCV 2021, Sec. 4 (Eqs. 1-2, 6) | ``left, right`` | kernels |
| ``dpdnet`` | Abuolaim & Brown, ECCV 2020 | ``left, right`` | trained |
| ``rdpd`` | Abuolaim et al., ICCV 2021, Sec. 4 | ``left, right, radial`` | trained |
| ``drbnet`` | Ruan et al., CVPR 2022 | ``combined`` | trained |
| ``mdp`` | Abuolaim et al., WACV 2022 | ``combined`` (sharp output) | trained |

The optimisation methods need the DP kernels. On dplab's synthetic data the renderer's own
PSF model is known exactly (:func:`true_kernels`, via :func:`dplab.render.layered.layer_psfs`), so it
serves as the "calibration": :class:`WienerKnownPSF` tests signed defocus hypotheses (Xin et
al. Sec. 4.2: least bias-corrected energy, Eqs. 5, 26) and :class:`MPIKnownPSF` fits an MPI
(:func:`dplab.xin.mpi.optimize`) with kernels rescaled from the largest CoC of the renderer. On
the real Pixel 4 scenes the calibrated kernels are used (:mod:`dplab.xin.recipe`).

Networks are :class:`NetworkMethod`: the input is the one the registry entry of the model's
name declares (:func:`dplab.models.model_spec`, :func:`dplab.models.registry.network_input`),
the same the trainer feeds. Weights come from the shipped files
(:func:`dplab.models.pretrained`), a chapter's checkpoint (:mod:`dplab.book.networks`) or a
brief training run (:func:`dplab.training.brief.train_brief`).

Single-channel data (the Pixel 4 raw green views): :func:`deblur_gray` replicates the views to
3 channels for the RGB networks and averages the 3 output channels.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from dplab._validate import require_choice, require_image, require_positive
from dplab.models.registry import model_entry, model_spec, network_input

__all__ = [
    "METHODS", "NetworkMethod", "blurred", "true_kernels", "WienerKnownPSF", "MPIKnownPSF",
    "deblur_gray", "synthetic_psf", "KeepOutputs",
]

#: Methods in the book's order with a short label (for tables and figures).
METHODS = {
    "blurred": "blurred input",
    "wiener": "Wiener (Xin et al.)",
    "mpi": "MPI (Xin et al.)",
    "dpdnet": "DPDNet",
    "rdpd": "RDPD",
    "drbnet": "DRBNet",
    "mdp": "MDP",
}


def blurred(batch: dict) -> torch.Tensor:
    """The baseline: the blurred conventional image ``combined = left + right``."""
    return batch["combined"]


class KeepOutputs:
    """Wrap a method and keep its outputs (clipped to [0, 1], on the CPU) by sample name, so
    that figures and checks can reuse them without running a slow method twice.

    ``.model`` and ``__name__`` are the wrapped method's (parameter counting still works).

    Example:
        >>> keep = KeepOutputs(blurred)
        >>> _ = keep({"name": "a", "combined": torch.full((1, 3, 2, 2), 2.0)})
        >>> keep.outputs["a"].max().item()
        1.0
    """

    def __init__(self, method: Callable):
        if not callable(method):
            raise TypeError("method must be callable: method(batch) -> (B, 3, H, W)")
        self.method, self.outputs = method, {}
        self.__name__ = getattr(method, "__name__", type(method).__name__)
        if hasattr(method, "model"):
            self.model = method.model

    def __call__(self, batch: dict) -> torch.Tensor:
        out = self.method(batch)
        name = batch.get("name", len(self.outputs))
        name = name[0] if isinstance(name, (list, tuple)) else name
        self.outputs[str(name)] = out.detach().float().clamp(0, 1).cpu()
        return out


# ----------------------------------------------------------------------------- networks
class NetworkMethod:
    """A network as a benchmark method: ``method(batch) -> (B, 3, H, W)``.

    The input is the one the registry entry of the name the model was built with declares
    (:func:`dplab.models.model_spec`, :func:`dplab.models.registry.network_input`):
    ``dpdnet``, ``drbnet_dual``: ``[left, right]``; ``dpdnet_single``, ``drbnet``:
    ``combined``; ``rdpd``: ``[left, right, radial]`` (``[left, right]`` for a 6-channel model;
    one frame, zero state); ``rspd``: ``[left, radial]``; ``mdp``, ``mdp_single_task``:
    ``combined``, the ``sharp`` output. ``.model`` is the network (its parameters are counted
    by :func:`dplab.eval.evaluate.method_parameters`).

    Raises:
        ValueError: a model without a dplab spec, or of a kind with no sharp output.

    Example:
        >>> from dplab.models import build
        >>> m = NetworkMethod(build("dpdnet", widths=(4, 4, 4, 4)).eval())
        >>> x = torch.rand(1, 3, 16, 16)
        >>> m({"left": x / 2, "right": x / 2, "combined": x}).shape
        torch.Size([1, 3, 16, 16])
    """

    def __init__(self, model: torch.nn.Module, name: str | None = None):
        spec = model_spec(model)
        if spec is None:
            raise ValueError("model has no dplab spec; build it with dplab.models.build or load it with from_checkpoint")
        kind = spec["name"]
        if kind == "mdp_single_task" and spec["kwargs"].get("task", "deblur") != "deblur":
            raise ValueError("an MDP single-task model for 'views' has no sharp output")
        self.model, self.kind = model, kind
        self.output = model_entry(kind).output
        self.__name__ = name or kind

    def __call__(self, batch: dict) -> torch.Tensor:
        out = self.model(network_input(self.kind, batch, in_channels=getattr(self.model, "in_channels", None)))
        return getattr(out, self.output) if self.output else out


# ----------------------------------------------------------------------------- gray input
@torch.no_grad()
def deblur_gray(method: Callable, left: torch.Tensor, right: torch.Tensor, *, level: float = 0.9,
                percentile: float = 99.5) -> torch.Tensor:
    """Run an RGB method on single-channel DP views (the Pixel 4 raw green channel).

    The views are replicated to 3 channels and scaled by one gain so that the ``percentile``
    of ``left + right`` is ``level`` (the networks were trained on images in [0, 1]); the
    method's 3 output channels are averaged and the gain is undone, so the result has the
    brightness of ``left + right``. A network trained on RGB synthetic data sees a domain it
    was not trained on (gray, real noise, real PSFs).

    Args:
        method: ``method(batch) -> (1, 3, H, W)``.
        left: ``(1, 1, H, W)``.
        right: ``(1, 1, H, W)``.

    Returns:
        ``(1, 1, H, W)``.

    Example:
        >>> v = torch.rand(1, 1, 8, 8)
        >>> torch.allclose(deblur_gray(blurred, v, v), 2 * v, atol=1e-6)
        True
    """
    left = require_image("left", left, channels=1)
    right = require_image("right", right, channels=1)
    if left.shape != right.shape:
        raise ValueError(f"left and right must have the same shape, got {tuple(left.shape)} and {tuple(right.shape)}")
    ref = float(torch.quantile((left + right).flatten().float(), percentile / 100))
    gain = level / ref if ref > 0 else 1.0
    l3, r3 = (gain * v.expand(-1, 3, -1, -1).float() for v in (left, right))
    out = method({"left": l3, "right": r3, "combined": l3 + r3})
    return (out.float().mean(1, keepdim=True) / gain).to(left.dtype)


# ----------------------------------------------------------------------------- known kernels
def true_kernels(psf, radius_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The renderer's DP kernel pair at a signed CoC radius (:func:`dplab.render.layered.layer_psfs`:
    each view sums to 1/2, radii below 1/2 px are a delta, negative radii swap the views).

    Args:
        psf: a PSF model as :func:`dplab.render.layered.render_dp` takes it (``"butterworth"``,
            Butterworth parameters ``(order, alpha, beta, kappa)``, ``"punnappurath"``, ...).
        radius_px: signed CoC radius in pixels.

    Returns:
        ``(left, right)`` float32 ``(k, k)``.

    Example:
        >>> kl, kr = true_kernels("butterworth", -3.0)
        >>> round(float(kl.sum()), 4), torch.allclose(kl, true_kernels("butterworth", 3.0)[1])
        (0.5, True)
    """
    from dplab.render.layered import layer_psfs

    kl, kr = layer_psfs(torch.tensor([float(radius_px)], dtype=torch.float64), psf)[0]
    return kl.float(), kr.float()


def synthetic_psf(root, split: str = "test") -> Callable[[dict], object]:
    """``psf_of(batch)``: the PSF model the renderer used for a sample of a
    :func:`dplab.render.synth.synthesize` folder, read from ``{split}_c/meta/<name>.json``.

    Raises:
        FileNotFoundError: no meta file for the batch's ``"name"`` (when called).

    Example:
        >>> import tempfile
        >>> from dplab.render import synth
        >>> root = tempfile.mkdtemp()
        >>> _ = synth.synthesize(root, synth.SynthConfig(count=1, size=(16, 16), split_fractions=(0, 0, 1),
        ...                                             psf="butterworth"), progress=False)
        >>> synthetic_psf(root)({"name": "00000"})
        'butterworth'
    """
    require_choice("split", split, ("train", "val", "test"))
    folder = Path(root) / f"{split}_c" / "meta"
    cache: dict = {}

    def psf_of(batch: dict):
        name = batch.get("name")
        name = name[0] if isinstance(name, (list, tuple)) else name
        if name not in cache:
            path = folder / f"{name}.json"
            if not path.is_file():
                raise FileNotFoundError(f"no renderer metadata {path} for sample {name!r}")
            psf = json.loads(path.read_text())["psf"]
            cache[name] = tuple(psf) if isinstance(psf, list) else psf
        return cache[name]

    return psf_of


class WienerKnownPSF:
    """Xin et al.'s Wiener baseline with the renderer's kernels as calibration.

    For each signed hypothesis radius ``r`` the pair :func:`true_kernels` ``(psf, r)``
    deconvolves both views (supp. Eq. 27, :func:`dplab.xin.wiener.wiener_dp`); its per-pixel
    energy (Eq. 26) averaged over a ``window`` and minus the bias ``B(d)`` (Eq. 5)
    (:func:`dplab.xin.wiener.hypothesis_energy`) selects the hypothesis per pixel, and the
    all-in-focus image takes each pixel from the Wiener estimate of its hypothesis (Zhou et
    al. 2009, the baseline of Xin et al. Table 1). Signed radii are needed because the
    synthetic scenes lie on both sides of the focal plane (the views swap).

    Args:
        psf: the renderer's PSF model (per sample, see ``psf_of``), or a callable
            ``psf_of(batch) -> psf``.
        radii: signed hypothesis radii in pixels.
        window: odd window of the energy average.
        bias: subtract ``B(d)``.

    ``__call__(batch)`` returns the all-in-focus estimate ``(1, C, H, W)`` (brightness of
    ``left + right``); ``.last_radius`` holds the chosen radius map of the last call.
    """

    def __init__(self, psf="butterworth", radii: Sequence[float] = (0.0, 1.0, -1.0), *, window: int = 15,
                 bias: bool = True):
        self.psf, self.radii = psf, [float(r) for r in radii]
        if not self.radii:
            raise ValueError("radii is empty")
        self.window = int(require_positive("window", window, integer=True))
        if self.window % 2 == 0:
            raise ValueError(f"window must be odd, got {window}")
        self.bias = bool(bias)
        self.__name__ = "wiener"
        self.last_radius = None

    def __call__(self, batch: dict) -> torch.Tensor:
        from dplab.xin.wiener import hypothesis_energy, wiener_dp

        left, right = batch["left"], batch["right"]
        psf = self.psf(batch) if callable(self.psf) else self.psf
        energies, estimates = [], []
        for r in self.radii:
            kl, kr = (k.to(left) for k in true_kernels(psf, r))
            energies.append(hypothesis_energy(left, right, kl, kr, window=self.window, bias=self.bias))
            estimates.append(wiener_dp(left, right, kl, kr))
        index = torch.stack(energies).argmin(0)                              # (B, 1, H, W)
        est = torch.stack(estimates)                                         # (D, B, C, H, W)
        out = est.gather(0, index.unsqueeze(0).expand((1,) + est.shape[1:]))[0]
        self.last_radius = torch.tensor(self.radii, dtype=left.dtype, device=left.device)[index]
        return out


class MPIKnownPSF:
    """Xin et al.'s MPI optimisation (:func:`dplab.xin.mpi.optimize`) with the renderer's kernels.

    The reference kernel pair is :func:`true_kernels` ``(psf, r_max)`` at the largest positive
    CoC the renderer produces; the ``n_layers`` layers use it rescaled by scales from
    ``r_max`` (back) to ``r_min`` (front) pixels (Sec. 4.3). Like Xin et al.'s model, it
    assumes every scene point lies behind the focal plane: points in front of it (negative
    CoC, views swapped) are explained with the wrong disparity sign.

    Args:
        psf: the renderer's PSF model, or a callable ``psf_of(batch) -> psf``.
        r_max: CoC radius of the back layer, pixels (> 0).
        r_min: CoC radius of the front layer, pixels (> 0).
        n_layers: layers (paper: 12).
        iterations: Adam iterations (paper: 10,000).
        seed: seed of :func:`dplab.xin.mpi.optimize`.
        device: where it runs (default the input's).
    """

    def __init__(self, psf="butterworth", r_max: float = 8.0, *, r_min: float = 0.5, n_layers: int = 12,
                 iterations: int = 10_000, seed: int = 0, device=None):
        self.psf = psf
        self.r_max = float(require_positive("r_max", r_max))
        self.r_min = float(require_positive("r_min", r_min))
        if self.r_min >= self.r_max:
            raise ValueError(f"r_min ({r_min}) must be below r_max ({r_max})")
        self.n_layers = int(require_positive("n_layers", n_layers, integer=True))
        self.iterations = int(require_positive("iterations", iterations, integer=True))
        self.seed, self.device = int(seed), device
        self.__name__ = "mpi"
        self.last_result = None

    def __call__(self, batch: dict) -> torch.Tensor:
        from dplab.xin.mpi import optimize

        left, right = batch["left"], batch["right"]
        psf = self.psf(batch) if callable(self.psf) else self.psf
        kl, kr = (k.to(left) for k in true_kernels(psf, self.r_max))
        outs = []
        for b in range(left.shape[0]):
            with torch.enable_grad():                  # evaluate() runs methods under no_grad
                res = optimize(left[b:b + 1], right[b:b + 1], kl, kr, n_layers=self.n_layers,
                               iterations=self.iterations, scales=(self.r_min / self.r_max, 1.0),
                               seed=self.seed, device=self.device, log_every=max(1, self.iterations))
            self.last_result = res
            outs.append(res.all_in_focus.to(left))
        return torch.cat(outs)
