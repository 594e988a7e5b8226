"""RDPD: recurrent dual-pixel deblurring (Abuolaim et al., ICCV 2021, Sec. 4, Fig. 6).

RDPD is DPDNet (:mod:`dplab.models.dpdnet`) with the five changes listed in Sec. 4:

1. a ConvLSTM with 512 units (:mod:`dplab.models.convlstm`, Eqs. 7-11) at the bottleneck,
   after a 3x3 convolution to 512 channels; its hidden state is carried from frame to frame;
2. a 7th input channel holding the relative radial distance of each pixel from the image
   centre ("radial distance patch", supplement S4.2, Fig. S4); see
   :func:`dplab.ops.radial.radial_distance_map`;
3. the multi-scale edge loss (Eqs. 13-16) -- a training loss, :func:`dplab.training.losses.rdpd_loss`;
4. half the filters of DPDNet at every level: 32, 64, 128, 256 (bottleneck 512);
5. a linear 1x1 last layer clamped to [0, 1] in place of the sigmoid.

Dropout 0.4 acts inside the ConvLSTM on its input (Keras ``dropout``, Sec. 5); unlike DPDNet
there is no other dropout layer (authors' code).

Eq. 12 writes the decoder input as the output gate ``o_t``; the authors' code (Keras
``ConvLSTM2D``) decodes the hidden state ``H_t = o_t o tanh(C_t)``, which dplab follows.

Parameter count: 24,278,703 in the authors' code (18,876,416 of them in the ConvLSTM). dplab
adds the per-channel peephole weights of Eqs. 7-9, 3 x 512 = 1,536 more (24,280,239,
+0.006 %); ``peephole=False`` reproduces the code's count exactly.

RSPD ("recurrent single-pixel deblurring", supplement Table S3) is the same network fed with
one DP view plus the radial channel (4 input channels): ``RDPD(in_channels=4)``.

Input layout. Channels are ``[left (3), right (3), radial (1)]`` in dplab's convention (each
view about half the brightness of the combined image) -- or ``[view (3), radial (1)]`` for
RSPD. A single frame is ``(B, C, H, W)``; a sequence is ``(B, T, C, H, W)`` with any ``T``.
H and W are padded at the bottom/right to multiples of 16 (edge replication) and the outputs
cropped back.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from dplab._validate import require_choice, require_finite, require_positive, require_tensor
from dplab.models.blocks import ConvAct, DoubleConv, ImageHead, UpConv, init_keras_, pad_to_multiple, require_input_dtype
from dplab.models.convlstm import ConvLSTMCell, LSTMState

__all__ = ["RDPD", "RDPD_PARAMS"]

#: Parameter count of the authors' Keras RDPD (7 input channels, no peepholes).
RDPD_PARAMS = 24_278_703


class RDPD(nn.Module):
    """Recurrent dual-pixel deblurring network (RDPD, Fig. 6; RSPD with ``in_channels=4``).

    Args:
        in_channels: 7 for ``[left, right, radial]`` (RDPD), 4 for ``[view, radial]`` (RSPD),
            6 or 3 for the "without radial distance" ablations (supp. Table S4).
        out_channels: output channels (3).
        widths: encoder widths per level, half of DPDNet's: (32, 64, 128, 256).
        lstm_channels: ConvLSTM units (512).
        lstm_kernel: ConvLSTM kernel size (3).
        dropout: ConvLSTM input dropout (0.4, Sec. 5), Keras ``dropout``.
        recurrent_dropout: ConvLSTM hidden-state dropout (0 in the code), Keras ``recurrent_dropout``.
        peephole: per-channel peephole terms of Eqs. 7-9 (True); False matches the code's
            Keras ``ConvLSTM2D`` and its parameter count.
head: ``"linear"`` (change 5: 1x1 linear layer clamped to [0, 1]), ``"sigmoid"``
            (DPDNet's head) or ``"residual"`` (the blurred image ``left + right`` -- twice
            the view for RSPD -- plus a learned correction, :class:`~dplab.models.blocks.ImageHead`;
            the shipped weights use it).

    Forward:
        ``forward(x, state=None, return_state=False)``. ``x`` is one frame ``(B, C, H, W)`` or a
        sequence ``(B, T, C, H, W)``; ``state`` is the :class:`~dplab.models.convlstm.LSTMState`
        returned by a previous call (None: zeros). Running a sequence of length ``T`` equals
        ``T`` single-frame calls that pass the state on (in eval mode; in training mode a
        sequence call draws one dropout mask for all its frames, as Keras does, and each
        single-frame call draws a new one).

    Returns:
        The deblurred frame(s), same leading shape as ``x`` with ``out_channels`` channels, in
        [0, 1]; with ``return_state=True`` a pair ``(output, state)``. The state lives at the
        padded 1/16 resolution, so keep H and W fixed along a sequence. When a state is
        carried across optimisation steps (the code's ``stateful=True``), pass
        ``state.detach()`` so that gradients stop at the batch boundary.

    Raises:
        ValueError: wrong channel count or number of dims, empty sequence, NaN/inf input,
            or a state from a different frame size.

    Example:
        >>> net = RDPD(widths=(4, 4, 4, 4), lstm_channels=4).eval()
        >>> seq = torch.rand(2, 3, 7, 16, 24)
        >>> y, st = net(seq, return_state=True)
        >>> tuple(y.shape), tuple(st.h.shape), bool(y.min() >= 0 and y.max() <= 1)
        ((2, 3, 3, 16, 24), (2, 4, 1, 2), True)
    """

    multiple = 16

    def __init__(self, in_channels: int = 7, out_channels: int = 3,
                 widths: tuple[int, ...] = (32, 64, 128, 256), lstm_channels: int = 512,
                 lstm_kernel: int = 3, dropout: float = 0.4, recurrent_dropout: float = 0.0,
                 peephole: bool = True, head: str = "linear"):
        super().__init__()
        self.in_channels = require_positive("in_channels", in_channels, integer=True)
        self.out_channels = require_positive("out_channels", out_channels, integer=True)
        widths = tuple(require_positive("widths", w, integer=True) for w in widths)
        if len(widths) != 4:
            raise ValueError(f"widths must list 4 encoder widths, got {widths}")
        lstm_channels = require_positive("lstm_channels", lstm_channels, integer=True)
        self.head_type = require_choice("head", head, ("linear", "sigmoid", "residual"))
        if head == "residual" and in_channels not in (4, 7):
            raise ValueError("the residual head needs the [left, right, radial] (7) or [view, radial] (4) "
                             f"input to start from, got in_channels={in_channels}")
        w1, w2, w3, w4 = widths
        self.enc1 = DoubleConv(in_channels, w1)
        self.enc2 = DoubleConv(w1, w2)
        self.enc3 = DoubleConv(w2, w3)
        self.enc4 = DoubleConv(w3, w4)
        self.pre_lstm = ConvAct(w4, lstm_channels, 3)
        self.lstm = ConvLSTMCell(lstm_channels, lstm_channels, lstm_kernel, peephole=peephole,
                                 dropout=dropout, recurrent_dropout=recurrent_dropout)
        self.up4, self.dec4 = UpConv(lstm_channels, w4), DoubleConv(2 * w4, w4)
        self.up3, self.dec3 = UpConv(w4, w3), DoubleConv(2 * w3, w3)
        self.up2, self.dec2 = UpConv(w3, w2), DoubleConv(2 * w2, w2)
        self.up1, self.dec1 = UpConv(w2, w1), DoubleConv(2 * w1, w1)
        self.head = (ImageHead(w1, out_channels, kind="residual") if head == "residual" else
                     ImageHead(w1, out_channels, last="sigmoid" if head == "sigmoid" else None))
        for name, child in self.named_children():
            if name != "lstm":
                init_keras_(child)

    def _encode(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        return (e1, e2, e3, e4), self.pre_lstm(F.max_pool2d(e4, 2))

    def base_image(self, x: torch.Tensor) -> torch.Tensor:
        """The blurred image the residual head corrects: ``left + right`` (RDPD) or twice
        the one view (RSPD), frames flattened ``(B*T, C, H, W)``."""
        return x[:, :3] + x[:, 3:6] if self.in_channels == 7 else 2 * x[:, :3]

    def _decode(self, skips, h, base=None):
        e1, e2, e3, e4 = skips
        d = self.dec4(torch.cat([e4, self.up4(h)], 1))
        d = self.dec3(torch.cat([e3, self.up3(d)], 1))
        d = self.dec2(torch.cat([e2, self.up2(d)], 1))
        d = self.dec1(torch.cat([e1, self.up1(d)], 1))
        return self.head(d, base)

    def forward(self, x: torch.Tensor, state: LSTMState | None = None, return_state: bool = False):
        x = require_tensor("x", x)
        if x.ndim not in (4, 5) or x.shape[-3] != self.in_channels:
            raise ValueError(f"x must have shape (B, {self.in_channels}, H, W) or "
                             f"(B, T, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if x.shape[-1] == 0 or x.shape[-2] == 0:
            raise ValueError(f"x is empty: shape {tuple(x.shape)}")
        require_finite("x", x)
        require_input_dtype("x", x, self)
        single = x.ndim == 4
        seq = x.unsqueeze(1) if single else x
        b, t = seq.shape[:2]
        if t == 0:
            raise ValueError("x has an empty time axis (T = 0)")
        seq, (h, w) = pad_to_multiple(seq, self.multiple)
        # The convolutional parts see all frames at once (Keras TimeDistributed).
        skips, feats = self._encode(seq.flatten(0, 1))
        feats = feats.unflatten(0, (b, t))
        masks = self.lstm.dropout_masks(feats[:, 0])
        hs = []
        for k in range(t):
            state = self.lstm(feats[:, k], state, masks)
            hs.append(state.h)
        frames = seq.flatten(0, 1)
        base = self.base_image(frames) if self.head_type == "residual" else None
        y = self._decode(skips, torch.stack(hs, 1).flatten(0, 1), base)
        y = y.unflatten(0, (b, t))[..., :h, :w]
        y = y[:, 0] if single else y
        return (y, state) if return_state else y
