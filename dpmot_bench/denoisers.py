"""The denoiser protocol and the conversions around it.

A **denoiser** is a batched callable ``D(x, sigma) -> estimate of x_0`` for ``x = x_0 + sigma * eps``,
with ``x`` of shape (B, ...) and ``sigma`` a float or a tensor of shape () or (B,). Everything else is
derived from it (Tweedie / Miyasawa):

    score(x, sigma) = grad log p_sigma(x) = (D(x, sigma) - x) / sigma^2
    eps(x, sigma)   = (x - D(x, sigma)) / sigma

Other model parametrisations are wrapped into this form once, at the edge: a VP eps-prediction model
``eps_theta(x_vp, t)`` with ``x_vp = x / sqrt(1 + sigma^2)`` (DDPM, diffusers UNets), and a score model
``s_theta(x, sigma)`` (NCSN). The inverse wrappers turn a denoiser into those forms, so that external
samplers (diffusers schedulers) can run on our denoisers.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from .errors import ShapeError

Tensor = torch.Tensor


class Denoiser(Protocol):
    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor: ...


def append_dims(v: Tensor, ndim: int) -> Tensor:
    """Append trailing singleton dimensions so that ``v`` broadcasts against a tensor with ``ndim`` dims."""
    return v[(...,) + (None,) * (ndim - v.ndim)]


def sigma_batch(sigma: Tensor | float, x: Tensor) -> Tensor:
    """``sigma`` as a tensor of shape (B,) on x's device and dtype."""
    sigma = torch.as_tensor(sigma, device=x.device, dtype=x.dtype)
    if sigma.numel() == 1:
        return sigma.reshape(()).expand(x.shape[0])
    if sigma.numel() != x.shape[0]:
        raise ShapeError(f"sigma must be one level or one per row of x ({x.shape[0]}), got shape {tuple(sigma.shape)}")
    return sigma.reshape(x.shape[0])


def score_from_denoised(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    return (denoised - x) / append_dims(sigma_batch(sigma, x), x.ndim) ** 2


def eps_from_denoised(x: Tensor, denoised: Tensor, sigma: Tensor | float) -> Tensor:
    return (x - denoised) / append_dims(sigma_batch(sigma, x), x.ndim)


def denoised_from_eps(x: Tensor, eps: Tensor, sigma: Tensor | float) -> Tensor:
    return x - append_dims(sigma_batch(sigma, x), x.ndim) * eps


def denoised_from_score(x: Tensor, score: Tensor, sigma: Tensor | float) -> Tensor:
    return x + append_dims(sigma_batch(sigma, x), x.ndim) ** 2 * score


class EpsModelDenoiser:
    """Wrap a VP eps-prediction model ``eps_model(x_vp, t)`` into a denoiser.

    ``D(x, sigma) = x - sigma * eps_model(x / sqrt(1 + sigma^2), schedule.t(sigma))``, where ``schedule``
    maps sigma to the model's own time (``VPLinear``, ``VPCosine`` or ``VPDiscrete`` timesteps).
    """

    def __init__(self, eps_model: Callable[[Tensor, Tensor], Tensor], schedule):
        self.eps_model, self.schedule = eps_model, schedule

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = sigma_batch(sigma, x)
        x_vp = x / append_dims(torch.sqrt(1 + sigma ** 2), x.ndim)
        t = self.schedule.t(sigma.double()).to(device=x.device, dtype=x.dtype)
        return denoised_from_eps(x, self.eps_model(x_vp, t), sigma)


class ScoreModelDenoiser:
    """Wrap a score model ``score_model(x, sigma) ~ grad log p_sigma(x)`` (NCSN) into a denoiser:
    ``D(x, sigma) = x + sigma^2 * score_model(x, sigma)``."""

    def __init__(self, score_model: Callable[[Tensor, Tensor], Tensor]):
        self.score_model = score_model

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        sigma = sigma_batch(sigma, x)
        return denoised_from_score(x, self.score_model(x, sigma), sigma)


class VPEpsModel:
    """The inverse of :class:`EpsModelDenoiser`: a denoiser seen as a VP eps-prediction model.

    ``eps(x_vp, t) = (x - D(x, sigma)) / sigma`` with ``sigma = schedule.sigma(t)`` and
    ``x = x_vp * sqrt(1 + sigma^2)``. This is how external VP samplers (diffusers) run on our denoisers.
    """

    def __init__(self, denoiser: Denoiser, schedule):
        self.denoiser, self.schedule = denoiser, schedule

    def __call__(self, x_vp: Tensor, t: Tensor | float) -> Tensor:
        t = torch.as_tensor(t, dtype=torch.float64)
        sigma = sigma_batch(self.schedule.sigma(t).to(x_vp.device), x_vp).to(x_vp.dtype)
        x = x_vp * append_dims(torch.sqrt(1 + sigma ** 2), x_vp.ndim)
        return eps_from_denoised(x, self.denoiser(x, sigma), sigma)


class ScoreModel:
    """A denoiser seen as a score model: ``score(x, sigma) = (D(x, sigma) - x) / sigma^2``."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        return score_from_denoised(x, self.denoiser(x, sigma), sigma)


class CountingDenoiser:
    """Counts what a sampler really spends: ``calls`` (the NFE) and ``rows`` (sample-evaluations), and
    refuses an output of another shape than its input (a (n, 1) output would broadcast into nonsense)."""

    def __init__(self, denoiser: Denoiser):
        self.denoiser = denoiser
        self.calls = 0
        self.rows = 0

    @property
    def nfe(self) -> int:
        return self.calls

    def reset(self) -> None:
        self.calls = self.rows = 0

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        self.calls += 1
        self.rows += x.shape[0]
        out = self.denoiser(x, sigma)
        if not isinstance(out, Tensor) or out.shape != x.shape:
            raise ShapeError(f"the denoiser must return an estimate of x's shape {tuple(x.shape)}, got "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}")
        return out


MICRO_BATCH = 64  # rows per network evaluation of FixedBatchDenoiser


class FixedBatchDenoiser:
    """A network evaluated in micro-batches of exactly ``rows`` rows, the last one padded with copies of its
    final row, so that a sample's arithmetic does not depend on the batch it came in.

    A network's output for one row can change in the last bits with the batch's size (BLAS and convolution
    kernels choose their blocking, and so their summation order, from the shapes); with one fixed shape the
    blocking is fixed, and on the CPU the rows of a batch are computed independently of each other and of
    their position in it (tested with the trained models: ``dpmot sample --batch-size 7`` and the default
    give the same bits). What stays: a change of device, of torch build or of thread count may change them.
    ``sigma`` may be a number, a 0-d tensor or one level per row."""

    def __init__(self, denoiser: Denoiser, rows: int = MICRO_BATCH):
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        self.denoiser, self.rows = denoiser, rows

    def __call__(self, x: Tensor, sigma: Tensor | float) -> Tensor:
        n = x.shape[0]
        pad = -n % self.rows
        if isinstance(sigma, Tensor) and sigma.numel() == 1:
            sigma = sigma.reshape(())  # one level for every row, padded ones included
        per_row = isinstance(sigma, Tensor) and sigma.ndim > 0
        if pad:
            x = torch.cat([x, x[-1:].expand(pad, *x.shape[1:])])
            if per_row:
                sigma = torch.cat([sigma.reshape(n), sigma.reshape(n)[-1:].expand(pad)])
        out = [self.denoiser(x[i:i + self.rows], sigma[i:i + self.rows] if per_row else sigma)
               for i in range(0, n + pad, self.rows)]
        return torch.cat(out)[:n]
