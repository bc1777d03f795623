"""wb.curvature.hessian_variance: Σ = (1/n) Σᵢ Hᵢ² − H² (Wu, Ma & E 2018) against closed forms and dense per-example
Hessians; both product methods; the model is left as it was; bad input."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.func import functional_call

import workbench as wb
from workbench.problems import losses

torch.set_num_threads(1)


def _mlp(seed=0, bn=False):
    torch.manual_seed(seed)
    layers = [nn.Linear(3, 4)] + ([nn.BatchNorm1d(4)] if bn else []) + [nn.Tanh(), nn.Linear(4, 2)]
    return nn.Sequential(*layers).double()


def _data(seed=0, n=7):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g, dtype=torch.float64), torch.randint(0, 2, (n,), generator=g)


def loss_ce(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def loss_onehot(m, b):            # F.one_hot cannot be vmapped: "auto" must fall back to the loop
    out = m(b[0])
    return ((out - F.one_hot(b[1], 2).to(out.dtype)) ** 2).sum(-1).mean()


def _dense_sigma(model, loss, x, y, names=None):
    """Σ from dense per-example Hessians (torch.autograd.functional.hessian), restricted to ``names``."""
    named = [(n, p) for n, p in model.named_parameters() if names is None or n in names]
    fixed = {n: p.detach() for n, p in model.named_parameters()}
    flat0 = torch.cat([p.detach().reshape(-1) for _, p in named])

    def per_example(i):
        def f(v):
            d, o = dict(fixed), 0
            for n, p in named:
                d[n] = v[o:o + p.numel()].reshape(p.shape)
                o += p.numel()
            return loss(lambda inp: functional_call(model, d, (inp,)), (x[i:i + 1], y[i:i + 1]))
        return torch.autograd.functional.hessian(f, flat0)

    was = model.training
    model.eval()
    Hs = torch.stack([per_example(i) for i in range(x.shape[0])])
    model.train(was)
    H = Hs.mean(0)
    return (Hs @ Hs).mean(0) - H @ H


def test_linear_least_squares_closed_form():
    # loss (w.x - y)^2 per example: H_i = 2 x_i x_i^T, Σ = (1/n) Σ 4 |x_i|^2 x_i x_i^T - H^2
    g = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, generator=g, dtype=torch.float64)
    y = torch.randn(9, 1, generator=g, dtype=torch.float64)
    model = nn.Linear(4, 1, bias=False).double()
    Hs = 2 * x[:, :, None] * x[:, None, :]
    H = Hs.mean(0)
    ref = (Hs @ Hs).mean(0) - H @ H
    for method in ("vmap", "loop"):
        S = wb.curvature.hessian_variance(model, lambda m, b: losses.mse(m(b[0]), b[1]), (x, y), method=method,
                                          chunk=4)
        assert S.method == method and S.kind == "hessian_variance" and S.n_examples == 9
        torch.testing.assert_close(S.to_dense(), ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("loss,expect", [(loss_ce, "vmap"), (loss_onehot, "loop")])
def test_mlp_matches_dense_per_example_hessians(loss, expect):
    model = _mlp()
    x, y = _data()
    ref = _dense_sigma(model, loss, x, y)
    S = wb.curvature.hessian_variance(model, loss, (x, y), chunk=3)     # chunks of 3, 3, 1 examples
    D = S.to_dense()
    assert S.method == expect
    torch.testing.assert_close(D, ref, rtol=1e-9, atol=1e-11)
    torch.testing.assert_close(D, D.T, rtol=0, atol=1e-12)
    # the non-uniformity s = sqrt(λ_max(Σ)) by Lanczos equals the dense one
    res = wb.curvature.eigs(S, k=1, tol=1e-8)
    assert float(res.values[0]) == pytest.approx(float(torch.linalg.eigvalsh(ref)[-1]), rel=1e-7)


def test_loop_equals_vmap_and_batches_count_every_example_once():
    model = _mlp(2)
    x, y = _data(3, n=10)
    v = torch.randn(sum(p.numel() for p in model.parameters()), dtype=torch.float64)
    a = wb.curvature.hessian_variance(model, loss_ce, (x, y), method="vmap").matvec(v)
    b = wb.curvature.hessian_variance(model, loss_ce, (x, y), method="loop").matvec(v)
    c = wb.curvature.hessian_variance(model, loss_ce, [(x[:3], y[:3]), (x[3:], y[3:])]).matvec(v)
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(a, c, rtol=1e-10, atol=1e-12)


def test_parameter_subset_uses_the_sub_hessians():
    model = _mlp(4)
    x, y = _data(5)
    S = wb.curvature.hessian_variance(model, loss_ce, (x, y), params="2")
    ref = _dense_sigma(model, loss_ce, x, y, names={"2.weight", "2.bias"})
    assert S.size == 10
    torch.testing.assert_close(S.to_dense(), ref, rtol=1e-9, atol=1e-11)


def test_mse_onehot_is_vmappable_and_unchanged():
    out = torch.randn(5, 4, dtype=torch.float64)
    y = torch.tensor([0, 3, 1, 1, 2])
    ref = ((out - F.one_hot(y, 4).to(out.dtype)) ** 2).sum(-1).mean()
    torch.testing.assert_close(losses.mse_onehot(out, y), ref)
    per = torch.func.vmap(lambda o, t: losses.mse_onehot(o[None], t[None]))(out, y)
    torch.testing.assert_close(per.mean(), ref)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 6))
def test_sigma_is_positive_semidefinite(seed, n):
    model = _mlp(seed % 7)
    x, y = _data(seed, n=n)
    S = wb.curvature.hessian_variance(model, loss_ce, (x, y))
    ev = torch.linalg.eigvalsh(S.to_dense())
    assert float(ev[0]) >= -1e-10 * max(1.0, float(ev[-1]))
    if n == 1:                        # one example: H_1 = H, no spread
        assert float(ev.abs().max()) < 1e-10


def test_model_state_is_left_alone():
    model = _mlp(6, bn=True)
    x, y = _data(6, n=12)
    model.train()
    model(x)                                           # some running statistics
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    S = wb.curvature.hessian_variance(model, loss_ce, (x, y))
    S.matvec(torch.randn(S.size, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(torch.get_rng_state(), rng)


def test_bad_input():
    model = _mlp()
    x, y = _data()
    with pytest.raises(ValueError, match="mode"):
        wb.curvature.hessian_variance(model, loss_ce, (x, y), mode="train")
    with pytest.raises(ValueError, match="method"):
        wb.curvature.hessian_variance(model, loss_ce, (x, y), method="fast")
    with pytest.raises(ValueError, match="chunk"):
        wb.curvature.hessian_variance(model, loss_ce, (x, y), chunk=0)
    with pytest.raises(ValueError, match="data"):
        wb.curvature.hessian_variance(model, loss_ce, None)
    S = wb.curvature.hessian_variance(model, loss_onehot, (x, y), method="vmap")
    with pytest.raises(RuntimeError, match="method='loop'"):
        S.matvec(torch.zeros(S.size, dtype=torch.float64))
