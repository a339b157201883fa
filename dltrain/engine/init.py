"""Weight initializers with Keras's names and defaults, seeded through a torch.Generator.

Fans follow Keras: fan_in = input units x receptive field, fan_out = output units x
receptive field; layers pass them explicitly, since torch and Keras order kernel axes
differently. Keras's truncated normals cut at two standard deviations and widen the
standard deviation by 1 / 0.8796... so the truncated variance is the one asked for.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

TRUNC_STD = 0.87962566103423978  # std of a unit normal truncated to [-2, 2]

Init = Callable[..., torch.Tensor]


def _uniform(shape, limit, gen, dtype, device):
    return (torch.rand(shape, generator=gen, dtype=dtype, device=device) * 2 - 1) * limit


def _truncated_normal(shape, std, gen, dtype, device):
    # inverse-CDF sampling restricted to [-2, 2]
    lo = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    u = torch.rand(shape, generator=gen, dtype=torch.float64, device=device)
    u = lo + u * (1 - 2 * lo)
    z = math.sqrt(2) * torch.erfinv(2 * u - 1)
    return (z.clamp(-2, 2) * std).to(dtype)


def glorot_uniform(shape, fan_in, fan_out, gen, dtype, device):
    return _uniform(shape, math.sqrt(6 / (fan_in + fan_out)), gen, dtype, device)


def glorot_normal(shape, fan_in, fan_out, gen, dtype, device):
    return _truncated_normal(
        shape, math.sqrt(2 / (fan_in + fan_out)) / TRUNC_STD, gen, dtype, device
    )


def he_normal(shape, fan_in, fan_out, gen, dtype, device):
    return _truncated_normal(shape, math.sqrt(2 / fan_in) / TRUNC_STD, gen, dtype, device)


def he_uniform(shape, fan_in, fan_out, gen, dtype, device):
    return _uniform(shape, math.sqrt(6 / fan_in), gen, dtype, device)


def lecun_normal(shape, fan_in, fan_out, gen, dtype, device):
    return _truncated_normal(shape, math.sqrt(1 / fan_in) / TRUNC_STD, gen, dtype, device)


def lecun_uniform(shape, fan_in, fan_out, gen, dtype, device):
    return _uniform(shape, math.sqrt(3 / fan_in), gen, dtype, device)


def normal(shape, fan_in, fan_out, gen, dtype, device):
    return torch.randn(shape, generator=gen, dtype=dtype, device=device) * 0.05


def uniform(shape, fan_in, fan_out, gen, dtype, device):
    return _uniform(shape, 0.05, gen, dtype, device)


def orthogonal(shape, fan_in, fan_out, gen, dtype, device):
    rows = shape[0]
    cols = math.prod(shape[1:]) if len(shape) > 1 else 1
    a = torch.randn(
        max(rows, cols), min(rows, cols), generator=gen, dtype=torch.float64, device=device
    )
    q, r = torch.linalg.qr(a)
    q = q * torch.sign(torch.diagonal(r))  # make the decomposition unique
    if rows < cols:
        q = q.t()
    return q.reshape(shape).to(dtype)


def zeros(shape, fan_in, fan_out, gen, dtype, device):
    return torch.zeros(shape, dtype=dtype, device=device)


def ones(shape, fan_in, fan_out, gen, dtype, device):
    return torch.ones(shape, dtype=dtype, device=device)


INITIALIZERS: dict[str, Init] = {
    f.__name__: f
    for f in (
        glorot_uniform,
        glorot_normal,
        he_normal,
        he_uniform,
        lecun_normal,
        lecun_uniform,
        normal,
        uniform,
        orthogonal,
        zeros,
        ones,
    )
}
INITIALIZERS["random_normal"] = normal
INITIALIZERS["random_uniform"] = uniform
