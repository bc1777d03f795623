"""Random-subspace reparametrisation θ = θ₀ + P z (Li et al. 2018): outputs, gradients and Hessians against dense
references, the projections' documented column norms, isolation of the base problem, and input validation."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from scipy.linalg import hadamard
from torch import nn

import workbench as wb
from workbench.problems.base import Problem, seeded
from workbench.problems.subspace import FastfoodProjection, SubspaceModel, SubspaceProblem, make_projection

KINDS = ("dense", "sparse", "fastfood")


def _problem(dtype=torch.float32, **opts):
    opts = {"classes": 3, "dim": 4, "width": 5, "depth": 1, "n_train": 24, "n_test": 12, **opts}
    prob = wb.problems.make("gaussian-mixture", seed=3, **opts)
    if dtype != torch.float32:
        prob.model = prob.model.to(dtype)
    return prob


def _flat_loss_fn(model, loss, batch):
    """L(θ) for a flat θ, by functional_call on ``model`` (an ordinary module): the dense reference."""
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def f(theta):
        parts = torch.split(theta, sizes)
        params = {n: t.reshape(s) for n, t, s in zip(names, parts, shapes)}
        return loss(torch.func.functional_call(model, params, (batch[0],)), batch[1])
    return f


# -- outputs, gradients, Hessians --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_outputs_at_zero_equal_the_base_model(kind):
    prob = _problem()
    sp = wb.problems.subspace(prob, 7, projection=kind, seed=1)
    x, y = prob.data()
    assert [n for n, _ in sp.model.named_parameters()] == ["z"]
    assert sp.n_params == 7 and torch.equal(sp.model.z.detach(), torch.zeros(7))
    assert torch.equal(sp.model(x), prob.model(x))
    assert sp.loss(sp.model, (x, y)).item() == prob.loss(prob.model, (x, y)).item()
    assert sp.evaluate(sp.model, (x, y)) == prob.evaluate(prob.model, (x, y))
    assert torch.equal(sp.model.theta0(), torch.cat([p.detach().reshape(-1) for p in prob.model.parameters()]))


@pytest.mark.parametrize("kind", KINDS)
def test_outputs_equal_base_model_at_theta0_plus_Pz(kind):
    prob = _problem(torch.float64)
    sp = wb.problems.subspace(prob, 5, projection=kind, seed=2)
    with torch.no_grad():
        sp.model.z.copy_(torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    x = prob.data()[0].double()
    P = sp.projection.dense()
    theta = sp.model.theta0() + P @ sp.model.z.detach()
    assert torch.allclose(sp.model.theta().detach(), theta, atol=1e-12)
    ref = _flat_loss_fn(prob.model, lambda out, y: out, (x, None))(theta)
    assert torch.allclose(sp.model(x), ref, atol=1e-12)
    assert torch.allclose(sp.model.to_base()(x), ref, atol=1e-12)
    assert [n for n, _ in sp.model.to_base().named_parameters()] == [n for n, _ in prob.model.named_parameters()]


@pytest.mark.parametrize("kind", KINDS)
def test_gradient_in_z_is_P_transpose_grad_theta(kind):
    prob = _problem(torch.float64)
    sp = wb.problems.subspace(prob, 6, projection=kind, seed=4)
    with torch.no_grad():
        sp.model.z.copy_(0.3 * torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=torch.float64))
    x, y = prob.data()
    batch = (x.double(), y)
    loss = sp.loss(sp.model, batch)
    (gz,) = torch.autograd.grad(loss, [sp.model.z])
    theta = sp.model.theta().detach().requires_grad_(True)
    (gtheta,) = torch.autograd.grad(_flat_loss_fn(prob.model, prob.loss_fn, batch)(theta), [theta])
    P = sp.projection.dense()
    assert torch.allclose(gz, P.T @ gtheta, atol=1e-12, rtol=1e-10)
    assert torch.allclose(sp.projection.transpose(gtheta), P.T @ gtheta, atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("method", ["double-backward", "forward-over-reverse"])
def test_hessian_in_z_is_Pt_H_P(kind, method):
    prob = _problem(torch.float64)
    sp = wb.problems.subspace(prob, 9, projection=kind, seed=5)
    with torch.no_grad():
        sp.model.z.copy_(0.5 * torch.randn(9, generator=torch.Generator().manual_seed(2), dtype=torch.float64))
    x, y = prob.data()
    batch = (x.double(), y)
    theta = sp.model.theta().detach()
    H = torch.autograd.functional.hessian(_flat_loss_fn(prob.model, prob.loss_fn, batch), theta)
    P = sp.projection.dense()
    expected = P.T @ H @ P
    Hz = wb.curvature.hessian(sp.model, sp.loss, batch, method=method).to_dense()
    assert Hz.dtype == torch.float64
    assert torch.allclose(Hz, expected, atol=1e-8, rtol=0)
    # the same through the model's own forward with autograd (no workbench curvature code)
    Hz2 = torch.autograd.functional.hessian(
        lambda z: sp.loss_fn(torch.func.functional_call(sp.model, {"z": z}, (batch[0],)), y), sp.model.z.detach())
    assert torch.allclose(Hz2, expected, atol=1e-8, rtol=0)
    # the top eigenvalue the Sharpness probe would report
    top = wb.curvature.eigs(wb.curvature.hessian(sp.model, sp.loss, batch), k=1, tol=1e-10).values[0]
    assert float(top) == pytest.approx(float(torch.linalg.eigvalsh(expected)[-1]), rel=1e-6)


def test_batched_and_forward_mode_products_through_every_projection():
    for kind in KINDS:
        P = make_projection(kind, 37, 5, seed=3, dtype=torch.float64)
        Z = torch.randn(4, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        D = P.dense()
        assert torch.allclose(torch.func.vmap(P)(Z), Z @ D.T, atol=1e-12)
        assert torch.allclose(P(Z), Z @ D.T, atol=1e-12)
        _, tangent = torch.func.jvp(P, (Z[0],), (Z[1],))
        assert torch.allclose(tangent, D @ Z[1], atol=1e-12)


# -- projections ---------------------------------------------------------------------------------------------
def test_dense_columns_have_unit_norm_and_are_gaussian():
    P = make_projection("dense", 3000, 40, seed=0, dtype=torch.float64)
    D = P.dense()
    assert torch.allclose(P.column_norms(), torch.ones(40, dtype=torch.float64), atol=1e-12)
    # unit-norm Gaussian columns: entries ~ N(0, 1/n), nearly orthogonal columns (|cos| ~ 1/sqrt(n))
    assert float(D.std() * math.sqrt(3000)) == pytest.approx(1.0, abs=0.02)
    off = (D.T @ D - torch.eye(40, dtype=torch.float64)).abs().max()
    assert float(off) < 6 / math.sqrt(3000)
    assert torch.allclose(make_projection("dense", 200, 3, seed=0).column_norms(), torch.ones(3), atol=1e-6)


@pytest.mark.parametrize("n,d,k", [(1000, 30, None), (50, 8, 20), (12, 12, 12), (400, 20, 3)])
def test_sparse_columns_have_k_distinct_rows_and_unit_norm(n, d, k):
    P = make_projection("sparse", n, d, seed=7, dtype=torch.float64, nonzeros=k)
    kk = math.ceil(math.sqrt(n)) if k is None else k
    D = P.dense()
    assert ((D != 0).sum(0) == kk).all()
    assert torch.allclose(D[D != 0].abs(), torch.full(((D != 0).sum(),), 1 / math.sqrt(kk), dtype=torch.float64))
    assert torch.allclose(P.column_norms(), torch.ones(d, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(torch.linalg.vector_norm(D, dim=0), torch.ones(d, dtype=torch.float64), atol=1e-12)
    assert P.config()["nonzeros"] == kk


def test_sparse_memory_scales_with_dim_times_sqrt_n_not_n_times_dim():
    n, d = 400_000, 200
    P = make_projection("sparse", n, d, seed=0)
    assert P.nbytes <= d * math.ceil(math.sqrt(n)) * (8 + 4)
    assert P.nbytes < n * d * 4 / 100
    F_ = make_projection("fastfood", n, d, seed=0)
    assert F_.nbytes <= 16 * 2 ** 19 + 4 * 3 * 128 ** 2 and F_.nbytes < n * d * 4 / 30   # O(n), not O(n·d)
    z = torch.randn(d, generator=torch.Generator().manual_seed(0))
    for proj in (P, F_):
        out = proj(z)
        assert out.shape == (n,) and torch.isfinite(out).all()
        # random unit columns are nearly orthogonal: ||P z|| ~ ||z||
        assert float(out.norm() / z.norm()) == pytest.approx(1.0, abs=0.1)


def _fastfood_reference(P: FastfoodProjection) -> torch.Tensor:
    """s · (H G Π H B)[:n, :d] built from scipy's Hadamard matrix and explicit permutation/diagonal matrices."""
    L = P.L
    H = torch.as_tensor(hadamard(L), dtype=torch.float64)
    Pi = torch.zeros(L, L, dtype=torch.float64)
    Pi[torch.arange(L), P.perm] = 1.0                     # (Π x)_i = x[perm[i]]
    M = H @ torch.diag(P.G.double()) @ Pi @ H @ torch.diag(P.B.double())
    return float(P.scale) * M[:P.n, :P.d]


@pytest.mark.parametrize("n,d", [(1, 1), (2, 1), (5, 3), (64, 10), (300, 17)])
def test_fastfood_matches_its_definition(n, d):
    P = make_projection("fastfood", n, d, seed=11, dtype=torch.float64)
    assert P.L == 2 ** math.ceil(math.log2(n))
    assert torch.allclose(P.dense(), _fastfood_reference(P), atol=1e-12)


def test_fastfood_hadamard_factors_cover_large_lengths():
    P = make_projection("fastfood", 2 ** 17 + 3, 4, seed=0, dtype=torch.float64)   # L = 2^18: three factors
    assert len(P._factors) == 3 and math.prod(h.shape[0] for h in P._factors) == 2 ** 18
    e = torch.zeros(4, dtype=torch.float64)
    e[2] = 1.0
    col = P(e)
    # column 2 = s · H G Π (b_2 h_2) restricted to n rows; check against an explicit FWHT butterfly
    x = torch.zeros(P.L, dtype=torch.float64)
    x[2] = float(P.B[2])
    for y in (0, 1):
        h = 1
        while h < P.L:
            x = x.reshape(-1, 2, h)
            x = torch.cat([x[:, 0] + x[:, 1], x[:, 0] - x[:, 1]], 1).reshape(-1)
            h *= 2
        if y == 0:
            x = x[P.perm] * P.G.double()
    assert torch.allclose(col, float(P.scale) * x[:P.n], atol=1e-9)


def test_fastfood_column_norms_exact_for_powers_of_two_unit_in_expectation_otherwise():
    for n in (64, 512):
        P = make_projection("fastfood", n, min(n, 40), seed=3, dtype=torch.float64)
        assert torch.allclose(P.column_norms(), torch.ones(min(n, 40), dtype=torch.float64), atol=1e-12)
    sq = torch.cat([make_projection("fastfood", 700, 50, seed=s, dtype=torch.float64).column_norms() ** 2
                    for s in range(8)])
    assert float(sq.mean()) == pytest.approx(1.0, abs=0.03)     # 400 columns; the spread is ~2% per column
    assert 0.8 < float(sq.min()) and float(sq.max()) < 1.2


@settings(max_examples=25, deadline=None)
@given(kind=st.sampled_from(KINDS), n=st.integers(1, 300), data=st.data(), seed=st.integers(0, 2**31 - 1))
def test_projection_is_linear_and_transpose_is_its_adjoint(kind, n, data, seed):
    d = data.draw(st.integers(1, min(n, 12)))
    P = make_projection(kind, n, d, seed=seed, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed % 1000)
    z1, z2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    assert torch.allclose(P(2.0 * z1 - 3.0 * z2), 2.0 * P(z1) - 3.0 * P(z2), atol=1e-9)
    assert float(P(z1) @ v) == pytest.approx(float(z1 @ P.transpose(v)), abs=1e-9)
    if kind != "fastfood" or n & (n - 1) == 0:          # fastfood: exactly unit columns when n is a power of 2
        assert torch.allclose(P.column_norms(), torch.ones(d, dtype=torch.float64), atol=1e-9)


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_projection_other_seed_another(kind):
    a, b, c = (make_projection(kind, 500, 9, seed=s).dense() for s in (4, 4, 5))
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


# -- the model and the problem ------------------------------------------------------------------------------------
def test_base_problem_and_its_model_are_never_changed():
    prob = _problem()
    before = copy.deepcopy(prob.model.state_dict())
    names = [n for n, _ in prob.model.named_parameters()]
    sp = wb.problems.subspace(prob, 10, seed=0)
    run = wb.train(sp, "adam", lr=0.05, steps=30, progress=False)
    assert run.status == "finished"
    assert run.record.loss.values[-1] < run.record.loss.values[0]
    assert [n for n, _ in prob.model.named_parameters()] == names
    assert all(torch.equal(before[k], v) for k, v in prob.model.state_dict().items())
    assert all(p.requires_grad for p in prob.model.parameters())
    # the subspace problem's own model is a fresh copy at z = 0 (wb.train trains a copy)
    assert torch.equal(sp.model.z.detach(), torch.zeros(10))
    trained = run.model
    assert float(trained.z.detach().norm()) > 0
    # only z moved: θ₀ (buffers of the copy) is the base model's
    assert torch.equal(trained.theta0(), sp.model.theta0())


def test_training_in_subspace_is_reproducible_and_probes_work():
    prob = _problem()
    sp = wb.problems.subspace(prob, 12, projection="fastfood", seed=1)
    runs = [wb.train(sp, "gd", lr=0.5, steps=20, seed=0, progress=False,
                     probes=[wb.probes.Sharpness(every=10)]) for _ in range(2)]
    r0, r1 = (r.record for r in runs)
    assert np.array_equal(r0.loss.values, r1.loss.values)
    assert np.array_equal(r0.sharpness.values, r1.sharpness.values)
    # the probe's sharpness at step 0 is λ_max(Pᵀ H P) at θ₀
    batch = prob.data()
    theta = sp.model.theta0().double()
    base64 = copy.deepcopy(prob.model).double()
    H = torch.autograd.functional.hessian(_flat_loss_fn(base64, prob.loss_fn, (batch[0].double(), batch[1])), theta)
    P = sp.projection.apply(lambda t: t.double() if t.is_floating_point() else t).dense()
    lam = float(torch.linalg.eigvalsh(P.T @ H @ P)[-1])
    assert float(r0.sharpness.values[0]) == pytest.approx(lam, rel=2e-3)
    cfg = sp.config()
    assert cfg["subspace"] == {"projection": "fastfood", "n": prob.n_params, "dim": 12, "seed": 1}
    assert cfg["base"] == prob.config()


def test_dtype_and_device_conversion_carries_the_projection_and_copies_share_it():
    prob = _problem()
    sp = wb.problems.subspace(prob, 4, projection="sparse")
    m = copy.deepcopy(sp.model)
    assert m.projection is sp.model.projection           # immutable P is shared, not copied
    m = m.double()
    assert m.z.dtype == torch.float64 and m.projection.vals.dtype == torch.float64
    assert sp.model.projection.vals.dtype == torch.float32  # the original is untouched
    assert m.projection.rows.dtype == torch.int64
    x = prob.data()[0]
    assert torch.allclose(m(x.double()).float(), sp.model(x), atol=1e-6)
    assert m.to("cpu") is m


def test_new_model_seeds_theta0_from_the_base_problem():
    prob = _problem()
    sp = wb.problems.subspace(prob, 5)
    assert torch.equal(sp.new_model().theta0(), sp.model.theta0())
    other = sp.new_model(seed=9)
    ref = prob.new_model(seed=9)
    assert torch.equal(other.theta0(), torch.cat([p.detach().reshape(-1) for p in ref.parameters()]))
    assert other.projection is sp.model.projection
    assert isinstance(sp, SubspaceProblem) and isinstance(sp, Problem)
    assert "5-dimensional" in sp.describe() and "parameters: 5" in sp.describe()


def test_subspace_of_a_user_trained_model_starts_from_it():
    prob = _problem()
    run = wb.train(prob, "adam", lr=0.02, steps=20, progress=False)
    prob.model = run.model
    sp = wb.problems.subspace(prob, 3)
    x = prob.data()[0]
    assert torch.equal(sp.model(x), run.model(x))


class _TiedBN(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.bn = nn.BatchNorm1d(4)
        self.b = nn.Linear(4, 4)
        self.b.weight = self.a.weight          # tied
        self.head = nn.Linear(4, 3)
        self.head.bias.requires_grad_(False)   # frozen: stays at θ₀, not in the subspace

    def forward(self, x):
        return self.head(torch.tanh(self.b(self.bn(self.a(x)))))


def test_tied_frozen_and_batchnorm_models():
    base = seeded(0, _TiedBN).double()
    n_trainable = 16 + 4 + 4 + 4 + 4 + 12        # a.weight (tied with b.weight) once, a.bias, bn, b.bias, head.w
    model = SubspaceModel(base, make_projection("dense", n_trainable, 6, seed=0, dtype=torch.float64))
    x = torch.randn(10, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    base.eval()
    model.eval()
    assert model.n == n_trainable and torch.equal(model(x), base(x))
    with torch.no_grad():
        model.z.normal_()
    # the tie survives: θ for a.weight and b.weight is one tensor
    rebuilt = model.to_base()
    assert rebuilt.a.weight is rebuilt.b.weight and not rebuilt.head.bias.requires_grad
    assert torch.equal(rebuilt.head.bias, base.head.bias)
    assert torch.allclose(rebuilt(x), model(x), atol=1e-12)
    # train mode updates the running statistics held by the wrapper; curvature restores them
    model.train()
    stats = model.base.bn.running_mean.clone()
    H = wb.curvature.hessian(model, lambda m, b: m(b[0]).pow(2).mean(), (x, x), mode="train")
    H.matvec(torch.ones(6, dtype=torch.float64))
    assert torch.equal(model.base.bn.running_mean, stats) and model.training
    model(x)
    assert not torch.equal(model.base.bn.running_mean, stats)


def test_landscape_surface_on_a_subspace_model():
    import landscapes as ls

    prob = _problem()
    sp = wb.problems.subspace(prob, 4, projection="sparse")
    d = ls.directions.random(sp.model, n=2, norm="none", seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # vmap must not fall back to a loop
        surf = ls.surface(sp.model, sp.loss, prob.data(), d, span=1.0, steps=3)
    z = d.vectors[0] - d.vectors[1]
    m = copy.deepcopy(sp.model)
    with torch.no_grad():
        m.z.copy_(z)
    assert float(surf.sel(alpha=1.0, beta=-1.0)) == pytest.approx(sp.loss(m, prob.data()).item(), rel=1e-5)


# -- validation ---------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_errors_naming_the_field_and_range():
    prob = _problem()
    n = prob.n_params
    for bad in (0, -3, n + 1, 2.5, "7", True):
        with pytest.raises(ValueError, match=rf"dim.*\[1, {n}\]"):
            wb.problems.subspace(prob, bad)
    assert wb.problems.subspace(prob, n).n_params == n
    with pytest.raises(ValueError, match=r"projection='gauss'.*\['dense', 'sparse', 'fastfood'\]"):
        wb.problems.subspace(prob, 3, projection="gauss")
    with pytest.raises(ValueError, match=r"seed.*\[0, 2\.14748e\+09\]"):
        wb.problems.subspace(prob, 3, seed=-1)
    with pytest.raises(ValueError, match=r"nonzeros=0.*\[1, "):
        wb.problems.subspace(prob, 3, projection="sparse", nonzeros=0)
    with pytest.raises(ValueError, match="nonzeros applies only to projection='sparse'"):
        wb.problems.subspace(prob, 3, projection="dense", nonzeros=4)
    with pytest.raises(TypeError, match="problem must be a workbench Problem"):
        wb.problems.subspace(prob.model, 3)
    with pytest.raises(ValueError, match="2D test function"):
        wb.problems.subspace(wb.problems.make("rosenbrock"), 1)
    with pytest.raises(ValueError, match="z must have 3 entries"):
        make_projection("dense", 10, 3)(torch.zeros(4))
    with pytest.raises(ValueError, match="use projection='sparse' or 'fastfood'"):
        make_projection("dense", 2**20, 2**12)
    with pytest.raises(ValueError, match="projection maps to 10 entries"):
        SubspaceModel(prob.model, make_projection("dense", 10, 3))
