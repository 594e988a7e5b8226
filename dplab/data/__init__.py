"""Datasets: manifests, the data directory, loaders for the real on-disk layouts."""

from .manifest import (
    DATA_ENV,
    MANIFEST_DIR,
    DatasetNotFoundError,
    Manifest,
    data_root,
    dataset_dir,
    list_manifests,
    load_manifest,
)

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
