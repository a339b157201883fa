"""GAN training (the DCGAN recipe): per batch, one discriminator step on real and generated
samples, then one generator step through the updated discriminator.

    D: minimise BCE(D(x), 1 - s) + BCE(D(G(z)), 0)      (s: one-sided label smoothing)
    G: minimise BCE(D(G(z)), 1)                          (the non-saturating loss)

Both losses are computed from the discriminator's logits. The generator step's backward
also reaches the discriminator's weights; those gradients are dropped. `self.model` is the
generator, so checkpoints, predict and export treat it as the run's model; the
discriminator, its optimizer and the noise generator travel in the checkpoint beside it.
"""

from __future__ import annotations

from typing import Any

import torch

from ...errors import ConfigError, DltrainError
from .. import functional as F
from ..layers.base import RunContext
from ..model import Model
from ..optim import make_optimizer
from ..params import FlatParams
from ..precision import autocast
from ..tensor import Tensor, no_grad
from .augment import augment
from .schedules import Schedule
from .trainer import TrainData, Trainer


class GanMetrics:
    """Epoch sums on the device: both losses and the discriminator's mean belief that real
    and generated samples are real (d_real, d_fake)."""

    KEYS = ("d_loss", "g_loss", "d_real", "d_fake")

    def __init__(self, device: Any) -> None:
        self.sums = torch.zeros(len(self.KEYS), dtype=torch.float64, device=device)
        self.count = torch.zeros((), dtype=torch.float64, device=device)

    def reset(self) -> None:
        self.sums.zero_()
        self.count.zero_()

    @no_grad()
    def update(
        self, d_loss: torch.Tensor, g_loss: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
    ) -> None:
        b = real.shape[0]
        vals = torch.stack(
            [d_loss, g_loss, torch.sigmoid(real).mean(), torch.sigmoid(fake).mean()]
        ).to(torch.float64)
        self.sums += vals * b
        self.count += b

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"sums": self.sums, "count": self.count}

    def load(self, tensors: dict[str, torch.Tensor]) -> None:
        for k, v in tensors.items():
            getattr(self, k).copy_(v)

    def results(self) -> dict[str, float]:
        vals = (self.sums / self.count.clamp(min=1)).tolist()
        res = dict(zip(self.KEYS, vals))
        res["loss"] = res["g_loss"]  # what progress lines and TensorBoard's train/loss show
        return res


class GanTrainer(Trainer):
    def __init__(
        self,
        spec: Any,
        generator: Model,
        discriminator: Model,
        data: TrainData,
        device: torch.device,
    ) -> None:
        super().__init__(spec, generator, data, device)
        assert not self.scaler.enabled  # the spec's rules refuse fp16-mixed for a GAN
        self.disc = discriminator
        trainable = discriminator.parameters(trainable_only=True)
        if not trainable:
            raise ConfigError("every discriminator layer is frozen; nothing to train")
        assert spec.gan is not None  # the schema pairs task: gan with a gan section
        self.gan = spec.gan
        self.dspec = spec.gan.discriminator_optimizer or spec.optimizer
        self.dflat = FlatParams(trainable)
        self.dopt = make_optimizer(self.dspec, self.dflat)
        self.dschedule = Schedule(
            self.dspec.schedule,
            self.dspec.learning_rate,
            self.steps_per_epoch * spec.train.epochs,
            self.steps_per_epoch,
        )
        gdev = device if device.type == "cuda" else torch.device("cpu")
        self.noise_gen = torch.Generator(device=gdev).manual_seed(spec.seed + 41)
        self.train_metrics = GanMetrics(device)  # type: ignore[assignment]
        self.noise_shape = tuple(generator.input_shape)
        fixed = torch.Generator().manual_seed(spec.seed + 43)
        self.fixed_noise = torch.randn((spec.gan.samples,) + self.noise_shape, generator=fixed).to(
            device
        )

    def noise(self, n: int, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(
            (n,) + self.noise_shape, generator=self.noise_gen, device=like.device, dtype=like.dtype
        )

    def _bce(self, logits: Tensor, target: float) -> Tensor:
        t = torch.full(logits.shape, target, dtype=logits.dtype, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits, t)

    def _micro_batch(self, idx: torch.Tensor, scale: float) -> None:
        real = self.data.x[idx]
        aug = self.spec.data.augment
        if self.data.image and (aug.random_flip or aug.random_crop_padding):
            real = augment(real, aug, self.augment_gen)
        run = RunContext(training=True, generator=self.dropout_gen)
        with autocast(self.compute):
            fake = self.model(Tensor(self.noise(real.shape[0], real)), run)
            d_real = self.disc(Tensor(real), run, logits=True)
            d_fake = self.disc(fake.detach(), run, logits=True)
            smooth = self.gan.label_smoothing
            d_loss = self._bce(d_real, 1.0 - smooth) + self._bce(d_fake, 0.0)
        d_loss.backward()
        self._discriminator_step(d_loss.data)
        with autocast(self.compute):
            g_loss = self._bce(self.disc(fake, run, logits=True), 1.0)
        g_loss.backward()
        self.dopt.zero_grad()  # the generator step's gradients of D are not D's to use
        self.train_metrics.update(d_loss.data, g_loss.data, d_real.data, d_fake.data)
        self._last_loss = g_loss.data

    def _discriminator_step(self, loss: torch.Tensor) -> None:
        self._gradients_ready(self.dflat, self.dspec, loss)
        self.dopt.lr = self.dschedule.lr(self.global_step)
        self.dopt.step()
        self.dopt.zero_grad()

    has_best_epoch = False  # no loss of a GAN says which epoch is best

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        d_tensors, d_meta = self.dopt.state_dict()
        state["trainer"]["rng.noise"] = self.noise_gen.get_state()
        state["discriminator"] = self.disc.state_tensors()
        state["discriminator_optimizer"] = d_tensors
        state["state"]["gan"] = {"optimizer": d_meta, "schedule": self.dschedule.state()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.disc.load_state_tensors(state["discriminator"])
        self.dopt.load_state_dict(
            state["discriminator_optimizer"], state["state"]["gan"]["optimizer"]
        )
        self.dschedule.load(state["state"]["gan"]["schedule"])
        self.noise_gen.set_state(state["trainer"]["rng.noise"])

    @no_grad()
    def samples(self) -> torch.Tensor:
        """The generator's images (or vectors) from the fixed noise, in eval mode."""
        return self.model(Tensor(self.fixed_noise), RunContext(training=False)).data

    def evaluate(self, *a: Any, **k: Any) -> Any:
        raise DltrainError("a GAN run has no validation data")
