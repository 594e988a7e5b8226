"""Patch sampling for training: random and grid patches, sequence clips, and flips that keep
dual-pixel geometry valid.

* **Grid patches** (DPDNet, ECCV 2020, Sec. 4; its ``image_to_patch_filter.py``): 512-pixel
  patches with 60% overlap (stride ``int(0.4 * 512) = 204``); a row or column that would run
  past the border is moved back to end at the border. Low-texture patches are dropped by
  DPDNet's Sobel-energy filter (:mod:`dplab.data.sharpness`); RDPD and MDP draw a few extra
  random candidates and drop those with the lowest Sobel energy at kernel size 5.
* **Radial channel** (RDPD, ICCV 2021, Sec. 4): with ``radial=True`` a patch carries the
  radial-distance map of the *full* image cropped at its position
  (:func:`dplab.ops.radial.radial_patch`), so a network can learn position-dependent
  (radially distorted, vignetted) DP blur.
* **Flips**: a horizontal flip mirrors a DP pair *and swaps* left and right (the mirrored left
  view is what the right sub-aperture would see of the mirrored scene); a vertical flip only
  mirrors. Rotations by 90 degrees are not offered: they would turn the left/right split into
  a top/bottom one.

Randomness always comes from an explicit :class:`torch.Generator` or seed. The dataset
wrappers (:class:`RandomPatches`, :class:`GridPatches`, :class:`SequencePatches`) derive a
generator from ``(seed, epoch, index)``, so an item is the same whatever the worker, process or
resume point: call ``set_epoch`` (the trainer does) to get new patches each epoch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from dplab._validate import require_number, require_positive
from dplab.data.sharpness import DPDNET_KSIZES, keep_sharpest, sharpness_scores, sobel_energy, to_gray
from dplab.ops.radial import radial_patch

__all__ = [
    "grid_positions",
    "random_positions",
    "crop",
    "extract_patches",
    "flip_dp",
    "random_flip",
    "clip_start",
    "item_generator",
    "RandomPatches",
    "GridPatches",
    "SequencePatches",
]


def _size2(name: str, size) -> tuple[int, int]:
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or an (h, w) pair, got {size!r}")
        return tuple(int(require_positive(name, s, integer=True)) for s in size)
    s = int(require_positive(name, size, integer=True))
    return s, s


# --- positions ------------------------------------------------------------------------------
def grid_positions(height: int, width: int, patch_size, *, overlap: float = 0.6) -> list[tuple[int, int]]:
    """Top-left corners of DPDNet's overlapping grid, row-major.

    Starts are ``0, s, 2s, ...`` with stride ``s = int((1 - overlap) * patch)`` per axis; a
    start whose patch would cross the border is replaced by ``size - patch`` (duplicates
    removed), so the grid covers the whole image.

    Args:
        height, width: image size in pixels.
        patch_size: ``p`` or ``(ph, pw)``.
        overlap: fraction of a patch shared with its neighbour, in [0, 1).

    Returns:
        ``[(top, left), ...]``.

    Raises:
        ValueError: the patch is larger than the image, or overlap outside [0, 1).

    Example:
        >>> grid_positions(1120, 1680, 512)[:3], len(grid_positions(1120, 1680, 512))
        ([(0, 0), (0, 204), (0, 408)], 28)
    """
    ph, pw = _size2("patch_size", patch_size)
    height, width = int(require_positive("height", height, integer=True)), int(require_positive("width", width, integer=True))
    overlap = float(require_number("overlap", overlap))
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if ph > height or pw > width:
        raise ValueError(f"patch_size {(ph, pw)} is larger than the image {(height, width)}")

    def starts(size: int, patch: int) -> list[int]:
        stride = max(1, int((1 - overlap) * patch))
        return sorted({min(s, size - patch) for s in range(0, size, stride)})

    return [(t, l) for t in starts(height, ph) for l in starts(width, pw)]


def random_positions(height: int, width: int, patch_size, count: int, generator: torch.Generator) -> list[tuple[int, int]]:
    """``count`` uniformly random top-left corners (inclusive range ``0 .. size - patch``).

    Example:
        >>> random_positions(10, 10, 4, 2, torch.Generator().manual_seed(0))
        [(4, 0), (3, 2)]
    """
    ph, pw = _size2("patch_size", patch_size)
    count = int(require_positive("count", count, integer=True))
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if ph > height or pw > width:
        raise ValueError(f"patch_size {(ph, pw)} is larger than the image {(height, width)}")
    tops = torch.randint(0, height - ph + 1, (count,), generator=generator)
    lefts = torch.randint(0, width - pw + 1, (count,), generator=generator)
    return [(int(t), int(l)) for t, l in zip(tops, lefts)]


# --- cropping -------------------------------------------------------------------------------
def crop(sample: dict, top: int, left: int, patch_size) -> dict:
    """Crop every image tensor of a sample (``(..., H, W)``) at the same window; other
    entries are copied.

    Example:
        >>> crop({"combined": torch.arange(16.).reshape(1, 4, 4), "name": "a"}, 1, 2, 2)["combined"]
        tensor([[[ 6.,  7.],
                 [10., 11.]]])
    """
    ph, pw = _size2("patch_size", patch_size)
    out = {}
    for key, value in sample.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2:
            h, w = value.shape[-2:]
            if top < 0 or left < 0 or top + ph > h or left + pw > w:
                raise ValueError(f"window ({top}, {left}) + {(ph, pw)} does not fit {key!r} of size {(h, w)}")
            out[key] = value[..., top : top + ph, left : left + pw]
        else:
            out[key] = value
    return out


def extract_patches(image: torch.Tensor, positions: Sequence[tuple[int, int]], patch_size) -> torch.Tensor:
    """Stack the windows of a ``(C, H, W)`` or ``(B, C, H, W)`` image.

    Shape:
        ``(C, H, W)`` -> ``(N, C, ph, pw)``; ``(B, C, H, W)`` -> ``(N, B, C, ph, pw)``.

    Example:
        >>> extract_patches(torch.zeros(3, 8, 8), grid_positions(8, 8, 4, overlap=0), 4).shape
        torch.Size([4, 3, 4, 4])
    """
    ph, pw = _size2("patch_size", patch_size)
    if not isinstance(image, torch.Tensor) or image.ndim not in (3, 4):
        raise ValueError("image must be a (C, H, W) or (B, C, H, W) tensor")
    if not positions:
        raise ValueError("positions is empty")
    return torch.stack([crop({"x": image}, t, l, (ph, pw))["x"] for t, l in positions])


# --- flips ----------------------------------------------------------------------------------
def flip_dp(sample: dict, *, horizontal: bool = False, vertical: bool = False) -> dict:
    """Flip every image of a sample; a horizontal flip also swaps ``"left"`` and ``"right"``.

    Mirroring a scene left-right mirrors each sub-aperture view and exchanges the roles of
    the two sub-apertures, so ``left' = mirror(right)`` and ``right' = mirror(left)``; the
    defocus disparity keeps its sign convention. A vertical flip leaves the left/right split
    intact. Keys that are not ``(..., H, W)`` tensors are copied.

    Example:
        >>> s = {"left": torch.tensor([[[1., 2.]]]), "right": torch.tensor([[[3., 4.]]])}
        >>> out = flip_dp(s, horizontal=True)
        >>> out["left"].tolist(), out["right"].tolist()
        ([[[4.0, 3.0]]], [[[2.0, 1.0]]])
    """
    dims = ([-1] if horizontal else []) + ([-2] if vertical else [])
    out = {k: (torch.flip(v, dims) if dims and isinstance(v, torch.Tensor) and v.ndim >= 2 else v) for k, v in sample.items()}
    if horizontal and ("left" in out or "right" in out):
        if "left" not in out or "right" not in out:
            raise ValueError("a horizontal flip of a DP sample needs both 'left' and 'right'")
        out["left"], out["right"] = out["right"], out["left"]
    return out


def random_flip(sample: dict, generator: torch.Generator, *, horizontal: float = 0.5, vertical: float = 0.5) -> dict:
    """:func:`flip_dp` with each flip drawn with the given probability from ``generator``.

    Example:
        >>> s = {"combined": torch.arange(4.).reshape(1, 2, 2)}
        >>> random_flip(s, torch.Generator().manual_seed(0))["combined"].shape
        torch.Size([1, 2, 2])
    """
    draws = torch.rand(2, generator=generator)
    return flip_dp(sample, horizontal=bool(draws[0] < horizontal), vertical=bool(draws[1] < vertical))


# --- sequences ------------------------------------------------------------------------------
def clip_start(num_frames: int, clip_len: int, generator: torch.Generator) -> int:
    """First frame of a random clip of ``clip_len`` consecutive frames (RDPD: 4 frames).

    Example:
        >>> 0 <= clip_start(10, 4, torch.Generator().manual_seed(0)) <= 6
        True
    """
    clip_len = int(require_positive("clip_len", clip_len, integer=True))
    if clip_len > num_frames:
        raise ValueError(f"a clip of {clip_len} frames does not fit a sequence of {num_frames}")
    return int(torch.randint(0, num_frames - clip_len + 1, (1,), generator=generator))


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """A generator determined by ``(seed, epoch, index)`` alone (NumPy ``SeedSequence``).

    Example:
        >>> a = torch.rand(1, generator=item_generator(0, 1, 2))
        >>> bool(a == torch.rand(1, generator=item_generator(0, 1, 2)))
        True
    """
    state = np.random.SeedSequence([int(seed) % 2**63, int(epoch), int(index)]).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


# --- dataset wrappers -----------------------------------------------------------------------
class _EpochDataset(Dataset):
    def __init__(self, seed: int):
        self.seed = int(require_number("seed", seed, integer=True))
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose random patches (and flips) items return."""
        self.epoch = int(require_positive("epoch", epoch, allow_zero=True, integer=True))


def _filter_scores(sample: dict, key: str, candidates, size, ksize: int) -> torch.Tensor:
    """RDPD/MDP candidate scores: Sobel energy of the target's green channel in each window."""
    if key not in sample:
        raise KeyError(f"the sharpness filter reads {key!r}, which the sample lacks (keys: {sorted(sample)})")
    image = sample[key]
    channel = image[1:2] if image.shape[0] == 3 else image[:1]
    return sobel_energy(extract_patches(channel, candidates, size), ksize)


class RandomPatches(_EpochDataset):
    """Random patches of a dataset's samples, new ones every epoch.

    Item ``i`` is patch ``i % patches_per_image`` of image ``i // patches_per_image``; all
    images of a sample are cropped at the same window. With ``filter_extra = n``,
    ``n`` extra candidate windows are drawn and the ``n`` with the lowest Sobel energy
    (kernel 5, green channel of ``filter_key``) are dropped (RDPD/MDP code).

    Args:
        base: a dataset of sample dicts (e.g. :class:`~dplab.data.DPDDDataset`).
        patch_size: ``p`` or ``(ph, pw)``.
        patches_per_image: patches drawn from each image per epoch.
        seed: base seed; an item depends only on ``(seed, epoch, index)``.
        radial: add a ``"radial"`` ``(1, ph, pw)`` channel (RDPD).
        flip: random horizontal and vertical DP-consistent flips.
        filter_extra: extra candidates for the low-texture filter (0: off).
        filter_key: sample key the filter reads (``"sharp"``; the ground truth).

    Example:
        >>> base = [{"combined": torch.rand(3, 16, 20), "sharp": torch.rand(3, 16, 20), "name": "a"}]
        >>> ds = RandomPatches(base, 8, patches_per_image=2, radial=True, seed=1)
        >>> len(ds), tuple(ds[1]["radial"].shape)
        (2, (1, 8, 8))
    """

    def __init__(
        self,
        base,
        patch_size,
        *,
        patches_per_image: int = 1,
        seed: int = 0,
        radial: bool = False,
        flip: bool = True,
        filter_extra: int = 0,
        filter_key: str = "sharp",
        filter_ksize: int = 5,
    ):
        super().__init__(seed)
        self.base = base
        self.patch_size = _size2("patch_size", patch_size)
        self.patches_per_image = int(require_positive("patches_per_image", patches_per_image, integer=True))
        self.radial = bool(radial)
        self.flip = bool(flip)
        self.filter_extra = int(require_positive("filter_extra", filter_extra, allow_zero=True, integer=True))
        self.filter_key = filter_key
        self.filter_ksize = filter_ksize

    def __len__(self) -> int:
        return len(self.base) * self.patches_per_image

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        gen = item_generator(self.seed, self.epoch, index)
        sample = self.base[index // self.patches_per_image]
        h, w = sample["combined"].shape[-2:]
        candidates = random_positions(h, w, self.patch_size, 1 + self.filter_extra, gen)
        if self.filter_extra:
            scores = _filter_scores(sample, self.filter_key, candidates, self.patch_size, self.filter_ksize)
            candidates = [candidates[i] for i in keep_sharpest(scores, self.filter_extra)]
        top, left = candidates[0]
        patch = crop(sample, top, left, self.patch_size)
        patch["position"] = torch.tensor([top, left])
        if self.radial:
            patch["radial"] = radial_patch((h, w), top, left, self.patch_size)
        return random_flip(patch, gen) if self.flip else patch


class GridPatches(_EpochDataset):
    """DPDNet's training patches: an overlapping grid per image, low-texture patches dropped.

    The kept windows are computed once, when the wrapper is built (every image is read once).

    Args:
        base: a dataset of sample dicts with ``filter_key`` present.
        patch_size: ``p`` or ``(ph, pw)`` (DPDNet: 512).
        overlap: grid overlap (DPDNet: 0.6 for training, 0.01 for validation).
        drop_fraction: fraction of each image's patches dropped by the Sobel-energy filter
            (DPDNet: 0.3 for training; 0 keeps all).
        ksizes: Sobel sizes of the filter.
        filter_key: sample key the filter reads (the all-in-focus target, as DPDNet).
        radial: add the ``"radial"`` channel.
        flip: random DP-consistent flips (off in DPDNet), drawn per ``(seed, epoch, index)``.
        seed: seed of the flips.

    Example:
        >>> img = torch.rand(3, 24, 24)
        >>> base = [{"combined": img, "sharp": img, "name": "a"}]
        >>> ds = GridPatches(base, 8, overlap=0.5, drop_fraction=0.3)
        >>> len(grid_positions(24, 24, 8, overlap=0.5)), len(ds)
        (25, 18)
    """

    def __init__(
        self,
        base,
        patch_size=512,
        *,
        overlap: float = 0.6,
        drop_fraction: float = 0.3,
        ksizes: Sequence[int] = DPDNET_KSIZES,
        filter_key: str = "sharp",
        radial: bool = False,
        flip: bool = False,
        seed: int = 0,
    ):
        super().__init__(seed)
        drop_fraction = float(require_number("drop_fraction", drop_fraction))
        if not 0 <= drop_fraction < 1:
            raise ValueError(f"drop_fraction must be in [0, 1), got {drop_fraction}")
        self.base = base
        self.patch_size = _size2("patch_size", patch_size)
        self.radial, self.flip = bool(radial), bool(flip)
        self.windows: list[tuple[int, int, int]] = []  # (image index, top, left)
        self.sizes: list[tuple[int, int]] = []
        for i in range(len(base)):
            sample = base[i]
            h, w = sample["combined"].shape[-2:]
            self.sizes.append((h, w))
            positions = grid_positions(h, w, self.patch_size, overlap=overlap)
            keep = list(range(len(positions)))
            drop = int(drop_fraction * len(positions))
            if drop:
                if filter_key not in sample:
                    raise KeyError(f"the patch filter reads {filter_key!r}, which sample {i} lacks (keys: {sorted(sample)})")
                gray = to_gray(extract_patches(sample[filter_key], positions, self.patch_size))
                keep = keep_sharpest(sharpness_scores(gray, ksizes), drop)
            self.windows.extend((i, *positions[k]) for k in keep)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} patches")
        image, top, left = self.windows[index]
        patch = crop(self.base[image], top, left, self.patch_size)
        patch["position"] = torch.tensor([top, left])
        if self.radial:
            patch["radial"] = radial_patch(self.sizes[image], top, left, self.patch_size)
        return random_flip(patch, item_generator(self.seed, self.epoch, index)) if self.flip else patch


class SequencePatches(_EpochDataset):
    """Random clips of consecutive frames, cropped at one window, for the recurrent RDPD.

    Item ``i`` draws a clip of ``clip_len`` frames from sequence ``i % len(sequences)`` and one
    window for all its frames (RDPD code: 4 frames, 512 px, the filter on the first frame's
    grayscale target). Every image key becomes ``(T, C, ph, pw)``; a DataLoader batch is
    ``(B, T, C, ph, pw)``. The same flip is applied to every frame of a clip.

    Args:
        base: a frame dataset with a ``sequences`` mapping, e.g.
            :class:`~dplab.data.DPSequenceDataset`; or any dataset plus ``sequences``.
        clip_len: frames per clip.
        patch_size: ``p`` or ``(ph, pw)``.
        clips_per_epoch: items per epoch (default: one per sequence).
        sequences: ``{name: [frame indices in order]}``; defaults to ``base.sequences``.
        seed, radial, flip, filter_extra, filter_key: as :class:`RandomPatches`.

    Example:
        >>> frames = [{"combined": torch.rand(3, 12, 12), "sharp": torch.rand(3, 12, 12), "name": str(i)} for i in range(5)]
        >>> ds = SequencePatches(frames, 3, 8, sequences={"s": [0, 1, 2, 3, 4]}, radial=True)
        >>> tuple(ds[0]["combined"].shape), tuple(ds[0]["radial"].shape)
        ((3, 3, 8, 8), (3, 1, 8, 8))
    """

    def __init__(
        self,
        base,
        clip_len: int,
        patch_size,
        *,
        clips_per_epoch: int | None = None,
        sequences: dict | None = None,
        seed: int = 0,
        radial: bool = False,
        flip: bool = True,
        filter_extra: int = 0,
        filter_key: str = "sharp",
    ):
        super().__init__(seed)
        self.base = base
        self.sequences = dict(sequences if sequences is not None else getattr(base, "sequences", {}))
        if not self.sequences:
            raise ValueError("no sequences: pass sequences={name: [frame indices]} or a base with .sequences")
        self.names = sorted(self.sequences)
        self.clip_len = int(require_positive("clip_len", clip_len, integer=True))
        short = [n for n in self.names if len(self.sequences[n]) < self.clip_len]
        if short:
            raise ValueError(f"sequence(s) {short[:5]} have fewer than clip_len={self.clip_len} frames")
        self.patch_size = _size2("patch_size", patch_size)
        self.clips_per_epoch = int(clips_per_epoch) if clips_per_epoch is not None else len(self.names)
        require_positive("clips_per_epoch", self.clips_per_epoch, integer=True)
        self.radial, self.flip = bool(radial), bool(flip)
        self.filter_extra = int(require_positive("filter_extra", filter_extra, allow_zero=True, integer=True))
        self.filter_key = filter_key

    def __len__(self) -> int:
        return self.clips_per_epoch

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} clips")
        gen = item_generator(self.seed, self.epoch, index)
        name = self.names[index % len(self.names)]
        frames = self.sequences[name]
        start = clip_start(len(frames), self.clip_len, gen)
        samples = [self.base[j] for j in frames[start : start + self.clip_len]]
        h, w = samples[0]["combined"].shape[-2:]
        candidates = random_positions(h, w, self.patch_size, 1 + self.filter_extra, gen)
        if self.filter_extra:
            if self.filter_key not in samples[0]:
                raise KeyError(f"the patch filter reads {self.filter_key!r}, which the frames lack")
            gray = to_gray(extract_patches(samples[0][self.filter_key], candidates, self.patch_size))
            energy = sobel_energy(gray, 5)
            candidates = [candidates[i] for i in keep_sharpest(energy, self.filter_extra)]
        top, left = candidates[0]
        crops = [crop(s, top, left, self.patch_size) for s in samples]
        clip = {"sequence": name, "start": start, "position": torch.tensor([top, left])}
        for key, value in crops[0].items():
            if isinstance(value, torch.Tensor):
                clip[key] = torch.stack([c[key] for c in crops])
            elif key == "name":
                clip["names"] = [c["name"] for c in crops]
        if self.radial:
            clip["radial"] = radial_patch((h, w), top, left, self.patch_size).expand(self.clip_len, -1, -1, -1).clone()
        return random_flip(clip, gen) if self.flip else clip
