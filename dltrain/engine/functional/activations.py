"""Activations, as in torch.nn.functional, each one node with its derivative written out."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as TF

from ..precision import full
from ..tensor import Tensor, make

aten = torch.ops.aten


def relu(input: Tensor, inplace: bool = False) -> Tensor:
    """inplace=True overwrites input's storage: only when nothing else reads it (the model
    planner decides)."""
    out = torch.relu_(input.data) if inplace else torch.relu(input.data)
    # d relu = [x > 0] = [out > 0]: one masked copy (aten's threshold_backward)
    return make(out, (input,), lambda g: (aten.threshold_backward(g, out, 0),), "relu")


def leaky_relu(input: Tensor, negative_slope: float = 0.01, inplace: bool = False) -> Tensor:
    X = input.data
    out = TF.leaky_relu(X, negative_slope, inplace=inplace)
    # d = 1 for x > 0, slope otherwise; for slope > 0, out > 0 exactly where x > 0, so the
    # output serves as well as the input (one pass: aten's leaky_relu_backward)
    if inplace and negative_slope <= 0:
        raise ValueError("in-place leaky_relu needs negative_slope > 0")
    return make(
        out,
        (input,),
        lambda g: (aten.leaky_relu_backward(g, out, negative_slope, inplace),),
        "leaky_relu",
    )


def elu(input: Tensor, alpha: float = 1.0) -> Tensor:
    X = input.data
    out = TF.elu(X, alpha)
    # d = 1 for x > 0, alpha e^x = out + alpha otherwise
    return make(out, (input,), lambda g: (torch.where(X > 0, g, g * (out + alpha)),), "elu")


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    X = input.data
    out = TF.gelu(X, approximate=approximate)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor]:
        if approximate == "tanh":
            # y = x/2 (1 + tanh u), u = k (x + 0.044715 x^3), k = sqrt(2/pi)
            k = math.sqrt(2.0 / math.pi)
            t = torch.tanh(k * (X + 0.044715 * X**3))
            du = k * (1 + 3 * 0.044715 * X**2)
            return (g * (0.5 * (1 + t) + 0.5 * X * (1 - t * t) * du),)
        # y = x Phi(x):  dy = Phi(x) + x phi(x)
        cdf = 0.5 * (1 + torch.erf(X / math.sqrt(2.0)))
        pdf = torch.exp(-0.5 * X * X) / math.sqrt(2 * math.pi)
        return (g * (cdf + X * pdf),)

    if approximate not in ("none", "tanh"):
        raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return make(out, (input,), vjp, "gelu")


def sigmoid(input: Tensor) -> Tensor:
    out = torch.sigmoid(input.data)
    # g s (1 - s) and g (1 - tanh^2) in one pass each (aten's backward kernels)
    return make(out, (input,), lambda g: (aten.sigmoid_backward(g, out),), "sigmoid")


def tanh(input: Tensor) -> Tensor:
    out = torch.tanh(input.data)
    return make(out, (input,), lambda g: (aten.tanh_backward(g, out),), "tanh")


def silu(input: Tensor) -> Tensor:
    X = input.data
    s = torch.sigmoid(X)
    # y = x s(x):  dy = s (1 + x (1 - s))
    return make(X * s, (input,), lambda g: (g * s * (1 + X * (1 - s)),), "silu")


def softplus(input: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    X = input.data
    out = TF.softplus(X, beta, threshold)
    # y = log(1 + e^{b x}) / b:  dy = sigmoid(b x); linear (dy = 1) above the threshold
    return make(
        out,
        (input,),
        lambda g: (torch.where(X * beta > threshold, g, g * torch.sigmoid(X * beta)),),
        "softplus",
    )


def softmax(input: Tensor, dim: int = -1) -> Tensor:
    input = full(input)  # float32 under autocast
    out = torch.softmax(input.data, dim)
    # dx = y * (g - sum(g y))
    return make(out, (input,), lambda g: (out * (g - (g * out).sum(dim, keepdim=True)),), "softmax")


def log_softmax(input: Tensor, dim: int = -1) -> Tensor:
    input = full(input)
    out = torch.log_softmax(input.data, dim)
    # dx = g - softmax * sum(g)
    return make(out, (input,), lambda g: (g - out.exp() * g.sum(dim, keepdim=True),), "log_softmax")


# Keras's activation `leaky_relu` has slope 0.2 (its LeakyReLU layer 0.3; torch's 0.01)
KERAS_LEAKY_SLOPE = 0.2


def keras_leaky_relu(input: Tensor, inplace: bool = False) -> Tensor:
    return leaky_relu(input, KERAS_LEAKY_SLOPE, inplace)


# Keras activation names -> their math with Keras's defaults
ACTIVATIONS: dict[str, Callable[..., Tensor]] = {
    "relu": relu,
    "leaky_relu": keras_leaky_relu,
    "elu": elu,
    "gelu": gelu,
    "sigmoid": sigmoid,
    "tanh": tanh,
    "silu": silu,
    "swish": silu,
    "softplus": softplus,
    "softmax": softmax,
    "log_softmax": log_softmax,
}
