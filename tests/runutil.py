"""Problems shared by the run-loop tests on CPU (test_run_fast.py) and on CUDA (test_cuda.py)."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn
from torch.utils.data import TensorDataset

import workbench as wb


def double(prob: wb.Problem) -> wb.Problem:
    """The same problem in float64: model built by the same seeded factory then .double(), inputs in float64."""
    factory = prob.model_factory

    def ds(d):
        if d is None:
            return None
        x, y = d.tensors
        return TensorDataset(x.double(), y.double() if y.is_floating_point() else y)

    return dataclasses.replace(prob, model_factory=lambda: factory().double(), train=ds(prob.train),
                               test=ds(prob.test))


def tiny_conv_problem(n: int = 48, seed: int = 0, dtype=torch.float32) -> wb.Problem:
    """A conv net on CIFAR-shaped-but-small images whose class is set by a per-class mean pattern."""
    g = torch.Generator().manual_seed(123)
    means = torch.randn(3, 3, 8, 8, generator=g)
    y = torch.arange(n) % 3
    x = (means[y] + 0.5 * torch.randn(n, 3, 8, 8, generator=g)).to(dtype)

    def factory():
        return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(4 * 4 * 4, 3)).to(dtype)

    return wb.Problem(name="tiny-conv", kind="classification", model_factory=factory,
                      loss_fn=nn.functional.cross_entropy, train=TensorDataset(x, y), seed=seed, n_classes=3)


def snapshot(model):
    """What an analysis must leave as it was: module modes, state (parameters and BatchNorm buffers), .grad, RNG."""
    return ([m.training for m in model.modules()], {k: v.clone() for k, v in model.state_dict().items()},
            [None if p.grad is None else p.grad.clone() for p in model.parameters()], torch.get_rng_state())


def assert_same(model, snap):
    modes, state, grads, rng = snap
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)
    assert torch.equal(torch.get_rng_state(), rng)
