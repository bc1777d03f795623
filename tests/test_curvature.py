"""Curvature operators and Lanczos eigenvalues against dense references and closed forms."""
from __future__ import annotations

import math

import numpy as np
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import workbench as wb
from workbench.curvature import ConvergenceWarning, LinearOperator, eigs, fisher, ggn, hessian

from runutil import assert_same as _assert_same, snapshot as _snapshot


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


@pytest.mark.parametrize("tol", [0.3, 1e-2, 1e-3])
def test_eigs_tolerance_is_honoured(tol):
    # a clustered top of the spectrum (tanh MLP at init). The residual criterion guarantees every returned value
    # lies within tol * |value| of some eigenvalue; once tol is below the cluster's spread it is the right one
    prob = wb.problems.make("digits-mlp", seed=0, width=16, depth=1, n_train=300)
    x, y = prob.data()
    ref = torch.linalg.eigvalsh(hessian(prob.model.double(), prob.loss, (x.double(), y)).to_dense())
    top = ref.flip(0)[:3]
    for seed in range(2):
        res = eigs(hessian(prob.model, prob.loss, (x.double(), y)), k=3, tol=tol, seed=seed)
        assert res.converged
        nearest = (res.values[:, None] - ref[None, :]).abs().min(dim=1).values
        assert bool((nearest <= tol * res.values.abs()).all()), (tol, seed, nearest)
        assert bool((res.residuals <= tol * res.values.abs()).all())
        if tol <= 1e-2:
            assert bool(((res.values - top).abs() <= tol * top.abs()).all()), (tol, seed, res.values, top)


def test_eigs_warm_start_from_subspace_uses_fewer_products():
    prob = wb.problems.make("gaussian-mixture", seed=1, classes=3, dim=8, width=16, depth=1, n_train=200)
    H = hessian(prob.model, prob.loss, prob.data())
    cold = eigs(H, k=3, tol=1e-4)
    warm = eigs(H, k=3, tol=1e-4, v0=cold.vectors)
    warm1 = eigs(H, k=1, tol=1e-4, v0=cold.vectors[:, 0])
    assert warm.converged and warm1.converged
    assert warm.n_matvec < cold.n_matvec and warm1.n_matvec < cold.n_matvec
    torch.testing.assert_close(warm.values, cold.values, rtol=1e-3, atol=0)


def test_eigs_default_top_k_does_not_miss_a_late_eigenvalue():
    # the top of the benchmark MLP's Hessian spectrum (clustered) over a bulk: from some random starts the 5th Ritz
    # value converges to lambda_6 with a small residual before lambda_5 shows up (seed 30 here without a guard);
    # the default guard pair keeps iterating until that cannot pass unnoticed
    n = 2000
    top = torch.tensor([0.9411, 0.9209, 0.9148, 0.9102, 0.9076, 0.9052, 0.9030, 0.9010], dtype=torch.float64)
    lam = torch.cat([top, torch.rand(n - len(top), generator=torch.Generator().manual_seed(0),
                                     dtype=torch.float64) * 0.85])
    op = LinearOperator(lambda v: lam * v, n, torch.device("cpu"), torch.float64, matmat=lambda V: lam[:, None] * V)
    for seed in range(40):
        r = eigs(op, k=5, seed=seed)
        assert r.converged and r.values.shape == (5,) and r.vectors.shape == (n, 5) and r.residuals.shape == (5,)
        err = float((r.values - top[:5]).abs().max() / top[4])
        assert err <= 1e-3, f"seed {seed}: {r.values.tolist()} (a late eigenvalue was missed)"


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


@pytest.mark.parametrize("k,guard,basis", [(1, 0, 2), (1, 0, 3), (2, 1, 6), (3, 1, 8), (3, 0, 7)])
def test_eigs_smallest_basis_restarts_on_known_spectrum(k, guard, basis):
    """The smallest bases (memory-lean solves: 2 (k + guard), and a little more): the buffers hold max_basis rows,
    the solve restarts before each expansion, and it still converges to the known top-k."""
    n = 120
    lam = torch.linspace(1.0, -1.0, n, dtype=torch.float64) ** 3 * 5
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(k), dtype=torch.float64))
    A = Q @ torch.diag(lam) @ Q.T
    op = LinearOperator(lambda v: A @ v, n, dtype=torch.float64)
    res = eigs(op, k=k, guard=guard, tol=1e-8, max_basis=basis, max_iter=20000, warn=False)
    assert res.converged and res.n_restarts > 0
    torch.testing.assert_close(res.values, lam[:k], rtol=1e-6, atol=0)


@pytest.mark.parametrize("k,guard,basis", [(1, 0, 1), (2, 1, 5), (3, 1, 7), (3, 0, 5)])
def test_eigs_basis_too_small_to_converge_is_a_clear_error(k, guard, basis):
    op = LinearOperator(lambda v: 2.0 * v, 50, dtype=torch.float64)
    need = 2 * (k + guard)
    with pytest.raises(ValueError, match=rf"max_basis={basis} is out of range: max_basis must be an integer in "
                                         rf"\[{need}, inf\)"):
        eigs(op, k=k, guard=guard, max_basis=basis)


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


# -- GGN / Fisher ------------------------------------------------------------------------------------------------
def _dense_ggn(model, loss_fn, batch):
    x, y = batch
    J = dense_jacobian(model, x)
    out = model(x).detach()
    HL = torch.autograd.functional.hessian(lambda o: loss_fn(o.reshape(out.shape), y), out.reshape(-1))
    return J.T @ HL @ J


@pytest.mark.parametrize("kind", ["ce", "mse", "bce"])
def test_ggn_equals_JT_HL_J(kind):
    prob = {"ce": lambda: wb.problems.make("gaussian-mixture", seed=0, classes=3, dim=4, width=5, depth=1,
                                           n_train=30),
            "mse": lambda: wb.problems.make("teacher-student", seed=0, dim=3, width=5, depth=1, n_train=30),
            "bce": lambda: wb.problems.make("xor", seed=0, width=5, depth=1, n_train=30)}[kind]()
    model = prob.model.double()
    x, y = prob.data()
    batch = (x.double(), y.double() if y.is_floating_point() else y)
    G = ggn(model, prob.loss, batch).to_dense()
    torch.testing.assert_close(G, _dense_ggn(model, prob.loss_fn, batch), rtol=1e-9, atol=1e-12)
    # passing the Problem itself or the output loss explicitly gives the same operator
    torch.testing.assert_close(ggn(model, prob, batch).to_dense(), G)
    torch.testing.assert_close(ggn(model, None, batch, loss_fn=prob.loss_fn).to_dense(), G)


def test_ggn_equals_hessian_for_linear_model_with_squared_error():
    prob = wb.problems.make("teacher-student", seed=1, dim=5, depth=0, n_train=40)
    x, y = prob.data()
    H = hessian(prob.model, prob.loss, (x, y)).to_dense()
    torch.testing.assert_close(ggn(prob.model, prob.loss, (x, y)).to_dense(), H, rtol=1e-5, atol=1e-6)


def test_monte_carlo_ggn_is_unbiased_and_psd():
    prob = wb.problems.make("gaussian-mixture", seed=0, classes=3, dim=3, width=4, depth=1, n_train=40)
    model = prob.model.double()
    x, y = prob.data()
    batch = (x.double(), y)
    G = ggn(model, prob.loss, batch).to_dense()
    mc = ggn(model, prob.loss, batch, mc_samples=4000, seed=0).to_dense()
    assert torch.linalg.eigvalsh(mc).min() > -1e-10
    rel = float((mc - G).norm() / G.norm())
    assert rel < 0.05, rel                 # Monte-Carlo error ~ 1/sqrt(4000) per example, averaged over 40
    one = ggn(model, prob.loss, batch, mc_samples=1, seed=0).to_dense()
    assert torch.linalg.matrix_rank(one) <= x.shape[0]
    # the generic H^{1/2} z sampler (squared error) is unbiased too
    ts = wb.problems.make("teacher-student", seed=0, dim=3, width=4, depth=1, n_train=40)
    tm, (tx, ty) = ts.model.double(), ts.data()
    Gt = ggn(tm, ts.loss, (tx.double(), ty.double())).to_dense()
    mct = ggn(tm, ts.loss, (tx.double(), ty.double()), mc_samples=4000).to_dense()
    assert float((mct - Gt).norm() / Gt.norm()) < 0.05
    # and the Bernoulli sampler of the logistic loss
    bx = wb.problems.make("xor", seed=0, width=4, depth=1, n_train=40)
    bm, (bxx, byy) = bx.model.double(), bx.data()
    Gb = ggn(bm, bx.loss, (bxx.double(), byy)).to_dense()
    mcb = ggn(bm, bx.loss, (bxx.double(), byy), mc_samples=4000).to_dense()
    assert ggn(bm, bx.loss, (bxx.double(), byy), mc_samples=2).attrs["loss_kind"] == "bernoulli"
    assert float((mcb - Gb).norm() / Gb.norm()) < 0.05


def test_empirical_fisher_equals_mean_outer_product_of_per_example_gradients():
    prob = wb.problems.make("gaussian-mixture", seed=2, classes=3, dim=3, width=4, depth=1, n_train=25)
    model = prob.model.double()
    x, y = prob.data()
    x = x.double()
    keys, ps = _names_params(model)
    rows = []
    for i in range(x.shape[0]):
        gi = torch.func.grad(lambda *qs: F.cross_entropy(
            torch.func.functional_call(model, dict(zip(keys, qs)), (x[i:i + 1],)), y[i:i + 1]),
            argnums=tuple(range(len(ps))))(*ps)
        rows.append(torch.cat([g.reshape(-1) for g in gi]))
    Gm = torch.stack(rows)
    Fd = Gm.T @ Gm / x.shape[0]
    torch.testing.assert_close(fisher(model, prob.loss, (x, y)).to_dense(), Fd, rtol=1e-9, atol=1e-12)
    # weighted over batches of unequal size
    torch.testing.assert_close(fisher(model, prob.loss, [(x[:7], y[:7]), (x[7:], y[7:])]).to_dense(), Fd,
                               rtol=1e-9, atol=1e-12)


def test_ggn_needs_an_output_loss():
    model, batch = _tiny()
    with pytest.raises(TypeError, match="loss_fn"):
        ggn(model, _ce, batch)


# -- models are never changed ------------------------------------------------------------------------------------
class _BNDrop(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(4, 8)
        self.bn = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.3)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.bn(self.fc1(x)))))


@pytest.mark.parametrize("model_mode", ["train", "eval"])
@pytest.mark.parametrize("op_mode", ["train", "eval", None])
def test_batchnorm_dropout_model_is_never_changed(model_mode, op_mode):
    torch.manual_seed(0)
    model = _BNDrop()
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    model.train()
    model(x)                                            # non-trivial running statistics
    F.cross_entropy(model(x), y).backward()              # existing gradients must survive
    model.train(model_mode == "train")
    snap = _snapshot(model)
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    ops = []
    for method in ("double-backward", "forward-over-reverse"):
        for data in ((x, y), batches):
            H = hessian(model, _ce, data, mode=op_mode, method=method)
            _assert_same(model, snap)
            ops.append(H)
    ops.append(ggn(model, None, (x, y), mode=op_mode, loss_fn=F.cross_entropy))
    ops.append(ggn(model, None, batches, mode=op_mode, loss_fn=F.cross_entropy, mc_samples=2))
    ops.append(fisher(model, None, (x, y), mode=op_mode, loss_fn=F.cross_entropy))
    _assert_same(model, snap)
    v = torch.randn(ops[0].size, generator=torch.Generator().manual_seed(3))
    for op in ops:
        a = op.matvec(v)
        _assert_same(model, snap)
        b = op.matvec(v)                                 # a fixed linear map even with dropout in train mode
        torch.testing.assert_close(a, b)
        op.matmat(torch.stack([v, 2 * v], 1))
        _assert_same(model, snap)
    H = ops[1]
    wb.curvature.eigs(H, k=2, tol=1e-2)
    wb.curvature.spectral_density(H, probes=2, steps=5)
    wb.curvature.trace(H, n=9)
    wb.curvature.diagonal(H, n=4)
    _assert_same(model, snap)
    # the two methods and the single/multi-batch paths give the same operator (same dropout seeds per batch)
    torch.testing.assert_close(ops[0].matvec(v), ops[2].matvec(v), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ops[1].matvec(v), ops[3].matvec(v), rtol=1e-4, atol=1e-5)


def test_train_mode_uses_batch_statistics_eval_mode_running_statistics():
    torch.manual_seed(0)
    model = _BNDrop()
    model.drop.p = 0.0
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    with torch.no_grad():
        model.bn.running_mean.fill_(0.5)
        model.bn.running_var.fill_(2.0)
    v = torch.randn(sum(p.numel() for p in model.parameters()), generator=torch.Generator().manual_seed(0))
    he = hessian(model, _ce, (x, y), mode="eval").matvec(v)
    ht = hessian(model, _ce, (x, y), mode="train").matvec(v)
    assert not torch.allclose(he, ht)
    model.eval()
    torch.testing.assert_close(hessian(model, _ce, (x, y), mode=None).matvec(v), he)
    assert not model.training


# -- SLQ, trace, diagonal ----------------------------------------------------------------------------------------
def _quadratic(spectrum, seed=0, dtype=torch.float64):
    n = len(spectrum)
    lam = torch.as_tensor(spectrum, dtype=dtype)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=torch.Generator().manual_seed(seed), dtype=dtype))
    A = Q @ torch.diag(lam) @ Q.T
    return LinearOperator(lambda v: A @ v, n, dtype=dtype, matmat=lambda V: A @ V), A


def test_slq_density_puts_its_mass_on_the_known_eigenvalues():
    # 200 eigenvalues at 1, 60 at 4, 40 at 10: SLQ quadrature is exact on a spectrum with 3 distinct values
    spec = [1.0] * 200 + [4.0] * 60 + [10.0] * 40
    op, _ = _quadratic(spec)
    d = wb.curvature.spectral_density(op, probes=16, steps=20, seed=0)
    x = d["eigenvalue"].values
    assert d.dims == ("eigenvalue",)
    assert abs(float(d.integrate("eigenvalue")) - 1.0) < 1e-6
    sigma = d.attrs["sigma"]
    nodes, w = d.attrs["nodes"], d.attrs["weights"] / d.attrs["probes"]
    for lam, frac in [(1.0, 200 / 300), (4.0, 60 / 300), (10.0, 40 / 300)]:
        near = np.abs(nodes - lam) < 1e-6
        assert abs(w[near].sum() - frac) < 4 * math.sqrt(frac * (1 - frac) / (16 * 300)) + 0.02, lam
        win = (x > lam - 4 * sigma) & (x < lam + 4 * sigma)
        assert abs(np.trapezoid(d.values[win], x[win]) - frac) < 0.05
    assert w[~(np.isclose(nodes, 1) | np.isclose(nodes, 4) | np.isclose(nodes, 10))].sum() < 1e-8
    assert d.attrs["n_matvec"] <= 16 * 20


def test_slq_on_a_continuous_spectrum_matches_the_histogram():
    spec = np.linspace(-1.0, 3.0, 500)
    op, _ = _quadratic(spec)
    d = wb.curvature.spectral_density(op, probes=8, steps=40, seed=1)
    assert abs(float(d.integrate("eigenvalue")) - 1.0) < 1e-6
    x = d["eigenvalue"].values
    cdf = np.cumsum(d.values) * (x[1] - x[0])
    for q in (0.0, 1.0, 2.0):
        assert abs(np.interp(q, x, cdf) - (q + 1) / 4) < 0.06
    neg = wb.curvature.negative_mass(op, probes=8, steps=40, seed=1)
    assert abs(neg.fraction - 0.25) < 4 * neg.fraction_stderr + 0.03
    true_ratio = np.abs(spec[spec < 0]).sum() / np.abs(spec).sum()
    assert abs(neg.magnitude_ratio - true_ratio) < 4 * neg.magnitude_ratio_stderr + 0.03


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trace_within_three_standard_errors(method, seed):
    spec = np.concatenate([[40.0, 25.0, 10.0], np.random.default_rng(seed).uniform(-0.5, 1.0, 297)])
    op, A = _quadratic(spec, seed=seed)
    res = wb.curvature.trace(op, method=method, n=60, seed=seed)
    assert res.stderr > 0 and res.n_matvec == 60
    assert abs(res.value - spec.sum()) <= 3 * res.stderr
    if method == "hutch++":   # deflating the outliers shrinks the error bar well below plain Hutchinson's
        h = wb.curvature.trace(op, method="hutchinson", n=60, seed=seed)
        assert res.stderr < 0.5 * h.stderr


def test_trace_and_diagonal_on_a_network_hessian():
    model, batch = _tiny(seed=4)
    H = hessian(model, _ce, batch)
    D = H.to_dense()
    tr = wb.curvature.trace(H, method="hutchinson", n=400)
    assert abs(tr.value - float(torch.trace(D))) <= 3.5 * tr.stderr
    dg = wb.curvature.diagonal(H, n=400, seed=1)
    z = (dg.value - torch.diagonal(D)) / dg.stderr.clamp(min=1e-12)
    assert float((z.abs() > 3.5).double().mean()) < 0.05
    assert wb.curvature.trace(H, method="hutch++", n=3 * H.size).stderr == 0.0


def test_derived_quantities():
    spec = [5.0, 4.0, 2.0, 1.0] + [0.1] * 96 + [-0.7]
    op, _ = _quadratic(spec)
    lmin, r = wb.curvature.lambda_min(op, tol=1e-8)
    assert abs(lmin + 0.7) < 1e-6 and r.converged
    kappa, r = wb.curvature.condition_number(op, k=3, tol=1e-8)
    assert abs(kappa - 2.5) < 1e-6
    kappa, _ = wb.curvature.condition_number(op, k=10, tol=1e-6)
    assert kappa == pytest.approx(50.0, rel=1e-4)
    with pytest.raises(ValueError, match="probes"):
        wb.curvature.spectral_density(op, probes=0)
    with pytest.raises(ValueError, match="method"):
        wb.curvature.trace(op, method="exact")


# -- property tests for bad input ----------------------------------------------------------------------------------
from hypothesis import given, settings, strategies as st  # noqa: E402

_OP = LinearOperator(lambda v: 2.0 * v, 7, dtype=torch.float64, matmat=lambda V: 2.0 * V)


@settings(max_examples=40, deadline=None)
@given(k=st.one_of(st.integers(max_value=0), st.integers(min_value=8)))
def test_eigs_rejects_k_outside_1_to_n(k):
    with pytest.raises(ValueError, match="k="):
        eigs(_OP, k=k)


@settings(max_examples=40, deadline=None)
@given(which=st.text(max_size=4).filter(lambda s: s not in ("LA", "SA", "LM")))
def test_eigs_rejects_unknown_which(which):
    with pytest.raises(ValueError, match="which"):
        eigs(_OP, which=which)


@settings(max_examples=40, deadline=None)
@given(i=st.integers(0, 6), bad=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_non_finite_vectors_are_rejected(i, bad):
    v = torch.ones(7, dtype=torch.float64)
    v[i] = bad
    with pytest.raises(ValueError, match="non-finite"):
        _OP.matvec(v)
    with pytest.raises(ValueError, match="non-finite"):
        _OP.matmat(v[:, None])
    with pytest.raises(ValueError, match="non-finite"):
        eigs(_OP, v0=v)


@settings(max_examples=25, deadline=None)
@given(tol=st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0001), st.just(float("nan"))))
def test_eigs_rejects_bad_tolerance(tol):
    with pytest.raises(ValueError, match="tol"):
        eigs(_OP, tol=tol)


def test_identity_like_operator_converges_immediately():
    res = eigs(_OP, k=3, which="SA")
    assert res.converged
    torch.testing.assert_close(res.values, torch.full((3,), 2.0, dtype=torch.float64))
