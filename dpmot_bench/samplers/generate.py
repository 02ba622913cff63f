"""One entry point for every sampler: :func:`generate` (used by ``dpmot sample`` and the benchmarks).

Row i of the result depends only on ``seed`` and i, whatever ``n`` and ``batch_size``: each batch of rows
``[start, start + b)`` gets ``SampleNoise(seed, b, start)``, whose first draw is the sample's starting point
(the prior ``sigma_max z``, diffusers' ``init_noise_sigma z``, or DPM-OT's source point) and whose later
draws are the step noise of stochastic samplers. The NFE spent is counted per batch with
:class:`~dpmot_bench.denoisers.CountingDenoiser` and must equal the NFE asked.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
from tqdm.auto import tqdm

from ..data import Dataset
from ..denoisers import CountingDenoiser, Denoiser
from ..devices import as_device
from ..errors import InputError, unknown_name
from ..noise import SampleNoise
from ..resources import check_memory
from . import dpmot
from .dpmot import Preset
from .external import DIFFUSERS_SAMPLERS, DiffusersOptions, diffusers_options, sample_diffusers
from .plans import check_nfe, plan, plan_options

SAMPLER_NAMES: dict[str, str] = {
    "euler": "Euler on the probability-flow ODE (= DDIM, eta 0), Karras grid; NFE = steps",
    "heun": "EDM Heun (2nd order), Euler step into 0 and, for even NFE, a first Euler step; Karras grid",
    "dpmpp-2m": "DPM-Solver++(2M) multistep, Karras grid; NFE = steps",
    "dpmpp-3m": "DPM-Solver++(3M) multistep, lower-order warm-up and final steps, Karras grid; NFE = steps",
    "ancestral": "ancestral sampling (DDPM-like, eta = 1), Karras grid; NFE = steps",
    "langevin": "NCSNv2 annealed Langevin, 1 step per geometric level, + Tweedie denoise; NFE = steps + 1",
    "dpm-ot": "DPM-OT default: Gaussian source, hard OT jump to held-out latents at sigma* = 3 x their "
              "nearest-neighbour spacing / sqrt(d), DPM-Solver++(2M) tail; NFE = tail steps",
    "dpm-ot-paper": "DPM-OT as the reference code: uniform source, held-out latents at NCSN level L-K, "
                    "K Langevin steps + 1 denoise (NFE = K + 1)",
    "diffusers-ddim": "diffusers DDIMScheduler (eta 0, trailing spacing) on the denoiser as a VP eps model",
    "diffusers-dpmpp-2m": "diffusers DPMSolverMultistepScheduler (dpmsolver++, order 2) on a VP eps model",
    "diffusers-unipc": "diffusers UniPCMultistepScheduler (bh2, order 2) on a VP eps model",
    "diffusers-heun": "diffusers HeunDiscreteScheduler (2 NFE per step; even NFE: one diffusers Euler step first)",
}
DPMOT_SAMPLERS = {"dpm-ot": "default", "dpm-ot-paper": "paper"}  # sampler name -> its preset in PRESETS
MAX_ROWS = 10 ** 9  # samples per call: beyond this the result alone would not fit in memory


@dataclass
class SampleResult:
    x: torch.Tensor  # (n, dim) float32, CPU
    index: torch.Tensor | None  # (n,) int64: DPM-OT's target of each sample, else None
    nfe_spent: int  # denoiser calls per sample, counted
    seconds: float  # wall time of sampling (an OT map fitted on the spot is not included)
    sampler: str
    nfe: int
    seed: int
    options: dict = field(default_factory=dict)
    fit_seconds: float | None = None  # the on-the-spot OT fit, when there was one


def _check_count(value, name: str, minimum: int = 1, maximum: int = MAX_ROWS) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise InputError(f"{name} must be an integer in [{minimum}, {maximum}], got {value!r}")
    return value


def check_rows(dataset: Dataset, n: int, batch_size: int = 2048, device="cpu") -> None:
    """``n`` and ``batch_size`` are counts this machine can hold: the result (n rows of float32, with
    DPM-OT's index) on the host and a batch's working set (a few copies of it) on the device."""
    n, batch_size = _check_count(n, "n"), _check_count(batch_size, "batch_size")
    check_memory(2 * n * (4 * dataset.dim + 8), f"{n} samples of {dataset.dim} values")  # batches + their concatenation
    check_memory(8 * 4 * min(n, batch_size) * dataset.dim, f"a batch of {min(n, batch_size)} rows", device)


def sampler_options(sampler: str | Preset, values: Mapping):
    """``(name, typed options)`` of a sampler from user ``values``: a :class:`Preset` for DPM-OT (a name
    in :data:`DPMOT_SAMPLERS` or a Preset itself), :class:`DiffusersOptions`, or :class:`PlanOptions`. The
    one place sampler options are checked; an InputError names a bad key or value and lists the valid ones."""
    if isinstance(sampler, Preset):
        return "dpm-ot", dpmot.preset_with(sampler, values)
    if isinstance(sampler, str) and sampler in dpmot.PRESETS:  # a preset's name is a DPM-OT sampler too
        return "dpm-ot", dpmot.preset_with(sampler, values)
    if not isinstance(sampler, str) or sampler not in SAMPLER_NAMES:
        raise unknown_name("sampler", sampler, SAMPLER_NAMES)
    if sampler in DPMOT_SAMPLERS:
        return sampler, dpmot.preset_with(DPMOT_SAMPLERS[sampler], values, sampler)
    if sampler in DIFFUSERS_SAMPLERS:
        return sampler, diffusers_options(sampler, values)
    return sampler, plan_options(sampler, values)


def model_options(sampler: str | Preset, values: Mapping, choice) -> dict:
    """``values`` for sampling with a loaded model (a :class:`~dpmot_bench.models.select.ModelChoice`): a
    DPM-OT preset whose tail is ``ncsn-langevin`` runs on an NCSNv2 model's own levels and ``step_lr``
    (without one in its YAML, CIFAR-10's ratio step_lr / sigma_L^2 = 0.062), unless the user set them;
    then the grid is kept inside the model's trained sigma range (:func:`within_model_range`)."""
    values = dict(values)
    if getattr(choice, "kind", None) == "ncsnv2" and choice.sigmas is not None and "ncsn_levels" not in values:
        is_dpmot = isinstance(sampler, Preset) or sampler in DPMOT_SAMPLERS or sampler in dpmot.PRESETS
        base = sampler if isinstance(sampler, Preset) else dpmot.PRESETS.get(DPMOT_SAMPLERS.get(sampler, sampler))
        if is_dpmot and values.get("tail", base.tail) == dpmot.NCSN_TAIL:
            sigmas = choice.sigmas
            step_lr = choice.step_lr or dpmot.NCSN_STEP_LR / dpmot.NCSN_SIGMA_L ** 2 * float(sigmas[-1]) ** 2
            values.update(ncsn_sigma_1=float(sigmas[0]), ncsn_sigma_L=float(sigmas[-1]), ncsn_levels=len(sigmas),
                          ncsn_step_lr=float(step_lr))
    return within_model_range(sampler, values, getattr(choice, "sigma_min", None), getattr(choice, "sigma_max", None))


def within_model_range(sampler: str, values: Mapping, sigma_min: float | None, sigma_max: float | None) -> dict:
    """``values`` with the grid's ends moved into a loaded model's trained range ``[sigma_min, sigma_max]``
    where the user left them to the sampler's defaults (EDM's 80 .. 0.002; a DPM-OT tail's end), with a
    warning naming what moved. A model queried outside its range only sees clamped timesteps (diffusers)
    or extrapolates (NCSNv2's s = net(x) / sigma), so the grid is kept inside it. Ends the user set stay."""
    from .plans import LANGEVIN_SIGMA_MIN, SIGMA_MAX, SIGMA_MIN

    values = dict(values)
    if sigma_min is None or sigma_max is None or sampler in DIFFUSERS_SAMPLERS:
        return values  # diffusers samplers run on the model's own discrete schedule
    moved = []
    if sampler in DPMOT_SAMPLERS or isinstance(sampler, Preset):
        tail = values.get("tail", dpmot.get_preset(DPMOT_SAMPLERS.get(sampler, "default")
                                                   if isinstance(sampler, str) else sampler).tail)
        # the tail ends at min(0.002, sigma_star / 10): certainly below a model range starting above 0.002
        if tail != dpmot.NCSN_TAIL and "sigma_min" not in values and sigma_min > SIGMA_MIN * (1 + 1e-9):
            values["sigma_min"] = sigma_min
            moved.append(f"the tail's sigma_min -> {sigma_min:.4g}")
        return _warn_moved(values, moved, sigma_min, sigma_max)
    above = lambda a, b: a > b * (1 + 1e-9)  # noqa: E731  (a range end that went through float32 is not "outside")
    if "sigma_max" not in values and above(SIGMA_MAX, sigma_max):
        values["sigma_max"] = sigma_max
        moved.append(f"sigma_max {SIGMA_MAX:g} -> {sigma_max:.4g}")
    default_min = LANGEVIN_SIGMA_MIN if sampler == "langevin" else SIGMA_MIN
    if "sigma_min" not in values and above(sigma_min, default_min):
        values["sigma_min"] = sigma_min
        moved.append(f"sigma_min {default_min:g} -> {sigma_min:.4g}")
    return _warn_moved(values, moved, sigma_min, sigma_max)


def _warn_moved(values: dict, moved: list, sigma_min: float, sigma_max: float) -> dict:
    import warnings

    if moved:
        warnings.warn(f"the model was trained on sigma in [{sigma_min:.4g}, {sigma_max:.4g}]: the sampler's grid "
                      f"is clipped into it ({'; '.join(moved)})", stacklevel=3)
    return values


@dataclass
class SamplingPlan:
    """A checked sampler for one dataset and budget: :meth:`sample` draws rows. Made by :func:`prepare`."""
    dataset: Dataset
    sampler: str
    nfe: int
    options: object  # the typed options (a Preset for DPM-OT)
    values: dict  # the user's options as given
    ot_map: object = None
    fit_seconds: float | None = None
    _run: Callable = None
    sigmas: torch.Tensor | None = None  # the grid of the steps (DPM-OT: its tail's), None for diffusers' samplers

    @property
    def sigma_range(self) -> tuple[float, float] | None:
        """``(smallest nonzero, largest)`` level of the grid: where a guidance schedule is positioned."""
        if self.sigmas is None:
            return None
        levels = self.sigmas[self.sigmas > 0]
        return float(levels.min()), float(levels.max())

    def sample(self, denoiser: Denoiser, n: int, seed: int, *, device: str | torch.device = "cpu",
               batch_size: int = 2048, progress: bool = False) -> SampleResult:
        """``n`` rows, row i from ``SampleNoise(seed, ., i)``, in batches of ``batch_size`` on ``device``."""
        check_rows(self.dataset, n, batch_size, device)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        device = as_device(device)
        xs, indices = [], []
        counted = CountingDenoiser(denoiser)
        start_time = time.perf_counter()
        with tqdm(total=n, disable=not progress, desc=f"sample {self.sampler}", unit="sample", leave=False) as bar:
            for start in range(0, n, batch_size):
                rows = min(batch_size, n - start)
                counted.reset()
                x, index = self._run(counted, SampleNoise(seed, rows, start, device=device))
                if counted.calls != self.nfe:
                    raise RuntimeError(f"{self.sampler} spent {counted.calls} denoiser calls, not the {self.nfe} "
                                       "asked (a bug)")
                xs.append(x.detach().float().cpu().reshape(rows, self.dataset.dim))
                indices.append(None if index is None else index.cpu())
                bar.update(rows)
        seconds = time.perf_counter() - start_time
        index = None if indices[0] is None else torch.cat(indices)
        return SampleResult(torch.cat(xs), index, counted.calls, seconds, self.sampler, self.nfe, seed,
                            dict(self.values), self.fit_seconds)


def prepare(dataset: str | Dataset, sampler: str | Preset, nfe: int, options: Mapping | None = None, *,
            ot_map=None, device: str | torch.device = "cpu", progress: bool = False) -> SamplingPlan:
    """Check everything about a sampling job that does not need the denoiser, in this order: the sampler
    and its options (:func:`sampler_options`), the budget, a given OT map against the dataset and the
    preset's tail; then, for DPM-OT without ``ot_map``, fit the preset's map on the spot (the only
    expensive step, after every check)."""
    dataset = dpmot.as_dataset(dataset)
    device = as_device(device)
    values = dict(options or {})
    name, options = sampler_options(sampler, values)
    nfe = check_nfe(nfe)
    fit_seconds = None
    if isinstance(options, Preset):
        given_fit_options = sorted(set(values) & set(dpmot.FIT_FIELDS))
        if ot_map is not None and given_fit_options:
            raise InputError(f"{', '.join(given_fit_options)} shape(s) the OT fit, but a fitted map was given; "
                             "drop the option(s) or the map")
        if ot_map is None:
            low, high = dpmot.data_range(dataset, options.split)
            options.tail_plan(options.sigma_star_for(dataset, nfe), high - low, nfe)  # fails now, not after the fit
            start = time.perf_counter()
            ot_map = options.fit(dataset, nfe, device=device, progress=progress)
            fit_seconds = time.perf_counter() - start
        tail = dpmot.map_tail(options, ot_map, dataset, nfe)
        sigmas = tail[1]

        def run(counted, noise):
            return dpmot.sample_dpmot(counted, ot_map, noise, tail, preset=options)
    elif ot_map is not None:
        raise InputError(f"an OT map applies to the DPM-OT samplers only, not {name!r}")
    elif isinstance(options, DiffusersOptions):
        sigmas = None

        def run(counted, noise):
            return sample_diffusers(name, counted, nfe, noise, (dataset.dim,), options), None
    else:
        fn, sigmas, kwargs = plan(name, nfe, options)

        def run(counted, noise):
            x = float(sigmas[0]) * noise.randn(dataset.dim)
            return fn(counted, x, sigmas, noise=noise, **kwargs), None
    return SamplingPlan(dataset, name, nfe, options, dict(values), ot_map, fit_seconds, run, sigmas)


def generate(dataset: str | Dataset, sampler: str | Preset, nfe: int, n: int, seed: int, denoiser: Denoiser, *,
             ot_map=None, device: str | torch.device = "cpu", batch_size: int = 2048, progress: bool = False,
             **options) -> SampleResult:
    """``n`` samples of ``dataset`` from ``sampler`` (a name in :data:`SAMPLER_NAMES`, or a DPM-OT
    :class:`Preset`) spending ``nfe`` denoiser calls per sample, in batches of ``batch_size`` rows on
    ``device``: :func:`prepare` then :meth:`SamplingPlan.sample`.

    ``options`` are the sampler's: for the baselines the fields of :class:`PlanOptions` its method takes
    (``grid``, ``sigma_max``, ``sigma_min``, ``rho``, and ``eta``, ``lower_order_final``, ``steps_per_level``,
    ``step_ratio``, ``step_lr``); for diffusers samplers scheduler settings (and ``eta`` for DDIM); for
    DPM-OT any :class:`Preset` field (``sigma_star``, ``mode``, ``tau``, ``tail``, ...) and the tail's
    options. DPM-OT uses ``ot_map`` (see :meth:`Preset.fit`), or fits the preset's map on the spot.
    """
    check_rows(dpmot.as_dataset(dataset), n, batch_size, device)
    job = prepare(dataset, sampler, nfe, options, ot_map=ot_map, device=device, progress=progress)
    return job.sample(denoiser, n, seed, device=device, batch_size=batch_size, progress=progress)
