"""DPM-OT (Li et al., ICCV 2023): an optimal-transport jump from a source measure straight to data latents,
then a short tail sampler from sigma_star to 0.

1. **Latents** ``y_i = x_0^(i) + sigma_star eps_i`` for the rows of a data split (held-out by default, as
   the reference code), with ``eps_i`` row i of ``SampleNoise(seed, N, stream=LATENT_STREAM)``.
2. **The map**: semi-discrete OT from the source to the latents, weights 1/N
   (:func:`~dpmot_bench.ot.latents.fit_latent_map`, called by :meth:`Preset.fit`).
3. **Sampling** (:func:`sample_dpmot`): ``z = source.draw(noise)`` (the first draw of each sample's noise),
   ``index = argmax_i <z, y_i> + h_i``, ``y = y_index`` (hard map, the paper) or the softmax(scores / tau)
   average of the latents (smooth map, the follow-up paper), then a tail sampler from sigma_star to 0 on y.
   NFE = the tail's denoiser calls; the OT jump costs none.

Presets
-------
A :class:`Preset` is data: every choice in which DPM-OT variants differ. :data:`PRESETS` holds two:

``paper`` (sampler ``dpm-ot-paper``) follows the reference code's pipeline: a uniform source on the data's
range ``[min, max]^d`` (the reference's [0, 1]^d pixels), latents from the held-out split at level L - K of
NCSNv2's geometric schedule (``sigma_star="budget"``), the ``adam-mc`` solver, and the ``ncsn-langevin``
tail: K = NFE - 1 annealed Langevin steps and one Tweedie denoise. One deviation: the reference's stop rule
(|g| < 8e-4) sits below the Monte-Carlo noise floor and never fires, so it runs 10,000 iterations; the preset
stops at that noise floor (``stop="noise-floor"``). NCSNv2's CIFAR-10 schedule (sigma_1 = 50, sigma_L = 0.01,
L = 232, step_lr = 6.2e-6) is for pixels in [0, 1]; every length is scaled by the data's range
``c = max - min`` (digits in [-1, 1]: c = 2, so sigma_1 = 100, sigma_L = 0.02) and step_lr, a squared
length, by c^2. What the method's behaviour depends on is then unchanged: sigma_star / c (0.0139 at K = 10,
as CIFAR's level 222), the per-step variance fraction a_L / sigma_L^2 = 0.062, L and K. The reference code
starts its Langevin chain at level L - ceil(K/5) with 5 steps per level although the latents sit at level
L - K (``reference_levels=True`` reproduces this); the default (fixed) chain takes one step on each of the K
levels L - K, ..., L - 1. K = 0 (NFE 1) puts the latents at sigma_L and spends the one call on the denoise.

``default`` (sampler ``dpm-ot``): a Gaussian source N(0, I) (the abstract's white noise), held-out latents at
``sigma_star = spacings * m / sqrt(d)`` (``sigma_star="spacing"``, spacings 3) with m the median
nearest-neighbour distance of the held-out points (the latent noise norm sigma_star sqrt(d) is three
spacings of the stored points, so the posterior given a latent spans several of them instead of naming one),
the ``auto`` solver (exact-2d on the 2-D GMMs, newton-qmc above), the hard map, and a DPM-Solver++(2M) tail on a Karras grid from sigma_star to
min(0.002, sigma_star / 10). sigma_star is then 0.0024 (gmm-ring8), 0.022 (gmm-grid25), 0.30 (gmm-hd) and
0.89 (digits, on [-1, 1]). The sweeps behind these choices: benchmarks/README.md, "DPM-OT presets".

A new preset is ``dataclasses.replace(PRESETS["default"], tail="heun")`` (checked when made), or, from
user options, :func:`preset_with` (``--option tail=heun``, ``--option sigma_star=0.1``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping

import torch

from .. import schedules
from ..data import Dataset, get_dataset
from ..denoisers import Denoiser
from ..errors import InputError
from ..noise import SampleNoise
from ..options import check_fields, option, specs, unknown_keys
from ..ot.estimator import DEFAULT_SOLVER, MODES
from ..ot.latents import check_latent_map, data_range, fit_latent_map
from ..ot.solvers import SOLVER_NAMES, solver_options
from .plans import GRID_OPTIONS, METHODS, SIGMA_MIN, check_nfe, plan, plan_options
from .sampling import langevin_schedule, sample_langevin

# NCSNv2's CIFAR-10 configuration (pixels in [0, 1]) as used by the reference code.
NCSN_SIGMA_1, NCSN_SIGMA_L, NCSN_LEVELS, NCSN_STEP_LR, NCSN_STEPS_PER_LEVEL = 50.0, 0.01, 232, 6.2e-6, 5
NCSN_TAIL = "ncsn-langevin"
TAILS = (*METHODS, NCSN_TAIL)
SIGMA_RULES = ("spacing", "budget")  # sigma_star from the data's nearest-neighbour spacing / the NFE budget
# Preset fields that only shape the fit: with a fitted map given, the map has fixed them.
FIT_FIELDS = ("source", "sigma_star", "spacings", "split", "n_latents", "solver", "solver_options")


@dataclass(frozen=True)
class Preset:
    """Every choice of a DPM-OT variant, checked when the preset is made (an InputError names the field).

    ``sigma_star``: a number (the latent level itself), ``"spacing"`` (``spacings`` x the median
    nearest-neighbour distance of the split's points / sqrt(d)) or ``"budget"`` (NCSNv2's level L - K for
    K = NFE - 1, scaled by the data range). ``tail``: a baseline sampler planned from sigma_star to
    ``tail_options["sigma_min"]`` (default min(0.002, sigma_star / 10)), or ``"ncsn-langevin"`` (K Langevin
    steps on NCSNv2's levels + one denoise; needs ``sigma_star="budget"``).
    """
    name: str = "custom"
    source: str = option("gaussian", str, choices=("gaussian", "uniform"),
                         help="N(0, I), or the uniform cube on the data's range")
    sigma_star: float | str = option("spacing", float, low=0, choices=SIGMA_RULES,
                                     help="the latent noise level, or the rule choosing it")
    spacings: float = option(3.0, float, above=0, help="sigma_star sqrt(d) in nearest-neighbour spacings")
    split: str = option("heldout", str, choices=("heldout", "train"), help="the data split of the latents")
    n_latents: int | None = option(None, int, low=2, optional=True, help="first rows of the split (default all)")
    solver: str = option(DEFAULT_SOLVER, str, choices=SOLVER_NAMES, help="the OT solver (auto: exact-2d in 2-D)")
    solver_options: dict = option({}, dict, help="the solver's options (JSON object)")
    mode: str = option("hard", str, choices=MODES, help="hard (top-1 target) or smooth (softmax average)")
    tau: float | None = option(None, float, above=0, optional=True, help="smooth map temperature (default 0.02)")
    tail: str = option("dpmpp-2m", str, choices=TAILS, help="the tail sampler from sigma_star to 0")
    tail_options: dict = option({}, dict, help="the tail's grid / method options (or give them directly)")
    reference_levels: bool = option(False, bool, help="ncsn-langevin: the reference code's level mismatch")
    # ncsn-langevin on a model's own NCSNv2 schedule (its YAML's sigma_begin, sigma_end, num_classes and
    # sampling.step_lr, in the data's units: no scaling by the data range); None: CIFAR-10's, scaled
    ncsn_sigma_1: float | None = option(None, float, above=0, optional=True, help="ncsn-langevin: first level")
    ncsn_sigma_L: float | None = option(None, float, above=0, optional=True, help="ncsn-langevin: last level")
    ncsn_levels: int | None = option(None, int, low=2, optional=True, help="ncsn-langevin: number of levels L")
    ncsn_step_lr: float | None = option(None, float, above=0, optional=True, help="ncsn-langevin: step_lr")

    def __post_init__(self):
        check_fields(self)
        solver_options(self.solver, self.solver_options)  # names, types and ranges, as the fit will read them
        own = [self.ncsn_sigma_1, self.ncsn_sigma_L, self.ncsn_levels, self.ncsn_step_lr]
        if any(v is not None for v in own) and (any(v is None for v in own) or self.tail != NCSN_TAIL):
            raise InputError("ncsn_sigma_1, ncsn_sigma_L, ncsn_levels and ncsn_step_lr go together, with the "
                             "ncsn-langevin tail (a model's own NCSNv2 schedule)")
        if self.ncsn_sigma_1 is not None and not self.ncsn_sigma_L < self.ncsn_sigma_1:
            raise InputError(f"ncsn_sigma_L ({self.ncsn_sigma_L}) must be below ncsn_sigma_1 ({self.ncsn_sigma_1})")
        if self.tail == NCSN_TAIL:
            if self.sigma_star != "budget":
                raise InputError("the ncsn-langevin tail runs on NCSNv2's levels, so it needs sigma_star=budget "
                                 f"(got {self.sigma_star!r}); choose another tail for a free sigma_star")
            if self.tail_options:
                raise InputError("the ncsn-langevin tail is fixed (K Langevin steps + 1 denoise); it takes no "
                                 f"tail options, got {', '.join(self.tail_options)}")
        else:
            if self.reference_levels:
                raise InputError("reference_levels applies to the ncsn-langevin tail only")
            if "sigma_max" in self.tail_options:
                raise InputError("the tail starts at the map's sigma_star; sigma_max cannot be set")
            plan_options(self.tail, self.tail_options)  # names and types of the tail's options

    def sigma_star_for(self, dataset: Dataset, nfe: int | None = None) -> float:
        """The latent noise level for ``dataset`` (the ``budget`` rule needs the NFE)."""
        if not isinstance(self.sigma_star, str):
            return self.sigma_star
        if self.sigma_star == "spacing":  # the spacing of the whole split, however many latents are used
            clean, _ = dataset.data(self.split)
            return self.spacings * median_nn_distance(clean) / math.sqrt(dataset.dim)
        if nfe is None:
            raise InputError("sigma_star=budget depends on the budget: pass nfe")
        low, high = data_range(dataset, self.split)
        return paper_tail(high - low, nfe, schedule=self.ncsn_schedule(high - low))[0]

    def ncsn_schedule(self, scale: float) -> tuple[torch.Tensor, float]:
        """``(levels, step_lr)`` of the ncsn-langevin tail: the preset's own NCSNv2 schedule, or CIFAR-10's
        with lengths scaled by the data range ``scale`` (step_lr, a squared length, by scale^2)."""
        if self.ncsn_levels is not None:
            return schedules.geometric(self.ncsn_sigma_1, self.ncsn_sigma_L, self.ncsn_levels), self.ncsn_step_lr
        return ncsn_levels(scale), NCSN_STEP_LR * scale ** 2

    def fit(self, dataset: str | Dataset, nfe: int | None = None, *, seed: int = 0,
            device: str | torch.device = "cpu", progress: bool = False, classes=None):
        """The preset's OT map for ``dataset`` (the one-off cost of DPM-OT): a fitted
        :class:`~dpmot_bench.ot.SemiDiscreteOT` whose ``meta_`` also names this preset (and the NFE when
        sigma_star depends on it). ``classes``: a class-conditional map, onto the latents of the split's
        rows of those labels only (sigma_star is still the whole split's)."""
        dataset = as_dataset(dataset)
        sigma_star = self.sigma_star_for(dataset, nfe)
        extra = {"nfe": check_nfe(nfe)} if self.sigma_star == "budget" else {}
        return fit_latent_map(dataset, sigma_star, source=self.source, split=self.split,
                              n_latents=self.n_latents, seed=seed, solver=self.solver,
                              solver_options=self.solver_options, device=device, progress=progress,
                              classes=classes, preset=self.name, **extra)

    def tail_plan(self, sigma_star: float, scale: float, nfe: int):
        """``(fn, sigmas, kwargs)``: the tail from ``sigma_star`` to 0 spending ``nfe`` calls (``scale``, the
        data range c, sets NCSNv2's levels)."""
        nfe = check_nfe(nfe)
        if self.tail == NCSN_TAIL:
            levels, step_lr = self.ncsn_schedule(scale)
            level_sigma, sigmas, counts = paper_tail(scale, nfe, self.reference_levels, schedule=(levels, step_lr))
            if not math.isclose(sigma_star, level_sigma, rel_tol=1e-6):
                raise InputError(f"this OT map has sigma_star={sigma_star:.6g} but the ncsn-langevin tail at NFE "
                                 f"{nfe} needs its latents at level L-K, sigma={level_sigma:.6g}; fit a map for "
                                 "this NFE")
            return sample_langevin, sigmas, {"step_lr": step_lr, "steps_per_level": counts}
        if sigma_star <= 0:
            raise InputError("a tail sampler needs sigma_star > 0")
        values = {"sigma_min": min(SIGMA_MIN, sigma_star / 10), **self.tail_options, "sigma_max": sigma_star}
        return plan(self.tail, nfe, plan_options(self.tail, values))


PRESETS: dict[str, Preset] = {
    "default": Preset("default"),
    "paper": Preset("paper", source="uniform", sigma_star="budget", solver="adam-mc",
                    solver_options={"stop": "noise-floor"}, tail=NCSN_TAIL),
}


def get_preset(preset: str | Preset) -> Preset:
    if isinstance(preset, Preset):
        return preset
    if not isinstance(preset, str) or preset not in PRESETS:
        from ..errors import unknown_name

        raise unknown_name("DPM-OT preset", preset, PRESETS)
    return PRESETS[preset]


def preset_with(preset: str | Preset, values: Mapping, what: str = "dpm-ot") -> Preset:
    """``preset`` with user options: keys naming a :class:`Preset` field set it, the others are options of
    its tail (``grid``, ``rho``, ``eta``, ...). The one place DPM-OT options are parsed."""
    preset = get_preset(preset)
    fields = set(specs(Preset))
    own = {k: v for k, v in values.items() if k in fields}
    rest = {k: v for k, v in values.items() if k not in fields}
    tail = own.get("tail", preset.tail)
    tail_keys = GRID_OPTIONS + METHODS[tail][1] if isinstance(tail, str) and tail in METHODS else ()
    unknown_keys(set(rest) - {"sigma_max"}, fields | set(tail_keys) - {"sigma_max"}, what)  # sigma_max: below
    if rest:
        own["tail_options"] = {**own.get("tail_options", preset.tail_options), **rest}
    elif "tail" in own and "tail_options" not in own and own["tail"] != preset.tail:
        own["tail_options"] = {}  # another tail: the old tail's options do not carry over
    return replace(preset, **own)


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


def paper_tail(scale: float, nfe: int, reference_levels: bool = False,
               schedule: tuple[torch.Tensor, float] | None = None) -> tuple[float, torch.Tensor, list[int]]:
    """NCSNv2's tail for an NFE budget: ``(sigma_star, tail grid ending at 0, Langevin steps per level)``
    (see the module docstring; K = nfe - 1) on CIFAR-10's levels scaled by ``scale``, or on ``schedule``'s
    levels (:meth:`Preset.ncsn_schedule`)."""
    k = check_nfe(nfe) - 1
    levels = ncsn_levels(scale) if schedule is None else schedule[0]
    n_levels = len(levels)
    if k >= n_levels:
        raise InputError(f"NCSNv2's schedule has {n_levels} levels, so at most {n_levels} NFE; got {nfe}")
    latent = min(n_levels - k, n_levels - 1)
    if reference_levels:
        start, counts = n_levels - math.ceil(k / NCSN_STEPS_PER_LEVEL), langevin_schedule(k, NCSN_STEPS_PER_LEVEL)
    else:
        start, counts = latent, [1] * k
    start = min(start, n_levels - 1)
    return float(levels[latent]), schedules.append_zero(levels[start:]), counts or [0]


def map_tail(preset: Preset, ot_map, dataset: Dataset, nfe: int):
    """The tail ``(fn, sigmas, kwargs)`` of ``preset`` on a fitted map, after checking that the map is a
    latent map for ``dataset`` that this tail can start from."""
    meta = check_latent_map(ot_map, dataset)
    low, high = meta["data_range"]
    return preset.tail_plan(float(meta["sigma_star"]), high - low, nfe)


def sample_dpmot(denoiser: Denoiser, ot_map, noise: SampleNoise, tail, *, preset: Preset) -> tuple[torch.Tensor, torch.Tensor]:
    """DPM-OT samples for the rows of ``noise``: ``(x, index)``; ``tail`` is :func:`map_tail`'s plan, which
    spends its NFE."""
    fn, sigmas, kwargs = tail
    z = ot_map.source.draw(noise)
    index = ot_map.assign(z)
    y = ot_map.targets_[index] if preset.mode == "hard" else ot_map.transport(z, "smooth", preset.tau)
    x = fn(denoiser, y.to(device=noise.device, dtype=noise.dtype), sigmas, noise=noise, **kwargs)
    return x, index.to(noise.device)
