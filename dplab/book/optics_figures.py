"""Figures of the lens and its blur kernels: the thin-lens ray diagram, CoC-vs-depth curves and
their widget (chapter 1, ``book/thin_lens``), and kernels shown in rows, mosaics and per-cell heat
maps (chapter 2, ``book/dp_psf``: the Butterworth DP PSF of RDPD Sec. 2.2, Eqs. 2-4, against the
calibrated Pixel 4 kernels released by Xin et al., ICCV 2021).

Widgets always come with a static figure beside them: the built HTML has no Python kernel, so
a slider there cannot recompute anything: :func:`coc_explorer` returns the widget, and the
chapter draws a static figure beside it.
"""

from __future__ import annotations

import numpy as np
import torch

from dplab.optics import raytrace
from dplab.optics import thin_lens as optics

__all__ = ["ray_diagram", "plot_coc_curves", "coc_explorer", "show_kernels", "kernel_rows", "kernel_mosaic",
           "grid_heatmap"]


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


def show_kernels(axes, kernels, titles=None, cmap="magma"):
    """Show a row of 2-D kernels (tensors or arrays) without ticks."""
    for i, (ax, k) in enumerate(zip(np.ravel(axes), kernels)):
        k = k.detach().cpu().numpy() if isinstance(k, torch.Tensor) else np.asarray(k)
        ax.imshow(k, cmap=cmap, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if titles:
            ax.set_title(titles[i], fontsize=9)


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

