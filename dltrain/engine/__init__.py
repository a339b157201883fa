"""dltrain's reverse-mode autodiff engine over PyTorch tensors."""

from . import functional, ops
from .ops import cat, stack, where
from .tensor import Tensor, is_grad_enabled, no_grad

__all__ = ["Tensor", "cat", "functional", "is_grad_enabled", "no_grad", "ops", "stack", "where"]
