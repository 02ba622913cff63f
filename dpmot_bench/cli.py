"""The ``dpmot`` command (also ``python -m dpmot_bench``).

Every sub-command takes ``--seed``, ``--device`` and ``--quiet``. Bad input ends with one line on stderr
and exit status 2, and nothing half-written on disk; any other exception is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .errors import InputError


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage dump) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _non_negative_seed(args) -> None:
    if args.seed < 0:
        raise InputError(f"--seed must be >= 0, got {args.seed}")


# ------------------------------------------------------------------------------------------ commands
def cmd_datasets(args) -> int:
    from .data import dataset_names, get_dataset

    datasets = [get_dataset(name) for name in dataset_names()]
    if args.json:
        print(json.dumps([{"name": d.name, "dim": d.dim, "shape": list(d.shape), "classes": d.n_classes,
                           "description": d.description} for d in datasets], indent=2))
    else:
        width = max(len(d.name) for d in datasets)
        for d in datasets:
            print(f"{d.name:<{width}}  {d.description}")
    return 0


# [cmd fit-ot]
def _check_out(path: str, suffix: str | None, flag: str = "--out"):
    """An output file path: right suffix, not a directory, its folder creatable and writable (checked
    before any work, by creating an unnamed temp file; the folder is created only when the file is written)."""
    from pathlib import Path

    from .io import can_create_in

    out = Path(path)
    if suffix is not None and out.suffix != suffix:
        raise InputError(f"{flag} must name a {suffix} file, got {path!r}")
    if out.is_dir():
        raise InputError(f"{flag} {path!r} is a directory; name a file")
    folder = out.parent.absolute()
    while not folder.exists():  # the nearest existing ancestor must let us create the rest
        folder = folder.parent
    if not folder.is_dir() or not can_create_in(folder):
        raise InputError(f"cannot write {path!r}: {str(folder)!r} is not a writable directory")
    return out


def _source(args, dataset):
    from .ot.latents import default_source
    from .ot.sources import GaussianSource, UniformSource

    other = ("source_low", "source_high") if args.source == "gaussian" else ("source_mean", "source_std")
    given = [f"--{flag.replace('_', '-')}" for flag in other if getattr(args, flag) is not None]
    if given:
        raise InputError(f"{', '.join(given)} do(es) not apply to --source {args.source}")
    source = default_source(args.source, dataset, args.split)
    if args.source == "gaussian" and (args.source_mean is not None or args.source_std is not None):
        return GaussianSource(dataset.dim, 0.0 if args.source_mean is None else args.source_mean,
                              1.0 if args.source_std is None else args.source_std)
    if args.source == "uniform" and (args.source_low is not None or args.source_high is not None):
        return UniformSource(dataset.dim, source.low if args.source_low is None else args.source_low,
                             source.high if args.source_high is None else args.source_high)
    return source


def cmd_fit_ot(args) -> int:
    from .data import get_dataset
    from .errors import check_sigma
    from .ot.distributed import is_main_process, process_group
    from .ot.latents import fit_latent_map

    out = _check_out(args.out, ".npz")
    if args.checkpoint is not None:
        _check_out(args.checkpoint, None, "--checkpoint")
    check_sigma(args.sigma, "--sigma", allow_zero=True)
    for flag, low in (("n_targets", 2), ("max_iter", 1), ("eval_samples", 1), ("check_samples", 1)):
        if getattr(args, flag) is not None and getattr(args, flag) < low:
            raise InputError(f"--{flag.replace('_', '-')} must be >= {low}")
    if args.eval_samples is not None:  # the library's bound, before the fit
        from .ot.estimator import check_mass_samples

        check_mass_samples(args.eval_samples, "--eval-samples")
    if args.tol is not None and not 0 < args.tol <= 2:  # also NaN; l1 mass errors lie in [0, 2]
        raise InputError(f"--tol must be a number in (0, 2], the l1 cell-mass error to reach (e.g. 0.01), "
                         f"got {args.tol}")
    dataset = get_dataset(args.dataset)
    source = _source(args, dataset)
    with process_group(args.device) as device:  # under torchrun: one process per rank, Monte Carlo shared out
        given = {"max_iter": args.max_iter, "tol": args.tol, "check_samples": args.check_samples}
        options = {key: value for key, value in given.items() if value is not None}
        ot = fit_latent_map(dataset, args.sigma, source=source, split=args.split, n_latents=args.n_targets,
                            seed=args.seed, solver=args.solver, solver_options=options, device=device,
                            progress=not args.quiet, checkpoint=args.checkpoint)
        check = ot.check_
        if args.eval_samples is not None:
            accuracy = ot.mass_errors(args.eval_samples, seed=args.seed)
        else:  # the fit's independent check is the measurement
            accuracy = {"l1_mass_error": check["l1_mass_error"], "max_rel_mass_error": check["max_rel_mass_error"],
                        "empty_cells": check["empty_cells"], "l1_noise_floor": check["noise_floor"]}
        if is_main_process():
            ot.save(out, **ot.meta_)
            summary = {"dataset": dataset.name, "split": args.split, "sigma_star": float(args.sigma),
                       "solver": ot.solver_, "source": source.to_meta(), "seed": args.seed,
                       "n_targets": ot.targets_.shape[0], "dim": ot.targets_.shape[1], "iterations": ot.n_iter_,
                       "seconds": round(ot.fit_seconds_, 3), "l1_mass_error": accuracy["l1_mass_error"],
                       "max_rel_mass_error": accuracy["max_rel_mass_error"], "empty_cells": accuracy["empty_cells"],
                       "n_source_samples": ot.n_source_samples_,
                       "eval_samples": check["n_samples"] if args.eval_samples is None else args.eval_samples,
                       "l1_noise_floor": accuracy["l1_noise_floor"], "tol": check["tol"], "converged": ot.converged_,
                       "solver_stopped": ot.solver_stopped_, "check_l1_mass_error": check["l1_mass_error"],
                       "check_max_rel_mass_error": check["max_rel_mass_error"],
                       "check_noise_floor": check["noise_floor"], "check_samples": check["n_samples"],
                       "check_exact": check["exact"], "out": str(out)}
            print(json.dumps(summary, indent=2))
    return 0


# [cmd sample]
def _sampler_options(items: list[str]) -> dict:
    """``--option KEY=VALUE`` pairs; VALUE is read as JSON (numbers, true/false) and else kept as text."""
    options = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise InputError(f"--option needs KEY=VALUE (e.g. --option mode=smooth), got {item!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def cmd_sample(args) -> int:
    import numpy as np

    from .data import get_dataset
    from .io import save_npz
    from .models import default_model, get_denoiser
    from .provenance import provenance
    from .samplers.dpmot import get_preset
    from .samplers.generate import DPMOT_SAMPLERS, check_rows, prepare

    # every check before any expensive work (an on-the-spot OT fit, training a model)
    dataset = get_dataset(args.dataset)
    out = _check_out(args.out, ".npz")
    check_rows(dataset, args.n, args.batch_size, args.device)
    sampler = args.sampler
    if args.preset is not None:
        if sampler not in DPMOT_SAMPLERS:
            raise InputError(f"--preset applies to {' and '.join(DPMOT_SAMPLERS)} only, not {sampler}")
        sampler = get_preset(args.preset)
    if args.ot is not None and args.sampler not in DPMOT_SAMPLERS:
        raise InputError(f"--ot applies to {' and '.join(DPMOT_SAMPLERS)} only, not {args.sampler}")
    options = _sampler_options(args.option)
    if args.model is not None and not args.model.strip():
        raise InputError("--model is empty; give exact, trained or a checkpoint path (or omit it for the default)")
    model = args.model if args.model is not None else default_model(dataset)
    denoiser = None
    if model not in ("exact", "trained"):  # a file: cheap to load and check now
        denoiser = get_denoiser(dataset.name, model, device=args.device)
    ot_map = None
    if args.ot is not None:
        from .ot import SemiDiscreteOT

        ot_map = SemiDiscreteOT.load(args.ot, device=args.device)
    job = prepare(dataset, sampler, args.nfe, options, ot_map=ot_map, device=args.device, progress=not args.quiet)
    if denoiser is None:  # may train the dataset's model on first use
        denoiser = get_denoiser(dataset.name, model, device=args.device, progress=not args.quiet)
    result = job.sample(denoiser, args.n, args.seed, device=args.device, batch_size=args.batch_size,
                        progress=not args.quiet)
    summary = {"out": str(out), "dataset": dataset.name, "sampler": args.sampler, "preset": args.preset,
               "nfe": args.nfe, "nfe_spent": result.nfe_spent, "n": args.n, "model": model, "ot": args.ot,
               "options": options, "seconds": result.seconds, "fit_seconds": result.fit_seconds}
    arrays = {"x": result.x.numpy()}
    if result.index is not None:
        arrays["index"] = result.index.numpy()
    meta = {**summary, "provenance": provenance(args.seed, args.device, torch.float32)}
    save_npz(out, **arrays, meta=np.array(json.dumps(meta, default=str)))
    print(json.dumps(summary, default=str))
    return 0


# [cmd train]
def cmd_train(args) -> int:
    import time
    from dataclasses import asdict, replace

    from .data import get_dataset
    from .models.registry import DEFAULT_SEED, cached_model_path, partial_path, train_cached
    from .models.training import TrainConfig, default_config, load_checkpoint, train_denoiser

    dataset = get_dataset(args.dataset)
    if args.steps is not None and args.steps < 1:
        raise InputError(f"--steps must be >= 1, got {args.steps}")
    if args.checkpoint_every < 1:
        raise InputError(f"--checkpoint-every must be >= 1, got {args.checkpoint_every}")
    out = None if args.out is None else _check_out(args.out, ".pt")
    if args.resume and out is not None and out.is_file() and args.steps is None:
        config = TrainConfig(**load_checkpoint(out)["config"])  # continue the stored run as it was set up
    else:
        config = replace(default_config(dataset), **({} if args.steps is None else {"steps": args.steps}))
    config.validate(dataset)  # fits the data and the memory, before any work
    checkpoint = out if out is not None else partial_path(cached_model_path(dataset, config, args.seed))
    if args.resume and not checkpoint.is_file():
        raise InputError(f"--resume: no unfinished run to continue at {str(checkpoint)!r} (for these --steps "
                         "and --seed); drop --resume to start a new run")
    begin = time.perf_counter()
    common = dict(device=args.device, progress=not args.quiet, resume=args.resume,
                  checkpoint_every=args.checkpoint_every)
    if out is None:
        path, history = train_cached(dataset, config, args.seed, **common)
    else:
        path, history = out, train_denoiser(dataset, config, seed=args.seed, checkpoint=out, **common)[1]
    tail = history["loss"][-100:]
    print(json.dumps({"dataset": dataset.name, "path": str(path), "steps": config.steps, "seed": args.seed,
                      "final_loss": sum(tail) / len(tail), "seconds": round(time.perf_counter() - begin, 3),
                      "model_trained": out is None and config == default_config(dataset)
                      and args.seed == DEFAULT_SEED, "config": asdict(config)}))
    return 0


# [cmd check-bound]
MAX_SEEDS = 1000

def cmd_check_bound(args) -> int:
    import pandas as pd

    from .errors import unknown_name
    from .io import ensure_writable_dir, write_json, write_text
    from .provenance import provenance
    from .theory import SUITES, fit_rates, plot_bound, run_bound_checks, summarise_rows, theory_datasets
    from .theory.summary import finite_json, format_report

    if args.dataset is not None and args.dataset not in theory_datasets():
        raise unknown_name("dataset", args.dataset, theory_datasets())
    if args.seeds is not None and not 1 <= args.seeds <= MAX_SEEDS:
        raise InputError(f"--seeds must be in [1, {MAX_SEEDS}] (each seed reruns every configuration, minutes "
                         f"apiece), got {args.seeds}")
    out = ensure_writable_dir(args.out) if args.out is not None else None
    seeds = [args.seed + i for i in range(args.seeds or len(SUITES[args.suite]["seeds"]))]
    rows = run_bound_checks(args.suite, device=args.device, progress=not args.quiet,
                            datasets=None if args.dataset is None else [args.dataset], seeds=seeds)
    result = {"configurations": summarise_rows(rows), "rates": fit_rates(rows),
              "provenance": provenance(args.seed, args.device, torch.float64, suite=args.suite, seeds=seeds)}
    if out is not None:
        write_text(out / "bound_rows.csv", pd.DataFrame(rows).to_csv(index=False))
        result["figures"] = [str(path) for path in plot_bound(rows, out)]
        write_json(out / "bound_checks.json", finite_json(result))
    print(json.dumps(finite_json(result), indent=2) if args.json else format_report(result))
    return 0


# [cmd fid]
def _sample_rows(path: str) -> torch.Tensor:
    """Array ``x`` of a sample file (``dpmot sample``'s .npz), as float32."""
    import numpy as np

    from .errors import CorruptFileError

    from .errors import NonFiniteError, ShapeError

    try:
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise CorruptFileError(f"{path!r} has no array 'x' (arrays: {', '.join(archive.files) or 'none'}); "
                                       "pass a file written by dpmot sample")
            x = archive["x"]
    except FileNotFoundError:
        raise CorruptFileError(f"sample file {path!r} does not exist") from None
    except IsADirectoryError:
        raise CorruptFileError(f"sample file {path!r} is a directory; pass a .npz file") from None
    except (OSError, ValueError, EOFError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CorruptFileError(f"{path!r} is not a readable .npz sample file ({first})") from None
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise CorruptFileError(f"{path!r}: x must be real numbers, got dtype {x.dtype}")
    if x.ndim not in (2, 4) or x.shape[0] < 2 or x[0].size == 0:
        raise ShapeError(f"{path!r}: x must be (n, d) rows or (n, C, H, W) images with n >= 2, got shape {x.shape}")
    x = torch.from_numpy(np.asarray(x, dtype=np.float32))
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{path!r}: x holds NaN or infinity")
    return x


def cmd_fid(args) -> int:
    from .data import get_dataset
    from .errors import ShapeError
    from .metrics import InceptionFeatures, frechet_distance, get_digits_classifier

    if args.features == "inception" and not args.inception_weights:
        raise InputError("--features inception needs --inception-weights FILE (a local copy of torch-fidelity's "
                         "weights-inception-2015-12-05-6726825d.pth; nothing is downloaded)")
    if args.reference is None and args.dataset is None:
        raise InputError("give the reference: --reference FILE.npz or --dataset NAME [--split train|heldout]")
    samples = _sample_rows(args.samples)
    dataset = get_dataset(args.dataset) if args.dataset else None
    reference = _sample_rows(args.reference) if args.reference else dataset.data(args.split)[0]
    if args.features == "digits":
        extract = get_digits_classifier(device=args.device, progress=not args.quiet).features
    else:
        inception = InceptionFeatures(args.inception_weights, device=args.device)
        shape = dataset.shape if dataset is not None else None

        def extract(x):
            if x.ndim == 2 and shape is None:
                raise ShapeError("flat samples need --dataset NAME to know their image shape")
            return inception(x.reshape(-1, *shape) if x.ndim == 2 else x)
    for name, x in (("samples", samples), ("reference", reference)):
        if args.features == "digits" and x[0].numel() != 64:
            raise ShapeError(f"the digits classifier takes 8x8 images (64 values per row); the {name} have "
                             f"{x[0].numel()}: use --features inception")
    fd = frechet_distance(extract(samples.to(args.device)).cpu(), extract(reference.to(args.device)).cpu())
    print(json.dumps({"fd": fd, "features": args.features, "n_samples": samples.shape[0],
                      "n_reference": reference.shape[0], "samples": args.samples,
                      "reference": args.reference or f"{args.dataset}:{args.split}"}, indent=2))
    return 0


# [cmd bench report]
def _suite_and_out(args):
    from pathlib import Path

    from .bench.suites import get_suite
    from .io import ensure_writable_dir

    suite = get_suite(args.suite)
    out = Path(args.out or Path("reports") / suite.name)
    ensure_writable_dir(out)
    return suite, out


def cmd_bench(args) -> int:
    from .bench.runner import run_suite
    from .io import write_json

    suite, out = _suite_and_out(args)
    rows = run_suite(suite, out, resume=args.resume, device=args.device, progress=not args.quiet)
    write_json(out / "work" / "rows.json", rows)
    print(json.dumps({"suite": suite.name, "rows": len(rows), "results": str(out / "work")}))
    return 0


def cmd_report(args) -> int:
    from .report.build import build_report

    suite, out = _suite_and_out(args)
    index = build_report(suite, out, resume=args.resume, device=args.device, progress=not args.quiet)
    print(index)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="dpmot", description=__doc__.splitlines()[0] + " DPM-OT benchmarks and checks.")
    parser.add_argument("--version", action="version", version=f"dpmot-bench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = _common(sub.add_parser("datasets", help="list the dataset names with a one-line description"))
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(run=cmd_datasets)

    # [parser fit-ot]
    from .ot import DEFAULT_SOLVER, SOLVER_NAMES

    p = _common(sub.add_parser("fit-ot", help="fit the semi-discrete OT map from a noise source to a dataset's "
                               "latents y = x + sigma * eps; writes the OT .npz and prints a JSON summary"))
    p.add_argument("--dataset", required=True, help="dataset name (see `dpmot datasets`)")
    p.add_argument("--sigma", type=float, required=True, help="latent noise level sigma_star (>= 0)")
    p.add_argument("--source", default="gaussian", choices=["gaussian", "uniform"],
                   help="source measure: N(0, 1) per coordinate (default) or the cube spanning the data range")
    p.add_argument("--source-mean", type=float, help="gaussian source mean (default 0)")
    p.add_argument("--source-std", type=float, help="gaussian source std (default 1)")
    p.add_argument("--source-low", type=float, help="uniform source lower bound (default: data minimum)")
    p.add_argument("--source-high", type=float, help="uniform source upper bound (default: data maximum)")
    p.add_argument("--solver", default=DEFAULT_SOLVER, help=f"one of {', '.join(SOLVER_NAMES)} (default "
                   f"{DEFAULT_SOLVER}: exact-2d in 2-D, else newton-qmc; adam-mc is the reference code's solver)")
    p.add_argument("--split", default="heldout", choices=["heldout", "train"], help="data split of the latents")
    p.add_argument("--n-targets", type=int, help="use the first N rows of the split (default: all / 2000)")
    p.add_argument("--max-iter", type=int, help="iteration cap (default: the solver's)")
    p.add_argument("--tol", type=float, help="the l1 cell-mass error to reach, in (0, 2]: converged is true only "
                   "when an independent check confirms it (default: exact-2d 1e-12; newton-qmc and adam-mc none, "
                   "the check then tests 0.01; newton-qmc grows its samples until the check agrees)")
    p.add_argument("--check-samples", type=int, help="most source points of that check (sampling solvers; default "
                   "2^26 with --tol, 2^20 without); it is sized so that its noise floor is at most tol / 2")
    p.add_argument("--eval-samples", type=int, help="measure the reported mass errors on this many further "
                   "independent source points (default: report the check's)")
    p.add_argument("--checkpoint", help="checkpoint file: written during the fit, resumed from when it exists")
    p.add_argument("--out", required=True, help="output .npz (targets, weights, h, meta)")
    p.set_defaults(run=cmd_fit_ot)

    # [parser sample]
    from .samplers.generate import SAMPLER_NAMES

    text = "draw N samples with a sampler at a given NFE; writes x (and index for DPM-OT) to a .npz"
    samplers = "\n".join(f"  {name:<19} {description}" for name, description in SAMPLER_NAMES.items())
    p = _common(sub.add_parser("sample", help=text, description=text,
                               formatter_class=argparse.RawDescriptionHelpFormatter,
                               epilog=f"samplers:\n{samplers}\n\nRow i of x depends only on --seed and i."))
    p.add_argument("--dataset", required=True, help="a dataset name (see dpmot datasets)")
    p.add_argument("--sampler", required=True, help="a sampler name (listed below)")
    p.add_argument("--nfe", type=int, required=True, help="denoiser calls per sample (DPM-OT: the tail's)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output .npz (arrays x, index for DPM-OT, meta as JSON)")
    p.add_argument("--ot", help="a fitted OT map (.npz, dpmot fit-ot) for dpm-ot / dpm-ot-paper; default: "
                                "fit the preset's map now")
    p.add_argument("--preset", help="a DPM-OT preset name (default, paper) for --sampler dpm-ot: its choices "
                                    "replace the sampler's own (overridden in turn by --option)")
    p.add_argument("--model", help="exact, trained or a checkpoint FILE (default: exact for GMMs, trained "
                                   "for digits)")
    p.add_argument("--batch-size", type=int, default=2048, help="rows per batch (default 2048); results do "
                                                                "not depend on it")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="a sampler option, repeatable, VALUE as JSON or text (e.g. grid=vp, eta=0.5; DPM-OT: "
                        "any preset field, sigma_star=0.1, mode=smooth, tau=0.05, tail=heun, n_latents=500, "
                        "'solver_options={\"max_iter\": 50}', and the tail's options); a bad key lists the valid ones")
    p.set_defaults(run=cmd_sample)

    # [parser train]
    text = ("train the dataset's denoiser network (EDM preconditioning and loss) on its train split, with "
            "atomic checkpoints; prints a JSON summary")
    p = _common(sub.add_parser("train", help=text, description=text, epilog=(
        "Without --out the model goes into the cache ($DPMOT_CACHE/models, default ~/.cache/dpmot-bench); "
        "with the default --steps and --seed 0 it is the one `--model trained` uses. The same seed gives "
        "the same weights, and a resumed run ends exactly where an uninterrupted one would.")))
    p.add_argument("--dataset", required=True, help="a dataset name (see dpmot datasets)")
    p.add_argument("--steps", type=int, help="optimiser steps (default: the dataset's tuned config)")
    p.add_argument("--out", help="write the checkpoint to this .pt file instead of the cache")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("--checkpoint-every", type=int, default=500, metavar="K",
                   help="write a checkpoint every K steps (default 500) and at the end")
    p.set_defaults(run=cmd_train)

    # [parser check-bound]
    text = ("check the error bounds of theory/bound.md numerically: per configuration the left side, every "
            "right-side term, the right side and whether the bound holds; fitted rates against predictions")
    p = _common(sub.add_parser("check-bound", help=text, description=text))
    p.add_argument("--dataset", help="gaussian, gmm-ring8, gmm-grid25 or gmm-hd (default: the suite's)")
    p.add_argument("--suite", default="quick", choices=["quick", "full", "tiny"],
                   help="quick (default, about a minute on 2 cores), full (an hour or more), tiny (seconds)")
    p.add_argument("--seeds", type=int, help="number of seeds --seed, --seed + 1, ... (default: the suite's 3 / 5)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--out", help="also write bound_rows.csv, bound_checks.json and the figures here")
    p.set_defaults(run=cmd_check_bound)

    # [parser fid]
    text = ("Frechet distance between a sample file and a reference (a sample file or a dataset split) in the "
            "digits classifier's features or, with a local weights file, InceptionV3's (comparable FID)")
    p = _common(sub.add_parser("fid", help=text, description=text))
    p.add_argument("--samples", required=True, help="a .npz with array x (dpmot sample --out)")
    p.add_argument("--reference", help="a .npz with array x to compare with")
    p.add_argument("--dataset", help="compare with this dataset's split (and give flat rows their image shape)")
    p.add_argument("--split", default="train", choices=["train", "heldout"], help="the dataset split (default train)")
    p.add_argument("--features", default="digits", choices=["digits", "inception"],
                   help="digits (the cached digits classifier, default) or inception (needs torch-fidelity)")
    p.add_argument("--inception-weights", help="local InceptionV3 weights file for --features inception")
    p.set_defaults(run=cmd_fid)

    # [parser bench report]
    for name, run, text in (("bench", cmd_bench, "run a benchmark suite (resumable) into OUT/work"),
                            ("report", cmd_report, "run a suite and write OUT/index.md, figures, results.csv/json")):
        p = _common(sub.add_parser(name, help=text, description=text))
        p.add_argument("--suite", default="quick", help="quick (default; < 10 min on 2 cores), full, or tiny")
        p.add_argument("--out", help="output directory (default reports/SUITE)")
        p.add_argument("--resume", action="store_true", help="keep finished cells of an interrupted run")
        p.set_defaults(run=run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _non_negative_seed(args)
        from .devices import as_device

        args.device = as_device(args.device)
        return args.run(args)
    except InputError as err:
        print(f"dpmot {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dpmot {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
