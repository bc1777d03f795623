"""hessian(..., method="difference"): central differences of gradients (one gradient's memory per product) against
closed forms and double backward, microbatched and per block, with the model left as it was."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import workbench as wb
from workbench.curvature import eigs, hessian


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, [m.training for m in model.modules()]


def test_linear_model_matches_two_xtx_over_n():
    """MSE on a linear model: H = 2 XᵀX / n; float64 differences to 1e-6 (the rounding of two gradients of size
    ~1 divided by ε ~ 1e-9; the quadratic has no truncation error), the lean top eigenvalue to 1e-6."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 6, generator=g, dtype=torch.float64)
    y = torch.randn(50, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(6, 1, bias=False).double()

    def loss(m, b):
        return F.mse_loss(m(b[0]), b[1])
    H = hessian(model, loss, (x, y), method="difference")
    dense = 2 * x.T @ x / x.shape[0]
    got = torch.stack([H.matvec(e) for e in torch.eye(6, dtype=torch.float64)], 1)
    assert float((got - dense).norm() / dense.norm()) < 1e-6
    top = float(eigs(H, k=1, tol=1e-6, max_basis=3, max_iter=200).values[0])
    assert top == pytest.approx(float(torch.linalg.eigvalsh(dense)[-1]), rel=1e-6)
    assert H.method == "difference" and H.attrs["difference"] == "central"


def _resnet(dtype=torch.float64):
    from workbench.problems import nets
    torch.manual_seed(0)
    model = nets.resnet(depth=8, in_channels=3, n_classes=10, width=0.5).to(dtype)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(24, 3, 8, 8, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (24,), generator=g)

    def loss(m, b):
        return F.cross_entropy(m(b[0]), b[1])
    return model, loss, (x, y)


@pytest.mark.parametrize("batch_size", [None, 5])
def test_resnet_difference_products_equal_double_backward(batch_size):
    """A BatchNorm ResNet with functional ReLUs, float64, eval mode: difference products (one batch, or 5
    microbatches that re-record the kinks per product) equal double-backward ones to 1e-6; the top eigenvalue of
    the lean solve (max_basis=3) equals the default one; the model (train mode, buffers) is left as it was."""
    model, loss, data = _resnet()
    model.train()
    before = _state(model)
    Hd = hessian(model, loss, data, method="difference", batch_size=batch_size)
    He = hessian(model, loss, data)
    v = torch.randn(He.size, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    a, b = Hd.matvec(v), He.matvec(v)
    assert float((a - b).norm() / b.norm()) < 1e-6
    lean = float(eigs(Hd, k=1, tol=1e-6, max_basis=3, max_iter=400).values[0])
    ref = float(eigs(He, k=1, tol=1e-10).values[0])
    assert lean == pytest.approx(ref, rel=1e-5)
    after = _state(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0]) and before[1] == after[1]
    assert all(p.grad is None for p in model.parameters())


def test_difference_blocks_and_budget():
    """Per-block difference operators equal the dense Hessian's block; a memory budget picks a microbatch (the
    products unchanged) and a budget below one example is the usual clear error."""
    model, loss, data = _resnet()
    model.eval()
    Hd = hessian(model, loss, data, method="difference")
    He = hessian(model, loss, data)
    name = "fc" if any(n.startswith("fc.") for n, _ in model.named_parameters()) else None
    blk = Hd.block(name or [n for n, _ in model.named_parameters()][-1])
    blk_e = He.block(name or [n for n, _ in model.named_parameters()][-1])
    v = torch.randn(blk.size, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    torch.testing.assert_close(blk.matvec(v), blk_e.matvec(v), rtol=1e-6, atol=1e-8)
    Hb = hessian(model, loss, data, method="difference", max_memory="64MiB")
    w = torch.randn(Hd.size, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.testing.assert_close(Hb.matvec(w), Hd.matvec(w), rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="max_memory"):
        hessian(model, loss, data, method="difference", max_memory=16)


def test_float32_difference_top_eigenvalue_within_1e_3():
    """float32 (the precision users run in): the lean difference solve's top eigenvalue is within 1e-3 of the
    float64 double-backward one on the same ResNet."""
    model, loss, (x, y) = _resnet(torch.float32)
    model.eval()
    top32 = float(eigs(hessian(model, loss, (x, y), method="difference"), k=1, tol=1e-4, max_basis=3,
                       max_iter=400).values[0])
    m64 = model.double()
    ref = float(eigs(hessian(m64, loss, (x.double(), y)), k=1, tol=1e-10).values[0])
    assert abs(top32 - ref) / ref < 1e-3


def test_bad_method_names_the_choices():
    model, loss, data = _resnet()
    with pytest.raises(ValueError, match="difference"):
        hessian(model, loss, data, method="finite")


def test_difference_products_need_one_gradients_memory():
    """The memory claim, measured (torch's profiler on CPU, as benchmarks/curvature.py): a difference product
    peaks at most 1.3x one gradient on the same batch, where a double-backward product needs more than 2x; the
    lean top-1 solve (difference products, max_basis=3) stays within 1.5x once the batch's activations outweigh
    the parameter vectors (ResNet-8, 128 images of 16x16: measured 1.03x, 2.84x and 1.27x)."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from curvature import peak_mib
    from workbench.problems import nets
    torch.manual_seed(0)
    model = nets.resnet(depth=8, in_channels=3, n_classes=10).eval()
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 3, 16, 16, generator=g), torch.randint(0, 10, (128,), generator=g)

    def loss(m, b):
        return F.cross_entropy(m(b[0]), b[1])
    params = list(model.parameters())
    grad = peak_mib(lambda: torch.autograd.grad(loss(model, (x, y)), params))
    v = torch.randn(sum(p.numel() for p in params), generator=g)
    Hd = hessian(model, loss, (x, y), method="difference")
    Hd.matvec(v)                                             # kink patterns recorded
    diff = peak_mib(lambda: Hd.matvec(v))
    exact = peak_mib(lambda: hessian(model, loss, (x, y)).matvec(v))
    lean = peak_mib(lambda: eigs(hessian(model, loss, (x, y), method="difference"), k=1, tol=1e-2, max_basis=3,
                                 warn=False))
    assert diff <= 1.3 * grad, (diff, grad)
    assert exact >= 2 * grad, (exact, grad)
    assert lean <= 1.5 * grad, (lean, grad)
