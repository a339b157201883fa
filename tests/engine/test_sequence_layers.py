"""Sequence layers against torch.nn with the same weights (float64): recurrent layers in
both directions, Bidirectional, 1-D pooling, MultiHeadAttention, the Transformer blocks and
TokenAndPositionEmbedding; output shape, Keras parameter count, spec round trip, values, and
for the composite blocks the input gradient too."""

import pytest
import torch
import torch.nn as nn

from dltrain.engine import Tensor
from dltrain.engine.layers import RunContext
from dltrain.engine.model import compile_model
from dltrain.spec import ModelSpec
from tests.engine.test_layers import check_layer

D = torch.float64
N_IN, STEPS, UNITS = 5, 6, 7
TORCH_RNN = {"SimpleRNN": nn.RNN, "LSTM": nn.LSTM, "GRU": nn.GRU}
PARAMS = {"SimpleRNN": 91, "LSTM": 364, "GRU": 294}


class Seq(nn.Module):
    """torch's layer on the engine's (N, features, steps) layout, Keras's outputs."""

    def __init__(self, rnn, sequences, backwards=False, bidirectional=False):
        super().__init__()
        self.rnn, self.seq, self.back, self.bi = rnn, sequences, backwards, bidirectional

    def forward(self, x):
        x = x.transpose(1, 2)
        if self.back:  # Keras reads the reversed sequence and returns steps in reading order
            x = x.flip(1)
        out, h = self.rnn(x)
        h = h[0] if isinstance(h, tuple) else h
        if self.seq:
            return out.transpose(1, 2)
        return torch.cat([h[0], h[1]], 1) if self.bi else out[:, -1]


def copy_rnn(layers, t, kind):
    for L, suffix, prefix in layers:
        p = L.params
        getattr(t.rnn, "weight_ih_l0" + suffix).copy_(p[prefix + "kernel"].data)
        getattr(t.rnn, "weight_hh_l0" + suffix).copy_(p[prefix + "recurrent_kernel"].data)
        getattr(t.rnn, "bias_ih_l0" + suffix).copy_(p[prefix + "bias"].data)
        rb = p.get(prefix + "recurrent_bias")
        getattr(t.rnn, "bias_hh_l0" + suffix).copy_(rb.data if rb is not None else 0.0)


@pytest.mark.parametrize("kind", ["SimpleRNN", "LSTM", "GRU"])
@pytest.mark.parametrize("sequences", [False, True])
@pytest.mark.parametrize("backwards", [False, True])
def test_recurrent_layers(kind, sequences, backwards):
    t = Seq(TORCH_RNN[kind](N_IN, UNITS, batch_first=True, dtype=D), sequences, backwards)
    out = (STEPS, UNITS) if sequences else (UNITS,)
    check_layer(
        {"type": kind, "units": UNITS, "return_sequences": sequences, "go_backwards": backwards},
        [STEPS, N_IN],
        t,
        PARAMS[kind],
        out,
        lambda L, t: copy_rnn([(L, "", "")], t, kind),
    )


def test_lstm_forget_bias_starts_at_one_and_relu_rnn():
    spec = ModelSpec.model_validate(
        {"input_shape": [3, 2], "layers": [{"type": "LSTM", "units": 4}]}
    )
    b = compile_model(spec).layers[0].params["bias"].data
    assert torch.equal(b, torch.tensor([0.0] * 4 + [1.0] * 4 + [0.0] * 8))
    t = Seq(nn.RNN(N_IN, UNITS, nonlinearity="relu", batch_first=True, dtype=D), True)
    check_layer(
        {"type": "SimpleRNN", "units": UNITS, "activation": "relu", "return_sequences": True},
        [STEPS, N_IN],
        t,
        91,
        (STEPS, UNITS),
        lambda L, t: copy_rnn([(L, "", "")], t, "SimpleRNN"),
    )


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
@pytest.mark.parametrize("sequences", [False, True])
def test_bidirectional_concat(kind, sequences):
    t = Seq(
        TORCH_RNN[kind](N_IN, UNITS, batch_first=True, bidirectional=True, dtype=D),
        sequences,
        bidirectional=True,
    )
    out = (STEPS, 2 * UNITS) if sequences else (2 * UNITS,)
    check_layer(
        {
            "type": "Bidirectional",
            "layer": {"type": kind, "units": UNITS, "return_sequences": sequences},
        },
        [STEPS, N_IN],
        t,
        2 * PARAMS[kind],
        out,
        lambda L, t: copy_rnn([(L, "", "forward_"), (L, "_reverse", "backward_")], t, kind),
    )


@pytest.mark.parametrize(
    "mode,fn", [("sum", torch.add), ("mul", torch.mul), ("ave", lambda a, b: (a + b) / 2)]
)
def test_bidirectional_merge_modes(mode, fn):
    bi = Seq(nn.GRU(N_IN, UNITS, batch_first=True, bidirectional=True, dtype=D), True, False, True)

    def merged(x):
        y = bi(x)
        return fn(y[:, :UNITS], y[:, UNITS:])

    merged.train = lambda mode: None
    check_layer(
        {
            "type": "Bidirectional",
            "merge_mode": mode,
            "layer": {"type": "GRU", "units": UNITS, "return_sequences": True},
        },
        [STEPS, N_IN],
        merged,
        2 * PARAMS["GRU"],
        (STEPS, UNITS),
        lambda L, t: copy_rnn([(L, "", "forward_"), (L, "_reverse", "backward_")], bi, "GRU"),
    )


def test_recurrent_dropout_is_seeded_and_off_in_inference():
    spec = ModelSpec.model_validate(
        {
            "input_shape": [STEPS, N_IN],
            "layers": [{"type": "LSTM", "units": 4, "dropout": 0.3, "recurrent_dropout": 0.3}],
        }
    )
    model = compile_model(spec, dtype=D)
    x = Tensor(torch.randn(3, N_IN, STEPS, dtype=D))
    runs = [model(x, RunContext(True, torch.Generator().manual_seed(s))).data for s in (1, 1, 2)]
    assert torch.equal(runs[0], runs[1]) and not torch.allclose(runs[0], runs[2])
    assert not torch.allclose(runs[0], model(x).data)


@pytest.mark.parametrize(
    "kind,fn",
    [("GlobalAveragePooling1D", lambda x: x.mean(2)), ("GlobalMaxPooling1D", lambda x: x.amax(2))],
)
def test_global_pooling_1d(kind, fn):
    fn.train = lambda mode: None
    check_layer({"type": kind}, [STEPS, N_IN], fn, 0, (N_IN,))


def copy_mha(L, mha, prefix=""):
    p = {k: v.data for k, v in L.params.items()}
    q, k, v = (p[f"{prefix}{n}_kernel"] for n in ("query", "key", "value"))
    if mha._qkv_same_embed_dim:
        mha.in_proj_weight.copy_(torch.cat([q, k, v]))
    else:
        mha.q_proj_weight.copy_(q)
        mha.k_proj_weight.copy_(k)
        mha.v_proj_weight.copy_(v)
    mha.in_proj_bias.copy_(torch.cat([p[f"{prefix}{n}_bias"] for n in ("query", "key", "value")]))
    mha.out_proj.weight.copy_(p[f"{prefix}output_kernel"])
    mha.out_proj.bias.copy_(p[f"{prefix}output_bias"])


class SelfAttention(nn.Module):
    def __init__(self, d, heads, causal):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True, dtype=D)
        self.causal = causal

    def forward(self, x):
        x = x.transpose(1, 2)
        mask = torch.ones(x.shape[1], x.shape[1]).triu(1).bool() if self.causal else None
        return self.mha(x, x, x, attn_mask=mask, need_weights=False)[0].transpose(1, 2)


@pytest.mark.parametrize("causal", [False, True])
def test_multi_head_self_attention(causal):
    d, heads = 12, 3
    t = SelfAttention(d, heads, causal)
    check_layer(
        {
            "type": "MultiHeadAttention",
            "num_heads": heads,
            "key_dim": d // heads,
            "use_causal_mask": causal,
        },
        [STEPS, d],
        t,
        4 * d * d + 4 * d,
        (STEPS, d),
        lambda L, t: copy_mha(L, t.mha),
    )


def test_multi_head_cross_attention_reads_query_and_value():
    d, dv, heads = 8, 6, 2
    spec = ModelSpec.model_validate(
        {
            "input_shape": [STEPS, dv],
            "layers": [
                {"type": "Dense", "units": d, "name": "q"},
                {
                    "type": "MultiHeadAttention",
                    "num_heads": heads,
                    "key_dim": d // heads,
                    "inputs": ["q", "input"],
                },
            ],
        }
    )
    model = compile_model(spec, dtype=D)
    mha = nn.MultiheadAttention(d, heads, kdim=dv, vdim=dv, batch_first=True, dtype=D)
    dense, att = model.layers
    with torch.no_grad():
        copy_mha(att, mha)
    x = torch.randn(3, dv, STEPS, dtype=D)
    xt = x.transpose(1, 2)
    q = xt @ dense.params["kernel"].data.T + dense.params["bias"].data
    want = mha(q, xt, xt, need_weights=False)[0].transpose(1, 2)
    torch.testing.assert_close(model(Tensor(x)).data, want.detach(), rtol=1e-10, atol=1e-12)


def copy_block(L, t):
    p = {k: v.data for k, v in L.params.items()}
    copy_mha(L, t.self_attn)
    t.linear1.weight.copy_(p["ffn_intermediate_kernel"])
    t.linear1.bias.copy_(p["ffn_intermediate_bias"])
    t.linear2.weight.copy_(p["ffn_output_kernel"])
    t.linear2.bias.copy_(p["ffn_output_bias"])
    for norm, name in ((t.norm1, "attention_norm"), (t.norm2, "ffn_norm")):
        norm.weight.copy_(torch.randn_like(norm.weight))  # not the trivial 1 and 0
        norm.bias.copy_(torch.randn_like(norm.bias))
        L.params[f"{name}_gamma"].data.copy_(norm.weight)
        L.params[f"{name}_beta"].data.copy_(norm.bias)


class Block(nn.Module):
    def __init__(self, causal, **kw):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(batch_first=True, dropout=0.0, dtype=D, **kw)
        self.causal = causal

    def forward(self, x):
        x = x.transpose(1, 2)
        mask = (
            nn.Transformer.generate_square_subsequent_mask(x.shape[1], dtype=D)
            if self.causal
            else None
        )
        return self.layer(x, src_mask=mask, is_causal=self.causal).transpose(1, 2)


@pytest.mark.parametrize("kind", ["TransformerEncoder", "TransformerDecoder"])
@pytest.mark.parametrize("norm_first,act", [(False, "relu"), (True, "gelu")])
def test_transformer_blocks_match_torch_encoder_layer(kind, norm_first, act):
    d, heads, ff = 12, 3, 20
    t = Block(
        kind == "TransformerDecoder",
        d_model=d,
        nhead=heads,
        dim_feedforward=ff,
        activation=act,
        norm_first=norm_first,
        layer_norm_eps=1e-5,
    )
    params = 4 * d * d + 4 * d + 4 * d + 2 * d * ff + ff + d
    L, _ = check_layer(
        {
            "type": kind,
            "num_heads": heads,
            "intermediate_dim": ff,
            "activation": act,
            "normalize_first": norm_first,
        },
        [STEPS, d],
        t,
        params,
        (STEPS, d),
        lambda L, tt: copy_block(L, tt.layer),
    )
    # the input gradient of the whole block, through dltrain's tape and torch.autograd
    x = torch.randn(2, d, STEPS, dtype=D, requires_grad=True)
    up = torch.randn(2, d, STEPS, dtype=D)
    (t(x) * up).sum().backward()
    xe = Tensor(x.detach().clone(), requires_grad=True)
    (L.forward([xe], RunContext()) * Tensor(up)).sum().backward()
    torch.testing.assert_close(xe.grad, x.grad, rtol=1e-9, atol=1e-11)


def test_token_and_position_embedding():
    x = torch.randint(0, 11, (4, 6), generator=torch.Generator().manual_seed(0))

    class Ref(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok, self.pos = nn.Embedding(11, 5, dtype=D), nn.Embedding(8, 5, dtype=D)

        def forward(self, i):
            return (self.tok(i) + self.pos(torch.arange(i.shape[1]))).transpose(1, 2)

    def copy(L, t):
        t.tok.weight.copy_(L.params["token_embeddings"].data)
        t.pos.weight.copy_(L.params["position_embeddings"].data)

    check_layer(
        {
            "type": "TokenAndPositionEmbedding",
            "vocabulary_size": 11,
            "sequence_length": 8,
            "embedding_dim": 5,
        },
        [6],
        Ref(),
        55 + 40,
        (6, 5),
        copy,
        x=x,
    )


@pytest.mark.parametrize(
    "layers,message",
    [
        ([{"type": "LSTM", "units": 3}], "needs a sequence"),
        (
            [{"type": "TransformerEncoder", "num_heads": 3, "intermediate_dim": 8}],
            "do not split into num_heads=3",
        ),
    ],
)
def test_shape_errors(layers, message):
    from dltrain.spec.errors import SpecError

    spec = (
        ModelSpec.model_validate({"input_shape": [4, 4, 4], "layers": layers})
        if message == "needs a sequence"
        else ModelSpec.model_validate({"input_shape": [5, 4], "layers": layers})
    )
    with pytest.raises(SpecError, match=message):
        compile_model(spec)


# -- padding masks (mask_zero) ------------------------------------------------------------------
IDS = torch.tensor([[3, 1, 4, 1, 5], [2, 7, 0, 0, 0], [6, 0, 0, 0, 0], [5, 3, 2, 0, 0]])
LENGTHS = (IDS != 0).sum(1)


def masked_model(layers, dtype=D):
    spec = ModelSpec.model_validate(
        {
            "input_shape": [5],
            "input_dtype": "int64",
            "layers": [
                {
                    "type": "Embedding",
                    "input_dim": 8,
                    "output_dim": N_IN,
                    "mask_zero": True,
                    "name": "emb",
                }
            ]
            + layers,
        }
    )
    return compile_model(spec, dtype=dtype)


def embedded(model):
    return model.layers[0].params["embeddings"].data[IDS]  # (N, T, features)


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "SimpleRNN"])
def test_mask_zero_recurrent_last_state_matches_packed(kind):
    from torch.nn.utils.rnn import pack_padded_sequence

    model = masked_model([{"type": kind, "units": UNITS}])
    t = Seq(TORCH_RNN[kind](N_IN, UNITS, batch_first=True, dtype=D), False)
    with torch.no_grad():
        copy_rnn([(model.layers[1], "", "")], t, kind)
        packed = pack_padded_sequence(
            embedded(model), LENGTHS, batch_first=True, enforce_sorted=False
        )
        h = t.rnn(packed)[1]
    h = h[0] if isinstance(h, tuple) else h
    torch.testing.assert_close(model(Tensor(IDS)).data, h[0], rtol=1e-10, atol=1e-12)


def test_mask_flows_through_dense_into_bidirectional():
    from torch.nn.utils.rnn import pack_padded_sequence

    model = masked_model(
        [
            {"type": "Dense", "units": N_IN},
            {"type": "Bidirectional", "layer": {"type": "LSTM", "units": UNITS}},
        ]
    )
    bi = nn.LSTM(N_IN, UNITS, batch_first=True, bidirectional=True, dtype=D)
    dense = model.layers[1]
    with torch.no_grad():
        copy_rnn(
            [(model.layers[2], "", "forward_"), (model.layers[2], "_reverse", "backward_")],
            Seq(bi, False),
            "LSTM",
        )
        x = embedded(model) @ dense.params["kernel"].data.T + dense.params["bias"].data
        h = bi(pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False))[1][0]
    torch.testing.assert_close(
        model(Tensor(IDS)).data, torch.cat([h[0], h[1]], 1), rtol=1e-10, atol=1e-12
    )


def test_mask_zero_pooling_leaves_padding_out():
    keep = (IDS != 0).to(D)[..., None]
    avg = masked_model([{"type": "GlobalAveragePooling1D"}])
    e = embedded(avg)
    torch.testing.assert_close(avg(Tensor(IDS)).data, (e * keep).sum(1) / keep.sum(1))
    mx = masked_model([{"type": "GlobalMaxPooling1D"}])
    e = embedded(mx)
    want = torch.stack([e[i, : LENGTHS[i]].amax(0) for i in range(len(IDS))])
    torch.testing.assert_close(mx(Tensor(IDS)).data, want)


def test_mask_zero_attention_ignores_padded_keys():
    model = masked_model([{"type": "MultiHeadAttention", "num_heads": 1, "key_dim": N_IN}])
    mha = nn.MultiheadAttention(N_IN, 1, batch_first=True, dtype=D)
    with torch.no_grad():
        copy_mha(model.layers[1], mha)
        e = embedded(model)
        want = mha(e, e, e, key_padding_mask=IDS == 0, need_weights=False)[0]
    torch.testing.assert_close(model(Tensor(IDS)).data, want.transpose(1, 2), rtol=1e-9, atol=1e-12)


def test_mask_zero_gradients_skip_padding():
    model = masked_model([{"type": "LSTM", "units": UNITS}])
    model(Tensor(IDS)).sum().backward()
    g = model.layers[0].params["embeddings"].grad
    assert torch.count_nonzero(g[0]) == 0  # the padding row gets nothing through the mask


# -- 1-D pooling, causal convolution, Masking ---------------------------------------------------
def test_causal_conv1d_sees_only_the_past():
    t = nn.Sequential(nn.ConstantPad1d((4, 0), 0.0), nn.Conv1d(N_IN, 3, 3, dilation=2, dtype=D))
    L, _ = check_layer(
        {"type": "Conv1D", "filters": 3, "kernel_size": 3, "dilation_rate": 2, "padding": "causal"},
        [STEPS, N_IN],
        t,
        3 * N_IN * 3 + 3,
        (STEPS, 3),
        lambda L, tt: (
            tt[1].weight.copy_(L.params["kernel"].data),
            tt[1].bias.copy_(L.params["bias"].data),
        ),
    )


@pytest.mark.parametrize(
    "layer,torch_layer,out",
    [
        ({"type": "MaxPooling1D"}, nn.MaxPool1d(2), (3, N_IN)),
        ({"type": "AveragePooling1D", "pool_size": 3, "strides": 2}, nn.AvgPool1d(3, 2), (2, N_IN)),
        (
            {"type": "MaxPooling1D", "pool_size": 4, "padding": "same"},  # Keras pads 1 and 1
            nn.Sequential(nn.ConstantPad1d((1, 1), float("-inf")), nn.MaxPool1d(4)),
            (2, N_IN),
        ),
    ],
)
def test_pooling_1d(layer, torch_layer, out):
    check_layer(layer, [STEPS, N_IN], torch_layer, 0, out)


def test_average_pooling_1d_same_counts_real_steps_only():
    x = torch.randn(2, N_IN, 7, dtype=D)
    spec = ModelSpec.model_validate(
        {
            "input_shape": [7, N_IN],
            "layers": [{"type": "AveragePooling1D", "pool_size": 2, "padding": "same"}],
        }
    )
    got = compile_model(spec, dtype=D)(Tensor(x)).data
    want = torch.cat([x[..., :6].unflatten(2, (3, 2)).mean(3), x[..., 6:]], 2)  # last window: 1
    torch.testing.assert_close(got, want)


def test_masking_zeroes_and_skips_padded_steps():
    from torch.nn.utils.rnn import pack_padded_sequence

    x = torch.randn(4, 5, N_IN, dtype=D)  # (N, steps, features), post-padded with zeros
    x[torch.arange(5).view(1, -1) >= LENGTHS.view(-1, 1)] = 0.0
    spec = ModelSpec.model_validate(
        {"input_shape": [5, N_IN], "layers": [{"type": "Masking"}, {"type": "GRU", "units": UNITS}]}
    )
    model = compile_model(spec, dtype=D)
    t = Seq(nn.GRU(N_IN, UNITS, batch_first=True, dtype=D), False)
    with torch.no_grad():
        copy_rnn([(model.layers[1], "", "")], t, "GRU")
        h = t.rnn(pack_padded_sequence(x, LENGTHS, batch_first=True, enforce_sorted=False))[1]
    torch.testing.assert_close(model(Tensor(x.transpose(1, 2))).data, h[0], rtol=1e-10, atol=1e-12)
