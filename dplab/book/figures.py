"""Images in grids and results in tables: the general figure helpers of the book's chapters,
and DRBNet's per-block terms (Ruan et al., CVPR 2022, Fig. 4).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["image_grid", "panel_grid", "drb_terms_figure"]


def _hwc(img) -> np.ndarray:
    """``(1, C, H, W)`` / ``(C, H, W)`` / ``(H, W)`` tensor -> clipped ``(H, W)`` or ``(H, W, 3)`` array."""
    t = torch.as_tensor(img).detach().float().cpu()
    while t.ndim > 3:
        t = t[0]
    if t.ndim == 3:
        t = t[0] if t.shape[0] == 1 else t.permute(1, 2, 0)
    return t.clamp(0, 1).numpy()


def image_grid(rows, titles=None, *, row_labels=None, size: float = 2.0):
    """Images (tensors in [0, 1], RGB or single channel) in a grid of rows; returns the figure.

    Args:
        rows: list of rows, each a list of images (None leaves a panel blank).
        titles: per row, a list of panel titles (or None).
        row_labels: one y-label per row.
        size: panel height in inches.
    """
    import matplotlib.pyplot as plt

    nrows, ncols = len(rows), max(len(r) for r in rows)
    first = next(im for r in rows for im in r if im is not None)
    h, w = torch.as_tensor(first).shape[-2:]
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / h, size * nrows + 0.3), squeeze=False)
    for i, row in enumerate(rows):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row) or row[j] is None:
                ax.axis("off")
                continue
            ax.imshow(_hwc(row[j]), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            if titles and titles[i] and j < len(titles[i]):
                ax.set_title(titles[i][j], fontsize=8)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    fig.tight_layout()
    return fig


def panel_grid(rows, col_titles=None, row_labels=None, *, size=1.8, cmaps=None, vlims=None):
    """Show a grid of images: ``rows`` is a list of lists of ``(C, H, W)``/``(H, W)`` tensors/arrays.

    ``cmaps`` and ``vlims`` give a colour map and ``(vmin, vmax)`` per column for single-channel
    panels (colour panels are shown as they are, clipped to [0, 1]). Returns ``(fig, axes)``.
    """
    import matplotlib.pyplot as plt

    n_r, n_c = len(rows), max(len(r) for r in rows)
    h, w = np.asarray(rows[0][0].shape[-2:])
    fig, axes = plt.subplots(n_r, n_c, figsize=(size * n_c * w / h + 0.8, size * n_r + 0.3), squeeze=False,
                             layout="constrained")
    for i, row in enumerate(rows):
        for j in range(n_c):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(row):
                ax.axis("off")
                continue
            x = row[j]
            x = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
            if x.ndim == 4:
                x = x[0]
            if x.ndim == 3 and x.shape[0] == 3:
                ax.imshow(np.clip(x.transpose(1, 2, 0), 0, 1))
            else:
                x = x.reshape(x.shape[-2:])
                vmin, vmax = (vlims[j] if vlims and vlims[j] else (None, None))
                im = ax.imshow(x, cmap=(cmaps[j] if cmaps and cmaps[j] else "gray"), vmin=vmin, vmax=vmax)
                if i == n_r - 1 and cmaps and cmaps[j] and cmaps[j] != "gray":
                    fig.colorbar(im, ax=axes[:, j].tolist(), shrink=0.6)
            if i == 0 and col_titles and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=8)
        if row_labels:
            axes[i, 0].set_ylabel(row_labels[i], fontsize=8)
    return fig, axes


def drb_terms_figure(terms, sharp, *, pixel=None, size: float = 1.6):
    """DRBNet's Fig. 4: one row per DRB (coarse to fine) with the input estimate ``x_n``, the
    per-pixel kernel ``K`` at one pixel, the dynamic term ``x_n (x) K``, the residual term
    ``dr_n``, the output ``y_n`` and the ground truth at that scale.

    Signed terms are shown as the channel mean on a red-blue map symmetric about 0, with its
    limit (in [0, 1] image units) in the title. ``terms`` is
    ``DRBNet(...)(x, return_terms=True)`` for one image; ``sharp`` the ``(1, 3, H, W)`` truth;
    ``pixel`` = ``(row, col)`` at full resolution (default: the centre).
    """
    import matplotlib.pyplot as plt
    import torch.nn.functional as F

    n = len(terms)
    H, W = sharp.shape[-2:]
    pr, pc = pixel if pixel is not None else (H // 2, W // 2)
    cols = ["input estimate $x_n$", "kernel $K$ at the pixel", r"dynamic $x_n \otimes K$",
            r"residual $\Delta r_n$", "output $y_n$", "ground truth"]
    fig, axes = plt.subplots(n, len(cols), figsize=(size * len(cols) * 1.05, size * n + 0.4), squeeze=False)
    for i, t in enumerate(terms):
        s = t["scale"]
        truth = F.interpolate(sharp.float(), scale_factor=1 / s, mode="area") if s > 1 else sharp
        r, c = pr // s, pc // s
        panels = [t["estimate_in"], None, t["dynamic"], t["residual"], t["output"], truth]
        for j, p in enumerate(panels):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            title = cols[j] if i == 0 else ""
            if j == 1:
                if t["kernels"] is None:
                    ax.axis("off")
                    continue
                kk = t["kernels"][0, :, r, c].detach().float().cpu()
                k = int(round(kk.numel() ** 0.5))
                kk = kk.reshape(k, k).numpy()
                m = float(np.abs(kk).max()) or 1.0
                ax.imshow(kk, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
                ax.set_title((title + "\n" if title else "") + f"|K| max {m:.2g}", fontsize=7)
                continue
            if p is None:
                ax.axis("off")
                ax.set_title(title + "\n(removed)" if title else "(removed)", fontsize=7)
                continue
            if j in (2, 3):
                v = p[0].detach().float().mean(0).cpu().numpy()
                m = float(np.abs(v).max()) or 1.0
                ax.imshow(v, cmap="RdBu_r", vmin=-m, vmax=m, interpolation="nearest")
                ax.set_title((title + "\n" if title else "") + f"$\\pm${m:.2g}", fontsize=7)
            else:
                ax.imshow(_hwc(p), interpolation="nearest")
                ax.set_title(title, fontsize=7)
                if j == 0:
                    ax.plot([c], [r], "+", color="yellow", ms=6)
        axes[i, 0].set_ylabel(f"scale 1/{s}" if s > 1 else "scale 1", fontsize=8)
    fig.tight_layout()
    return fig
