"""Whole-sequence recurrent layers (Elman RNN, LSTM, GRU), each one coarse node.

The input projection of every step is one matmul (the engine's `linear`, which brings its own
gradient); the recurrence is a loop of torch math over time, and its backward is
backpropagation through time written out below. Inputs are batch-first (N, T, D); the output
is (N, T, H) with output[:, t] the state after reading x_t, also when `reverse` runs the
sequence from its end (as the reverse half of torch's bidirectional layers). The initial
state is zero. `h_mask` (N, H), if given, multiplies the previous state before the recurrent
matmul (Keras's recurrent_dropout). `mask` (N, T), True where a step is real, skips the
others as Keras does for padded input: a masked step keeps the state (and repeats the
previous output), and receives no gradient.

Activations are given by name; each derivative is written in terms of the activation's
output y, so nothing but outputs is kept: tanh' = 1 - y^2, sigmoid' = y (1 - y),
relu' = [y > 0], linear' = 1.

The one fused op with two implementations on purpose: on CUDA each step's gate math is the
Triton kernel of `kernels.rnn_gates` (tanh/sigmoid); elsewhere the loop below writes the
activated gates into whole-sequence buffers and computes every step's gate derivatives in
two whole-sequence ops, which a per-step reference cannot (it would cost ~2x on CPU). The
kernel tests check the kernels against their per-step references; tests/engine check this
path against torch.nn under autograd, and tests/kernels/test_dispatch the two paths
against each other.

    RNN   h_t = a(p_t + h~ W^T),  h~ = h_{t-1} * m
          da = dh_t a'(h_t);  dp_t = da;  dh_{t-1} = (da W) * m;  dW += da^T h~
    LSTM  (torch's gate order i, f, g, o; p_t holds both biases)
          G = p_t + h~ W^T;  i, f, o = r(G_i, G_f, G_o);  g = a(G_g)
          c_t = f c_{t-1} + i g;  h_t = o a(c_t)
          dc = dc_{t+1}' + dh_t o a'(a(c_t));  di = dc g;  df = dc c_{t-1};  dg = dc i;
          do = dh_t a(c_t);  dG = (di r'(i), df r'(f), dg a'(g), do r'(o));  dc_{t-1}' = dc f
    GRU   (torch's r, z, n; Keras's reset_after=True), q = h~ W^T + b_hh
          r, z = r(p_r + q_r), r(p_z + q_z);  n = a(p_n + r q_n);  h_t = (1 - z) n + z h_{t-1}
          dn = dh (1 - z);  dz = dh (h_{t-1} - n);  dan = dn a'(n);  dr = dan q_n
          dp = (dr r'(r), dz r'(z), dan);  dq = (dr r'(r), dz r'(z), dan r)
          dh_{t-1} = dh z + (dq W) * m
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch

from ...kernels import rnn_gates as K_rnn
from ...kernels import use_triton
from ..precision import compute_dtype, full, lower
from ..tensor import GRAD_MODE, Tensor, make
from .nn import linear

Fn = Callable[[torch.Tensor], torch.Tensor]
ACTS: dict[str, tuple[Fn, Fn]] = {  # name -> (f, f' from the output y)
    "tanh": (torch.tanh, lambda y: 1 - y * y),
    "sigmoid": (torch.sigmoid, lambda y: y * (1 - y)),
    "relu": (torch.relu, lambda y: (y > 0).to(y.dtype)),
    "linear": (lambda x: x, torch.ones_like),
}
# the same activations writing into a given tensor (no temporary in the time loop)
INTO: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "tanh": lambda x, out: torch.tanh(x, out=out),
    "sigmoid": lambda x, out: torch.sigmoid(x, out=out),
    "relu": lambda x, out: torch.clamp(x, min=0, out=out),
    "linear": lambda x, out: out.copy_(x),
}


def _act(name: str) -> tuple[Fn, Fn]:
    if name not in ACTS:
        raise ValueError(
            f"recurrent activation '{name}' is not supported; use one of {', '.join(ACTS)}"
        )
    return ACTS[name]


def _project(input: Tensor, w_ih: Tensor, b_ih: Tensor | None, b_hh: Tensor | None) -> Tensor:
    """Every step's input projection (under autocast a lower-precision matmul); the step
    loop then runs in float32."""
    x = full(linear(input, w_ih, b_ih))
    return x + b_hh if b_hh is not None else x


def _steps(T: int, reverse: bool) -> tuple[list[int], Callable[[int], int | None]]:
    """Processing order and each step's predecessor (None for the first)."""
    order = list(range(T - 1, -1, -1)) if reverse else list(range(T))
    prev = {t: (order[k - 1] if k else None) for k, t in enumerate(order)}
    return order, prev.__getitem__


def _check(input: Tensor, w_hh: Tensor, gates: int, what: str) -> None:
    X, W = input.data, w_hh.data
    H = W.shape[1]
    if X.dim() != 3 or W.dim() != 2 or W.shape[0] != gates * H:
        raise ValueError(
            f"{what}: input must be (N, T, D) and w_hh ({gates}*H, H), got "
            f"{tuple(X.shape)} and {tuple(W.shape)}"
        )


def _step_mask(mask: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    """(N, T) -> (T, N, 1) booleans on like's device."""
    if mask is None:
        return None
    return mask.to(device=like.device, dtype=torch.bool).t().unsqueeze(-1).contiguous()


def _back(d: torch.Tensor, W: torch.Tensor, h_mask: torch.Tensor | None) -> torch.Tensor:
    """A step's gate gradient back through the recurrent matmul to the previous state."""
    return d @ W if h_mask is None else (d @ W) * h_mask


def _at(M: torch.Tensor | None, t: int) -> torch.Tensor | None:
    return None if M is None else M[t]


def _keep(m: torch.Tensor | None, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    return new if m is None else torch.where(m, new, old)


def _split(m: torch.Tensor | None, d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A carried state's gradient: the part that flows into the step's cell (real steps)
    and the part that passes straight to the previous state (masked steps)."""
    if m is None:
        return d, None
    return d * m, d * ~m


def _time_major(t: torch.Tensor) -> torch.Tensor:
    return t.transpose(0, 1).contiguous()


def _h_prev(out: torch.Tensor, reverse: bool, mask: torch.Tensor | None) -> torch.Tensor:
    """(T, N, H): the (masked) state each step read; zero for the first step."""
    hp = torch.zeros_like(out)
    if reverse:
        hp[:-1] = out[1:]
    else:
        hp[1:] = out[:-1]
    return hp if mask is None else hp * mask


def rnn(
    input: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    activation: str = "tanh",
    reverse: bool = False,
    h_mask: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> Tensor:
    """Elman RNN over (N, T, D) -> (N, T, H): h_t = act(x_t W_ih^T + b_ih + h_{t-1} W_hh^T
    + b_hh)."""
    _check(input, w_hh, 1, "rnn")
    f, df = _act(activation)
    p = _project(input, w_ih, b_ih, b_hh)
    P, W = _time_major(p.data), w_hh.data
    T, N, H = P.shape
    order, prev = _steps(T, reverse)
    out = torch.empty_like(P)
    M = _step_mask(mask, P)
    h = P.new_zeros(N, H)
    for t in order:
        new = f(torch.addmm(P[t], h if h_mask is None else h * h_mask, W.t()))
        out[t] = h = _keep(_at(M, t), new, h)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        G = _time_major(g)
        dP = torch.empty_like(P)
        dh = P.new_zeros(N, H)
        for t in reversed(order):
            dcell, dpass = _split(_at(M, t), G[t] + dh)
            dP[t] = da = dcell * df(out[t])
            dh = _back(da, W, h_mask)
            if dpass is not None:
                dh = dh + dpass
        hp = _h_prev(out, reverse, h_mask)
        return dP.transpose(0, 1), dP.reshape(-1, H).t() @ hp.reshape(-1, H)

    return make(out.transpose(0, 1), (p, w_hh), vjp, "rnn")


# oneDNN's fused LSTM primitive (what torch.nn.LSTM runs on CPU), called as primitive math on
# plain tensors; `onednn(False)` forces the step loop (tests, benchmarks)
_ONEDNN = {"enabled": bool(torch.backends.mkldnn.is_available())}


@contextlib.contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    old = _ONEDNN["enabled"]
    _ONEDNN["enabled"] = enabled and bool(torch.backends.mkldnn.is_available())
    try:
        yield
    finally:
        _ONEDNN["enabled"] = old


def _onednn_applies(
    X: torch.Tensor, acts: tuple[str, str], h_mask: torch.Tensor | None, mask: torch.Tensor | None
) -> bool:
    """oneDNN's LSTM takes the standard cell (tanh, sigmoid) without recurrent dropout or a
    padding mask; those run the step loop below."""
    return (
        _ONEDNN["enabled"]
        and X.device.type == "cpu"
        and X.dtype in (torch.float32, torch.bfloat16)
        and compute_dtype() in (None, torch.bfloat16)  # (no float16 LSTM in oneDNN here)
        and acts == ("tanh", "sigmoid")
        and h_mask is None
        and mask is None
        and X.shape[0] > 0
        and X.shape[1] > 0
    )


def _lstm_onednn(
    input: Tensor, w_ih: Tensor, w_hh: Tensor, b_ih: Tensor | None, b_hh: Tensor | None,
    reverse: bool,
) -> Tensor:  # fmt: skip
    """One direction of an LSTM through aten's mkldnn_rnn_layer and its backward. The
    primitive returns its workspace (what its backward reads) only in torch's grad mode,
    which records nothing here: no tensor requires grad. Under autocast it runs in the
    lower type (as torch.autocast runs it)."""
    input, w_ih, w_hh, b_ih, b_hh = (lower(t) for t in (input, w_ih, w_hh, b_ih, b_hh))
    X = input.data.transpose(0, 1).contiguous()  # (T, N, D)
    Wi, Wh = w_ih.data, w_hh.data
    H = Wh.shape[1]
    zero = Wi.new_zeros(4 * H)
    bi = b_ih.data if b_ih is not None else zero
    bh = b_hh.data if b_hh is not None else zero
    h0 = X.new_zeros(X.shape[1], H)
    parents = tuple(t for t in (input, w_ih, w_hh, b_ih, b_hh) if t is not None)
    train = GRAD_MODE.enabled and any(t.requires_grad for t in parents)
    args: tuple[object, ...] = (reverse, [], 2, H, 1, True, False, False, train)
    with torch.enable_grad() if train else torch.no_grad():
        out, hy, cy, ws = torch.ops.aten.mkldnn_rnn_layer(X, Wi, Wh, bi, bh, h0, h0, *args)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, ...]:
        dx, dwi, dwh, dbi, dbh, _, _ = torch.ops.aten.mkldnn_rnn_layer_backward(
            X, Wi, Wh, bi, bh, h0, h0, out, hy, cy, g.transpose(0, 1).contiguous(),
            None, None, reverse, 2, H, 1, True, True, False, [], False, ws,
        )  # fmt: skip
        grads = [dx.transpose(0, 1), dwi, dwh]
        grads += [dbi] if b_ih is not None else []
        grads += [dbh] if b_hh is not None else []
        return tuple(grads)

    return make(out.transpose(0, 1), parents, vjp, "lstm")


def lstm(
    input: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    reverse: bool = False,
    h_mask: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> Tensor:
    """LSTM over (N, T, D) -> (N, T, H), torch's gate order and math. On CPU the standard
    cell without recurrent dropout or a mask runs oneDNN's fused primitive (as torch.nn.LSTM
    does); everything else runs the step loop."""
    _check(input, w_hh, 4, "lstm")
    if _onednn_applies(input.data, (activation, recurrent_activation), h_mask, mask):
        return _lstm_onednn(input, w_ih, w_hh, b_ih, b_hh, reverse)
    da_ = _act(activation)[1]  # (the loops activate in place through INTO)
    dr_ = _act(recurrent_activation)[1]
    p = _project(input, w_ih, b_ih, b_hh)
    P, W = _time_major(p.data), w_hh.data
    T, N, G4 = P.shape
    H = G4 // 4
    M = _step_mask(mask, P)
    fused = (
        use_triton(P) and M is None and (activation, recurrent_activation) == ("tanh", "sigmoid")
    )
    order, prev = _steps(T, reverse)
    out, cs = P.new_empty(T, N, H), P.new_empty(T, N, H)
    # fused: the gates' pre-activations (the kernels recompute); else the activated gates
    # (i, f, g, o) and a(c), so backward recomputes nothing
    gates_all = torch.empty_like(P)
    ac_all = P.new_empty(T, N, H) if not fused else None
    h, c = P.new_zeros(N, H), P.new_zeros(N, H)
    for t in order:
        gates = torch.addmm(P[t], h if h_mask is None else h * h_mask, W.t())
        if fused:
            gates_all[t] = gates
            h, c = K_rnn.lstm_gates_fwd(gates, c)
            out[t], cs[t] = h, c
        else:  # written in place into the saved tensors
            act = INTO[recurrent_activation](gates, gates_all[t])
            INTO[activation](gates[:, 2 * H : 3 * H], act[:, 2 * H : 3 * H])
            i, fg, gg, o = act.chunk(4, 1)
            c_old, h_old = c, h
            c = torch.mul(fg, c, out=cs[t]).addcmul_(i, gg)
            ac = INTO[activation](c, ac_all[t])  # type: ignore[index]
            h = torch.mul(o, ac, out=out[t])
            if M is not None:  # masked steps carry the state
                c = cs[t].copy_(torch.where(M[t], c, c_old))
                h = out[t].copy_(torch.where(M[t], h, h_old))

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        Gout = _time_major(g)
        dP = torch.empty_like(P)
        dh, dc = P.new_zeros(N, H), P.new_zeros(N, H)
        zero = P.new_zeros(N, H)
        if not fused:  # every step's gate derivatives in two whole-sequence ops
            deriv = dr_(gates_all)
            deriv[:, :, 2 * H : 3 * H] = da_(gates_all[:, :, 2 * H : 3 * H])
            dac = da_(ac_all)  # type: ignore[arg-type]  # not fused: ac_all was filled
        up = P.new_empty(N, G4)  # upstream of each activated gate
        for t in reversed(order):
            pt = prev(t)
            c_prev = cs[pt] if pt is not None else zero
            dh, dh_pass = _split(_at(M, t), dh + Gout[t])
            dc, dc_pass = _split(_at(M, t), dc)
            if fused:
                dgates, dc = K_rnn.lstm_gates_bwd(dh, dc, gates_all[t], c_prev, cs[t])
                dP[t] = dgates
            else:
                i, fg, gg, o = gates_all[t].chunk(4, 1)
                dc = torch.addcmul(dc, dh * o, dac[t])
                torch.mul(dc, gg, out=up[:, :H])
                torch.mul(dc, c_prev, out=up[:, H : 2 * H])
                torch.mul(dc, i, out=up[:, 2 * H : 3 * H])
                torch.mul(dh, ac_all[t], out=up[:, 3 * H :])  # type: ignore[index]
                dgates = torch.mul(up, deriv[t], out=dP[t])
                dc = dc * fg
            dh = _back(dgates, W, h_mask)
            if dh_pass is not None and dc_pass is not None:
                dh, dc = dh + dh_pass, dc + dc_pass
        hp = _h_prev(out, reverse, h_mask)
        return dP.transpose(0, 1), dP.reshape(-1, G4).t() @ hp.reshape(-1, H)

    return make(out.transpose(0, 1), (p, w_hh), vjp, "lstm")


def gru(
    input: Tensor,
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor | None = None,
    b_hh: Tensor | None = None,
    activation: str = "tanh",
    recurrent_activation: str = "sigmoid",
    reverse: bool = False,
    h_mask: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
) -> Tensor:
    """GRU over (N, T, D) -> (N, T, H), torch's gate order (r, z, n) and math (the reset
    gate multiplies W_hn h + b_hn, Keras's reset_after=True)."""
    _check(input, w_hh, 3, "gru")
    da_ = _act(activation)[1]  # (the loops activate in place through INTO)
    dr_ = _act(recurrent_activation)[1]
    p = full(linear(input, w_ih, b_ih))
    P, W = _time_major(p.data), w_hh.data
    B = b_hh.data if b_hh is not None else None
    T, N, G3 = P.shape
    H = G3 // 3
    fused = use_triton(P) and (activation, recurrent_activation) == ("tanh", "sigmoid")
    order, prev = _steps(T, reverse)
    out, Q = P.new_empty(T, N, H), torch.empty_like(P)
    # not fused: the activated gates (r, z, n) of every step, written in place, so the
    # backward recomputes nothing and takes every step's gate derivatives in two ops
    RZN = torch.empty_like(P) if not fused else None
    M = _step_mask(mask, P)
    h = P.new_zeros(N, H)
    for t in order:
        hm = h if h_mask is None else h * h_mask
        q = torch.addmm(B, hm, W.t(), out=Q[t]) if B is not None else torch.mm(hm, W.t(), out=Q[t])
        if fused:
            new = K_rnn.gru_gates_fwd(P[t], q, h)
        else:
            g = RZN[t]  # type: ignore[index]
            rz = torch.add(P[t, :, : 2 * H], q[:, : 2 * H], out=g[:, : 2 * H])
            INTO[recurrent_activation](rz, rz)
            rr, z, n = g[:, :H], g[:, H : 2 * H], g[:, 2 * H :]
            INTO[activation](torch.addcmul(P[t, :, 2 * H :], rr, q[:, 2 * H :], out=n), n)
            new = torch.sub(h, n).mul_(z).add_(n)  # (1 - z) n + z h
        out[t] = h = _keep(_at(M, t), new, h)

    def vjp(g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        Gout = _time_major(g)
        dP, dQ = torch.empty_like(P), torch.empty_like(P)
        dh = P.new_zeros(N, H)
        zero = P.new_zeros(N, H)
        if not fused:
            D = dr_(RZN)  # type: ignore[arg-type]
            D[:, :, 2 * H :] = da_(RZN[:, :, 2 * H :])  # type: ignore[index]
        for t in reversed(order):
            pt = prev(t)
            h_prev = out[pt] if pt is not None else zero
            dh, dh_pass = _split(_at(M, t), dh + Gout[t])
            if fused:
                dP[t], dQ[t], dh_direct = K_rnn.gru_gates_bwd(dh, P[t], Q[t], h_prev)
            else:
                gt, dt, dp, dq = RZN[t], D[t], dP[t], dQ[t]  # type: ignore[index]
                rr, z, n = gt[:, :H], gt[:, H : 2 * H], gt[:, 2 * H :]
                dan = torch.mul(
                    torch.addcmul(dh, dh, z, value=-1), dt[:, 2 * H :], out=dp[:, 2 * H :]
                )
                torch.mul(dan, Q[t, :, 2 * H :], out=dp[:, :H]).mul_(dt[:, :H])
                torch.sub(h_prev, n, out=dp[:, H : 2 * H]).mul_(dh).mul_(dt[:, H : 2 * H])
                dq[:, : 2 * H] = dp[:, : 2 * H]
                torch.mul(dan, rr, out=dq[:, 2 * H :])
                dh_direct = dh * z
            dh = dh_direct + _back(dQ[t], W, h_mask)
            if dh_pass is not None:
                dh = dh + dh_pass
        hp = _h_prev(out, reverse, h_mask)
        dQ2 = dQ.reshape(-1, G3)
        dW = dQ2.t() @ hp.reshape(-1, H)
        return (dP.transpose(0, 1), dW) + ((dQ2.sum(0),) if b_hh is not None else ())

    parents = (p, w_hh) if b_hh is None else (p, w_hh, b_hh)
    return make(out.transpose(0, 1), parents, vjp, "gru")
