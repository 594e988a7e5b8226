"""The notebook harness: _toc.yml discovery and papermill runs in the `test` profile, once per session."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _toc_entries(node) -> list[str]:
    """All documents of a jupyter-book _toc.yml (root first), in reading order."""
    found = []
    if isinstance(node, dict):
        for key in ("root", "file"):
            if key in node:
                found.append(node[key])
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []):
                found.extend(_toc_entries(child))
    return found


def toc_documents() -> list[Path]:
    """Paths of every document in _toc.yml; fails if an entry has no file."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    docs = []
    for entry in _toc_entries(toc):
        path = ROOT / entry
        candidates = [path] if path.suffix else [path.with_suffix(".ipynb"), path.with_suffix(".md")]
        existing = [c for c in candidates if c.exists()]
        if not existing:
            raise FileNotFoundError(f"_toc.yml lists {entry!r}, but no such file exists")
        docs.append(existing[0])
    return docs


def pixel4_folder() -> Path | None:
    """The Pixel 4 release folder under $DPLAB_DATA if every path its manifest requires exists
    (the rule the chapters apply), else None: checkers use it to know what the run could see."""
    root = os.environ.get("DPLAB_DATA")
    if not root:
        return None
    manifest = yaml.safe_load((ROOT / "dplab" / "data" / "manifests" / "xin_pixel4_dp.yaml").read_text())
    folder = Path(root) / manifest["folder"]
    ok = folder.is_dir() and all((folder / rel).exists() for rel in manifest["required"])
    return folder if ok else None


def toc_notebooks() -> list[Path]:
    return [d for d in toc_documents() if d.suffix == ".ipynb"]


@dataclass
class NotebookRun:
    source: Path
    executed: Path
    output_dir: Path
    error: BaseException | None


class NotebookRunner:
    """Runs each chapter at most once per session with papermill, headless, in the test profile."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.runs: dict[Path, NotebookRun] = {}

    def run(self, notebook: Path, *, without_data: bool = False) -> NotebookRun:
        """Execute ``notebook`` once (per variant). ``without_data`` points ``data_dir`` at an
        empty folder, as for a reader who has none of the real datasets."""
        key = (notebook, without_data)
        if key not in self.runs:
            import papermill

            # Headless, but figures must still reach the notebook: the inline backend renders
            # with Agg and emits PNG outputs, whereas plain "agg" would silently drop them.
            os.environ["MPLBACKEND"] = "module://matplotlib_inline.backend_inline"
            # Progress bars of long loops (MPI, fits, trials) are for people at a terminal.
            os.environ["TQDM_DISABLE"] = "1"
            rel = notebook.relative_to(ROOT)
            variant = "no_data" if without_data else "with_data"
            executed = self.workdir / variant / "executed" / rel
            executed.parent.mkdir(parents=True, exist_ok=True)
            output_dir = self.workdir / variant / "outputs" / notebook.stem
            empty = self.workdir / "empty_data_dir"
            empty.mkdir(exist_ok=True)
            data_dir = str(empty) if without_data else (os.environ.get("DPLAB_DATA") or None)
            error = None
            try:
                papermill.execute_notebook(
                    str(notebook),
                    str(executed),
                    parameters={
                        "profile": "test",
                        "output_dir": str(output_dir),
                        "data_dir": data_dir,
                        "seed": 0,
                    },
                    cwd=str(notebook.parent),
                    kernel_name="python3",
                    execution_timeout=600,
                    progress_bar=False,
                )
            except Exception as exc:  # reported by the test that asks for this notebook
                error = exc
            self.runs[key] = NotebookRun(notebook, executed, output_dir, error)
        return self.runs[key]


def table1_psnr(pred, gt, obs_max: float, downscale: int = 1) -> float:
    """Xin et al.'s Table 1 PSNR as chapter 5 describes it, in numpy, for the checkers: both
    images divided by the views' maximum and clipped to [0, 1], then the best PSNR over integer
    shifts |dy|, |dx| <= ceil(6/f) after a ceil(8/f) border crop (f = ``downscale``)."""
    m, b = math.ceil(6 / downscale), max(math.ceil(8 / downscale), math.ceil(6 / downscale))
    pred, gt = np.clip(pred / obs_max, 0, 1), np.clip(gt / obs_max, 0, 1)
    H, W = gt.shape
    g = gt[b:H - b, b:W - b]
    best = -1.0
    for dy in range(-m, m + 1):
        for dx in range(-m, m + 1):
            p = pred[b + dy:H - b + dy, b + dx:W - b + dx]
            best = max(best, 10 * math.log10(1.0 / np.mean((p - g) ** 2)))
    return best
