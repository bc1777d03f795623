"""The model zoo. Later issues add cnn / resnet / vit / gpt; every entry is a plain ``nn.Module`` factory."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["ACTIVATIONS", "mlp", "PointModel"]

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "linear": nn.Identity,
}


def mlp(in_dim: int, out_dim: int, widths: Sequence[int] = (64, 64), activation: str = "tanh",
        bias: bool = True) -> nn.Sequential:
    """Fully connected network ``in_dim -> widths... -> out_dim`` with ``activation`` between layers.

    ``widths=()`` gives a linear model. Layers use PyTorch's default initialisation (seed it with
    :func:`workbench.problems.base.seeded`).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation={activation!r} is not accepted: activation must be one of {list(ACTIVATIONS)}")
    layers: list[nn.Module] = []
    prev = in_dim
    for w in widths:
        layers += [nn.Linear(prev, w, bias=bias), ACTIVATIONS[activation]()]
        prev = w
    layers.append(nn.Linear(prev, out_dim, bias=bias))
    return nn.Sequential(*layers)


class PointModel(nn.Module):
    """A point ``theta`` in the plane; ``forward`` returns f(theta) once per input row (2D test functions)."""

    def __init__(self, fn, start: Sequence[float]):
        super().__init__()
        self.fn = fn
        self.theta = nn.Parameter(torch.tensor([float(s) for s in start], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(self.theta).reshape(()).expand(x.shape[0])

    def extra_repr(self) -> str:
        return f"theta={self.theta.detach().tolist()}"
