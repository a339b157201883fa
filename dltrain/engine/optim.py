"""Optimizers with torch.optim's update math, over a flat buffer or a list of parameters.

State lives in tensors (saved to safetensors by checkpoints). The step counter is a Python
int, so bias corrections are host scalars and no device value is read during a step.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..kernels import optimizer as K_opt
from ..spec import schema as S
from .params import FlatParams
from .tensor import Tensor

# the optimizer for each spec class of the schema (keyed by the class, so an unknown type
# is an error, never another optimizer)
BY_SPEC: dict[type, type[Optimizer]] = {}


def for_spec(spec_cls: type) -> Any:
    def deco(cls: type[Optimizer]) -> type[Optimizer]:
        BY_SPEC[spec_cls] = cls
        return cls

    return deco


def make_optimizer(o: Any, params: FlatParams) -> Optimizer:
    """The engine optimizer for an OptimizerSpec (learning rate, decay, ... in Keras's names)."""
    cls = BY_SPEC.get(type(o))
    if cls is None:
        raise TypeError(f"no optimizer is registered for {type(o).__name__}")
    return cls.from_spec(o, params)


class Optimizer:
    """Base: holds (param, grad) pairs and named state tensors per pair."""

    slots: tuple[str, ...] = ()

    def __init__(self, params: Any, lr: float) -> None:
        if lr < 0:
            raise ValueError(f"learning rate must be >= 0, got {lr}")
        self.flat = params if isinstance(params, FlatParams) else None
        self.params: list[Tensor] = list(params.params if self.flat is not None else params)
        self.lr = float(lr)
        self.step_count = 0
        self.state: list[dict[str, torch.Tensor]] = [{} for _ in self._pairs()]
        self._scratch: dict[int, torch.Tensor] = {}  # reused temporaries (not checkpointed)

    @classmethod
    def from_spec(cls, o: Any, params: FlatParams) -> Optimizer:
        """This optimizer from its spec (Keras's argument names)."""
        raise NotImplementedError

    def shard(self, lo: int, hi: int) -> None:
        """Update only elements lo:hi of the flat buffer, keeping state for those alone
        (ZeRO stage 1); the state's tensors are then hi - lo long."""
        assert self.flat is not None, "only a flat buffer can be sharded"
        self._bounds = (lo, hi)
        self.state = [{} for _ in self._pairs()]

    _bounds: tuple[int, int] | None = None

    def _pairs(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        if self.flat is not None:
            if self._bounds is not None:
                lo, hi = self._bounds
                return [(self.flat.data[lo:hi], self.flat.grad[lo:hi])]
            return [(self.flat.data, self.flat.grad)]
        return [(p.data, p.grad) for p in self.params]

    def zero_grad(self) -> None:
        if self.flat is not None:
            self.flat.zero_grad()
        else:
            for p in self.params:
                p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.flat is not None:
            self.flat.sync_grads()
        self.step_count += 1
        for i, (p, g) in enumerate(self._pairs()):
            if g is None:
                continue
            st = self.state[i]
            if not st:
                st.update({name: torch.zeros_like(p) for name in self.slots})
                self._init_state(st, p)
            self.update(p, g, st)

    def _init_state(self, state: dict[str, torch.Tensor], p: torch.Tensor) -> None:
        """Hook for non-zero initial state."""

    def scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A reusable buffer shaped like `like`: large temporaries allocated every step
        cost more in page faults than the arithmetic itself."""
        key = like.data_ptr() if self._bounds is not None else id(like)  # shard views: fresh
        buf = self._scratch.get(key)
        if buf is None or buf.shape != like.shape:
            buf = self._scratch[key] = torch.empty_like(like)
        return buf

    def update(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    # -- checkpointing ----------------------------------------------------------------------
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """(tensors, plain values) for safetensors + JSON."""
        tensors = {f"{i}.{k}": v for i, st in enumerate(self.state) for k, v in st.items()}
        return tensors, {"step": self.step_count, "lr": self.lr, "type": type(self).__name__}

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        if meta.get("type") != type(self).__name__:
            raise ValueError(
                f"optimizer state is for {meta.get('type')}, not {type(self).__name__}"
            )
        self.step_count = int(meta["step"])
        self.lr = float(meta["lr"])
        pairs = self._pairs()
        self.state = [{} for _ in pairs]
        for key, v in tensors.items():
            i, name = key.split(".", 1)
            p = pairs[int(i)][0]
            self.state[int(i)][name] = v.to(device=p.device, dtype=p.dtype).clone()


@for_spec(S.SGDSpec)
class SGD(Optimizer):
    @classmethod
    def from_spec(cls, o: Any, params: FlatParams) -> Optimizer:
        return cls(
            params,
            lr=o.learning_rate,
            momentum=o.momentum,
            nesterov=o.nesterov,
            weight_decay=o.weight_decay,
        )

    def __init__(
        self,
        params: Any,
        lr: float = 0.01,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ):
        super().__init__(params, lr)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("nesterov momentum needs momentum > 0 and dampening 0")
        self.momentum, self.dampening = momentum, dampening
        self.weight_decay, self.nesterov = weight_decay, nesterov

    def update(self, p: torch.Tensor, g: torch.Tensor, st: dict[str, torch.Tensor]) -> None:
        first = bool(self.momentum) and "momentum_buffer" not in st
        if first:
            st["momentum_buffer"] = torch.empty_like(p)
        K_opt.sgd(
            p,
            g,
            st.get("momentum_buffer"),
            self.lr,
            self.momentum,
            self.dampening,
            self.weight_decay,
            self.nesterov,
            first,
        )


@for_spec(S.AdamSpec)
class Adam(Optimizer):
    slots: tuple[str, ...] = ("exp_avg", "exp_avg_sq")

    @classmethod
    def from_spec(cls, o: Any, params: FlatParams) -> Optimizer:
        return cls(
            params,
            lr=o.learning_rate,
            betas=(o.beta_1, o.beta_2),
            eps=o.epsilon,
            weight_decay=o.weight_decay,
            amsgrad=o.amsgrad,
        )

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
    ):
        super().__init__(params, lr)
        self.betas, self.eps, self.weight_decay, self.amsgrad = betas, eps, weight_decay, amsgrad
        if amsgrad:
            self.slots = self.slots + ("max_exp_avg_sq",)

    decoupled = False

    def update(self, p: torch.Tensor, g: torch.Tensor, st: dict[str, torch.Tensor]) -> None:
        b1, b2 = self.betas
        K_opt.adam(
            p,
            g,
            st["exp_avg"],
            st["exp_avg_sq"],
            self.lr,
            b1,
            b2,
            self.eps,
            self.weight_decay,
            self.step_count,
            self.decoupled,
            st.get("max_exp_avg_sq"),
            self.scratch(p),
        )


@for_spec(S.AdamWSpec)
class AdamW(Adam):
    decoupled = True

    def __init__(
        self,
        params: Any,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        amsgrad: bool = False,
    ):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad)


@for_spec(S.RMSpropSpec)
class RMSprop(Optimizer):
    slots: tuple[str, ...] = ("square_avg",)

    @classmethod
    def from_spec(cls, o: Any, params: FlatParams) -> Optimizer:
        return cls(
            params,
            lr=o.learning_rate,
            alpha=o.rho,
            eps=o.epsilon,
            momentum=o.momentum,
            centered=o.centered,
            weight_decay=o.weight_decay,
        )

    def __init__(
        self,
        params: Any,
        lr: float = 0.01,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
    ):
        super().__init__(params, lr)
        self.alpha, self.eps, self.weight_decay = alpha, eps, weight_decay
        self.momentum, self.centered = momentum, centered
        if momentum:
            self.slots = self.slots + ("momentum_buffer",)
        if centered:
            self.slots = self.slots + ("grad_avg",)

    def update(self, p: torch.Tensor, g: torch.Tensor, st: dict[str, torch.Tensor]) -> None:
        if self.weight_decay:
            g = g.add(p, alpha=self.weight_decay)
        sq = st["square_avg"]
        sq.mul_(self.alpha).addcmul_(g, g, value=1 - self.alpha)
        if self.centered:  # divide by the standard deviation rather than the RMS
            ga = st["grad_avg"]
            ga.lerp_(g, 1 - self.alpha)
            avg = torch.addcmul(sq, ga, ga, value=-1, out=self.scratch(p)).sqrt_()
        else:
            avg = torch.sqrt(sq, out=self.scratch(p))
        avg.add_(self.eps)
        if self.momentum:
            buf = st["momentum_buffer"]
            buf.mul_(self.momentum).addcdiv_(g, avg)
            p.add_(buf, alpha=-self.lr)
        else:
            p.addcdiv_(g, avg, value=-self.lr)


@for_spec(S.AdagradSpec)
class Adagrad(Optimizer):
    slots = ("sum",)

    @classmethod
    def from_spec(cls, o: Any, params: FlatParams) -> Optimizer:
        return cls(
            params,
            lr=o.learning_rate,
            eps=o.epsilon,
            initial_accumulator_value=o.initial_accumulator_value,
            weight_decay=o.weight_decay,
        )

    def __init__(
        self,
        params: Any,
        lr: float = 0.01,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
    ):
        super().__init__(params, lr)
        self.lr_decay, self.weight_decay = lr_decay, weight_decay
        self.initial, self.eps = initial_accumulator_value, eps

    def _init_state(self, state: dict[str, torch.Tensor], p: torch.Tensor) -> None:
        state["sum"].fill_(self.initial)

    def update(self, p: torch.Tensor, g: torch.Tensor, st: dict[str, torch.Tensor]) -> None:
        if self.weight_decay:
            g = g.add(p, alpha=self.weight_decay)
        clr = self.lr / (1 + (self.step_count - 1) * self.lr_decay)
        st["sum"].addcmul_(g, g, value=1)
        p.addcdiv_(g, torch.sqrt(st["sum"], out=self.scratch(p)).add_(self.eps), value=-clr)


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "SGD": SGD,
    "Adam": Adam,
    "AdamW": AdamW,
    "RMSprop": RMSprop,
    "Adagrad": Adagrad,
}


@torch.no_grad()
def clip_grad_norm_(
    grads: Sequence[torch.Tensor] | torch.Tensor, max_norm: float, eps: float = 1e-6
) -> torch.Tensor:
    """Scale gradients so their global L2 norm is at most max_norm; return the norm.

    The scale min(1, max_norm / (norm + eps)) is applied on the device: no host sync.
    """
    grads = [grads] if isinstance(grads, torch.Tensor) else [g for g in grads if g is not None]
    if len(grads) == 1 and grads[0].dim() == 1:  # one flat buffer: the fused op
        total = K_opt.norm(grads[0]).to(grads[0].dtype)
    else:
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        total = torch.linalg.vector_norm(norms)
    coef = torch.clamp(max_norm / (total + eps), max=1.0)
    for g in grads:
        g.mul_(coef.to(g.dtype))
    return total


@torch.no_grad()
def clip_grad_value_(grads: Sequence[torch.Tensor] | torch.Tensor, clip_value: float) -> None:
    grads = [grads] if isinstance(grads, torch.Tensor) else [g for g in grads if g is not None]
    for g in grads:
        g.clamp_(-clip_value, clip_value)


def clip_spec_(g: torch.Tensor, o: Any) -> None:
    """An optimizer spec's clipnorm and clipvalue (Keras's order) on a whole flat gradient."""
    if o.clipnorm:
        clip_grad_norm_(g, o.clipnorm)
    if o.clipvalue:
        clip_grad_value_(g, o.clipvalue)
