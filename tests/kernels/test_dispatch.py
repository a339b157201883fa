"""The engine's dispatch: with DLTRAIN_KERNELS=triton (run on CPU by Triton's interpreter)
every fused path gives the reference path's values and gradients, and short training runs
give the same loss curves."""

import pytest
import torch

from dltrain import kernels
from dltrain.engine import Tensor
from dltrain.engine import functional as F
from dltrain.engine.optim import SGD, Adam, clip_grad_norm_
from dltrain.engine.params import FlatParams
from tests.kernels.helpers import close, needs_interpreter, rand


def both(fn, *inputs):
    """Run fn on fresh leaves under both modes; return [(outputs, grads)] for each."""
    results = []
    for mode in ("reference", "triton"):
        with kernels.using(mode):
            assert kernels.use_triton(torch.zeros(1)) == (mode == "triton")
            leaves = [Tensor(t.clone(), requires_grad=t.is_floating_point()) for t in inputs]
            outs = fn(*leaves)
            outs = outs if isinstance(outs, tuple) else (outs,)
            total = sum((o * Tensor(rand(*o.shape, seed=9 + i))).sum() for i, o in enumerate(outs))
            total.backward()
            results.append(([o.data for o in outs], [x.grad for x in leaves if x.requires_grad]))
    (o1, g1), (o2, g2) = results
    for a, b in zip(o1, o2):
        close(a, b)
    for a, b in zip(g1, g2):
        close(a, b)


@needs_interpreter
def test_cross_entropy():
    t = torch.randint(0, 7, (13,), generator=torch.Generator().manual_seed(1))
    for kw in (dict(), dict(label_smoothing=0.1, reduction="sum"), dict(reduction="none")):
        both(lambda x: F.cross_entropy(x, t, **kw), rand(13, 7))
    # a class per step, as language models give: (N, C, T) logits, (N, T) targets
    t3 = torch.randint(0, 7, (3, 5), generator=torch.Generator().manual_seed(2))
    for kw in (dict(), dict(label_smoothing=0.1, reduction="sum")):
        both(lambda x: F.cross_entropy(x, t3, **kw), rand(3, 7, 5))


@needs_interpreter
def test_layer_norm_batch_norm_bias_act():
    both(
        lambda x, w, b: F.layer_norm(x, [33], w, b),
        rand(2, 5, 33),
        rand(33, seed=1),
        rand(33, seed=2),
    )
    rm = torch.zeros(3)
    both(
        lambda x, w, b: F.batch_norm(x, None, None, w, b, training=True),
        rand(4, 3, 5, 5),
        rand(3, seed=1),
        rand(3, seed=2),
    )
    del rm
    both(lambda x, b: F.bias_act(x, b, "relu"), rand(13, 33), rand(33, seed=1))


@needs_interpreter
def test_attention():
    both(
        lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        rand(2, 2, 9, 8),
        rand(2, 2, 9, 8, seed=1),
        rand(2, 2, 9, 8, seed=2),
    )
    # dropout takes the reference in both modes (the kernel has none): still equal
    both(
        lambda q, k, v: F.scaled_dot_product_attention(
            q, k, v, dropout_p=0.3, generator=torch.Generator().manual_seed(0)
        ),
        rand(2, 4, 8),
        rand(2, 6, 8, seed=1),
        rand(2, 6, 8, seed=2),
    )


@needs_interpreter
@pytest.mark.parametrize("reverse", [False, True])
def test_whole_sequence_lstm_and_gru(reverse):
    """The sequence nodes call the gate kernels once per step, forward and backward."""
    x = rand(3, 6, 5)
    w4 = [rand(28, 5, seed=3) * 0.5, rand(28, 7, seed=4) * 0.5, rand(28, seed=5)]
    both(lambda x, *w: F.lstm(x, *w, reverse=reverse), x, *w4)
    w3 = [rand(21, 5, seed=3) * 0.5, rand(21, 7, seed=4) * 0.5, rand(21, seed=5), rand(21, seed=6)]
    both(lambda x, *w: F.gru(x, *w, reverse=reverse), x, *w3)


@needs_interpreter
@pytest.mark.parametrize(
    "cls,kw",
    [(Adam, dict(lr=0.01, weight_decay=0.01)), (SGD, dict(lr=0.1, momentum=0.9, nesterov=True))],
)
def test_optimizers_and_clipping(cls, kw):
    finals = []
    for mode in ("reference", "triton"):
        params = [
            Tensor(rand(7, 13), requires_grad=True),
            Tensor(rand(13, seed=1), requires_grad=True),
        ]
        flat = FlatParams(params)
        opt = cls(flat, **kw)
        with kernels.using(mode):
            for step in range(5):
                flat.zero_grad()
                for p, g in zip(params, (rand(7, 13, seed=10 + step), rand(13, seed=20 + step))):
                    p.grad = g * 3
                flat.sync_grads()
                norm = clip_grad_norm_(flat.grad, 1.0)
                opt.step()
        finals.append((flat.data.clone(), norm))
    close(finals[0][0], finals[1][0])
    close(finals[0][1], finals[1][1])


@needs_interpreter
@pytest.mark.parametrize(
    "config,overrides",
    [
        ("seed_mlp.yaml", ["data.train.samples=200"]),
        (
            "digits_cnn.yaml",
            ["model.layers.0.filters=4", "model.layers.3.filters=4", "model.layers.8.units=16"],
        ),
    ],
)
def test_training_loss_curves_agree(config, overrides, tmp_path):
    """Step by step: one optimizer step per epoch, so each metrics line is one step's loss
    (and the validation loss after it), with the kernels and with the references."""
    import json

    from dltrain.run.train import train_run
    from tests.cli.helpers import ROOT

    steps = ["train.epochs=4", "train.steps_per_epoch=1", "logging.tensorboard=false"]
    curves = []
    for mode in ("reference", "triton"):
        with kernels.using(mode):
            run = train_run(
                str(ROOT / "configs" / config),
                overrides + steps,
                str(tmp_path / mode),
                log=lambda m: None,
            )
        curves.append([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])
    assert len(curves[0]) == len(curves[1]) == 4
    for a, b in zip(*curves):
        assert a["step"] == b["step"]
        for key in ("loss", "val_loss"):
            assert abs(a[key] - b[key]) <= 1e-3 * max(1.0, abs(a[key])), (key, a, b)


@pytest.mark.gpu
@pytest.mark.parametrize("config", ["seed_mlp.yaml", "digits_cnn.yaml", "char_lstm.yaml"])
def test_gpu_training_with_kernels_matches_reference(config, tmp_path):
    """On CUDA: the same run with the Triton kernels and with DLTRAIN_KERNELS=reference."""
    import json

    from dltrain.run.train import train_run
    from tests.cli.helpers import ROOT

    curves = []
    for mode in ("reference", "auto"):
        with kernels.using(mode):
            run = train_run(
                str(ROOT / "configs" / config),
                ["train.epochs=3", "train.device=cuda", "logging.tensorboard=false"],
                str(tmp_path / mode),
                log=lambda m: None,
            )
        curves.append([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()])
    for a, b in zip(curves[0], curves[1]):
        for key in ("loss", "val_loss"):
            assert abs(a[key] - b[key]) <= 2e-3 * max(1.0, abs(a[key])), (key, a, b)
