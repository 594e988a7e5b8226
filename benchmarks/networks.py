"""Inference time per 1680x1120 image and training throughput of the book's networks,
fp32 and (on CUDA) mixed precision, measured side by side in one run.

Networks (``dplab.models.build`` names, paper width, random weights: the time does not depend
on their values): ``dpdnet`` (6-channel DP input), ``rdpd`` (L, R, radial: 7 channels, one
frame), ``drbnet`` (3), ``drbnet_dual`` (6), ``mdp`` (3 -> left, right, sharp).

*Inference* (:func:`inference_rows`): one image through dplab's default path
(``model.eval()``, ``torch.inference_mode``, fp32; on CUDA also autocast: bf16 where the GPU
supports it, else fp16). Its reference is a *peer*, measured in the same run and interleaved
with it: the same network evaluated the way its authors' code runs a network (``eval()``,
``torch.no_grad``, fp32 with PyTorch's defaults (which let cuDNN use TF32 on recent GPUs, for
both sides), NCHW memory layout, eager, no ``torch.compile``), on the same input
(:data:`PEER_LABEL`). The layers are dplab's own in both, so the ratio measures the evaluation
path, not the layer code (dplab's implementation against the authors' own model code is
timed outside the suite, see ``README.md``); the fp32 row also says whether the two outputs
agree. The papers report 0.5 s (DPDNet) and 0.3 s (RDPD) per image (RDPD Table 1, "Time")
and 0.5 s for MDP (MDP Table 1, TITAN X), on GPUs of their time: those figures are kept in
separate rows with ``reference_kind="paper"`` (the same measured seconds; not measured here).
On CUDA the best of ``repeats`` full-size runs after a warm-up; on the CPU the full image
costs minutes on two cores, so by default one crop of ``cpu_scale`` of the height and width
is timed and scaled by pixel count (the networks are fully convolutional; the row is marked
extrapolated); ``--cpu-scale 1`` times the full image.

*Training* (:func:`training_rows`): one :meth:`dplab.training.trainer.Trainer.train_step` (forward, MSE
loss, backward, the recipe's optimizer: Adam, or RAdam for DRBNet) on a batch of the recipe's
patch size and batch size (``dplab.training.recipes.RECIPES``: DPDNet 512 px x 5, RDPD 512 x 8 single
frames, DRBNet 320 x 8, MDP step 2 512 x 8), in fp32 and, on CUDA, with the Trainer's AMP
(fp16 autocast + GradScaler), whose reference is the fp32 step of the same run (dplab's own
fp32 path: ``reference_kind="own slow path"``). Throughput is samples per second. On the CPU
one sample of a ``cpu_scale`` crop is timed and scaled by pixel count and batch size (marked
extrapolated).

    .venv/bin/python benchmarks/networks.py [--models dpdnet rdpd] [--cpu-scale 0.5] [--repeats 5] [--no-cpu]
        [--training]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import torch

from bench_common import (amp_dtype, autocast, best_time, format_table, interleaved_best_times, make_row,
                          scaled_hw)
from dplab.models import build, count_parameters
from dplab.models.registry import INPUT_CHANNELS, model_inputs, network_forward
from dplab.training.recipes import RECIPES
from dplab.training.trainer import Trainer

NETWORKS = ("dpdnet", "rdpd", "drbnet", "drbnet_dual", "mdp")


def input_channels(name: str) -> int:
    """Channels of the input the registry entry of ``name`` declares (RDPD: left, right, radial)."""
    return sum(INPUT_CHANNELS[k] for k in model_inputs(name))

#: Published seconds per 1680x1120 image (GPU) and where they come from.
PAPER_SECONDS = {
    "dpdnet": (0.5, "paper: RDPD Table 1, GPU"),
    "rdpd": (0.3, "paper: RDPD Table 1, GPU"),
    "mdp": (0.5, "paper: MDP Table 1, TITAN X"),
}
#: The reference of every inference row: the same network run the way its authors' code runs it.
PEER_LABEL = "peer: same network run as its authors' code runs it (fp32, NCHW, eager, torch.no_grad)"
#: The training recipe (dplab.training.recipes.RECIPES) whose patch size, batch and optimizer are timed.
#: DRBNet's code has no training script and no dual-pixel recipe: both variants use stage 1.
TRAIN_RECIPE = {"dpdnet": "dpdnet", "rdpd": "rdpd", "drbnet": "drbnet_lfdof", "drbnet_dual": "drbnet_lfdof",
                "mdp": "mdp_step2"}


def _check(name: str, device) -> torch.device:
    if name not in NETWORKS:
        raise ValueError(f"name must be one of {NETWORKS}, got {name!r}")
    return torch.device(device)


def _release(device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _tensors(out) -> list[torch.Tensor]:
    """Every tensor of a network's output (a tensor, a tuple or named tuple, a dict)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _tensors(o)] if isinstance(out, (tuple, list)) else []


def _max_diff(a, b) -> float:
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(_tensors(a), _tensors(b))),
               default=float("nan"))


def inference_rows(name: str, device, size=(1120, 1680), *, scale: float = 1.0, repeats: int | None = None,
                   amp: bool | None = None, model_cfg: dict | None = None, paper: bool = True) -> list[dict]:
    """Seconds per ``size`` image of ``build(name, **model_cfg)``, dplab's path against the peer.

    Rows: ``fp32`` (reference: :data:`PEER_LABEL`, ``reference_kind="peer"``), on CUDA an
    autocast row against the same peer, and, with ``paper`` and a published time
    (:data:`PAPER_SECONDS`), a row with the fp32 seconds against the paper's GPU time
    (``reference_kind="paper"``). The peer and dplab's runs are interleaved (ABBA), best of
    ``repeats`` each.

    Args:
        name: one of :data:`NETWORKS`.
        device: ``"cpu"`` or ``"cuda"``.
        size: (height, width) the figure is for (DPDD: 1120 x 1680).
        scale: on the CPU, time a crop of this fraction of height and width and scale by pixel
            count (ignored on CUDA, which always runs the full size).
        repeats: timed runs of each path, best reported (default 5 on CUDA, 1 on the CPU).
        amp: also time autocast (default: on CUDA only; the CPU refuses it).
        model_cfg: constructor options (e.g. ``{"width": 0.5}`` for MDP).
        paper: add the row against the paper's time where one is published.
    """
    device = _check(name, device)
    amp = device.type == "cuda" if amp is None else bool(amp)
    if amp:
        amp_dtype(device)  # raises on the CPU
    h_full, w_full = (int(v) for v in size)
    cuda = device.type == "cuda"
    h, w = (h_full, w_full) if cuda or scale >= 1 else scaled_hw(h_full, w_full, scale)
    repeats = repeats or (5 if cuda else 1)
    torch.manual_seed(0)
    model = build(name, **(model_cfg or {})).to(device).eval()
    n_params = count_parameters(model)
    x = torch.rand(1, input_channels(name), h, w, generator=torch.Generator().manual_seed(0)).to(device)
    extrapolated = (h, w) != (h_full, w_full)
    factor = h_full * w_full / (h * w)

    def peer(inp):  # the authors' way: eval(), no_grad, fp32, NCHW (contiguous), eager
        with torch.no_grad():
            return model(inp.contiguous())

    def dplab(use_amp):
        def run(inp):
            with torch.inference_mode(), autocast(device, use_amp):
                return model(inp)
        return run

    paths = [peer, dplab(False)] + ([dplab(True)] if amp else [])
    if not cuda:  # warm-up of each path on a small crop (a full-size one costs as much as the measurement)
        for path in paths:
            path(x[..., : max(16, h // 4), : max(16, w // 4)])
    times, outs = interleaved_best_times([lambda p=p: p(x) for p in paths], device, repeats=repeats,
                                         warmup=1 if cuda else 0)
    peer_s, fp32_s = (t * factor for t in times[:2])
    diff = _max_diff(outs[0], outs[1])
    measured = (f"; measured {times[1]:.3f} s (peer {times[0]:.3f} s) on {w}x{h}, scaled by pixel count"
                if extrapolated else "")
    base = f"{n_params:,} params; best of {repeats}, interleaved with the peer"
    shape = f"1x{input_channels(name)}x{h_full}x{w_full}"
    out = [make_row(f"{name} inference", device, "fp32", shape, fp32_s, unit="images/s", reference=PEER_LABEL,
                    reference_seconds=peer_s, reference_kind="peer", extrapolated=extrapolated,
                    note=f"{base}; max |output - peer's output| {diff:.1e}{measured}")]
    if amp:
        dtype = str(amp_dtype(device)).replace("torch.", "").replace("bfloat16", "bf16").replace("float16", "fp16")
        amp_s = times[2] * factor
        out.append(make_row(f"{name} inference", device, f"{dtype} autocast", shape, amp_s, unit="images/s",
                            reference=PEER_LABEL, reference_seconds=peer_s, reference_kind="peer",
                            extrapolated=extrapolated,
                            note=f"{base}; dplab fp32 in this run {fp32_s:.4g} s ({fp32_s / amp_s:.3g}x the "
                                 f"autocast time); max |output - peer's output| {_max_diff(outs[0], outs[2]):.1e}"))
    if paper and name in PAPER_SECONDS:
        ref_s, ref = PAPER_SECONDS[name]
        out.append(make_row(f"{name} inference", device, "fp32", shape, fp32_s, unit="images/s", reference=ref,
                            reference_seconds=ref_s, reference_kind="paper", extrapolated=extrapolated,
                            note="the paper's GPU time, typed in, not measured here; seconds: this run's fp32 row"))
    model = x = outs = None  # free before the next network
    _release(device)
    return out


def _loss(pred, batch):
    target = batch["sharp"]
    if isinstance(pred, torch.Tensor):
        return torch.nn.functional.mse_loss(pred.float(), target)
    return sum(torch.nn.functional.mse_loss(p.float(), target) for p in pred if p is not None)  # MDP heads


def training_rows(name: str, device, *, patch: int | None = None, batch: int | None = None, scale: float = 1.0,
                  repeats: int | None = None, amp: bool | None = None, model_cfg: dict | None = None) -> list[dict]:
    """Samples per second of one :class:`dplab.training.trainer.Trainer` step, fp32 and (CUDA) AMP.

    Args:
        name: one of :data:`NETWORKS`.
        device: ``"cpu"`` or ``"cuda"``.
        patch, batch: square patch side and batch size (default: the recipe's, :data:`TRAIN_RECIPE`).
        scale: on the CPU, time one sample of a patch this fraction of the side and scale the
            time by pixel count and batch size (ignored on CUDA).
        repeats: timed steps, best reported (default 5 on CUDA, 1 on the CPU), after one
            warm-up step (on the CPU the warm-up runs on a 32x32 batch).
        amp: also time the Trainer's AMP (default: on CUDA only).
        model_cfg: constructor options.
    """
    device = _check(name, device)
    recipe = RECIPES[TRAIN_RECIPE[name]]
    patch = int(patch or recipe["data"]["patch_size"])
    batch = int(batch or recipe["batch_size"])
    if patch < 16 or batch < 1:
        raise ValueError(f"patch must be >= 16 and batch >= 1, got {patch}, {batch}")
    cuda = device.type == "cuda"
    amp = cuda if amp is None else bool(amp)
    if amp:
        amp_dtype(device)  # raises on the CPU
    p = patch if cuda or scale >= 1 else scaled_hw(patch, patch, scale)[0]
    b = batch if cuda or scale >= 1 else 1
    repeats = repeats or (5 if cuda else 1)
    factor = (patch * patch * batch) / (p * p * b)
    extrapolated = factor != 1
    g = torch.Generator().manual_seed(0)
    data = {k: torch.rand(b, INPUT_CHANNELS[k], p, p, generator=g).to(device) for k in model_inputs(name)}
    data["sharp"] = torch.rand(b, 3, p, p, generator=g).to(device)
    small = {k: v[:1, :, :32, :32] for k, v in data.items()}
    out, fp32 = [], None
    for use_amp in (False, True) if amp else (False,):
        torch.manual_seed(0)
        model = build(name, **(model_cfg or {}))
        config = {"max_steps": 10**6, "batch_size": 1, "optimizer": recipe["optimizer"], "lr": recipe["lr"],
                  "betas": recipe.get("betas", (0.9, 0.999)), "device": device, "amp": use_amp,
                  "progress": False, "checkpoint_every": 0}
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(model, _loss, [0], config, output_dir=tmp, resume=False,
                              forward=network_forward(name))     # the registry's inputs, as in training
            trainer.train_step(data if cuda else small)  # warm-up: optimizer state, cuDNN choice
            t = best_time(lambda: trainer.train_step(data), device, repeats=repeats)
        seconds = t * factor  # per step of `batch` samples of `patch` px
        note = (f"recipe {TRAIN_RECIPE[name]!r} ({recipe['optimizer']}); best of {repeats}"
                + (f"; measured {t:.3f} s for {b} x {p}x{p}, scaled by pixels x samples" if extrapolated else ""))
        if use_amp:
            dtype, ref, ref_s, kind = "fp16 autocast + GradScaler", "fp32 (same run)", fp32, "own slow path"
        else:
            dtype, ref, ref_s, kind, fp32 = "fp32", None, None, None, seconds
        out.append(make_row(f"{name} training step", device, dtype, f"batch {batch} x {patch}x{patch}", seconds,
                            unit="samples/s", work=batch, reference=ref, reference_seconds=ref_s,
                            reference_kind=kind, extrapolated=extrapolated, note=note))
        trainer = model = None  # free before the AMP run
        _release(device)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dpdnet", "rdpd"], choices=NETWORKS)
    parser.add_argument("--height", type=int, default=1120)
    parser.add_argument("--width", type=int, default=1680)
    parser.add_argument("--cpu-scale", type=float, default=0.5, help="crop side fraction timed on the CPU")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs on CUDA")
    parser.add_argument("--no-cpu", action="store_true")
    parser.add_argument("--training", action="store_true", help="also time one training step per network")
    args = parser.parse_args()
    devices = ([] if args.no_cpu else [torch.device("cpu")]) + (
        [torch.device("cuda")] if torch.cuda.is_available() else [])
    print(f"# {time.strftime('%Y-%m-%d')} torch {torch.__version__}, CPU threads {torch.get_num_threads()}")
    rows = []
    for name in args.models:
        for device in devices:
            rows += inference_rows(name, device, (args.height, args.width), scale=args.cpu_scale,
                                   repeats=args.repeats if device.type == "cuda" else 1)
            if args.training:
                rows += training_rows(name, device, scale=args.cpu_scale,
                                      repeats=args.repeats if device.type == "cuda" else 1)
    print(format_table(rows))


if __name__ == "__main__":
    main()
