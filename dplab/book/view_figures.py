"""Figures of the two dual-pixel views: the front/back flip of the DP PSFs (MDP, Abuolaim et al.,
WACV 2022, Fig. 2d), a static grid of the eight NIMAT views (MDP Sec. 4.4) and a "wiggle" between
the left and right views, as an animated GIF and as a browser-side widget.
"""

from __future__ import annotations

import numpy as np
import torch

from dplab.optics.psf import butterworth_dp
from dplab.render.nimat import VIEW_NAMES

__all__ = ["dp_flip_figure", "nimat_grid", "wiggle_gif", "wiggle_widget"]


def dp_flip_figure(radius_px: float = 6.0, size: int = 25, *, figsize=(8.5, 5.2)):
    """MDP Fig. 2d: DP views of a point behind (``r > 0``) and in front (``r < 0``) of the
    focal plane (Butterworth PSFs of :func:`dplab.optics.psf.butterworth_dp`) and their difference
    ``L - R``, whose sign pattern flips between the two cases. Returns the figure."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=figsize)
    cases = ((radius_px, f"behind focus, r = {radius_px:+g} px"),
             (-radius_px, f"in front, r = {-radius_px:+g} px"))
    for row, (r, label) in enumerate(cases):
        left, right = butterworth_dp(r, size=size)[:2]
        diff = left - right
        m = float(diff.abs().max())
        panels = ((left, "left view $I_l$", dict(cmap="magma")),
                  (right, "right view $I_r$", dict(cmap="magma")),
                  (diff, "$I_l - I_r$", dict(cmap="RdBu_r", vmin=-m, vmax=m)))
        for col, (img, title, kw) in enumerate(panels):
            axes[row, col].imshow(img.numpy(), **kw)
            axes[row, col].set_title(f"{title}\n{label}", fontsize=8)
            axes[row, col].set_xticks([])
            axes[row, col].set_yticks([])
    fig.tight_layout()
    return fig


def nimat_grid(views, image=None, names=None, *, gain: float = 2.0, size: float = 2.0, title=None):
    """Static figure of the eight NIMAT views (a 2 x 4 grid), and, when ``image`` is given,
    a second 2 x 4 grid of each view minus half the image (red/blue: where the view is
    brighter/darker), which shows the direction each view moves in.

    Args:
        views: ``(8, C, H, W)`` or ``(1, 8, C, H, W)`` from :func:`dplab.render.nimat.nimat_views`.
        image: the ``(1, C, H, W)`` input, or None.
        names: titles (default :data:`dplab.render.nimat.VIEW_NAMES`).
        gain: brightness factor of the views for display (dplab views carry half the light).
    """
    import matplotlib.pyplot as plt

    v = views[0] if views.ndim == 5 else views
    v = v.detach().float().cpu()
    names = names or VIEW_NAMES
    n = v.shape[0]
    ncols = (n + 1) // 2
    nrows = 2 if image is None else 4
    h, w = v.shape[-2:]
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * w / max(h, w) * 1.1, size * nrows * h / max(h, w) * 1.15),
                             squeeze=False)
    diffs = None
    if image is not None:
        diffs = v - image.detach().float().cpu()[0] / 2
        m = float(diffs.abs().amax()) or 1.0
    for i in range(n):
        ax = axes[i // ncols, i % ncols]
        img = (v[i] * gain).clamp(0, 1).permute(1, 2, 0).numpy()
        ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
        ax.set_title(names[i], fontsize=8)
        if diffs is not None:
            ax2 = axes[2 + i // ncols, i % ncols]
            ax2.imshow(diffs[i].mean(0).numpy(), cmap="RdBu_r", vmin=-m, vmax=m)
            ax2.set_title(f"{names[i]} - image/2", fontsize=8)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def _rgb_uint8(x, scale=1.0) -> np.ndarray:
    """``(C, H, W)`` or ``(1, C, H, W)`` tensor/array in [0, 1] (times ``scale``) -> ``(H, W, 3)`` uint8."""
    a = x.detach().cpu().float().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
    if a.ndim == 4:
        a = a[0]
    if a.ndim == 3 and a.shape[0] in (1, 3):
        a = a.transpose(1, 2, 0)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    return np.clip(np.rint(a * scale * 255.0), 0, 255).astype(np.uint8)


def wiggle_gif(left, right, path, *, scale=2.0, duration_ms=300, upscale=1, labels=True):
    """Write an animated GIF that alternates the left and right DP views (a "wiggle" stereogram).

    Args:
        left, right: the two views, ``(C, H, W)`` or ``(1, C, H, W)``, values in [0, 1/scale].
        path: output file (``.gif``); parent folders are created.
        scale: brightness factor (2 undoes the half brightness of dplab's views).
        duration_ms: display time of each frame.
        upscale: integer nearest-neighbour enlargement, so small disparities are visible.
        labels: write "L" / "R" in the top-left corner of the frames.

    Returns:
        The path, as a ``pathlib.Path``. The GIF loops forever and holds two frames.
    """
    from pathlib import Path

    from PIL import Image, ImageDraw

    frames = []
    for view, name in ((left, "L"), (right, "R")):
        img = Image.fromarray(_rgb_uint8(view, scale))
        if upscale > 1:
            img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
        if labels:
            draw = ImageDraw.Draw(img)
            draw.rectangle((2, 2, 14, 14), fill=(0, 0, 0))
            draw.text((5, 3), name, fill=(255, 255, 255))
        frames.append(img.convert("P", palette=Image.ADAPTIVE, colors=256))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=duration_ms, loop=0,
                   disposal=1)
    return path


def wiggle_widget(left, right, *, scale=2.0, interval_ms=300, width=None):
    """An ipywidgets toggle between the two views that runs in the browser without a kernel.

    A ``Play`` widget and a slider are ``jslink``-ed to the ``selected_index`` of a ``Stack``
    holding the two views as PNG images, so the switching happens client-side and works in the
    static HTML (when the widget state is saved with the page). Returns the widget.
    """
    import io

    import ipywidgets as widgets
    from PIL import Image

    def png(view):
        buf = io.BytesIO()
        Image.fromarray(_rgb_uint8(view, scale)).save(buf, format="PNG")
        return buf.getvalue()

    kw = {} if width is None else {"width": width}
    stack = widgets.Stack([widgets.Image(value=png(left), format="png", **kw),
                           widgets.Image(value=png(right), format="png", **kw)], selected_index=0)
    play = widgets.Play(value=0, min=0, max=1, step=1, interval=interval_ms, repeat=True,
                        description="wiggle")
    slider = widgets.IntSlider(value=0, min=0, max=1, description="0 = L, 1 = R")
    widgets.jslink((play, "value"), (stack, "selected_index"))
    widgets.jslink((play, "value"), (slider, "value"))
    return widgets.VBox([widgets.HBox([play, slider]), stack])

