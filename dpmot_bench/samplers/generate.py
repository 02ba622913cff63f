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

import torch
from tqdm.auto import tqdm

from ..data import Dataset
from ..denoisers import CountingDenoiser, Denoiser
from ..errors import InputError, unknown_name
from ..noise import SampleNoise
from . import dpmot
from .external import DIFFUSERS_SAMPLERS, sample_diffusers
from .plans import check_nfe, plan

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
DPMOT_SAMPLERS = {"dpm-ot": "default", "dpm-ot-paper": "paper"}


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


def _check_count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def generate(dataset: str | Dataset, sampler: str, nfe: int, n: int, seed: int, denoiser: Denoiser, *,
             ot_map=None, device: str | torch.device = "cpu", batch_size: int = 2048, progress: bool = False,
             **options) -> SampleResult:
    """``n`` samples of ``dataset`` from ``sampler`` (a name in :data:`SAMPLER_NAMES`) spending ``nfe``
    denoiser calls per sample, in batches of ``batch_size`` rows on ``device``.

    ``options`` are the sampler's: for the baselines ``grid`` (karras | geometric | vp), ``sigma_max``,
    ``sigma_min``, ``rho`` and the method's own (``eta``, ``lower_order_final``, ``steps_per_level``,
    ``step_ratio``, ``step_lr``); for diffusers samplers scheduler settings (and ``eta`` for DDIM); for
    DPM-OT ``mode``, ``tau``, and ``tail`` plus tail options (``dpm-ot``) or ``reference_levels``
    (``dpm-ot-paper``). DPM-OT uses ``ot_map`` (see :func:`~dpmot_bench.samplers.dpmot.fit_ot_map`), or
    fits the preset's map on the spot when it is None.
    """
    if sampler not in SAMPLER_NAMES:
        raise unknown_name("sampler", sampler, SAMPLER_NAMES)
    dataset = dpmot.as_dataset(dataset)
    nfe, n = check_nfe(nfe), _check_count(n, "n")
    batch_size = _check_count(batch_size, "batch_size")
    device = torch.device(device)
    fit_seconds = None
    if sampler in DPMOT_SAMPLERS:
        preset = DPMOT_SAMPLERS[sampler]
        if ot_map is None:  # check the options before a fit that may take minutes
            low, high = dpmot.data_range(dataset)
            dpmot.tail_sampler(dpmot.preset_sigma_star(dataset, preset, nfe), high - low, nfe, preset=preset,
                               **options)
            start = time.perf_counter()
            ot_map = dpmot.fit_ot_map(dataset, preset, nfe=nfe if preset == "paper" else None, device=device,
                                      progress=progress)
            fit_seconds = time.perf_counter() - start
        dpmot.check_map(ot_map, dataset)

        def run(counted, noise):
            return dpmot.sample_dpmot(counted, ot_map, noise, nfe, dataset=dataset, preset=preset, **options)
    elif ot_map is not None:
        raise InputError(f"an OT map applies to the DPM-OT samplers only, not {sampler!r}")
    elif sampler in DIFFUSERS_SAMPLERS:
        def run(counted, noise):
            return sample_diffusers(sampler, counted, nfe, noise, (dataset.dim,), **options), None
    else:
        fn, sigmas, method_options = plan(sampler, nfe, **options)

        def run(counted, noise):
            x = float(sigmas[0]) * noise.randn(dataset.dim)
            return fn(counted, x, sigmas, noise=noise, **method_options), None

    xs, indices = [], []
    counted = CountingDenoiser(denoiser)
    start_time = time.perf_counter()
    with tqdm(total=n, disable=not progress, desc=f"sample {sampler}", unit="sample", leave=False) as bar:
        for start in range(0, n, batch_size):
            rows = min(batch_size, n - start)
            counted.reset()
            x, index = run(counted, SampleNoise(seed, rows, start, device=device))
            if counted.calls != nfe:
                raise RuntimeError(f"{sampler} spent {counted.calls} denoiser calls, not the {nfe} asked (a bug)")
            xs.append(x.detach().float().cpu())
            indices.append(None if index is None else index.cpu())
            bar.update(rows)
    seconds = time.perf_counter() - start_time
    index = None if indices[0] is None else torch.cat(indices)
    return SampleResult(torch.cat(xs), index, counted.calls, seconds, sampler, nfe, seed, dict(options), fit_seconds)
