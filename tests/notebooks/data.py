"""Checks for book/data.ipynb: the page lists every manifest and finds exactly the datasets present."""

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def check(metrics, output_dir):
    manifests = sorted((ROOT / "dplab" / "data" / "manifests").glob("*.yaml"))
    assert metrics["n_manifests"] == len(manifests)
    assert metrics["names"] == [p.stem for p in manifests]
    # Independent presence check: a dataset counts as found when its folder and every
    # required path exist under $DPLAB_DATA.
    root = os.environ.get("DPLAB_DATA")
    expected = []
    for p in manifests:
        m = yaml.safe_load(p.read_text())
        folder = Path(root) / m["folder"] if root else None
        if folder and folder.is_dir() and all((folder / r).exists() for r in m["required"]):
            expected.append(m["name"])
    assert metrics["found"] == sorted(expected)
    assert metrics["n_found"] == len(expected)
