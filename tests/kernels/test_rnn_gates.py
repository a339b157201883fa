import pytest
import torch

from dltrain.kernels import rnn_gates as K
from tests.kernels.helpers import DEVICES, close, dtypes, rand


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,H", [(1, 1), (3, 7), (5, 1023)])
def test_lstm_gates(device, B, H):
    for dtype in dtypes(device):
        g, c = (
            rand(B, 4 * H, device=device, dtype=dtype),
            rand(B, H, seed=1, device=device, dtype=dtype),
        )
        out, ref = K.lstm_gates_fwd(g, c), K.lstm_gates_fwd_reference(g, c)
        for a, r in zip(out, ref):
            close(a, r, dtype)
        dh, dc = (
            rand(B, H, seed=2, device=device, dtype=dtype),
            rand(B, H, seed=3, device=device, dtype=dtype),
        )
        for a, r in zip(
            K.lstm_gates_bwd(dh, dc, g, c, ref[1]), K.lstm_gates_bwd_reference(dh, dc, g, c, ref[1])
        ):
            close(a, r, dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("B,H", [(1, 1), (3, 7), (5, 1023)])
def test_gru_gates(device, B, H):
    for dtype in dtypes(device):
        gi, gh = (
            rand(B, 3 * H, device=device, dtype=dtype),
            rand(B, 3 * H, seed=1, device=device, dtype=dtype),
        )
        h = rand(B, H, seed=2, device=device, dtype=dtype)
        close(K.gru_gates_fwd(gi, gh, h), K.gru_gates_fwd_reference(gi, gh, h), dtype)
        d = rand(B, H, seed=3, device=device, dtype=dtype)
        for a, r in zip(K.gru_gates_bwd(d, gi, gh, h), K.gru_gates_bwd_reference(d, gi, gh, h)):
            close(a, r, dtype)


def test_references_agree_with_torch_cells():
    x, h, c = rand(3, 5), rand(3, 7, seed=1), rand(3, 7, seed=2)
    cell = torch.nn.LSTMCell(5, 7)
    gates = (x @ cell.weight_ih.T + cell.bias_ih + h @ cell.weight_hh.T + cell.bias_hh).detach()
    hn, cn = cell(x, (h, c))
    for a, r in zip(K.lstm_gates_fwd_reference(gates, c), (hn, cn)):
        close(a, r.detach())
    gcell = torch.nn.GRUCell(5, 7)
    gi = (x @ gcell.weight_ih.T + gcell.bias_ih).detach()
    gh = (h @ gcell.weight_hh.T + gcell.bias_hh).detach()
    close(K.gru_gates_fwd_reference(gi, gh, h), gcell(x, h).detach())
