"""SYNTHIA-SF reader: the street scenes RDPD renders (Abuolaim et al., ICCV 2021, Sec. 3).

SYNTHIA-SF (Ros et al., CVPR 2016) is not downloaded by dplab; where the user has it, it holds
``<root>/<SEQ>/RGBLeft/<frame>.png`` and ``<root>/<SEQ>/DepthLeft/<frame>.png`` (1920x1080,
8-bit). The depth PNG encodes ``1000 (R + 256 G + 65536 B) / (2^24 - 1)`` m, which the RDPD
generator clips at 250 m (:data:`dplab.render.scenes.SYNTHIA_MAX_DEPTH_M`).
:func:`decode_synthia_depth` and :func:`encode_synthia_depth` convert, :func:`synthia_frames`
lists the frames and :func:`read_synthia_frame` reads one as a
:class:`dplab.render.scenes.SceneSample` (``(1, 3, H, W)`` float32 image in [0, 1],
``(1, 1, H, W)`` float32 depth in metres).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dplab._validate import require_positive
from dplab.render.scenes import SYNTHIA_MAX_DEPTH_M, SceneSample, fit_to_size

__all__ = ["decode_synthia_depth", "encode_synthia_depth", "synthia_frames", "read_synthia_frame"]


def decode_synthia_depth(rgb, *, max_depth_m: float | None = SYNTHIA_MAX_DEPTH_M) -> torch.Tensor:
    """Depth in metres from a SYNTHIA-SF depth PNG: ``1000 (R + 256 G + 65536 B) / (2^24 - 1)``.

    Args:
        rgb: the 8-bit depth image ``(H, W, 3)`` in R, G, B channel order (numpy or tensor;
            OpenCV users must convert from BGR first).
        max_depth_m: clip the depth at this distance (the RDPD generator: 250 m); None keeps
            the full range (up to 1000 m).

    Returns:
        ``(H, W)`` float32 depth in metres.

    Raises:
        ValueError: wrong shape, values outside 0-255.

    Example:
        >>> rgb = np.array([[[255, 255, 255], [1, 0, 0]]], np.uint8)
        >>> decode_synthia_depth(rgb, max_depth_m=None)
        tensor([[1.0000e+03, 5.9605e-05]])
    """
    a = np.asarray(rgb.cpu() if isinstance(rgb, torch.Tensor) else rgb)
    if a.ndim != 3 or a.shape[-1] < 3:
        raise ValueError(f"rgb must be an (H, W, 3) depth image, got shape {a.shape}")
    a = a[..., :3].astype(np.float64)
    if a.min() < 0 or a.max() > 255 or not np.all(a == np.round(a)):
        raise ValueError("rgb must hold 8-bit integer values 0-255")
    d = 1000.0 * (a[..., 0] + 256.0 * a[..., 1] + 65536.0 * a[..., 2]) / (2 ** 24 - 1)
    if max_depth_m is not None:
        d = np.minimum(d, float(require_positive("max_depth_m", max_depth_m)))
    return torch.from_numpy(d.astype(np.float32))


def encode_synthia_depth(depth_m) -> np.ndarray:
    """Inverse of :func:`decode_synthia_depth` (nearest code): metres ``(H, W)`` -> uint8 RGB.

    Example:
        >>> encode_synthia_depth(torch.tensor([[1000.0, 0.0]])).tolist()
        [[[255, 255, 255], [0, 0, 0]]]
    """
    d = depth_m.cpu() if isinstance(depth_m, torch.Tensor) else depth_m
    d = np.asarray(d, dtype=np.float64)
    if not np.all(np.isfinite(d)) or d.min() < 0 or d.max() > 1000.0:
        raise ValueError("depth_m must be finite and within [0, 1000] m")
    code = np.round(d / 1000.0 * (2 ** 24 - 1)).astype(np.int64)
    return np.stack((code & 255, (code >> 8) & 255, (code >> 16) & 255), -1).astype(np.uint8)


def synthia_frames(root) -> list[tuple[str, str]]:
    """``(sequence, file name)`` of every SYNTHIA-SF frame with both RGB and depth (left camera).

    Args:
        root: the ``SYNTHIA-SF`` folder holding ``SEQ*/RGBLeft`` and ``SEQ*/DepthLeft``.

    Returns:
        Sorted list of pairs.

    Raises:
        FileNotFoundError: ``root`` does not exist or holds no frame.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"SYNTHIA-SF folder {root} does not exist")
    out = []
    for seq in sorted(p for p in root.iterdir() if (p / "RGBLeft").is_dir()):
        for f in sorted((seq / "RGBLeft").glob("*.png")):
            if (seq / "DepthLeft" / f.name).is_file():
                out.append((seq.name, f.name))
    if not out:
        raise FileNotFoundError(f"no SYNTHIA-SF frames (<seq>/RGBLeft/*.png with "
                                f"<seq>/DepthLeft/*.png) under {root}")
    return out


def read_synthia_frame(root, sequence: str, name: str, *, size=None,
                       max_depth_m: float | None = SYNTHIA_MAX_DEPTH_M) -> SceneSample:
    """One SYNTHIA-SF frame: left RGB image and decoded depth.

    Args:
        root: the ``SYNTHIA-SF`` folder.
        sequence: sequence folder name (e.g. ``"SEQ1"``).
        name: frame file name (e.g. ``"0000000.png"``).
        size: optional ``(H, W)``: centre crop to that aspect, antialiased resize of the image,
            nearest-neighbour resize of the depth (no depth mixing across edges).
        max_depth_m: depth clip (:func:`decode_synthia_depth`).

    Returns:
        :class:`SceneSample` with ``(1, 3, H, W)`` image and ``(1, 1, H, W)`` depth.

    Raises:
        FileNotFoundError: missing files.
    """
    import imageio.v3 as iio

    base = Path(root) / sequence
    paths = [base / "RGBLeft" / name, base / "DepthLeft" / name]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"SYNTHIA-SF file {p} does not exist")
    rgb = np.asarray(iio.imread(paths[0]))[..., :3]
    image = torch.from_numpy(rgb.astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    depth = decode_synthia_depth(np.asarray(iio.imread(paths[1])), max_depth_m=max_depth_m)
    depth = depth[None, None]
    if size is not None:
        image = fit_to_size(image, size).clamp(0.0, 1.0)
        depth = fit_to_size(depth, size, mode="nearest")
    return SceneSample(image.contiguous(), depth.contiguous())
