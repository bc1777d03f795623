"""Optimizer zoo: update rules against hand computations, schema properties, Lion's box, Adam's invariance,
zeroth-order estimates, preconditioner readers."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import workbench as wb
from workbench.optim.instrumented import zo_direction, zo_gradient_estimate

torch.set_default_dtype(torch.float32)
OPT = wb.optimizers


def _param(values, dtype=torch.float64):
    return torch.nn.Parameter(torch.tensor(values, dtype=dtype))


def _set_grad(p, g):
    p.grad = torch.as_tensor(g, dtype=p.dtype).clone()


G1 = [0.5, -1.0, 2.0, 0.0]
G2 = [-0.3, -0.2, 1.0, 0.7]
X0 = [1.0, -2.0, 0.5, 0.25]


# -- update rules: library optimizers ---------------------------------------------------------------------------
def test_lion_two_steps_match_paper():
    lr, b1, b2, wd = 0.1, 0.9, 0.99, 0.5
    p = _param(X0)
    opt = OPT.make("lion", [p], lr=lr, beta1=b1, beta2=b2, weight_decay=wd)
    x, m = torch.tensor(X0, dtype=torch.float64), torch.zeros(4, dtype=torch.float64)
    for g in (G1, G2):
        g = torch.tensor(g, dtype=torch.float64)
        _set_grad(p, g)
        opt.step()
        c = b1 * m + (1 - b1) * g
        x = x - lr * (torch.sign(c) + wd * x)
        m = b2 * m + (1 - b2) * g
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-12)
    torch.testing.assert_close(opt.state[p]["exp_avg"], m, rtol=0, atol=1e-12)


def test_adam_two_steps_match_paper():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    p = _param(X0)
    opt = OPT.make("adam", [p], lr=lr, beta1=b1, beta2=b2, eps=eps)
    x = torch.tensor(X0, dtype=torch.float64)
    m = torch.zeros(4, dtype=torch.float64)
    v = torch.zeros(4, dtype=torch.float64)
    for t, g in enumerate((G1, G2), start=1):
        g = torch.tensor(g, dtype=torch.float64)
        _set_grad(p, g)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        x = x - lr * (m / (1 - b1 ** t)) / ((v / (1 - b2 ** t)).sqrt() + eps)
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(opt.state[p]["exp_avg"], m)
    # the preconditioner reader gives update = lr P^-1 m
    P = OPT.spec("adam").preconditioner(opt)[0]
    torch.testing.assert_close(P, (1 - b1 ** 2) * ((v / (1 - b2 ** 2)).sqrt() + eps))


def test_adan_two_steps_match_paper():
    """Adan, Xie et al. 2022, Alg. 1 with the library's complementary betas (m <- b1 m + (1-b1) g) and bias
    corrections; g_0 := g_1 so the first difference is zero."""
    lr, b1, b2, b3, eps = 0.05, 0.98, 0.92, 0.99, 1e-8
    p = _param(X0)
    opt = OPT.make("adan", [p], lr=lr, beta1=b1, beta2=b2, beta3=b3, eps=eps)
    x = torch.tensor(X0, dtype=torch.float64)
    m = torch.zeros(4, dtype=torch.float64)
    v = torch.zeros(4, dtype=torch.float64)
    n = torch.zeros(4, dtype=torch.float64)
    g_prev = None
    for t, g in enumerate((G1, G2), start=1):
        g = torch.tensor(g, dtype=torch.float64)
        _set_grad(p, g)
        opt.step()
        d = torch.zeros_like(g) if g_prev is None else g - g_prev
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * d
        n = b3 * n + (1 - b3) * (g + b2 * d) ** 2
        denom = (n / (1 - b3 ** t)).sqrt() + eps
        x = x - lr * (m / (1 - b1 ** t) + b2 * v / (1 - b2 ** t)) / denom
        g_prev = g
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-10)
    torch.testing.assert_close(opt.state[p]["exp_avg"], m)
    torch.testing.assert_close(opt.state[p]["exp_avg_diff"], v)
    torch.testing.assert_close(OPT.spec("adan").preconditioner(opt)[0], (n / (1 - b3 ** 2)).sqrt() + eps)


def _newton_schulz(G, steps=5, a=3.4445, b=-4.7750, c=2.0315):
    X = G.double()
    tr = X.shape[0] > X.shape[1]
    if tr:
        X = X.T
    X = X / X.norm().clamp_min(1e-7)
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return X.T if tr else X


def test_muon_two_steps_match_published_rule():
    """Muon (Jordan et al. 2024): buf <- mu buf + (1-mu) g; Nesterov u = (1-mu) g + mu buf; theta <- theta - lr
    sqrt(max(1, rows/cols)) NS5(u). The library runs Newton-Schulz in bfloat16: tolerance 3e-2 per entry."""
    torch.manual_seed(0)
    lr, mu = 0.1, 0.95
    W0 = torch.randn(4, 3)
    g1, g2 = torch.randn(4, 3), torch.randn(4, 3)
    p = torch.nn.Parameter(W0.clone())
    opt = OPT.make("muon", [p], lr=lr, momentum=mu)
    W, buf = W0.double(), torch.zeros(4, 3, dtype=torch.float64)
    scale = math.sqrt(max(1.0, 4 / 3))
    for g in (g1, g2):
        _set_grad(p, g)
        opt.step()
        g = g.double()
        buf = mu * buf + (1 - mu) * g
        u = (1 - mu) * g + mu * buf
        W = W - lr * scale * _newton_schulz(u)
    torch.testing.assert_close(opt.state[p]["momentum_buffer"].double(), buf, rtol=0, atol=1e-6)
    torch.testing.assert_close(p.detach().double(), W, rtol=0, atol=3e-2 * lr * 2)
    # and NS5 really orthogonalises approximately: singular values of the update within the quintic's band
    s = torch.linalg.svdvals(_newton_schulz(torch.randn(6, 4)))
    assert float(s.min()) > 0.5 and float(s.max()) < 1.3


# -- update rules: ours ----------------------------------------------------------------------------------------------
A = torch.tensor([1.0, 4.0, 0.5, 2.0], dtype=torch.float64)   # f(x) = 1/2 sum a_i x_i^2, grad = a * x


def _quad_closure(p):
    def closure(backward=True, create_graph=False):
        p.grad = None
        with torch.enable_grad():
            loss = 0.5 * (A * p * p).sum()
            if backward:
                loss.backward(create_graph=create_graph)
        return loss
    return closure


def test_sam_two_steps_match_foret():
    lr, rho, mu = 0.1, 0.2, 0.9
    p = _param(X0)
    opt = OPT.make("sam", [p], lr=lr, rho=rho, momentum=mu)
    x, buf = torch.tensor(X0, dtype=torch.float64), None
    for _ in range(2):
        opt.step(_quad_closure(p))
        g = A * x
        e = rho * g / g.norm()
        g_sam = A * (x + e)
        buf = g_sam.clone() if buf is None else mu * buf + g_sam
        x = x - lr * buf
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-12)
    assert opt.last["perturbation_norm"] == pytest.approx(rho)
    torch.testing.assert_close(opt.last["ascent_point"], (x + lr * buf) + rho * A * (x + lr * buf) /
                               (A * (x + lr * buf)).norm())


def test_asam_step_matches_kwon():
    lr, rho, eta = 0.1, 0.5, 0.01
    p = _param(X0)
    opt = OPT.make("asam", [p], lr=lr, rho=rho, eta=eta)
    opt.step(_quad_closure(p))
    x = torch.tensor(X0, dtype=torch.float64)
    T = x.abs() + eta
    g = A * x
    e = rho * T * T * g / (T * g).norm()
    torch.testing.assert_close(p.detach(), x - lr * A * (x + e), rtol=0, atol=1e-12)


def test_zeroth_order_step_matches_mezo():
    lr, eps, n = 0.01, 1e-3, 3
    p = _param(X0)
    opt = OPT.make("zo_sgd", [p], lr=lr, eps=eps, n_samples=n, seed=7)
    x = torch.tensor(X0, dtype=torch.float64)
    f = lambda y: 0.5 * float((A * y * y).sum())  # noqa: E731
    for t in range(2):
        opt.step(_quad_closure(p))
        upd = torch.zeros(4, dtype=torch.float64)
        for i in range(n):
            z = zo_direction([p], 7 + n * t + i)[0]
            proj = (f(x + eps * z) - f(x - eps * z)) / (2 * eps)
            upd += proj * z / n
        est = opt.estimate()
        x = x - lr * upd
        torch.testing.assert_close(est, upd, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-9)
    assert p.grad is None or not torch.any(p.grad)   # forward passes only: no gradient was computed


def test_dog_two_steps_match_ivgi():
    reps = 1e-4
    p = _param(X0)
    opt = OPT.make("dog", [p], reps_rel=reps)
    x = torch.tensor(X0, dtype=torch.float64)
    x0 = x.clone()
    rbar, G = reps * (1 + x0.norm()), 0.0
    for _ in range(2):
        _set_grad(p, A * p.detach())
        opt.step()
        g = A * x
        rbar = max(rbar, (x - x0).norm())
        G += float((g * g).sum())
        x = x - rbar / math.sqrt(G) * g
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-12)


def test_normalized_gd_step_has_length_lr():
    p = _param(X0)
    opt = OPT.make("ngd", [p], lr=0.3)
    _set_grad(p, G1)
    opt.step()
    g = torch.tensor(G1, dtype=torch.float64)
    torch.testing.assert_close(p.detach(), torch.tensor(X0, dtype=torch.float64) - 0.3 * g / g.norm())


def test_gradient_noise_wrapper_adds_seeded_annealed_noise():
    std, gamma, lr = 0.5, 0.55, 0.1
    p = _param(X0)
    opt = OPT.make("noisy", [p], lr=lr, base="gd", std=std, gamma=gamma, seed=3)
    gen = torch.Generator().manual_seed(3)
    x = torch.tensor(X0, dtype=torch.float64)
    for t in range(2):
        _set_grad(p, G1)
        opt.step()
        xi = torch.randn(4, generator=gen, dtype=torch.float32).double()
        x = x - lr * (torch.tensor(G1, dtype=torch.float64) + std / (1 + t) ** (gamma / 2) * xi)
    torch.testing.assert_close(p.detach(), x, rtol=0, atol=1e-6)


# -- Lion's box and Adam's invariance ------------------------------------------------------------------------------
def test_lion_weight_decay_keeps_iterates_in_box():
    """Lion with decoupled decay lambda solves min f s.t. ||x||_inf <= 1/lambda (Chen et al. 2023): on
    f = 1/2 ||x - c||^2 with c far outside the box the iterates stay within 1/lambda + lr and reach its faces."""
    lam, lr = 2.0, 0.01
    c = torch.tensor([5.0, -4.0, 0.2])
    p = torch.nn.Parameter(torch.zeros(3))
    opt = OPT.make("lion", [p], lr=lr, weight_decay=lam)
    worst = 0.0
    for _ in range(3000):
        p.grad = (p.detach() - c)
        opt.step()
        worst = max(worst, float(p.detach().abs().max()))
    assert worst <= 1 / lam + lr + 1e-6
    x = p.detach()
    assert abs(float(x[0]) - 1 / lam) < 2 * lr and abs(float(x[1]) + 1 / lam) < 2 * lr
    assert abs(float(x[2]) - 0.2) < 2 * lr   # the coordinate whose optimum is inside the box reaches it


def test_adam_invariant_to_diagonal_gradient_rescaling():
    """With eps = 0 Adam's update is invariant to g -> D g for a fixed positive diagonal D."""
    torch.manual_seed(1)
    H = torch.randn(5, 5, dtype=torch.float64)
    H = H @ H.T + torch.eye(5, dtype=torch.float64)
    D = torch.tensor([1e-3, 0.1, 1.0, 10.0, 1e3], dtype=torch.float64)
    x0 = torch.randn(5, dtype=torch.float64)
    trajs = []
    for scale in (torch.ones(5, dtype=torch.float64), D):
        p = torch.nn.Parameter(x0.clone())
        opt = OPT.make("adam", [p], lr=0.05, eps=0.0)
        traj = []
        for _ in range(100):
            p.grad = scale * (H @ p.detach())
            opt.step()
            traj.append(p.detach().clone())
        trajs.append(torch.stack(traj))
    torch.testing.assert_close(trajs[0], trajs[1], rtol=1e-9, atol=1e-10)
    # and it is not trivially so: plain GD is not invariant
    assert not torch.allclose(D * (H @ x0), H @ x0)


# -- zeroth-order estimate ---------------------------------------------------------------------------------------
def test_zeroth_order_average_approaches_true_gradient():
    torch.manual_seed(0)
    d = 10
    M = torch.randn(d, d, dtype=torch.float64)
    H = M @ M.T / d + torch.eye(d, dtype=torch.float64)
    p = torch.nn.Parameter(torch.randn(d, dtype=torch.float64))
    loss_fn = lambda: 0.5 * p @ H @ p  # noqa: E731
    g = H @ p.detach()
    total, cos = torch.zeros(d, dtype=torch.float64), {}
    for i in range(1, 4001):
        proj, z, _, _ = zo_gradient_estimate(loss_fn, [p], 1e-4, seed=i)
        total += proj * z[0]
        if i in (10, 4000):
            cos[i] = float(total @ g / (total.norm() * g.norm()))
    assert cos[4000] > 0.97
    assert cos[4000] > cos[10]
    torch.testing.assert_close(p.detach() @ H @ p.detach(), 2 * loss_fn().detach())   # parameters restored


# -- schemas ---------------------------------------------------------------------------------------------------------
ALL = OPT.list()


@pytest.mark.parametrize("name", ALL)
def test_defaults_construct_and_step(name):
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = OPT.make(name, [p])
    closure = _make_closure(p)
    p.grad = None
    closure()
    if OPT.spec(name).needs_closure:
        opt.step(closure)
    else:
        opt.step()
    assert torch.isfinite(p).all()


def _make_closure(p):
    def closure(backward=True, create_graph=False):
        p.grad = None
        with torch.enable_grad():
            loss = 0.5 * (p[0] ** 2 + 10 * p[1] ** 2)
            if backward:
                loss.backward(create_graph=create_graph)
        return loss
    return closure


# Documented exceptions to "decreases a convex quadratic within its default budget": none are needed; every
# optimizer below decreases f from the quadratic problem's start in DEFAULT_BUDGET steps at its default lr.
DEFAULT_BUDGET = 60


@pytest.mark.parametrize("name", ALL)
def test_decreases_convex_quadratic_within_default_budget(name):
    prob = wb.problems.make("quadratic")
    run = wb.train(prob, optimizer=name, steps=DEFAULT_BUDGET, progress=False)
    assert run.status == "finished"
    x = torch.cat([q.detach().reshape(-1) for q in run.model.parameters()])
    f_end = float(prob.function(x.reshape(1, 2)))
    f_start = float(run.record.loss[0])
    assert f_end < f_start, f"{name}: f went {f_start} -> {f_end}"


def _bounded_fields():
    out = []
    for name in ALL:
        for prm in OPT.schema(name):
            if prm.kind in ("float", "int") and (prm.low is not None or prm.high is not None):
                out.append((name, prm))
    return out


BOUNDED = _bounded_fields()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=st.sampled_from(BOUNDED), side=st.sampled_from(["low", "high"]),
       offset=st.floats(min_value=1e-3, max_value=1e6, allow_nan=False, allow_infinity=False))
def test_out_of_range_hyperparameter_raises_naming_field(case, side, offset):
    name, prm = case
    bound = prm.low if side == "low" else prm.high
    if bound is None:
        return
    value = bound - offset if side == "low" else bound + offset
    if prm.kind == "int":
        value = int(math.floor(value)) if side == "low" else int(math.ceil(value))
        if (side == "low" and value >= prm.low) or (side == "high" and value <= prm.high):
            value += -1 if side == "low" else 1
    with pytest.raises(ValueError, match=prm.name):
        OPT.make(name, [torch.nn.Parameter(torch.zeros(2))], **{prm.name: value})


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(ALL), bad=st.sampled_from(["not-a-number", float("nan"), [1, 2]]))
def test_wrong_types_raise_naming_field(name, bad):
    prm = OPT.schema(name)[0]   # lr for every optimizer
    with pytest.raises(ValueError, match=prm.name):
        OPT.make(name, [torch.nn.Parameter(torch.zeros(2))], **{prm.name: bad})


def test_every_schema_is_curated():
    for name in ALL:
        s = OPT.spec(name)
        assert s.doc, name
        for prm in s.hparams:
            if prm.kind == "choice":
                assert prm.default in prm.choices
            prm.validate(prm.default)   # defaults are valid
        assert s.hparams[0].name == "lr" and s.hparams[0].log


# -- metadata ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in ALL if OPT.spec(n).preconditioned])
def test_preconditioner_readers(name):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(2))]
    opt = OPT.make(name, params)

    def closure(backward=True, create_graph=False):
        for q in params:
            q.grad = None
        with torch.enable_grad():
            loss = (params[0] ** 2).sum() + (params[0].sum() * params[1] ** 2).sum()
            if backward:
                loss.backward(create_graph=create_graph)
        return loss
    for _ in range(2):
        closure()
        opt.step(closure) if OPT.spec(name).needs_closure else opt.step()
    P = OPT.spec(name).preconditioner(opt)
    assert [q.shape for q in P] == [q.shape for q in params]
    assert all(torch.isfinite(q).all() and (q > 0).all() for q in P)


def test_threshold_rules():
    assert OPT.spec("adopt").stability_threshold({"lr": 0.01, "beta1": 0.9}) == pytest.approx(38 / 0.01)
    assert OPT.spec("noisy").stability_threshold(OPT.spec("noisy").validate({"lr": 0.1})) == pytest.approx(20.0)
    assert OPT.spec("lion").stability_threshold({"lr": 0.1}) is None
