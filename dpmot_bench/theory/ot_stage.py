"""OT-stage facts of ``theory/ot_stage.md`` as functions: the TV sandwich, mass-error and smoothing
bounds (the potentials and maps themselves are :mod:`dpmot_bench.ot.kernel`'s). All torch, device taken
from the inputs.

Notation: targets ``y`` (N, d), dual vector ``h`` (N,), source mu with 1-D projection densities bounded
by ``rho_max`` (:func:`projection_density_bound`).
"""
from __future__ import annotations

import math

import torch

from ..errors import InputError, ShapeError, check_points


def _check_targets(y: torch.Tensor, h: torch.Tensor | None = None) -> None:
    check_points(y, "targets")
    if h is not None and h.shape != (y.shape[0],):
        raise ShapeError(f"h must have shape ({y.shape[0]},), got {tuple(h.shape)}")


def tv(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Total variation ``1/2 sum_i |a_i - b_i|`` between weight vectors."""
    if a.shape != b.shape or a.ndim != 1:
        raise ShapeError(f"weight vectors must be 1-D and of one shape, got {tuple(a.shape)}, {tuple(b.shape)}")
    return 0.5 * (a - b).abs().sum()


def tv_sandwich(points: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    """Lemma OT2: ``dmin sqrt(TV) <= W2(sum a_i delta_{z_i}, sum b_i delta_{z_i}) <= diam sqrt(TV)`` for
    distinct points z_i. Returns ``(lower, upper)``."""
    check_points(points, "points", min_rows=2)
    dist = torch.cdist(points.double(), points.double())
    off = dist[~torch.eye(len(points), dtype=torch.bool, device=points.device)]
    root = math.sqrt(float(tv(a.double(), b.double())))
    return float(off.min()) * root, float(off.max()) * root


def inverse_distance_sum(y: torch.Tensor) -> float:
    """``S_Y = sum_{i<j} 1 / |y_i - y_j|`` (the geometric factor of Lemma OT4)."""
    dist = torch.pdist(y.double())
    if bool((dist == 0).any()):
        raise InputError("targets must be distinct")
    return float((1 / dist).sum())


def projection_density_bound(kind: str, scale) -> float:
    """``rho_max``: a bound on the density of every 1-D projection ``<X, e>``, ``|e| = 1``, of the source.

    * ``gaussian`` with std ``s`` (scalar or per coordinate): ``1 / (min s sqrt(2 pi))`` (the projection is
      normal with variance ``sum e_k^2 s_k^2 >= min s^2``).
    * ``uniform`` on a box with side lengths ``w`` (scalar or per coordinate): ``sqrt(sum_k w_k^-2)``. The
      projection is a sum of independent uniforms of lengths ``w_k |e_k|``; its density is at most that of
      any one term, ``1 / (w_k |e_k|)``, and ``min_e max_k w_k |e_k| = (sum_k w_k^-2)^(-1/2)``.
    """
    scale = torch.as_tensor(scale, dtype=torch.float64).reshape(-1)
    if bool((scale <= 0).any()) or not bool(torch.isfinite(scale).all()):
        raise InputError("source scales must be finite and > 0")
    if kind == "gaussian":
        return 1.0 / (float(scale.min()) * math.sqrt(2 * math.pi))
    if kind == "uniform":
        return float((scale ** -2).sum().sqrt())
    raise InputError(f"unknown source kind {kind!r}; choose gaussian or uniform")


def mass_error_bound(y: torch.Tensor, h: torch.Tensor, h_star: torch.Tensor, rho_max: float) -> float:
    """Lemma OT4: ``TV(m(h), m(h*)) <= min(1, rho_max sum_{i != j} (Delta_i - Delta_j)_+ / |y_i - y_j|)``,
    ``Delta = h - h*`` (points mislabelled between i and j lie in a slab of that width)."""
    _check_targets(y, h)
    delta = (h - h_star).double()
    gaps = (delta[:, None] - delta[None, :]).clamp_min(0)
    dist = torch.cdist(y.double(), y.double())
    off = ~torch.eye(len(y), dtype=torch.bool, device=y.device)
    return min(1.0, rho_max * float((gaps[off] / dist[off]).sum()))


def oscillation(v: torch.Tensor) -> float:
    """``osc(v) = max v - min v = 2 min_c |v - c|_inf`` (the gauge-invariant size of a dual error)."""
    return float(v.max() - v.min())


def potential_k2(points_after_tail: torch.Tensor, y: torch.Tensor, rho_max: float) -> float:
    """``k2 = diam(F(Y)) (2 rho_max S_Y)^(1/2)``: with it, ``W2(F # T_h # mu, F # nu) <= k2 |u_h - u_h*|_inf^(1/2)``
    whenever no cell of h is empty (``theory/ot_stage.md`` Cor. OT4)."""
    diam = float(torch.pdist(points_after_tail.double()).max())
    return diam * math.sqrt(2 * rho_max * inverse_distance_sum(y))


def smoothing_potential_gap(n_targets: int, tau: float) -> float:
    """Lemma OT5 (i): ``|u_{h,tau} - u_h|_inf <= tau log N``."""
    return tau * math.log(n_targets)


def smoothing_map_bounds(y: torch.Tensor, rho_max: float, tau: float) -> tuple[float, float]:
    """Lemma OT5 (ii): ``E_mu |T_{h,tau} - T_h| <= rho_max tau N (N - 1)`` and hence
    ``(E_mu |T_{h,tau} - T_h|^2)^(1/2) <= (diam(Y) rho_max tau N (N - 1))^(1/2)``. Returns (L1, L2) bounds."""
    n = y.shape[0]
    l1 = rho_max * tau * n * (n - 1)
    diam = float(torch.pdist(y.double()).max()) if n > 1 else 0.0
    return l1, math.sqrt(diam * l1)
