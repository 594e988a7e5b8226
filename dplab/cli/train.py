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

What the command guarantees about ``--out``:

* one run at a time: it holds :func:`dplab._io.folder_lock` on ``--out`` for the whole run, so a
  second ``train`` on the same folder is refused at once with the first one's pid (and never
  mixes its checkpoints or log rows into the first one's);
* it writes only into a new or empty folder, or into one of its own runs (with
  ``cli_train.json``), and deletes only what it wrote (its own ``log.csv``/``log.json`` of a
  run killed before its first checkpoint, and the temporary files of a killed run);
* it records a fingerprint of the training data (:func:`data_fingerprint`: the settings of a
  ``python -m dplab synth`` dataset, else the listing of ``train_*``) and refuses to resume on
  other data, say after the dataset was regenerated with another seed, unless
  ``--allow-other-data`` says so (the new fingerprint is then recorded; the same data moved to
  another path resumes without it);
* ``--steps`` below the steps the folder already holds is refused (exit 2, nothing changed);
  equal to them, the run is complete and the command exits 0.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

from dplab.training.objectives import LOSSES

__all__ = ["add_parser", "run", "data_fingerprint", "SETTINGS_FILE", "LOSSES", "TRAINABLE"]

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
                    "running the same command again resumes, a larger --steps continues. OUT must be new, "
                    "empty or a run of this command; one run per OUT at a time (a second one is refused with "
                    "the first one's pid); resuming on other data than the run's is refused unless "
                    "--allow-other-data.",
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
    p.add_argument("--allow-other-data", action="store_true",
                   help="resume a run although --data is not the data it was trained on (another path with "
                        "other contents, or the same path regenerated); without it such a resume is refused")
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




#: What the command writes in --out (the temporary files of these are its own).
_WRITES = (SETTINGS_FILE, "log.csv", "log.json")
_CHECKPOINTS = ("last.pt", "best.pt")
_DATA_KEYS = ("data", "data_fingerprint")


def data_fingerprint(root) -> str:
    """What identifies the training data under ``root``.

    A ``python -m dplab synth`` dataset is a function of its arguments: ``"synth:"`` and the
    sha256 of the format, version and arguments its manifest records. Any other DPDD-layout
    folder: ``"files:"`` and the sha256 of the listing of ``train_*`` (relative path and size
    of every file).

    Raises:
        ValueError: the synth manifest is damaged, or says the dataset is not complete (being
            written, or interrupted).

    Example:
        >>> import tempfile
        >>> root = Path(tempfile.mkdtemp())
        >>> _ = (root / "train_c").mkdir(), (root / "train_c" / "a.png").write_bytes(b"png")
        >>> data_fingerprint(root)[:6]
        'files:'
    """
    from dplab.render.synth import MANIFEST_NAME

    root = Path(root).expanduser().resolve()
    manifest = root / MANIFEST_NAME
    if manifest.is_file():
        try:
            record = json.loads(manifest.read_text())
            identity = {k: record[k] for k in ("format", "version", "config")}
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{manifest} is damaged ({type(err).__name__}: {err}); run the synth command that "
                             "made --data again to repair it") from None
        if record.get("complete") is not True:
            raise ValueError(f"--data {root} is a synth dataset that is not complete ({MANIFEST_NAME} says so: it is "
                             "being written, or its run was interrupted); finish it by running its synth command "
                             "again, then train")
        return "synth:" + hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    digest = hashlib.sha256()
    for path in sorted(root.glob("train_*/**/*")):
        if path.is_file():
            digest.update(f"{path.relative_to(root).as_posix()}\t{path.stat().st_size}\n".encode())
    return "files:" + digest.hexdigest()


def _claim(out: Path) -> None:
    """With the lock held: refuse a non-empty folder this command did not make (no settings
    file), then remove the temporary files a killed run of it left."""
    from dplab._io import LOCK_NAME, remove_stale_temporaries

    own_temporaries = tuple(f".{name}." for name in _WRITES)
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME and not p.name.startswith(own_temporaries))
    if others and not (out / SETTINGS_FILE).is_file():
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise FileExistsError(f"--out {out} is not empty ({shown}) and holds no {SETTINGS_FILE}, so it is not a run "
                              "of `python -m dplab train`; choose a new or empty folder")
    remove_stale_temporaries(out, _WRITES)
    remove_stale_temporaries(out / "checkpoints", _CHECKPOINTS)


def _read_settings(path: Path) -> dict:
    try:
        settings = json.loads(path.read_text())
    except (UnicodeDecodeError, ValueError) as err:
        settings = err
    if not isinstance(settings, dict):
        why = f"{type(settings).__name__}: {settings}" if isinstance(settings, Exception) else "not a JSON object"
        raise ValueError(f"{path} is empty or damaged ({why}); it records the settings of the run in this folder, "
                         "which cannot be resumed without them: restore it, or use another --out")
    return settings


def _check_settings(out: Path, settings: dict, *, allow_other_data: bool, write: bool) -> None:
    """Refuse an ``out`` whose checkpoint was trained with other settings or on other data;
    write the settings of the run atomically."""
    from dplab._io import atomic_file

    path, ckpt = out / SETTINGS_FILE, out / "checkpoints" / "last.pt"
    if ckpt.is_file():
        old = _read_settings(path)
        diff = sorted(k for k in set(old) | set(settings) if k not in _DATA_KEYS and old.get(k) != settings.get(k))
        if diff:
            details = "; ".join(f"{k}: {old.get(k)!r} there, {settings.get(k)!r} now" for k in diff)
            raise FileExistsError(f"{out} holds a run with other settings ({details}); "
                                  "use another --out, or the same arguments to resume it")
        known = old.get("data_fingerprint")
        same = known == settings["data_fingerprint"] if known else old.get("data") == settings["data"]
        if not same and not allow_other_data:
            what = (f"{old.get('data')}, fingerprint {known}" if known else old.get("data"))
            raise FileExistsError(f"{out} was trained on other data ({what}; now {settings['data']}, fingerprint "
                                  f"{settings['data_fingerprint']}): resuming would train one model on two datasets. "
                                  "Use another --out, or pass --allow-other-data to go on with the new data")
    if write:
        with atomic_file(path, "w") as handle:
            json.dump(settings, handle, indent=2)


def run(args) -> int:
    """Handler of ``python -m dplab train`` (see the module docstring); returns 0."""
    import torch

    from dplab._io import folder_lock
    from dplab._validate import resolve_device
    from dplab.data import DPDDDataset, RandomPatches
    from dplab.models import build
    from dplab.models.registry import model_inputs
    from dplab.training.checkpoints import distributed_info
    from dplab.training.monitor import TrainingDiverged
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
    if args.device != "auto":
        try:
            resolve_device(args.device)
        except ValueError as exc:
            raise ValueError(f"--device: {exc}") from None
    base = RECIPES[args.recipe]
    loss_kind = base.get("loss", {}).get("kind")
    if loss_kind not in LOSSES:
        raise ValueError(f"recipe {args.recipe!r} has loss {loss_kind!r}, which this command does not know")
    data_cfg = base.get("data", {})
    patch = args.patch or data_cfg.get("patch_size", 256)
    options = _build_options(args)
    out = Path(args.out).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    train_set = DPDDDataset("train", root=args.data, cache=args.cache)
    settings = {"model": args.model, "options": json.loads(json.dumps(options)), "recipe": args.recipe,
                "data": str(Path(args.data).expanduser().resolve()), "data_fingerprint": data_fingerprint(args.data),
                "patch": patch,
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
    main_process = distributed_info()["rank"] == 0      # under torchrun, the first process holds --out
    lock = folder_lock(out, f"python -m dplab train --model {args.model} --recipe {args.recipe}") \
        if main_process else contextlib.nullcontext()
    with lock:
        if main_process:
            _claim(out)
        _check_settings(out, settings, allow_other_data=args.allow_other_data, write=main_process)
        trainer = Trainer(model, loss_fn, patches, cfg, output_dir=out, forward=forward,
                          resume=True if args.resume else "auto")
        resumed_at = trainer.step
        if trainer.step > trainer.total_steps:
            budget = f"--steps {args.steps}" if args.steps is not None else f"the recipe's {trainer.total_steps} steps"
            raise ValueError(f"--out {out} already holds {trainer.step} trained steps, more than {budget}; nothing "
                             f"was trained. Give --steps {trainer.step} or more to continue it, or evaluate "
                             f"{trainer.last_path}")
        try:
            summary = trainer.fit()
        except TrainingDiverged as err:
            if trainer.last_path.is_file():
                advice = (f"the last good model is {trainer.last_path}; to train on with a lower --lr (or a "
                          "--grad-clip), use another --out (this one keeps its settings)")
            else:
                advice = ("no checkpoint was written before it; run again with a lower --lr (or a --grad-clip): in "
                          "this --out it starts afresh")
            raise TrainingDiverged(f"{err.reason} (--lr {settings['lr']:g}); {advice}", err.step, err.loss,
                                   err.reason) from None
    loss = summary["final_loss"]
    print(f"train: {args.model} with recipe {args.recipe}: step {summary['step']} of {trainer.total_steps}"
          + (f" (resumed at step {resumed_at})" if resumed_at else "")
          + (f", last loss {loss:.6g}" if loss is not None else "")
          + f"; checkpoint {summary['checkpoint']}")
    return 0
