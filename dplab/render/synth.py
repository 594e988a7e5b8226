"""Synthetic DP datasets on disk, in the DPDD layout (``python -m dplab synth``).

Each sample is a :func:`dplab.render.scenes.random_scene` rendered by :func:`dplab.render.layered.render_dp`
the way RDPD's generator does it (Sec. 3): one of the five RDPD cameras
(:data:`dplab.optics.thin_lens.RDPD_CAMERA_SETS`) turns depth into CoC, scaled by ``width / 1920`` (the
generator's pixel CoC is for 1920-px-wide SYNTHIA frames) and clipped at 40 px times that
scale; that camera's radial distortion (:data:`dplab.optics.distortion.RDPD_DISTORTION_COEFFS`); a
Butterworth PSF drawn from the bank of supplement Eq. S4; noise ``I + I N``.

Layout under ``OUT`` (``<id>`` = the sample index, zero-padded to 5 digits)::

    dplab_synth.json                    manifest: format, arguments, split ranges, complete
    {split}_c/source/<id>.png           combined = left + right            (16-bit RGB)
    {split}_c/target/<id>.png           sharp image (the same distortion)  (16-bit RGB)
    {split}_l/source/<id>_L.png         2 x left view (full brightness, as DPDD's views)
    {split}_r/source/<id>_R.png         2 x right view
    {split}_c/defocus/<id>.npy          signed CoC in pixels, float32 (H, W), distorted
    {split}_c/meta/<id>.json            camera set, PSF parameters, distortion, noise sigma
    sequences/{split}_c/source/seq_<k>/<t>.png   and likewise target/, defocus/ (.npy),
    sequences/{split}_l/source/seq_<k>/<t>_L.png   _r/ ... _R.png, {split}_c/meta/seq_<k>.json

``{split}`` is ``train``, ``val`` or ``test``; samples ``0 .. count-1`` are split in order by
``split_fractions``, and so are the sequences. The sequence layout follows RDPD's generator
(``{split}_{c,l,r}/{source,target}/seq_<k>/``) with DPDD file names; ``<k>`` has 3 digits and
frames ``<t>`` 5 digits. 16-bit PNGs hold ``round(65535 x)``; read them with
:func:`dplab.data.pngio.read_png` (Pillow reads 16-bit RGB as 8-bit);
:class:`dplab.data.DPDDDataset` and :class:`dplab.data.DPSequenceDataset` read both layouts
(their default ``view_scale=0.5`` undoes the x2 of the stored views).

Determinism and resuming: sample ``i`` depends only on ``(seed, i)`` (and frame ``t`` of
sequence ``k`` on ``(seed, k, t)``), every file is written to a temporary name and renamed, a
sample is complete when all its files exist, so an interrupted run resumes exactly: complete
samples are skipped, partial ones redone, leftover temporary files removed. A different
set of arguments is refused unless ``overwrite``.

One run at a time: :func:`synthesize` holds :func:`dplab._io.folder_lock` on ``OUT`` from its
first check to the complete manifest, so a second run on the same folder (another seed, or
the same command started twice) is refused at once with the first one's pid, and never mixes
its samples into the first one's dataset. Temporary files are removed only under the lock and
only where synth writes (its split folders, ``sequences/`` and the manifest's).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dplab._io import LOCK_NAME, atomic_file, folder_lock, remove_stale_temporaries, write_json_atomic
from dplab.optics.distortion import RDPD_DISTORTION_COEFFS
from dplab.optics.thin_lens import RDPD_CAMERA_SETS, RDPD_COC_CLIP_PX
from dplab.data.pngio import write_png
from dplab.optics.psf import PSF_BANK_PARAMS
from dplab.render.layered import render_dp
from dplab.render.scenes import random_scene

__all__ = ["SynthConfig", "SPLITS", "MANIFEST_NAME", "synthesize", "render_sample", "parse_size",
           "sample_generator", "png16_array"]

SPLITS = ("train", "val", "test")
MANIFEST_NAME = "dplab_synth.json"
FORMAT = "dplab-synth"
VERSION = 1
_PSFS = ("bank", "butterworth", "punnappurath")
#: What a dataset drawn by another renderer takes from SynthConfig (see synthesize's renderer).
_RENDERER_KEYS = ("count", "seed", "size", "split_fractions", "sequences")
_NOISE_STEP = 0.005  # RDPD's grid 0.05, 0.055, ..., 0.5
#: Memory one rendered image needs per pixel, with a margin (about 400 bytes measured at 1024 x 1536).
_BYTES_PER_PIXEL = 1024
_LAYOUT = {
    "{split}": "train | val | test; samples 0..count-1 in order by split_fractions (see 'splits')",
    "{split}_c/source/<id>.png": "combined = left + right, 16-bit RGB, value / 65535",
    "{split}_c/target/<id>.png": "sharp image (same distortion), 16-bit RGB",
    "{split}_l/source/<id>_L.png": "2 x left view (full brightness, as DPDD), 16-bit RGB",
    "{split}_r/source/<id>_R.png": "2 x right view, 16-bit RGB",
    "{split}_c/defocus/<id>.npy": "signed CoC in pixels (H, W) float32, positive behind focus",
    "{split}_c/meta/<id>.json": "camera set, PSF parameters, distortion, noise sigma",
    "sequences/{split}_{c,l,r}/.../seq_<k>/<t>[_L|_R].png|.npy":
        "the same for frame t of sequence k",
    "sequences/{split}_c/meta/seq_<k>.json": "camera set, PSF, distortion, noise of sequence k",
}


@dataclass(frozen=True)
class SynthConfig:
    """Everything a dataset's content depends on (recorded in the manifest).

    Args:
        count: number of single-image samples.
        seed: base seed.
        size: ``(H, W)`` of every image.
        split_fractions: fractions of train, val, test (sum 1).
        sequences: number of image sequences (0: none).
        frames: frames per sequence.
        psf: ``"bank"`` (a random Butterworth set of supp. Eq. S4 per sample),
            ``"butterworth"`` (default parameters) or ``"punnappurath"``.
        distortion: apply the camera set's radial distortion.
        noise_sigma: ``(min, max)``; sigma is drawn per sample from the 0.005 grid in it
            (RDPD: 0.05 to 0.5).
        coc_gain: multiplies every CoC (stronger or weaker blur than RDPD's cameras).
        max_layers: most depth layers.
        composite: ``"alpha"`` or ``"hard_mask"``.
    """

    count: int
    seed: int = 0
    size: tuple[int, int] = (512, 768)
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    sequences: int = 0
    frames: int = 4
    psf: str = "bank"
    distortion: bool = True
    noise_sigma: tuple[float, float] = (0.0, 0.05)
    coc_gain: float = 1.0
    max_layers: int = 500
    composite: str = "alpha"

    def __post_init__(self):
        def whole(name, low):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {v!r}")

        for name, low in (("count", 0), ("seed", 0), ("sequences", 0), ("frames", 1),
                          ("max_layers", 1)):
            whole(name, low)
        problems = []
        if not (len(self.size) == 2 and all(isinstance(v, int) and v >= 8 for v in self.size)):
            problems.append(f"size must be (H, W) with H, W >= 8, got {self.size!r}")
        f = self.split_fractions
        if not (len(f) == 3 and all(v >= 0 for v in f) and abs(sum(f) - 1) < 1e-6):
            problems.append(f"split_fractions must be three numbers >= 0 summing to 1, got {f!r}")
        if self.psf not in _PSFS:
            problems.append(f"psf must be one of {list(_PSFS)}, got {self.psf!r}")
        lo, hi = self.noise_sigma
        if not (0 <= lo <= hi and math.isfinite(hi)):
            problems.append(f"noise_sigma must be (min, max) with 0 <= min <= max, "
                            f"got {self.noise_sigma!r}")
        if not (self.coc_gain > 0 and math.isfinite(self.coc_gain)):
            problems.append(f"coc_gain must be > 0, got {self.coc_gain!r}")
        if self.composite not in ("alpha", "hard_mask"):
            problems.append(f"composite must be 'alpha' or 'hard_mask', got {self.composite!r}")
        if problems:
            raise ValueError("; ".join(problems))

    def to_json(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` -> ``(H, W)``.

    Example:
        >>> parse_size("512x768")
        (512, 768)
    """
    parts = str(text).lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"size must look like HxW (e.g. 512x768), got {text!r}")
    return int(parts[0]), int(parts[1])


def _split_ranges(n: int, fractions) -> dict[str, tuple[int, int]]:
    b1 = round(n * fractions[0])
    b2 = max(b1, round(n * (fractions[0] + fractions[1])))
    return {"train": (0, b1), "val": (b1, b2), "test": (b2, n)}


def _split_of(index: int, ranges) -> str:
    return next(s for s, (a, b) in ranges.items() if a <= index < b)


def sample_generator(*key: int) -> torch.Generator:
    """The random source of one sample: a function of ``key`` only (e.g. ``(seed, 0, index)``)."""
    state = np.random.SeedSequence(list(key)).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _draw(cfg: SynthConfig, g: torch.Generator) -> dict:
    """Camera set, PSF, distortion and noise level of one sample or sequence."""
    k = int(torch.randint(len(RDPD_CAMERA_SETS), (), generator=g))
    if cfg.psf == "bank":
        psf = list(PSF_BANK_PARAMS[int(torch.randint(len(PSF_BANK_PARAMS), (), generator=g))])
    else:
        psf = cfg.psf
    lo, hi = cfg.noise_sigma
    steps = int(math.floor((hi - lo) / _NOISE_STEP + 1e-9))
    sigma = round(lo + _NOISE_STEP * int(torch.randint(steps + 1, (), generator=g)), 6)
    cam = RDPD_CAMERA_SETS[k]
    return {"camera_set": k,
            "camera": {"focal_length_mm": cam.focal_length_mm, "f_number": cam.f_number,
                       "focus_distance_m": cam.focus_distance_m,
                       "pixel_pitch_um": cam.pixel_pitch_um},
            "psf": psf, "distortion": list(RDPD_DISTORTION_COEFFS[k]) if cfg.distortion else None,
            "noise_sigma": sigma}


def _render(cfg: SynthConfig, image, depth, params: dict, g: torch.Generator):
    scale = cfg.size[1] / 1920 * cfg.coc_gain
    coc = RDPD_CAMERA_SETS[params["camera_set"]].coc_px(depth.double()).float() * scale
    psf = tuple(params["psf"]) if isinstance(params["psf"], list) else params["psf"]
    s = render_dp(image, coc, psf=psf, composite=cfg.composite, max_layers=cfg.max_layers,
                  max_coc_px=RDPD_COC_CLIP_PX * scale, distortion=params["distortion"],
                  noise_sigma=params["noise_sigma"], generator=g)
    return s


def render_sample(cfg: SynthConfig, index: int) -> tuple[dict, dict]:
    """Arrays and metadata of single-image sample ``index`` (a function of ``(seed, index)``).

    Returns:
        ``(arrays, meta)``: ``arrays`` maps ``"combined"``, ``"target"``, ``"left"``,
        ``"right"`` to ``(H, W, 3)`` uint16 arrays (views at full brightness) and
        ``"defocus"`` to an ``(H, W)`` float32 CoC map in pixels.

    Example:
        >>> arrays, meta = render_sample(SynthConfig(count=1, size=(16, 24)), 0)
        >>> arrays["left"].shape, arrays["defocus"].dtype, sorted(meta)[:2]
        ((16, 24, 3), dtype('float32'), ['camera', 'camera_set'])
    """
    g = sample_generator(cfg.seed, 0, index)
    scene = random_scene(cfg.size, g)
    image, depth = scene.render(0)
    params = _draw(cfg, g)
    s = _render(cfg, image, depth, params, g)
    return _arrays(s, 0), {**params, "index": index, "num_layers": s.num_layers[0]}


def png16_array(x: torch.Tensor) -> np.ndarray:
    """``(C, H, W)`` in [0, 1] (clipped) -> ``(H, W, C)`` uint16 ``round(65535 x)``, as synth stores it."""
    a = x.detach().clamp(0, 1).mul(65535).round().to(torch.int32).cpu().numpy()
    return a.transpose(1, 2, 0).astype(np.uint16)


def _arrays(s, b: int) -> dict:
    return {"combined": png16_array(s.combined[b]), "target": png16_array(s.sharp[b]),
            "left": png16_array(2 * s.left[b]), "right": png16_array(2 * s.right[b]),
            "defocus": s.coc_px[b, 0].detach().cpu().numpy().astype(np.float32)}


# ----------------------------------------------------------------------------- files
def _write_bytes(path: Path, data: bytes) -> None:
    """Write through a temporary file in the same folder and an atomic rename."""
    with atomic_file(path) as handle:
        handle.write(data)


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _paths(root: Path, split: str, sub: str, name: str) -> dict[str, Path]:
    """Files of one sample; ``sub`` is ``""`` or ``"seq_<k>/"``."""
    return {"combined": root / f"{split}_c" / "source" / f"{sub}{name}.png",
            "target": root / f"{split}_c" / "target" / f"{sub}{name}.png",
            "left": root / f"{split}_l" / "source" / f"{sub}{name}_L.png",
            "right": root / f"{split}_r" / "source" / f"{sub}{name}_R.png",
            "defocus": root / f"{split}_c" / "defocus" / f"{sub}{name}.npy"}


def _write_file(path: Path, array: np.ndarray) -> None:
    """One file of a sample, atomically: ``.npy`` (float map) or 16-bit PNG."""
    if path.suffix == ".npy":
        _write_bytes(path, _npy_bytes(array))
    else:
        write_png(path, array, overwrite=True)  # temporary file + rename as well


def _write_sample(paths: dict[str, Path], arrays: dict) -> None:
    for key, path in paths.items():
        _write_file(path, arrays[key])


def _owned_entries(out: Path) -> list[Path]:
    names = {f"{s}_{v}" for s in SPLITS for v in "clr"} | {"sequences", MANIFEST_NAME}
    return [p for p in out.iterdir() if p.name in names]


def _check_memory(cfg: SynthConfig) -> None:
    """Refuse a size whose rendering cannot fit in this machine's memory (rather than fail
    in the allocator after writing the manifest)."""
    h, w = cfg.size
    need = _BYTES_PER_PIXEL * h * w
    try:
        have = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):      # sysconf names this platform does not know
        return
    if need > have:
        raise ValueError(f"--size {h}x{w} needs about {need / 2**30:.0f} GiB of memory to render one "
                         f"image, more than this machine's {have / 2**30:.0f} GiB; choose a smaller --size")


def _prepare(out: Path, cfg: SynthConfig, overwrite: bool, renderer=None) -> bool:
    """Check what ``out`` holds (called with the folder's lock held) and remove what an
    interrupted run of synth left half-written; whether ``out`` holds this dataset, complete."""
    manifest = out / MANIFEST_NAME
    complete = False
    ours = (LOCK_NAME, f".{MANIFEST_NAME}.")          # the lock; the manifest's temporary files
    if any(not p.name.startswith(ours) for p in out.iterdir()):
        old = None
        if manifest.is_file():
            try:
                old = json.loads(manifest.read_text())
            except (OSError, ValueError):
                old = None
        config = _config_json(cfg, renderer)
        same = (old is not None and old.get("format") == FORMAT
                and old.get("config") == config)
        complete = same and old.get("complete") is True
        if not same and not overwrite:
            if old is None:
                raise FileExistsError(f"--out {out} is not empty and holds no {MANIFEST_NAME}; "
                                      "choose an empty folder or pass --overwrite")
            diff = {k: (old.get("config", {}).get(k), v) for k, v in config.items()
                    if old.get("config", {}).get(k) != v}
            raise FileExistsError(f"--out {out} holds a dataset made with other arguments "
                                  f"(recorded vs now: {diff}); resume with the same arguments, "
                                  "or pass --overwrite to replace it")
        if not same:  # overwrite: remove what synth writes, keep anything else
            for p in _owned_entries(out):
                shutil.rmtree(p) if p.is_dir() else p.unlink()
    # Temporary files of a run that was killed: we hold the lock, so no live run owns them.
    remove_stale_temporaries(out, [MANIFEST_NAME])
    for entry in _owned_entries(out):
        if entry.is_dir():
            remove_stale_temporaries(entry, recursive=True)
    return complete


def _config_json(cfg: SynthConfig, renderer) -> dict:
    """What a resumed run must match: the arguments and, with a renderer, its record (in place
    of RDPD's options, which it does not use)."""
    if renderer is None:
        return cfg.to_json()
    return {**{k: v for k, v in cfg.to_json().items() if k in _RENDERER_KEYS}, "renderer": renderer.config()}


def _manifest(cfg: SynthConfig, complete: bool, renderer=None) -> dict:
    return {"format": FORMAT, "version": VERSION, "config": _config_json(cfg, renderer), "complete": complete,
            "splits": {k: list(v) for k, v in
                       _split_ranges(cfg.count, cfg.split_fractions).items()},
            "sequence_splits": {k: list(v) for k, v in
                                _split_ranges(cfg.sequences, cfg.split_fractions).items()},
            "layout": _LAYOUT}


def synthesize(out, cfg: SynthConfig, *, overwrite: bool = False, progress: bool = True,
               renderer=None) -> dict:
    """Write (or finish writing) the dataset ``cfg`` to ``out``; see the module docstring.

    Args:
        out: output folder (created if missing).
        cfg: what to write.
        overwrite: replace an existing dataset made with other arguments (or a non-empty
            folder without a manifest); only the entries synth writes are removed.
        progress: show a tqdm progress bar.
        renderer: another generator of single-image samples in place of RDPD's (e.g.
            :class:`dplab.xin.phone_data.PhoneRenderer`): an object with ``config() -> dict``
            (recorded in the manifest; resuming requires the same) and ``sample(index) ->
            (arrays, meta)`` as :func:`render_sample`. ``cfg`` then gives the count, seed,
            size and splits; its PSF, distortion, noise and compositing are not used, and
            sequences are refused.

    Returns:
        ``{"written": n, "skipped": m}`` counted in samples and frames.

    Raises:
        FileExistsError: ``out`` is not empty and holds another dataset (without ``overwrite``).
        dplab._io.FolderInUseError: another process is writing ``out``.
        ValueError: one image of ``cfg.size`` would not fit in this machine's memory.

    Example:
        >>> import tempfile
        >>> out = Path(tempfile.mkdtemp())
        >>> synthesize(out, SynthConfig(count=2, size=(16, 24)), progress=False)
        {'written': 2, 'skipped': 0}
        >>> sorted(p.name for p in (out / "train_l" / "source").iterdir())
        ['00000_L.png', '00001_L.png']
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"--out {out} exists and is not a folder")
    _check_memory(cfg)
    if renderer is not None and cfg.sequences:
        raise ValueError(f"sequences={cfg.sequences}: a renderer of single images writes no sequences; "
                         "pass sequences=0")
    if renderer is not None and list(renderer.config().get("size", cfg.size)) != list(cfg.size):
        raise ValueError(f"the renderer draws {renderer.config()['size']} images but cfg.size is {cfg.size}; "
                         "build both from the same size")
    with folder_lock(out, f"python -m dplab synth (seed {cfg.seed}, count {cfg.count})"):
        complete = _prepare(out, cfg, overwrite, renderer)
        return _write_all(out, cfg, progress, complete, renderer)


def _write_all(out: Path, cfg: SynthConfig, progress: bool, complete: bool, renderer=None) -> dict:
    """Every sample and frame not complete yet, then the manifest marked complete (a complete
    dataset keeps its manifest as it is meanwhile: a reader, ``train`` say, may be using it)."""
    from tqdm.auto import tqdm

    if not complete:
        write_json_atomic(out / MANIFEST_NAME, _manifest(cfg, complete=False, renderer=renderer))
    ranges = _split_ranges(cfg.count, cfg.split_fractions)
    seq_ranges = _split_ranges(cfg.sequences, cfg.split_fractions)
    width = max(5, len(str(max(cfg.count - 1, 0))))
    written = skipped = 0
    with tqdm(total=cfg.count + cfg.sequences * cfg.frames, disable=not progress,
              desc="synth", unit="img") as bar:
        for i in range(cfg.count):
            split, name = _split_of(i, ranges), f"{i:0{width}d}"
            paths = _paths(out, split, "", name)
            meta_path = out / f"{split}_c" / "meta" / f"{name}.json"
            if all(p.is_file() for p in paths.values()) and meta_path.is_file():
                skipped += 1
            else:
                arrays, meta = render_sample(cfg, i) if renderer is None else renderer.sample(i)
                _write_sample(paths, arrays)
                write_json_atomic(meta_path, {**meta, "id": name, "split": split})
                written += 1
            bar.update()
        for k in range(cfg.sequences):
            split, seq = _split_of(k, seq_ranges), f"seq_{k:03d}"
            root = out / "sequences"
            g = sample_generator(cfg.seed, 1, k)
            scene = random_scene(cfg.size, g, motion=True)
            params = _draw(cfg, g)
            meta_path = root / f"{split}_c" / "meta" / f"{seq}.json"
            if not meta_path.is_file():
                write_json_atomic(meta_path, {**params, "sequence": k, "frames": cfg.frames,
                                              "split": split})
            for t in range(cfg.frames):
                paths = _paths(root, split, f"{seq}/", f"{t:05d}")
                if all(p.is_file() for p in paths.values()):
                    skipped += 1
                else:
                    image, depth = scene.render(t)
                    s = _render(cfg, image, depth, params, sample_generator(cfg.seed, 2, k, t))
                    _write_sample(paths, _arrays(s, 0))
                    written += 1
                bar.update()
    if not complete or written:
        write_json_atomic(out / MANIFEST_NAME, _manifest(cfg, complete=True, renderer=renderer))
    return {"written": written, "skipped": skipped}
