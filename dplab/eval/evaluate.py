"""Run a method over a dataset and tabulate PSNR, SSIM, MAE, time per image and parameters.

The protocol follows DPDD's evaluation (the DPDNet authors' code, ``metrics.py``): full images, one at a time, predictions clipped to [0, 1] (as a saved 16-bit result would be),
metrics from :mod:`dplab.metrics.image` on float images in [0, 1], averaged over images. Networks
with ``k`` poolings need sizes divisible by ``2**k``; ``crop_multiple`` crops input and ground
truth to the top-left multiple, as DRBNet's test code does (``crop_image``, multiple 16).

A *method* is a :class:`torch.nn.Module` or any callable; it gets the sample dict with a batch
dimension (``(1, C, H, W)`` tensors on ``device``) and returns the sharp estimate
``(1, 3, H, W)`` (or a dict holding it under ``output_key``). The book's networks are fed
as their registry entry declares by :class:`dplab.eval.zoo.NetworkMethod`; classical methods
(Wiener deconvolution, the MPI optimisation) are wrapped the same way.
"""

from __future__ import annotations

import time
from typing import Callable, Mapping

import torch

from dplab.metrics import image as _metrics
from dplab.eval.tables import format_table
from dplab.models.registry import count_parameters

__all__ = ["Table", "method_parameters", "evaluate", "compare"]

METRICS = ("psnr", "ssim", "mae")


def method_parameters(method) -> int | None:
    """Number of parameters of a method: of a module, of ``method.model`` (e.g.
    :class:`dplab.eval.zoo.NetworkMethod`) or of ``method.parameters()``
    (:func:`dplab.models.registry.count_parameters`); None for a method without parameters.

    Example:
        >>> method_parameters(torch.nn.Conv2d(3, 3, 3))
        84
        >>> method_parameters(lambda batch: batch["combined"]) is None
        True
    """
    target = method if isinstance(method, torch.nn.Module) else getattr(method, "model", None)
    if isinstance(target, torch.nn.Module):
        return count_parameters(target)
    params = getattr(method, "parameters", None)
    if callable(params):
        return sum(p.numel() for p in params())
    return None


class Table(list):
    """A list of dict rows; for :func:`evaluate`, one per image and a final ``"mean"`` row.

    Attributes:
        method: the method's name.
        params: its parameter count (None for parameter-free methods).
        columns: column order for printing.
    """

    def __init__(self, rows=(), *, method: str = "", params: int | None = None, columns: list[str] | None = None):
        super().__init__(rows)
        self.method, self.params, self.columns = method, params, columns

    @property
    def mean(self) -> dict:
        """The ``"mean"`` row."""
        for row in reversed(self):
            if row.get("image") == "mean":
                return row
        raise KeyError("this table has no 'mean' row")

    def format(self, floatfmt: str = ".4f") -> str:
        """Pretty plain-text rendering."""
        params = "n/a" if self.params is None else f"{self.params:,}"
        head = f"{self.method}  (parameters: {params})\n" if self.method else ""
        return head + format_table(list(self), self.columns, floatfmt=floatfmt)

    def __str__(self) -> str:
        return self.format()

    def to_dict(self) -> dict:
        """JSON-ready ``{"method", "params", "rows"}``."""
        return {"method": self.method, "params": self.params, "rows": [dict(r) for r in self]}


def _crop(sample: dict, multiple: int | None) -> dict:
    if not multiple:
        return sample
    out = {}
    for key, value in sample.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 3:
            h, w = value.shape[-2:]
            out[key] = value[..., : h - h % multiple, : w - w % multiple]
        else:
            out[key] = value
    return out


def _batched(sample: dict, device: torch.device) -> dict:
    return {k: (v.unsqueeze(0).to(device) if isinstance(v, torch.Tensor) else v) for k, v in sample.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def evaluate(
    method: Callable,
    dataset,
    *,
    name: str | None = None,
    target_key: str = "sharp",
    output_key: str = "sharp",
    device: str | torch.device = "cpu",
    crop_multiple: int | None = None,
    clip: bool = True,
    max_images: int | None = None,
    warmup: int = 1,
    progress: bool = False,
    lpips: Callable | None = None,
) -> Table:
    """Run ``method`` over ``dataset`` and return per-image PSNR, SSIM, MAE and time.

    Args:
        method: a module (put in eval mode) or callable ``method(batch) -> (1, 3, H, W)``.
        dataset: items are sample dicts of ``(C, H, W)`` tensors with ``target_key`` and
            ``"name"`` (any dplab dataset class).
        name: the method's name in the table (default: its class or function name).
        target_key: key of the ground truth.
        output_key: key of the estimate when the method returns a dict.
        device: where the method runs.
        crop_multiple: crop inputs and ground truth to a multiple of this (top-left).
        clip: clip estimates to [0, 1] before measuring.
        max_images: evaluate only the first images.
        warmup: untimed runs on the first image before timing (CUDA kernels, caches).
        progress: show a progress bar.
        lpips: optional LPIPS metric (e.g. :func:`dplab.metrics.lpips.load_lpips`), or any callable
            ``lpips(pred, target) -> (1,)`` on images in [0, 1]; adds an ``"lpips"`` column
            (computed after timing, on ``device``). Default None: no LPIPS column.

    Returns:
        A :class:`Table`: rows ``{"image", "psnr", "ssim", "mae", "time_s"}`` (plus
        ``"lpips"`` after ``"mae"`` when given) and a final ``"mean"`` row; ``table.params``
        is the parameter count.

    Raises:
        KeyError: a sample lacks ``target_key`` (or the method's dict lacks ``output_key``).
        ValueError: the estimate's shape differs from the ground truth's, or the dataset is empty.

    Example:
        >>> data = [{"name": "a", "combined": torch.full((3, 8, 8), 0.5), "sharp": torch.full((3, 8, 8), 0.6)}]
        >>> table = evaluate(lambda b: b["combined"], data, name="identity")
        >>> round(table.mean["psnr"], 3), table.mean["image"]
        (20.0, 'mean')
    """
    from tqdm.auto import tqdm

    device = torch.device(device)
    count = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if count == 0:
        raise ValueError("the dataset is empty")
    if isinstance(method, torch.nn.Module):
        method = method.to(device).eval()
    elif isinstance(getattr(method, "model", None), torch.nn.Module):
        method.model.to(device).eval()
    label = name or getattr(method, "__name__", None) or type(method).__name__
    if isinstance(lpips, torch.nn.Module):
        lpips = lpips.to(device).eval()
    metrics = (*METRICS, "lpips") if lpips is not None else METRICS

    def run(batch):
        out = method(batch)
        if isinstance(out, Mapping):
            if output_key not in out:
                raise KeyError(f"the method returned a dict without {output_key!r} (keys: {sorted(out)})")
            out = out[output_key]
        return out

    rows = []
    for i in tqdm(range(count), desc=f"evaluate {label}", disable=not progress):
        sample = _crop(dataset[i], crop_multiple)
        if target_key not in sample:
            raise KeyError(f"item {i} has no {target_key!r} ground truth (keys: {sorted(sample)})")
        batch = _batched(sample, device)
        if i == 0:
            for _ in range(int(warmup)):
                run(batch)
        _sync(device)
        start = time.perf_counter()
        pred = run(batch)
        _sync(device)
        elapsed = time.perf_counter() - start
        target = batch[target_key]
        if not isinstance(pred, torch.Tensor) or pred.shape != target.shape:
            raise ValueError(
                f"item {i}: the estimate has shape {tuple(getattr(pred, 'shape', ()))}, the ground truth {tuple(target.shape)}"
            )
        pred = pred.float().clamp(0, 1) if clip else pred.float()
        target = target.float()
        row = {
            "image": str(sample.get("name", i)),
            "psnr": float(_metrics.psnr(pred, target)[0]),
            "ssim": float(_metrics.ssim(pred, target)[0]),
            "mae": float(_metrics.mae(pred, target)[0]),
        }
        if lpips is not None:
            row["lpips"] = float(torch.as_tensor(lpips(pred, target)).reshape(-1)[0])
        row["time_s"] = elapsed
        rows.append(row)
    mean = {"image": "mean"}
    for key in (*metrics, "time_s"):
        mean[key] = sum(r[key] for r in rows) / len(rows)
    rows.append(mean)
    return Table(rows, method=label, params=method_parameters(method), columns=["image", *metrics, "time_s"])


def compare(methods: Mapping[str, Callable], dataset, *, lpips: Callable | None = None, **kwargs) -> Table:
    """Evaluate several methods on one dataset: one row of means per method.

    Args:
        methods: ``{name: method}``.
        dataset: as :func:`evaluate`.
        lpips: optional LPIPS metric, see :func:`evaluate`; adds an ``"lpips"`` column.
        **kwargs: passed to :func:`evaluate`.

    Returns:
        A :class:`Table` with rows ``{"method", "psnr", "ssim", "mae", "time_s", "params"}``
        (plus ``"lpips"`` after ``"mae"`` when given); each method's per-image table is in
        ``table.details[name]``.

    Example:
        >>> data = [{"name": "a", "combined": torch.full((3, 8, 8), 0.5), "sharp": torch.full((3, 8, 8), 0.5)}]
        >>> t = compare({"identity": lambda b: b["combined"], "zero": lambda b: 0 * b["combined"]}, data)
        >>> [r["method"] for r in t], round(t[1]["mae"], 3)
        (['identity', 'zero'], 0.5)
    """
    if not methods:
        raise ValueError("methods is empty")
    metrics = (*METRICS, "lpips") if lpips is not None else METRICS
    rows, details = [], {}
    for label, method in methods.items():
        table = evaluate(method, dataset, name=label, lpips=lpips, **kwargs)
        details[label] = table
        row = {"method": label, **{k: table.mean[k] for k in (*metrics, "time_s")}, "params": table.params}
        rows.append(row)
    out = Table(rows, columns=["method", *metrics, "time_s", "params"])
    out.details = details
    return out
