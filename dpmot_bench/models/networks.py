"""Small denoising networks with EDM preconditioning (Karras et al. 2022, "Elucidating the Design Space of
Diffusion-Based Generative Models", section 5 and table 1).

A raw network ``F(x_in, c_noise)`` is wrapped into a denoiser

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma)),
    c_skip = sd^2 / (sigma^2 + sd^2),   c_out = sigma sd / sqrt(sigma^2 + sd^2),
    c_in = 1 / sqrt(sigma^2 + sd^2),    c_noise = log(sigma) / 4,

with ``sd`` the data standard deviation. The network input ``c_in x`` has unit variance at every sigma, and
its training target ``(x_0 - c_skip x) / c_out`` has unit variance too, so one network serves all levels.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..denoisers import append_dims, sigma_batch
from ..errors import InputError, ShapeError


def edm_scalings(sigma: torch.Tensor, sigma_data: float | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``(c_skip, c_out, c_in, c_noise)`` of EDM preconditioning for noise levels ``sigma``."""
    total = sigma ** 2 + sigma_data ** 2
    c_noise = sigma.clamp_min(torch.finfo(sigma.dtype).tiny).log() / 4  # finite at sigma = 0, where c_out = 0
    return sigma_data ** 2 / total, sigma * sigma_data / total.sqrt(), total.rsqrt(), c_noise


class FourierFeatures(nn.Module):
    """``[cos(2 pi f_k c), sin(2 pi f_k c)]`` at fixed octave-spaced frequencies ``f_k = 2^k / 8``.

    ``c = log(sigma) / 4`` spans about [-2, 1.5] for sigma in [1e-3, 400]; the lowest frequency (one cycle
    over 8 units) keeps the embedding one-to-one on that range, the higher ones resolve fine differences.
    """

    def __init__(self, n_frequencies: int = 8):
        super().__init__()
        self.register_buffer("frequencies", 2.0 ** torch.arange(n_frequencies) / 8, persistent=False)

    @property
    def dim(self) -> int:
        return 2 * len(self.frequencies)

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        phase = 2 * math.pi * c[:, None] * self.frequencies.to(c.dtype)
        return torch.cat([phase.cos(), phase.sin()], 1)


class MLP(nn.Module):
    """Residual MLP ``F(x, c_noise[, cond])`` for flat vectors; the noise embedding enters every block, and
    with ``cond_dim > 0`` a linear image of a condition vector (e.g. a prompt embedding) joins it (a
    missing condition is the zero vector: the "null" condition of condition dropout). ``cond_dim = 0``
    leaves the parameters exactly those of the unconditional network."""

    def __init__(self, dim: int, width: int = 128, depth: int = 3, n_frequencies: int = 8, cond_dim: int = 0):
        super().__init__()
        self.cond_dim = cond_dim
        self.cond = nn.Linear(cond_dim, width) if cond_dim else None
        self.embed = FourierFeatures(n_frequencies)
        self.inp = nn.Linear(dim, width)
        self.emb = nn.ModuleList(nn.Linear(self.embed.dim, width) for _ in range(depth))
        self.blocks = nn.ModuleList(nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                                  nn.Linear(width, width)) for _ in range(depth))
        self.out = nn.Sequential(nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        e = self.embed(c_noise)
        c = _condition(self.cond, cond, x)
        h = self.inp(x)
        for emb, block in zip(self.emb, self.blocks):
            h = h + block(h + emb(e) + c)
        return self.out(h)


def _condition(layer, cond, x):
    """The condition's contribution (0 for an unconditional network; the zero vector when cond is None)."""
    if layer is None:
        if cond is not None:
            raise InputError("this network takes no condition (it was built with cond_dim = 0)")
        return 0.0
    if cond is None:
        cond = torch.zeros(x.shape[0], layer.in_features, device=x.device, dtype=layer.weight.dtype)
    return layer(cond.to(layer.weight.dtype))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv twice, with the noise embedding added in between (DDPM style)."""

    def __init__(self, c_in: int, c_out: int, emb_dim: int):
        super().__init__()
        self.conv1 = nn.Sequential(nn.GroupNorm(min(8, c_in), c_in), nn.SiLU(), nn.Conv2d(c_in, c_out, 3, padding=1))
        self.emb = nn.Linear(emb_dim, c_out)
        self.conv2 = nn.Sequential(nn.GroupNorm(min(8, c_out), c_out), nn.SiLU(), nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return self.skip(h) + self.conv2(self.conv1(h) + self.emb(e)[:, :, None, None])


class SmallUNet(nn.Module):
    """A two-level UNet ``F(x, c_noise)`` for small images given as flat rows (reshaped to ``shape``).

    8x8 input: one residual block at full resolution, two at half resolution, one on the way back up
    after concatenating the skip connection. Even sides are required (one 2x down-sampling).
    """

    def __init__(self, shape: tuple[int, int, int], width: int = 32, n_frequencies: int = 8, cond_dim: int = 0):
        super().__init__()
        channels, height, width_px = shape
        self.cond_dim = cond_dim
        self.cond = nn.Linear(cond_dim, 4 * width) if cond_dim else None  # joins the noise embedding (MLP's rule)
        if height % 2 or width_px % 2:
            raise ShapeError(f"SmallUNet needs even image sides, got {shape}")
        self.shape = tuple(shape)
        self.embed = FourierFeatures(n_frequencies)
        emb = 4 * width
        self.emb = nn.Sequential(nn.Linear(self.embed.dim, emb), nn.SiLU())
        self.inp = nn.Conv2d(channels, width, 3, padding=1)
        self.enc = ResBlock(width, width, emb)
        self.down = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.mid = nn.ModuleList([ResBlock(2 * width, 2 * width, emb), ResBlock(2 * width, 2 * width, emb)])
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.dec = ResBlock(3 * width, width, emb)
        self.out = nn.Sequential(nn.GroupNorm(min(8, width), width), nn.SiLU(), nn.Conv2d(width, channels, 3, padding=1))

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        e = self.emb(self.embed(c_noise)) + _condition(self.cond, cond, x)
        skip = self.enc(self.inp(x.reshape(x.shape[0], *self.shape)), e)
        h = self.down(skip)
        for block in self.mid:
            h = block(h, e)
        h = self.dec(torch.cat([self.up(h), skip], 1), e)
        return self.out(h).reshape(x.shape)


class EDMDenoiser(nn.Module):
    """The denoiser ``D(x, sigma)`` of a raw network ``net(x_in, c_noise)`` under EDM preconditioning.

    Follows the protocol of :mod:`dpmot_bench.denoisers`: ``x`` (B, ...) on the model's device, ``sigma``
    a float or a tensor of shape () or (B,), sigma > 0. The network runs in its parameters' dtype; the
    result comes back in x's dtype. ``sigma_data`` is stored as a buffer so that it travels with the weights.
    """

    def __init__(self, net: nn.Module, sigma_data: float):
        super().__init__()
        if not (math.isfinite(sigma_data) and sigma_data > 0):
            raise InputError(f"sigma_data must be finite and > 0, got {sigma_data}")
        self.net = net
        self.register_buffer("sigma_data", torch.tensor(float(sigma_data)))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        # No validation here (hot path, no device sync): sigma = 0 gives D = x (c_skip = 1, c_out = 0).
        sigma = sigma_batch(sigma, x)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data.to(sigma.dtype))
        c_skip, c_out, c_in = (append_dims(c, x.ndim) for c in (c_skip, c_out, c_in))
        dtype = next(self.net.parameters()).dtype
        args = () if cond is None else (cond,)  # a conditional network: D(x, sigma, cond); None: the null condition
        f = self.net((c_in * x).to(dtype), c_noise.to(dtype), *args)
        return c_skip * x + c_out * f.to(x.dtype)
