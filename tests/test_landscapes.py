"""landscapes: closed-form surfaces, filter normalization, vmap/loop/chunk agreement, trajectories, connectivity,
model preservation and input validation."""
from __future__ import annotations

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import landscapes as ls
import workbench as wb
from workbench.problems.base import seeded


# -- fixtures -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def linreg():
    """A linear model with MSE: the loss along any plane is an exact quadratic."""
    return wb.problems.make("teacher-student", seed=0, depth=0, n_train=64, n_test=16)


@pytest.fixture(scope="module")
def spirals():
    return wb.problems.make("spirals", seed=0, n_train=120, n_test=40)


def bn_model(seed=0):
    return seeded(seed, lambda: nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.3),
                                              nn.Linear(8, 2)))


def bn_data(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g), torch.randint(0, 2, (n,), generator=g)


def ce_loss(model, batch):
    return F.cross_entropy(model(batch[0]), batch[1])


def explicit(model, vectors, center=None, kind="given"):
    from landscapes._core import trainable
    ps = trainable(model)
    return ls.Directions(torch.as_tensor(vectors, dtype=torch.float32), [k for k, _ in ps], [p.shape for _, p in ps],
                         kind, None if center is None else torch.as_tensor(center, dtype=torch.float32))


# -- closed forms -------------------------------------------------------------------------------------------
def test_function_problem_surface_equals_analytic():
    prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0, angle=30.0, x0=0.4, y0=-0.3)
    d = explicit(prob.model, [[1.0, 0.5], [-0.2, 1.0]])
    surf = ls.surface(prob.model, prob.loss, prob.data(), d, span=1.5, steps=9)
    a, b = np.meshgrid(surf.alpha.values, surf.beta.values, indexing="ij")
    pts = np.array([0.4, -0.3]) + a[..., None] * np.array([1.0, 0.5]) + b[..., None] * np.array([-0.2, 1.0])
    exact = prob.function(torch.from_numpy(pts)).numpy()
    np.testing.assert_allclose(surf.values, exact, rtol=1e-5, atol=1e-6)
    assert surf.dims == ("alpha", "beta") and surf.shape == (9, 9)
    assert surf.attrs["alpha_norm"] == pytest.approx(math.hypot(1.0, 0.5), rel=1e-6)


def test_linear_mse_surface_is_the_exact_quadratic(linreg):
    model = linreg.model
    x, y = linreg.data()
    d = ls.directions.random(model, n=2, norm="filter", seed=3, ignore=())
    surf = ls.surface(model, linreg.loss, (x, y), d, span=2.0, steps=7)
    w, b = [p.detach().double() for p in model.parameters()]
    (d1w, d1b), (d2w, d2b) = [(v[:w.numel()].reshape(w.shape).double(), v[w.numel():].double()) for v in d.vectors]
    X, Y = x.double(), y.double().reshape(-1)
    r0 = (X @ w.T + b).reshape(-1) - Y
    r1 = (X @ d1w.T + d1b).reshape(-1)
    r2 = (X @ d2w.T + d2b).reshape(-1)
    A = surf.alpha.values[:, None, None]
    B = surf.beta.values[None, :, None]
    exact = ((r0.numpy() + A * r1.numpy() + B * r2.numpy()) ** 2).mean(-1)
    np.testing.assert_allclose(surf.values, exact, rtol=2e-5)


def test_function_surface_and_exact_path():
    prob = wb.problems.make("rosenbrock")
    fs = ls.function_surface(prob, steps=31)
    X, Y = np.meshgrid(fs.x.values, fs.y.values)
    np.testing.assert_allclose(fs.values, (1 - X) ** 2 + 100 * (Y - X ** 2) ** 2, rtol=1e-12)
    run = wb.train(prob, "gd", lr=1e-3, steps=30, probes=[wb.probes.Trajectory(every=1)])
    fig = ls.plot(fs, trajectory=run.record, log=True)
    path = [t for t in fig.data if t.type == "scatter" and t.mode == "lines+markers"][0]
    np.testing.assert_allclose(np.asarray(path.x), run.record.trajectory.values[:, 0])
    np.testing.assert_allclose(np.asarray(path.y), run.record.trajectory.values[:, 1])
    np.testing.assert_allclose(fig.data[0].z, np.log10(fs.values))


# -- directions ---------------------------------------------------------------------------------------------
def _convnet():
    return seeded(1, lambda: nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(),
                                           nn.Linear(6 * 4 * 4, 5)))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_filter_normalized_directions_match_filter_norms(seed):
    model = _convnet()
    d = ls.directions.random(model, n=2, norm="filter", seed=seed)
    for vec in d.as_dicts():
        for name, p in model.named_parameters():
            v = vec[name]
            if name.endswith("bias") or name.startswith("1."):      # biases and BatchNorm: zeroed (Li et al.)
                assert torch.count_nonzero(v) == 0
            else:
                dn = v.reshape(v.shape[0], -1).norm(dim=1)
                wn = p.detach().reshape(p.shape[0], -1).norm(dim=1)
                torch.testing.assert_close(dn, wn, rtol=1e-5, atol=1e-7)


def test_layer_model_none_norms_and_ignore():
    model = _convnet()
    params = dict(model.named_parameters())
    d = ls.directions.random(model, n=1, norm="layer", seed=0, ignore=())
    for name, v in d.as_dicts()[0].items():
        assert float(v.norm()) == pytest.approx(float(params[name].detach().norm()), rel=1e-5)
    d = ls.directions.random(model, n=1, norm="model", seed=0, ignore=())
    theta = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    assert d.norms[0] == pytest.approx(float(theta.norm()), rel=1e-5)
    raw = ls.directions.random(model, n=1, norm=None, seed=0, ignore=())
    g = torch.Generator().manual_seed(0)
    expect = torch.cat([torch.randn(p.shape, generator=g).reshape(-1) for p in model.parameters()])
    torch.testing.assert_close(raw.vectors[0], expect)
    only_bias = ls.directions.random(model, n=1, norm="filter", seed=0, ignore="bias").as_dicts()[0]
    assert torch.count_nonzero(only_bias["1.weight"]) > 0 and torch.count_nonzero(only_bias["0.bias"]) == 0


def test_random_directions_are_seeded_and_leave_rng_alone():
    model = _convnet()
    state = torch.get_rng_state()
    a = ls.directions.random(model, seed=5)
    b = ls.directions.random(model, seed=5)
    c = ls.directions.random(model, seed=6)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.vectors, b.vectors) and not torch.equal(a.vectors, c.vectors)


def test_hessian_directions_are_the_quadratic_eigenvectors():
    pytest.importorskip("workbench.curvature")
    prob = wb.problems.make("quadratic", lambda1=1.0, lambda2=10.0, angle=30.0)
    d = ls.directions.hessian(prob.model, prob.loss, prob.data(), n=2)
    assert d.meta["eigenvalues"] == pytest.approx([10.0, 1.0], rel=1e-4)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    assert abs(float(d.vectors[0] @ torch.tensor([-s, c]))) == pytest.approx(1.0, abs=1e-4)
    assert abs(float(d.vectors[1] @ torch.tensor([c, s]))) == pytest.approx(1.0, abs=1e-4)
    surf = ls.surface(prob.model, prob.loss, prob.data(), d, span=1.0, steps=5)
    f0 = float(prob.loss(prob.model, prob.data()).detach())
    # f(θ0 + a v1 + b v2) = f0 + a g·v1 + b g·v2 + (10 a^2 + b^2)/2 exactly
    theta = prob.model.theta.detach().double()
    H = torch.tensor([[c * c + 10 * s * s, (1 - 10) * c * s], [(1 - 10) * c * s, s * s + 10 * c * c]], dtype=torch.float64)
    grad = H @ theta
    V = d.vectors.double()
    A, B = np.meshgrid(surf.alpha.values, surf.beta.values, indexing="ij")
    exact = f0 + A * float(grad @ V[0]) + B * float(grad @ V[1]) + 0.5 * (10 * A ** 2 + B ** 2)
    np.testing.assert_allclose(surf.values, exact, rtol=1e-4, atol=1e-5)


def test_orthogonalize_keeps_norms_and_makes_orthogonal():
    model = _convnet()
    d = ls.directions.random(model, n=3, seed=1, orthogonal=True)
    V = d.vectors.double()
    G = V @ V.T
    off = G - torch.diag(torch.diag(G))
    assert float(off.abs().max()) < 1e-4 * float(torch.diag(G).max())
    raw = ls.directions.random(model, n=3, seed=1)
    np.testing.assert_allclose(d.norms, raw.norms, rtol=1e-5)
    with pytest.raises(ValueError, match="linearly dependent"):
        ls.orthogonalize(explicit(model, torch.stack([raw.vectors[0], 2 * raw.vectors[0]])))


def test_plane_through_three_points_has_their_coordinates(spirals):
    a, b, c = (spirals.new_model(seed=s) for s in (1, 2, 3))
    d = ls.directions.plane(a, a, b, c)
    coords = d.meta["points"]
    pts = {k: torch.cat([p.detach().reshape(-1) for p in m.parameters()]) for k, m in zip("abc", (a, b, c))}
    for k in "abc":
        rebuilt = d.center + coords[k][0] * d.vectors[0] + coords[k][1] * d.vectors[1]
        torch.testing.assert_close(rebuilt, pts[k], rtol=1e-4, atol=1e-5)
    surf = ls.surface(a, spirals.loss, spirals.data(), d, span=(-0.5, 1.5), steps=5)
    assert surf.sel(alpha=0.0, beta=0.0).item() == pytest.approx(spirals.evaluate(a, spirals.data())["loss"], rel=1e-5)
    assert surf.sel(alpha=1.0, beta=0.0).item() == pytest.approx(spirals.evaluate(b, spirals.data())["loss"], rel=1e-5)


# -- evaluation engine --------------------------------------------------------------------------------------
def test_vmap_and_loop_agree_and_chunking_is_exact(spirals):
    model = spirals.model
    d = ls.directions.random(model, seed=0)
    data = spirals.data()
    ref = ls.surface(model, spirals.loss, data, d, span=0.8, steps=9, method="vmap", chunk_size=81)
    assert ref.attrs["method"] == "vmap" and ref.attrs["chunk_size"] == 81
    loop = ls.surface(model, spirals.loss, data, d, span=0.8, steps=9, method="loop")
    np.testing.assert_allclose(loop.values, ref.values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(loop.accuracy.values, ref.accuracy.values, atol=1e-6)
    for cs in (1, 7, 40):
        ch = ls.surface(model, spirals.loss, data, d, span=0.8, steps=9, method="vmap", chunk_size=cs)
        np.testing.assert_allclose(ch.values, ref.values, rtol=1e-6, atol=1e-7)
        np.testing.assert_array_equal(ch.accuracy.values, ref.accuracy.values)


def test_center_point_equals_plain_evaluation_and_accuracy(spirals):
    model = spirals.model
    d = ls.directions.random(model, seed=2)
    surf = ls.surface(model, spirals.loss, spirals.data("test"), d, span=1.0, steps=5)
    ev = spirals.evaluate(model, spirals.data("test"))
    assert surf.sel(alpha=0.0, beta=0.0).item() == pytest.approx(ev["loss"], rel=1e-5)
    assert surf.accuracy.sel(alpha=0.0, beta=0.0).item() == pytest.approx(ev["accuracy"], abs=1e-6)
    plain = ls.surface(model, lambda m, b: spirals.loss(m, b), spirals.data("test"), d, span=1.0, steps=5)
    assert "accuracy" not in plain.coords
    np.testing.assert_allclose(plain.values, surf.values, rtol=1e-6)


def test_batches_are_weighted_by_size(spirals):
    model = spirals.model
    d = ls.directions.random(model, seed=4)
    full = ls.surface(model, spirals.loss, spirals.data(), d, span=0.5, steps=5)
    parts = ls.surface(model, spirals.loss, spirals.batches("train", batch_size=50), d, span=0.5, steps=5)
    assert [b[0].shape[0] for b in spirals.batches("train", batch_size=50)] == [50, 50, 20]
    np.testing.assert_allclose(parts.values, full.values, rtol=1e-5)
    np.testing.assert_allclose(parts.accuracy.values, full.accuracy.values, atol=1e-6)


def test_line_to_a_target_model(spirals):
    a, b = spirals.new_model(seed=1), spirals.new_model(seed=2)
    ln = ls.line(a, spirals.loss, spirals.data(), b, span=(0.0, 1.0), steps=5)
    assert ln.dims == ("alpha",)
    assert ln.sel(alpha=1.0).item() == pytest.approx(spirals.evaluate(b, spirals.data())["loss"], rel=1e-5)
    assert ln.sel(alpha=0.0).item() == pytest.approx(spirals.evaluate(a, spirals.data())["loss"], rel=1e-5)
    d = ls.directions.random(a, n=2, seed=0)
    one = ls.line(a, spirals.loss, spirals.data(), d[0], span=1.0, steps=5)
    two = ls.surface(a, spirals.loss, spirals.data(), d, span=1.0, steps=5)
    np.testing.assert_allclose(one.values, two.sel(beta=0.0).values, rtol=1e-5)


class _NoVmap(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        out = self.lin(x)
        return out if float(out.sum()) > -1e30 else -out    # data-dependent Python control flow: vmap cannot run it


def test_loop_fallback_warns_with_reason():
    model = seeded(0, _NoVmap)
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    loss = lambda m, b: ((m(b[0]) - b[1]) ** 2).mean()   # noqa: E731
    d = ls.directions.random(model, seed=0, ignore=())
    with pytest.warns(RuntimeWarning, match="falling back to a loop"):
        s = ls.surface(model, loss, (x, y), d, span=1.0, steps=3)
    assert s.attrs["method"] == "loop" and "vmap_fallback_reason" in s.attrs
    ref = ls.surface(model, loss, (x, y), d, span=1.0, steps=3, method="loop")
    np.testing.assert_allclose(s.values, ref.values)
    with pytest.raises(Exception):
        ls.surface(model, loss, (x, y), d, span=1.0, steps=3, method="vmap")


def test_large_cpu_forward_uses_loop_with_reason(spirals):
    d = ls.directions.random(spirals.model, seed=0)
    # an explicit budget far below the full batch's forward pass: microbatches that fit it, one grid point each
    s = ls.surface(spirals.model, spirals.loss, spirals.data(), d, span=1.0, steps=3, max_memory=20_000)
    assert s.attrs["method"] == "loop" and "method_reason" in s.attrs
    assert 1 <= s.attrs["batch_size"] < s.attrs["n_examples"]
    v = ls.surface(spirals.model, spirals.loss, spirals.data(), d, span=1.0, steps=3)
    assert v.attrs["method"] == "vmap"
    np.testing.assert_allclose(s.values, v.values, rtol=1e-5)


# -- model preservation -------------------------------------------------------------------------------------
def _snapshot(model):
    return ([m.training for m in model.modules()], [b.clone() for b in model.buffers()],
            [p.detach().clone() for p in model.parameters()],
            [None if p.grad is None else p.grad.clone() for p in model.parameters()])


def _assert_same(model, snap):
    modes, bufs, params, grads = snap
    assert [m.training for m in model.modules()] == modes
    for a, b in zip(model.buffers(), bufs):
        assert torch.equal(a, b)
    for a, b in zip(model.parameters(), params):
        assert torch.equal(a.detach(), b)
    for p, g in zip(model.parameters(), grads):
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


@pytest.mark.parametrize("train_mode", [True, False])
def test_batchnorm_dropout_model_is_unchanged(train_mode):
    model = bn_model()
    x, y = bn_data()
    model.train()
    for _ in range(3):                                   # non-trivial running statistics
        model(x)
    ce_loss(model, (x, y)).backward()                    # a grad that must survive
    model.train(train_mode)
    snap = _snapshot(model)
    rng = torch.get_rng_state()
    d = ls.directions.random(model, seed=0)
    other = bn_model(seed=1)
    for kw in ({"mode": "eval"}, {"mode": "train"}, {"mode": "eval", "method": "loop"},
               {"mode": "train", "method": "loop"}):
        ls.surface(model, ce_loss, (x, y), d, span=0.5, steps=3, **kw)
        _assert_same(model, snap)
    ls.line(model, ce_loss, (x, y), d[0], span=0.5, steps=3)
    ls.linear_path(model, other, ce_loss, (x, y), steps=3)
    curve = ls.bezier(model, other, ce_loss, (x, y), steps=3, lr=1e-2)
    curve.path(ce_loss, (x, y), steps=3)
    ls.directions.random(model, seed=0)
    _assert_same(model, snap)
    assert torch.equal(torch.get_rng_state(), rng)


def test_eval_mode_uses_running_stats_train_mode_batch_stats():
    model = bn_model()
    x, y = bn_data()
    model.train()
    model(x * 3 + 1)                                     # running stats differ from the batch statistics of x
    model.eval()
    d = ls.directions.random(model, seed=0)
    ev = ls.surface(model, ce_loss, (x, y), d, span=0.5, steps=3, mode="eval")
    with torch.no_grad():
        assert ev.sel(alpha=0.0, beta=0.0).item() == pytest.approx(float(ce_loss(model, (x, y))), rel=1e-5)
    m2 = copy.deepcopy(model)
    m2[3].p = 0.0                                        # dropout off: compare the batch-statistics forward
    tr = ls.surface(m2, ce_loss, (x, y), d, span=0.5, steps=3, mode="train")
    lp = ls.surface(m2, ce_loss, (x, y), d, span=0.5, steps=3, mode="train", method="loop")
    m2.train()
    with torch.no_grad():
        expect = float(ce_loss(m2, (x, y)))
    assert tr.sel(alpha=0.0, beta=0.0).item() == pytest.approx(expect, rel=1e-5)
    np.testing.assert_allclose(tr.values, lp.values, rtol=1e-5)
    assert abs(expect - ev.sel(alpha=0.0, beta=0.0).item()) > 1e-4


# -- trajectories -------------------------------------------------------------------------------------------
def test_straight_line_trajectory_projects_to_a_straight_line(spirals):
    theta0 = torch.cat([p.detach().reshape(-1) for p in spirals.model.parameters()]).double()
    v = torch.randn(theta0.numel(), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    traj = torch.stack([theta0 + t * v for t in np.linspace(0, 1, 12)]).numpy()
    d = ls.directions.random(spirals.model, seed=1)
    pr = ls.project(traj, d, center=theta0)
    P = pr.values - pr.values[0]
    assert np.linalg.matrix_rank(P, tol=1e-6 * np.abs(P).max()) == 1
    np.testing.assert_allclose(np.diff(pr.values, axis=0), np.diff(pr.values, axis=0)[0:1].repeat(11, 0), atol=1e-9)
    pd = ls.directions.pca(traj, n=2)
    assert pd.meta["explained_variance"][0] == pytest.approx(1.0, abs=1e-9)
    assert pd.meta["explained_variance"][1] < 1e-12
    pp = ls.project(traj, pd)
    assert np.abs(pp.values[:, 1]).max() < 1e-6 * np.abs(pp.values[:, 0]).max()
    assert np.abs(pp.off_plane.values).max() < 1e-6 * float(v.norm())     # directions are stored in float32


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(T=st.integers(2, 12), n=st.integers(2, 30), k=st.integers(1, 3), seed=st.integers(0, 1000),
       center=st.sampled_from(["final", "first", "mean"]))
def test_pca_explained_variance_sums_to_at_most_one(T, n, k, seed, center):
    X = np.random.default_rng(seed).normal(size=(T, n)).cumsum(0)
    if k > min(T, n):
        with pytest.raises(ValueError, match="n="):
            ls.directions.pca(X, n=k, center=center)
        return
    d = ls.directions.pca(X, n=k, center=center)
    ev = d.meta["explained_variance"]
    assert all(e >= 0 for e in ev) and sum(ev) <= 1 + 1e-9
    assert ev == sorted(ev, reverse=True)
    V = d.vectors.double()
    torch.testing.assert_close(V @ V.T, torch.eye(k, dtype=torch.float64), atol=1e-5, rtol=0)


def test_pca_of_recorded_runs_and_projection(spirals):
    runs = [wb.train(spirals, opt, lr=lr, steps=30, probes=[wb.probes.Trajectory(every=3)])
            for opt, lr in (("gd", 0.5), ("adam", 0.02))]
    d = ls.directions.pca([r.record for r in runs], model=spirals.model)
    assert len(d.meta["explained_variance"]) == 2 and sum(d.meta["explained_variance"]) <= 1
    torch.testing.assert_close(d.center, torch.as_tensor(runs[0].record.trajectory.values[-1]))
    surf = ls.surface(runs[0].model, spirals.loss, spirals.data(), d, span=1.0, steps=5)
    proj = ls.project([r.record for r in runs], d)
    assert len(proj) == 2 and proj[0].attrs["label"] == "gd"
    np.testing.assert_allclose(proj[0].values[-1], [0.0, 0.0], atol=1e-6)     # centered at the final point
    fig = ls.plot(surf, trajectory=[r.record for r in runs])
    lines = [t for t in fig.data if t.type == "scatter" and t.mode == "lines+markers"]
    assert [t.name for t in lines] == ["gd", "adam"]
    np.testing.assert_allclose(np.asarray(lines[1].x), proj[1].values[:, 0], rtol=1e-5, atol=1e-7)


def test_countsketch_record_projection_matches_sketching_the_exact_path(spirals):
    exact = wb.train(spirals, "gd", lr=0.5, steps=12, probes=[wb.probes.Trajectory(every=3)])
    sk = wb.train(spirals, "gd", lr=0.5, steps=12, probes=[wb.probes.Trajectory(every=3, dim=64, max_bytes=2000)])
    assert sk.record.attrs["trajectory_kind"] == "countsketch"
    d = ls.directions.random(spirals.model, seed=0)
    center = torch.cat([p.detach().reshape(-1) for p in spirals.model.parameters()])
    got = ls.project(sk.record, d, center=center)
    seed, dim = sk.record.attrs["trajectory_projection_seed"], sk.record.attrs["trajectory_projection_dim"]
    S = lambda v: wb.probes.countsketch(torch.as_tensor(v, dtype=torch.float64), dim, seed)   # noqa: E731
    D = torch.stack([S(v) for v in d.vectors])
    X = torch.stack([S(t) for t in exact.record.trajectory.values]) - S(center)
    expect = torch.linalg.solve(D @ D.T, D @ X.T).T.numpy()
    np.testing.assert_allclose(got.values, expect, rtol=1e-4, atol=1e-6)
    pd = ls.directions.pca(sk.record)
    assert pd.space == "countsketch"
    with pytest.raises(ValueError, match="count-sketch"):
        ls.surface(spirals.model, spirals.loss, spirals.data(), pd, steps=3)


# -- mode connectivity --------------------------------------------------------------------------------------
def test_linear_barrier_is_zero_for_a_convex_problem(linreg):
    a = linreg.new_model(seed=1)
    b = wb.train(linreg, "gd", lr=0.1, steps=50).model
    path = ls.linear_path(a, b, linreg.loss, linreg.data(), steps=21)
    assert path.attrs["barrier"] == 0.0 or path.attrs["barrier"] < 1e-6 * path.values.max()
    L = path.values
    chord = (1 - path.t.values) * L[0] + path.t.values * L[-1]
    assert np.all(L <= chord + 1e-6 * L.max())
    assert ls.barrier(path) == pytest.approx(path.attrs["barrier"])


def test_barrier_of_a_concave_line_is_the_closed_form():
    prob = wb.problems.make("quadratic", lambda1=-1.0, lambda2=1.0)
    a, b = prob.new_model(), prob.new_model()
    with torch.no_grad():
        a.theta.copy_(torch.tensor([-1.0, 0.0]))
        b.theta.copy_(torch.tensor([1.0, 0.0]))
    path = ls.linear_path(a, b, prob.loss, prob.data(), steps=11)
    assert path.attrs["barrier"] == pytest.approx(0.5, rel=1e-6)      # 0.5 - 0.5 (2t - 1)^2 at t = 1/2
    assert path.attrs["barrier_t"] == pytest.approx(0.5)


def test_bezier_curve_goes_around_the_ring_where_the_line_has_a_barrier():
    """f(p) = (|p|^2 - 1)^2: minima on the unit circle. The line from (1, 0) to (-1, 0) crosses the top f(0) = 1
    (barrier 1); the best parabola φ(t) = (1 - 2t, 2c t(1 - t)) with c = 2 has f <= 1/16 along it."""
    from workbench.problems.models import PointModel

    ring = lambda p: ((p ** 2).sum(-1) - 1) ** 2      # noqa: E731
    a, b = PointModel(ring, (1.0, 0.0)), PointModel(ring, (-1.0, 0.0))
    loss = lambda m, batch: m(batch[0]).mean()        # noqa: E731
    data = (torch.zeros(1, 1), torch.zeros(1))
    lin = ls.linear_path(a, b, loss, data, steps=41)
    assert lin.attrs["barrier"] == pytest.approx(1.0, rel=1e-6)
    curve = ls.bezier(a, b, loss, data, steps=300, optimizer="adam", lr=0.05, seed=0)
    bz = curve.path(loss, data, steps=41)
    assert bz.attrs["barrier"] < 0.1
    assert abs(float(curve.control[0])) < 0.3 and abs(float(curve.control[1])) > 1.5
    torch.testing.assert_close(curve.point(0.0), a.theta.detach())
    torch.testing.assert_close(curve.point(1.0), b.theta.detach())
    mid = curve.model(0.5)
    assert float(loss(mid, data)) == pytest.approx(bz.sel(t=0.5).item(), rel=1e-5, abs=1e-7)
    assert len(curve.history) == 300


def test_batchnorm_statistics_are_refreshed_along_the_path():
    a, b = bn_model(0), bn_model(1)
    x, y = bn_data(64)
    for m in (a, b):
        m.train()
        m(x)
        m.eval()
    path = ls.linear_path(a, b, ce_loss, (x, y), steps=3)
    assert path.attrs["bn_refreshed"]
    mid = copy.deepcopy(a)
    with torch.no_grad():
        for p, q, r in zip(mid.parameters(), a.parameters(), b.parameters()):
            p.copy_((q + r) / 2)
    ls.refresh_batchnorm(mid, (x, y))
    torch.testing.assert_close(mid[1].running_mean, x.new_tensor(0) + (x @ mid[0].weight.T + mid[0].bias).mean(0))
    with torch.no_grad():
        assert path.sel(t=0.5).item() == pytest.approx(float(ce_loss(mid, (x, y))), rel=1e-5)
    plain = ls.linear_path(a, b, ce_loss, (x, y), steps=3, refresh_bn=False)
    assert not plain.attrs["bn_refreshed"]


def test_landscapes_round_trip_through_netcdf(spirals, tmp_path):
    m = spirals.model
    d = ls.orthogonalize(ls.directions.random(m, seed=0))
    s = ls.surface(m, spirals.loss, spirals.data(), d, span=1.0, steps=3)
    lp = ls.linear_path(m, spirals.new_model(seed=3), spirals.loss, spirals.data(), steps=3)
    for da, name in ((s, "s.nc"), (lp, "l.nc")):
        da.to_netcdf(tmp_path / name)
        back = xr.load_dataarray(tmp_path / name)
        np.testing.assert_allclose(back.values, da.values)
        assert set(back.coords) == set(da.coords)
    assert xr.load_dataarray(tmp_path / "s.nc").attrs["alpha_norm"] == pytest.approx(s.attrs["alpha_norm"])


# -- plots --------------------------------------------------------------------------------------------------
def test_side_by_side_plots_share_one_color_scale(spirals):
    m = spirals.model
    d = ls.directions.random(m, seed=0)
    s1 = ls.surface(m, spirals.loss, spirals.data(), d, span=0.5, steps=5)
    s2 = ls.surface(m, spirals.loss, spirals.data(), d, span=2.0, steps=5)
    fig = ls.plot([s1, s2], titles=["narrow", "wide"])
    c1, c2 = [t for t in fig.data if t.type == "contour"]
    assert c1.zmin == c2.zmin == pytest.approx(min(s1.min(), s2.min()))
    assert c1.zmax == c2.zmax == pytest.approx(max(s1.max(), s2.max()))
    f3 = ls.plot([s1, s2], kind="surface", log=True)
    assert f3.data[0].cmin == f3.data[1].cmin == pytest.approx(np.log10(min(s1.min(), s2.min())))
    f1 = ls.plot(ls.line(m, spirals.loss, spirals.data(), d[0], steps=5), log=True)
    assert f1.layout.yaxis.type == "log"
    fa = ls.plot(s1, quantity="accuracy")
    np.testing.assert_allclose(fa.data[0].z, s1.accuracy.values.T)


# -- bad input ----------------------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(span=st.one_of(st.floats(max_value=0.0, allow_nan=False), st.just(float("nan")), st.just(float("inf"))))
def test_bad_span_is_a_value_error_naming_span(span):
    prob = wb.problems.make("quadratic")
    d = ls.directions.random(prob.model, norm=None, seed=0)
    with pytest.raises(ValueError, match="span"):
        ls.surface(prob.model, prob.loss, prob.data(), d, span=span, steps=3)


@settings(max_examples=20, deadline=None)
@given(steps=st.one_of(st.integers(max_value=1), st.floats(0.1, 10.5).filter(lambda v: not float(v).is_integer()),
                       st.text(max_size=3)))
def test_bad_steps_is_a_value_error_naming_steps(steps):
    prob = wb.problems.make("quadratic")
    d = ls.directions.random(prob.model, norm=None, seed=0)
    with pytest.raises(ValueError, match="steps"):
        ls.surface(prob.model, prob.loss, prob.data(), d, span=1.0, steps=steps)
    with pytest.raises(ValueError, match="steps"):
        ls.line(prob.model, prob.loss, prob.data(), d[0], span=1.0, steps=steps)


@settings(max_examples=10, deadline=None)
@given(lo=st.floats(-5, 5), width=st.floats(-5, 0))
def test_bad_span_pair_names_span(lo, width):
    prob = wb.problems.make("quadratic")
    d = ls.directions.random(prob.model, norm=None, seed=0)
    with pytest.raises(ValueError, match="span"):
        ls.surface(prob.model, prob.loss, prob.data(), d, span=(lo, lo + width), steps=3)


@settings(max_examples=10, deadline=None)
@given(n=st.sampled_from([1, 3]), width=st.integers(1, 20))
def test_mismatched_directions_are_value_errors(n, width, ):
    prob = wb.problems.make("spirals", width=16)
    other = wb.problems.make("spirals", width=width + 16 if width == 0 else width)
    good = ls.directions.random(prob.model, n=n, seed=0)
    with pytest.raises(ValueError, match="directions"):
        ls.surface(prob.model, prob.loss, prob.data(max_samples=8), good, steps=3)        # wrong count
    if width != 16:
        bad = ls.directions.random(other.model, n=2, seed=0)
        with pytest.raises(ValueError, match="directions"):
            ls.surface(prob.model, prob.loss, prob.data(max_samples=8), bad, steps=3)    # wrong model
    with pytest.raises(ValueError, match="directions"):
        ls.surface(prob.model, prob.loss, prob.data(), torch.zeros(2, 337), steps=3)      # not Directions


def test_other_bad_inputs_name_their_field(spirals):
    m = spirals.model
    d = ls.directions.random(m, seed=0)
    for kw, field in (({"mode": "test"}, "mode"), ({"method": "fast"}, "method"), ({"chunk_size": 0}, "chunk_size")):
        with pytest.raises(ValueError, match=field):
            ls.surface(m, spirals.loss, spirals.data(), d, steps=3, **kw)
    for kw, field in (({"norm": "unit"}, "norm"), ({"n": 0}, "n"), ({"seed": -1}, "seed"), ({"ignore": "x"}, "ignore")):
        with pytest.raises(ValueError, match=field):
            ls.directions.random(m, **kw)
    with pytest.raises(ValueError, match="data"):
        ls.surface(m, spirals.loss, 5, d, steps=3)
    with pytest.raises(ValueError, match="metrics"):
        ls.surface(m, lambda mm, b: spirals.loss(mm, b), spirals.data(), d, steps=3, metrics={"a": lambda o, y: o})
    with pytest.raises(ValueError, match="steps"):
        ls.linear_path(m, spirals.new_model(seed=1), spirals.loss, spirals.data(), steps=1)
    with pytest.raises(ValueError, match="model_b"):
        ls.linear_path(m, wb.problems.make("spirals", width=3).model, spirals.loss, spirals.data())
    with pytest.raises(ValueError, match="lr"):
        ls.bezier(m, spirals.new_model(seed=1), spirals.loss, spirals.data(), lr=0.0)
    with pytest.raises(ValueError, match="trajectory"):
        ls.directions.pca(wb.train(spirals, "gd", lr=0.1, steps=2).record)
    with pytest.raises(ValueError, match="problem"):
        ls.function_surface(spirals)
    with pytest.raises(ValueError, match="quantity"):
        ls.plot(ls.surface(m, spirals.loss, spirals.data(), d, steps=3), quantity="f1")


# -- notebooks ----------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("name", ["01_loss_landscapes.ipynb", "08_mode_connectivity.ipynb"])
def test_notebook_runs_in_quick_mode(name):
    from nbutil import ROOT, run_notebook

    nb = run_notebook(ROOT / "notebooks" / name)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    if name.startswith("01_"):
        _check_notebook_01(nb)
    if name.startswith("08_"):
        _check_notebook_08(nb)


def _check_notebook_01(nb):
    """The claims of notebook 01's prose, on its quick-mode outputs."""
    from nbutil import notebook_results

    r = notebook_results(nb)
    assert r["quick"]
    # section 2: the surface's cost per grid point in forward passes over the same data is measured and printed
    # (2.8 quick, 2-2.5 full mode here); a timing, so no threshold: only that it was measured
    assert math.isfinite(r["forward_passes_per_grid_point"]) and r["forward_passes_per_grid_point"] > 0
    # section 3: raw directions see the rescaling, filter-normalized ones do not; one color scale per figure
    assert r["scale_diff"]["none"] > 0.5 and r["scale_diff"]["filter"] < 1e-3
    assert r["color_scales"] == {"none": 1, "filter": 1}
    # section 4: each path is nearly planar on its own (measured >= 0.99), a random plane holds next to nothing
    # (<= 0.009); the shared plane holds the least of the run that travels least (GD: 0.09 quick), most of
    # whose displacement is off the plane; the shared start is each path's distance from the plane at step 0
    paths = r["paths"]
    assert all(p["own"] > 0.9 and p["random"] < 0.05 for p in paths.values())
    least = min(paths, key=lambda k: paths[k]["moved"])
    assert least == "gd"
    assert paths["gd"]["shared"] == min(p["shared"] for p in paths.values()) and paths["gd"]["shared"] < 0.5
    assert paths["gd"]["disp_off"] > paths["gd"]["disp_in"]
    assert paths["gd"]["length_in"] < 0.5 * paths["gd"]["length"]
    assert len({round(p["start_off"], 6) for p in paths.values()}) == 1
    assert paths["gd"]["start_farthest"]


def _check_notebook_08(nb):
    """The claims of notebook 08's prose, on its quick-mode outputs."""
    import re

    out = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    # the takeaway names how the curve is trained: Adam, lr 0.01, mini-batches of 128, 300 steps in quick mode
    assert "trained the curve's control point with adam (lr 0.01, mini-batches of 128) for 300 steps" in out
    m = re.search(r"Bezier barrier: train ([\d.]+), test ([\d.]+) \(linear: ([\d.]+), ([\d.]+)\)", out)
    assert m, "the notebook prints the Bezier and linear barriers"
    bz_train, bz_test, lin_train, lin_test = map(float, m.groups())
    assert bz_train < lin_train / 5 and bz_test < lin_test / 5 and lin_train > 1
    # BatchNorm: the stale path starts at model a but its end is far from b's own loss; the recomputed path's ends
    # differ from the models' own losses (running statistics) by much less
    own = [float(x) for x in re.search(r"own losses \(their running statistics\): ([\d.]+), ([\d.]+)", out).groups()]
    fresh = [float(x) for x in re.search(r"recomputed on the training data: ([\d.]+), ([\d.]+)", out).groups()]
    stale = [float(x) for x in re.search(r"model a's statistics everywhere: +([\d.]+), ([\d.]+)", out).groups()]
    assert stale[0] == pytest.approx(own[0], abs=1e-3)
    assert abs(stale[1] - own[1]) > 10 * abs(fresh[1] - own[1]) and stale[1] > 10 * own[1]
