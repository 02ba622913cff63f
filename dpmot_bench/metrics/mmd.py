"""Squared MMD between a sample and a Gaussian mixture, with the mixture's side in closed form.

Kernel ``k(x, y) = exp(-|x - y|^2 / (2 l^2))`` (l the bandwidth); P = sum_k w_k N(m_k, s_k^2 I_d).

Closed forms. ``k(x, .)`` is ``(2 pi l^2)^(d/2)`` times the density of N(x, l^2 I) and the convolution of
two Gaussians is Gaussian, so for y ~ N(m, s^2 I)

    E k(x, y) = (2 pi l^2)^(d/2) N(x; m, (l^2 + s^2) I) = (l^2 / (l^2 + s^2))^(d/2) exp(-|x - m|^2 / (2 (l^2 + s^2))).

Hence ``f(x) = E_{y~P} k(x, y) = sum_k w_k (l^2 / (l^2 + s_k^2))^(d/2) exp(-|x - m_k|^2 / (2 (l^2 + s_k^2)))``.
For independent y ~ N(m_j, s_j^2 I), y' ~ N(m_k, s_k^2 I), y - y' ~ N(m_j - m_k, (s_j^2 + s_k^2) I), and the
same identity (with x = 0) gives

    c = E_{y,y'~P} k(y, y')
      = sum_{j,k} w_j w_k (l^2 / (l^2 + s_j^2 + s_k^2))^(d/2) exp(-|m_j - m_k|^2 / (2 (l^2 + s_j^2 + s_k^2))).

Estimator. With ``h(x, x') = k(x, x') - f(x) - f(x') + c`` (so E h = MMD^2(Q, P) for x, x' ~ Q),

    MMD^2_u = (1 / (n (n - 1))) sum_{i != j} h(x_i, x_j)
            = (1 / (n (n - 1))) sum_{i != j} k(x_i, x_j) - (2 / n) sum_i f(x_i) + c,

a U-statistic of degree 2: unbiased, zero in expectation for samples of P (it can be negative).

Its variance (Hoeffding): ``Var(U) = (2 / (n (n - 1))) (2 (n - 2) zeta_1 + zeta_2)`` with
``zeta_1 = Var h1(x)``, ``h1(x) = E_x' h(x, x') = E_x' k(x, x') - f(x) - E_x' f(x') + c`` and ``zeta_2 =
Var h(x, x')``. The first-order term ``4 zeta_1 / n`` dominates when Q != P; at Q = P the statistic is
degenerate (h1 = 0) and the second-order term is all there is. Both are estimated without bias from the
sample, through the row sums ``R_i = sum_{j != i} h(x_i, x_j)``, ``T = sum_i R_i`` and ``Q2 = sum_{i != j}
h(x_i, x_j)^2``: over distinct indices, E h h' with one index shared is estimated by ``A = (sum_i R_i^2 -
Q2) / (n (n-1) (n-2))``, E h^2 by ``B = Q2 / (n (n-1))``, and (E h)^2 by ``C = (T^2 - 4 (sum_i R_i^2 - Q2) -
2 Q2) / (n (n-1) (n-2) (n-3))``; then ``zeta_1 = A - C``, ``zeta_2 = B - C``. The resulting variance
estimate is unbiased (it equals ``U^2 - C``) and can come out slightly negative: ``se`` is the square
root of its positive part. ``se_first_order = sqrt(4 max(zeta_1, 0) / n)`` is the first-order value alone
(the plug-in variance of the leave-one-out h1 estimates would count ``zeta_2 / n`` twice at Q = P).

The pairwise sums run in blocks of rows (memory ~ a block x n float64 arrays), in float64, on the
sample's device: n = 3e5 fits in memory on any machine, but costs n^2 = 9e10 kernel evaluations (minutes
on a GPU, tens of minutes on a CPU core): subsample for quick looks.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..data import GaussianMixture
from ..errors import InputError
from ._points import as_points

_BLOCK_ENTRIES = 1 << 22  # entries of one (rows x n) float64 block (32 MiB; a few are alive at once)


def _check_mixture(mixture) -> GaussianMixture:
    if not isinstance(mixture, GaussianMixture):
        raise InputError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
    return mixture


def default_bandwidth(mixture: GaussianMixture) -> float:
    """``l = sqrt(d) * median_k s_k`` (over the components with s_k > 0): the RMS distance of a sample from
    its mode's mean.

    Why: the kernel should resolve the shape inside a mode while modes far apart (the toy mixtures are
    tens of stds apart) do not interact. Two samples of one mode are ~ ``sqrt(2 d) s`` apart, so their
    kernel value is ~ exp(-1) whatever the dimension; a literal multiple of s would make it ``exp(-d /
    multiple^2)``, vanishing in high dimension (e^-32 for l = s at d = 32), where the MMD then sees nothing
    but exact copies. The median keeps one very wide or very narrow mode from setting the scale; pass
    several bandwidths (e.g. ``[l / 2, l, 2 l]``) for a multi-scale kernel."""
    mixture = _check_mixture(mixture)
    stds = mixture.stds[mixture.stds > 0]
    if stds.numel() == 0:
        raise InputError("every component is a point mass (std 0), so there is no within-mode scale; "
                         "pass an explicit bandwidth")
    return float(math.sqrt(mixture.dim) * stds.median())


def _bandwidths(bandwidth, mixture) -> list[float]:
    if bandwidth is None:
        return [default_bandwidth(mixture)]
    values = list(bandwidth) if isinstance(bandwidth, (list, tuple)) else [bandwidth]
    if not values:
        raise InputError("bandwidth must be a number > 0 or a non-empty list of them")
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise InputError(f"bandwidth must be a finite number > 0 (or a list of them), got {value!r}")
        out.append(float(value))
    return out


def mixture_kernel_mean(x, mixture: GaussianMixture, bandwidth: float) -> torch.Tensor:
    """``f(x_i) = E_{y~P} k(x_i, y)`` in closed form (module docstring), shape (n,), float64, chunked."""
    mixture = _check_mixture(mixture)
    (l,) = _bandwidths(bandwidth, mixture)
    x = as_points(x, "x", dim=mixture.dim)
    means = mixture.means.to(x.device)
    var = l ** 2 + mixture.stds.to(x.device) ** 2
    log_scale = torch.log(mixture.weights.to(x.device)) + 0.5 * mixture.dim * torch.log(l ** 2 / var)
    out = torch.empty(x.shape[0], dtype=torch.float64, device=x.device)
    step = max(1, _BLOCK_ENTRIES // max(mixture.n_components, mixture.dim))
    for start in range(0, x.shape[0], step):
        sq = _squared_distances(x[start:start + step], means)
        out[start:start + step] = torch.logsumexp(log_scale - sq / (2 * var), 1).exp()
    return out


def mixture_kernel_constant(mixture: GaussianMixture, bandwidth: float) -> float:
    """``c = E_{y,y'~P} k(y, y')`` for independent y, y' (module docstring)."""
    mixture = _check_mixture(mixture)
    (l,) = _bandwidths(bandwidth, mixture)
    var = l ** 2 + mixture.stds[:, None] ** 2 + mixture.stds[None, :] ** 2
    sq = _squared_distances(mixture.means, mixture.means)
    log_w = torch.log(mixture.weights)
    terms = log_w[:, None] + log_w[None, :] + 0.5 * mixture.dim * torch.log(l ** 2 / var) - sq / (2 * var)
    return float(torch.logsumexp(terms.flatten(), 0).exp())


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_j|^2`` by the matrix-product form, clamped at 0; float64 keeps its rounding (~1e-16
    |a|^2) far below any bandwidth in use."""
    return ((a ** 2).sum(1, keepdim=True) - 2 * a @ b.T + (b ** 2).sum(1)).clamp_min(0)


def _u_statistics(x: torch.Tensor, mixture: GaussianMixture, bandwidths: list[float],
                  block_rows: int | None) -> list[dict]:
    """Row sums R, the sum of squares Q2 of h over i != j, and f, for each bandwidth and (when there are
    several) for their average kernel, in one blockwise pass."""
    n = x.shape[0]
    f = [mixture_kernel_mean(x, mixture, l) for l in bandwidths]
    c = [mixture_kernel_constant(mixture, l) for l in bandwidths]
    kernels = len(bandwidths) + (len(bandwidths) > 1)
    if len(bandwidths) > 1:
        f.append(torch.stack(f).mean(0))
        c.append(sum(c) / len(c))
    u = [fk - ck / 2 for fk, ck in zip(f, c)]  # h(x_i, x_j) = k_ij - u_i - u_j
    rows_sum = [torch.zeros(n, dtype=torch.float64, device=x.device) for _ in range(kernels)]
    squares = [torch.zeros((), dtype=torch.float64, device=x.device) for _ in range(kernels)]
    step = block_rows or max(1, _BLOCK_ENTRIES // n)
    sq_norms = (x ** 2).sum(1)
    for start in range(0, n, step):
        block = slice(start, min(n, start + step))
        sq = torch.addmm(sq_norms[block, None] + sq_norms, x[block], x.T, alpha=-2).clamp_min_(0)
        rows = torch.arange(block.start, block.stop, device=x.device)
        local = torch.arange(len(rows), device=x.device)
        combined = None
        for b in range(kernels):
            if b < len(bandwidths):
                scaled = sq if b == len(bandwidths) - 1 and len(bandwidths) == 1 else sq.clone()
                h = scaled.mul_(-0.5 / bandwidths[b] ** 2).exp_().sub_(u[b][block, None]).sub_(u[b])
                if len(bandwidths) > 1:
                    combined = h / len(bandwidths) if combined is None else combined.add_(h, alpha=1 / len(bandwidths))
            else:
                h = combined
            h[local, rows] = 0.0  # i != j
            rows_sum[b][block] = h.sum(1)
            flat = h.reshape(-1)
            squares[b] += torch.dot(flat, flat)
    return [{"f": f[b], "c": c[b], "R": rows_sum[b], "Q2": float(squares[b])} for b in range(kernels)]


def _summary(parts: dict, n: int) -> dict:
    R, Q2 = parts["R"], parts["Q2"]
    T, sum_r2 = float(R.sum()), float((R ** 2).sum())
    mmd2 = T / (n * (n - 1))
    out = {"mmd2": mmd2, "se": float("nan"), "se_first_order": float("nan"), "var": float("nan"), "n": n,
           "kernel_mean_sample": mmd2 - parts["c"] + 2 * float(parts["f"].mean()),
           "kernel_mean_cross": float(parts["f"].mean()), "kernel_mean_mixture": parts["c"]}
    if n >= 4:
        triples = sum_r2 - Q2
        a = triples / (n * (n - 1) * (n - 2))
        b = Q2 / (n * (n - 1))
        c = (T ** 2 - 4 * triples - 2 * Q2) / (n * (n - 1) * (n - 2) * (n - 3))
        zeta1, zeta2 = a - c, b - c
        var = 2 / (n * (n - 1)) * (2 * (n - 2) * zeta1 + zeta2)
        out.update(var=var, se=math.sqrt(max(var, 0.0)), se_first_order=math.sqrt(4 * max(zeta1, 0.0) / n),
                   zeta1=zeta1, zeta2=zeta2)
    return out


def mmd2_to_mixture(x, mixture: GaussianMixture, bandwidth: float | Sequence[float] | None = None, *,
                    block_rows: int | None = None) -> dict:
    """Unbiased MMD^2 between the sample x (n, d), n >= 2, and the mixture, Gaussian kernel (module docstring).

    ``bandwidth``: a number, a list (the kernel is then the average of the Gaussian kernels, still
    characteristic, and ``per_bandwidth`` holds each one's result), or None for :func:`default_bandwidth`.
    Returns ``mmd2``, ``se`` (from the unbiased variance estimate, both Hoeffding terms; needs n >= 4,
    else NaN), ``se_first_order``, ``var``, ``zeta1``, ``zeta2``, ``n``, ``bandwidth`` (a float or the list),
    and the three kernel means whose combination is mmd2: ``kernel_mean_sample`` (mean of k(x_i, x_j),
    i != j), ``kernel_mean_cross`` (mean of f(x_i)), ``kernel_mean_mixture`` (c). ``block_rows`` sets the
    rows per block of the pairwise sums (default: blocks of ~4M entries)."""
    mixture = _check_mixture(mixture)
    bandwidths = _bandwidths(bandwidth, mixture)
    x = as_points(x, "x", dim=mixture.dim, min_rows=2)
    if block_rows is not None and (isinstance(block_rows, bool) or not isinstance(block_rows, int) or block_rows < 1):
        raise InputError(f"block_rows must be an integer >= 1, got {block_rows!r}")
    parts = _u_statistics(x, mixture, bandwidths, block_rows)
    results = [_summary(p, x.shape[0]) for p in parts]
    if len(bandwidths) == 1:
        return {**results[0], "bandwidth": bandwidths[0]}
    per = [{**r, "bandwidth": l} for r, l in zip(results, bandwidths)]
    return {**results[-1], "bandwidth": bandwidths, "per_bandwidth": per}


def mmd2_contributions(x, mixture: GaussianMixture, bandwidth: float | Sequence[float] | None = None, *,
                       block_rows: int | None = None) -> torch.Tensor:
    """Per-sample values psi (n,) float64 whose mean is MMD^2_u exactly, for a paired bootstrap.

    ``psi_i = 2 g_i - MMD^2_u`` with ``g_i = R_i / (n - 1)`` the leave-one-out estimate of ``MMD^2 + h1(x_i)``:
    the U-statistic's first-order (Hajek) projection, ``MMD^2_u ~ MMD^2 + (2/n) sum_i h1(x_i)``. A bootstrap
    of the mean of psi (``stats.paired_difference(list_of_psi_a, list_of_psi_b)``) reproduces the
    first-order variance ``4 zeta_1 / n``, right when the sampler is not exact (Q != P); at Q = P it is
    about twice the true variance (conservative). Preferred to resampling the points themselves, where
    repeated rows add k(x, x) = 1 terms that bias the resampled U-statistic."""
    mixture = _check_mixture(mixture)
    bandwidths = _bandwidths(bandwidth, mixture)
    x = as_points(x, "x", dim=mixture.dim, min_rows=2)
    parts = _u_statistics(x, mixture, bandwidths, block_rows)[-1]
    n = x.shape[0]
    g = parts["R"] / (n - 1)
    return 2 * g - g.mean()
