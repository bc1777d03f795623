"""Losses and metrics shared by the problems. All losses are means over examples."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out, y)


def mse_onehot(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error summed over the C outputs against one-hot targets, averaged over examples."""
    # one-hot by comparison rather than F.one_hot, which reads the labels' maximum and so cannot run under
    # torch.func.vmap (per-example curvature, e.g. curvature.hessian_variance)
    target = (y[..., None] == torch.arange(out.shape[-1], device=y.device)).to(out.dtype)
    return ((out - target) ** 2).sum(-1).mean()


def mse(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Squared error summed over outputs, averaged over examples (for scalar outputs: mean((f - y)^2))."""
    diff = out.reshape(out.shape[0], -1) - y.reshape(y.shape[0], -1).to(out.dtype)
    return (diff ** 2).sum(-1).mean()


def bce_logits(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(out.reshape(-1), y.reshape(-1).to(out.dtype))


def mse_pm1(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Binary labels {0,1} regressed as targets {-1,+1}."""
    return ((out.reshape(-1) - (2 * y.reshape(-1).to(out.dtype) - 1)) ** 2).mean()


def accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (out.argmax(-1) == y).to(torch.float32).mean()


def binary_accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((out.reshape(-1) > 0).to(y.dtype) == y.reshape(-1)).to(torch.float32).mean()


def function_value(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return out.mean()


def _check_sequence(out: torch.Tensor, y: torch.Tensor) -> None:
    if out.dim() != 3:
        raise ValueError(f"sequence outputs must have shape (B, T, V); got {tuple(out.shape)}")
    if tuple(y.shape) != tuple(out.shape[:2]):
        raise ValueError(f"sequence targets must have shape (B, T) = {tuple(out.shape[:2])}; got {tuple(y.shape)}")


def sequence_cross_entropy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy of logits ``(B, T, V)`` against token ids ``(B, T)`` (language modelling)."""
    _check_sequence(out, y)
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def sequence_accuracy(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Fraction of tokens whose arg-max logit is the target token (``(B, T, V)`` against ``(B, T)``)."""
    _check_sequence(out, y)
    return (out.argmax(-1) == y).to(torch.float32).mean()
