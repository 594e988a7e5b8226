"""Table 1 of Xin et al. (ICCV 2021) at full resolution on the released Pixel 4 scenes.

Subcommands (each writes a JSON record, with the command that made it, into ``--record-dir``;
large arrays go to ``--work-dir``, outside the repository):

* ``protocols``: dplab's full-resolution Wiener (:func:`dplab.xin.recipe.run_wiener`, the
  baseline of Table 1) and the blurred input on every scene, scored under every candidate
  protocol of :data:`dplab.xin.protocol.CANDIDATES` (the affine ones with one transform per
  method, found on the first scene, supplement D); the means side by side with the paper's
  Wiener row, and the candidate closest to it (sum of relative differences of PSNR, SSIM and
  MAE) -> ``protocol.json``.
* ``mpi``: the MPI of Xin et al. (12 layers, 10,000 iterations, the authors' per-scene settings)
  on each scene at full resolution, one after the other; each run checkpoints every 250
  iterations to ``<work-dir>/<scene>_mpi_ckpt.pt``, so a stopped run resumes where it was
  (run the same command again), and a finished scene is skipped.
* ``table``: Table 1 rows (blurred input, Wiener, MPI, MPI with the authors' ``run.py``
  bilateral filter) with :data:`dplab.xin.protocol.TABLE1`, and with the supplement's affine
  alignment (one per method, found on the first scene), for the scenes whose results exist,
  with the seconds per scene -> ``table1.json``.
* ``c2f``: a coarse-to-fine schedule (``dplab.xin.mpi.optimize(coarse=...)``) against the
  single-scale schedule on one scene at a downscaled size: final loss, all-in-focus PSNR
  (TABLE1), AIWE(1) and seconds -> ``c2f_<scene>_ds<f>.json``.

    DPLAB_DATA=/path/to/data OMP_NUM_THREADS=1 .venv/bin/python benchmarks/xin_table1.py protocols
    DPLAB_DATA=... .venv/bin/python benchmarks/xin_table1.py mpi [--scenes 001 002] [--iterations 10000]
    DPLAB_DATA=... .venv/bin/python benchmarks/xin_table1.py table
    DPLAB_DATA=... .venv/bin/python benchmarks/xin_table1.py c2f --scene 001 --downscale 2 \\
        --iterations 1000 --coarse 4:2000,2:1000 --fine-iterations 250
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from dplab._io import write_json_atomic
from dplab.data import pixel4
from dplab.eval.pixel4 import machine_info as _machine
from dplab.eval.pixel4 import method_affine as _method_affine
from dplab.xin import protocol as P
from dplab.xin import recipe as rx

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("psnr", "ssim", "mae")
PAPER_WIENER = rx.PAPER_TABLE1["Wiener deconvolution"]


def _command() -> str:
    env = " ".join(f"{k}={os.environ[k]}" for k in ("DPLAB_DATA", "OMP_NUM_THREADS") if k in os.environ)
    return (env + " " if env else "") + ".venv/bin/python benchmarks/xin_table1.py " + shlex.join(sys.argv[1:])


def _record(args, name: str, payload: dict) -> Path:
    path = Path(args.record_dir) / name
    write_json_atomic(path, {"command": _command(), "machine": _machine(), **payload})
    print(f"wrote {path}")
    return path


def _scenes(args) -> list[str]:
    available = pixel4.list_scenes(args.data_dir)
    return [s for s in (args.scenes or available) if s in available]


def _wiener(args, name: str, s: rx.XinScene) -> dict:
    """Full-resolution Wiener of one scene, computed once (``<work-dir>/<scene>_wiener.pt``)."""
    path = Path(args.work_dir) / f"{name}_wiener.pt"
    if path.is_file():
        return torch.load(path)
    t0 = time.perf_counter()
    aif, dmap = rx.run_wiener(s)
    out = {"all_in_focus": aif, "defocus": dmap, "seconds": time.perf_counter() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def _mean(rows: dict) -> dict:
    keys = next(iter(rows.values())).keys()
    return {k: sum(r[k] for r in rows.values()) / len(rows) for k in keys}


def _distance(m: dict, paper: dict) -> float:
    return sum(abs(m[k] - paper[k]) / paper[k] for k in METRICS)


def cmd_protocols(args):
    names = _scenes(args)
    data = {}
    for name in names:
        s = rx.load_xin_scene(name, args.data_dir)
        w = _wiener(args, name, s)
        data[name] = (s, {"wiener": w["all_in_focus"], "input": rx.blurred_input(s)}, w["seconds"])
        print(f"{name}: Wiener {w['seconds']:.1f} s", flush=True)
    rows = {}
    for label, proto in P.CANDIDATES.items():
        rows[label] = {"protocol": proto.__dict__, "description": proto.describe()}
        for method in ("wiener", "input"):
            first = data[names[0]]
            aff = _method_affine(first[0], first[1][method], proto)
            per = {n: rx.score(s, est[method], protocol=proto, affine=aff) for n, (s, est, _) in data.items()}
            rows[label][method] = {"mean": _mean(per), "per_scene": per,
                                   "affine": None if aff is None else aff.tolist()}
        m = rows[label]["wiener"]["mean"]
        rows[label]["distance_to_paper_wiener"] = _distance(m, PAPER_WIENER)
        print(f"{label:40s} Wiener {m['psnr']:.3f} / {m['ssim']:.3f} / {m['mae']:.4f}  "
              f"input {rows[label]['input']['mean']['psnr']:.3f}", flush=True)
    best = min(rows, key=lambda k: rows[k]["distance_to_paper_wiener"])
    table1 = next(k for k, p in P.CANDIDATES.items() if p == P.TABLE1)
    _record(args, "protocol.json", {
        "what": "dplab's full-resolution Wiener (run_wiener defaults: 16 hypotheses, 31-px window, B) and the "
                "blurred input (L+R)/2 on every released scene, scored under each candidate protocol; affine "
                "alignments are one per method, found on the first scene (supplement D)",
        "scenes": names, "wiener_seconds": {n: d[2] for n, d in data.items()},
        "paper_wiener_17_scenes": PAPER_WIENER, "closest": best, "table1_protocol": table1,
        "distance": "sum over PSNR, SSIM, MAE of |mean - paper| / paper", "candidates": rows})


def cmd_mpi(args):
    coarse = _parse_coarse(args.coarse)
    for name in _scenes(args):
        out = Path(args.work_dir) / f"{name}_mpi.pt"
        if out.is_file():
            print(f"{name}: done ({out})")
            continue
        s = rx.load_xin_scene(name, args.data_dir)
        t0 = time.perf_counter()
        aif, dmap, res = rx.run_mpi(s, n_layers=args.layers, iterations=args.iterations, log_every=100,
                                    coarse=coarse, checkpoint=Path(args.work_dir) / f"{name}_mpi_ckpt.pt",
                                    checkpoint_every=250, progress=True)
        torch.save({"all_in_focus": aif, "defocus": dmap, "seconds": res.seconds, "history": res.history,
                    "layers": args.layers, "iterations": args.iterations, "coarse": coarse}, out)
        print(f"{name}: MPI {res.seconds:.0f} s (this call {time.perf_counter() - t0:.0f} s), "
              f"loss {res.history[-1]['total']:.2f}", flush=True)


def cmd_table(args):
    names = _scenes(args)
    rows = {}
    affines = {}
    variants = {"TABLE1": P.TABLE1, "affine per method (supplement D)": P.Protocol(align="affine")}
    for i, name in enumerate(names):
        s = rx.load_xin_scene(name, args.data_dir)
        w = _wiener(args, name, s)
        est = {"input": (rx.blurred_input(s), None, 0.0), "wiener": (w["all_in_focus"], w["defocus"], w["seconds"])}
        mpi_path = Path(args.work_dir) / f"{name}_mpi.pt"
        if mpi_path.is_file():
            m = torch.load(mpi_path)
            est["mpi"] = (m["all_in_focus"], m["defocus"], m["seconds"])
            est["mpi + run.py bilateral"] = (P.authors_bilateral(m["all_in_focus"], rx.observation_stats(s)[1]),
                                             m["defocus"], m["seconds"])
        rows[name] = {}
        for vname, proto in variants.items():
            for method, (aif, dmap, _) in est.items():
                key = (vname, method)
                if key not in affines:          # the first scene that has the method
                    affines[key] = _method_affine(s, aif, proto)
                rows[name].setdefault(vname, {})[method] = rx.score(s, aif, dmap, protocol=proto, affine=affines[key])
        rows[name]["seconds"] = {k: v[2] for k, v in est.items()}
        print(f"{name}: " + ", ".join(f"{k} {v['psnr']:.2f}" for k, v in rows[name]["TABLE1"].items()), flush=True)
    means = {}
    for vname in variants:
        for method in ("input", "wiener", "mpi", "mpi + run.py bilateral"):
            have = [n for n in rows if method in rows[n][vname]]
            if have:
                keys = rows[have[0]][vname][method].keys()
                means.setdefault(vname, {})[method] = {
                    "scenes": have, **{k: sum(rows[n][vname][method][k] for n in have) / len(have) for k in keys}}
    _record(args, "table1.json", {
        "what": "Table 1 rows on the released scenes at full resolution (1008x1344); MPI: 12 layers and the "
                "authors' per-scene settings, where its result exists",
        "protocols": {k: v.describe() for k, v in variants.items()},
        "affines": {f"{v} / {m}": None if a is None else a.tolist() for (v, m), a in affines.items()},
        "paper_17_scenes": rx.PAPER_TABLE1, "per_scene": rows, "means": means})


def _parse_coarse(text):
    if not text:
        return None
    return tuple(tuple(int(v) for v in item.split(":")) for item in text.split(","))


def cmd_c2f(args):
    s = rx.load_xin_scene(args.scene, args.data_dir, downscale=args.downscale)
    coarse = _parse_coarse(args.coarse)
    runs = {"single scale": {"iterations": args.iterations},
            "coarse to fine": {"iterations": args.fine_iterations, "coarse": coarse}}
    out = {}
    for label, kw in runs.items():
        aif, dmap, res = rx.run_mpi(s, n_layers=args.layers, log_every=50, progress=True, **kw)
        fine = [h for h in res.history if h.get("level", 1) == 1]
        work = kw["iterations"] + (sum(n / f ** 2 for f, n in coarse or ()) if "coarse" in kw else 0)
        out[label] = {"schedule": kw, "full_resolution_iteration_equivalents": work, "seconds": res.seconds,
                      "final_loss": res.history[-1]["total"], "loss_curve": [(h.get("level", 1), h["iteration"],
                                                                               h["total"], h["seconds"]) for h in res.history],
                      "first_fine_loss": fine[0]["total"], **rx.score(s, aif, dmap)}
        print(f"{label}: {res.seconds:.0f} s, loss {out[label]['final_loss']:.2f}, PSNR {out[label]['psnr']:.3f}, "
              f"AIWE(1) {out[label]['aiwe1']:.4f}", flush=True)
    _record(args, f"c2f_{args.scene}_ds{args.downscale}.json", {
        "what": f"scene {args.scene} box-downsampled by {args.downscale} ({s.image_hw[0]}x{s.image_hw[1]}), "
                f"{args.layers} layers; coarse factors are relative to this size; PSNR with TABLE1",
        "runs": out})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("protocols", "mpi", "table", "c2f"))
    parser.add_argument("--data-dir", default=os.environ.get("DPLAB_DATA"))
    parser.add_argument("--work-dir", default=str(ROOT / "outputs" / "xin_table1"))
    parser.add_argument("--record-dir", default=str(ROOT / "benchmarks" / "results" / "xin_table1"))
    parser.add_argument("--scenes", nargs="*", help="scene ids (default: every scene present)")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--iterations", type=int, default=10_000, help="mpi: iterations; c2f: single-scale iterations")
    parser.add_argument("--coarse", default="", help="coarse levels 'factor:iterations,...' (mpi, c2f)")
    parser.add_argument("--fine-iterations", type=int, default=250, help="c2f: iterations at the finest level")
    parser.add_argument("--scene", default="001", help="c2f: the scene")
    parser.add_argument("--downscale", type=int, default=2, help="c2f: box downsampling of the scene")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    {"protocols": cmd_protocols, "mpi": cmd_mpi, "table": cmd_table, "c2f": cmd_c2f}[args.command](args)


if __name__ == "__main__":
    main()
