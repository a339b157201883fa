"""Sample from a trained generative model: text from a language model trained on a text
source, images (or vectors) from a GAN's generator.

The model reads a fixed window of `input_shape[0]` tokens. The context (the prompt, then
what was generated) fills the window from the left, padding after it, and the next token is
drawn from the output at the context's last step: for causal models (recurrent layers,
TransformerDecoder, causal attention) the padding cannot reach that step, so this is exact.
Longer contexts keep their last window.
"""

from __future__ import annotations

import torch

from ..data.text import decode, encode, tokenize
from ..engine.layers.base import RunContext
from ..engine.tensor import Tensor, no_grad
from ..errors import ConfigError
from .inference import load_checkpoint


@no_grad()
def generate_text(
    path: str,
    prompt: str,
    length: int = 200,
    temperature: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
) -> str:
    """The prompt followed by `length` sampled tokens (temperature 0: the most likely)."""
    loaded = load_checkpoint(path)
    pre, model = loaded.pre, loaded.model
    if not pre.text:
        raise ConfigError(
            f"{loaded.path}: this model was not trained on a text source (data.train.type: "
            "text); generate needs a language model"
        )
    if temperature < 0 or length < 0 or top_k < 0:
        raise ConfigError("--length, --temperature and --top-k must not be negative")
    vocab, level = pre.classes, pre.text["level"]
    steps = pre.input_shape[0]
    if len(model.output_shape) != 2 or model.output_shape[1] != steps:
        raise ConfigError(
            f"{loaded.path}: the model's output {list(model.output_shape)} is not one "
            "prediction per step; a language model's last layer is Dense(units=vocabulary) "
            "over the sequence (return_sequences: true for recurrent layers)"
        )
    ids = encode(tokenize(prompt, level, pre.text["lowercase"]), vocab).tolist()
    if not ids:
        raise ConfigError("the prompt has no tokens; give some text with --prompt")
    logits = model.final_activation == "softmax"
    gen = torch.Generator().manual_seed(seed)
    run = RunContext(training=False)
    start = len(ids)
    for _ in range(length):
        ctx = ids[-steps:]
        x = torch.tensor([ctx + [0] * (steps - len(ctx))], dtype=torch.int64)
        out = model(Tensor(x), run, logits=logits).data[0, :, len(ctx) - 1].double()
        scores = out if logits else out.clamp_min(1e-12).log()
        scores[0] = float("-inf")  # never padding
        if 1 < len(scores):
            scores[1] = float("-inf")  # nor the unknown token
        if top_k:
            kth = scores.topk(min(top_k, len(scores))).values[-1]
            scores[scores < kth] = float("-inf")
        if temperature == 0:
            nxt = int(scores.argmax())
        else:
            probs = torch.softmax(scores / temperature, 0)
            nxt = int(torch.multinomial(probs, 1, generator=gen))
        ids.append(nxt)
    return (
        decode(ids[:start], vocab, level)
        + _joiner(level, ids, start)
        + decode(ids[start:], vocab, level)
    )


def _joiner(level: str, ids: list[int], start: int) -> str:
    return " " if level == "word" and len(ids) > start else ""


@no_grad()
def generate_samples(path: str, n: int, seed: int, output: str) -> int:
    """n samples of a GAN's generator from seeded noise, to a PNG grid or a .npy array
    (channels-last, the generator's own value range)."""
    import io

    from ..engine.layers.base import to_channels_last
    from ..engine.train.tblog import tile
    from ..errors import DataError
    from ..fsutil import atomic_write_bytes, npy_bytes

    loaded = load_checkpoint(path)
    if loaded.spec.task != "gan":
        raise ConfigError(f"{loaded.path}: not a GAN run; -o samples come from GAN generators")
    if n < 1:
        raise ConfigError("--length (the number of samples) must be at least 1")
    model = loaded.model
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn((n,) + tuple(model.input_shape), generator=gen)
    out = to_channels_last(model(Tensor(z), RunContext(training=False))).data.numpy()
    low = output.lower()
    if low.endswith(".npy"):
        data = npy_bytes(out)
    elif low.endswith(".png"):
        if out.ndim != 4 or out.shape[-1] not in (1, 3):
            raise ConfigError(
                f"the generator makes {list(out.shape[1:])} samples, not images; write a .npy file"
            )
        from PIL import Image

        lo = float(out.min())
        grid = tile(out, lo, max(float(out.max()), lo + 1e-6))
        img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    else:
        raise DataError(f"--output {output}: use a .png (image grid) or .npy file name")
    atomic_write_bytes(output, data)
    return n
