"""Figure helpers and widgets for the book.

Widgets always come with a static figure beside them: the built HTML has no Python kernel, so
a slider there cannot recompute anything. :func:`coc_explorer` returns both.
"""

from __future__ import annotations

import numpy as np
import torch

from dplab.optics import thin_lens as optics

from dplab.optics import raytrace

__all__ = ["ray_diagram", "plot_coc_curves", "spot_image", "coc_explorer", "show_kernels"]


def ray_diagram(ax, *, depth, focal_length=1.0, f_number=1.0, focus_distance=3.0, n_rays=7, half=None):
    """Draw a thin-lens ray diagram: rays from an on-axis point at ``depth`` to the sensor.

    Lengths are in one arbitrary unit; the lens sits at z = 0 and light travels towards +z.
    Rays through the x < 0 half of the aperture are drawn in blue, the x > 0 half in orange;
    ``half`` ("neg" or "pos") draws only one half, as one photodiode of a dual pixel sees it
    ("pos": the left photodiodes, "neg": the right ones, as in :mod:`dplab.optics.raytrace`).
    Returns the signed spot radius from the ray geometry.
    """
    q = focal_length / f_number
    sensor = optics.sensor_distance(focal_length, focus_distance)
    image = focal_length * depth / (depth - focal_length)
    xs = np.linspace(-1, 1, n_rays)
    if half == "neg":
        xs = xs[xs <= 0]
    elif half == "pos":
        xs = xs[xs >= 0]
    points = torch.tensor(np.stack([xs, np.zeros_like(xs)], 1))
    hits = raytrace.trace_to_sensor(points, depth, focal_length, f_number, focus_distance)[:, 0].numpy()
    for x, hit in zip(xs, hits):
        colour = "tab:blue" if x < 0 else "tab:orange" if x > 0 else "0.4"
        a = x * q / 2
        ax.plot([-depth, 0], [0, a], color=colour, lw=0.8)
        z_end = max(sensor, image) * 1.08
        slope = (hit - a) / sensor
        ax.plot([0, z_end], [a, a + slope * z_end], color=colour, lw=0.8, alpha=0.35)
        ax.plot([0, sensor], [a, hit], color=colour, lw=1.2)
    ax.plot([0, 0], [-q * 0.75, q * 0.75], color="k", lw=2)
    ax.annotate("", xy=(0, q * 0.8), xytext=(0, q * 0.6), arrowprops=dict(arrowstyle="<->", lw=0.6))
    ax.axvline(sensor, color="0.3", lw=2)
    ax.axvline(-focus_distance, color="0.6", ls=":", lw=1)
    ax.plot([-depth], [0], "ko", ms=4)
    ax.plot([image], [0], "x", color="crimson", ms=6)
    ax.text(-focus_distance, q * 0.68, "focal plane", ha="center", fontsize=8, color="0.4")
    ax.text(sensor, q * 0.68, "sensor", ha="center", fontsize=8)
    ax.set_yticks([])
    ax.set_xlabel("z (lens at 0)")
    return raytrace.spot_radius(depth, focal_length, f_number, focus_distance)


def plot_coc_curves(ax, cameras, depths_m, *, labels=None, generator=False):
    """Signed CoC radius in pixels against depth for each :class:`dplab.optics.thin_lens.Camera`.

    With ``generator=True`` the RDPD generator's rounded and clipped mapping is drawn dashed
    beside each curve (the cameras must then be :data:`dplab.optics.thin_lens.RDPD_CAMERA_SETS`).
    """
    depths = torch.as_tensor(depths_m, dtype=torch.float64)
    for i, cam in enumerate(cameras):
        label = labels[i] if labels else f"f={cam.focal_length_mm:g} mm, N={cam.f_number:g}, s={cam.focus_distance_m:g} m"
        (line,) = ax.plot(depths, cam.coc_px(depths), label=label)
        if generator:
            ax.plot(depths, optics.rdpd_generator_coc_px(depths, i), ls="--", lw=0.8, color=line.get_color())
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("depth (m)")
    ax.set_ylabel("signed CoC radius (px)")


def spot_image(hits: torch.Tensor, extent: float, bins: int = 41) -> np.ndarray:
    """2-D histogram of sensor hits on a ``bins x bins`` grid over ``[-extent, extent]^2``,
    normalised to sum 1: the PSF that the traced rays paint on the sensor. Rows are y."""
    h, _, _ = np.histogram2d(
        hits[:, 1].numpy(), hits[:, 0].numpy(), bins=bins, range=[[-extent, extent], [-extent, extent]]
    )
    return h / max(h.sum(), 1)


def show_kernels(axes, kernels, titles=None, cmap="magma"):
    """Show a row of 2-D kernels (tensors or arrays) without ticks."""
    for i, (ax, k) in enumerate(zip(np.ravel(axes), kernels)):
        k = k.detach().cpu().numpy() if isinstance(k, torch.Tensor) else np.asarray(k)
        ax.imshow(k, cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=9)


def coc_explorer(depths_m=None, *, pixel_pitch_um=1.4, focal_length_mm=4.4, f_number=1.7, focus_distance_m=1.0):
    """An ipywidgets explorer of the CoC-vs-depth curve (focal length, f-number, focus distance).

    Defaults are a Pixel-4-like phone camera. Returns the widget; the caller shows a static
    figure beside it for readers of the HTML, where no kernel runs.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    depths = np.geomspace(0.1, 20, 300) if depths_m is None else np.asarray(depths_m)
    f = widgets.FloatSlider(value=focal_length_mm, min=2, max=100, step=0.5, description="f (mm)")
    n = widgets.FloatSlider(value=f_number, min=1.0, max=22, step=0.1, description="N")
    s = widgets.FloatSlider(value=focus_distance_m, min=0.2, max=10, step=0.1, description="focus (m)")
    out = widgets.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(6, 3))
            if s.value * 1000 <= f.value:
                ax.text(0.5, 0.5, "focus distance must exceed the focal length", ha="center", transform=ax.transAxes)
            else:
                cam = optics.Camera(f.value, n.value, s.value, pixel_pitch_um)
                ax.semilogx(depths, cam.coc_px(torch.as_tensor(depths)))
                ax.axhline(0, color="k", lw=0.5)
                ax.axvline(s.value, color="0.6", ls=":")
                ax.set_xlabel("depth (m)")
                ax.set_ylabel(f"CoC radius (px of {pixel_pitch_um} um)")
            plt.show()

    for w in (f, n, s):
        w.observe(redraw, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([f, n, s]), out])


# ----------------------------------------------------------------------------- chapter 2 helpers
def kernel_rows(kernels, row_labels, col_titles=None, *, cmap="magma", size=1.5, profile=False,
                profile_labels=None, profile_reference=None):
    """A grid of 2-D kernels, one row per list in ``kernels``, each panel scaled to its own max.

    Args:
        kernels: list of rows, each a list of 2-D tensors/arrays (rows may differ in length).
        row_labels: one label per row, written left of the row.
        col_titles: optional list of rows of titles (same nesting as ``kernels``).
        cmap: colour map.
        size: panel size in inches.
        profile: add a last column with each row's kernels cut through the centre row
            (one line per kernel, labelled by its title).
        profile_labels: legend labels for the profile lines, shared by all rows (default: the
            row's titles).
        profile_reference: optional list of kernels (e.g. the measured ones) whose centre rows
            are drawn dashed, in the same colours, in every other row's profile panel; the
            profile panels then share one y scale.

    Returns:
        ``(fig, axes)`` with ``axes`` of shape ``(rows, columns)``.
    """
    import matplotlib.pyplot as plt

    n_rows = len(kernels)
    n_cols = max(len(r) for r in kernels) + int(profile)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(size * n_cols + 0.6 * profile * size, size * n_rows + 0.3),
                             squeeze=False)
    for i, row in enumerate(kernels):
        titles = col_titles[i] if col_titles else None
        for j in range(n_cols):
            ax = axes[i, j]
            if j < len(row):
                k = row[j].detach().cpu().numpy() if isinstance(row[j], torch.Tensor) else np.asarray(row[j])
                ax.imshow(k, cmap=cmap, interpolation="nearest", vmin=min(0.0, float(k.min())))
                ax.set_xticks([])
                ax.set_yticks([])
                if titles and j < len(titles) and titles[j]:
                    ax.set_title(titles[j], fontsize=8)
            elif profile and j == n_cols - 1:
                for m, k in enumerate(row):
                    k = k.detach().cpu().numpy() if isinstance(k, torch.Tensor) else np.asarray(k)
                    x = np.arange(k.shape[-1]) - k.shape[-1] // 2
                    names = profile_labels or titles
                    label = names[m] if names and m < len(names) else None
                    (line,) = ax.plot(x, k[k.shape[0] // 2], lw=1, label=label)
                    if profile_reference is not None and row is not profile_reference and m < len(profile_reference):
                        ref = profile_reference[m]
                        ref = ref.detach().cpu().numpy() if isinstance(ref, torch.Tensor) else np.asarray(ref)
                        ax.plot(np.arange(ref.shape[-1]) - ref.shape[-1] // 2, ref[ref.shape[0] // 2], ls="--",
                                lw=0.8, color=line.get_color())
                ax.tick_params(labelsize=6)
                ax.set_yticks([])
                ax.set_title("centre row", fontsize=8)
                if profile_labels or titles:
                    ax.legend(fontsize=5, frameon=False, handlelength=1)
            else:
                ax.axis("off")
        axes[i, 0].set_ylabel(row_labels[i], fontsize=9)
    if profile and profile_reference is not None:
        top = max(axes[i, -1].get_ylim()[1] for i in range(n_rows))
        for i in range(n_rows):
            axes[i, -1].set_ylim(0, top)
    fig.tight_layout()
    return fig, axes


def kernel_mosaic(kernels, grid_shape, *, pad=2):
    """Tile ``(N, K, K)`` kernels row-major into one image over a ``grid_shape`` grid.

    Each kernel is divided by the largest value of the whole stack, so brightness is comparable
    across cells; gaps of ``pad`` pixels are NaN (shown as the axes background).

    Returns:
        A float numpy array of shape ``(rows * (K + pad) - pad, cols * (K + pad) - pad)``.

    Example:
        >>> kernel_mosaic(torch.ones(6, 3, 3), (2, 3)).shape
        (8, 13)
    """
    k = kernels.detach().cpu().numpy() if isinstance(kernels, torch.Tensor) else np.asarray(kernels)
    rows, cols = grid_shape
    if k.shape[0] != rows * cols:
        raise ValueError(f"{k.shape[0]} kernels do not fill a {rows}x{cols} grid")
    kh, kw = k.shape[-2:]
    out = np.full((rows * (kh + pad) - pad, cols * (kw + pad) - pad), np.nan)
    k = k / k.max()
    for i in range(rows * cols):
        r, c = divmod(i, cols)
        out[r * (kh + pad):r * (kh + pad) + kh, c * (kw + pad):c * (kw + pad) + kw] = k[i]
    return out


def grid_heatmap(ax, values, grid_shape, *, vmin=None, vmax=None, cmap="viridis", fmt="{:.3f}", title=None):
    """Heat map of one value per calibration cell, each cell annotated with ``fmt``.

    ``values`` is a length ``rows * cols`` sequence in row-major order (NaN cells stay blank).
    Returns the ``AxesImage`` (for a colour bar).
    """
    v = np.asarray(values, dtype=float).reshape(grid_shape)
    im = ax.imshow(v, cmap=cmap, vmin=vmin, vmax=vmax, interpolation="nearest")
    lo = np.nanmin(v) if vmin is None else vmin
    hi = np.nanmax(v) if vmax is None else vmax
    for (r, c), x in np.ndenumerate(v):
        if np.isfinite(x):
            light = (x - lo) < 0.55 * (hi - lo) if hi > lo else False
            ax.text(c, r, fmt.format(x), ha="center", va="center", fontsize=6.5,
                    color="white" if light else "black")
    ax.set_xticks(range(grid_shape[1]))
    ax.set_yticks(range(grid_shape[0]))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("grid column")
    ax.set_ylabel("grid row")
    if title:
        ax.set_title(title, fontsize=9)
    return im


__all__ += ["kernel_rows", "kernel_mosaic", "grid_heatmap"]


# ----------------------------------------------------------------------------- MDP chapter
# Figures of the MDP chapter (Abuolaim, Afifi & Brown, WACV 2022): the front/back flip of
# Fig. 2d and a static grid of the eight NIMAT views (training lives in dplab.training.mdp).

def dp_flip_figure(radius_px: float = 6.0, size: int = 25, *, figsize=(8.5, 5.2)):
    """MDP Fig. 2d: DP views of a point behind (``r > 0``) and in front (``r < 0``) of the
    focal plane (Butterworth PSFs of :func:`dplab.optics.psf.butterworth_dp`) and their difference
    ``L - R``, whose sign pattern flips between the two cases. Returns the figure."""
    import matplotlib.pyplot as plt

    from dplab.optics.psf import butterworth_dp

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

    from dplab.render.nimat import VIEW_NAMES

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


__all__ += ["dp_flip_figure", "nimat_grid"]


# --- DRBNet chapter (book/drbnet) -----------------------------------------------------------
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


__all__ += ["image_grid", "drb_terms_figure"]


# ----------------------------------------------------------------------------- chapter 3 helpers
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


def aperture_reference(layers, *, samples_per_px=2.0, half=None, chunk=32):
    """Defocused image of a stack of flat layers, averaging pinhole views over the aperture.

    A slow reference that handles occlusion exactly for a thin lens with a uniform disc
    aperture: the aperture point ``u`` (uniform in the unit disc) sees each layer shifted by
    ``r u`` pixels (``r`` its signed CoC radius), nearer layers hide farther ones with their
    hard masks, and the image is the mean of these views. Unlike a layered renderer it needs
    every layer's full content, also where a nearer layer hides it. Shifts are bilinear.

    Args:
        layers: back to front, a list of ``(colour (1, C, H, W), mask (1, 1, H, W) or None,
            coc_px)``; the first (farthest) layer should cover the frame (mask None).
        samples_per_px: aperture samples per pixel of the largest shift, per axis.
        half: None (whole aperture), ``"pos"`` (``u_x > 0``) or ``"neg"`` (``u_x < 0``).
        chunk: aperture samples per batched ``grid_sample`` call.

    Returns:
        ``(1, C, H, W)`` float32 image.
    """
    import torch.nn.functional as F

    rmax = max(abs(float(r)) for _, _, r in layers)
    n = max(1, int(np.ceil(samples_per_px * rmax)))
    g = torch.arange(-n, n + 1, dtype=torch.float64) / n
    uy, ux = torch.meshgrid(g, g, indexing="ij")
    keep = ux ** 2 + uy ** 2 <= 1.0
    if half == "pos":
        keep &= ux > 0
    elif half == "neg":
        keep &= ux < 0
    us = torch.stack([ux[keep], uy[keep]], 1).float()
    _, C, H, W = layers[0][0].shape
    ys = torch.arange(H, dtype=torch.float32).reshape(1, -1, 1)
    xs = torch.arange(W, dtype=torch.float32).reshape(1, 1, -1)
    acc = torch.zeros(1, C, H, W, dtype=torch.float64)
    stacks = [torch.cat([c.float().cpu(), (torch.ones_like(c[:, :1]) if m is None else m).float().cpu()], 1)
              for c, m, _ in layers]
    for u in us.split(chunk):
        out = None
        for x, (_, _, r) in zip(stacks, layers):
            dx = (float(r) * u[:, 0]).reshape(-1, 1, 1)
            dy = (float(r) * u[:, 1]).reshape(-1, 1, 1)
            grid = torch.stack(torch.broadcast_tensors((2 * (xs - dx) + 1) / W - 1,
                                                       (2 * (ys - dy) + 1) / H - 1), -1)
            v = F.grid_sample(x.expand(u.shape[0], -1, -1, -1), grid, mode="bilinear",
                              padding_mode="border", align_corners=False)
            col, a = v[:, :C], v[:, C:]
            out = col if out is None else a * col + (1 - a) * out
        acc += out.double().sum(0, keepdim=True)
    return (acc / us.shape[0]).float()


def edge_band(labels, radius, *, border=None):
    """Pixels within ``radius`` (Chebyshev) of a change of ``labels`` ``(H, W)``, away from the frame.

    Returns ``(band, flat)``: boolean ``(H, W)`` tensors of the band and of the rest, both
    without the outer ``border`` pixels (default ``radius``).
    """
    import torch.nn.functional as F

    lab = torch.as_tensor(labels)
    edge = torch.zeros(lab.shape, dtype=torch.bool)
    e = lab[:, 1:] != lab[:, :-1]
    edge[:, 1:] |= e
    edge[:, :-1] |= e
    e = lab[1:] != lab[:-1]
    edge[1:] |= e
    edge[:-1] |= e
    r = int(radius)
    band = F.max_pool2d(edge[None, None].float(), 2 * r + 1, 1, r)[0, 0] > 0
    b = r if border is None else int(border)
    inner = torch.zeros_like(band)
    inner[b:lab.shape[0] - b, b:lab.shape[1] - b] = True
    return band & inner, ~band & inner


def horizontal_shift(a, b, mask=None, max_shift=20):
    """Sub-pixel horizontal shift ``s`` (px) with ``a(x) ~ b(x - s)``, by normalised correlation.

    ``a``, ``b``: 2-D arrays or tensors (e.g. the left and right view); ``mask``: boolean
    ``(H, W)`` of the pixels to compare. The zero-mean normalised correlation is evaluated at
    integer shifts ``-max_shift .. max_shift`` and refined by a parabola through the peak.
    Positive: ``a`` is ``b`` moved to the right.

    Example:
        >>> x = np.random.default_rng(0).random((8, 64))
        >>> round(horizontal_shift(np.roll(x, 3, axis=1), x, max_shift=5), 6)
        3.0
    """
    a = np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().cpu() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    m = np.ones(a.shape, bool) if mask is None else np.asarray(mask, bool)
    shifts = np.arange(-max_shift, max_shift + 1)
    scores = []
    for s in shifts:
        mm = m & np.roll(m, s, axis=1)
        x, y = a[mm], np.roll(b, s, axis=1)[mm]
        x, y = x - x.mean(), y - y.mean()
        scores.append((x * y).sum() / max(np.sqrt((x * x).sum() * (y * y).sum()), 1e-300))
    scores = np.array(scores)
    k = int(np.argmax(scores))
    off = 0.0
    if 0 < k < len(shifts) - 1:
        lo, c, hi = scores[k - 1:k + 2]
        den = lo - 2 * c + hi
        off = 0.5 * (lo - hi) / den if den != 0 else 0.0
    return float(shifts[k] + off)


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


__all__ += ["wiggle_gif", "wiggle_widget", "aperture_reference", "edge_band", "horizontal_shift",
            "panel_grid"]


def markdown_table(rows, columns, *, headers=None, formats=None, missing="–") -> str:
    """A list of dict rows as a Markdown table (for ``IPython.display.Markdown``).

    Args:
        rows: dicts holding the ``columns`` keys.
        columns: keys, in column order.
        headers: column titles (default the keys).
        formats: ``{key: format spec or callable}`` (e.g. ``{"psnr": ".2f"}``); other values
            are printed with ``str``.
        missing: text for a missing or None value.

    Example:
        >>> print(markdown_table([{"m": "a", "psnr": 20.123}, {"m": "b", "psnr": None}], ["m", "psnr"],
        ...                      formats={"psnr": ".1f"}))
        | m | psnr |
        | --- | --- |
        | a | 20.1 |
        | b | – |
    """
    columns = list(columns)
    if not columns:
        raise ValueError("columns is empty")
    headers = list(headers) if headers is not None else columns
    if len(headers) != len(columns):
        raise ValueError(f"headers has {len(headers)} entries for {len(columns)} columns")
    formats = dict(formats or {})

    def cell(row, key):
        value = row.get(key) if isinstance(row, dict) else None
        if value is None:
            return missing
        fmt = formats.get(key)
        if callable(fmt):
            return str(fmt(value))
        return format(value, fmt) if fmt else str(value)

    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    lines += ["| " + " | ".join(cell(r, k) for k in columns) + " |" for r in rows]
    return "\n".join(lines)


__all__ += ["markdown_table"]
