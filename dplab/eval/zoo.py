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

Networks are :class:`NetworkMethod` (the input is chosen from the model's registry name,
:func:`dplab.models.model_spec`). :func:`load_or_train` takes a chapter's weights when a
checkpoint exists (:func:`dplab.models.from_checkpoint`), else trains briefly
(:func:`train_brief`, :class:`dplab.training.trainer.Trainer`).

Single-channel data (the Pixel 4 raw green views): :func:`deblur_gray` replicates the views to
3 channels for the RGB networks and averages the 3 output channels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from dplab._validate import require_choice, require_image, require_positive

__all__ = [
    "METHODS", "NETWORKS", "NetworkRecipe", "NetworkMethod", "blurred", "true_kernels",
    "WienerKnownPSF", "MPIKnownPSF", "find_checkpoint", "chapter_profile", "load_or_train",
    "LoadedModel", "forward_and_loss", "train_brief", "deblur_gray", "zero_drb_heads", "synthetic_psf",
    "KeepOutputs",
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


@dataclass(frozen=True)
class NetworkRecipe:
    """How the benchmark gets one network.

    Attributes:
        registry: :func:`dplab.models.build` name.
        checkpoints: checkpoint paths relative to the book's ``outputs/`` folder, where the
            network's chapter saves its main model (first found wins).
        lr: learning rate of the brief training (short runs; the papers' rates are for
            hundreds of epochs).
        loss: what :func:`train_brief` optimises (for the chapter's prose).
    """

    registry: str
    checkpoints: tuple[str, ...]
    lr: float
    loss: str


NETWORKS = {
    "dpdnet": NetworkRecipe("dpdnet", ("dpdnet/train_dp/checkpoints/last.pt",), 2e-3, "MSE"),
    "rdpd": NetworkRecipe("rdpd", ("rdpd/train_RDPD/checkpoints/last.pt",), 2e-3,
                          "MSE + multi-scale Sobel edge loss (Eq. 16), single images"),
    "drbnet": NetworkRecipe("drbnet", ("drbnet/two_stage/checkpoints/last.pt",), 1e-3,
                            "multi-scale L1 (Eq. 6), one stage"),
    "mdp": NetworkRecipe("mdp", ("mdp/mdp/step2/checkpoints/last.pt",), 1e-3,
                         "MDP step-2 loss (sharp + DP views + L_C + L_D), step 2 only"),
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

    The input follows the registry name the model was built with
    (:func:`dplab.models.model_spec`): ``dpdnet``, ``drbnet_dual``: ``[left, right]``;
    ``dpdnet_single``, ``drbnet``: ``combined``; ``rdpd``: ``[left, right, radial]``
    (:func:`dplab.training.rdpd.dp_input`; ``[left, right]`` for a 6-channel model, one frame,
    zero state); ``rspd``: ``[left, radial]``; ``mdp``, ``mdp_single_task``: ``combined``,
    the ``sharp`` output. ``.model`` is the network (its parameters are counted by
    :func:`dplab.eval.evaluate.count_parameters`).

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
        from dplab.models import model_spec

        spec = model_spec(model)
        if spec is None:
            raise ValueError("model has no dplab spec; build it with dplab.models.build or load it with from_checkpoint")
        kind = spec["name"]
        if kind == "mdp_single_task" and spec["kwargs"].get("task", "deblur") != "deblur":
            raise ValueError("an MDP single-task model for 'views' has no sharp output")
        self.model, self.kind = model, kind
        self.__name__ = name or kind

    def __call__(self, batch: dict) -> torch.Tensor:
        from dplab.training.rdpd import dp_input

        m, kind = self.model, self.kind
        if kind in ("dpdnet", "drbnet_dual"):
            return m(torch.cat([batch["left"], batch["right"]], 1))
        if kind in ("dpdnet_single", "drbnet"):
            return m(batch["combined"])
        if kind == "rdpd":
            return m(dp_input(batch, ("left", "right"), radial=m.in_channels == 7))
        if kind == "rspd":
            return m(dp_input(batch, ("left",), radial=m.in_channels == 4))
        return m(batch["combined"]).sharp                         # mdp, mdp_single_task


def zero_drb_heads(model: torch.nn.Module) -> torch.nn.Module:
    """Zero the last layer of every DRB's kernel and residual branch of a
    :class:`~dplab.models.DRBNet` (in place), so that it starts as its identity path (the
    input downsampled by 8 and upsampled back); the DRBNet chapter's start for short runs."""
    drbs = getattr(model, "drbs", None)
    if drbs is None:
        raise ValueError("model has no DRBs (expected a dplab.models.DRBNet)")
    with torch.no_grad():
        for drb in drbs.values():
            for branch in (drb.kernel_branch, drb.res_branch):
                for p in (branch[-1].parameters() if branch is not None else ()):
                    p.zero_()
    return model


def forward_and_loss(model_name: str, loss_kind: str, in_channels: int | None = None):
    """The Trainer's ``forward(model, batch)`` and ``loss_fn(pred, batch)`` for a registry
    network and a recipe's ``loss`` (``dplab.training.trainer.RECIPES[...]["loss"]``).

    The inputs are those :class:`NetworkMethod` feeds; the losses are the papers': ``"mse"``
    (DPDNet, Sec. 4), ``"mse+edge"`` (RDPD Eq. 16), ``"l1"`` / ``"l1+vgg"`` (DRBNet Eqs. 6-7,
    on every output scale; the VGG term needs local VGG-19 weights and falls back to L1 with
    a note), ``"mdp_step1"`` / ``"mdp_step2"`` (MDP Sec. 3.4; for ``mdp_single_task`` the
    terms whose prediction the single decoder does not make drop out, so its deblurring
    baseline of MDP Table 3 trains on the sharp-image term alone).

    Args:
        model_name: a :func:`dplab.models.build` name.
        loss_kind: the recipe's loss.
        in_channels: the model's input channels (RDPD/RSPD: with or without the radial channel).

    Raises:
        ValueError: an MDP loss with another model or the reverse.
    """
    import torch.nn.functional as F

    from dplab.training import losses
    from dplab.training import rdpd as rr
    from dplab.training.mdp import mdp_loss_fn
    from dplab.training.trainer import concat_inputs

    is_mdp = model_name in ("mdp", "mdp_single_task")
    if is_mdp != loss_kind.startswith("mdp"):
        raise ValueError(f"model {model_name!r} and the recipe's loss {loss_kind!r} do not go together: "
                         "the mdp_step1/mdp_step2 recipes are for --model mdp or mdp_single_task, and only they")
    multiscale = loss_kind in ("l1", "l1+vgg")
    if model_name in ("drbnet", "drbnet_dual"):
        keys = ("combined",) if model_name == "drbnet" else ("left", "right")
        inputs = concat_inputs(*keys)
        if multiscale:                                         # every scale for Eq. 6 / Eq. 7
            forward = lambda m, b: inputs(lambda x: m(x, return_scales=True), b)  # noqa: E731
        else:
            forward = inputs
    elif model_name in ("rdpd", "rspd"):
        views = ("left", "right") if model_name == "rdpd" else ("left",)
        forward = rr.make_forward(views, radial=in_channels == len(views) * 3 + 1)
    elif model_name in ("dpdnet", "mdp", "mdp_single_task"):
        forward = concat_inputs(*(("left", "right") if model_name == "dpdnet" else ("combined",)))
    else:                                                      # dpdnet_single
        forward = concat_inputs("combined")
    if loss_kind == "mse":
        loss_fn = lambda p, b: F.mse_loss(p, b["sharp"])       # noqa: E731
    elif loss_kind == "mse+edge":
        loss_fn = rr.make_loss(3)
    elif multiscale:
        vgg_path = losses.default_vgg19_path()
        if loss_kind == "l1+vgg" and vgg_path.is_file():
            vgg = losses.VGGFeatureLoss(vgg_path)
            loss_fn = lambda p, b: vgg.to(b["sharp"].device)(p, b["sharp"])  # noqa: E731
        else:
            if loss_kind == "l1+vgg":
                print(f"train: no VGG-19 weights at {vgg_path} (set DPLAB_VGG19); using the multi-scale "
                      "L1 loss instead (DRBNet Table 5, row c)")
            loss_fn = lambda p, b: losses.multiscale_l1(p, b["sharp"])  # noqa: E731
    else:
        loss_fn = mdp_loss_fn("paper_step1" if loss_kind == "mdp_step1" else "paper_step2")
    return forward, loss_fn


def train_brief(method: str, train_set, output_dir, *, options: dict | None = None, steps: int = 100,
                patch: int = 48, batch_size: int = 8, patches_per_image: int = 4, lr: float | None = None,
                seed: int = 0, device="cpu") -> torch.nn.Module:
    """Train one of the book's networks briefly on a DP dataset with :class:`dplab.training.trainer.Trainer`.

    The losses are the papers' (see :data:`NETWORKS`): DPDNet MSE (Sec. 4), RDPD Eq. 16 on
    single-image batches (no sequence batches), DRBNet multi-scale L1 (Eq. 6, stage 2 only,
    DRB heads zeroed), MDP's step-2 loss (Sec. 3.4, joint training only, no step 1). Adam
    (RAdam for DRBNet, Sec. 5.1) at a constant learning rate. The checkpoint (with the model
    spec) is ``output_dir/checkpoints/last.pt``; a finished run is resumed (not retrained).

    Args:
        method: a key of :data:`NETWORKS`.
        train_set: dataset of sample dicts with ``left``, ``right``, ``combined``, ``sharp``.
        output_dir: the Trainer's folder.
        options: :func:`dplab.models.build` options (e.g. ``{"widths": (8, 16, 32, 32)}``).
        steps: optimizer steps.
        patch: patch size (a multiple of 16).
        batch_size: patches per step.
        patches_per_image: patches drawn per image per epoch.
        lr: learning rate (default: the recipe's of :data:`NETWORKS`).
        seed: seed of the initial weights and of the patches.
        device: where to train.

    Returns:
        The trained network in eval mode.

    Raises:
        ValueError: unknown method, patch not a multiple of 16.
    """
    from dplab.training import rdpd as rr
    from dplab.data.patches import RandomPatches
    from dplab.models import build
    from dplab.training.trainer import Trainer, recipe

    require_choice("method", method, tuple(NETWORKS))
    steps = int(require_positive("steps", steps, integer=True))
    patch = int(require_positive("patch", patch, integer=True))
    if patch % 16:
        raise ValueError(f"patch must be a multiple of 16 (four poolings), got {patch}")
    net = NETWORKS[method]
    torch.manual_seed(seed)
    model = build(net.registry, **(options or {}))
    radial = method == "rdpd"
    if method == "rdpd" and getattr(model.head, "kind", "paper") == "paper":   # a residual head starts at its input
        model = rr.init_output_bias(model)
    if method == "drbnet":
        model = zero_drb_heads(model)
    name = {"dpdnet": "dpdnet", "rdpd": "rdpd", "drbnet": "drbnet_dpdd", "mdp": "mdp_step2"}[method]
    # DRBNet: stage 2's multi-scale L1 without the VGG term (no weights file is assumed here).
    loss_kind = {"dpdnet": "mse", "rdpd": "mse+edge", "drbnet": "l1", "mdp": "mdp_step2"}[method]
    forward, loss_fn = forward_and_loss(net.registry, loss_kind, getattr(model, "in_channels", None))
    cfg = recipe(name, epochs=None, max_steps=steps, batch_size=batch_size, lr=lr or net.lr,
                 schedule={"kind": "constant"}, progress=False, checkpoint_every=0, val_every=0,
                 seed=seed, device=str(device))
    patches = RandomPatches(train_set, patch, patches_per_image=patches_per_image, seed=seed, radial=radial)
    Trainer(model, loss_fn, patches, cfg, output_dir=output_dir, forward=forward).fit()
    return model.eval()


def chapter_profile(checkpoint) -> str | None:
    """The profile recorded in the ``metrics.json`` of the chapter folder holding
    ``checkpoint`` (nearest parent with one), or None when there is none."""
    for parent in Path(checkpoint).resolve().parents:
        path = parent / "metrics.json"
        if path.is_file():
            try:
                return json.loads(path.read_text()).get("profile")
            except (OSError, ValueError):
                return None
    return None


def find_checkpoint(method: str, search_dirs: Sequence) -> list[Path]:
    """Existing chapter checkpoints of ``method`` under the folders ``search_dirs`` (each a
    book ``outputs/`` folder), in search order."""
    require_choice("method", method, tuple(NETWORKS))
    found = []
    for d in search_dirs:
        for rel in NETWORKS[method].checkpoints:
            p = Path(d) / rel
            if p.is_file():
                found.append(p)
    return found


@dataclass
class LoadedModel:
    """Result of :func:`load_or_train`: the network, ``source`` (``"chapter"`` or
    ``"trained"``), the checkpoint it came from, and why chapter checkpoints were skipped."""

    model: torch.nn.Module
    source: str
    checkpoint: Path | None = None
    skipped: list = field(default_factory=list)


def load_or_train(method: str, search_dirs: Sequence, train_fn: Callable[[str], torch.nn.Module], *,
                  profile: str | None = None, map_location="cpu") -> LoadedModel:
    """A chapter's weights when present, else a brief training run.

    Looks for the chapter checkpoints of ``method`` (:func:`find_checkpoint`); a checkpoint
    is used when its chapter ran in ``profile`` (:func:`chapter_profile`; any profile when
    None) and it rebuilds with :func:`dplab.models.from_checkpoint`. Otherwise
    ``train_fn(method)`` is called (e.g. :func:`train_brief` on the benchmark's own data).

    Returns:
        :class:`LoadedModel`; ``skipped`` lists ``(path, reason)`` of rejected checkpoints.

    Example:
        >>> from dplab.models import build
        >>> got = load_or_train("dpdnet", [], lambda m: build("dpdnet", widths=(4, 4, 4, 4)))
        >>> got.source, got.checkpoint
        ('trained', None)
    """
    from dplab.models import from_checkpoint

    if not callable(train_fn):
        raise TypeError("train_fn must be callable: train_fn(method) -> model")
    skipped = []
    for path in find_checkpoint(method, search_dirs):
        ran = chapter_profile(path)
        if profile is not None and ran != profile:
            skipped.append((str(path), f"chapter ran in the {ran!r} profile, not {profile!r}"))
            continue
        try:
            model = from_checkpoint(path, map_location=map_location)
        except (ValueError, RuntimeError) as exc:
            skipped.append((str(path), str(exc)))
            continue
        return LoadedModel(model, "chapter", path, skipped)
    return LoadedModel(train_fn(method).eval(), "trained", None, skipped)


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
        >>> from dplab import synth
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
    deconvolves both views (supp. Eq. 27, :func:`dplab.xin.deconv.wiener_dp`); its per-pixel
    energy (Eq. 26) averaged over a ``window`` and minus the bias ``B(d)`` (Eq. 5)
    (:func:`dplab.xin.deconv.hypothesis_energy`) selects the hypothesis per pixel, and the
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
        from dplab.xin.deconv import hypothesis_energy, wiener_dp

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
