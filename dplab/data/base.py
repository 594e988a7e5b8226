"""Shared machinery of the dataset classes: image decoding, presence and shape checks, errors.

Every loader in :mod:`dplab.data` lists its files when it is built (so a missing file is
reported before training starts, never skipped), decodes PNGs losslessly
(:func:`dplab.data.pngio.read_png`), divides the integer codes by the code maximum of the
file's bit depth (65535 for 16-bit, 255 for 8-bit), and returns one *sample* per item: a dict
of ``(C, H, W)`` float32 tensors in [0, 1] with the keys

``"combined"``
    the blurred input image (the DP combined image, or a conventional camera's image);
``"left"``, ``"right"``
    the two DP views, where the dataset has them;
``"sharp"``
    the all-in-focus ground truth, where the dataset has it;
``"defocus"``
    a ``(1, H, W)`` defocus map, where the dataset has one;

plus ``"name"``, the image id. A :class:`torch.utils.data.DataLoader` stacks samples into
``(B, C, H, W)`` batches, the layout the rest of dplab uses.

DP brightness: dplab's convention is ``combined = left + right`` (each view's PSF sums to 1/2).
The Canon releases (DPDD, DLDP) store each view at full brightness, i.e. ``combined`` is about
``(left + right) / 2``; the DP loaders therefore multiply the stored views by ``view_scale``
(default 0.5). Pass ``view_scale=1.0`` to get the views exactly as stored. The images are the
releases' sRGB-encoded values, as the papers train and evaluate on them, so
``combined = left + right`` holds only approximately for real captures.

A missing file raises :class:`~dplab.data.manifest.DatasetNotFoundError` and an unreadable or
inconsistent one raises :class:`DatasetCorruptError`; both name the file and the dataset's
manifest in ``dplab/data/manifests/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from dplab.data.manifest import MANIFEST_DIR, DatasetNotFoundError, dataset_dir
from dplab.data.pngio import PNGError, png_info, read_png

__all__ = [
    "reject_orphans",
    "DatasetCorruptError",
    "ImageSetDataset",
    "decode_codes",
    "read_image",
    "manifest_hint",
    "resolve_root",
    "list_images",
]

IMAGE_SUFFIXES = (".png",)


class DatasetCorruptError(ValueError):
    """A dataset file exists but cannot be decoded, or disagrees with its layout
    (wrong bit depth, channel count, or image size)."""


def manifest_hint(name: str) -> str:
    """One line naming a dataset's manifest, for error messages.

    Example:
        >>> manifest_hint("dpdd").endswith("dpdd.yaml)")
        True
    """
    return f"(dataset {name!r}, layout in {MANIFEST_DIR / f'{name}.yaml'})"


def resolve_root(name: str, data_dir=None, root=None) -> Path:
    """The folder a loader reads: ``root`` when given, else ``<data_dir>/<manifest folder>``.

    Args:
        name: manifest name, used for the lookup and for error messages.
        data_dir: the data directory (default ``$DPLAB_DATA``); see :func:`dataset_dir`.
        root: a folder that directly holds the layout (e.g. synthetic data written by
            ``python -m dplab synth``).

    The manifest's ``required`` list is not checked here: each loader checks the folders and
    files of the split it reads.

    Raises:
        DatasetNotFoundError: the folder is missing or incomplete (message names the manifest).
    """
    if root is not None:
        root = Path(root).expanduser().resolve()
        if not root.is_dir():
            raise DatasetNotFoundError(f"{root} is not a folder {manifest_hint(name)}")
        return root
    # The loaders check the folders and files of the split they read, so a partial copy (say
    # DPDD's test split only, as DRBNet distributes it) is usable; dataset_dir still checks
    # that the data directory and the dataset folder exist.
    return dataset_dir(name, data_dir, check=False)


def reject_orphans(folder: Path, expected: set[str], dataset: str, what: str) -> None:
    """Raise if ``folder`` holds PNGs that belong to no listed item (nothing is skipped silently)."""
    extra = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".png" and p.name not in expected)
    if extra:
        shown = ", ".join(extra[:10]) + (f", ... ({len(extra)} in all)" if len(extra) > 10 else "")
        raise DatasetCorruptError(
            f"{what}: {folder} holds file(s) that match no combined image: {shown} {manifest_hint(dataset)}"
        )


def list_images(folder: Path, name: str, what: str) -> list[Path]:
    """Sorted PNG files of ``folder``; raises :class:`DatasetNotFoundError` if the folder is
    missing or holds none."""
    if not folder.is_dir():
        raise DatasetNotFoundError(f"{what}: folder {folder} is missing {manifest_hint(name)}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetNotFoundError(f"{what}: folder {folder} holds no PNG images {manifest_hint(name)}")
    return files


def decode_codes(codes: np.ndarray) -> np.ndarray:
    """Integer codes -> float32 in [0, 1]: ``uint16 / 65535``, ``uint8 / 255``.

    Example:
        >>> decode_codes(np.array([0, 65535], np.uint16)).tolist()
        [0.0, 1.0]
    """
    if codes.dtype == np.uint16:
        return codes.astype(np.float32) / np.float32(65535.0)
    if codes.dtype == np.uint8:
        return codes.astype(np.float32) / np.float32(255.0)
    raise TypeError(f"expected uint8 or uint16 codes, got {codes.dtype}")


def read_image(
    path: Path | str, *, dataset: str, bit_depth: int | None = None, channels: int | None = 3
) -> torch.Tensor:
    """Read one PNG of a dataset as a ``(C, H, W)`` float32 tensor in [0, 1].

    Args:
        path: the file.
        dataset: manifest name, for error messages.
        bit_depth: 8 or 16 to require that bit depth, None to accept either.
        channels: required channel count (grayscale files give 1), or None for any.

    Returns:
        The image, codes divided by 65535 (16-bit) or 255 (8-bit).

    Shape:
        ``(C, H, W)``.

    Raises:
        DatasetNotFoundError: the file does not exist.
        DatasetCorruptError: it cannot be decoded, or has the wrong bit depth or channel count.

    Example:
        >>> import tempfile
        >>> from dplab.data.pngio import write_png
        >>> p = write_png(Path(tempfile.mkdtemp()) / "x.png", np.full((2, 2, 3), 65535, np.uint16))
        >>> read_image(p, dataset="dpdd", bit_depth=16).shape
        torch.Size([3, 2, 2])
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist {manifest_hint(dataset)}")
    try:
        codes = read_png(path)
    except PNGError as err:
        raise DatasetCorruptError(f"{err} {manifest_hint(dataset)}") from None
    depth = 16 if codes.dtype == np.uint16 else 8
    if bit_depth is not None and depth != bit_depth:
        raise DatasetCorruptError(
            f"{path} is a {depth}-bit PNG, but the layout has {bit_depth}-bit images "
            f"{manifest_hint(dataset)}; pass bit_depth=None to accept it"
        )
    image = decode_codes(codes)
    image = image[..., None] if image.ndim == 2 else image
    if channels is not None and image.shape[-1] != channels:
        raise DatasetCorruptError(
            f"{path} has {image.shape[-1]} channel(s), expected {channels} {manifest_hint(dataset)}"
        )
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def _read_map(path: Path, dataset: str, decode: Callable | None) -> torch.Tensor:
    """A single-channel map (.png, .npy, .tif/.tiff) as ``(1, H, W)`` float32."""
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} does not exist {manifest_hint(dataset)}")
    try:
        suffix = path.suffix.lower()
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            values = tifffile.imread(path)
        else:
            values = read_png(path)
    except (PNGError, ValueError, OSError) as err:
        raise DatasetCorruptError(f"{path} could not be read ({err}) {manifest_hint(dataset)}") from None
    if decode is not None:
        values = decode(values)
    elif values.dtype in (np.uint8, np.uint16):
        values = decode_codes(values)
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 3 and values.shape[-1] == 1:
        values = values[..., 0]
    if values.ndim != 2:
        raise DatasetCorruptError(f"{path} must hold a single-channel map, got shape {values.shape} {manifest_hint(dataset)}")
    return torch.from_numpy(np.ascontiguousarray(values))[None]


class ImageSetDataset(Dataset):
    """Base class: a list of records (image key -> file path), read on demand.

    Subclasses fill ``self.records`` (one dict per item: ``"name"`` plus image keys mapped to
    paths) and set ``self.dataset`` (manifest name). Items are returned as sample dicts (see
    the module docstring). Views (``"left"``/``"right"``) are multiplied by ``view_scale``.

    Args:
        bit_depth: 8 or 16 to require that bit depth of every image, None for either.
        view_scale: factor applied to the stored DP views (0.5: dplab's
            ``combined = left + right`` for releases that store full-brightness views).
        cache: keep decoded samples in memory (for small data sets read many times).
        transform: called on each sample dict before it is returned.
        defocus_decode: for ``"defocus"`` maps stored as integer PNGs, a function from the
            stored codes to values; by default codes are divided by the code maximum.
    """

    dataset: str = ""
    view_keys = ("left", "right")

    def __init__(
        self,
        *,
        bit_depth: int | None = None,
        view_scale: float = 0.5,
        cache: bool = False,
        transform: Callable[[dict], dict] | None = None,
        defocus_decode: Callable | None = None,
    ):
        if bit_depth not in (None, 8, 16):
            raise ValueError(f"bit_depth must be 8, 16 or None, got {bit_depth!r}")
        if isinstance(view_scale, bool) or not isinstance(view_scale, (int, float)) or not view_scale > 0:
            raise ValueError(f"view_scale must be a positive number, got {view_scale!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable or None, got {type(transform).__name__}")
        self.bit_depth = bit_depth
        self.view_scale = float(view_scale)
        self.transform = transform
        self.defocus_decode = defocus_decode
        self._cache: dict[int, dict] | None = {} if cache else None
        self.records: list[dict] = []

    # -- listing -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.records)

    @property
    def names(self) -> list[str]:
        """Image ids, in item order."""
        return [r["name"] for r in self.records]

    def files(self, index: int) -> dict[str, Path]:
        """The files of item ``index`` (key -> path)."""
        return {k: v for k, v in self.records[index].items() if k != "name"}

    def _check_present(self) -> None:
        """Raise one error listing every listed file that does not exist."""
        missing = [str(p) for r in self.records for k, p in r.items() if k != "name" and not Path(p).is_file()]
        if missing:
            shown = "\n".join(f"    {m}" for m in missing[:20])
            more = f"\n    ... and {len(missing) - 20} more" if len(missing) > 20 else ""
            raise DatasetNotFoundError(
                f"{len(missing)} file(s) of dataset {self.dataset!r} are missing:\n{shown}{more}\n"
                f"  {manifest_hint(self.dataset)}"
            )

    # -- reading -------------------------------------------------------------------------
    def load(self, index: int) -> dict:
        """Decode item ``index`` without the transform (shapes verified)."""
        if not isinstance(index, (int, np.integer)) or isinstance(index, bool):
            raise TypeError(f"index must be an integer, got {type(index).__name__}")
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        index = int(index) % len(self)
        if self._cache is not None and index in self._cache:
            return dict(self._cache[index])
        record = self.records[index]
        sample: dict = {"name": record["name"]}
        for key, path in record.items():
            if key == "name":
                continue
            if key == "defocus":
                sample[key] = _read_map(Path(path), self.dataset, self.defocus_decode)
            else:
                image = read_image(path, dataset=self.dataset, bit_depth=self.bit_depth)
                sample[key] = image * self.view_scale if key in self.view_keys else image
        sizes = {k: tuple(v.shape[-2:]) for k, v in sample.items() if isinstance(v, torch.Tensor)}
        if len(set(sizes.values())) > 1:
            detail = ", ".join(f"{k} {record[k]} is {h}x{w}" for k, (h, w) in sizes.items())
            raise DatasetCorruptError(
                f"item {record['name']!r}: image sizes differ (HxW): {detail} {manifest_hint(self.dataset)}"
            )
        if self._cache is not None:
            self._cache[index] = dict(sample)
        return sample

    def __getitem__(self, index: int) -> dict:
        sample = self.load(index)
        return self.transform(sample) if self.transform is not None else sample

    def image_size(self, index: int) -> tuple[int, int]:
        """``(H, W)`` of item ``index`` from the PNG header of its first image (no decoding)."""
        first = next(p for k, p in self.records[index].items() if k not in ("name", "defocus"))
        try:
            info = png_info(first)
        except PNGError as err:
            raise DatasetCorruptError(f"{err} {manifest_hint(self.dataset)}") from None
        return info["height"], info["width"]

    def verify(self) -> dict:
        """Decode every item and report *all* problems at once.

        Returns:
            ``{"count": n, "sizes": {(H, W): count}}``.

        Raises:
            DatasetNotFoundError: files are missing.
            DatasetCorruptError: files are unreadable or inconsistent (all listed).
        """
        problems, sizes = [], {}
        for i in range(len(self)):
            try:
                sample = self.load(i)
            except DatasetNotFoundError:
                raise
            except DatasetCorruptError as err:
                problems.append(str(err))
                continue
            hw = tuple(sample["combined"].shape[-2:])
            sizes[hw] = sizes.get(hw, 0) + 1
        if problems:
            raise DatasetCorruptError(f"{len(problems)} item(s) of dataset {self.dataset!r} are corrupt:\n" + "\n".join(problems))
        return {"count": len(self), "sizes": sizes}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items, dataset={self.dataset!r})"
