"""Each layer against the matching torch.nn layer with the same weights: output shape,
parameter count (Keras's), spec round trip, and values (float64)."""

import pytest
import torch
import torch.nn as nn

from dltrain.engine import Tensor
from dltrain.engine.functional import ACTIVATIONS
from dltrain.engine.init import INITIALIZERS
from dltrain.engine.layers import LAYERS, RunContext
from dltrain.engine.layers.base import keras_shape
from dltrain.engine.model import compile_model
from dltrain.spec import ACTIVATION_NAMES, INITIALIZER_NAMES, LAYER_TYPES, ModelSpec, SpecError

D = torch.float64


def check_layer(
    layer: dict,
    input_shape: list,
    torch_layer,
    params: int,
    out_shape: tuple,
    copy=None,
    training=False,
    dtype=torch.float64,
    x=None,
):
    """Compile a one-layer model, give torch_layer the same weights, compare."""
    spec = ModelSpec.model_validate({"input_shape": input_shape, "layers": [layer]})
    model = compile_model(spec, seed=0, dtype=dtype)
    L = model.layers[0]
    assert keras_shape(L.output_shape) == out_shape
    assert sum(model.param_counts()) == params
    # the spec survives a round trip through its JSON form, and so does the model: the same
    # weights and the same outputs
    round_trip = ModelSpec.model_validate(spec.model_dump(mode="json"))
    assert round_trip == spec
    again = compile_model(round_trip, seed=0, dtype=dtype)
    for (ka, a), (kb, b) in zip(model.state_tensors().items(), again.state_tensors().items()):
        assert ka == kb and torch.equal(a, b)
    if copy:
        with torch.no_grad():
            copy(L, torch_layer)
    if x is None:
        shape = (4,) + tuple(model.input_shape)
        x = torch.randn(shape, dtype=D, generator=torch.Generator().manual_seed(3))
    torch_layer.train(training)
    ours = model(Tensor(x), RunContext(training=training)).data
    with torch.no_grad():
        theirs = torch_layer(x)
    torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)
    if not training:
        again.load_state_tensors(model.state_tensors())
        assert torch.equal(again(Tensor(x), RunContext()).data, ours)
    return L, torch_layer


def kb(L, t):  # kernel and bias
    t.weight.copy_(L.params["kernel"].data)
    if "bias" in L.params:
        t.bias.copy_(L.params["bias"].data)


def test_dense():
    check_layer(
        {"type": "Dense", "units": 5, "activation": "relu"},
        [7],
        nn.Sequential(nn.Linear(7, 5).double(), nn.ReLU()),
        40,
        (5,),
        lambda L, t: kb(L, t[0]),
    )


@pytest.mark.parametrize(
    "shape,layer,torch_layer,params,out",
    [
        (
            [9, 9, 3],
            dict(strides=2, padding="same"),
            lambda: nn.Conv2d(3, 4, 3, 2, 1),
            112,
            (5, 5, 4),
        ),
        (
            [8, 8, 3],
            dict(strides=2, padding="same"),
            lambda: nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(3, 4, 3, 2)),
            112,
            (4, 4, 4),
        ),
        (
            [7, 6, 3],
            dict(padding="valid", dilation_rate=2, use_bias=False),
            lambda: nn.Conv2d(3, 4, 3, dilation=2, bias=False),
            108,
            (3, 2, 4),
        ),
    ],
)
def test_conv2d(shape, layer, torch_layer, params, out):
    t = torch_layer().double()
    conv = t if isinstance(t, nn.Conv2d) else t[1]
    check_layer(
        {"type": "Conv2D", "filters": 4, "kernel_size": 3, **layer},
        shape,
        t,
        params,
        out,
        lambda L, _: kb(L, conv),
    )


@pytest.mark.parametrize(
    "layer,torch_layer,params,out",
    [
        (
            {"type": "DepthwiseConv2D", "kernel_size": 3, "depth_multiplier": 2},
            lambda: nn.Conv2d(3, 6, 3, groups=3),
            60,
            (5, 4, 6),
        ),
        (
            {"type": "DepthwiseConv2D", "kernel_size": [2, 3], "strides": 2, "use_bias": False},
            lambda: nn.Conv2d(3, 3, (2, 3), 2, groups=3, bias=False),
            18,
            (3, 2, 3),
        ),
        (
            {
                "type": "SeparableConv2D",
                "filters": 4,
                "kernel_size": 3,
                "dilation_rate": 2,
                "depth_multiplier": 2,
                "activation": "relu",
            },  # fmt: skip
            lambda: nn.Sequential(
                nn.Conv2d(3, 6, 3, dilation=2, groups=3, bias=False), nn.Conv2d(6, 4, 1), nn.ReLU()
            ),
            54 + 24 + 4,
            (3, 2, 4),
        ),
    ],
)
def test_depthwise_and_separable_conv2d(layer, torch_layer, params, out):
    """Values against torch's grouped convolutions, then every gradient against autograd."""

    def copy(L, t):
        if layer["type"] == "DepthwiseConv2D":
            kb(L, t)
        else:
            t[0].weight.copy_(L.params["depthwise_kernel"].data)
            t[1].weight.copy_(L.params["pointwise_kernel"].data)
            t[1].bias.copy_(L.params["bias"].data)

    L, t = check_layer(layer, [7, 6, 3], torch_layer().double(), params, out, copy)
    x = torch.randn(4, 3, 7, 6, dtype=D, generator=torch.Generator().manual_seed(4))
    g = torch.randn((4, out[2], *out[:2]), dtype=D, generator=torch.Generator().manual_seed(5))
    xe, xt = Tensor(x, requires_grad=True), x.clone().requires_grad_()
    (L.forward([xe], RunContext(training=True)) * Tensor(g)).sum().backward()
    (t(xt) * g).sum().backward()
    torch.testing.assert_close(xe.grad, xt.grad, rtol=1e-10, atol=1e-12)
    theirs = dict(t.named_parameters())
    names = {"kernel": "weight", "bias": "bias", "depthwise_kernel": "0.weight",
             "pointwise_kernel": "1.weight"}  # fmt: skip
    if layer["type"] == "SeparableConv2D":
        names["bias"] = "1.bias"
    for k, p in L.params.items():
        torch.testing.assert_close(p.grad, theirs[names[k]].grad, rtol=1e-10, atol=1e-12)


def test_conv1d():
    check_layer(
        {"type": "Conv1D", "filters": 5, "kernel_size": 3},
        [13, 3],
        nn.Conv1d(3, 5, 3).double(),
        50,
        (11, 5),
        kb,
    )


@pytest.mark.parametrize(
    "k,s,pad,torch_kw,out",
    [
        (4, 2, "same", dict(padding=1), (10, 10, 4)),
        # Keras crops floor((k - s) / 2) = 0 at the top/left and the rest (1) at the end
        (3, 2, "same", dict(crop_end=1), (10, 10, 4)),
        (3, 2, "valid", dict(), (11, 11, 4)),
    ],
)
def test_conv2d_transpose(k, s, pad, torch_kw, out):
    crop = torch_kw.pop("crop_end", 0)
    conv = nn.ConvTranspose2d(3, 4, k, s, **torch_kw).double()
    torch_layer = conv
    if crop:

        class Cropped(nn.Module):
            def __init__(self):
                super().__init__()
                self.weight, self.bias = conv.weight, conv.bias

            def forward(self, x):
                y = conv(x)
                return y[:, :, : y.shape[2] - crop, : y.shape[3] - crop]

        torch_layer = Cropped()
    check_layer(
        {"type": "Conv2DTranspose", "filters": 4, "kernel_size": k, "strides": s, "padding": pad},
        [5, 5, 3],
        torch_layer,
        3 * 4 * k * k + 4,
        out,
        kb,
    )


def test_pooling():
    check_layer({"type": "MaxPooling2D"}, [9, 8, 3], nn.MaxPool2d(2), 0, (4, 4, 3))
    check_layer(
        {"type": "AveragePooling2D", "pool_size": 3, "strides": 2},
        [9, 8, 3],
        nn.AvgPool2d(3, 2),
        0,
        (4, 3, 3),
    )
    check_layer(
        {"type": "AveragePooling2D", "pool_size": 2, "padding": "same"},
        [8, 8, 3],
        nn.AvgPool2d(2),
        0,
        (4, 4, 3),
    )
    check_layer(
        {"type": "MaxPooling2D", "pool_size": 2, "padding": "same"},
        [7, 7, 3],
        nn.MaxPool2d(2, ceil_mode=True),
        0,
        (4, 4, 3),
    )
    check_layer(
        {"type": "GlobalAveragePooling2D"},
        [5, 6, 3],
        nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
        0,
        (3,),
    )


@pytest.mark.parametrize("training", [False, True])
def test_batch_normalization(training):
    L, t = check_layer(
        {"type": "BatchNormalization"},
        [5, 6, 3],
        nn.BatchNorm2d(3, eps=1e-3, momentum=0.01).double(),
        12,
        (5, 6, 3),
        training=training,
    )
    torch.testing.assert_close(L.buffers["moving_mean"], t.running_mean)
    torch.testing.assert_close(L.buffers["moving_variance"], t.running_var)


def test_layer_normalization():
    def copy(L, t):
        t.weight.copy_(L.params["gamma"].data)
        t.bias.copy_(L.params["beta"].data)

    check_layer(
        {"type": "LayerNormalization"}, [7], nn.LayerNorm(7, eps=1e-3).double(), 14, (7,), copy
    )


def test_embedding():
    x = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))

    class Emb(nn.Module):
        def __init__(self):
            super().__init__()
            self.e = nn.Embedding(11, 5).double()

        def forward(self, i):
            return self.e(i).transpose(1, 2)  # the engine keeps (N, C, T)

    def copy(L, t):
        t.e.weight.copy_(L.params["embeddings"].data)

    check_layer(
        {"type": "Embedding", "input_dim": 11, "output_dim": 5}, [6], Emb(), 55, (6, 5), copy, x=x
    )


@pytest.mark.parametrize(
    "layer,torch_layer,out",
    [
        (
            {"type": "ZeroPadding2D", "padding": [[1, 2], [0, 3]]},
            nn.ZeroPad2d((0, 3, 1, 2)),
            (8, 9, 3),
        ),
        ({"type": "UpSampling2D", "size": [2, 3]}, nn.Upsample(scale_factor=(2, 3)), (10, 18, 3)),
        ({"type": "LeakyReLU"}, nn.LeakyReLU(0.3), (5, 6, 3)),
        ({"type": "ELU", "alpha": 0.5}, nn.ELU(0.5), (5, 6, 3)),
        ({"type": "ReLU", "max_value": 0.5}, nn.Hardtanh(0, 0.5), (5, 6, 3)),
        ({"type": "Softmax"}, nn.Softmax(1), (5, 6, 3)),
        ({"type": "Activation", "activation": "tanh"}, nn.Tanh(), (5, 6, 3)),
        ({"type": "Dropout", "rate": 0.4}, nn.Identity(), (5, 6, 3)),
        ({"type": "Flatten"}, nn.Sequential(), (90,)),
    ],
)
def test_shape_and_activation_layers(layer, torch_layer, out):
    if layer["type"] == "Flatten":
        torch_layer = lambda x: x.permute(0, 2, 3, 1).flatten(1)  # noqa: E731  Keras order
        torch_layer.train = lambda mode: None
    check_layer(layer, [5, 6, 3], torch_layer, 0, out)


def test_repeat_vector_follows_keras_and_passes_gradients_back():
    # Keras: (N, F) -> (N, n, F); the engine holds sequences as (N, F, n)
    f = lambda x: x[:, None, :].repeat(1, 3, 1).permute(0, 2, 1)  # noqa: E731
    f.train = lambda mode: None
    L, _ = check_layer({"type": "RepeatVector", "n": 3}, [5], f, 0, (3, 5))
    x = torch.randn(4, 5, dtype=D)
    xt, xo = x.clone().requires_grad_(), Tensor(x, requires_grad=True)
    up = torch.randn(4, 5, 3, dtype=D)
    (f(xt) * up).sum().backward()
    (L.forward([xo], RunContext()) * Tensor(up)).sum().backward()
    torch.testing.assert_close(xo.grad, xt.grad)


def test_up_sampling_1d_a_layer_written_whole_in_its_spec_file():
    """UpSampling1D exists only as a spec class with `call`, `compute_output_shape` and
    `to_onnx` (dltrain/spec/seq_layers.py); the engine serves it: values, shape, gradient."""
    from dltrain.engine.layers import LAYERS
    from dltrain.engine.layers.base import SpecDefined

    assert issubclass(LAYERS["UpSampling1D"], SpecDefined)
    f = lambda x: x.repeat_interleave(3, dim=2)  # noqa: E731  engine layout (N, C, steps)
    f.train = lambda mode: None
    L, _ = check_layer({"type": "UpSampling1D", "size": 3}, [5, 2], f, 0, (15, 2))
    x = torch.randn(4, 2, 5, dtype=D)
    xt, xo = x.clone().requires_grad_(), Tensor(x, requires_grad=True)
    up = torch.randn(4, 2, 15, dtype=D)
    (f(xt) * up).sum().backward()
    (L.forward([xo], RunContext()) * Tensor(up)).sum().backward()
    torch.testing.assert_close(xo.grad, xt.grad)
    with pytest.raises(SpecError, match=r"UpSampling1D needs a \(steps, features\) input"):
        compile_model(
            ModelSpec.model_validate(
                {"input_shape": [4, 4, 2], "layers": [{"type": "UpSampling1D"}]}
            )
        )


def test_reshape_follows_keras_order():
    f = lambda x: x.reshape(4, 2, 3, 5).permute(0, 3, 1, 2)  # noqa: E731
    f.train = lambda mode: None
    check_layer({"type": "Reshape", "target_shape": [2, 3, -1]}, [30], f, 0, (2, 3, 5))


def test_add_and_concatenate_graph():
    spec = ModelSpec.model_validate(
        {
            "input_shape": [4, 4, 2],
            "layers": [
                {"type": "Conv2D", "filters": 2, "kernel_size": 1, "name": "a"},
                {"type": "Add", "inputs": ["input", "a"], "name": "sum"},
                {"type": "Concatenate", "inputs": ["a", "sum", "input"]},
            ],
        }
    )
    model = compile_model(spec, dtype=D)
    x = torch.randn(3, 2, 4, 4, dtype=D)
    a = torch.nn.functional.conv2d(
        x, model.layers[0].params["kernel"].data, model.layers[0].params["bias"].data
    )
    out = model(Tensor(x)).data
    torch.testing.assert_close(out, torch.cat([a, x + a, x], 1))
    assert keras_shape(model.output_shape) == (4, 4, 6)


def test_frozen_layer_gets_no_gradient_and_counts_as_non_trainable():
    spec = ModelSpec.model_validate(
        {
            "input_shape": [3],
            "layers": [
                {"type": "Dense", "units": 4, "trainable": False},
                {"type": "Dense", "units": 2},
            ],
        }
    )
    model = compile_model(spec)
    assert model.param_counts() == (10, 16)
    out = model(Tensor(torch.randn(5, 3))).sum()
    out.backward()
    assert model.layers[0].params["kernel"].grad is None
    assert model.layers[1].params["kernel"].grad is not None


def test_registries_match_the_spec():
    assert set(LAYER_TYPES) == set(LAYERS)
    assert set(ACTIVATION_NAMES) == set(ACTIVATIONS) | {"linear"}
    assert set(INITIALIZER_NAMES) == set(INITIALIZERS)


def test_spec_package_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, dltrain.spec; dltrain.spec.json_schema(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr


def test_conv2d_transpose_same_matches_keras_impulse():
    """#18's repro: an impulse at [0, 0], kernel 1..9 (3x3, stride 2, same): Keras (TF) puts
    the kernel at the top-left; the off-by-one crop put its centre there."""
    spec = ModelSpec.model_validate(
        {
            "input_shape": [2, 2, 1],
            "layers": [
                {
                    "type": "Conv2DTranspose",
                    "filters": 1,
                    "kernel_size": 3,
                    "strides": 2,
                    "padding": "same",
                    "use_bias": False,
                }
            ],
        }
    )
    model = compile_model(spec, dtype=D)
    model.layers[0].params["kernel"].data.copy_(torch.arange(1.0, 10.0, dtype=D).view(1, 1, 3, 3))
    x = torch.zeros(1, 1, 2, 2, dtype=D)
    x[0, 0, 0, 0] = 1
    want = torch.tensor([[1, 2, 3, 0], [4, 5, 6, 0], [7, 8, 9, 0], [0, 0, 0, 0]], dtype=D)
    assert torch.equal(model(Tensor(x)).data[0, 0], want)


@pytest.mark.parametrize("padding", ["same", "valid"])
@pytest.mark.parametrize(
    "k,s", [(1, 1), (2, 1), (3, 1), (2, 2), (3, 2), (4, 2), (5, 2), (3, 3), (5, 3), (1, 2)]
)
@pytest.mark.parametrize("n", [3, 4])
def test_conv2d_transpose_is_the_adjoint_of_conv2d(padding, k, s, n):
    """Keras's definition: Conv2DTranspose is the adjoint of the Conv2D with the same
    padding and strides, <T x, y> = <x, C y>, for odd and even kernels and strides."""
    g = torch.Generator().manual_seed(k * 10 + s)
    t = compile_model(
        ModelSpec.model_validate(
            {
                "input_shape": [n, n + 1, 2],
                "layers": [
                    {
                        "type": "Conv2DTranspose",
                        "filters": 3,
                        "kernel_size": k,
                        "strides": s,
                        "padding": padding,
                        "use_bias": False,
                    }
                ],
            }
        ),
        dtype=D,
    )
    out = keras_shape(t.output_shape)
    if padding == "same":
        assert out[:2] == (n * s, (n + 1) * s)
    c = compile_model(
        ModelSpec.model_validate(
            {
                "input_shape": list(out),
                "layers": [
                    {
                        "type": "Conv2D",
                        "filters": 2,
                        "kernel_size": k,
                        "strides": s,
                        "padding": padding,
                        "use_bias": False,
                    }
                ],
            }
        ),
        dtype=D,
    )
    if keras_shape(c.output_shape)[:2] != (n, n + 1):
        pytest.skip("this valid conv does not map back onto the input size")
    w = torch.randn(t.layers[0].params["kernel"].shape, dtype=D, generator=g)
    t.layers[0].params["kernel"].data.copy_(w)
    c.layers[0].params["kernel"].data.copy_(w)  # (in, out) of T is (out, in) of C
    x = torch.randn(1, 2, n, n + 1, dtype=D, generator=g)
    y = torch.randn(1, 3, *out[:2], dtype=D, generator=g)
    lhs = (t(Tensor(x)).data * y).sum()
    rhs = (x * c(Tensor(y)).data).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-10, atol=1e-10)


def test_leaky_relu_activation_has_keras_slope():
    """`activation: leaky_relu` on any layer is Keras's activation: slope 0.2 (not 0.01)."""
    lin = nn.Linear(5, 4).double()
    check_layer(
        {"type": "Dense", "units": 4, "activation": "leaky_relu"},
        [5],
        nn.Sequential(lin, nn.LeakyReLU(0.2)),
        24,
        (4,),
        lambda L, t: kb(L, t[0]),
    )
