"""Training-time augmentation of a batch, drawn from the run's augmentation generator (its
state is in every checkpoint, so a resumed run draws the same): image flips and crops,
audio speed, shift and noise. With `part` = (offset, total) a batch is rows of a global
batch (data-parallel) and the draws are the global batch's rows."""

from __future__ import annotations

from typing import Any

import torch


def augment(
    x: torch.Tensor, aug: Any, gen: torch.Generator, part: tuple[int, int] | None = None
) -> torch.Tensor:
    """Random flips and padded random crops of a (N, C, H, W) batch, per sample. With
    `part` = (offset, total), x is rows offset:offset+N of a global batch of `total`: the
    draws are the global batch's, so each sample is augmented as in one process."""
    n = x.shape[0]
    off, total = part if part is not None else (0, n)

    def draw(fn: Any, *args: Any) -> torch.Tensor:
        return fn(*args, (total,), generator=gen, device=x.device)[off : off + n]

    if aug.random_flip in ("horizontal", "horizontal_and_vertical"):
        m = draw(torch.rand) < 0.5
        x = torch.where(m.view(-1, 1, 1, 1), x.flip(-1), x)
    if aug.random_flip in ("vertical", "horizontal_and_vertical"):
        m = draw(torch.rand) < 0.5
        x = torch.where(m.view(-1, 1, 1, 1), x.flip(-2), x)
    p = aug.random_crop_padding
    if p:
        _, _, h, w = x.shape
        xp = torch.nn.functional.pad(x, (p, p, p, p))
        oy = draw(torch.randint, 0, 2 * p + 1)
        ox = draw(torch.randint, 0, 2 * p + 1)
        rows = (oy.view(-1, 1) + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (ox.view(-1, 1) + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        idx = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        x = xp.permute(0, 2, 3, 1)[idx, rows, cols].squeeze(1).permute(0, 3, 1, 2)
    return x.contiguous()


def augment_audio(
    x: torch.Tensor,
    aug: Any,
    gen: torch.Generator,
    part: tuple[int, int] | None = None,
    bank: torch.Tensor | None = None,
) -> torch.Tensor:
    """Waveforms (N, [1,] samples): a random speed in `speed` (linear resampling), a
    random shift of up to `time_shift` of the length (zeros fill the gap), then background
    noise (white, pink or brown, or a random stretch of `bank`) at a random SNR on a
    `probability` share of clips. With `part` = (offset, total) the
    draws are the global batch's rows (data-parallel), as for images."""
    n, length = x.shape[0], x.shape[-1]
    off, total = part if part is not None else (0, n)
    dev = x.device

    def draw(*shape: int, normal: bool = False) -> torch.Tensor:
        fn = torch.randn if normal else torch.rand
        return fn((total, *shape), generator=gen, device=dev)[off : off + n]

    flat = x.reshape(n, length)
    if aug.speed is not None:  # speed perturbation: read the clip at f samples per sample
        lo, hi = aug.speed
        f = lo + draw(1) * (hi - lo)  # (n, 1)
        pos = torch.arange(length, device=dev, dtype=flat.dtype)[None, :] * f
        i0 = pos.floor().long()
        w = pos - i0
        a = flat.gather(1, i0.clamp(max=length - 1))
        b = flat.gather(1, (i0 + 1).clamp(max=length - 1))
        flat = torch.where(pos <= length - 1, a * (1 - w) + b * w, 0.0)
    if aug.time_shift:
        shift = torch.round((draw(1) * 2 - 1) * aug.time_shift * length).long()  # (n, 1)
        src = torch.arange(length, device=dev)[None, :] - shift
        inside = (src >= 0) & (src < length)
        flat = torch.where(inside, flat.gather(1, src.clamp(0, length - 1)), 0.0)
    nb = aug.background_noise
    if nb is not None:
        u = draw(3)
        snr = nb.snr_db[0] + u[:, 1] * (nb.snr_db[1] - nb.snr_db[0])
        if bank is None:  # white noise shaped to each clip's colour (1/f^k power)
            noise = draw(length, normal=True)
            freqs = torch.fft.rfftfreq(length, device=dev)
            freqs[0] = freqs[1]
            slope = {"white": 0.0, "pink": 0.5, "brown": 1.0}
            ks = torch.tensor([slope[c] for c in nb.colors], device=dev)
            pick = (u[:, 2] * len(ks)).long().clamp(max=len(ks) - 1)
            shape = freqs[None, :] ** -ks[pick][:, None]  # amplitude ~ f^-k
            noise = torch.fft.irfft(torch.fft.rfft(noise, dim=1) * shape, n=length, dim=1)
        else:
            start = (u[:, 2] * (len(bank) - length + 1)).long().clamp(0, max(len(bank) - length, 0))
            idx = (start[:, None] + torch.arange(length, device=dev)[None, :]) % len(bank)
            noise = bank[idx]
        rms = lambda t: t.square().mean(dim=1).sqrt().clamp(min=1e-8)  # noqa: E731
        scale = rms(flat) / (rms(noise) * torch.pow(10.0, snr / 20))
        on = (u[:, 0] < nb.probability).to(flat.dtype)
        flat = flat + (on * scale)[:, None] * noise
    return flat.reshape(x.shape).contiguous()
