"""Curvature operators and Lanczos eigenvalues against dense references and closed forms."""
from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import workbench as wb
from workbench.curvature import ConvergenceWarning, LinearOperator, eigs, fisher, ggn, hessian


# -- dense references --------------------------------------------------------------------------------------------
def _ce(m, b):
    return F.cross_entropy(m(b[0]), b[1])


def _tiny(seed=0, dtype=torch.float64, act="tanh", n=40, d=5, h=6, c=3):
    g = torch.Generator().manual_seed(seed)
    model = wb.problems.base.seeded(seed, lambda: wb.problems.models.mlp(d, c, [h], act)).to(dtype)
    x = torch.randn(n, d, generator=g, dtype=dtype)
    y = torch.randint(0, c, (n,), generator=g)
    return model, (x, y)


def _names_params(model, names=None):
    named = [(k, p) for k, p in model.named_parameters() if names is None or k in names]
    return [k for k, _ in named], [p.detach() for _, p in named]


def dense_hessian(model, loss, batch, names=None):
    keys, ps = _names_params(model, names)
    others = {k: p.detach() for k, p in model.named_parameters() if k not in keys}

    def f(*qs):
        out = torch.func.functional_call(model, {**others, **dict(zip(keys, qs))}, (batch[0],))
        return loss(out, batch[1])

    Hb = torch.autograd.functional.hessian(f, tuple(ps))
    sizes = [p.numel() for p in ps]
    return torch.cat([torch.cat([Hb[i][j].reshape(sizes[i], sizes[j]) for j in range(len(ps))], 1)
                      for i in range(len(ps))], 0)


def dense_jacobian(model, x):
    keys, ps = _names_params(model)

    def f(*qs):
        return torch.func.functional_call(model, dict(zip(keys, qs)), (x,)).reshape(-1)

    J = torch.autograd.functional.jacobian(f, tuple(ps))
    return torch.cat([j.reshape(j.shape[0], -1) for j in J], 1)


# -- Hessian operator ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["double-backward", "forward-over-reverse"])
@pytest.mark.parametrize("act", ["tanh", "gelu"])
def test_hessian_matvec_matches_dense(method, act):
    model, batch = _tiny(act=act)
    H = hessian(model, _ce, batch, method=method)
    D = dense_hessian(model, F.cross_entropy, batch)
    assert H.size == D.shape[0] == sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    v = torch.randn(H.size, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H.matvec(v), D @ v, rtol=1e-10, atol=1e-12)
    V = torch.randn(H.size, 4, generator=g, dtype=torch.float64)
    torch.testing.assert_close(H.matmat(V), D @ V, rtol=1e-10, atol=1e-12)
    assert H.n_matvec == 5


def test_hessian_methods_agree_in_float32():
    prob = wb.problems.make("gaussian-mixture", seed=0, classes=3, dim=4, width=8, depth=1, n_train=64)
    x, y = prob.data()
    v = torch.randn(prob.n_params, generator=torch.Generator().manual_seed(0))
    a = hessian(prob.model, prob.loss, (x, y), method="double-backward").matvec(v)
    b = hessian(prob.model, prob.loss, (x, y), method="forward-over-reverse").matvec(v)
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_linear_regression_hessian_is_2XtX_over_n():
    prob = wb.problems.make("teacher-student", seed=3, dim=6, depth=0, n_train=50)
    x, y = prob.data()
    H = hessian(prob.model.double(), prob.loss, (x.double(), y.double()))
    X1 = torch.cat([x.double(), torch.ones(x.shape[0], 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(H.to_dense(), 2 * X1.T @ X1 / x.shape[0], rtol=1e-10, atol=1e-12)


def test_multi_batch_weighted_by_size_equals_full_batch():
    model, (x, y) = _tiny(n=37)
    full = hessian(model, _ce, (x, y)).to_dense()
    batches = [(x[:5], y[:5]), (x[5:25], y[5:25]), (x[25:], y[25:])]
    for method in ("double-backward", "forward-over-reverse"):
        op = hessian(model, _ce, batches, method=method)
        assert op.n_examples == 37
        torch.testing.assert_close(op.to_dense(), full, rtol=1e-10, atol=1e-12)
    gen = (b for b in batches)          # a one-shot iterable is materialised once
    torch.testing.assert_close(hessian(model, _ce, gen).to_dense(), full, rtol=1e-10, atol=1e-12)


def test_parameter_subset_is_the_dense_block():
    model, batch = _tiny()
    D = dense_hessian(model, F.cross_entropy, batch)
    sizes = [p.numel() for p in model.parameters()]        # 0.weight, 0.bias, 2.weight, 2.bias
    lo = sizes[0] + sizes[1]
    for sel in ("2", ["2.weight", "2.bias"], "2.*", [model[2].weight, model[2].bias]):
        op = hessian(model, _ce, batch, params=sel)
        assert op.param_names == ["2.weight", "2.bias"]
        torch.testing.assert_close(op.to_dense(), D[lo:, lo:], rtol=1e-10, atol=1e-12)
    op = hessian(model, _ce, batch, params="*.bias")
    idx = torch.cat([torch.arange(sizes[0], lo), torch.arange(lo + sizes[2], sum(sizes))])
    torch.testing.assert_close(op.to_dense(), D[idx][:, idx], rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="params"):
        hessian(model, _ce, batch, params="nope")


# -- eigs ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
def test_eigs_top_and_bottom_k_match_eigvalsh(which):
    model, batch = _tiny(seed=2, h=8)
    H = hessian(model, _ce, batch)
    ev = torch.linalg.eigvalsh(dense_hessian(model, F.cross_entropy, batch))
    k = 4
    res = eigs(H, k=k, which=which, tol=1e-6)
    ref = {"LA": ev.flip(0)[:k], "SA": ev[:k], "LM": ev[ev.abs().argsort(descending=True)][:k]}[which]
    assert res.converged
    assert res.values.shape == (k,) and res.vectors.shape == (H.size, k) and res.residuals.shape == (k,)
    torch.testing.assert_close(res.values, ref, rtol=1e-4, atol=0)
    # Ritz vectors are orthonormal and the reported residuals are the true ones
    torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(k, dtype=torch.float64), atol=1e-8, rtol=0)
    D = dense_hessian(model, F.cross_entropy, batch)
    true_res = (D @ res.vectors - res.vectors * res.values).norm(dim=0)
    torch.testing.assert_close(res.residuals, true_res, atol=1e-8, rtol=1e-3)
    assert res.n_matvec <= H.size + k


def test_eigs_default_top_eigenvalue_within_1e3_on_float32_models():
    for name, opts in [("gaussian-mixture", dict(classes=4, dim=6, width=10, depth=2, n_train=200)),
                       ("digits-mlp", dict(width=6, depth=1, n_train=300)),
                       ("spirals", dict(width=12, depth=2, n_train=200))]:
        prob = wb.problems.make(name, seed=0, **opts)
        x, y = prob.data()
        H = hessian(prob.model, prob.loss, (x, y))
        res = eigs(H)
        ref = torch.linalg.eigvalsh(hessian(prob.model.double(), prob.loss, (x.double(), y)).to_dense())
        assert res.converged
        assert abs(float(res.values[0]) - float(ref[-1])) <= 1e-3 * abs(float(ref[-1])), name


def test_eigs_warm_start_from_subspace_uses_fewer_products():
    prob = wb.problems.make("gaussian-mixture", seed=1, classes=3, dim=8, width=16, depth=1, n_train=200)
    H = hessian(prob.model, prob.loss, prob.data())
    cold = eigs(H, k=3, tol=1e-4)
    warm = eigs(H, k=3, tol=1e-4, v0=cold.vectors)
    warm1 = eigs(H, k=1, tol=1e-4, v0=cold.vectors[:, 0])
    assert warm.converged and warm1.converged
    assert warm.n_matvec < cold.n_matvec and warm1.n_matvec < cold.n_matvec
    torch.testing.assert_close(warm.values, cold.values, rtol=1e-3, atol=0)


def test_eigs_warns_when_not_converged():
    prob = wb.problems.make("gaussian-mixture", seed=1, classes=3, dim=8, width=16, depth=1, n_train=200)
    H = hessian(prob.model, prob.loss, prob.data())
    with pytest.warns(ConvergenceWarning, match="did not converge"):
        res = eigs(H, k=3, tol=1e-9, max_iter=4)
    assert not res.converged and res.n_matvec <= 4


def test_eigs_thick_restart_on_known_spectrum():
    n = 400
    lam = torch.linspace(1.0, -1.0, n, dtype=torch.float64) ** 3      # clustered top: needs many restarts
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    op = LinearOperator(lambda v: A @ v, n, dtype=torch.float64, matmat=lambda V: A @ V)
    res = eigs(op, k=3, tol=1e-10, max_basis=12, max_iter=2000)
    assert res.converged and res.n_restarts > 0
    torch.testing.assert_close(res.values, lam[:3], rtol=1e-8, atol=0)
    assert op.n_matvec == res.n_matvec


# -- bad input -----------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    model, batch = _tiny()
    H = hessian(model, _ce, batch)
    with pytest.raises(ValueError, match="k=.*out of range"):
        eigs(H, k=H.size + 1)
    with pytest.raises(ValueError, match="which"):
        eigs(H, which="BE")
    with pytest.raises(ValueError, match="non-finite"):
        H.matvec(torch.full((H.size,), float("nan"), dtype=torch.float64))
    with pytest.raises(ValueError, match="non-finite"):
        eigs(H, v0=torch.full((H.size,), float("inf"), dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        H.matvec(torch.ones(H.size + 1, dtype=torch.float64))
    with pytest.raises(ValueError, match="empty"):
        hessian(model, _ce, [])
    with pytest.raises(ValueError, match="empty"):
        hessian(model, _ce, (batch[0][:0], batch[1][:0]))
    with pytest.raises(ValueError, match="mode"):
        hessian(model, _ce, batch, mode="test")
    with pytest.raises(ValueError, match="method"):
        hessian(model, _ce, batch, method="finite-differences")
