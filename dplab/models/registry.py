"""The registry of the book's networks: build one by name, feed it, rebuild one from a checkpoint.

Each entry declares, besides how to build the network, what it is fed and how it is trained:

| name | inputs (channels) | default loss | output |
| --- | --- | --- | --- |
| ``dpdnet`` | ``left, right`` (6) | ``mse`` (DPDNet, ECCV 2020, Sec. 4) | image |
| ``dpdnet_single`` | ``combined`` (3) | ``mse`` | image |
| ``rdpd`` | ``left, right, radial`` (7) | ``mse+edge`` (RDPD, ICCV 2021, Eq. 16) | image |
| ``rspd`` | ``left, radial`` (4) | ``mse+edge`` | image |
| ``drbnet`` | ``combined`` (3) | ``l1`` (DRBNet, CVPR 2022, Eq. 6) | image |
| ``drbnet_dual`` | ``left, right`` (6) | ``l1`` | image |
| ``mdp`` | ``combined`` (3) | ``mdp_step2`` (MDP, WACV 2022, Sec. 3.4) | ``.sharp`` |
| ``mdp_single_task`` | ``combined`` (3) | ``mdp_step2`` | ``.sharp`` |

:func:`network_input` turns a batch (a sample dict of ``(B, C, H, W)`` or ``(B, T, C, H, W)``
tensors) into the input tensor of a registry network, and :func:`network_forward` makes the
``forward(model, batch)`` of :class:`dplab.training.trainer.Trainer` from it; training,
evaluation (:class:`dplab.eval.zoo.NetworkMethod`) and the benchmark all feed networks through
these two. The loss names are the recipe loss kinds of
:func:`dplab.training.objectives.recipe_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn as nn

from dplab._io import CheckpointError, read_checkpoint, to_plain
from dplab._validate import require_choice
from dplab.models.dpdnet import DPDNET_PARAMS, DPDNet
from dplab.models.drbnet import DRBNET_PARAMS, DRBNET_VARIANTS, DRBNet
from dplab.models.mdp import MDP, MDP_PARAMS, MDPSingleTask
from dplab.models.rdpd import RDPD, RDPD_PARAMS
from dplab.ops.radial import radial_distance_map

__all__ = [
    "build", "list_models", "count_parameters", "REFERENCE_PARAMS", "model_spec", "from_checkpoint",
    "ModelEntry", "INPUT_CHANNELS", "model_entry", "model_inputs", "network_input", "network_forward",
]

#: Parameter counts of the authors' code for the default configuration of each registry
#: name (the authors' released code, counted with their model definitions). ``rspd`` is derived: the RDPD code's count with 4 input
#: channels instead of 7 (3 x 9 x 32 = 864 fewer weights in the first convolution).
REFERENCE_PARAMS = {
    "dpdnet": DPDNET_PARAMS[6],
    "dpdnet_single": DPDNET_PARAMS[3],
    "rdpd": RDPD_PARAMS,
    "rspd": RDPD_PARAMS - 864,
    "drbnet": DRBNET_PARAMS[3],
    "drbnet_dual": DRBNET_PARAMS[6],
    "mdp": MDP_PARAMS,
}

#: Channels of each sample-dict key a registry network may take: the DP views and the
#: combined image (RGB) and RDPD's radial-distance channel (:mod:`dplab.ops.radial`).
INPUT_CHANNELS = {"left": 3, "right": 3, "combined": 3, "radial": 1}


@dataclass(frozen=True)
class ModelEntry:
    """One registry network: how it is built, fed and trained.

    Attributes:
        factory: ``factory(**cfg)`` builds the network (use :func:`build`).
        inputs: the sample-dict keys concatenated on the channel axis, in order.
        loss: the default training loss, a recipe loss kind
            (:func:`dplab.training.objectives.recipe_loss`).
        output: None when ``forward`` returns the sharp image; else the attribute of the
            output that holds it (MDP: ``"sharp"``).
    """

    factory: Callable[..., nn.Module] = field(repr=False)
    inputs: tuple[str, ...]
    loss: str
    output: str | None = None


def _drbnet(in_channels: int, variant: str | None, cfg: dict) -> DRBNet:
    opts = dict(DRBNET_VARIANTS[require_choice("variant", variant, tuple(DRBNET_VARIANTS))]) if variant else {}
    opts.update(cfg)
    return DRBNet(in_channels, **opts)


_REGISTRY: dict[str, ModelEntry] = {
    "dpdnet": ModelEntry(lambda **cfg: DPDNet(**{"in_channels": 6, **cfg}), ("left", "right"), "mse"),
    "dpdnet_single": ModelEntry(lambda **cfg: DPDNet(**{"in_channels": 3, **cfg}), ("combined",), "mse"),
    "rdpd": ModelEntry(lambda **cfg: RDPD(**{"in_channels": 7, **cfg}), ("left", "right", "radial"), "mse+edge"),
    "rspd": ModelEntry(lambda **cfg: RDPD(**{"in_channels": 4, **cfg}), ("left", "radial"), "mse+edge"),
    "drbnet": ModelEntry(lambda variant=None, **cfg: _drbnet(3, variant, cfg), ("combined",), "l1"),
    "drbnet_dual": ModelEntry(lambda variant=None, **cfg: _drbnet(6, variant, cfg), ("left", "right"), "l1"),
    "mdp": ModelEntry(lambda **cfg: MDP(**cfg), ("combined",), "mdp_step2", "sharp"),
    "mdp_single_task": ModelEntry(lambda **cfg: MDPSingleTask(**cfg), ("combined",), "mdp_step2", "sharp"),
}


def list_models() -> list[str]:
    """Names accepted by :func:`build`, sorted.

    Example:
        >>> list_models()[:3]
        ['dpdnet', 'dpdnet_single', 'drbnet']
    """
    return sorted(_REGISTRY)


def build(name: str, **cfg) -> nn.Module:
    """Build a network by registry name with its constructor options.

    Args:
        name: one of :func:`list_models`.
        **cfg: keyword arguments of the model class (e.g. ``peephole=False`` for ``rdpd``,
            ``kernel_size=9`` or ``variant="no_dynamic"`` (see ``DRBNET_VARIANTS``) for
            ``drbnet``, ``stitching="late"`` for ``mdp``, ``task="views"`` for
            ``mdp_single_task``).

    Returns:
        The ``nn.Module``, freshly initialised, in training mode.

    Raises:
        ValueError: unknown name or option value.
        TypeError: an option the model does not take.

    Example:
        >>> net = build("rdpd", widths=(4, 4, 4, 4), lstm_channels=4)
        >>> type(net).__name__, net.in_channels
        ('RDPD', 7)
    """
    require_choice("name", name, list_models())
    try:
        model = _REGISTRY[name].factory(**cfg)
    except TypeError as exc:
        raise TypeError(f"build({name!r}): {exc}") from None
    # Self-description: dplab.training.trainer.Trainer stores it in its checkpoints ("model_spec"), so
    # from_checkpoint can rebuild the network without knowing the chapter's widths.
    # (Options that are not plain values, e.g. a module, leave the model without a spec.)
    try:
        model.dplab_spec = {"name": name, "kwargs": to_plain(cfg, unknown="raise")}
    except TypeError:
        pass
    return model


def _tuples(value):
    """Lists (as a checkpoint stores tuples) back to tuples, recursively."""
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    return value


def model_spec(model: nn.Module) -> dict | None:
    """The ``{"name", "kwargs"}`` that :func:`build` recorded on ``model``, or None for a
    module not made by :func:`build`.

    Example:
        >>> model_spec(build("dpdnet", widths=(4, 4, 4, 4)))
        {'name': 'dpdnet', 'kwargs': {'widths': [4, 4, 4, 4]}}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    spec = getattr(model, "dplab_spec", None)
    return dict(spec) if isinstance(spec, dict) else None


def from_checkpoint(path, map_location="cpu") -> nn.Module:
    """Rebuild a network from a checkpoint written by :class:`dplab.training.trainer.Trainer` and load
    its weights, without knowing the widths or options it was built with.

    The trainer stores the registry name and options that :func:`build` recorded on the
    model (``checkpoint["model_spec"]``); this builds the same network and loads
    ``checkpoint["model"]`` strictly.

    Args:
        path: a ``last.pt`` / ``best.pt`` file of the trainer.
        map_location: device of the loaded tensors (and of the returned model).

    Returns:
        The network in eval mode on ``map_location``; ``model.dplab_spec`` holds its spec.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the checkpoint has no ``"model"`` state dict or no ``"model_spec"`` (it
            was written before dplab recorded specs, or by a model not made with
            :func:`build`); the message says which chapter to re-run.
        dplab._io.CheckpointError: the file cannot be read (empty, truncated, not a
            checkpoint), its spec names options :func:`build` does not know, or its weights do
            not fit the network of its spec; the message names the file.

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> net = build("dpdnet", widths=(4, 4, 4, 4))
        >>> p = Path(tempfile.mkdtemp()) / "c.pt"
        >>> torch.save({"model": net.state_dict(), "model_spec": model_spec(net)}, p)
        >>> count_parameters(from_checkpoint(p)) == count_parameters(net)
        True
    """
    from pathlib import Path

    path = Path(path)
    state = read_checkpoint(path, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a dplab trainer checkpoint (no 'model' state dict)")
    spec = state.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"checkpoint {path} has no 'model_spec', so the network it holds cannot be rebuilt "
                         f"without knowing its options; re-run what trained it (a chapter, "
                         "`python -m dplab train`) with the current dplab, whose Trainer saves the spec")
    try:
        model = build(spec["name"], **_tuples(dict(spec.get("kwargs") or {})))
    except (TypeError, ValueError) as err:      # an option or a name this dplab does not know
        raise CheckpointError(f"{path} records a network this dplab cannot build ({spec}: {err}); it was "
                              "written by another version of dplab: retrain it with this one") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:                 # missing/unexpected keys, size mismatches
        first = "; ".join(t.strip() for t in str(err).splitlines() if t.strip())[:300]
        raise CheckpointError(f"{path} holds weights that do not fit the network of its own spec {spec} "
                              f"({first}); the file was altered or written by another version of dplab") from None
    return model.to(map_location).eval()


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (weights and biases) of ``model``.

    Args:
        model: any ``nn.Module`` (may live on the ``meta`` device).
        trainable_only: count only parameters with ``requires_grad``.

    Example:
        >>> import torch
        >>> with torch.device("meta"):
        ...     count_parameters(build("dpdnet"))
        31035151
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_entry(name: str) -> ModelEntry:
    """The registry's :class:`ModelEntry` of ``name``.

    Example:
        >>> model_entry("rdpd").inputs, model_entry("rdpd").loss
        (('left', 'right', 'radial'), 'mse+edge')
    """
    return _REGISTRY[require_choice("name", name, list_models())]


def model_inputs(name: str, in_channels: int | None = None) -> tuple[str, ...]:
    """The sample-dict keys a network of registry ``name`` is fed, in channel order.

    Args:
        name: one of :func:`list_models`.
        in_channels: the built network's input channels when known (``model.in_channels``):
            an RDPD/RSPD built one channel short is the "without radial distance" ablation
            (RDPD supplement Table S4) and is fed without ``"radial"``.

    Raises:
        ValueError: unknown name, or ``in_channels`` that fits neither the declared inputs
            nor them without the radial channel.

    Example:
        >>> model_inputs("rdpd"), model_inputs("rdpd", in_channels=6)
        (('left', 'right', 'radial'), ('left', 'right'))
    """
    keys = model_entry(name).inputs
    if in_channels is None or int(in_channels) == sum(INPUT_CHANNELS[k] for k in keys):
        return keys
    without = tuple(k for k in keys if k != "radial")
    if without != keys and int(in_channels) == sum(INPUT_CHANNELS[k] for k in without):
        return without
    raise ValueError(f"a {name!r} network takes {keys} ({sum(INPUT_CHANNELS[k] for k in keys)} channels)"
                     f"{f' or {without}' if without != keys else ''}, not {in_channels} input channels")


def network_input(name: str, batch: dict, *, in_channels: int | None = None) -> torch.Tensor:
    """The input tensor of a registry network: its inputs (:func:`model_inputs`) taken from
    ``batch`` and concatenated on the channel axis (dim -3), for frames ``(B, C, H, W)`` and
    sequences ``(B, T, C, H, W)`` alike.

    A ``"radial"`` input missing from the batch (full images at test time) is the map of the
    whole frame (:func:`dplab.ops.radial.radial_distance_map`); a patch sampler's batch
    carries the map of each patch's window instead.

    Args:
        name: one of :func:`list_models`.
        batch: sample dict of tensors.
        in_channels: see :func:`model_inputs`.

    Raises:
        KeyError: the batch lacks an input (other than ``"radial"``).

    Example:
        >>> x = torch.rand(2, 3, 8, 8)
        >>> network_input("rdpd", {"left": x / 2, "right": x / 2}).shape
        torch.Size([2, 7, 8, 8])
        >>> network_input("drbnet", {"combined": x}) is x
        True
    """
    keys = model_inputs(name, in_channels)
    missing = [k for k in keys if k not in batch and k != "radial"]
    if missing:
        raise KeyError(f"a {name!r} network is fed {keys}; the batch lacks {missing} (keys: {sorted(batch)})")
    parts = []
    for key in keys:
        value = batch.get(key)
        if value is None and key == "radial":
            x = parts[0]
            value = radial_distance_map(*x.shape[-2:], dtype=x.dtype, device=x.device)
            value = value.expand(*x.shape[:-3], 1, *x.shape[-2:])
        parts.append(value)
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-3)


def network_forward(name: str, *, in_channels: int | None = None, **call_kwargs) -> Callable:
    """A ``forward(model, batch)`` for :class:`dplab.training.trainer.Trainer`:
    ``model(network_input(name, batch), **call_kwargs)``.

    Args:
        name: one of :func:`list_models`.
        in_channels: see :func:`model_inputs`.
        **call_kwargs: passed to the model's ``forward`` (e.g. ``return_scales=True`` for
            DRBNet's multi-scale losses).

    Example:
        >>> fwd = network_forward("dpdnet")
        >>> fwd(torch.nn.Identity(), {"left": torch.zeros(1, 3, 4, 4), "right": torch.ones(1, 3, 4, 4)}).shape
        torch.Size([1, 6, 4, 4])
    """
    keys = model_inputs(name, in_channels)      # validates now, not at the first step

    def forward(model, batch):
        return model(network_input(name, batch, in_channels=in_channels), **call_kwargs)

    forward.inputs = keys
    return forward
