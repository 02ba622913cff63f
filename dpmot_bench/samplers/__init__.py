"""Samplers in sigma space: the baselines (small pure functions), diffusers' schedulers, and DPM-OT.

>>> from dpmot_bench.samplers import generate, SAMPLER_NAMES
>>> from dpmot_bench.data import get_dataset
>>> ring = get_dataset("gmm-ring8")
>>> generate(ring, "dpmpp-2m", nfe=10, n=4, seed=0, denoiser=ring.mixture.denoise).x.shape
torch.Size([4, 2])
"""
from .dpmot import PRESETS, Preset, get_preset, paper_tail, preset_with, sample_dpmot
from .external import DIFFUSERS_SAMPLERS, DiffusersOptions, make_scheduler, run_scheduler, sample_diffusers
from .generate import SAMPLER_NAMES, SampleResult, SamplingPlan, generate, prepare, sampler_options
from .plans import GRID_KINDS, METHODS, PlanOptions, plan, sigma_grid
from .sampling import (ancestral_step, langevin_schedule, sample_ancestral, sample_dpmpp_2m, sample_dpmpp_3m,
                       sample_euler, sample_heun, sample_langevin)

__all__ = ["SAMPLER_NAMES", "SampleResult", "SamplingPlan", "generate", "prepare", "sampler_options", "PRESETS",
           "Preset", "get_preset", "paper_tail", "preset_with", "sample_dpmot", "DIFFUSERS_SAMPLERS",
           "DiffusersOptions", "make_scheduler", "run_scheduler", "sample_diffusers", "GRID_KINDS", "METHODS",
           "PlanOptions", "plan", "sigma_grid", "ancestral_step", "langevin_schedule", "sample_ancestral",
           "sample_dpmpp_2m", "sample_dpmpp_3m", "sample_euler", "sample_heun", "sample_langevin"]
