"""DPM-OT (Li et al., ICCV 2023): an optimal-transport jump from a source measure straight to data latents,
then a short tail sampler from sigma_star to 0.

1. **Latents** ``y_i = x_0^(i) + sigma_star eps_i`` for the rows of a data split (held-out by default, as
   the reference code), with ``eps_i`` row i of ``SampleNoise(seed, N, stream=LATENT_STREAM)``
   (:func:`make_latents`; the map's ``seed`` names the draw).
2. **The map**: semi-discrete OT (:class:`~dpmot_bench.ot.SemiDiscreteOT`) from the source to the latents,
   weights 1/N (:func:`fit_ot_map`). Its ``meta_`` records how it was made (dataset, sigma_star, preset,
   split, ...), and is what :meth:`SemiDiscreteOT.save` writes into the OT file.
3. **Sampling** (:func:`sample_dpmot`): ``z = source.draw(noise)`` (the first draw of each sample's noise),
   ``index = argmax_i <z, y_i> + h_i``, ``y = y_index`` (hard map, the paper) or the softmax(scores / tau)
   average of the latents (smooth map, the follow-up paper), then a tail sampler from sigma_star to 0 on y.
   NFE = the tail's denoiser calls; the OT jump costs none.

Presets
-------
``paper`` (sampler ``dpm-ot-paper``) follows the reference code's pipeline: a uniform source on the data's
range ``[min, max]^d`` (the reference's [0, 1]^d pixels), latents from the held-out split at level L - K of
NCSNv2's geometric schedule, the ``adam-mc`` solver, K = NFE - 1 annealed Langevin steps and one Tweedie
denoise. One deviation: the reference's stop rule (|g| < 8e-4) sits below the Monte-Carlo noise floor and
never fires, so it runs 10,000 iterations; the preset stops at that noise floor (``stop="noise-floor"``:
digits, 450 latents: 714 iterations, 264 s on the loaded 2-core machine, l1 mass error 0.052 against a
measurement floor of 0.033). NCSNv2's CIFAR-10 schedule (sigma_1 = 50, sigma_L = 0.01, L = 232, step_lr = 6.2e-6) is for
pixels in [0, 1]; we scale every length by the data's range ``c = max - min`` (digits in [-1, 1]: c = 2, so
sigma_1 = 100, sigma_L = 0.02) and step_lr, a squared length, by c^2. What the method's behaviour depends on
is then unchanged: sigma_star / c (0.0139 at K = 10, as CIFAR's level 222), the per-step variance fraction
a_L / sigma_L^2 = 0.062, L and K. The reference code starts its Langevin chain at level L - ceil(K/5) with 5
steps per level although the latents sit at level L - K (``reference_levels=True`` reproduces this); the
default (fixed) chain takes one step on each of the K levels L - K, ..., L - 1. K = 0 (NFE 1) puts the
latents at sigma_L and spends the one call on the denoise.

``default`` (sampler ``dpm-ot``): a Gaussian source N(0, I) (the abstract's white noise), held-out latents at
``sigma_star = 3 m / sqrt(d)`` with m the median nearest-neighbour distance of the held-out points (the
latent noise norm sigma_star sqrt(d) is three spacings of the stored points, so the posterior given a latent
spans several of them instead of naming one), the fast ``newton-qmc`` solver, the hard map, and a
DPM-Solver++(2M) tail on a Karras grid from sigma_star to min(0.002, sigma_star / 10). sigma_star is then
0.0024 (gmm-ring8), 0.022 (gmm-grid25), 0.30 (gmm-hd) and 0.89 (digits, on [-1, 1]).

Evidence (sweeps of sigma_star, tails and NFE run while building this module; n = 2000 samples = N latents
for the GMMs (exact denoisers), n = 900 for digits (the trained denoiser); a converged hard map uses every
latent with probability 1/N, so the map was emulated by a uniform random index). ``hq`` = share of samples
within the 99.73% chi-square radius of their nearest mode; ``spread`` = their mean squared Mahalanobis radius
/ d (a true sample: 1.00 on gmm-hd, 0.945 on gmm-grid25 after that truncation); ``copy`` = share of samples
closer to a held-out point than 99% of true samples are (true samples: 0.010; digits: train images).

=============================== ===================== ===================== =====================
gmm-hd, hq / spread / copy      NFE 5                 NFE 10                NFE 20
=============================== ===================== ===================== =====================
dpmpp-2m (Karras 80 -> 0.002)   0.001 / 1.58 / 0.000  0.888 / 1.39 / 0.001  0.989 / 1.12 / 0.006
euler                           0.927 / 1.00 / 0.054  0.938 / 0.63 / 0.182  0.993 / 0.76 / 0.073
dpm-ot-paper (fixed levels)     0.999 / 0.94 / 1.000  0.997 / 0.98 / 1.000  0.993 / 1.10 / 0.631
dpm-ot default (0.30)           0.993 / 1.12 / 0.011  0.997 / 1.05 / 0.016  0.998 / 1.01 / 0.018
dpm-ot, sigma_star 0.78         0.976 / 1.16 / 0.004  0.994 / 1.09 / 0.011  0.996 / 1.02 / 0.017
dpm-ot, 0.31, ancestral tail    1.000 / 0.42 / 0.405  1.000 / 0.64 / 0.109  1.000 / 0.80 / 0.048
dpm-ot, 0.31, heun tail         0.152 / 1.60 / 0.000  0.998 / 1.00 / 0.018  0.998 / 1.02 / 0.016
=============================== ===================== ===================== =====================

=============================== ===================== ===================== =====================
gmm-grid25, hq / spread         NFE 5                 NFE 10                NFE 20
=============================== ===================== ===================== =====================
dpmpp-2m                        0.011 / 3.29          0.576 / 3.10          0.994 / 0.83
dpm-ot-paper (fixed levels)     1.000 / 0.30          1.000 / 0.36          1.000 / 0.47
dpm-ot default (0.022)          1.000 / 1.00          1.000 / 1.00          1.000 / 1.00
dpm-ot, sigma_star 0.83         1.000 / 0.76          0.997 / 0.95          0.998 / 0.99
dpm-ot, sigma_star 2.07         0.471 / 2.62          0.993 / 0.73          0.995 / 0.95
=============================== ===================== ===================== =====================

=============================== ===================== ===================== =====================
digits: copy / median distance  NFE 5                 NFE 10                NFE 20
to the nearest train image (a held-out image: 0.010 / 2.09)
=============================== ===================== ===================== =====================
dpmpp-2m                        0.000 / 3.05          0.000 / 2.76          0.000 / 2.54
euler                           0.000 / 2.65          0.002 / 2.47          0.001 / 2.47
diffusers-dpmpp-2m              0.002 / 2.34          0.002 / 2.31          0.000 / 2.36
dpm-ot-paper (NFE 5, 11, 20)    1.000 (0.16 from its  1.000 (0.23)          1.000 (0.34)
                                held-out image)
dpm-ot, sigma_star 0.2          0.998                 0.998 (NFE 11)        1.000
dpm-ot, sigma_star 0.6          0.034 / 2.24          0.038 / 2.21          0.040 / 2.21
dpm-ot default (0.89)           0.003 / 2.37          0.003 / 2.32          0.003 / 2.30
=============================== ===================== ===================== =====================

So: the paper preset copies the held-out data wherever the data are sparse (gmm-hd, digits: copy rate 1.0;
its latent noise is far below the spacing of the stored points) and is under-dispersed on gmm-grid25 (its
noise, 0.09-0.16, exceeds the modes' std 0.05 and one denoise at sigma_L cannot remove it). A fixed fraction
of the data range cannot serve both: 0.1 c is right for gmm-hd but copies on digits (0.2: copy 1.0); the
spacing rule adapts (3 spacings: digits copy 0.003, as close to the training images at NFE 5 as the best
baseline, diffusers' DPM-Solver++, is at any NFE; image quality itself is for the metrics). With a
second-order ODE tail, modes stay tight and the spread right from NFE 5, where the plain solvers have not
converged; ancestral tails are under-dispersed at these budgets (their mean prediction discards the posterior
variance) and Heun wastes its budget at NFE 5. Measured on a shared, loaded 2-core machine.

Caveat, inherent to the hard map: with an ODE tail a sample is a deterministic function of its latent, so
there are at most N distinct samples (n = N gives 63% distinct, n = 4 N 25%). ``mode="smooth"`` interpolates
between latents instead: on gmm-hd (N = 500, sigma_star = 0.78, n = 2000, NFE 10) tau = 0.1 gives 86%
distinct samples with hq 0.993 / spread 1.02 / copy 0.021 (hard: 24% distinct, 0.992 / 1.07 / 0.008) and
tau = 0.5 all distinct but under-dispersed (spread 0.80). tau is in units of the scores <z, y_i> + h_i and
does not carry over between datasets, which is why the default stays hard.
"""
from __future__ import annotations

import math

import torch

from .. import schedules
from ..data import Dataset, get_dataset
from ..denoisers import Denoiser
from ..errors import InputError, ShapeError, unknown_name
from ..noise import SampleNoise
from ..ot.latents import LATENT_STREAM, data_range, dataset_latents, default_source
from .plans import SIGMA_MIN, check_nfe, plan
from .sampling import langevin_schedule, sample_langevin

PRESETS = ("default", "paper")

# NCSNv2's CIFAR-10 configuration (pixels in [0, 1]) as used by the reference code.
NCSN_SIGMA_1, NCSN_SIGMA_L, NCSN_LEVELS, NCSN_STEP_LR, NCSN_STEPS_PER_LEVEL = 50.0, 0.01, 232, 6.2e-6, 5

# The presets (evidence: module docstring). sigma_star_nn: the default's sigma_star sqrt(d) in units of the
# median nearest-neighbour distance of the latents' clean points; "fit": fit_ot_map defaults (n_latents,
# solver options).
DEFAULT = {"source": "gaussian", "sigma_star_nn": 3.0, "solver": "newton-qmc", "tail": "dpmpp-2m",
           "mode": "hard", "fit": {}}
PAPER = {"source": "uniform", "solver": "adam-mc", "fit": {"stop": "noise-floor"}}


def as_dataset(dataset: str | Dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else get_dataset(dataset)


def median_nn_distance(x: torch.Tensor, chunk: int = 1024) -> float:
    """The median distance from each row of x to its nearest other row (chunked: O(chunk * n) memory)."""
    nearest = []
    for start in range(0, x.shape[0], chunk):
        d = torch.cdist(x[start:start + chunk].double(), x.double())
        d[torch.arange(d.shape[0]), torch.arange(start, start + d.shape[0])] = math.inf
        nearest.append(d.min(1).values)
    return float(torch.cat(nearest).median())


def ncsn_levels(scale: float) -> torch.Tensor:
    """NCSNv2's CIFAR-10 levels with every length multiplied by ``scale`` (the data range)."""
    return schedules.geometric(NCSN_SIGMA_1 * scale, NCSN_SIGMA_L * scale, NCSN_LEVELS)


def paper_tail(scale: float, nfe: int, reference_levels: bool = False) -> tuple[float, torch.Tensor, list[int]]:
    """The paper preset for an NFE budget: ``(sigma_star, tail grid ending at 0, Langevin steps per level)``
    (see the module docstring; K = nfe - 1)."""
    k = check_nfe(nfe) - 1
    levels = ncsn_levels(scale)
    n_levels = len(levels)
    if k >= n_levels:
        raise InputError(f"the paper preset has {n_levels} levels, so at most {n_levels} NFE; got {nfe}")
    latent = min(n_levels - k, n_levels - 1)
    if reference_levels:
        start, counts = n_levels - math.ceil(k / NCSN_STEPS_PER_LEVEL), langevin_schedule(k, NCSN_STEPS_PER_LEVEL)
    else:
        start, counts = latent, [1] * k
    start = min(start, n_levels - 1)
    return float(levels[latent]), schedules.append_zero(levels[start:]), counts or [0]


def make_latents(dataset: Dataset, sigma_star: float, *, split: str = "heldout", n: int | None = None,
                 seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(latents, clean)``: ``clean`` the first n rows of ``split``, ``latents = clean + sigma_star eps``
    (:func:`dpmot_bench.ot.latents.dataset_latents`)."""
    return dataset_latents(dataset, sigma_star, split, n, seed), dataset.data(split, n)[0]


def preset_sigma_star(dataset: Dataset, preset: str, nfe: int | None = None, split: str = "heldout") -> float:
    """The latent noise level a preset uses for ``dataset`` (the paper's depends on the budget)."""
    if preset not in PRESETS:
        raise unknown_name("DPM-OT preset", preset, PRESETS)
    if preset == "default":
        clean, _ = dataset.data(split)
        return DEFAULT["sigma_star_nn"] * median_nn_distance(clean) / math.sqrt(dataset.dim)
    if nfe is None:
        raise InputError("the paper preset's latent level depends on the budget: pass nfe")
    low, high = data_range(dataset, split)
    return paper_tail(high - low, nfe)[0]


def fit_ot_map(dataset: str | Dataset, preset: str = "default", *, nfe: int | None = None, seed: int = 0,
               device: str | torch.device = "cpu", progress: bool = False, sigma_star: float | None = None,
               source: str | None = None, split: str = "heldout", n_latents: int | None = None,
               solver: str | None = None, **solver_options):
    """Fit a preset's OT map for ``dataset``: the one-off cost of DPM-OT, separate from sampling.

    ``paper`` needs ``nfe`` (its latent level L - K depends on K = nfe - 1); ``default`` does not. Any
    preset value can be overridden: ``sigma_star`` (absolute), ``source`` (gaussian | uniform), ``split``,
    ``n_latents`` (first rows of the split; all by default), ``solver`` and its options. Returns the fitted
    :class:`~dpmot_bench.ot.SemiDiscreteOT` with ``meta_`` describing it.
    """
    from ..ot import SemiDiscreteOT

    dataset = as_dataset(dataset)
    level_sigma = preset_sigma_star(dataset, preset, nfe, split)
    config = PAPER if preset == "paper" else DEFAULT
    sigma_star = level_sigma if sigma_star is None else float(sigma_star)
    solver_options = {**config["fit"], **solver_options}
    preset_latents = solver_options.pop("n_latents", None)
    latents, _ = make_latents(dataset, sigma_star, split=split, n=preset_latents if n_latents is None else n_latents,
                              seed=seed)
    ot_map = SemiDiscreteOT(default_source(source or config["source"], dataset, split), solver=solver or config["solver"],
                            seed=seed, device=device, progress=progress, **solver_options).fit(latents)
    ot_map.meta_ = {"dataset": dataset.name, "preset": preset, "sigma_star": sigma_star, "split": split,
                    "n_latents": latents.shape[0], "latent_seed": seed, "latent_stream": list(LATENT_STREAM),
                    "data_range": list(data_range(dataset, split)), **({"nfe": nfe} if preset == "paper" else {})}
    return ot_map


def check_map(ot_map, dataset: Dataset) -> float:
    """The map's sigma_star, after checking that it is a fitted map for ``dataset``."""
    meta = getattr(ot_map, "meta_", None)
    if not hasattr(ot_map, "h_") or not isinstance(meta, dict):
        raise InputError("ot_map must be a fitted map from fit_ot_map() or SemiDiscreteOT.load()")
    if meta.get("dataset") not in (None, dataset.name):
        raise InputError(f"the OT map was fitted for dataset {meta['dataset']!r}, not {dataset.name!r}; "
                         "fit one for this dataset (or omit --ot)")
    if ot_map.targets_.shape[1] != dataset.dim:
        raise ShapeError(f"the OT map's targets have {ot_map.targets_.shape[1]} dimensions but {dataset.name} "
                         f"has {dataset.dim}")
    sigma_star = meta.get("sigma_star")
    if not isinstance(sigma_star, (int, float)) or not math.isfinite(sigma_star) or sigma_star < 0:
        raise InputError(f"the OT map's meta has no valid sigma_star (got {sigma_star!r}); refit it")
    return float(sigma_star)


def tail_sampler(sigma_star: float, scale: float, nfe: int, *, preset: str = "default", mode: str | None = None,
                 tau: float | None = None, tail: str | None = None, reference_levels: bool = False,
                 **tail_options):
    """``(fn, sigmas, options)``: the tail from ``sigma_star`` to 0 spending ``nfe`` calls, after checking
    every DPM-OT option (``scale`` is the data range c, which sets the paper preset's levels).

    ``preset="paper"``: the Langevin tail of :func:`paper_tail` (``reference_levels`` switches to the
    reference code's level mismatch); sigma_star must be that budget's latent level.
    ``preset="default"``: any baseline ``tail`` (default ``DEFAULT["tail"]``) planned by
    :func:`~dpmot_bench.samplers.plans.plan` from sigma_star (``sigma_min`` defaults to
    min(0.002, sigma_star / 10)); ``tail_options`` go to the plan (grid, rho, eta, ...).
    ``mode``: ``hard`` (default) or ``smooth`` (softmax average with temperature ``tau``).
    """
    nfe = check_nfe(nfe)
    if preset not in PRESETS:
        raise unknown_name("DPM-OT preset", preset, PRESETS)
    if (mode or DEFAULT["mode"]) not in ("hard", "smooth"):
        raise unknown_name("transport mode", mode, ("hard", "smooth"))
    if tau is not None and not (isinstance(tau, (int, float)) and math.isfinite(tau) and tau > 0):
        raise InputError(f"tau must be a finite number > 0, got {tau!r}")
    if preset == "paper":
        if tail is not None or tail_options:
            raise InputError("the paper preset's tail is fixed (K Langevin steps + 1 denoise); "
                             f"it takes no tail or {', '.join(tail_options) or 'tail options'}")
        level_sigma, sigmas, counts = paper_tail(scale, nfe, reference_levels)
        if not math.isclose(sigma_star, level_sigma, rel_tol=1e-6):
            raise InputError(f"this OT map has sigma_star={sigma_star:.6g} but the paper preset at NFE {nfe} "
                             f"needs its latents at level L-K, sigma={level_sigma:.6g}; fit a map for this NFE")
        return sample_langevin, sigmas, {"step_lr": NCSN_STEP_LR * scale ** 2, "steps_per_level": counts}
    if reference_levels:
        raise InputError("reference_levels applies to the paper preset only")
    if "sigma_max" in tail_options:
        raise InputError("the tail starts at the map's sigma_star; sigma_max cannot be set")
    if sigma_star <= 0:
        raise InputError("a tail sampler needs sigma_star > 0")
    tail_options.setdefault("sigma_min", min(SIGMA_MIN, sigma_star / 10))
    return plan(tail or DEFAULT["tail"], nfe, sigma_max=sigma_star, **tail_options)


def sample_dpmot(denoiser: Denoiser, ot_map, noise: SampleNoise, nfe: int, *, dataset: str | Dataset,
                 preset: str = "default", mode: str | None = None, tau: float | None = None,
                 **tail_args) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-OT samples for the rows of ``noise``: ``(x, index)``, spending ``nfe`` denoiser calls (the tail
    of :func:`tail_sampler`, which documents the options)."""
    dataset = as_dataset(dataset)
    sigma_star = check_map(ot_map, dataset)
    low, high = ot_map.meta_.get("data_range") or data_range(dataset, ot_map.meta_.get("split", "heldout"))
    fn, sigmas, options = tail_sampler(sigma_star, high - low, nfe, preset=preset, mode=mode, tau=tau, **tail_args)
    z = ot_map.source.draw(noise)
    index = ot_map.assign(z)
    y = ot_map.targets_[index] if (mode or DEFAULT["mode"]) == "hard" else ot_map.transport(z, "smooth", tau)
    x = fn(denoiser, y.to(device=noise.device, dtype=noise.dtype), sigmas, noise=noise, **options)
    return x, index.to(noise.device)
