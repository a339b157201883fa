"""The merge, cropping, rescaling and noise layers in the engine: values and every input's
gradient against the same computation under torch.autograd (float64), the noise layers in
training with the very draws the run's generator makes, and the identity at inference.
Keras's inference outputs are compared in tests/keras, ONNX in tests/export."""

from __future__ import annotations

import math

import pytest
import torch

from dltrain.engine import Tensor
from dltrain.engine.distributed import RowsGenerator, normal_rows
from dltrain.engine.layers import RunContext
from dltrain.engine.model import compile_model
from dltrain.spec import ModelSpec
from tests.oracle import check

D = torch.float64


def layer_of(spec: dict, input_shape: list[int]):
    model = compile_model(
        ModelSpec.model_validate({"input_shape": input_shape, "layers": [spec]}), dtype=D
    )
    return model.layers[0]


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(seed))


MERGES = {
    "Add": lambda a, b, c: a + b + c,
    "Subtract": lambda a, b: a - b,
    "Multiply": lambda a, b, c: a * b * c,
    "Average": lambda a, b, c: (a + b + c) / 3,
    "Maximum": lambda a, b, c: torch.maximum(torch.maximum(a, b), c),
    "Minimum": lambda a, b, c: torch.minimum(torch.minimum(a, b), c),
}


@pytest.mark.parametrize("kind", sorted(MERGES))
def test_merges_match_autograd(kind):
    n = 2 if kind == "Subtract" else 3
    spec = {
        "input_shape": [4, 3],
        "layers": [
            *(
                {"type": "Reshape", "target_shape": [4, 3], "name": f"b{i}", "inputs": ["input"]}
                for i in range(n)
            ),  # fmt: skip
            {"type": kind, "inputs": [f"b{i}" for i in range(n)]},
        ],
    }
    layer = compile_model(ModelSpec.model_validate(spec), dtype=D).layers[-1]
    xs = [rand(2, 3, 4, seed=i) for i in range(n)]
    check(lambda *a: layer.forward(list(a), RunContext()), MERGES[kind], *xs)


def test_subtract_takes_exactly_two_inputs():
    from dltrain.spec import SpecError

    with pytest.raises((SpecError, ValueError), match="exactly two"):
        ModelSpec.model_validate(
            {"input_shape": [3], "layers": [{"type": "Subtract", "inputs": ["input"] * 3}]}
        )


@pytest.mark.parametrize(
    "spec,shape,ref",
    [
        ({"type": "Cropping2D", "cropping": [[1, 2], [0, 1]]}, [6, 5, 2],
         lambda x: x[:, :, 1:4, 0:4]),
        ({"type": "Cropping2D", "cropping": 1}, [4, 4, 3], lambda x: x[:, :, 1:3, 1:3]),
        ({"type": "Cropping1D", "cropping": [2, 1]}, [7, 3], lambda x: x[:, :, 2:6]),
        ({"type": "Rescaling", "scale": 1 / 255, "offset": -0.5}, [3, 2, 2],
         lambda x: x / 255 - 0.5),
    ],
)  # fmt: skip
def test_cropping_and_rescaling_match_autograd(spec, shape, ref):
    layer = layer_of(spec, shape)
    x = rand(2, shape[-1], *shape[:-1])  # the engine's channels-first layout
    check(lambda a: layer.forward([a], RunContext()), ref, x)


def test_cropping_everything_away_is_a_shape_error():
    from dltrain.spec import SpecError

    with pytest.raises(SpecError, match="leaves nothing"):
        layer_of({"type": "Cropping2D", "cropping": [[2, 2], [0, 0]]}, [4, 5, 1])


def test_rescaling_turns_integer_pixels_into_floats():
    layer = layer_of({"type": "Rescaling", "scale": 1 / 255}, [4])
    out = layer.forward([Tensor(torch.tensor([[0, 51, 255, 102]]))], RunContext())
    assert out.data.dtype == torch.float32
    torch.testing.assert_close(out.data, torch.tensor([[0.0, 0.2, 1.0, 0.4]]))


NOISE = [
    ({"type": "SpatialDropout2D", "rate": 0.4}, [5, 4, 6]),
    ({"type": "SpatialDropout1D", "rate": 0.3}, [7, 8]),
    ({"type": "GaussianNoise", "stddev": 0.7}, [3, 2, 4]),
    ({"type": "GaussianDropout", "rate": 0.2}, [9]),
]


def _expected(spec: dict, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The layer's training output, from the same draws made here (x + noise or x * m)."""
    kind = spec["type"]
    if kind.startswith("SpatialDropout"):
        keep = 1 - spec["rate"]
        shape = x.shape[:2] + (1,) * (x.dim() - 2)
        m = (torch.rand(shape, generator=gen) < keep).to(D) / keep
        return x * m
    z = torch.randn(x.shape, generator=gen).to(D)
    if kind == "GaussianNoise":
        return x + spec["stddev"] * z
    return x * (1 + math.sqrt(spec["rate"] / (1 - spec["rate"])) * z)


@pytest.mark.parametrize("spec,shape", NOISE, ids=[s["type"] for s, _ in NOISE])
def test_noise_layers_in_training_and_at_inference(spec, shape):
    layer = layer_of(spec, shape)
    x = rand(4, *([shape[-1]] + shape[:-1] if len(shape) > 1 else shape))
    assert layer.forward([Tensor(x)], RunContext()).data is x  # inference: the identity

    def train(a):
        run = RunContext(training=True, generator=torch.Generator().manual_seed(7))
        return layer.forward([a], run)

    check(train, lambda a: _expected(spec, a, torch.Generator().manual_seed(7)), x)


def test_spatial_dropout_drops_whole_channels_at_its_rate():
    layer = layer_of({"type": "SpatialDropout2D", "rate": 0.25}, [3, 3, 400])
    run = RunContext(training=True, generator=torch.Generator().manual_seed(1))
    y = layer.forward([Tensor(torch.ones(50, 400, 3, 3, dtype=D))], run).data
    per_channel = y.flatten(2)
    assert torch.all(per_channel == per_channel[:, :, :1])  # one draw per (sample, channel)
    assert set(torch.unique(y).tolist()) == {0.0, 1 / 0.75}
    assert abs((y[:, :, 0, 0] == 0).double().mean().item() - 0.25) < 0.01


def test_gaussian_draws_for_rows_of_the_global_batch_are_the_global_draws():
    full = normal_rows((10, 3, 2), torch.Generator().manual_seed(4), torch.device("cpu"))
    rows = RowsGenerator(torch.Generator().manual_seed(4), 6, 10)
    assert torch.equal(normal_rows((4, 3, 2), rows, torch.device("cpu")), full[6:])


@pytest.mark.parametrize(
    "spec,shape,groups",
    [
        ({"type": "GroupNormalization", "groups": 2}, [4, 5, 6], 2),
        ({"type": "GroupNormalization", "groups": -1, "epsilon": 0.01}, [7, 3], 3),
        ({"type": "GroupNormalization", "groups": 1, "center": False}, [5], 1),
    ],
)
def test_group_normalization_matches_autograd(spec, shape, groups):
    """Values and the input's, gamma's and beta's gradients against torch's group_norm."""
    layer = layer_of(spec, shape)
    c = shape[-1]
    x = rand(3, c, *shape[:-1]) * 2 + 1
    gamma, beta = rand(c, seed=1), rand(c, seed=2)
    eps = spec.get("epsilon", 1e-3)

    def ours(a, w, b):
        layer.params["gamma"] = w
        if "beta" in layer.params:
            layer.params["beta"] = b
        return layer.forward([a], RunContext())

    def theirs(a, w, b):
        return torch.nn.functional.group_norm(
            a, groups, w, b if spec.get("center", True) else None, eps
        )

    flags = (True, True, spec.get("center", True))
    check(ours, theirs, x, gamma, beta, grad=flags)


def test_group_normalization_needs_groups_that_divide_the_channels():
    from dltrain.spec import SpecError

    with pytest.raises(SpecError, match="do not divide"):
        layer_of({"type": "GroupNormalization", "groups": 4}, [3, 6])


def test_group_normalization_takes_bfloat16_activations_with_float32_weights():
    """bf16-mixed: a bfloat16 activation (a convolution's output) normalised by aten's mixed
    kernel, float32 statistics and weights; gamma's gradient arrives in float32."""
    layer = compile_model(
        ModelSpec.model_validate(
            {"input_shape": [4, 4, 6], "layers": [{"type": "GroupNormalization", "groups": 3}]}
        )
    ).layers[0]
    x = torch.randn(2, 6, 4, 4, generator=torch.Generator().manual_seed(0))
    want = layer.forward([Tensor(x)], RunContext()).data
    xb = Tensor(x.bfloat16(), requires_grad=True)
    y = layer.forward([xb], RunContext())
    assert y.data.dtype == torch.bfloat16
    torch.testing.assert_close(y.data.float(), want, rtol=0.02, atol=0.02)
    y.sum().backward()
    assert layer.params["gamma"].grad.dtype == torch.float32
    assert xb.grad.dtype == torch.bfloat16
