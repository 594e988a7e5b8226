"""Reader for the Pixel 4 dual-pixel release of Xin et al. (ICCV 2021).

Layout (``dplab/data/manifests/xin_pixel4_dp.yaml``): ``NNN_left.png``/``NNN_right.png`` are 16-bit
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

from dplab.data.base import DatasetCorruptError
from dplab.data.manifest import DatasetNotFoundError, dataset_dir
from dplab.ops.box import box_mean

__all__ = [
    "BLACK_LEVEL",
    "WHITE_LEVEL",
    "GRID_SHAPE",
    "CELL_PX",
    "CROP_HW",
    "FRAME_HW",
    "decode_raw",
    "read_view",
    "crop_central",
    "load_kernels",
    "cell_centres",
    "load_scene",
    "list_scenes",
    "load_kernel_grid",
    "vignetting_gain",
    "defocus_confidence",
    "scene_settings",
    "SCENE_SETTINGS",
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


#: Full frame of the raw views and white sheets, (H, W).
FRAME_HW = (1512, 2016)


def _corrupt(path: Path, problem: str) -> DatasetCorruptError:
    return DatasetCorruptError(f"{path}: {problem} (dataset {NAME!r}, see dplab/data/manifests/{NAME}.yaml); "
                               "restore the file from the release")


def _read_png(path: Path, *, dtype, shape_hw: tuple[int, int], what: str) -> np.ndarray:
    """Read a single-channel PNG of the release and check its bit depth and size."""
    import imageio.v3 as iio

    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist (dataset {NAME!r}, see dplab/data/manifests/{NAME}.yaml)")
    try:
        array = iio.imread(path)
    except Exception as err:  # PIL raises OSError, SyntaxError or ValueError on a damaged file
        raise _corrupt(path, f"cannot be decoded as a PNG ({type(err).__name__}: {err})") from None
    bits = np.dtype(dtype).itemsize * 8
    if array.dtype != np.dtype(dtype):
        raise _corrupt(path, f"{what} must be a {bits}-bit PNG, found {array.dtype} values")
    if array.shape != tuple(shape_hw):
        raise _corrupt(path, f"{what} must be one channel of {shape_hw[1]}x{shape_hw[0]} pixels (W x H), "
                             f"found shape {array.shape}")
    return array


def _read_raw(path: Path, what: str = "a raw DP view") -> np.ndarray:
    raw = _read_png(path, dtype=np.uint16, shape_hw=FRAME_HW, what=what)
    top = int(raw.max())
    if top > BLACK_LEVEL + WHITE_LEVEL:
        raise _corrupt(path, f"{what} holds raw value {top}, above the 14-bit range plus black level "
                             f"({BLACK_LEVEL + WHITE_LEVEL}); it would decode above 1")
    if top == 0:
        raise _corrupt(path, f"{what} is all zero")
    return raw


def read_view(path: Path | str) -> torch.Tensor:
    """Read one raw DP view as a ``(1, 1, H, W)`` float32 tensor in linear [0, 1].

    Raises:
        DatasetNotFoundError: no such file.
        DatasetCorruptError: not a 16-bit, one-channel 2016x1512 PNG, values that decode above
            1, or all zero.
    """
    return torch.from_numpy(decode_raw(_read_raw(Path(path))))[None, None]


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

    Orientation: the kernels are returned as released, and they are convolution kernels
    (Xin et al.'s code applies them with ``scipy.signal.convolve2d``, ``code/util.py``). Their
    scenes lie at or behind the focal plane (supplement B), a positive CoC in dplab, and in
    every one of the 48 cells the left kernel's centroid lies to the left of the right
    kernel's (by about 5.3 px on average): the orientation of :mod:`dplab.optics.psf` (RDPD Sec. 2.2,
    the left PSF falling off towards the right for a positive CoC). Fitted with
    :func:`dplab.optics.psf.butterworth_dp` (chapter 2) the cells prefer positive radii, so the
    release can be mixed with dplab's parametric PSFs and used with Xin et al.'s model
    (:mod:`dplab.xin.mpi`) as it is, with no swap or mirror. The kernels are off-centre by up to
    3.5 px.

    Args:
        data_dir: data directory (default ``$DPLAB_DATA``).
        view_sum: what each kernel is scaled to sum to; 0.5 is dplab's DP convention, 1.0
            keeps the release's normalisation.

    Raises:
        DatasetNotFoundError: the release or its calibration folder is missing.
        DatasetCorruptError: a kernel file that cannot be read, has another shape, or holds
            a non-finite, negative or all-zero kernel.
    """
    if not isinstance(view_sum, (int, float)) or not 0 < view_sum < float("inf"):
        raise ValueError(f"view_sum must be a positive number, got {view_sum!r}")
    folder = dataset_dir(NAME, data_dir) / "calibration"
    kernels = []
    for side in ("left", "right"):
        path = folder / f"blur_kernels_{side}.npy"
        if not path.is_file():
            raise DatasetNotFoundError(f"{path} does not exist (dataset {NAME!r}, see dplab/data/manifests/{NAME}.yaml)")
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as err:
            raise _corrupt(path, f"cannot be read as a .npy array ({type(err).__name__}: {err})") from None
        if array.shape != (GRID_SHAPE[0] * GRID_SHAPE[1], 61, 61):
            raise _corrupt(path, f"has shape {array.shape}, expected (48, 61, 61): one 61x61 kernel per cell")
        k = torch.from_numpy(np.asarray(array, dtype=np.float32))
        sums = k.sum(dim=(-2, -1))
        bad = [int(i) for i in torch.nonzero(~torch.isfinite(k).all(-1).all(-1) | (k < 0).any(-1).any(-1)
                                             | ~(sums > 0)).flatten()]
        if bad:
            raise _corrupt(path, f"cells {bad[:8]}{'...' if len(bad) > 8 else ''} hold a non-finite, negative or "
                                 "all-zero kernel, which has no normalisation")
        kernels.append(k / sums[:, None, None] * view_sum)
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
    is 8-bit with an arbitrary affine scale, read as ``v / 255``. Both cover the central
    1344x1008 crop.

    Raises:
        DatasetNotFoundError: the release or a view of this scene is missing.
        DatasetCorruptError: a file of the scene has the wrong bit depth or size, cannot be
            decoded, or holds raw values that decode above 1 (see :func:`read_view`).
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
        array = _read_png(aif, dtype=np.uint16, shape_hw=CROP_HW, what="an all-in-focus ground truth")
        out["all_in_focus"] = torch.from_numpy(array.astype(np.float32) / 65535.0)[None, None]
    dmap = folder / "gt_defocus_map" / f"{scene}_gt.png"
    if dmap.is_file():
        array = _read_png(dmap, dtype=np.uint8, shape_hw=CROP_HW, what="a defocus-map ground truth")
        out["defocus"] = torch.from_numpy(array.astype(np.float32) / 255.0)[None, None]
    return out


# ----------------------------------------------------------------------------- additions for Xin et al.
def load_kernel_grid(data_dir: Path | str | None = None, *, view_sum: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The calibrated kernels as a ``(6, 8, 61, 61)`` grid per view (row-major cells).

    The shape :class:`dplab.xin.blur.DPBlur`, :func:`dplab.xin.mpi.optimize` and
    :func:`dplab.xin.wiener.wiener_defocus` take for spatially varying kernels (with
    ``cell_hw=CELL_PX``).

    Args:
        data_dir: data directory (default ``$DPLAB_DATA``).
        view_sum: what each kernel sums to (0.5: dplab's convention).

    Returns:
        ``(left, right)``, each ``(6, 8, 61, 61)`` float32.

    Raises:
        DatasetNotFoundError: the release or its calibration is missing.
    """
    left, right = load_kernels(data_dir, view_sum=view_sum)
    return left.reshape(GRID_SHAPE + left.shape[-2:]), right.reshape(GRID_SHAPE + right.shape[-2:])


def vignetting_gain(data_dir: Path | str | None = None, *, window: int = 101, crop: bool = True) -> torch.Tensor:
    """Per-pixel gain for the right view that matches its vignetting to the left view's.

    Xin et al. (Sec. 3, supplement B) calibrate the different vignetting of the two DP views
    with images of a white sheet through a diffuser. The authors' code decodes both white-sheet
    images like the scenes, takes their ratio ``W_l / W_r``, averages it over a ``101 x 101``
    window (zero padding counted, flax ``avg_pool`` 'SAME'; irrelevant inside the central crop)
    and multiplies the right view by it before cropping (``code/util.py``). Use as
    ``right * vignetting_gain(data_dir)``.

    Args:
        data_dir: data directory (default ``$DPLAB_DATA``).
        window: odd averaging window in pixels.
        crop: return the central 1008x1344 crop (the calibrated field), else the full frame.

    Returns:
        ``(1, 1, H, W)`` float32 gain.

    Raises:
        DatasetNotFoundError: the white-sheet images are missing.
        ValueError: even window.
    """
    if not isinstance(window, int) or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer, got {window!r}")
    folder = dataset_dir(NAME, data_dir) / "calibration"
    wl = read_view(folder / "white_sheet_left.png").double()
    wr = read_view(folder / "white_sheet_right.png").double()
    ratio = wl / wr.clamp_min(1.0 / WHITE_LEVEL)
    gain = box_mean(ratio, window).float()
    return crop_central(gain) if crop else gain


def defocus_confidence(gt_defocus: torch.Tensor) -> torch.Tensor:
    """Confidence weights of a ground-truth defocus map of the release: ``1`` where ``gt > 0``.

    The released 8-bit maps hold 0 where the focus stack gave no depth (holes, occlusion
    boundaries; the paper's Fig. 7 draws them white and ignores them in Table 1); valid depths
    are coded from 1 upwards. This reading of the 0 code is dplab's (the release has no
    separate confidence file): in scene 001, 0 covers the black background and no valid
    surface.

    Example:
        >>> defocus_confidence(torch.tensor([0.0, 0.2, 1.0])).tolist()
        [0.0, 1.0, 1.0]
    """
    return (gt_defocus > 0).to(torch.float32)


#: Per-scene settings of the authors' code (``setup.py``): kernel scales of the front (near) and
#: back (far) layers, and the loss weights before the layer-count scaling (alpha weight times
#: ``(N/12)^2``, entropy weight divided by ``log N``). Scenes 001-017.
SCENE_SETTINGS: dict[str, dict] = {
    f"{i + 1:03d}": {
        "near": near, "far": far, "intensity": 30.0,
        "alpha": 1.5e4 if i < 4 else 7.5e4,
        "entropy": 30.0 if 4 <= i <= 11 else 20.0,
    }
    for i, (near, far) in enumerate(zip(
        [0.5, 0.5, 0.7, 0.7, 0.1, 0.1, 0.1, 0.2, 0.1, 0.2, 0.2, 0.1, 0.3, 0.1, 0.1, 0.3, 0.2],
        [1.6, 1.6, 1.6, 1.6, 1.3, 1.4, 1.4, 1.5, 1.5, 1.5, 1.5, 1.5, 1.6, 1.5, 1.6, 1.5, 1.6]))
}


def scene_settings(scene: str) -> dict:
    """The authors' settings for one scene: ``near``, ``far`` scales and loss weights.

    Example:
        >>> scene_settings("001")
        {'near': 0.5, 'far': 1.6, 'intensity': 30.0, 'alpha': 15000.0, 'entropy': 20.0}
    """
    if scene not in SCENE_SETTINGS:
        raise ValueError(f"scene must be one of '001'..'017', got {scene!r}")
    return dict(SCENE_SETTINGS[scene])
