"""dltrain's functional API, mirroring torch.nn.functional (names, argument order, NCHW)."""

from .activations import (
    ACTIVATIONS,
    elu,
    gelu,
    leaky_relu,
    log_softmax,
    relu,
    sigmoid,
    silu,
    softmax,
    softplus,
    tanh,
)
from .losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
    huber_loss,
    kl_div,
    l1_loss,
    mse_loss,
    nll_loss,
)
from .nn import (
    adaptive_avg_pool2d,
    avg_pool2d,
    batch_norm,
    bias_act,
    conv1d,
    conv2d,
    conv_transpose2d,
    dropout,
    embedding,
    interpolate,
    layer_norm,
    linear,
    max_pool2d,
    pad,
)
from .recurrent import gru, lstm, rnn
from .sequence import gru_cell, lstm_cell, rnn_tanh_cell, scaled_dot_product_attention

__all__ = [
    "ACTIVATIONS", "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "bias_act",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits", "conv1d", "conv2d", "conv_transpose2d",
    "cross_entropy", "dropout", "elu", "embedding", "gelu", "gru", "gru_cell", "huber_loss",
    "interpolate", "kl_div", "l1_loss", "layer_norm", "leaky_relu", "linear", "log_softmax",
    "lstm", "lstm_cell", "max_pool2d", "mse_loss", "nll_loss", "pad", "relu", "rnn",
    "rnn_tanh_cell", "scaled_dot_product_attention", "sigmoid", "silu", "softmax", "softplus",
    "tanh",
]
