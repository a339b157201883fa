"""The tape: freeing, accumulation, error messages, and independence from torch.autograd."""

import ast
import gc
import pathlib
import weakref

import pytest
import torch

from dltrain.engine import Tensor, no_grad
from dltrain.engine import functional as F
from dltrain.engine.optim import Adam
from dltrain.engine.params import FlatParams
from tests.oracle import check

PKG = pathlib.Path(__file__).resolve().parents[2] / "dltrain"


def _mlp(seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    shapes = [(32, 10), (32,), (3, 32), (3,)]
    return [
        Tensor(torch.randn(s, generator=g, dtype=dtype) * 0.3, requires_grad=True) for s in shapes
    ]


def _step(params, x, y, opt):
    w1, b1, w2, b2 = params
    loss = F.cross_entropy(F.linear(F.relu(F.linear(x, w1, b1)), w2, b2), y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss


def test_package_never_uses_torch_autograd_pickle_or_unsafe_yaml():
    offenders = []
    for path in PKG.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in ("autograd", "requires_grad_"):
                offenders.append(f"{path}:{node.lineno}: .{node.attr}")
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", "") or ""]
                if any(
                    n.split(".")[0] in ("pickle", "dill", "cloudpickle") or "autograd" in n
                    for n in names
                ):
                    offenders.append(f"{path}:{node.lineno}: import {names}")
            if (
                isinstance(node, ast.keyword)
                and node.arg == "requires_grad"
                and isinstance(node.value, ast.Constant)
                and node.value.value is True
            ):
                offenders.append(f"{path}:{node.lineno}: requires_grad=True")
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("load", "load_all", "unsafe_load")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "yaml"
            ):
                offenders.append(f"{path}:{node.lineno}: yaml.{node.func.attr}")
    assert not offenders, "\n".join(offenders)


def test_training_works_with_torch_grad_disabled_and_no_torch_tensor_requires_grad():
    params = _mlp()
    opt = Adam(params, lr=0.01)
    g = torch.Generator().manual_seed(1)
    x, y = Tensor(torch.randn(64, 10, generator=g, dtype=torch.float64)), torch.randint(0, 3, (64,))
    prev = torch.is_grad_enabled()
    torch.set_grad_enabled(False)
    try:
        losses = [_step(params, x, y, opt).item() for _ in range(30)]
    finally:
        torch.set_grad_enabled(prev)
    assert losses[-1] < losses[0] * 0.8
    assert not any(p.data.requires_grad or p.grad.requires_grad for p in params)


def _saved_refs(root):
    """Weak references to every torch tensor captured by a node's closure under root."""
    saved, stack, seen = [], [root], set()
    while stack:
        t = stack.pop()
        if t._node is None or id(t) in seen:
            continue
        seen.add(id(t))
        for cell in t._node.vjp.__closure__ or ():
            if isinstance(cell.cell_contents, torch.Tensor):
                saved.append(weakref.ref(cell.cell_contents))
        stack.extend(t._node.parents)
    return saved


def test_saved_tensors_die_with_their_backward():
    x = Tensor(torch.randn(7, 13, dtype=torch.float64), requires_grad=True)
    y = F.tanh(F.linear(x, Tensor(torch.randn(5, 13, dtype=torch.float64), requires_grad=True)))
    loss = (y * y).sum()
    saved = _saved_refs(loss)
    assert len(saved) >= 3
    loss.backward()
    del y, loss
    gc.collect()
    alive = [r for r in saved if r() is not None and r() is not x.data]
    assert not alive, f"{len(alive)} saved tensors outlived backward"


def test_memory_does_not_grow_over_steps():
    params = FlatParams(_mlp(dtype=torch.float32))
    opt = Adam(params, lr=0.01)
    g = torch.Generator().manual_seed(1)
    x, y = Tensor(torch.randn(64, 10, generator=g)), torch.randint(0, 3, (64,))

    def live():
        gc.collect()
        return sum(1 for o in gc.get_objects() if isinstance(o, (torch.Tensor, Tensor)))

    for _ in range(3):
        _step(params.params, x, y, opt)
    before = live()
    for _ in range(50):
        _step(params.params, x, y, opt)
    assert live() <= before


def test_gradients_accumulate_across_backward_calls():
    x = Tensor(torch.ones(3), requires_grad=True)
    (x * 2).sum().backward()
    (x * 3).sum().backward()
    assert torch.equal(x.grad, torch.full((3,), 5.0))


def test_backward_errors_are_clear():
    x = Tensor(torch.randn(3, 4), requires_grad=True)
    with pytest.raises(RuntimeError, match=r"single-element.*\(3, 4\).*gradient="):
        (x * 2).backward()
    with pytest.raises(RuntimeError, match=r"gradient has shape \(4,\).*\(3, 4\)"):
        (x * 2).backward(torch.ones(4))
    loss = (x.exp() * 2).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="already freed.*retain_graph=True"):
        loss.backward()
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor(torch.ones(2)).sum().backward()


def test_retain_graph_allows_second_pass():
    x = Tensor(torch.randn(3), requires_grad=True)
    loss = (x.exp()).sum()
    loss.backward(retain_graph=True)
    first = x.grad.clone()
    loss.backward()
    torch.testing.assert_close(x.grad, 2 * first)


def test_no_grad_and_constants_record_nothing():
    x = Tensor(torch.randn(3), requires_grad=True)
    with no_grad():
        y = x * 2 + 1
    assert y._node is None and not y.requires_grad
    z = Tensor(torch.randn(3)) * 2
    assert z._node is None


def test_ops_reject_mismatched_shapes_with_both_shapes():
    with pytest.raises(ValueError, match=r"10 features.*\(4, 10\).*expects 12"):
        F.linear(Tensor(torch.randn(4, 10)), Tensor(torch.randn(3, 12)))
    with pytest.raises(ValueError, match=r"3 channels.*\(2, 3, 8, 8\).*\(4, 5, 3, 3\)"):
        F.conv2d(Tensor(torch.randn(2, 3, 8, 8)), Tensor(torch.randn(4, 5, 3, 3)))
    with pytest.raises(ValueError, match=r"targets of shape \(4,\), got \(5,\)"):
        F.cross_entropy(Tensor(torch.randn(4, 3)), torch.zeros(5, dtype=torch.long))
    with pytest.raises(IndexError, match="target 7 at position 1"):
        F.cross_entropy(Tensor(torch.randn(4, 3)), torch.tensor([0, 7, 1, 2]))


def test_tensor_api():
    t = Tensor(torch.arange(6.0).reshape(2, 3), requires_grad=True)
    assert t.shape == (2, 3) and t.ndim == 2 and t.dtype == torch.float32
    assert t.device.type == "cpu" and t.numel() == 6 and len(t) == 2
    assert t.numpy().shape == (2, 3) and t.detach()._node is None
    assert t.sum().item() == 15.0
    d = t.to(torch.float64)
    assert d.dtype == torch.float64 and d.requires_grad
    with pytest.raises(TypeError, match="floating point"):
        Tensor(torch.arange(3), requires_grad=True)


def test_residual_diamonds_get_every_contribution():
    """y feeds the sum directly and through a longer branch: backward must wait for the
    branch (a regression: marking tensors when pushed processed y too early)."""
    W = torch.randn(6, 6, dtype=torch.float64)

    def eng(x):
        y = x * 1.5
        return y + F.linear(F.relu(F.linear(y, Tensor(W))), Tensor(W))

    def ref(x):
        y = x * 1.5
        return y + torch.nn.functional.linear(torch.relu(torch.nn.functional.linear(y, W)), W)

    check(eng, ref, torch.randn(3, 6, dtype=torch.float64))


@pytest.mark.parametrize("seed", range(5))
def test_random_graphs_match_autograd(seed):
    """Random DAGs of binary and unary ops over shared intermediates."""
    gen = torch.Generator().manual_seed(seed)
    plan = [
        (
            int(torch.randint(0, 3, (), generator=gen)),
            [int(torch.randint(0, k + 2, (), generator=gen)) for _ in range(2)],
        )
        for k in range(12)
    ]

    def build(x, y, ops_):
        vals = [x, y]
        for kind, (i, j) in plan:
            a, b = vals[i % len(vals)], vals[j % len(vals)]
            vals.append(ops_[kind](a, b))
        return sum(vals[2:], vals[0] * 0)

    eng_ops = [lambda a, b: a * b, lambda a, b: a + F.tanh(b), lambda a, b: (a - b) * 0.5]
    ref_ops = [lambda a, b: a * b, lambda a, b: a + torch.tanh(b), lambda a, b: (a - b) * 0.5]
    x, y = (torch.randn(4, dtype=torch.float64, generator=gen) * 0.5 for _ in range(2))
    check(lambda a, b: build(a, b, eng_ops), lambda a, b: build(a, b, ref_ops), x, y)
