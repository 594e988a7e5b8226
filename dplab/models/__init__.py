"""Deblurring networks of the book and a registry to build them by name.

| name | class | paper | input |
| --- | --- | --- | --- |
| ``dpdnet`` | :class:`DPDNet` | Abuolaim & Brown, ECCV 2020 | ``[left, right]``, 6 ch |
| ``dpdnet_single`` | :class:`DPDNet` | same, single image ("DPDNet (single)") | image, 3 ch |
| ``rdpd`` | :class:`RDPD` | Abuolaim et al., ICCV 2021, Sec. 4 | ``[left, right, radial]``, 7 ch, frames or sequences |
| ``rspd`` | :class:`RDPD` | same, supplement Table S3 | ``[view, radial]``, 4 ch |
| ``drbnet`` | :class:`DRBNet` | Ruan et al., CVPR 2022 | image, 3 ch |
| ``drbnet_dual`` | :class:`DRBNet` | same, dual-pixel model of the code | ``[left, right]``, 6 ch |
| ``mdp`` | :class:`MDP` | Abuolaim et al., WACV 2022 | image, 3 ch -> left, right, sharp |
| ``mdp_single_task`` | :class:`MDPSingleTask` | same, Table 3 baselines | image, 3 ch |

Every model takes and returns ``(B, C, H, W)`` float tensors in [0, 1] (dplab convention:
each DP view about half the brightness, ``combined = left + right``) and accepts any H and W
(padded inside to the multiple its poolings need, outputs cropped back).

Counting parameters of the big networks is instant on the ``meta`` device::

    with torch.device("meta"):
        n = count_parameters(build("dpdnet"))
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from .._validate import require_choice
from .blocks import pad_to_multiple
from .convlstm import ConvLSTM, ConvLSTMCell, LSTMState
from .dpdnet import DPDNET_PARAMS, DPDNet
from .drbnet import DRBNET_PARAMS, DRBNET_VARIANTS, DRBNet, DynamicResidualBlock, apply_pixel_kernels
from .mdp import MDP, MDP_PARAMS, MDPOutput, MDPSingleTask
from .rdpd import RDPD, RDPD_PARAMS, radial_distance_map

__all__ = [
    "build", "list_models", "count_parameters", "REFERENCE_PARAMS",
    "DPDNet", "RDPD", "DRBNet", "MDP", "MDPSingleTask", "MDPOutput",
    "ConvLSTM", "ConvLSTMCell", "LSTMState", "DynamicResidualBlock", "apply_pixel_kernels",
    "radial_distance_map", "pad_to_multiple", "DRBNET_VARIANTS",
]

#: Parameter counts of the authors' code for the default configuration of each registry
#: name (REFERENCE_FACTS.md). ``rspd`` is derived: the RDPD code's count with 4 input
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
        return _REGISTRY[name](**cfg)
    except TypeError as exc:
        raise TypeError(f"build({name!r}): {exc}") from None


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
