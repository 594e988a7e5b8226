"""A non-editable install carries its package data: the dataset manifests and the shipped weights.

The wheel is built from this checkout, installed into a temporary folder (not the repository),
and imported from there by a fresh interpreter whose working directory is elsewhere, so that
nothing can fall back to the source tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    # Built from a copy: setuptools writes build/ and *.egg-info/ into the source folder.
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "dplab", src / "dplab", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(out), str(src)], check=True, cwd=out)
    (path,) = out.glob("dplab-*.whl")
    return path


def test_wheel_holds_manifests_and_weights(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    manifests = {n for n in names if n.startswith("dplab/data/manifests/") and n.endswith(".yaml")}
    assert {Path(n).name for n in manifests} == {p.name for p in (ROOT / "dplab/data/manifests").glob("*.yaml")}
    for card in (ROOT / "dplab/weights").glob("*.json"):
        assert f"dplab/weights/{card.name}" in names and f"dplab/weights/{card.stem}.pt" in names, card.name


def test_installed_copy_finds_its_manifests_and_weights(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(target), str(wheel)], check=True)
    probe = (
        "import dplab.data.manifest as m, dplab.models.shipped as s\n"
        "assert m.__file__.startswith(%r), m.__file__\n"
        "print(len(m.list_manifests()), m.load_manifest('dpdd').splits['test'], len(s.list_pretrained()))\n"
    ) % str(target)
    env = {**os.environ, "PYTHONPATH": str(target)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    n_manifests, dpdd_test, n_weights = map(int, done.stdout.split())
    assert n_manifests == len(list((ROOT / "dplab/data/manifests").glob("*.yaml")))
    assert dpdd_test == 76  # the test split of the DPDD release (its manifest)
    assert n_weights == len(list((ROOT / "dplab/weights").glob("*.pt")))
