"""Training and evaluation glue for the DPDNet and RDPD chapters (RDPD, ICCV 2021, Secs. 4-5).

RDPD is trained "iteratively using mini-batches of real (i.e., single image) as well as
synthetic data (i.e., image sequence)" (Sec. 5): 8 single-image patches in one step, then 2
clips of 4 frames in the next, and so on. :class:`AlternatingBatches` turns that into a
map-style dataset whose item ``k`` is a *whole* mini-batch (even ``k``: images, odd ``k``:
clips), so that :class:`dplab.training.trainer.Trainer` runs it unchanged with ``batch_size=1``,
``shuffle=False`` and ``collate_fn=collate_first``. An item depends only on
``(seed, epoch, k)``, so resuming works as for any other dplab dataset.

The rest are small pieces the chapters share: the RDPD loss as a trainer ``loss_fn``, the
evaluation of whole sequences (state carried from frame to frame, or reset at every frame),
and the Pixel 4 views turned into the 3-channel input the networks expect. The network input
(``[left, right, radial]`` and its ablations) is the registry's
(:func:`dplab.models.registry.network_input`), as for every other network.

Example:
    >>> import torch
    >>> imgs = [{"left": torch.rand(3, 8, 8), "right": torch.rand(3, 8, 8), "sharp": torch.rand(3, 8, 8),
    ...          "radial": torch.rand(1, 8, 8)} for _ in range(4)]
    >>> clips = [{k: v[None].expand(3, -1, -1, -1) for k, v in s.items()} for s in imgs]
    >>> ab = AlternatingBatches(imgs, clips, image_batch=2, video_batch=2, pairs=2)
    >>> len(ab), tuple(ab[0]["left"].shape), tuple(ab[1]["left"].shape)
    (4, (2, 3, 8, 8), (2, 3, 3, 8, 8))
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dplab._validate import require_positive
from dplab.data.patches import item_generator
from dplab.metrics.image import mae, psnr, ssim
from dplab.models.registry import model_spec, network_input
from dplab.training.losses import rdpd_loss

__all__ = [
    "KEYS",
    "AlternatingBatches",
    "collate_first",
    "make_loss",
    "evaluate_sequences",
    "pixel4_input",
    "gain_fit_psnr",
    "init_output_bias",
]

#: Sample keys a training batch keeps (others, e.g. names, are dropped when stacking).
KEYS = ("combined", "left", "right", "sharp", "radial")


def _stack(samples: list[dict]) -> dict:
    return {k: torch.stack([s[k] for s in samples]) for k in KEYS if k in samples[0]}


class AlternatingBatches(Dataset):
    """Mini-batches that alternate between single images and sequence clips (RDPD Sec. 5).

    Args:
        images: dataset of single-image patch dicts (e.g. :class:`~dplab.data.RandomPatches`),
            or None for clips only.
        clips: dataset of clip dicts ``(T, C, h, w)`` (e.g. :class:`~dplab.data.SequencePatches`),
            or None for images only.
        image_batch: images per image mini-batch (paper: 8).
        video_batch: clips per sequence mini-batch (paper: 2 clips of 4 frames).
        pairs: image/sequence mini-batch pairs per epoch (default: enough to show every image
            patch once per epoch).
        seed: the draw of each mini-batch depends only on ``(seed, epoch, k)``.
        flatten_clips: hand clips over as ``B * T`` independent frames ``(B*T, C, h, w)``: the
            "single-frame" training of sRDPD (Table 2) on exactly the same pixels.

    Item ``k`` is a dict of stacked tensors (keys of :data:`KEYS` present in the samples):
    an image mini-batch for even ``k`` and a clip mini-batch for odd ``k`` (only one kind if
    the other dataset is None). ``set_epoch`` is passed on to both datasets.
    """

    def __init__(self, images, clips, *, image_batch: int = 8, video_batch: int = 2,
                 pairs: int | None = None, seed: int = 0, flatten_clips: bool = False):
        if images is None and clips is None:
            raise ValueError("give images, clips or both")
        self.images, self.clips = images, clips
        self.image_batch = int(require_positive("image_batch", image_batch, integer=True))
        self.video_batch = int(require_positive("video_batch", video_batch, integer=True))
        if pairs is None:
            pairs = max(1, len(images) // self.image_batch) if images is not None else max(1, len(clips) // self.video_batch)
        self.pairs = int(require_positive("pairs", pairs, integer=True))
        self.seed, self.epoch = int(seed), 0
        self.flatten_clips = bool(flatten_clips)
        self.kinds = [k for k, d in (("image", images), ("clip", clips)) if d is not None]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)
        for d in (self.images, self.clips):
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __len__(self) -> int:
        return self.pairs * len(self.kinds)

    def kind(self, index: int) -> str:
        """``"image"`` or ``"clip"``: what item ``index`` holds."""
        return self.kinds[index % len(self.kinds)]

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} mini-batches")
        gen = item_generator(self.seed, self.epoch, index)
        if self.kind(index) == "image":
            idx = torch.randint(len(self.images), (self.image_batch,), generator=gen).tolist()
            return _stack([self.images[i] for i in idx])
        idx = torch.randint(len(self.clips), (self.video_batch,), generator=gen).tolist()
        batch = _stack([self.clips[i] for i in idx])
        if self.flatten_clips:
            batch = {k: v.flatten(0, 1) for k, v in batch.items()}
        return batch


def collate_first(items: list):
    """``collate_fn`` for :class:`AlternatingBatches`: the DataLoader's batch of one item
    (already a mini-batch) is that item."""
    if len(items) != 1:
        raise ValueError(f"AlternatingBatches needs batch_size=1 (each item is a mini-batch), got {len(items)}")
    return items[0]


def make_loss(scales=3, lambda_x: float = 0.03, lambda_y: float = 0.02):
    """Trainer ``loss_fn`` for RDPD, Eq. 16 (:func:`dplab.training.losses.rdpd_loss`); ``scales=0`` is
    plain MSE. Works for frames and sequences."""

    def loss_fn(pred, batch):
        return rdpd_loss(pred, batch["sharp"], scales=scales, lambda_x=lambda_x, lambda_y=lambda_y)

    return loss_fn


@torch.no_grad()
def evaluate_sequences(model: torch.nn.Module, frames, *, model_name: str | None = None, carry_state: bool = True,
                       device="cpu") -> dict:
    """Deblur every test sequence of ``frames`` (a :class:`~dplab.data.DPSequenceDataset`).

    With ``carry_state=True`` a sequence is one ``(1, T, C, H, W)`` call (the ConvLSTM state
    passes from frame to frame); with False every frame is a separate call from a zero state
    (how a single-image network sees the sequence). Non-recurrent models get frames one by one.
    The input is the registry's for ``model_name`` (default: the name the model was built with,
    :func:`dplab.models.registry.model_spec`; RDPD: ``[left, right, radial]``).

    Raises:
        ValueError: no ``model_name`` and a model not made by :func:`dplab.models.build`.

    Returns:
        ``{"psnr", "ssim", "mae"}`` averaged over all frames, ``"input_psnr"`` of the blurred
        combined image, ``"per_frame_psnr"`` (mean over sequences at each frame position) and
        ``"frames"`` (count).
    """
    if model_name is None:
        spec = model_spec(model)
        if spec is None:
            raise ValueError("give the registry name of the model (model_name=...): it was not made by "
                             "dplab.models.build")
        model_name = spec["name"]
    device = torch.device(device)
    model = model.to(device).eval()
    recurrent = getattr(model, "lstm", None) is not None
    rows, per_t = [], {}
    for name in sorted(frames.sequences):
        samples = [frames[i] for i in frames.sequences[name]]
        batch = {k: torch.stack([s[k] for s in samples])[None].to(device) for k in KEYS if k in samples[0]}
        x = network_input(model_name, batch, in_channels=getattr(model, "in_channels", None))
        if recurrent and carry_state:
            out = model(x)[0]
        else:
            out = torch.cat([model(x[:, t]) for t in range(x.shape[1])])
        out = out.float().clamp(0, 1)
        sharp, blurred = batch["sharp"][0].float(), batch["combined"][0].float()
        p, s, m, pin = psnr(out, sharp), ssim(out, sharp), mae(out, sharp), psnr(blurred.clamp(0, 1), sharp)
        for t in range(out.shape[0]):
            rows.append((float(p[t]), float(s[t]), float(m[t]), float(pin[t])))
            per_t.setdefault(t, []).append(float(p[t]))
    a = np.array(rows)
    return {"psnr": float(a[:, 0].mean()), "ssim": float(a[:, 1].mean()), "mae": float(a[:, 2].mean()),
            "input_psnr": float(a[:, 3].mean()), "frames": len(rows),
            "per_frame_psnr": [float(np.mean(per_t[t])) for t in sorted(per_t)]}


def pixel4_input(scene: dict, *, downsample: int = 4, vignetting: torch.Tensor | None = None,
                 percentile: float = 99.5, level: float = 0.9) -> dict:
    """Pixel 4 DP views (:func:`dplab.data.pixel4.load_scene`) as a network input.

    The Pixel 4 release holds one raw green channel per view: it is replicated to 3 channels
    (the networks were trained on RGB). The right view is multiplied by ``vignetting`` (the
    white-sheet gain of :func:`dplab.data.pixel4.vignetting_gain`) when given; both views are
    area-downsampled by ``downsample`` (to bring the phone's blur to the CoC range of the
    small synthetic training images) and scaled by one common factor so that the
    ``percentile`` of ``left + right`` is ``level``. The all-in-focus ground truth, where
    present, is downsampled the same way (its brightness is fitted later, see
    :func:`gain_fit_psnr`).

    Returns:
        ``{"left", "right", "combined"}`` as ``(1, 3, H, W)`` and ``"all_in_focus"``
        ``(1, 3, H, W)`` or None.
    """
    left, right = scene["left"].float(), scene["right"].float()
    if vignetting is not None:
        right = right * vignetting.to(right)
    d = int(downsample)

    def down(x):
        return F.avg_pool2d(x, d) if d > 1 else x

    left, right = down(left), down(right)
    gain = level / float(torch.quantile((left + right).flatten(), percentile / 100))
    left, right = left * gain, right * gain
    out = {"left": left.expand(-1, 3, -1, -1).contiguous(), "right": right.expand(-1, 3, -1, -1).contiguous()}
    out["combined"] = out["left"] + out["right"]
    aif = scene.get("all_in_focus")
    out["all_in_focus"] = down(aif.float()).expand(-1, 3, -1, -1).contiguous() if aif is not None else None
    return out


def gain_fit_psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR of ``a * pred`` against ``target`` with the least-squares gain
    ``a = <pred, target> / <pred, pred>`` (the Pixel 4 ground truth has its own brightness)."""
    p, t = pred.double().flatten(), target.double().flatten()
    a = float((p @ t) / (p @ p))
    err = float(((a * p - t) ** 2).mean())
    return 10 * np.log10(float(t.max()) ** 2 / err)


def init_output_bias(model: torch.nn.Module, value: float = 0.5) -> torch.nn.Module:
    """Set the bias of the last convolution of ``model.head`` to ``value`` (in place).

    RDPD's clamped linear head (change 5) passes no gradient where its output is clamped. With
    Keras' zero bias and a small network most output pixels start outside [0, 1] (91 % in the
    RDPD chapter's one-batch experiment), so fewer pixels train at first; a mid-grey bias of
    0.5 puts the initial output inside [0, 1]. This is a deviation from the authors'
    initialisation, for the paper heads only (a residual head starts from its input).

    Example:
        >>> from dplab.models import build
        >>> net = init_output_bias(build("rdpd", widths=(4, 4, 4, 4), lstm_channels=4))
        >>> convs = [m for m in net.head.modules() if isinstance(m, torch.nn.Conv2d)]
        >>> convs[-1].bias.detach().tolist()
        [0.5, 0.5, 0.5]
    """
    convs = [m for m in model.head.modules() if isinstance(m, torch.nn.Conv2d)]
    if not convs or convs[-1].bias is None:
        raise ValueError("the model's head has no final convolution with a bias")
    with torch.no_grad():
        convs[-1].bias.fill_(float(value))
    return model
