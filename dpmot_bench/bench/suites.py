"""Benchmark suites: which datasets, samplers, NFEs and seeds are measured, and the side studies.

``quick`` is the default of ``dpmot report``: it must finish in under 10 minutes on 2 CPU cores from an
empty cache (including model and classifier training). ``full`` is for a bigger machine or a GPU.
``tiny`` exists for the test suite (a whole report in seconds).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import unknown_name

ALL_SAMPLERS = ("dpm-ot", "dpm-ot-paper", "euler", "heun", "dpmpp-2m", "dpmpp-3m", "ancestral", "langevin",
                "diffusers-ddim", "diffusers-dpmpp-2m", "diffusers-unipc", "diffusers-heun")
QUICK_SAMPLERS = tuple(s for s in ALL_SAMPLERS if s not in ("diffusers-ddim", "diffusers-dpmpp-2m", "diffusers-heun"))
NFE_GRID = (1, 2, 5, 10, 20, 50)


UNIBENCH_KINDS = {"simple": ("simple", "train"), "complex": ("complex", "train"),
                  "complex-heldout": ("complex", "heldout"), "simple-heldout": ("simple", "heldout")}
UNIBENCH_ARMS = ("text", "matcher", "both")


@dataclass(frozen=True)
class UniBench:
    """UniBench-small (UPainting's benchmark, at this machine's scale; bench/unibench.py): per dataset and
    prompt kind, ``prompts`` prompts (evenly spaced over the kind's list) x ``samples`` samples each, on the
    same seeds and source noise in every arm. Kinds (:data:`UNIBENCH_KINDS`): ``simple`` (one class in plain
    words, wordings of the training templates), ``complex`` (compositional, training wordings),
    ``complex-heldout`` / ``simple-heldout`` (wordings never seen in training).

    ``design="one-at-a-time"``: the arms x kinds x NFE with the default schedule and input (the first of
    each; sampler ``dpmpp-2m``), then for the ``both`` arm on ``factor_kinds`` of ``factor_datasets`` each
    other schedule and each other input at the first NFE; ``"factorial"``: UPainting's arm (``both``) at
    every schedule x input at the first NFE, the other arms and NFEs at the defaults. Both add
    DPM-OT composed (class-conditional map + guided tail, arm ``both``) at ``dpmot_nfes`` on
    ``dpmot_datasets``. ``seeds``: None for the suite's."""
    datasets: tuple[str, ...]
    kinds: tuple[str, ...] = ("simple", "complex", "complex-heldout")
    arms: tuple[str, ...] = UNIBENCH_ARMS
    nfes: tuple[int, ...] = (10,)
    schedules: tuple[str, ...] = ("skip-noisiest",)  # the first is the default
    inputs: tuple[str, ...] = ("blend",)  # the first is the default
    factor_kinds: tuple[str, ...] = ("complex",)
    factor_datasets: tuple[str, ...] = ("gmm-grid25", "digits")
    dpmot_nfes: tuple[int, ...] = ()
    dpmot_datasets: tuple[str, ...] = ("gmm-grid25", "digits")
    seeds: tuple[int, ...] | None = None
    prompts: int = 8
    samples: int = 50
    design: str = "one-at-a-time"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    datasets: tuple[str, ...]
    samplers: tuple[str, ...] = ALL_SAMPLERS
    nfes: tuple[int, ...] = NFE_GRID
    seeds: tuple[int, ...] = (0, 1, 2)
    n_samples: dict = field(default_factory=dict)  # dataset -> samples per cell
    n_latents: dict = field(default_factory=dict)  # dataset -> DPM-OT targets (first rows of held-out; all if absent)
    sampler_latents: dict = field(default_factory=dict)  # (dataset, sampler) -> targets, overriding n_latents
    # DPM-OT's sigma_star trade-off (novelty vs quality): datasets, levels relative to the data range
    # (max - min over coordinates of the held-out split), the tail NFE.
    sweep_datasets: tuple[str, ...] = ()
    sweep_sigmas: tuple[float, ...] = ()
    sweep_nfe: int = 10
    figure_nfe: int = 10  # sample scatters / digit grids at this NFE
    train_loss_datasets: tuple[str, ...] = ()  # trained vs exact denoising loss
    # DPM-OT's quality against its number of latents N (GMMs; at sweep_nfe), beside the finite-N floor
    latent_curve_datasets: tuple[str, ...] = ()
    latent_curve_sizes: tuple[int, ...] = ()
    ot_benchmarks: str | None = None  # "quick" / "full" OT kernel and solver benchmarks
    bound_checks: str | None = None  # "quick" / "full" error-bound checks
    floor_repeats: int = 5
    claim_nfe: int = 10  # the claims table: DPM-OT at this NFE ...
    reference_nfe: int = 50  # ... against the best ODE sampler at this one
    regenerate: str | None = None  # the command that regenerates the report (default: dpmot report --suite NAME)
    unibench: UniBench | None = None  # UPainting's UniBench-small (bench/unibench.py)
    # the suite whose claims decide what this one cannot power: its claims.json is read from the report
    # folder beside this one (reports/<decided_by>/claims.json), when it is there
    decided_by: str | None = None

    def latents_for(self, dataset: str, sampler: str = "dpm-ot") -> int | None:
        return self.sampler_latents.get((dataset, sampler), self.n_latents.get(dataset))

    def samples_for(self, dataset: str) -> int:
        return self.n_samples.get(dataset, 1000)


SUITES = {
    "quick": Suite(
        "quick", "every DPM-OT preset and baseline x NFE {1,2,5,10,20,50} x 3 seeds on gmm-grid25 (2000 latents, the "
        "paper preset's slow adam-mc fits 250; 500 samples) and digits (450 latents, 300 samples); diffusers' UniPC (diffusers' DDIM, DPM-Solver++ and Heun equal ours by test and "
        "run in the full suite); sigma_star sweep on digits; OT and error-bound checks (quick versions); UniBench-small's "
        "quick slice on gmm-grid25 (UPainting; the whole of it: the upainting suite)",
        datasets=("gmm-grid25", "digits"), samplers=QUICK_SAMPLERS,
        n_samples={"gmm-grid25": 500, "digits": 300},
        n_latents={"gmm-grid25": 2000},  # the whole held-out split: the latent count no longer limits DPM-OT
        # the paper preset's adam-mc takes 80-190 s per map at N = 2000 (one map per NFE): 250 in the quick suite
        sampler_latents={("gmm-grid25", "dpm-ot-paper"): 250},
        sweep_datasets=("digits",), sweep_sigmas=(0.01, 0.1, 1.0),
        latent_curve_datasets=("gmm-grid25",), latent_curve_sizes=(50, 125, 250, 500, 1000, 2000),
        train_loss_datasets=("gmm-ring8",), ot_benchmarks="quick", bound_checks="quick",
        # UniBench-small's quick slice: gmm-grid25 only (digits' prompted models take ~100 s to train from an
        # empty cache, past the 10-minute budget); both datasets in the upainting suite
        unibench=UniBench(("gmm-grid25",), schedules=("skip-noisiest", "constant", "late"),
                          inputs=("blend", "x0", "x_sigma"), dpmot_nfes=(5,), seeds=(0, 1), prompts=6, samples=40),
        decided_by="full"),
    "full": Suite(
        "full", "all samplers x NFE grid x 5 seeds on every dataset (2000 samples per cell on the GMMs, 450 on digits; "
        "DPM-OT over the whole held-out split, the paper preset's slow adam-mc over 500 GMM latents); sigma_star "
        "sweeps and latent-count curves up to N = 2000; full OT benchmarks (d = 3072 solver rows at N = 2000 and "
        "10 000); the quick error-bound checks (the full sweep, `dpmot check-bound --suite full`, takes over an hour "
        "on one core here and runs alone)",
        datasets=("gmm-ring8", "gmm-grid25", "gmm-hd", "digits"), seeds=(0, 1, 2, 3, 4),
        # Powered from the quick run: its W2 tests on gmm-grid25 needed 2800-4100 samples per cell at 3 seeds
        # for 80% power; 5 seeds shrink the paired interval by ~sqrt(5/3) x t(2)/t(4) = 1.8x, so 2000 suffice.
        # Digits' FD tests needed ~1.4e5 samples per cell, more than the data set holds (450 held-out rows):
        # this machine cannot power them, and the report says so.
        n_samples={"gmm-ring8": 2000, "gmm-grid25": 2000, "gmm-hd": 2000, "digits": 450},
        # adam-mc takes 80-190 s per map at N = 2000, one map per NFE and dataset (about 45 min for three GMMs)
        sampler_latents={(d, "dpm-ot-paper"): 500 for d in ("gmm-ring8", "gmm-grid25", "gmm-hd")},
        sweep_datasets=("gmm-ring8", "gmm-grid25", "gmm-hd", "digits"),
        sweep_sigmas=(0.003, 0.01, 0.03, 0.1, 0.25, 0.5, 1.0, 2.0),
        train_loss_datasets=("gmm-ring8", "gmm-grid25", "gmm-hd"), ot_benchmarks="full", bound_checks="quick",
        latent_curve_datasets=("gmm-grid25", "gmm-hd"), latent_curve_sizes=(50, 125, 250, 500, 1000, 2000)),
    "upainting": Suite(
        "upainting", "UniBench-small alone: the three arms, UPainting's arm at every schedule x guidance input at NFE "
        "10, each arm's default at NFE 5 and 20, on digits and gmm-grid25, simple / complex / held-out-wording "
        "complex and simple prompts (8 each, 50 samples per prompt), 3 seeds, and DPM-OT composed at NFE 5 and 10",
        datasets=(), samplers=(), seeds=(0, 1, 2),
        unibench=UniBench(("gmm-grid25", "digits"), kinds=("simple", "complex", "complex-heldout", "simple-heldout"),
                          nfes=(10, 5, 20), schedules=("skip-noisiest", "constant", "late", "early", "ramp-up",
                                                       "ramp-down", "cosine"),
                          inputs=("blend", "x0", "x_sigma"), dpmot_nfes=(5, 10), design="factorial")),
    "tiny": Suite(
        "tiny", "a smoke-test suite: two samplers, two NFEs, two seeds on gmm-ring8",
        datasets=("gmm-ring8",), samplers=("dpm-ot", "euler"), nfes=(2, 5), seeds=(0, 1),
        n_samples={"gmm-ring8": 200}, n_latents={"gmm-ring8": 100}, sweep_datasets=("gmm-ring8",), sweep_sigmas=(0.02, 0.25), sweep_nfe=5,
        latent_curve_datasets=("gmm-ring8",), latent_curve_sizes=(20, 100),
        figure_nfe=5, floor_repeats=2),
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise unknown_name("suite", name, SUITES)
    return SUITES[name]
