"""Convolutional LSTM with peephole terms (RDPD, Abuolaim et al. ICCV 2021, Sec. 4, Eqs. 7-11).

For an input feature map ``X_t`` and the previous hidden state ``H_{t-1}`` and memory
cell ``C_{t-1}`` (``*`` a 2-D convolution, ``o`` the Hadamard product, ``S`` the logistic
sigmoid, ``tau`` tanh)::

    i_t = S(W_i^X * X_t + W_i^H * H_{t-1} + W_i^C o C_{t-1} + b_i)             (7)
    F_t = S(W_F^X * X_t + W_F^H * H_{t-1} + W_F^C o C_{t-1} + b_F)             (8)
    o_t = S(W_o^X * X_t + W_o^H * H_{t-1} + W_o^C o C_{t-1} + b_o)             (9)
    C_t = F_t o C_{t-1} + i_t o tau(W_C^X * X_t + W_C^H * H_{t-1} + b_C)       (10)
    H_t = o_t o tau(C_t)                                                        (11)

Choices made here (and why):

* **Peephole weights are per channel** (``W^C`` has shape ``(hidden, 1, 1)`` per gate and is
  broadcast over pixels). Per-pixel peepholes would tie the network to one patch size,
  whereas the paper stresses that RDPD stays fully convolutional and is tested on full
  images after training on 512x512 patches (Sec. 5). Eq. 9 is followed as printed
  (``C_{t-1}`` in the output gate; Shi et al. 2015 use ``C_t`` there).
* The authors' Keras code uses ``ConvLSTM2D``, which has **no** peephole terms: its 512-unit
  cell has 18,876,416 weights. Our peepholes add ``3 * hidden`` weights (1,536 for 512) and
  start at zero, so an untrained cell computes exactly what the Keras cell computes;
  ``peephole=False`` gives the code's count exactly.
* Gate order in the fused weights is ``[i, F, C, o]`` (Keras order). The forget-gate bias
  starts at 1 (Keras ``unit_forget_bias``); input weights are He-normal, recurrent weights
  orthogonal (the code's initialisers). The paper's sigmoid is used for the gates (Keras
  ``ConvLSTM2D`` defaults to ``hard_sigmoid``).
* Dropout follows Keras' ``dropout`` / ``recurrent_dropout``: during training, four
  independent element-wise masks (one per gate) multiply the input ``X_t`` (``dropout``) and
  the hidden state ``H_{t-1}`` (``recurrent_dropout``) before their convolutions, scaled by
  ``1 / (1 - p)``; the masks are drawn once per sequence and reused at every time step.
  RDPD's code sets ``dropout=0.4`` and leaves ``recurrent_dropout`` at 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_number, require_positive, require_tensor
from dplab.models.blocks import he_normal_, require_input_dtype

__all__ = ["LSTMState", "ConvLSTMCell", "ConvLSTM"]


class LSTMState(NamedTuple):
    """Recurrent state of a :class:`ConvLSTMCell`: hidden ``h`` and memory cell ``c``,
    each ``(B, hidden, H, W)``."""

    h: torch.Tensor
    c: torch.Tensor

    def detach(self) -> "LSTMState":
        """The same state cut from the autograd graph (truncated back-propagation through
        time: call between optimisation steps when carrying the state across batches).

        Example:
            >>> s = LSTMState(torch.ones(1, requires_grad=True) * 2, torch.zeros(1))
            >>> s.detach().h.requires_grad
            False
        """
        return LSTMState(self.h.detach(), self.c.detach())


def _check_rate(name: str, p) -> float:
    p = float(require_number(name, p))
    if not 0.0 <= p < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {p!r}")
    return p


class ConvLSTMCell(nn.Module):
    """One ConvLSTM time step, Eqs. 7-11 of RDPD (see the module docstring).

    Args:
        in_channels: channels of ``X_t``.
        hidden_channels: channels of ``H_t`` and ``C_t`` (512 in RDPD).
        kernel_size: odd kernel size of the ``*`` convolutions (3 in RDPD), 'same' padding.
        peephole: include the Hadamard terms ``W^C o C_{t-1}`` of Eqs. 7-9 (per-channel).
        dropout: Keras ``dropout`` rate on ``X_t``.
        recurrent_dropout: Keras ``recurrent_dropout`` rate on ``H_{t-1}``.

    Attributes:
        conv_x: ``Conv2d(in, 4 * hidden)`` holding ``W^X`` and the biases ``b``, gate order
            ``[i, F, C, o]`` along the output channels.
        conv_h: ``Conv2d(hidden, 4 * hidden, bias=False)`` holding ``W^H``.
        peep: ``(3, hidden, 1, 1)`` peephole weights ``[W_i^C, W_F^C, W_o^C]`` (if enabled).

    Shape:
        ``x``: ``(B, in_channels, H, W)``; state: :class:`LSTMState` of
        ``(B, hidden_channels, H, W)`` tensors, or None for zeros. Returns the new state.

    Raises:
        ValueError: wrong channel count, or a state whose shape does not match ``x``.

    Example:
        >>> cell = ConvLSTMCell(4, 6).eval()
        >>> s = cell(torch.rand(2, 4, 5, 5)); s = cell(torch.rand(2, 4, 5, 5), s)
        >>> tuple(s.h.shape), bool(s.h.abs().max() < 1)
        ((2, 6, 5, 5), True)
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, *,
                 peephole: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0):
        super().__init__()
        self.in_channels = require_positive("in_channels", in_channels, integer=True)
        self.hidden_channels = require_positive("hidden_channels", hidden_channels, integer=True)
        kernel_size = require_positive("kernel_size", kernel_size, integer=True)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd for 'same' padding, got {kernel_size}")
        self.kernel_size = kernel_size
        self.dropout = _check_rate("dropout", dropout)
        self.recurrent_dropout = _check_rate("recurrent_dropout", recurrent_dropout)
        hid = self.hidden_channels
        pad = kernel_size // 2
        self.conv_x = nn.Conv2d(in_channels, 4 * hid, kernel_size, padding=pad, bias=True)
        self.conv_h = nn.Conv2d(hid, 4 * hid, kernel_size, padding=pad, bias=False)
        self.peep = nn.Parameter(torch.zeros(3, hid, 1, 1)) if peephole else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal ``W^X``, orthogonal ``W^H``, zero biases except the forget gate (1),
        zero peepholes (Keras ConvLSTM2D defaults with the RDPD code's ``he_normal``)."""
        he_normal_(self.conv_x.weight)
        if not self.conv_h.weight.is_meta:
            with torch.no_grad():
                nn.init.orthogonal_(self.conv_h.weight)
                self.conv_x.bias.zero_()
                self.conv_x.bias[self.hidden_channels:2 * self.hidden_channels] = 1.0
                if self.peep is not None:
                    self.peep.zero_()

    def init_state(self, x: torch.Tensor) -> LSTMState:
        """Zero state matching ``x`` ``(B, C, H, W)``."""
        z = x.new_zeros(x.shape[0], self.hidden_channels, *x.shape[-2:])
        return LSTMState(z, z.clone())

    def dropout_masks(self, x: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Draw Keras-style masks for one sequence: ``(4, B, C, H, W)`` for the input and
        ``(4, B, hidden, H, W)`` for the hidden state, or None where the rate is 0 or the
        module is in eval mode. Values are 0 or ``1 / (1 - p)``."""
        if not self.training:
            return None, None
        mx = mh = None
        if self.dropout > 0:
            keep = 1.0 - self.dropout
            mx = torch.bernoulli(x.new_full((4,) + tuple(x.shape), keep)) / keep
        if self.recurrent_dropout > 0:
            keep = 1.0 - self.recurrent_dropout
            shape = (4, x.shape[0], self.hidden_channels) + tuple(x.shape[-2:])
            mh = torch.bernoulli(x.new_full(shape, keep)) / keep
        return mx, mh

    def _gates_conv(self, conv: nn.Conv2d, z: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        if mask is None:
            return conv(z)
        # One mask per gate: stack the 4 masked copies and use a grouped convolution whose
        # group g is exactly the slice of the fused weight that produces gate g.
        zz = (mask * z.unsqueeze(0)).transpose(0, 1).reshape(z.shape[0], 4 * z.shape[1], *z.shape[-2:])
        return F.conv2d(zz, conv.weight, conv.bias, padding=conv.padding, groups=4)

    def forward(self, x: torch.Tensor, state: LSTMState | None = None,
                masks: tuple[torch.Tensor | None, torch.Tensor | None] | None = None) -> LSTMState:
        """Advance one step. ``masks`` (from :meth:`dropout_masks`) are drawn here when None."""
        x = require_input_dtype("x", require_tensor("x", x), self)
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if state is None:
            state = self.init_state(x)
        h, c = state
        expect = (x.shape[0], self.hidden_channels, *x.shape[-2:])
        if tuple(h.shape) != expect or tuple(c.shape) != expect:
            raise ValueError(f"state tensors must have shape {expect} to match x, got "
                             f"{tuple(h.shape)} and {tuple(c.shape)}")
        mx, mh = masks if masks is not None else self.dropout_masks(x)
        g = self._gates_conv(self.conv_x, x, mx) + self._gates_conv(self.conv_h, h, mh)
        gi, gf, gc, go = g.chunk(4, dim=1)
        if self.peep is not None:
            gi = gi + self.peep[0] * c
            gf = gf + self.peep[1] * c
            go = go + self.peep[2] * c            # Eq. 9 as printed: C_{t-1}
        i, f, o = torch.sigmoid(gi), torch.sigmoid(gf), torch.sigmoid(go)
        c_new = f * c + i * torch.tanh(gc)        # Eq. 10
        h_new = o * torch.tanh(c_new)             # Eq. 11
        return LSTMState(h_new, c_new)


class ConvLSTM(nn.Module):
    """A :class:`ConvLSTMCell` run over a sequence, returning every hidden state
    (Keras ``return_sequences=True``) and the last state to carry on.

    Args:
        in_channels, hidden_channels, kernel_size, peephole, dropout, recurrent_dropout:
            as for :class:`ConvLSTMCell`.

    Shape:
        ``x``: ``(B, T, C, H, W)``; returns ``(hs, state)`` with ``hs`` ``(B, T, hidden, H, W)``.

    Example:
        >>> lstm = ConvLSTM(3, 4).eval()
        >>> hs, st = lstm(torch.rand(1, 5, 3, 6, 6))
        >>> tuple(hs.shape), torch.equal(hs[:, -1], st.h)
        ((1, 5, 4, 6, 6), True)
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int = 3, *,
                 peephole: bool = True, dropout: float = 0.0, recurrent_dropout: float = 0.0):
        super().__init__()
        self.cell = ConvLSTMCell(in_channels, hidden_channels, kernel_size, peephole=peephole,
                                 dropout=dropout, recurrent_dropout=recurrent_dropout)

    def forward(self, x: torch.Tensor, state: LSTMState | None = None) -> tuple[torch.Tensor, LSTMState]:
        x = require_tensor("x", x)
        if x.ndim != 5:
            raise ValueError(f"x must have shape (B, T, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] == 0:
            raise ValueError("x has an empty time axis (T = 0)")
        masks = self.cell.dropout_masks(x[:, 0])  # once per sequence, as Keras does
        hs = []
        for t in range(x.shape[1]):
            state = self.cell(x[:, t], state, masks)
            hs.append(state.h)
        return torch.stack(hs, dim=1), state
