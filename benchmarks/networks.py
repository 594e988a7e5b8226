"""Inference time per 1680x1120 image and training throughput of the book's networks,
fp32 and (on CUDA) mixed precision, measured side by side in one run.

Networks (``dplab.models.build`` names, paper width, random weights: the time does not depend
on their values): ``dpdnet`` (6-channel DP input), ``rdpd`` (L, R, radial: 7 channels, one
frame), ``drbnet`` (3), ``drbnet_dual`` (6), ``mdp`` (3 -> left, right, sharp).

*Inference* (:func:`inference_rows`): one image under ``torch.inference_mode``. The papers
report 0.5 s (DPDNet) and 0.3 s (RDPD) per image (RDPD Table 1, "Time") and 0.5 s for MDP
(MDP Table 1, TITAN X); those are the fp32 rows' reference, labelled as the paper's. On CUDA
the best of ``repeats`` full-size runs after a warm-up, in fp32 and with autocast (bf16 where
the GPU supports it, else fp16), whose reference is the fp32 time of the same run. On the CPU
the full image costs minutes on two cores, so by default one crop of ``cpu_scale`` of the
height and width is timed and scaled by pixel count (the networks are fully convolutional;
the row is marked extrapolated); ``--cpu-scale 1`` times the full image.

*Training* (:func:`training_rows`): one :meth:`dplab.training.trainer.Trainer.train_step` (forward, MSE
loss, backward, the recipe's optimizer: Adam, or RAdam for DRBNet) on a batch of the recipe's
patch size and batch size (``dplab.training.recipes.RECIPES``: DPDNet 512 px x 5, RDPD 512 x 8 single
frames, DRBNet 320 x 8, MDP step 2 512 x 8), in fp32 and, on CUDA, with the Trainer's AMP
(fp16 autocast + GradScaler). Throughput is samples per second. On the CPU one sample of a
``cpu_scale`` crop is timed and scaled by pixel count and batch size (marked extrapolated).

    .venv/bin/python benchmarks/networks.py [--models dpdnet rdpd] [--cpu-scale 0.5] [--repeats 5] [--no-cpu]
        [--training]
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time

import torch

from bench_common import amp_dtype, autocast, best_time, format_table, make_row, scaled_hw
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


def inference_rows(name: str, device, size=(1120, 1680), *, scale: float = 1.0, repeats: int | None = None,
                   amp: bool | None = None, model_cfg: dict | None = None) -> list[dict]:
    """Seconds per ``size`` image of ``build(name, **model_cfg)`` in fp32 and (CUDA) autocast.

    Args:
        name: one of :data:`NETWORKS`.
        device: ``"cpu"`` or ``"cuda"``.
        size: (height, width) the figure is for (DPDD: 1120 x 1680).
        scale: on the CPU, time a crop of this fraction of height and width and scale by pixel
            count (ignored on CUDA, which always runs the full size).
        repeats: timed runs, best reported (default 5 on CUDA, 1 on the CPU).
        amp: also time autocast (default: on CUDA only; the CPU refuses it).
        model_cfg: constructor options (e.g. ``{"width": 0.5}`` for MDP).
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
    out, fp32 = [], None
    for use_amp in (False, True) if amp else (False,):
        def run():
            with torch.inference_mode(), autocast(device, use_amp):
                model(x)
        # warm-up: full size on CUDA (cuDNN algorithm choice), a small crop on the CPU
        if not cuda:
            with torch.inference_mode():
                model(x[..., : max(16, h // 4), : max(16, w // 4)])
        t = best_time(run, device, repeats=repeats, warmup=1 if cuda else 0)
        seconds = t * factor
        note = f"{n_params:,} params; best of {repeats}" + (
            f"; measured {t:.3f} s on {w}x{h}, scaled by pixel count" if extrapolated else "")
        if use_amp:
            dtype = f"{str(amp_dtype(device)).replace('torch.', '').replace('bfloat16', 'bf16').replace('float16', 'fp16')} autocast"
            ref, ref_s = "fp32 (same run)", fp32
        else:
            dtype, fp32 = "fp32", seconds
            ref_s, ref = PAPER_SECONDS.get(name, (None, None))
        out.append(make_row(f"{name} inference", device, dtype, f"1x{input_channels(name)}x{h_full}x{w_full}",
                            seconds, unit="images/s", reference=ref, reference_seconds=ref_s,
                            extrapolated=extrapolated, note=note))
    model = x = None  # free before the next network
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
            dtype, ref, ref_s = "fp16 autocast + GradScaler", "fp32 (same run)", fp32
        else:
            dtype, ref, ref_s, fp32 = "fp32", None, None, seconds
        out.append(make_row(f"{name} training step", device, dtype, f"batch {batch} x {patch}x{patch}", seconds,
                            unit="samples/s", work=batch, reference=ref, reference_seconds=ref_s,
                            extrapolated=extrapolated, note=note))
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
