"""Any dplab network on the real Pixel 4 captures of Xin et al. (ICCV 2021), scored like Table 1.

:func:`score_network_pixel4` runs a network over the released scenes (the central 1008x1344
calibrated field, :func:`dplab.xin.recipe.load_xin_scene`: black level, vignetting-corrected
right view) and scores its all-in-focus estimate with :func:`dplab.xin.recipe.score` under two
protocols (:data:`PROTOCOLS`):

* ``"TABLE1"``: :data:`dplab.xin.protocol.TABLE1`, both images divided by the views' maximum,
  the best integer shift within 6 px, an 8-px border (Table 1 of Xin et al.);
* ``"affine"``: supplement D's alignment, the ground truth warped onto the estimate by one
  affine map per method, found on the first scene and reused on the others
  (:func:`method_affine`), the same 8-px border.

The blurred input ``(left + right) / 2`` (:func:`dplab.xin.recipe.blurred_input`) is scored the
same way on the same scenes, so the gain of the network is always shown beside it.

Networks see the gray raw views through :func:`dplab.eval.zoo.deblur_gray` (replicated to 3
channels, one gain so the 99.5th percentile of ``left + right`` is 0.9, the 3 output channels
averaged): its output has the brightness of ``left + right`` and is multiplied by the scene's
``view_gain`` (1/2) to reach the ground truth's, one view's. The networks were trained on RGB
synthetic data, so this is a test on a domain they never saw (gray, real noise, real PSFs).

Memory: a whole-field forward of the shipped DPDNet (widths 16-32-64-64) adds about 1 GB of
resident memory on a CPU (the whole ten-scene ``python -m dplab evaluate --pixel4`` run peaked at
1.4 GB), well inside a 24 GB machine, so networks run on the whole field by default. A network that does not fit can be run in
overlapping tiles (``tile=``, :class:`TiledMethod`): each tile's central part is kept, and the
result equals the whole-field forward wherever ``overlap`` covers the network's receptive field
(closer to exact the larger the overlap; U-Net receptive fields are large, so tiles are an
approximation for them, not the default).
"""

from __future__ import annotations

import os
import platform
import time
from typing import Callable

import torch

from dplab._validate import require_positive, resolve_device
from dplab.data import pixel4
from dplab.eval.evaluate import method_parameters
from dplab.eval.zoo import NetworkMethod, deblur_gray
from dplab.models.registry import model_inputs
from dplab.ops.radial import radial_distance_map
from dplab.xin import recipe as rx
from dplab.xin.protocol import TABLE1, Protocol, prepare

__all__ = ["PROTOCOLS", "METRICS", "TiledMethod", "method_affine", "machine_info", "score_network_pixel4",
           "summary_rows"]

#: The scoring protocols by name: Table 1's (integer shift) and supplement D's affine alignment.
PROTOCOLS = {"TABLE1": TABLE1, "affine": Protocol(align="affine")}
#: Image metrics of each protocol.
METRICS = ("psnr", "ssim", "mae")


def machine_info() -> dict:
    """Where a measurement ran: date, CPU, cores, torch version and threads, load average.

    Example:
        >>> sorted(machine_info())
        ['cores', 'cpu', 'date', 'load_average', 'threads', 'torch']
    """
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "load_average": [round(v, 2) for v in load]}


def method_affine(s: rx.XinScene, estimate: torch.Tensor, protocol: Protocol):
    """Supplement D's alignment of one method: the affine map found on this (the first) scene.

    Xin et al. align the ground truth to each algorithm's output with one affine transform per
    algorithm, found by OpenCV on one scene and used on every scene (supplement D,
    "Quantitative Metrics"). Pass the result as ``affine=`` to :func:`dplab.xin.recipe.score`.

    Args:
        s: the scene the map is fitted on (with its all-in-focus ground truth).
        estimate: ``(1, 1, H, W)`` the method's all-in-focus estimate at one view's brightness.
        protocol: the :class:`dplab.xin.protocol.Protocol`.

    Returns:
        The ``(2, 3)`` float64 matrix, or None for a protocol that does not align by an affine map.

    Raises:
        TypeError: not a scene or not a protocol.
        ValueError: the scene has no ground truth, or shapes differ.
    """
    if not isinstance(s, rx.XinScene):
        raise TypeError(f"s must be a dplab.xin.recipe.XinScene, got {type(s).__name__}")
    if not isinstance(protocol, Protocol):
        raise TypeError(f"protocol must be a dplab.xin.protocol.Protocol, got {type(protocol).__name__}")
    if protocol.align != "affine":
        return None
    if s.all_in_focus is None:
        raise ValueError(f"scene {s.name!r} has no all-in-focus ground truth to fit the affine map on")
    mx, mean = rx.observation_stats(s)
    _, _, info = prepare(estimate, s.all_in_focus, obs_max=mx, obs_mean=mean, protocol=protocol,
                         downscale=s.downscale)
    return info["affine"]


class TiledMethod:
    """Run a method in overlapping tiles, for a network whose whole-field forward does not fit.

    The image is cut into ``tile x tile`` cores; each core is run with ``overlap`` extra pixels
    on every side (clipped at the image edges) and only its core is kept. Tile origins are
    multiples of ``multiple`` (the network's pooling factor, ``model.multiple`` when there is
    one, else 16), so every tile sees the same pooling grid as the whole image; the result
    equals the whole-field output where ``overlap`` covers the receptive field. Every
    ``(..., H, W)`` tensor of the batch is cut the same way; a network fed the radial map
    (RDPD) gets the whole frame's map, cut too.

    Args:
        method: ``method(batch) -> (B, C, H, W)``.
        tile: core size in pixels, a multiple of ``multiple``.
        overlap: margin in pixels, a multiple of ``multiple`` (0: plain tiles).
        multiple: the tile grid's step (default ``method.model.multiple`` or 16).

    Example:
        >>> conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        >>> f = lambda b: conv(b["combined"])
        >>> x = {"combined": torch.rand(1, 3, 40, 56)}
        >>> with torch.no_grad():
        ...     bool(torch.allclose(TiledMethod(f, 16, 16)(x), f(x), atol=1e-6))
        True
    """

    def __init__(self, method: Callable, tile: int, overlap: int = 32, *, multiple: int | None = None):
        if not callable(method):
            raise TypeError("method must be callable: method(batch) -> (B, C, H, W)")
        model = getattr(method, "model", None)
        m = multiple if multiple is not None else int(getattr(model, "multiple", 16) or 16)
        self.multiple = require_positive("multiple", m, integer=True)
        self.tile = require_positive("tile", tile, integer=True)
        self.overlap = require_positive("overlap", overlap, allow_zero=True, integer=True)
        for name, v in (("tile", self.tile), ("overlap", self.overlap)):
            if v % self.multiple:
                raise ValueError(f"{name} ({v}) must be a multiple of {self.multiple} (the network's pooling "
                                 "factor), e.g. 256 for tile and 32 for overlap")
        self.method, self.model = method, model
        self.__name__ = getattr(method, "__name__", type(method).__name__)

    def _with_radial(self, batch: dict, H: int, W: int, ref: torch.Tensor) -> dict:
        kind = getattr(self.method, "kind", None)
        if kind is None or "radial" in batch:
            return batch
        if "radial" not in model_inputs(kind, getattr(self.model, "in_channels", None)):
            return batch
        radial = radial_distance_map(H, W, dtype=ref.dtype, device=ref.device)
        return {**batch, "radial": radial.expand(*ref.shape[:-3], 1, H, W)}

    def __call__(self, batch: dict) -> torch.Tensor:
        ref = next((v for k in ("left", "combined") if torch.is_tensor(v := batch.get(k))), None)
        if ref is None:
            raise KeyError(f"TiledMethod needs a 'left' or 'combined' tensor in the batch (keys: {sorted(batch)})")
        H, W = ref.shape[-2:]
        if H <= self.tile and W <= self.tile:
            return self.method(batch)
        batch = self._with_radial(batch, H, W, ref)
        t, o, out = self.tile, self.overlap, None
        for y0 in range(0, H, t):
            y1, a0 = min(y0 + t, H), max(0, y0 - o)
            a1 = min(H, y1 + o)
            for x0 in range(0, W, t):
                x1, b0 = min(x0 + t, W), max(0, x0 - o)
                b1 = min(W, x1 + o)
                sub = {k: v[..., a0:a1, b0:b1] if torch.is_tensor(v) and v.dim() >= 2 and tuple(v.shape[-2:]) == (H, W)
                       else v for k, v in batch.items()}
                y = self.method(sub)
                if out is None:
                    out = y.new_empty(*y.shape[:-2], H, W)
                out[..., y0:y1, x0:x1] = y[..., y0 - a0:y1 - a0, x0 - b0:x1 - b0]
        return out


def _protocols(protocols) -> dict[str, Protocol]:
    if isinstance(protocols, (str, Protocol)):
        protocols = (protocols,)
    out = {}
    for p in protocols:
        if isinstance(p, Protocol):
            out[p.describe()] = p
        elif p in PROTOCOLS:
            out[p] = PROTOCOLS[p]
        else:
            raise ValueError(f"protocols must name entries of {sorted(PROTOCOLS)} (or be "
                             f"dplab.xin.protocol.Protocol objects), got {p!r}")
    if not out:
        raise ValueError(f"protocols is empty; use e.g. {tuple(PROTOCOLS)}")
    return out


def _scene_names(scenes, data_dir) -> list[str]:
    available = pixel4.list_scenes(data_dir)              # DatasetNotFoundError names the path
    if scenes is None:
        if not available:
            raise ValueError(f"no scene in {pixel4.NAME} under the data directory {data_dir or '$DPLAB_DATA'}")
        return available
    names = [scenes] if isinstance(scenes, str) else list(scenes)
    if not names or not all(isinstance(n, str) for n in names):
        raise ValueError(f"scenes must be a non-empty list of scene ids such as ['001', '002'], got {scenes!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"scenes lists a scene twice: {names}")
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"scenes {missing} are not in the data directory (available: {', '.join(available)})")
    return names


def _report(progress) -> Callable[[str], None]:
    if progress is None or progress is False:
        return lambda msg: None
    if progress is True:
        return lambda msg: print(msg, flush=True)
    if callable(progress):
        return progress
    raise TypeError(f"progress must be None, a bool or a callable taking a message, got {type(progress).__name__}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _mean(per_scene: dict, key: str) -> dict:
    rows = [r[key] for r in per_scene.values()]
    return {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}


def score_network_pixel4(method, *, data_dir=None, scenes=None, protocols=("TABLE1", "affine"), crop=None,
                         downscale: int = 1, device="cpu", tile: int | None = None, overlap: int = 64,
                         warmup: bool = True, name: str | None = None, progress=None) -> dict:
    """Run a network on the real Pixel 4 scenes and score it (and the blurred input) like Table 1.

    For each scene (:func:`dplab.xin.recipe.load_xin_scene`): the network's estimate
    ``deblur_gray(method, left, right) * view_gain`` and the blurred input ``(left + right) / 2``
    are scored by :func:`dplab.xin.recipe.score` under every protocol; an affine protocol uses
    the method's map found on the first scene for every scene (:func:`method_affine`, supplement
    D), one map for the network and one for the blurred input. Inference is timed per scene
    (after one untimed warm-up forward on the first scene when ``warmup``); loading and scoring
    are not.

    Args:
        method: a network (an ``nn.Module`` with a dplab spec, moved to ``device``, put in eval
            mode and fed by :class:`dplab.eval.zoo.NetworkMethod`) or a method
            ``method(batch) -> (1, 3, H, W)`` (already on ``device``).
        data_dir: the folder holding ``xin_pixel4_dp/`` (default ``$DPLAB_DATA``).
        scenes: scene ids (default: every released scene present).
        protocols: names of :data:`PROTOCOLS` or :class:`dplab.xin.protocol.Protocol` objects.
        crop, downscale: passed to :func:`dplab.xin.recipe.load_xin_scene` for tests and quick
            looks (default: the whole 1008x1344 field, Table 1's size).
        device: where the network runs (``"auto"``, ``"cpu"``, ``"cuda"``...).
        tile, overlap: run the method in overlapping tiles (:class:`TiledMethod`) when set.
        warmup: one untimed forward on the first scene before timing.
        name: the method's label (default its ``__name__`` or the network's registry name).
        progress: None/False (silent), True (print a line per scene) or ``callable(message)``.

    Returns:
        ``{"method", "params", "scenes", "crop", "downscale", "image_hw", "device", "tile",
        "protocols" (name -> description), "input" and "network": {"label", "per_scene":
        {scene: {protocol: metrics}}, "mean": {protocol: metrics}, "affine": {protocol: (2, 3)
        list or None}, "seconds": {scene: s}, "seconds_per_scene"}, "gain": {protocol: network
        mean - input mean}}``; metrics are ``psnr``, ``ssim``, ``mae``.

    Raises:
        DatasetNotFoundError: no data directory or no release in it (names the path).
        ValueError: unknown scenes or protocols, bad crop/downscale/tile, a scored window whose
            ground truth has no variance (:func:`dplab.xin.recipe.score`).
        TypeError: a method that is neither callable nor a network.

    Example:
        >>> score_network_pixel4(lambda b: b["combined"], data_dir="/nonexistent")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        dplab.data.manifest.DatasetNotFoundError: dataset 'xin_pixel4_dp' not found at /nonexistent/xin_pixel4_dp...
    """
    dev = resolve_device(device)
    if isinstance(method, torch.nn.Module):
        method = NetworkMethod(method.to(dev).eval())    # ValueError: no dplab spec
    if not callable(method):
        raise TypeError(f"method must be a dplab network or a callable method(batch), got {type(method).__name__}")
    label = name or getattr(method, "kind", None) or getattr(method, "__name__", type(method).__name__)
    params = method_parameters(method)
    if tile is not None:
        method = TiledMethod(method, tile, overlap)
    protos = _protocols(protocols)
    report = _report(progress)
    names = _scene_names(scenes, data_dir)
    rows = {k: {"label": lab, "per_scene": {}, "affine": {}, "seconds": {}}
            for k, lab in (("input", "blurred input"), ("network", label))}
    hw, maps = None, {}
    for i, scene in enumerate(names):
        s = rx.load_xin_scene(scene, data_dir, crop=crop, downscale=downscale)
        hw = list(s.image_hw)
        left, right = s.left.to(dev), s.right.to(dev)
        if i == 0 and warmup:
            deblur_gray(method, left, right)
        _sync(dev)
        t0 = time.perf_counter()
        out = deblur_gray(method, left, right)
        _sync(dev)
        t1 = time.perf_counter()
        est = {"network": out.cpu().float() * s.view_gain}
        t2 = time.perf_counter()
        est["input"] = rx.blurred_input(s)
        rows["input"]["seconds"][scene] = time.perf_counter() - t2
        rows["network"]["seconds"][scene] = t1 - t0
        for key, x in est.items():
            per = {}
            for pname, proto in protos.items():
                if i == 0:
                    maps[key, pname] = method_affine(s, x, proto)
                    rows[key]["affine"][pname] = None if maps[key, pname] is None else maps[key, pname].tolist()
                per[pname] = rx.score(s, x, protocol=proto, affine=maps[key, pname])
            rows[key]["per_scene"][scene] = per
        first = next(iter(protos))
        n, b = rows["network"]["per_scene"][scene][first], rows["input"]["per_scene"][scene][first]
        report(f"{scene}: {label} PSNR {n['psnr']:.2f} dB, blurred input {b['psnr']:.2f} dB ({first}); "
               f"{t1 - t0:.2f} s")
    for r in rows.values():
        r["mean"] = {p: _mean(r["per_scene"], p) for p in protos}
        r["seconds_per_scene"] = sum(r["seconds"].values()) / len(names)
    gain = {p: {k: rows["network"]["mean"][p][k] - rows["input"]["mean"][p][k] for k in METRICS} for p in protos}
    return {"method": label, "params": params, "scenes": names, "crop": crop, "downscale": downscale,
            "image_hw": hw, "device": str(dev), "warmup": bool(warmup),
            "tile": None if tile is None else {"tile": tile, "overlap": overlap},
            "protocols": {p: proto.describe() for p, proto in protos.items()}, **rows, "gain": gain}


def summary_rows(result: dict) -> list[dict]:
    """The two rows of a :func:`score_network_pixel4` result (blurred input, network) as flat dicts:
    ``{"method", "<protocol>_<metric>"..., "seconds"}``, for :func:`dplab.eval.tables.format_table`.

    Example:
        >>> r = {"protocols": {"TABLE1": ""}, "input": {"label": "blurred input", "seconds_per_scene": 0.0,
        ...      "mean": {"TABLE1": {"psnr": 24.0, "ssim": 0.7, "mae": 0.04}}},
        ...      "network": {"label": "dpdnet", "seconds_per_scene": 3.0,
        ...      "mean": {"TABLE1": {"psnr": 25.0, "ssim": 0.8, "mae": 0.03}}}}
        >>> summary_rows(r)[1]
        {'method': 'dpdnet', 'TABLE1_psnr': 25.0, 'TABLE1_ssim': 0.8, 'TABLE1_mae': 0.03, 'seconds': 3.0}
    """
    out = []
    for key in ("input", "network"):
        r = result[key]
        row = {"method": r["label"]}
        for p in result["protocols"]:
            row.update({f"{p}_{k}": r["mean"][p][k] for k in METRICS})
        row["seconds"] = r["seconds_per_scene"]
        out.append(row)
    return out
