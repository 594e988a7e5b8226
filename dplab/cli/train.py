"""``python -m dplab train``: train one of the book's networks on a DPDD-layout folder.

Everything is the library's: the network from :func:`dplab.models.build`, random patches of
:class:`dplab.data.DPDDDataset` (``{--data}/train_*``) through :class:`dplab.data.RandomPatches`,
a paper's recipe from :func:`dplab.training.recipes.recipe` with the command-line overrides, and
:class:`dplab.training.trainer.Trainer`, which writes atomic checkpoints (with the model spec, so that
``python -m dplab evaluate`` and :func:`dplab.models.from_checkpoint` rebuild the network) to
``{--out}/checkpoints/last.pt`` and resumes from them.

The network input is the one its registry entry declares
(:func:`dplab.models.registry.network_forward`, as :class:`dplab.eval.zoo.NetworkMethod` feeds
it at evaluation); the loss follows the recipe's ``"loss"`` entry
(:func:`dplab.training.objectives.forward_and_loss`):

| recipe loss | paper | loss_fn |
| --- | --- | --- |
| ``mse`` (``dpdnet``) | DPDNet, ECCV 2020, Sec. 4 | MSE to ``sharp`` |
| ``mse+edge`` (``rdpd``) | RDPD, ICCV 2021, Eq. 16 | :func:`dplab.training.rdpd.make_loss` |
| ``l1`` (``drbnet_lfdof``) | DRBNet, CVPR 2022, Eq. 6 | :func:`dplab.training.losses.multiscale_l1` |
| ``l1+vgg`` (``drbnet_dpdd``) | DRBNet, Eq. 7 | :func:`dplab.training.drbnet.finetune_loss`: :class:`dplab.training.vgg.VGGFeatureLoss` when the VGG-19 file exists, else Eq. 6 (Table 5, row c) |
| ``mdp_step1`` / ``mdp_step2`` | MDP, WACV 2022, Eqs. 8-9, Sec. 3.4 | :func:`dplab.training.mdp.mdp_loss_fn` (step 1 freezes ``Dec_s``) |

RDPD and RSPD are trained on single-image patches only (no sequence batches; those need
:class:`dplab.training.rdpd.AlternatingBatches`, see the RDPD chapter). ``mdp_single_task``
(``task=deblur``, MDP Table 3's single-task baseline) trains with an MDP recipe whose view
terms drop out, i.e. on the sharp-image term alone; its ``views`` baseline is the MDP chapter's.

The run's settings (model, options, recipe, data, patches, batch, learning rate, seed) are kept
in ``{--out}/cli_train.json``: running the same command again resumes (a larger ``--steps``
continues training); different settings in the same ``--out`` are refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from dplab.training.objectives import LOSSES

__all__ = ["add_parser", "run", "SETTINGS_FILE", "LOSSES", "TRAINABLE"]

SETTINGS_FILE = "cli_train.json"
#: Registry names the command trains.
TRAINABLE = ("dpdnet", "dpdnet_single", "drbnet", "drbnet_dual", "rdpd", "rspd", "mdp", "mdp_single_task")
_NOT_HERE: dict[str, str] = {}


def _option(text: str) -> tuple[str, object]:
    import argparse

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value                                   # a plain string, e.g. stitching=late


def add_parser(sub) -> None:
    """Add the ``train`` sub-parser to ``sub`` (an ``argparse`` sub-parsers object)."""
    from dplab.models import list_models
    from dplab.training.recipes import RECIPES

    p = sub.add_parser(
        "train", help="train a network on a DPDD-layout folder (resumable)",
        description="Train one of the book's networks with a paper's recipe (dplab.training.recipes.recipe) on "
                    "random patches of DIR/train_* (DPDD layout: the Canon release or `python -m dplab "
                    "synth` output). Checkpoints (atomic, with the model spec) go to OUT/checkpoints/; "
                    "running the same command again resumes, a larger --steps continues.",
        epilog="Losses follow the recipe: dpdnet MSE; rdpd MSE + Sobel edges (Eq. 16; single-image "
               "patches only, sequence batches are the RDPD chapter's); drbnet_lfdof multi-scale L1 "
               "(Eq. 6); drbnet_dpdd VGG-19 features (Eq. 7) when the weights file of "
               "dplab.training.vgg.default_vgg19_path() exists, else multi-scale L1; mdp_step1/mdp_step2 the MDP losses (Eqs. 8-9; step 1 freezes the sharp "
               "decoder; with mdp_single_task only the sharp-image term).")
    p.add_argument("--model", required=True, choices=list_models(),
                   help="registry name (dplab.models.build); trainable here: " + ", ".join(TRAINABLE))
    p.add_argument("--recipe", required=True, choices=sorted(RECIPES),
                   help="paper recipe: optimiser, learning rate, schedule, batch, patch size, loss")
    p.add_argument("--data", required=True, help="DPDD-layout folder holding train_c/, train_l/, train_r/")
    p.add_argument("--out", required=True, help="run folder (new, or an earlier run of this command to resume)")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the recipe's epochs)")
    p.add_argument("--batch-size", type=int, help="patches per step (default: the recipe's)")
    p.add_argument("--patch", type=int, help="patch size in pixels (default: the recipe's)")
    p.add_argument("--patches-per-image", type=int, default=1, help="patches per image per epoch (default 1)")
    p.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    p.add_argument("--schedule", choices=("recipe", "constant", "cosine"), default="recipe",
                   help="learning-rate schedule: the recipe's (per epoch), constant, or a cosine decay "
                        "over --steps to 1%% (the shipped CPU weights use it); default recipe")
    p.add_argument("--grad-clip", type=float, help="clip the global gradient norm to this value (default: none)")
    p.add_argument("--widths", type=int, nargs="+", metavar="W",
                   help="encoder widths (dpdnet, rdpd, mdp: 4 numbers); tiny models for tests")
    p.add_argument("--width", type=float, help="DRBNet base width (int) or MDP width multiplier")
    p.add_argument("--option", type=_option, action="append", default=[], metavar="KEY=VALUE",
                   help="other dplab.models.build option, VALUE as JSON (repeatable), e.g. lstm_channels=8")
    p.add_argument("--cache", action="store_true",
                   help="keep the decoded training images in memory (small sets: decoding four 16-bit PNGs "
                        "per patch otherwise costs more than a small network's step); results are the same")
    p.add_argument("--seed", type=int, default=0, help="initial weights, patches and data order (default 0)")
    p.add_argument("--device", default="auto", help="'auto' (CUDA when present), 'cpu', 'cuda', 'cuda:1', ...")
    p.add_argument("--checkpoint-every", type=int, default=100, help="steps between checkpoints (default 100)")
    p.add_argument("--resume", action="store_true",
                   help="require an existing checkpoint in OUT (without it: resume when there is one)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=run)


def _build_options(args) -> dict:
    options = dict(args.option)
    if args.widths is not None:
        options["widths"] = tuple(args.widths)
    if args.width is not None:
        if args.model.startswith("drbnet") and not float(args.width).is_integer():
            raise ValueError(f"--width of {args.model} is a channel count (an integer), got {args.width}")
        options["width"] = int(args.width) if args.model.startswith("drbnet") else args.width
    return options




def _check_settings(out: Path, settings: dict) -> None:
    """Refuse an ``out`` that holds a run with other settings (or a checkpoint of unknown
    origin); write the settings of a new run atomically."""
    from dplab._io import atomic_file

    path, ckpt = out / SETTINGS_FILE, out / "checkpoints" / "last.pt"
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff and ckpt.is_file():
            details = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff)
            raise FileExistsError(f"{out} holds a run with other settings ({details}); "
                                  "use another --out, or the same arguments to resume it")
    elif ckpt.is_file():
        raise FileExistsError(f"{ckpt} exists but was not written by `python -m dplab train` "
                              f"(no {SETTINGS_FILE}); use another --out")
    with atomic_file(path, "w") as handle:
        json.dump(settings, handle, indent=2)


def run(args) -> int:
    """Handler of ``python -m dplab train`` (see the module docstring); returns 0."""
    import torch

    from dplab.data import DPDDDataset, RandomPatches
    from dplab.models import build
    from dplab.models.registry import model_inputs
    from dplab.training.objectives import forward_and_loss
    from dplab.training.recipes import RECIPES, recipe
    from dplab.training.trainer import Trainer

    if args.model not in TRAINABLE:
        why = _NOT_HERE.get(args.model, "no command-line recipe for it; train it as its chapter does")
        raise ValueError(f"python -m dplab train does not train {args.model!r}: {why}")
    for name in ("steps", "batch_size", "patch", "patches_per_image"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive integer, got {value}")
    base = RECIPES[args.recipe]
    loss_kind = base.get("loss", {}).get("kind")
    if loss_kind not in LOSSES:
        raise ValueError(f"recipe {args.recipe!r} has loss {loss_kind!r}, which this command does not know")
    data_cfg = base.get("data", {})
    patch = args.patch or data_cfg.get("patch_size", 256)
    options = _build_options(args)
    out = Path(args.out).expanduser().resolve()
    train_set = DPDDDataset("train", root=args.data, cache=args.cache)
    settings = {"model": args.model, "options": json.loads(json.dumps(options)), "recipe": args.recipe,
                "data": str(Path(args.data).expanduser().resolve()), "patch": patch,
                "patches_per_image": args.patches_per_image, "batch_size": args.batch_size or base["batch_size"],
                "lr": args.lr if args.lr is not None else base["lr"], "seed": args.seed}
    # Written only when set, so that runs of earlier versions of this command still resume.
    if args.schedule != "recipe":
        settings["schedule"] = args.schedule
    if args.grad_clip is not None:
        settings["grad_clip"] = args.grad_clip
    torch.manual_seed(args.seed)
    try:
        model = build(args.model, **options)
    except TypeError as exc:
        raise ValueError(f"{exc} (check --widths/--width/--option)") from None
    in_channels = getattr(model, "in_channels", None)
    forward, loss_fn = forward_and_loss(args.model, loss_kind, in_channels)
    radial = "radial" in model_inputs(args.model, in_channels)
    if args.model == "mdp_single_task" and options.get("task", "deblur") != "deblur":
        raise ValueError("python -m dplab train trains the deblurring single-task baseline (task=deblur); "
                         "the views baseline is the MDP chapter's")
    if args.recipe == "mdp_step1":
        if args.model != "mdp":
            raise ValueError("recipe mdp_step1 freezes MDP's sharp decoder; it is for --model mdp")
        model.set_trainable("sharp", False)                    # MDP Sec. 3.4: Dec_s frozen in step 1
    overrides = {"batch_size": settings["batch_size"], "lr": settings["lr"], "seed": args.seed,
                 "device": args.device, "progress": not args.quiet, "checkpoint_every": args.checkpoint_every}
    if args.steps is not None:
        overrides.update(epochs=None, max_steps=args.steps)
    if args.schedule == "constant":
        overrides["schedule"] = {"kind": "constant"}
    elif args.schedule == "cosine":
        if args.steps is None:
            raise ValueError("--schedule cosine decays over --steps; give --steps")
        overrides["schedule"] = {"kind": "cosine", "total": args.steps, "unit": "step"}
    if args.grad_clip is not None:
        if not args.grad_clip > 0:
            raise ValueError(f"--grad-clip must be positive, got {args.grad_clip}")
        overrides["grad_clip"] = args.grad_clip
    cfg = recipe(args.recipe, **overrides)
    patches = RandomPatches(train_set, patch, patches_per_image=args.patches_per_image, seed=args.seed,
                            radial=radial, filter_extra=data_cfg.get("filter_extra", 0))
    _check_settings(out, settings)
    trainer = Trainer(model, loss_fn, patches, cfg, output_dir=out, forward=forward,
                      resume=True if args.resume else "auto")
    resumed_at = trainer.step
    summary = trainer.fit()
    loss = summary["final_loss"]
    print(f"train: {args.model} with recipe {args.recipe}: step {summary['step']} of {trainer.total_steps}"
          + (f" (resumed at step {resumed_at})" if resumed_at else "")
          + (f", last loss {loss:.6g}" if loss is not None else "")
          + f"; checkpoint {summary['checkpoint']}")
    return 0
