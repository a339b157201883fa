"""LSTM and GRU cell gates, forward and backward. The matmuls stay outside (the input
projection of all timesteps is one matmul); these kernels do the elementwise gate math.

LSTM (torch's gate order i, f, g, o), gates = x W_ih^T + b_ih + h W_hh^T + b_hh, (B, 4H):
    c' = s(f) c + s(i) tanh(g),   h' = s(o) tanh(c')
VJP, with dh', dc' upstream and tc = tanh(c'):
    dc  = dc' + dh' s(o) (1 - tc^2)
    di  = dc tanh(g) s(i)(1 - s(i));  df = dc c s(f)(1 - s(f));
    dg  = dc s(i) (1 - tanh(g)^2);    do = dh' tc s(o)(1 - s(o));   dc_prev = dc s(f)
GRU (r, z, n), gi = x W_ih^T + b_ih, gh = h W_hh^T + b_hh, (B, 3H):
    r = s(gi_r + gh_r), z = s(gi_z + gh_z), n = tanh(gi_n + r gh_n), h' = (1 - z) n + z h
VJP: dn = dh' (1 - z);  dz = dh' (h - n);  dh = dh' z;  dan = dn (1 - n^2);
     dgi_n = dan;  dgh_n = dan r;  dr = dan gh_n;  dar = dr r(1 - r);  daz = dz z(1 - z);
     dgi_r = dgh_r = dar;  dgi_z = dgh_z = daz.
"""

from __future__ import annotations

import torch

from . import triton_available

if triton_available():  # imported only where a kernel can run (about 1 s of start-up)
    import triton
    import triton.language as tl
else:
    triton = None

if triton is not None:

    @triton.jit
    def _sig(x):
        return 1.0 / (1.0 + tl.exp(-x))

    @triton.jit
    def _tanh(x):
        return 2.0 / (1.0 + tl.exp(-2.0 * x)) - 1.0

    @triton.jit
    def _lstm_gates(g_ptr, offs, m, H):
        """The activated gates i, f, g, o of the elements at offs (row-major (B, H))."""
        base = g_ptr + (offs // H) * 4 * H + offs % H
        i = _sig(tl.load(base, mask=m, other=0.0).to(tl.float32))
        f = _sig(tl.load(base + H, mask=m, other=0.0).to(tl.float32))
        g = _tanh(tl.load(base + 2 * H, mask=m, other=0.0).to(tl.float32))
        o = _sig(tl.load(base + 3 * H, mask=m, other=0.0).to(tl.float32))
        return i, f, g, o

    @triton.jit
    def _gru_gates(gi_ptr, gh_ptr, h_ptr, offs, m, H):
        """r, z, n, the hidden part of n's pre-activation, and h at offs."""
        row = (offs // H) * 3 * H + offs % H
        gi, gh = gi_ptr + row, gh_ptr + row
        r = _sig(
            tl.load(gi, mask=m, other=0.0).to(tl.float32)
            + tl.load(gh, mask=m, other=0.0).to(tl.float32)
        )
        z = _sig(
            tl.load(gi + H, mask=m, other=0.0).to(tl.float32)
            + tl.load(gh + H, mask=m, other=0.0).to(tl.float32)
        )
        ghn = tl.load(gh + 2 * H, mask=m, other=0.0).to(tl.float32)
        n = _tanh(tl.load(gi + 2 * H, mask=m, other=0.0).to(tl.float32) + r * ghn)
        return r, z, n, ghn, tl.load(h_ptr + offs, mask=m, other=0.0).to(tl.float32)

    @triton.jit
    def _lstm_fwd_kernel(g_ptr, c_ptr, h_out, c_out, B, H, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < B * H
        i, f, g, o = _lstm_gates(g_ptr, offs, m, H)
        c = f * tl.load(c_ptr + offs, mask=m, other=0.0).to(tl.float32) + i * g
        tl.store(c_out + offs, c.to(c_out.dtype.element_ty), mask=m)
        tl.store(h_out + offs, (o * _tanh(c)).to(h_out.dtype.element_ty), mask=m)

    @triton.jit
    def _lstm_bwd_kernel(
        g_ptr, c_ptr, cn_ptr, dh_ptr, dcn_ptr, dg_ptr, dc_ptr, B, H, BLOCK: tl.constexpr
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < B * H
        b, j = offs // H, offs % H
        i, f, g, o = _lstm_gates(g_ptr, offs, m, H)
        c = tl.load(c_ptr + offs, mask=m, other=0.0).to(tl.float32)
        tc = _tanh(tl.load(cn_ptr + offs, mask=m, other=0.0).to(tl.float32))
        dh = tl.load(dh_ptr + offs, mask=m, other=0.0).to(tl.float32)
        dc = tl.load(dcn_ptr + offs, mask=m, other=0.0).to(tl.float32) + dh * o * (1 - tc * tc)
        out = dg_ptr + b * 4 * H + j
        ty = dg_ptr.dtype.element_ty
        tl.store(out, (dc * g * i * (1 - i)).to(ty), mask=m)
        tl.store(out + H, (dc * c * f * (1 - f)).to(ty), mask=m)
        tl.store(out + 2 * H, (dc * i * (1 - g * g)).to(ty), mask=m)
        tl.store(out + 3 * H, (dh * tc * o * (1 - o)).to(ty), mask=m)
        tl.store(dc_ptr + offs, (dc * f).to(dc_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _gru_fwd_kernel(gi_ptr, gh_ptr, h_ptr, out_ptr, B, H, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < B * H
        r, z, n, ghn, h = _gru_gates(gi_ptr, gh_ptr, h_ptr, offs, m, H)
        tl.store(out_ptr + offs, ((1 - z) * n + z * h).to(out_ptr.dtype.element_ty), mask=m)

    @triton.jit
    def _gru_bwd_kernel(
        gi_ptr, gh_ptr, h_ptr, dout_ptr, dgi_ptr, dgh_ptr, dh_ptr, B, H, BLOCK: tl.constexpr
    ):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        m = offs < B * H
        b, j = offs // H, offs % H
        r, z, n, ghn, h = _gru_gates(gi_ptr, gh_ptr, h_ptr, offs, m, H)
        d = tl.load(dout_ptr + offs, mask=m, other=0.0).to(tl.float32)
        dan = d * (1 - z) * (1 - n * n)
        dar = dan * ghn * r * (1 - r)
        daz = d * (h - n) * z * (1 - z)
        ty = dgi_ptr.dtype.element_ty
        o_i = dgi_ptr + b * 3 * H + j
        o_h = dgh_ptr + b * 3 * H + j
        tl.store(o_i, dar.to(ty), mask=m)
        tl.store(o_i + H, daz.to(ty), mask=m)
        tl.store(o_i + 2 * H, dan.to(ty), mask=m)
        tl.store(o_h, dar.to(ty), mask=m)
        tl.store(o_h + H, daz.to(ty), mask=m)
        tl.store(o_h + 2 * H, (dan * r).to(ty), mask=m)
        tl.store(dh_ptr + offs, (d * z).to(dh_ptr.dtype.element_ty), mask=m)


BLOCK = 256


def _grid(n: int) -> tuple[int]:
    return (triton.cdiv(n, BLOCK),)


def lstm_gates_fwd(gates: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    B, H = c.shape
    h_out, c_out = torch.empty_like(c), torch.empty_like(c)
    _lstm_fwd_kernel[_grid(B * H)](
        gates.contiguous(), c.contiguous(), h_out, c_out, B, H, BLOCK=BLOCK
    )
    return h_out, c_out


def lstm_gates_bwd(
    dh: torch.Tensor,
    dc_next: torch.Tensor,
    gates: torch.Tensor,
    c: torch.Tensor,
    c_next: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    B, H = c.shape
    dg, dc = torch.empty_like(gates), torch.empty_like(c)
    _lstm_bwd_kernel[_grid(B * H)](
        gates.contiguous(),
        c.contiguous(),
        c_next.contiguous(),
        dh.contiguous(),
        dc_next.contiguous(),
        dg,
        dc,
        B,
        H,
        BLOCK=BLOCK,
    )
    return dg, dc


def lstm_gates_fwd_reference(
    gates: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = gates.float().chunk(4, 1)
    c_next = torch.sigmoid(f) * c.float() + torch.sigmoid(i) * torch.tanh(g)
    return (torch.sigmoid(o) * torch.tanh(c_next)).to(c.dtype), c_next.to(c.dtype)


def lstm_gates_bwd_reference(
    dh: torch.Tensor,
    dc_next: torch.Tensor,
    gates: torch.Tensor,
    c: torch.Tensor,
    c_next: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    i, f, g, o = (t for t in gates.float().chunk(4, 1))
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    tc = torch.tanh(c_next.float())
    dc = dc_next.float() + dh.float() * o * (1 - tc * tc)
    dg = torch.cat(
        [
            dc * g * i * (1 - i),
            dc * c.float() * f * (1 - f),
            dc * i * (1 - g * g),
            dh.float() * tc * o * (1 - o),
        ],
        1,
    )
    return dg.to(gates.dtype), (dc * f).to(c.dtype)


def gru_gates_fwd(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    B, H = h.shape
    out = torch.empty_like(h)
    _gru_fwd_kernel[_grid(B * H)](
        gi.contiguous(), gh.contiguous(), h.contiguous(), out, B, H, BLOCK=BLOCK
    )
    return out


def gru_gates_bwd(
    dout: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    B, H = h.shape
    dgi, dgh, dh = torch.empty_like(gi), torch.empty_like(gh), torch.empty_like(h)
    _gru_bwd_kernel[_grid(B * H)](
        gi.contiguous(),
        gh.contiguous(),
        h.contiguous(),
        dout.contiguous(),
        dgi,
        dgh,
        dh,
        B,
        H,
        BLOCK=BLOCK,
    )
    return dgi, dgh, dh


def gru_gates_fwd_reference(gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    ir, iz, inn = gi.float().chunk(3, 1)
    hr, hz, hn = gh.float().chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    return ((1 - z) * n + z * h.float()).to(h.dtype)


def gru_gates_bwd_reference(
    dout: torch.Tensor, gi: torch.Tensor, gh: torch.Tensor, h: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ir, iz, inn = gi.float().chunk(3, 1)
    hr, hz, hn = gh.float().chunk(3, 1)
    r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
    n = torch.tanh(inn + r * hn)
    d = dout.float()
    dan = d * (1 - z) * (1 - n * n)
    dar = dan * hn * r * (1 - r)
    daz = d * (h.float() - n) * z * (1 - z)
    return (
        torch.cat([dar, daz, dan], 1).to(gi.dtype),
        torch.cat([dar, daz, dan * r], 1).to(gh.dtype),
        (d * z).to(h.dtype),
    )
