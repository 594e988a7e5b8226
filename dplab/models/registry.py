"""The registry of the book's networks: build one by name, rebuild one from a checkpoint."""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from dplab._io import to_plain
from dplab._validate import require_choice
from dplab.models.dpdnet import DPDNET_PARAMS, DPDNet
from dplab.models.drbnet import DRBNET_PARAMS, DRBNET_VARIANTS, DRBNet
from dplab.models.mdp import MDP, MDP_PARAMS, MDPSingleTask
from dplab.models.rdpd import RDPD, RDPD_PARAMS

__all__ = ["build", "list_models", "count_parameters", "REFERENCE_PARAMS", "model_spec", "from_checkpoint"]

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


def _drbnet(in_channels: int, variant: str | None, cfg: dict) -> DRBNet:
    opts = dict(DRBNET_VARIANTS[require_choice("variant", variant, tuple(DRBNET_VARIANTS))]) if variant else {}
    opts.update(cfg)
    return DRBNet(in_channels, **opts)


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "dpdnet": lambda **cfg: DPDNet(**{"in_channels": 6, **cfg}),
    "dpdnet_single": lambda **cfg: DPDNet(**{"in_channels": 3, **cfg}),
    "rdpd": lambda **cfg: RDPD(**{"in_channels": 7, **cfg}),
    "rspd": lambda **cfg: RDPD(**{"in_channels": 4, **cfg}),
    "drbnet": lambda variant=None, **cfg: _drbnet(3, variant, cfg),
    "drbnet_dual": lambda variant=None, **cfg: _drbnet(6, variant, cfg),
    "mdp": lambda **cfg: MDP(**cfg),
    "mdp_single_task": lambda **cfg: MDPSingleTask(**cfg),
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
        model = _REGISTRY[name](**cfg)
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

    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    state = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(state, dict) or "model" not in state:
        raise ValueError(f"{path} is not a dplab trainer checkpoint (no 'model' state dict)")
    spec = state.get("model_spec")
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"checkpoint {path} has no 'model_spec', so the network it holds cannot be rebuilt "
                         f"without knowing its options; re-run what trained it (a chapter, "
                         "`python -m dplab train`) with the current dplab, whose Trainer saves the spec")
    model = build(spec["name"], **_tuples(dict(spec.get("kwargs") or {})))
    model.load_state_dict(state["model"])
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
