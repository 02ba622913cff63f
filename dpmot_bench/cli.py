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
    """argparse with one-line errors (no usage dump), exit status 2, and no abbreviated option names
    (``--data`` is never read as ``--dataset``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _common(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _data_arguments(parser: argparse.ArgumentParser, required: bool = True, what: str = "") -> None:
    """``--dataset NAME`` or ``--data PATH`` (one of them), and ``--value-range`` for a file's values."""
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--dataset", help=f"a dataset name (see dpmot datasets){what}")
    group.add_argument("--data", metavar="PATH", help="your own data: an .npz (array x [+ labels], or train and "
                       "heldout), an .npy, or a folder of PNG / JPEG images (see README, 'Your own data')")
    parser.add_argument("--value-range", nargs=2, type=float, metavar=("LOW", "HIGH"),
                        help="--data: the range the file's values come from (default: uint8 0..255; floats "
                             "[0, 1] or [-1, 1] when inside, else their min and max)")


def _dataset(args):
    """The Dataset named by --dataset or read from --data (None when neither is given)."""
    from .data import from_path, get_dataset

    if getattr(args, "value_range", None) is not None and args.data is None:
        raise InputError("--value-range applies to --data only")
    if args.data is not None:
        return from_path(args.data, value_range=args.value_range)
    return get_dataset(args.dataset) if args.dataset is not None else None


def _data_summary(dataset) -> dict:
    """What a command's JSON says about its data: the name, and for files the value range and description."""
    if dataset.fingerprint is None:
        return {"dataset": dataset.name}
    return {"dataset": dataset.name, "value_range": list(dataset.value_range), "data": dataset.description}


def _model_arguments(parser: argparse.ArgumentParser, default: str) -> None:
    parser.add_argument("--model", help=f"exact, trained, a dpmot checkpoint, a diffusers pipeline or UNet "
                        f"directory, or an NCSNv2 checkpoint (default: {default})")
    parser.add_argument("--model-config", metavar="FILE", help="the NCSNv2 YAML config of an NCSNv2 checkpoint")
    parser.add_argument("--scheduler", metavar="DIR", help="the diffusers scheduler directory of a UNet2DModel "
                        "directory (a pipeline directory has its own)")


def _check_model_arguments(args) -> None:
    if args.model is not None and not args.model.strip():
        raise InputError("--model is empty; give exact, trained or a model path (or omit it for the default)")
    if args.model is None and (args.model_config is not None or args.scheduler is not None):
        raise InputError("--model-config and --scheduler describe a --model file; give --model too")


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
    from .errors import check_sigma
    from .ot.distributed import is_main_process, process_group
    from .ot import native
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
    dataset = _dataset(args)
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
            summary = {**_data_summary(dataset), "split": args.split, "sigma_star": float(args.sigma),
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
                       "check_exact": check["exact"], "assignment_kernel": native.status(), "out": str(out)}
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
    from .models import default_model, get_denoiser
    from .models.select import choose_model
    from .samplers.dpmot import get_preset
    from .samplers.generate import DPMOT_SAMPLERS, check_rows, model_options, prepare

    # every check before any expensive work (an on-the-spot OT fit, training a model)
    dataset = _dataset(args)
    out = _check_out(args.out, ".npz")
    check_rows(dataset, args.n, args.batch_size, args.device)
    _check_model_arguments(args)
    sampler = args.sampler
    if args.preset is not None:
        if sampler not in DPMOT_SAMPLERS:
            raise InputError(f"--preset applies to {' and '.join(DPMOT_SAMPLERS)} only, not {sampler}")
        sampler = get_preset(args.preset)
    if args.ot is not None and args.sampler not in DPMOT_SAMPLERS:
        raise InputError(f"--ot applies to {' and '.join(DPMOT_SAMPLERS)} only, not {args.sampler}")
    options = _sampler_options(args.option)
    model = args.model if args.model is not None else default_model(dataset)
    denoiser, description = None, None
    prompted = args.prompt is not None
    if not prompted and any(v is not None for v in (args.cfg, args.guidance, args.schedule, args.guidance_input,
                                                    args.classes)):
        raise InputError("--cfg, --guidance, --schedule, --guidance-input and --classes guide a --prompt; give "
                         "--prompt TEXT")
    if prompted:
        return _sample_prompted(args, dataset, out, sampler, options)
    if model not in ("exact", "trained"):  # a file: cheap to load and check now; it fixes the data's scale
        choice = choose_model(dataset, model, config=args.model_config, scheduler=args.scheduler, device=args.device)
        dataset, denoiser, description = choice.dataset, choice.denoiser, choice.description
        options = model_options(args.sampler if args.preset is None else sampler, options, choice)
    ot_map = None
    if args.ot is not None:
        from .ot import SemiDiscreteOT

        ot_map = SemiDiscreteOT.load(args.ot, device=args.device)
    job = prepare(dataset, sampler, args.nfe, options, ot_map=ot_map, device=args.device, progress=not args.quiet)
    if denoiser is None:  # may train the dataset's model on first use
        denoiser = get_denoiser(dataset, model, device=args.device, progress=not args.quiet)
    result = job.sample(denoiser, args.n, args.seed, device=args.device, batch_size=args.batch_size,
                        progress=not args.quiet)
    summary = {"out": str(out), **_data_summary(dataset), "sampler": args.sampler, "preset": args.preset,
               "nfe": args.nfe, "nfe_spent": result.nfe_spent, "n": args.n, "model": model,
               **({"model_description": description} if description else {}), "ot": args.ot,
               "options": options, "seconds": result.seconds, "fit_seconds": result.fit_seconds}
    return _save_samples(out, result, summary, args)


def _save_samples(out, result, summary: dict, args) -> int:
    """Write a sample file (``x``, DPM-OT's ``index``, ``meta`` as JSON with provenance) atomically and print
    the summary."""
    import numpy as np

    from .io import save_npz
    from .provenance import provenance

    arrays = {"x": result.x.numpy()}
    if result.index is not None:
        arrays["index"] = result.index.numpy()
    meta = {**summary, "provenance": provenance(args.seed, args.device, torch.float32)}
    save_npz(out, **arrays, meta=np.array(json.dumps(meta, default=str)))
    print(json.dumps(summary, default=str))
    return 0


def _sample_prompted(args, dataset, out, sampler, options) -> int:
    """``dpmot sample --prompt``: the dataset's prompted models, any sigma-grid sampler or DPM-OT through a
    class-conditional map (samplers/prompted.py). Every check before the models are trained or loaded."""
    from .ot.latents import check_classes
    from .samplers.generate import DPMOT_SAMPLERS, prepare, sampler_options
    from .samplers.plans import check_nfe
    from .samplers.prompted import Guidance, check_prompt, check_sampler, sample_prompted

    if args.data is not None or args.model is not None:
        raise InputError("--prompt uses the dataset's own prompted models; it does not combine with --data or --model")
    if args.ot is not None or args.preset is not None:
        raise InputError("--prompt with dpm-ot fits a class-conditional map for the prompt (its classes: --classes, "
                         "or the matcher's reading); --ot and --preset do not apply")
    check_prompt(args.prompt)
    check_sampler(sampler)
    guidance = Guidance(cfg=2.0 if args.cfg is None else args.cfg, guidance=args.guidance or 0.0,
                        schedule=args.schedule or "skip-noisiest", input=args.guidance_input or "blend")
    classes = None
    if args.classes is not None:
        if sampler not in DPMOT_SAMPLERS:
            raise InputError(f"--classes chooses the latents of DPM-OT's map; {sampler} has none (use --sampler dpm-ot)")
        try:
            classes = [int(c) for c in args.classes.split(",")]
        except ValueError:
            raise InputError(f"--classes takes comma-separated integer labels (e.g. 7 or 1,3,5), got "
                             f"{args.classes!r}") from None
        check_classes(classes, dataset)
    if sampler not in DPMOT_SAMPLERS:
        prepare(dataset, sampler, args.nfe, options)  # the sampler, its options and the budget, before training
    else:
        sampler_options(sampler, options)
        check_nfe(args.nfe)
    from .models.prompted import get_prompted_models

    models = get_prompted_models(dataset.name, device=args.device, progress=not args.quiet)
    made = sample_prompted(models, args.prompt, sampler, args.nfe, args.n, args.seed, guidance=guidance,
                           classes=classes, options=options, device=args.device, batch_size=args.batch_size,
                           progress=not args.quiet)
    result = made.result
    summary = {"out": str(out), **_data_summary(dataset), "prompt": args.prompt, "cfg": guidance.cfg,
               "guidance": guidance.guidance, "schedule": guidance.schedule, "guidance_input": guidance.input,
               "sampler": args.sampler, "nfe": args.nfe, "nfe_spent": result.nfe_spent, "n": args.n,
               "model": "prompted", "model_description": f"text-conditional denoiser and matcher of {dataset.name} "
                                                         f"({models.path})",
               "classes": made.classes, "classes_chosen_by": made.chosen_by, "options": options,
               "seconds": result.seconds}
    return _save_samples(out, result, summary, args)


# [cmd train]
def cmd_train(args) -> int:
    import time
    from dataclasses import asdict, replace

    from .models.registry import DEFAULT_SEED, cached_model_path, partial_path, train_cached
    from .models.training import TrainConfig, default_config, load_checkpoint, train_denoiser

    dataset = _dataset(args)
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
    print(json.dumps({**_data_summary(dataset), "path": str(path), "steps": config.steps, "seed": args.seed,
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


def _sample_range(path: str):
    """The value range of a sample file's rows, from its meta (dpmot sample on --data records it)."""
    import numpy as np

    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(str(archive["meta"])) if "meta" in archive.files else {}
    except (OSError, ValueError):
        return None
    value = meta.get("value_range") if isinstance(meta, dict) else None
    return tuple(value) if isinstance(value, list) and len(value) == 2 else None


def cmd_fid(args) -> int:
    from .errors import ShapeError
    from .metrics import (InceptionFeatures, feature_statistics, frechet_distance_from_stats,
                          get_digits_classifier, kernel_inception_distance, load_fid_stats)

    if args.features == "inception" and not args.inception_weights:
        raise InputError("--features inception needs --inception-weights FILE (a local copy of pytorch-fid's "
                         "pt_inception-2015-12-05-6726825d.pth or torch-fidelity's "
                         "weights-inception-2015-12-05-6726825d.pth; nothing is downloaded)")
    files = [flag for flag, value in (("--reference", args.reference), ("--reference-stats", args.reference_stats))
             if value]
    if len(files) > 1 or not (files or args.dataset or args.data):
        raise InputError("give one reference: --reference FILE.npz, --reference-stats FILE.npz (Inception) or "
                         "--dataset NAME / --data PATH [--split train|heldout] (which also gives flat rows "
                         "their image shape)")
    if args.reference_stats and args.features != "inception":
        raise InputError("--reference-stats holds Inception statistics: use it with --features inception")
    samples = _sample_rows(args.samples)
    dataset = _dataset(args)
    shape = dataset.shape if dataset is not None else None
    data_range = dataset.value_range if dataset is not None and dataset.value_range else (-1.0, 1.0)
    value_range = tuple(args.sample_range) if args.sample_range else _sample_range(args.samples) or data_range
    if not value_range[0] < value_range[1]:
        raise InputError(f"--sample-range needs LOW < HIGH, got {value_range}")
    reference, reference_range = None, data_range
    if args.reference:
        reference = _sample_rows(args.reference)
        reference_range = _sample_range(args.reference) or data_range
    elif dataset is not None and not args.reference_stats:
        reference = dataset.data(args.split)[0]
    if args.features == "digits":
        classifier = get_digits_classifier(device=args.device, progress=not args.quiet)

        def extract(x, _):
            return classifier.features(x)
    else:
        inception = InceptionFeatures(args.inception_weights, device=args.device)

        def extract(x, value_range):  # images mapped from their value range to Inception's [-1, 1]
            if x.ndim == 2 and shape is None:
                raise ShapeError("flat samples need --dataset NAME or --data PATH to know their image shape")
            low, high = value_range
            images = x.reshape(-1, *shape) if x.ndim == 2 else x
            return inception((images - low) * (2 / (high - low)) - 1, progress=not args.quiet)
    for name, x in (("samples", samples), ("reference", reference)):
        if x is not None and args.features == "digits" and x[0].numel() != 64:
            raise ShapeError(f"the digits classifier takes 8x8 images (64 values per row); the {name} have "
                             f"{x[0].numel()}: use --features inception")
    with torch.no_grad():
        features = extract(samples.to(args.device), value_range).cpu()
        reference_features = None if reference is None else extract(reference.to(args.device), reference_range).cpu()
    stats = load_fid_stats(args.reference_stats) if args.reference_stats else feature_statistics(reference_features)
    result = {"fd": frechet_distance_from_stats(*feature_statistics(features), *stats), "features": args.features,
              "n_samples": samples.shape[0], "n_reference": None if reference is None else reference.shape[0],
              "samples": args.samples,
              "reference": args.reference or args.reference_stats or f"{dataset.name}:{args.split}"}
    if dataset is not None and dataset.fingerprint is not None:
        result["value_range"] = list(value_range)
    if args.features == "inception" and reference_features is not None:
        kid = kernel_inception_distance(features, reference_features)
        result.update(kid_mean=kid["kid_mean"], kid_std=kid["kid_std"], kid_subset_size=kid["subset_size"])
    print(json.dumps(result, indent=2))
    return 0


# [cmd bench report]
def _suite_and_out(args):
    """The suite (restricted to --dataset, or run on --data with --model), its output folder, and the
    user's opened data and model (None for embedded data)."""
    from dataclasses import replace
    from pathlib import Path

    from .bench.suites import get_suite
    from .io import ensure_writable_dir

    suite = get_suite(args.suite)
    _check_model_arguments(args)
    user = None
    if args.dataset is not None:
        from .data import get_dataset

        get_dataset(args.dataset)  # a known name
        if args.model is not None:
            raise InputError("--model applies with --data (a model of your own data); the embedded datasets "
                             "use their exact or trained models")
        keep = lambda names: tuple(d for d in names if d == args.dataset)  # noqa: E731
        suite = replace(suite, name=f"{suite.name}-{args.dataset}", datasets=(args.dataset,),
                        sweep_datasets=keep(suite.sweep_datasets), train_loss_datasets=keep(suite.train_loss_datasets),
                        ot_benchmarks=None, bound_checks=None)
    elif args.data is not None:
        from .bench.experiment import Experiment, UserData

        experiment = Experiment(data=args.data, value_range=None if args.value_range is None else tuple(args.value_range),
                                model=args.model, model_config=args.model_config, scheduler=args.scheduler,
                                features="inception" if args.inception_weights else "raw",
                                inception_weights=args.inception_weights)
        user = UserData(experiment, args.device, not args.quiet)
        name = user.name
        suite = replace(suite, name=f"{suite.name}-{name}", datasets=(name,),
                        n_samples={name: max(suite.n_samples.values(), default=1000)}, n_latents={},
                        sweep_datasets=(), train_loss_datasets=(), ot_benchmarks=None, bound_checks=None,
                        description=f"{suite.name} suite's samplers, NFEs and seeds on {user.dataset.description}")
    elif args.value_range is not None or args.inception_weights is not None or args.model is not None:
        raise InputError("--value-range, --inception-weights and --model apply with --data")
    out = Path(args.out or Path("reports") / suite.name)
    ensure_writable_dir(out)
    return suite, out, user


def _check_run_arguments(args) -> None:
    from .threads import check_threads

    check_threads(args.threads, "--threads")
    check_threads(args.jobs, "--jobs")
    if args.jobs > 1 and args.data is not None:
        raise InputError("--jobs > 1 runs the embedded datasets only; a run on --data uses one process "
                         "(give it --threads, or a GPU)")


def cmd_bench(args) -> int:
    from .bench.runner import run_suite
    from .io import write_json

    _check_run_arguments(args)  # before the output folder is made
    suite, out, user = _suite_and_out(args)
    rows = run_suite(suite, out, resume=args.resume, device=args.device, progress=not args.quiet, user=user,
                     threads=args.threads, jobs=args.jobs)
    write_json(out / "work" / "rows.json", rows)
    print(json.dumps({"suite": suite.name, "rows": len(rows), "results": str(out / "work")}))
    return 0


def cmd_report(args) -> int:
    from .report.build import build_report

    _check_run_arguments(args)  # before the output folder is made
    suite, out, user = _suite_and_out(args)
    index = build_report(suite, out, resume=args.resume, device=args.device, progress=not args.quiet, user=user,
                         threads=args.threads, jobs=args.jobs)
    print(index)
    return 0


# [cmd reproduce]
def cmd_reproduce(args) -> int:
    from .report.reproduce import load_config, reproduce

    if args.example is not None:
        from .report.reproduce import example_configs

        examples = example_configs()
        if args.example not in examples:
            from .errors import unknown_name

            raise unknown_name("example experiment file", args.example, examples)
        print(examples[args.example].read_text(), end="")
        return 0
    if args.config is None:
        raise InputError("give the experiment file (dpmot reproduce CONFIG), or --example NAME to print one")
    config = load_config(args.config)
    device = args.device if args.device_given else config.device
    result = reproduce(config, device=device, out=args.out, resume=args.resume, progress=not args.quiet,
                       stage=args.stage)
    if args.stage == "fit":
        if result is not None:  # the main process (under torchrun)
            print(json.dumps({"maps": result}))
    else:
        print(result)
    return 0


# [cmd fid-stats]
def cmd_fid_stats(args) -> int:
    from .metrics.inception import InceptionFeatures, save_fid_stats
    from .metrics.frechet import feature_statistics

    out = _check_out(args.out, ".npz")
    if args.n is not None and args.n < 2:
        raise InputError(f"--n must be >= 2 (a covariance needs two images), got {args.n}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    dataset = _dataset(args)
    if len(dataset.shape) != 3:
        raise InputError(f"Inception statistics need images; {dataset.name} has rows of shape {dataset.shape}")
    inception = InceptionFeatures(args.inception_weights, device=args.device, batch_size=args.batch_size)
    x, _ = dataset.data(args.split, args.n)
    low, high = dataset.value_range
    features = []
    from tqdm.auto import tqdm

    for start in tqdm(range(0, x.shape[0], args.batch_size), disable=args.quiet, desc="inception", unit="batch"):
        rows = x[start:start + args.batch_size]
        features.append(inception(((rows - low) * (2 / (high - low)) - 1).reshape(-1, *dataset.shape)).cpu())
    mu, sigma = feature_statistics(torch.cat(features))
    save_fid_stats(out, mu, sigma, dataset=dataset.name, split=args.split, n=int(x.shape[0]),
                   weights=str(args.inception_weights), preprocessing=inception.preprocessing,
                   fingerprint=dataset.fingerprint)
    print(json.dumps({"out": str(out), **_data_summary(dataset), "split": args.split, "n": int(x.shape[0]),
                      "dim": int(mu.shape[0])}))
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
    _data_arguments(p)
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
    _data_arguments(p)
    p.add_argument("--sampler", required=True, help="a sampler name (listed below)")
    p.add_argument("--nfe", type=int, required=True, help="denoiser calls per sample (DPM-OT: the tail's)")
    p.add_argument("--n", type=int, required=True, help="number of samples")
    p.add_argument("--out", required=True, help="output .npz (arrays x, index for DPM-OT, meta as JSON)")
    p.add_argument("--ot", help="a fitted OT map (.npz, dpmot fit-ot) for dpm-ot / dpm-ot-paper; default: "
                                "fit the preset's map now")
    p.add_argument("--preset", help="a DPM-OT preset name (default, paper) for --sampler dpm-ot: its choices "
                                    "replace the sampler's own (overridden in turn by --option)")
    _model_arguments(p, "exact for GMMs, trained for other data")
    from .samplers.guidance import INPUTS, SCHEDULES

    p.add_argument("--prompt", help="a text prompt (digits, gmm-grid25): sample with the dataset's text-conditional "
                   "denoiser (trained on first use and cached; needs the .[text] extra)")
    p.add_argument("--cfg", type=float, help="--prompt: classifier-free guidance weight w (default 2; 1: none)")
    p.add_argument("--guidance", type=float, help="--prompt: matcher guidance scale s (default 0: none)")
    p.add_argument("--schedule", choices=SCHEDULES, help="--prompt: the matcher guidance schedule (default "
                   "skip-noisiest, UPainting's)")
    p.add_argument("--guidance-input", choices=INPUTS, help="--prompt: what the matcher sees (default blend, "
                   "UPainting's; x0: the clean estimate; x_sigma: the noisy sample)")
    p.add_argument("--classes", help="--prompt with dpm-ot: the classes of the map's latents, comma-separated "
                   "(default: those the matcher reads in the prompt)")
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
    _data_arguments(p)
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
    text = ("Frechet distance between a sample file and a reference (a sample file, a dataset split or Inception "
            "statistics) in the digits classifier's features or, with a local weights file, InceptionV3's (FID, KID)")
    p = _common(sub.add_parser("fid", help=text, description=text))
    p.add_argument("--samples", required=True, help="a .npz with array x (dpmot sample --out)")
    p.add_argument("--reference", help="a .npz with array x to compare with")
    p.add_argument("--reference-stats", metavar="FILE", help="Inception statistics to compare with (dpmot fid-stats)")
    _data_arguments(p, required=False, what="; compare with its split (and give flat rows their image shape)")
    p.add_argument("--split", default="train", choices=["train", "heldout"], help="the dataset split (default train)")
    p.add_argument("--features", default="digits", choices=["digits", "inception"],
                   help="digits (the cached digits classifier, default) or inception (FID and KID; a local "
                        "weights file, no other dependency)")
    p.add_argument("--inception-weights", help="local InceptionV3 weights file for --features inception")
    p.add_argument("--sample-range", nargs=2, type=float, metavar=("LOW", "HIGH"), help="the value range of the "
                   "sample rows (default: recorded by dpmot sample, else the dataset's, else [-1, 1])")
    p.set_defaults(run=cmd_fid)

    # [parser bench report]
    for name, run, text in (("bench", cmd_bench, "run a benchmark suite (resumable) into OUT/work"),
                            ("report", cmd_report, "run a suite and write OUT/index.md, figures, results.csv/json")):
        p = _common(sub.add_parser(name, help=text, description=text))
        p.add_argument("--suite", default="quick", help="quick (default; < 10 min on 2 cores), full, or tiny")
        _data_arguments(p, required=False, what="; only this one of the suite's datasets")
        _model_arguments(p, "trained (a network trained on --data)")
        p.add_argument("--inception-weights", metavar="FILE", help="--data images: FID / KID in InceptionV3 "
                       "features from this local weights file (default: Frechet distance of the raw rows)")
        p.add_argument("--out", help="output directory (default reports/SUITE)")
        p.add_argument("--resume", action="store_true", help="keep finished cells of an interrupted run")
        p.add_argument("--threads", type=int, default=1, help="torch CPU threads for the cells "
                       "(default 1: the cells' networks are small; more for a many-core CPU run of the full suite)")
        p.add_argument("--jobs", type=int, default=1, help="worker processes running cells side by side "
                       "(default 1; make report uses 2, this machine's cores); results do not depend on it")
        p.set_defaults(run=run)

    # [parser reproduce]
    text = ("run a paper protocol (model, data splits, presets, NFEs, sample counts, metrics, device) from an "
            "experiment file and write the report; resumable")
    p = _common(sub.add_parser("reproduce", help=text, description=text,
                               epilog="Example files: --example cifar10-ncsnv2 / celeba-ncsnv2 (NCSNv2, as the reference "
                                      "code). The file's device is used unless --device is given."))
    p.add_argument("config", nargs="?", help="the experiment file (.yml / .yaml / .toml)")
    p.add_argument("--example", metavar="NAME", help="print a shipped experiment file (cifar10-ncsnv2, "
                   "celeba-ncsnv2) to copy and edit, and exit")
    p.add_argument("--out", help="output directory (default: the file's out)")
    p.add_argument("--resume", action="store_true", help="keep finished cells of an interrupted run")
    p.add_argument("--stage", default="all", choices=["all", "fit"], help="fit: only fit the DPM-OT maps (run "
                   "it under torchrun to share the Monte Carlo out); all (default): the whole protocol")
    p.set_defaults(run=cmd_reproduce)

    # [parser fid-stats]
    text = "InceptionV3 reference statistics (mu, sigma) of a data split, in pytorch-fid's .npz format"
    p = _common(sub.add_parser("fid-stats", help=text, description=text))
    _data_arguments(p)
    p.add_argument("--split", default="train", choices=["train", "heldout"], help="the split (default train)")
    p.add_argument("--n", type=int, help="first N rows (default all; the papers use 50 000 training images)")
    p.add_argument("--inception-weights", required=True, metavar="FILE", help="local InceptionV3 weights")
    p.add_argument("--batch-size", type=int, default=100, help="images per forward pass (default 100)")
    p.add_argument("--out", required=True, help="output .npz (mu, sigma)")
    p.set_defaults(run=cmd_fid_stats)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _non_negative_seed(args)
        from .devices import as_device

        given = argv if argv is not None else sys.argv[1:]
        args.device_given = any(a == "--device" or a.startswith("--device=") for a in given)
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
