"""Numerical checks of ``theory/bound.md`` on concrete DPM-OT configurations.

For every configuration and seed: draw the latents ``y_i ~ p_{sigma_star}``, fit the semi-discrete map
(``adam-mc``, the reference code's solver, ``newton-qmc`` or ``exact-2d``), run a tail sampler on the latents, integrate the exact flows, and
compute the left side and every right-side term of Theorem B (decomposition) and Theorem A (two-term
form with Gronwall constants). Everything is evaluated at ``sigma_end = SIGMA_END`` (the last level of
the samplers' grids before their final denoising step), where ``J_SM`` of a trained network is finite.

What is exact and what is estimated (see ``theory/numerics.md``):

* the generated law ``p_gen = sum_i m_i delta_{S(y_i)}`` is represented by Monte-Carlo cell masses from
  ``n_eval`` source draws: it *is* the empirical law of an ``n_eval``-sample of DPM-OT outputs (the tail is
  deterministic, so running it on the N atoms is the same as running it on every sample);
* the data law ``p_{sigma_end}`` is represented by a reference sample with exact mode quotas; every W2
  against it is exact (POT network simplex) for that sample, so the triangle inequality of Theorem B
  holds exactly between the computed quantities; the sample's own sampling error enters E_lat and the
  left side alike (it inflates both, most for the single Gaussian);
* the exact flows are DOP853 solutions (rtol 1e-8), the samplers are the package's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import ot
import torch
from tqdm.auto import tqdm

from ..data import dataset_names, get_dataset
from ..data.gmm import GaussianMixture
from ..denoisers import CountingDenoiser
from ..devices import as_device
from ..errors import InputError, unknown_name
from ..noise import SampleNoise
from ..ot import GaussianSource, SemiDiscreteOT
from ..samplers.plans import SIGMA_MIN, plan
from ..threads import one_cpu_thread
from . import lipschitz as lip
from . import ot_stage as ots
from .flows import integrate_flow
from .rates import binomial_mad, latent_lower_bound

SIGMA_END = SIGMA_MIN       # the last level before 0 of the samplers' grids
GRID_LEVELS = 33            # log-sigma quadrature nodes on [SIGMA_END, sigma_star]
FLOW_RTOL = 1e-8
# A float32 network's velocity carries ~1e-7 relative rounding noise: a tighter tolerance only makes the
# adaptive solver shrink its steps (measured: 11,700 network calls at 1e-8 for one flow of 128 points).
NETWORK_FLOW_RTOL = 1e-5
ONE_STEP = ("euler", "heun")
MODELS = ("exact", "shift", "trained")
_STREAM = (0x7E02,)          # SampleNoise namespace of the theory checks (apart from data and sampling)
GAUSSIAN_STD = 0.5
SOURCE_RHO_MAX = ots.projection_density_bound("gaussian", 1.0)  # the source is N(0, I)


def theory_datasets() -> list[str]:
    """``gaussian`` (2-D N(0, 0.5^2 I), the exactly solvable case) and the GMM data sets."""
    return ["gaussian"] + [name for name in dataset_names() if get_dataset(name).mixture is not None]


def theory_mixture(name: str) -> GaussianMixture:
    if name == "gaussian":
        return GaussianMixture(torch.zeros(1, 2, dtype=torch.float64), GAUSSIAN_STD)
    if name not in dataset_names():
        raise unknown_name("dataset", name, theory_datasets())
    mixture = get_dataset(name).mixture
    if mixture is None:
        raise InputError(f"{name} has no exact denoiser; check-bound needs one of: {', '.join(theory_datasets())}")
    return mixture


# ------------------------------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class Config:
    """One configuration; ``sweep`` names the sweep it belongs to (for rates and figures)."""

    dataset: str = "gmm-ring8"
    model: str = "exact"       # exact | shift (D* + delta, |delta| = shift) | trained
    shift: float = 0.0
    n_latents: int = 256
    sigma_star: float = 0.5
    sampler: str = "heun"
    nfe: int = 8
    ot_solver: str = "adam-mc"  # the reference code's solver; the sweep adds newton-qmc and exact-2d (the default in 2-D)
    ot_iters: int = 300
    tau: float = 0.0           # > 0: the smoothing experiment (OT5) instead of Theorems A/B
    sweep: str = "base"


def _sweeps(base: Config, spec: dict) -> list[Config]:
    configs = [base]
    for name, values in spec.items():
        if name == "nfe":
            configs += [replace(base, sampler=s, nfe=n, sweep="nfe") for s, ns in values.items() for n in ns]
        elif name == "ot_solver":
            configs += [replace(base, ot_solver=v, ot_iters=n, sweep="ot_solver") for v, n in values.items()]
        elif name == "shift":
            configs += [replace(base, model="shift", shift=v, sweep="shift") for v in values]
        else:
            configs += [replace(base, sweep=name, **{name: v}) for v in values]
    return configs


_FULL_SWEEPS = {
    "n_latents": [32, 64, 128, 512], "ot_solver": {"newton-qmc": 200, "exact-2d": 100},
    "nfe": {"euler": [4, 8, 16, 32, 64], "heun": [4, 8, 32, 64], "dpmpp-2m": [4, 8, 16, 32, 64]},
    "sigma_star": [0.1, 0.25, 1.0, 2.0], "ot_iters": [10, 30, 100, 300],
    "tau": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3], "shift": [0.003, 0.01, 0.03, 0.1, 0.3],
}
# Sweeps per data set ("*": any other). The quick suite is part of a 10-minute report on 2 cores: the
# multimodal ring gets every sweep, the Gaussian (where Theorem A is informative) the N and NFE sweeps.
SUITES = {
    "quick": {
        # "trained" runs only when the network is already cached (training costs minutes on 2 cores).
        "datasets": ("gaussian", "gmm-ring8"), "models": ("exact", "trained"), "train": False, "seeds": (0, 1, 2),
        "n_ref": 1024, "n_eval": 2 ** 18, "n_mc": 1024, "disc_bound": False,
        "base": Config(n_latents=128, sigma_star=0.5, sampler="heun", nfe=8, ot_iters=300),
        "sweeps": {
            "gmm-ring8": {"n_latents": [32, 64, 256], "nfe": {"euler": [4, 16, 64], "heun": [4, 16, 32]},
                          "sigma_star": [0.1, 2.0], "ot_iters": [10, 30, 100], "ot_solver": {"newton-qmc": 200, "exact-2d": 100},
                          "tau": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3], "shift": [0.003, 0.01, 0.03, 0.1]},
            "*": {"n_latents": [32, 64, 256], "nfe": {"euler": [4, 16, 64], "heun": [4, 16, 32]},
                  "ot_solver": {"newton-qmc": 200, "exact-2d": 100}},
        },
    },
    "tiny": {  # a smoke run of a few seconds (tests, CLI checks)
        "datasets": ("gaussian",), "models": ("exact",), "train": False, "seeds": (0, 1),
        "n_ref": 256, "n_eval": 2 ** 14, "n_mc": 256, "disc_bound": True,
        "base": Config(n_latents=32, sigma_star=0.5, sampler="heun", nfe=6, ot_iters=50),
        "sweeps": {"*": {"nfe": {"euler": [4, 8]}, "tau": [0.01, 0.1]}},
    },
    "full": {
        "datasets": ("gaussian", "gmm-ring8", "gmm-grid25", "gmm-hd"), "models": ("exact", "trained"), "train": True,
        "seeds": (0, 1, 2, 3, 4), "n_ref": 4096, "n_eval": 2 ** 20, "n_mc": 4096, "disc_bound": True,
        "base": Config(n_latents=256, sigma_star=0.5, sampler="heun", nfe=16, ot_iters=1000),
        "sweeps": {"*": _FULL_SWEEPS},
    },
}


def suite_configs(suite: str, datasets=None) -> tuple[list[Config], dict]:
    """The configurations of a suite (optionally restricted to some data sets) and its settings."""
    if suite not in SUITES:
        raise unknown_name("suite", suite, SUITES)
    spec = SUITES[suite]
    names = spec["datasets"] if datasets is None else tuple(datasets)
    for name in names:
        theory_mixture(name)
    configs = []
    for name in names:
        sweeps = spec["sweeps"].get(name, spec["sweeps"]["*"])
        for model in spec["models"]:
            if model == "trained" and (name == "gaussian" or not (spec["train"] or _trained_is_cached(name))):
                continue  # no network for the theory-only Gaussian; quick suites do not train
            base = replace(spec["base"], dataset=name, model=model)
            configs += _sweeps(base, sweeps) if model == "exact" else [base]
    return list(dict.fromkeys(configs)), spec


def _trained_is_cached(dataset: str) -> bool:
    from ..models import cached_model_path

    return cached_model_path(dataset).is_file()


# --------------------------------------------------------------------------------------------- helpers
def w2(x: torch.Tensor, y: torch.Tensor, a=None, b=None) -> float:
    """Exact W2 between weighted point sets (POT network simplex). Written here rather than calling
    ``dpmot_bench.metrics.w2`` because the generated law carries non-uniform weights (cell masses)."""
    x, y = x.double().cpu().numpy(), y.double().cpu().numpy()
    a = ot.unif(len(x)) if a is None else np.asarray(a, np.float64) / np.sum(a)
    b = ot.unif(len(y)) if b is None else np.asarray(b, np.float64) / np.sum(b)
    cost, log = ot.emd2(a, b, ot.dist(x, y), numItermax=10 ** 9, log=True)
    if log["warning"] is not None:
        raise RuntimeError(f"ot.emd2 did not converge ({log['warning']})")
    return math.sqrt(max(float(cost), 0.0))


def rms(x: torch.Tensor) -> float:
    """Root-mean-square row norm: the W2 bound of the identity coupling between two point sets."""
    return float(x.double().norm(dim=-1).pow(2).mean().sqrt())


def reference_sample(mixture: GaussianMixture, sigma: float, n: int, seed: int) -> torch.Tensor:
    """n draws of ``p_sigma`` with exact mode quotas (largest remainders): the reference sample carries
    no mode-count fluctuation of its own, only within-mode sampling error."""
    weights = mixture.weights.cpu().numpy() * n
    quota = np.floor(weights).astype(int)
    quota[np.argsort(weights - quota)[::-1][: n - quota.sum()]] += 1
    labels = torch.from_numpy(np.repeat(np.arange(len(quota)), quota))
    z = SampleNoise(seed, n, dtype=torch.float64, stream=_STREAM + (1,)).randn(mixture.dim)
    std = torch.sqrt(mixture.stds.cpu() ** 2 + sigma ** 2)
    return mixture.means.cpu()[labels] + std[labels, None] * z


def make_denoiser(dataset: str, model: str, shift: float = 0.0, device="cpu"):
    """The denoiser a configuration uses: exact, exact + a constant shift of norm ``shift``, or trained."""
    mixture = theory_mixture(dataset).to(device)
    if model == "exact":
        return mixture.denoise
    if model == "shift":
        delta = torch.full((mixture.dim,), shift / math.sqrt(mixture.dim), dtype=torch.float64, device=device)
        return lambda x, sigma: mixture.denoise(x, sigma) + delta.to(x.dtype)
    if model == "trained":
        from ..models import get_denoiser

        return get_denoiser(dataset, "trained", device=device)
    raise unknown_name("model", model, MODELS)


def _jacobian(model: str, mixture: GaussianMixture, denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    if model in ("exact", "shift"):  # the shift does not change the Jacobian
        return lip.gmm_denoiser_jacobian(mixture, x, sigma)
    return lip.denoiser_jacobian(denoiser, x, sigma)


# ---------------------------------------------------------------------------------------------- scenario
@dataclass
class Scenario:
    """Everything fixed by (dataset, model, shift, N, sigma_star, seed): latents, flows, constants."""

    config: Config
    seed: int
    settings: dict
    device: torch.device
    mixture: GaussianMixture = field(init=False)
    denoiser: object = field(init=False)
    cache: dict = field(default_factory=dict)

    def __post_init__(self):
        c, dev = self.config, self.device
        self.rtol = NETWORK_FLOW_RTOL if c.model == "trained" else FLOW_RTOL
        self.mixture = theory_mixture(c.dataset).to(dev)
        self.denoiser = make_denoiser(c.dataset, c.model, c.shift, dev)
        self.y = self.mixture.marginal(c.sigma_star).sample(c.n_latents, self.seed, stream=_STREAM)[0].double().to(dev)
        self.levels = lip.log_sigma_grid(SIGMA_END, c.sigma_star, GRID_LEVELS)
        inner = self.levels[1:-1]
        self.phi_star, traj_star = integrate_flow(self.mixture.denoise, self.y, c.sigma_star, SIGMA_END,
                                                  sigmas_out=inner, rtol=FLOW_RTOL)
        self.traj_star = torch.cat([self.phi_star[None], traj_star, self.y[None]])  # at self.levels
        if c.model == "exact":
            self.phi_theta, self.traj_theta = self.phi_star, self.traj_star
        else:
            self.phi_theta, traj = integrate_flow(self.denoiser, self.y, c.sigma_star, SIGMA_END,
                                                  sigmas_out=inner, rtol=self.rtol, atol=self.rtol * 1e-2)
            self.traj_theta = torch.cat([self.phi_theta[None], traj, self.y[None]])
        n_ref = self.settings["n_ref"]
        self.reference = reference_sample(self.mixture, SIGMA_END, n_ref, self.seed).to(dev)
        self.reference_star = reference_sample(self.mixture, c.sigma_star, n_ref, self.seed + 10_000).to(dev)
        self.e_lat = w2(self.phi_star, self.reference)
        self.e_lat_lower = latent_lower_bound(self.mixture, c.n_latents, SIGMA_END)
        self.w2_latents = w2(self.y, self.reference_star)
        self._constants()

    def _constants(self) -> None:
        """Gronwall factors, J_SM and the B1 integral along the latents.

        ``log_lambda_rig``: rigorous (closed form F3; exact and shifted GMM denoisers only).
        ``log_lambda_probe``: from the sup over probe points and trajectory points, a lower bound of the
        rigorous Gronwall factor (a sup over fewer points) and the "estimated" constant of Theorem A.
        ``log_lambda_traj`` (G, N): one factor per latent, from the Jacobians along its own trajectories
        (exact and learned flow): the linearised, pathwise estimate used for the F6 / B1 estimates.
        """
        c, mix, levels = self.config, self.mixture, self.levels
        ell_traj, ell_probe, eps_path, eps_mc, eps_se = [], [], [], [], []
        for g, sigma in enumerate(levels):
            sigma = float(sigma)
            both = torch.stack([self.traj_star[g], self.traj_theta[g]])
            ell = lip.max_eigenvalue(_jacobian(c.model, mix, self.denoiser, both.flatten(0, 1), sigma))
            ell_traj.append(ell.view(2, -1).amax(0).cpu().numpy())
            probes = lip.gmm_probe_points(mix, sigma, 256, self.seed).to(self.device)
            ell_probe.append(float(lip.max_eigenvalue(_jacobian(c.model, mix, self.denoiser, probes, sigma)).max()))
            if c.model == "exact":
                eps_path.append(np.zeros(len(self.y)))
                eps_mc.append(0.0)
                eps_se.append(0.0)
                continue
            with torch.no_grad():
                gap = self.denoiser(self.traj_star[g], sigma).double() - mix.denoise(self.traj_star[g], sigma)
                x = mix.marginal(sigma).sample(self.settings["n_mc"], self.seed + 1000 + g, stream=_STREAM)[0]
                x = x.double().to(self.device)
                sq = (self.denoiser(x, sigma).double() - mix.denoise(x, sigma)).pow(2).sum(1)
            eps_path.append(gap.norm(dim=1).cpu().numpy())  # along the exact trajectory of each latent
            eps_mc.append(float(sq.mean()))  # eps(sigma)^2 under p_sigma (J_SM)
            eps_se.append(float(sq.std() / math.sqrt(len(sq))))
        ell_traj = np.array(ell_traj)
        self.log_lambda_traj = lip.log_gronwall(levels, ell_traj)
        self.log_lambda_probe = lip.log_gronwall(levels, np.maximum(ell_probe, ell_traj.max(1)))
        self.log_lambda_rig = (np.array([lip.gmm_log_lipschitz_upper(mix, SIGMA_END, float(s)) for s in levels])
                               if c.model in ("exact", "shift") else None)
        # J_SM = int eps^2 / sigma^3 dsigma = int eps^2 / sigma^2 dlog sigma (trapezoid), and its MC error.
        nodes = np.zeros(len(levels))
        nodes[:-1] += np.diff(np.log(levels)) / 2
        nodes[1:] += np.diff(np.log(levels)) / 2
        nodes /= levels ** 2
        self.j_sm = float(np.dot(nodes, eps_mc))
        self.j_sm_se = float(np.sqrt(np.dot(nodes ** 2, np.square(eps_se))))
        # B1 with rho = nu_N, latent by latent, with each latent's own factor (an estimate).
        per_latent = lip.alekseev_integral(levels, self.log_lambda_traj, np.array(eps_path))
        self.e_den_bound = float(np.sqrt(np.mean(np.square(per_latent))))

    # -------------------------------------------------------------------------------- OT and the tail
    def fitted(self, solver: str, iterations: int) -> SemiDiscreteOT:
        """The semi-discrete map from N(0, I) to the latents after ``iterations`` of ``solver`` (cached)."""
        key = ("ot", solver, iterations)
        if key not in self.cache:
            estimator = SemiDiscreteOT(GaussianSource(self.mixture.dim), solver=solver, max_iter=iterations,
                                       seed=self.seed, device=self.device)
            self.cache[key] = estimator.fit(self.y.float())
        return self.cache[key]

    def masses(self, solver: str, iterations: int) -> torch.Tensor:
        """Monte-Carlo cell masses from ``n_eval`` fresh source draws: the empirical law of an
        ``n_eval``-sample of DPM-OT outputs, atom by atom."""
        key = ("m", solver, iterations)
        if key not in self.cache:
            fitted = self.fitted(solver, iterations)
            self.cache[key] = fitted.cell_masses(self.settings["n_eval"], seed=self.seed).double().to(self.device)
        return self.cache[key]

    def tail(self, sampler: str, nfe: int, x: torch.Tensor | None = None):
        """Run ``sampler`` with ``nfe`` calls from sigma_star; returns the iterates at the grid levels down
        to SIGMA_END (the state before the final denoising step), the grid, and the counted NFE."""
        fn, sigmas, options = plan(sampler, nfe, sigma_max=self.config.sigma_star, sigma_min=SIGMA_END)
        counted = CountingDenoiser(self.denoiser)
        iterates = []
        fn(counted, self.y if x is None else x, sigmas, callback=lambda info: iterates.append(info["x"]), **options)
        return torch.stack(iterates), sigmas[:-1].numpy(), counted.nfe


def _log10(value: float) -> float:
    return math.log10(value) if value > 0 else -math.inf


def _tv_floor(n_targets: int, n_eval: int) -> float:
    """Expected TV of Monte-Carlo masses when the true masses are exactly 1/N: the measurement floor."""
    return 0.5 * n_targets * binomial_mad(n_eval, 1.0 / n_targets) / n_eval


# ------------------------------------------------------------------------------------------------ rows
def _theorem_rows(s: Scenario, config: Config) -> dict:
    c = config
    masses = s.masses(c.ot_solver, c.ot_iters)
    nu = torch.full_like(masses, 1.0 / len(masses))
    tv = float(ots.tv(masses, nu))
    iterates, grid, nfe = s.tail(c.sampler, c.nfe)
    out = iterates[-1].double()
    m = masses.cpu().numpy()
    row = {"nfe_counted": nfe, "tv": tv, "tv_floor": _tv_floor(len(m), s.settings["n_eval"]),
           "empty_cells": int((masses == 0).sum())}
    # Theorem B: the four terms, their pathwise / rigorous bounds, the left side.
    row["lhs"] = w2(out, s.reference, a=m)
    row["e_ot"] = w2(out, out, a=m)
    row["e_ot_lower"], row["e_ot_upper"] = ots.tv_sandwich(out, masses, nu)
    row["e_disc"] = w2(out, s.phi_theta)
    row["e_disc_path"] = rms(out - s.phi_theta)
    f6 = s.settings["disc_bound"] and c.sampler in ONE_STEP
    row["e_disc_bound_est"] = _disc_bound(s, iterates, grid) if f6 else math.nan
    row["e_den"] = w2(s.phi_theta, s.phi_star) if c.model != "exact" else 0.0
    row["e_den_path"] = rms(s.phi_theta - s.phi_star)
    row["e_den_bound_est"] = s.e_den_bound
    row["e_lat"], row["e_lat_lower"] = s.e_lat, s.e_lat_lower
    row["holds_disc_est"] = None if math.isnan(row["e_disc_bound_est"]) else bool(
        row["e_disc_path"] <= row["e_disc_bound_est"] * (1 + 1e-9))
    row["holds_den_est"] = None if c.model == "exact" else bool(row["e_den_path"] <= row["e_den_bound_est"] * (1 + 1e-9))
    row["rhs_terms"] = row["e_ot"] + row["e_disc"] + row["e_den"] + row["e_lat"]
    row["rhs_bound"] = row["e_ot_upper"] + row["e_disc_path"] + row["e_den_path"] + row["e_lat"]
    for kind in ("terms", "bound"):
        row[f"holds_{kind}"] = bool(row["lhs"] <= row[f"rhs_{kind}"] * (1 + 1e-9))
        row[f"ratio_{kind}"] = row["lhs"] / row[f"rhs_{kind}"]
    if ("A", c.ot_solver, c.ot_iters) not in s.cache:
        s.cache["A", c.ot_solver, c.ot_iters] = _theorem_a(s, masses, tv)
    row.update(s.cache["A", c.ot_solver, c.ot_iters])
    return row


def _disc_bound(s: Scenario, iterates: torch.Tensor, grid: np.ndarray) -> float:
    """F6 latent by latent, ``sum_k Lambda_i(sigma_end, sigma_{k+1}) tau_k(y_i)``, with each latent's own
    pathwise factor (a linearised estimate, not a proof); RMS over latents."""
    t, nodes = np.log(grid), np.log(s.levels)
    total = np.zeros(iterates.shape[1])
    for k in range(len(grid) - 1):
        exact = integrate_flow(s.denoiser, iterates[k].double(), float(grid[k]), float(grid[k + 1]), rtol=s.rtol,
                               atol=s.rtol * 1e-2)
        local = (iterates[k + 1].double() - exact).norm(dim=1).cpu().numpy()
        j = int(np.clip(np.searchsorted(nodes, t[k + 1]) - 1, 0, len(nodes) - 2))
        w = (t[k + 1] - nodes[j]) / (nodes[j + 1] - nodes[j])  # linear in log sigma, as the quadrature
        log_lambda = (1 - w) * s.log_lambda_traj[j] + w * s.log_lambda_traj[j + 1]
        total += np.exp(np.minimum(log_lambda, 700.0)) * local
    return float(np.sqrt(np.mean(np.square(total))))


def _theorem_a(s: Scenario, masses: torch.Tensor, tv: float) -> dict:
    """Theorem A: k1 J^(1/2) + diam(Phi_theta(Y)) sqrt(TV) + Lambda W2(nu_N, p_sigma_star), in log10."""
    m = masses.cpu().numpy()
    lhs = w2(s.phi_theta, s.reference, a=m)
    ot_term = float(torch.pdist(s.phi_theta).max()) * math.sqrt(tv)
    row = {"thmA_lhs": lhs, "thmA_ot_term": ot_term, "j_sm": s.j_sm, "j_sm_se": s.j_sm_se,
           "w2_latents": s.w2_latents,
           "log10_k2": _log10(ots.potential_k2(s.phi_theta, s.y, SOURCE_RHO_MAX))}
    for tag, log_lambda in (("rig", s.log_lambda_rig), ("est", s.log_lambda_probe)):
        if log_lambda is None:
            row.update({f"log10_k1_{tag}": math.nan, f"log10_k3_{tag}": math.nan,
                        f"thmA_log10_rhs_{tag}": math.nan, f"thmA_holds_{tag}": None})
            continue
        log_k1 = lip.log_k1(s.levels, log_lambda)
        log_k3 = float(log_lambda[-1])
        terms = [log_k1 + 0.5 * math.log(s.j_sm) if s.j_sm > 0 else -math.inf, math.log(max(ot_term, 1e-300)),
                 log_k3 + math.log(max(s.w2_latents, 1e-300))]
        log_rhs = float(np.logaddexp.reduce(terms))
        row.update({f"log10_k1_{tag}": log_k1 / math.log(10), f"log10_k3_{tag}": log_k3 / math.log(10),
                    f"thmA_log10_rhs_{tag}": log_rhs / math.log(10),
                    f"thmA_holds_{tag}": bool(math.log(lhs) <= log_rhs + 1e-9)})
    return row


def _smoothing_row(s: Scenario, c: Config) -> dict:
    """OT5 on the fitted map: the pathwise gap between the smooth and the hard map, before and after the
    tail, against the bound of OT5 (ii) and the potential gap tau log N."""
    fitted = s.fitted(c.ot_solver, c.ot_iters)
    x = GaussianSource(s.mixture.dim).draw(SampleNoise(s.seed, 4096, stream=_STREAM + (2,))).to(s.device)
    targets = s.y
    index = fitted.assign(x)
    smooth = fitted.transport(x, "smooth", c.tau).double()
    tail_smooth = s.tail(c.sampler, c.nfe, smooth)[0][-1].double()
    tail_hard = s.tail(c.sampler, c.nfe)[0][-1].double()[index]
    bound_l1, bound_l2 = ots.smoothing_map_bounds(targets, SOURCE_RHO_MAX, c.tau)
    gap = rms(smooth - targets[index])
    return {"smooth_gap_ot": gap, "smooth_gap_tail": rms(tail_smooth - tail_hard), "smooth_bound_ot": bound_l2,
            "smooth_l1_ot": float((smooth - targets[index]).norm(dim=1).mean()), "smooth_l1_bound": bound_l1,
            "potential_gap_bound": ots.smoothing_potential_gap(len(targets), c.tau),
            "holds_smoothing": bool(gap <= bound_l2)}




def run_bound_checks(suite: str = "quick", device="cpu", progress: bool = False, datasets=None,
                     seeds=None) -> list[dict]:
    """Every configuration of ``suite`` x seed as one tidy row: the configuration, the left sides, every
    term and bound of Theorems A and B (or of OT5 for ``tau > 0`` rows), ``holds_*`` and ``ratio_*``."""
    with one_cpu_thread():
        return _run(suite, as_device(device), progress, datasets, seeds)


def _run(suite, device, progress, datasets, seeds) -> list[dict]:
    configs, spec = suite_configs(suite, datasets)
    seeds = spec["seeds"] if seeds is None else tuple(seeds)
    rows, scenarios = [], {}
    bar = tqdm(total=len(configs) * len(seeds), disable=not progress, desc="check-bound", unit="cfg")
    with bar:
        for config in configs:
            for seed in seeds:
                key = (config.dataset, config.model, config.shift, config.n_latents, config.sigma_star, seed)
                if key not in scenarios:
                    scenarios[key] = Scenario(replace(config, sampler="", nfe=0, ot_solver="", ot_iters=0, tau=0.0, sweep=""),
                                              seed, spec, device)
                scenario = scenarios[key]
                result = _smoothing_row(scenario, config) if config.tau > 0 else _theorem_rows(scenario, config)
                rows.append({**asdict(config), "seed": seed, "sigma_end": SIGMA_END, **result})
                bar.update(1)
    return rows
