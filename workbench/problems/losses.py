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
