"""Reader for the Pixel 4 dual-pixel release of Xin et al. (ICCV 2021).

Layout (``data_manifests/xin_pixel4_dp.yaml``): ``NNN_left.png``/``NNN_right.png`` are 16-bit
PNGs holding 14-bit raw green-channel values with black level 1024, 2016x1512 (W x H);
``gt_all_in_focus_im/NNN_gt.png`` and ``gt_defocus_map/NNN_gt.png`` cover the central
1344x1008 crop; ``calibration/blur_kernels_{left,right}.npy`` hold one 61x61 kernel per cell of
a 6x8 grid of 168-pixel cells over that crop, each summing to 1.

dplab's convention is that each DP view's PSF sums to 1/2 (so left + right is a conventional
PSF); :func:`load_kernels` rescales the release's kernels accordingly unless told otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .manifest import DatasetNotFoundError, dataset_dir

__all__ = [
    "BLACK_LEVEL",
    "WHITE_LEVEL",
    "GRID_SHAPE",
    "CELL_PX",
    "CROP_HW",
    "decode_raw",
    "read_view",
    "crop_central",
    "load_kernels",
    "cell_centres",
    "load_scene",
    "list_scenes",
]

NAME = "xin_pixel4_dp"
BLACK_LEVEL = 1024
WHITE_LEVEL = 2**14 - 1
GRID_SHAPE = (6, 8)  # rows, columns of calibration cells
CELL_PX = 168
CROP_HW = (GRID_SHAPE[0] * CELL_PX, GRID_SHAPE[1] * CELL_PX)  # (1008, 1344)


def decode_raw(values: np.ndarray) -> np.ndarray:
    """Raw 14-bit counts -> linear intensity: ``max(v - 1024, 0) / (2**14 - 1)``.

    Example:
        >>> decode_raw(np.array([1000, 1024, 1024 + 16383])).tolist()
        [0.0, 0.0, 1.0]
    """
    values = np.asarray(values, dtype=np.float32)
    return np.clip(values - BLACK_LEVEL, 0, None) / WHITE_LEVEL


def _read_png(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist (dataset {NAME!r}, see data_manifests/{NAME}.yaml)")
    return iio.imread(path)


def read_view(path: Path | str) -> torch.Tensor:
    """Read one raw DP view as a ``(1, 1, H, W)`` float32 tensor in linear [0, 1]."""
    return torch.from_numpy(decode_raw(_read_png(Path(path))))[None, None]


def crop_central(image: torch.Tensor, size_hw: tuple[int, int] = CROP_HW) -> torch.Tensor:
    """The central ``size_hw`` window of a ``(..., H, W)`` tensor (the calibrated field).

    Example:
        >>> crop_central(torch.zeros(1, 1, 1512, 2016)).shape
        torch.Size([1, 1, 1008, 1344])
    """
    h, w = image.shape[-2:]
    ch, cw = size_hw
    if ch > h or cw > w:
        raise ValueError(f"image of size {(h, w)} is smaller than the crop {size_hw}")
    top, left = (h - ch) // 2, (w - cw) // 2
    return image[..., top : top + ch, left : left + cw]


def load_kernels(data_dir: Path | str | None = None, *, view_sum: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The 48 calibrated left and right kernels, each ``(48, 61, 61)`` float32.

    Cell ``k`` is row ``k // 8``, column ``k % 8`` of the 6x8 grid (row-major, as released).

    Orientation: the kernels are returned as released. Fitted with :func:`dplab.psf.butterworth_dp`
    (chapter 2), every cell prefers a *negative* radius although the scenes lie at or behind
    the focal plane (positive in dplab's convention): the release's left/right naming, or its
    storage as correlation kernels (rotated 180 degrees), is the mirror of RDPD's code. Use
    these kernels with Xin et al.'s own model (:mod:`dplab.mpi`) as they are; swap or mirror
    them before mixing them with dplab's parametric PSFs. They are also off-centre by up to
    3.5 px.

    Args:
        data_dir: data directory (default ``$DPLAB_DATA``).
        view_sum: what each kernel is scaled to sum to; 0.5 is dplab's DP convention, 1.0
            keeps the release's normalisation.

    Raises:
        DatasetNotFoundError: the release or its calibration folder is missing.
    """
    folder = dataset_dir(NAME, data_dir) / "calibration"
    kernels = []
    for side in ("left", "right"):
        k = torch.from_numpy(np.load(folder / f"blur_kernels_{side}.npy").astype(np.float32))
        if k.shape != (GRID_SHAPE[0] * GRID_SHAPE[1], 61, 61):
            raise ValueError(f"{folder}/blur_kernels_{side}.npy has shape {tuple(k.shape)}, expected (48, 61, 61)")
        kernels.append(k / k.sum(dim=(-2, -1), keepdim=True) * view_sum)
    return kernels[0], kernels[1]


def cell_centres() -> torch.Tensor:
    """``(48, 2)`` (row, column) pixel centres of the calibration cells within the central crop."""
    rows, cols = torch.meshgrid(torch.arange(GRID_SHAPE[0]), torch.arange(GRID_SHAPE[1]), indexing="ij")
    return torch.stack([(rows + 0.5) * CELL_PX, (cols + 0.5) * CELL_PX], dim=-1).reshape(-1, 2)


def list_scenes(data_dir: Path | str | None = None) -> list[str]:
    """Scene ids (``"001"``, ...) whose left and right views are present."""
    folder = dataset_dir(NAME, data_dir)
    return sorted(p.name[:3] for p in folder.glob("[0-9][0-9][0-9]_left.png") if (folder / f"{p.name[:3]}_right.png").is_file())


def load_scene(scene: str, data_dir: Path | str | None = None, *, crop: bool = True) -> dict:
    """One scene: ``left``, ``right`` (``(1,1,H,W)``, linear), and ``all_in_focus`` and
    ``defocus`` ground truth where present (``None`` otherwise).

    The ground-truth all-in-focus image is a 16-bit PNG read as ``v / 65535``; the defocus map
    is 8-bit with an arbitrary affine scale, read as ``v / 255``.
    """
    folder = dataset_dir(NAME, data_dir)
    if not isinstance(scene, str) or len(scene) != 3 or not scene.isdigit():
        raise ValueError(f"scene must be a three-digit id such as '001', got {scene!r}")
    left, right = read_view(folder / f"{scene}_left.png"), read_view(folder / f"{scene}_right.png")
    if crop:
        left, right = crop_central(left), crop_central(right)
    out = {"left": left, "right": right, "all_in_focus": None, "defocus": None}
    aif = folder / "gt_all_in_focus_im" / f"{scene}_gt.png"
    if aif.is_file():
        out["all_in_focus"] = torch.from_numpy(_read_png(aif).astype(np.float32) / 65535.0)[None, None]
    dmap = folder / "gt_defocus_map" / f"{scene}_gt.png"
    if dmap.is_file():
        out["defocus"] = torch.from_numpy(_read_png(dmap).astype(np.float32) / 255.0)[None, None]
    return out
