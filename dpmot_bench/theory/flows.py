"""Reference solutions of the probability-flow ODE ``dx/dsigma = (x - D(x, sigma)) / sigma``.

These are the exact flows ``Phi`` of ``theory/`` (to a stated tolerance), against which the samplers'
discretisation error is measured: an adaptive Dormand-Prince solver (``scipy.integrate.solve_ivp``, an
implementation independent of the package's samplers) in the variable ``t = log sigma``, where the ODE
reads ``dx/dt = x - D(x, e^t)``. It is a float64 reference, not a hot path: the state lives on the CPU
as numpy, the denoiser is called on the device of ``x``.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ..errors import InputError, check_points, check_sigma

# A flow "to sigma = 0" stops here; the velocity of the exact GMM flow is O(sigma |x - m| / s^2) near 0,
# so the neglected displacement is at most about SIGMA_FLOOR * |x - m| * SIGMA_FLOOR / s^2.
SIGMA_FLOOR = 1e-6


def integrate_flow(denoiser, x: torch.Tensor, sigma_from: float, sigma_to: float, *,
                   sigmas_out=None, rtol: float = 1e-9, atol: float = 1e-10):
    """Flow the rows of ``x`` from level ``sigma_from`` to ``sigma_to`` (either direction).

    ``sigma_to = 0`` stops at :data:`SIGMA_FLOOR`. With ``sigmas_out`` (levels between the two ends) also
    returns the trajectory at those levels, shape (len(sigmas_out), n, d). Returns float64 tensors on
    x's device.
    """
    check_points(x, "x")
    check_sigma(sigma_from, "sigma_from")
    check_sigma(sigma_to, "sigma_to", allow_zero=True)
    n, d = x.shape
    t0, t1 = math.log(sigma_from), math.log(max(sigma_to, SIGMA_FLOOR))
    levels = np.empty(0) if sigmas_out is None else np.log(np.asarray(sigmas_out, np.float64)).reshape(-1)
    if np.any(levels < min(t0, t1) - 1e-12) or np.any(levels > max(t0, t1) + 1e-12):
        raise InputError("sigmas_out must lie between sigma_from and sigma_to")
    # Requested levels plus the end point, in the direction of integration.
    t_eval = np.append(np.clip(levels, min(t0, t1), max(t0, t1)), t1)
    order = np.argsort(-t_eval if t1 < t0 else t_eval, kind="stable")

    def velocity(t, state):
        z = torch.from_numpy(state.reshape(n, d)).to(x.device)
        return (z - denoiser(z, math.exp(t)).double()).cpu().numpy().ravel()

    start = x.double().cpu().numpy().ravel()
    if t0 == t1:
        states = np.repeat(start[:, None], len(t_eval), 1)
    else:
        sol = solve_ivp(velocity, (t0, t1), start, method="DOP853", rtol=rtol, atol=atol,
                        t_eval=t_eval[order])
        if not sol.success:
            raise RuntimeError(f"reference ODE solve failed: {sol.message}")
        states = np.empty_like(sol.y)
        states[:, order] = sol.y
    states = torch.from_numpy(states.T.reshape(len(t_eval), n, d).copy()).to(x.device)
    return states[-1] if sigmas_out is None else (states[-1], states[:-1])
