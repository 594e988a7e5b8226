"""Input checks shared by every public function.

Each check raises ``TypeError`` or ``ValueError`` with a message that names the argument,
says what was received and what is expected, so that a user can fix the call without
reading dplab's source.
"""

from __future__ import annotations

import math
import numbers
from typing import Sequence

import torch

__all__ = [
    "require_number",
    "require_positive",
    "require_finite",
    "require_tensor",
    "require_image",
    "require_kernel",
    "require_choice",
    "resolve_device",
]


def require_number(name: str, value, *, integer: bool = False) -> float | int:
    """Return ``value`` as a Python number, refusing bools, strings and non-finite values.

    Example:
        >>> require_number("f_number", 2)
        2
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        else:
            kind = "an integer" if integer else "a real number"
            raise TypeError(f"{name} must be {kind}, got {type(value).__name__} {value!r}")
    if integer and not float(value).is_integer():
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return int(value) if integer else value


def require_positive(name: str, value, *, allow_zero: bool = False, integer: bool = False):
    """Return ``value`` if it is a finite number > 0 (or >= 0 with ``allow_zero``).

    Example:
        >>> require_positive("focal_length", 0.05)
        0.05
    """
    value = require_number(name, value, integer=integer)
    if value < 0 or (value == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return value


def require_tensor(name: str, x) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor, else raise ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    return x


def require_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    """Return ``x`` if every element is finite, else name the argument and count the bad values."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN or infinite value(s) out of {x.numel()}; "
            "clean the input (e.g. torch.nan_to_num) before calling"
        )
    return x


def require_image(
    name: str, x, *, channels: int | Sequence[int] | None = None, finite: bool = True
) -> torch.Tensor:
    """Check a ``(B, C, H, W)`` floating-point image tensor.

    Args:
        name: argument name used in the error message.
        x: the tensor.
        channels: required channel count(s), or None for any.
        finite: also refuse NaN and infinity.

    Example:
        >>> require_image("image", torch.zeros(1, 3, 4, 4), channels=3).shape
        torch.Size([1, 3, 4, 4])
    """
    x = require_tensor(name, x)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (B, C, H, W), got {tuple(x.shape)}")
    if channels is not None:
        allowed = (channels,) if isinstance(channels, int) else tuple(channels)
        if x.shape[1] not in allowed:
            raise ValueError(
                f"{name} must have {' or '.join(map(str, allowed))} channel(s), "
                f"got shape {tuple(x.shape)}"
            )
    if x.shape[-1] == 0 or x.shape[-2] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    return require_finite(name, x) if finite else x


def require_kernel(name: str, k) -> torch.Tensor:
    """Check a blur kernel: a finite, non-negative float tensor whose last two dims are spatial.

    Example:
        >>> require_kernel("kernel", torch.ones(3, 3) / 9).shape
        torch.Size([3, 3])
    """
    k = require_tensor(name, k)
    if k.ndim < 2:
        raise ValueError(f"{name} must have at least 2 dims (..., kh, kw), got {tuple(k.shape)}")
    require_finite(name, k)
    if bool((k < 0).any()):
        raise ValueError(f"{name} has negative entries; a PSF must be non-negative")
    return k


def require_choice(name: str, value, choices: Sequence) -> object:
    """Return ``value`` if it is one of ``choices``.

    Example:
        >>> require_choice("profile", "test", ("test", "book", "full"))
        'test'
    """
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Turn ``"auto"`` into CUDA when available, else CPU; check anything else.

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise TypeError(f"device must be 'auto', 'cpu', 'cuda[:N]' or a torch.device, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a valid torch device: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this machine has no CUDA; use 'auto'")
    return resolved
