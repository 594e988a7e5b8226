"""Dataset manifests and the data directory.

Every real dataset the book uses is described by one YAML file in ``dplab/data/manifests/``
(citation, home page, on-disk layout, splits, the paths that must exist). Nothing is
downloaded: the user places datasets under a *data directory*, given either as the
``data_dir`` argument or through the ``DPLAB_DATA`` environment variable, and
:func:`dataset_dir` checks that a dataset is present before anything reads it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

__all__ = [
    "DATA_ENV",
    "MANIFEST_DIR",
    "DatasetNotFoundError",
    "Manifest",
    "data_root",
    "dataset_dir",
    "list_manifests",
    "load_manifest",
]

DATA_ENV = "DPLAB_DATA"
# The manifests live beside the package in the repository (editable install).
MANIFEST_DIR = Path(__file__).resolve().parent / "manifests"

_REQUIRED_KEYS = ("name", "title", "citation", "homepage", "folder", "layout", "required", "splits")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset, or part of it, is not where the data directory says it should be."""


@dataclass(frozen=True)
class Manifest:
    """One dataset's manifest, as read from ``dplab/data/manifests/<name>.yaml``."""

    name: str
    title: str
    citation: dict
    homepage: str
    folder: str
    layout: list
    required: list
    splits: dict
    path: Path
    extra: dict = field(default_factory=dict)

    @property
    def download(self) -> str:
        """How to obtain the dataset, in words."""
        return str(self.extra.get("download", f"See {self.homepage}"))


def list_manifests(manifest_dir: Path | str | None = None) -> list[str]:
    """Names of all datasets that have a manifest, sorted.

    Example:
        >>> "xin_pixel4_dp" in list_manifests()
        True
    """
    directory = Path(manifest_dir) if manifest_dir is not None else MANIFEST_DIR
    if not directory.is_dir():
        raise FileNotFoundError(f"manifest directory {directory} does not exist")
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_manifest(name: str, manifest_dir: Path | str | None = None) -> Manifest:
    """Read and check one manifest.

    Args:
        name: dataset name, the manifest's file stem (e.g. ``"xin_pixel4_dp"``).
        manifest_dir: folder of manifests; defaults to the package's ``dplab/data/manifests/``.

    Returns:
        The parsed :class:`Manifest`.

    Raises:
        TypeError: ``name`` is not a string.
        KeyError: no manifest of that name (the message lists the known ones).
        ValueError: the manifest lacks a required key.

    Example:
        >>> load_manifest("xin_pixel4_dp").splits["test"]
        17
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a dataset name string, got {type(name).__name__}")
    directory = Path(manifest_dir) if manifest_dir is not None else MANIFEST_DIR
    path = directory / f"{name}.yaml"
    if not path.is_file():
        known = ", ".join(list_manifests(directory))
        raise KeyError(f"no manifest for dataset {name!r} in {directory}; known datasets: {known}")
    raw = yaml.safe_load(path.read_text())
    missing = [k for k in _REQUIRED_KEYS if k not in raw]
    if missing:
        raise ValueError(f"manifest {path} lacks the key(s) {missing}")
    if raw["name"] != name:
        raise ValueError(f"manifest {path} names itself {raw['name']!r}, expected {name!r}")
    core = {k: raw[k] for k in _REQUIRED_KEYS}
    extra = {k: v for k, v in raw.items() if k not in _REQUIRED_KEYS}
    return Manifest(**core, path=path, extra=extra)


def data_root(data_dir: Path | str | None = None, *, must_exist: bool = False) -> Path | None:
    """The data directory: ``data_dir`` if given, else ``$DPLAB_DATA``, else None.

    A relative path is resolved against the current working directory.

    Args:
        data_dir: the folder, or None for ``$DPLAB_DATA``.
        must_exist: refuse a folder that was named (by ``data_dir`` or ``$DPLAB_DATA``) but does
            not exist. A chapter asks for this: with no data directory at all it falls back to
            synthetic data, but a mistyped one must not pass as "no data".

    Raises:
        TypeError: ``data_dir`` is not a path.
        DatasetNotFoundError: ``must_exist`` and the named folder is not a directory.

    Example:
        >>> data_root("/tmp").as_posix()
        '/tmp'
    """
    source = "data_dir"
    if data_dir is None:
        data_dir, source = os.environ.get(DATA_ENV) or None, f"${DATA_ENV}"
    if data_dir is None:
        return None
    if not isinstance(data_dir, (str, os.PathLike)):
        raise TypeError(f"data_dir must be a path or None, got {type(data_dir).__name__}")
    root = Path(data_dir).expanduser().resolve()
    if must_exist and not root.is_dir():
        raise DatasetNotFoundError(
            f"the data directory {root} ({source}) does not exist; correct the path, or leave {source} "
            "unset (data_dir=None) to run without the real datasets")
    return root


def dataset_dir(name: str, data_dir: Path | str | None = None, *, check: bool = True) -> Path:
    """Locate a dataset under the data directory and verify the paths its manifest requires.

    Args:
        name: dataset name (see :func:`list_manifests`).
        data_dir: the data directory; defaults to ``$DPLAB_DATA``.
        check: verify that every path in the manifest's ``required`` list exists.

    Returns:
        The dataset's folder, ``<data_dir>/<manifest folder>``.

    Raises:
        DatasetNotFoundError: no data directory is set, the dataset folder is missing, or a
            required file is absent. The message names the dataset, the expected path, the
            manifest, and how to obtain the data.

    Example:
        >>> try:
        ...     dataset_dir("xin_pixel4_dp", "/nonexistent")
        ... except DatasetNotFoundError as e:
        ...     print(str(e).splitlines()[0])
        dataset 'xin_pixel4_dp' not found at /nonexistent/xin_pixel4_dp
    """
    manifest = load_manifest(name)
    root = data_root(data_dir)
    how = (
        f"  manifest: {manifest.path}\n  to get it: {manifest.download}\n"
        f"  then pass data_dir=... or set {DATA_ENV} to the folder that contains {manifest.folder}/"
    )
    if root is None:
        raise DatasetNotFoundError(
            f"dataset {name!r} needs a data directory, but none is set (data_dir=None and "
            f"{DATA_ENV} is unset)\n  expected layout: <data_dir>/{manifest.folder}/\n{how}"
        )
    folder = root / manifest.folder
    if not folder.is_dir():
        raise DatasetNotFoundError(f"dataset {name!r} not found at {folder}\n{how}")
    if check:
        absent = [rel for rel in manifest.required if not (folder / rel).exists()]
        if absent:
            listing = "\n".join(f"    {folder / rel}" for rel in absent)
            raise DatasetNotFoundError(
                f"dataset {name!r} at {folder} is incomplete; missing:\n{listing}\n{how}"
            )
    return folder
