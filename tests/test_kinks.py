"""Frozen kinks (workbench.curvature.kinks): difference products on piecewise-linear nets equal double-backward
ones, whether the kinks are modules or functional calls inside a forward (F.relu, x.relu(), leaky_relu, relu6 /
hardtanh, max and adaptive-max pooling, in-place forms), on the ResNet-20 of the real-models issue too."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import workbench as wb
from workbench.curvature.kinks import FrozenKinks, kink_functions, known_kinkless
from workbench.probes.curvature import gradient_difference_operator


class Functional(nn.Module):
    """Every frozen kind, called functionally (no kinked module), in-place where torch allows it."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.c3 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 2 * 2 + 8, 5)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.max_pool2d(h, 2)                                 # 16 -> 8
        h = F.leaky_relu(self.c2(h), 0.1)
        h, _ = F.max_pool2d(h, 2, return_indices=True)          # 8 -> 4
        h = self.c3(h).relu_()
        h = F.hardtanh(h, -0.5, 0.5) + F.relu6(3 * h)
        a = F.adaptive_max_pool2d(h, 2).flatten(1)
        b = torch.relu(F.adaptive_max_pool1d(h.flatten(2), 1)).flatten(1)
        return self.fc(torch.cat([a, b], 1))


def _data(dtype, n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 16, 16, generator=g, dtype=dtype), torch.randn(n, 5, generator=g, dtype=dtype)


def _loss(m, batch):
    return F.mse_loss(m(batch[0]), batch[1])


def _errors(model, loss, data, dtype, difference, n_dirs=3, seed=3):
    H = wb.curvature.hessian(model, loss, data)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for freeze in (True, False):
        op = gradient_difference_operator(model, loss, data, difference=difference, freeze_kinks=freeze)
        e = []
        for _ in range(n_dirs):
            v = torch.randn(op.size, generator=g, dtype=dtype)
            exact = H.matvec(v)
            e.append(float((op.matvec(v) - exact).norm() / exact.norm()))
        out[freeze] = max(e)
    return out


def test_functional_kinks_float64_products_match_double_backward():
    torch.manual_seed(0)
    model = Functional().double()
    data = _data(torch.float64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    errs = _errors(model, _loss, data, torch.float64, "central")
    assert errs[True] < 1e-6, errs                  # (float64 steps are too small to cross kinks: float32 below)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_functional_kinks_float32_forward_differences():
    torch.manual_seed(1)
    model = Functional()
    errs = _errors(model, _loss, _data(torch.float32), torch.float32, "forward")
    assert errs[True] < 3e-2, errs
    assert errs[False] > 10 * errs[True], errs


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_resnet_functional_relus_are_frozen(dtype):
    """The workbench ResNet calls F.relu in its blocks (BatchNorm in eval mode): every one is seen and frozen, and
    frozen difference products match double backward (float64 central 1e-6, float32 forward 3e-2)."""
    from workbench.problems import nets
    torch.manual_seed(0)
    model = nets.resnet(depth=8, in_channels=3, n_classes=10, width=0.5).to(dtype).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (32,), generator=g)

    def loss(m, batch):
        return F.cross_entropy(m(batch[0]), batch[1])
    op = gradient_difference_operator(model, loss, (x, y))
    op.matvec(torch.randn(op.size, dtype=dtype))
    assert op.grad.kinks.n_seen == 1 + 2 * 3                 # the stem's relu and two in each of the 3 blocks
    f64 = dtype == torch.float64
    errs = _errors(model, loss, (x, y), dtype, "central" if f64 else "forward", n_dirs=2)
    assert errs[True] < (1e-6 if f64 else 3e-2), errs
    assert not model.training


def test_a_model_without_kinks_is_recorded_once_then_skipped():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(32, 4), torch.randn(32, 1)

    def loss(m, b):
        return F.mse_loss(m(b[0]), b[1])
    op = gradient_difference_operator(model, loss, (x, y))
    assert op.grad.kinks is not None and not known_kinkless(model, "eval")
    op.matvec(torch.randn(op.size))
    assert op.grad.kinks is None and known_kinkless(model, "eval")      # nothing seen: the mode is dropped
    again = gradient_difference_operator(model, loss, (x, y))
    assert again.grad.kinks is None                                      # and not entered for this model again
    assert not known_kinkless(model, "train")


def test_data_dependent_forward_is_computed_unfrozen_not_wrongly():
    """A replayed call whose input shape differs from the recorded one is computed as it is (counted)."""
    kinks = FrozenKinks()
    x0 = torch.randn(4, 3)
    with kinks.recording(0):
        F.relu(x0)
    with kinks.replaying(0):
        x1 = torch.randn(5, 3)
        assert torch.equal(F.relu(x1), x1.clamp_min(0))
    assert kinks.n_unfrozen == 1
    with kinks.replaying(0):
        x2 = -x0                                                 # same shape: x0's pattern, not x2's
        assert torch.equal(F.relu(x2), x2 * (x0 > 0))


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "hardtanh", "max_pool2d", "adaptive_max_pool2d"])
def test_kink_functions_lists_what_is_frozen(name):
    assert name in kink_functions()


def test_freezing_is_local_to_the_probing_thread():
    """The dashboard trains runs in threads beside each other: a probe freezing kinks in one thread must not touch
    the forward of another (torch function modes are per thread)."""
    import threading
    kinks = FrozenKinks()
    inside, release = threading.Event(), threading.Event()

    def probe():
        with kinks.recording(0):
            inside.set()
            release.wait(5)
    t = threading.Thread(target=probe)
    t.start()
    inside.wait(5)
    try:
        x = torch.randn(8)
        assert torch.equal(F.relu(x), x.clamp_min(0)) and kinks.n_seen == 0
    finally:
        release.set()
        t.join()
