"""Problems: closed-form gradients of the 2D test functions, data/model determinism, bad options."""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

import workbench as wb
from workbench.problems import functions as F
from workbench.problems.real import PROBLEMS as REAL_PROBLEMS


def analytic_grad(name, x, y, o):
    if name == "quadratic":
        c, s = math.cos(math.radians(o["angle"])), math.sin(math.radians(o["angle"]))
        u, v = c * x + s * y, -s * x + c * y
        gu, gv = o["lambda1"] * u, o["lambda2"] * v
        return c * gu - s * gv, s * gu + c * gv
    if name == "rosenbrock":
        a, b = o["a"], o["b"]
        return -2 * (a - x) - 4 * b * x * (y - x * x), 2 * b * (y - x * x)
    if name == "himmelblau":
        return 4 * x * (x * x + y - 11) + 2 * (x + y * y - 7), 2 * (x * x + y - 11) + 4 * y * (x + y * y - 7)
    if name == "beale":
        t1, t2, t3 = 1.5 - x + x * y, 2.25 - x + x * y ** 2, 2.625 - x + x * y ** 3
        return (2 * t1 * (y - 1) + 2 * t2 * (y ** 2 - 1) + 2 * t3 * (y ** 3 - 1),
                2 * t1 * x + 2 * t2 * 2 * x * y + 2 * t3 * 3 * x * y ** 2)
    if name == "saddle":
        return 2 * x, -2 * y
    if name == "rastrigin":
        A = o["A"]
        return 2 * x + 2 * math.pi * A * math.sin(2 * math.pi * x), 2 * y + 2 * math.pi * A * math.sin(2 * math.pi * y)
    raise AssertionError(name)


FUNCS = wb.problems.list("function")


def test_function_problems_registered():
    assert set(FUNCS) == {"quadratic", "rosenbrock", "himmelblau", "beale", "saddle", "rastrigin"}


@pytest.mark.parametrize("name", FUNCS)
@settings(max_examples=25, deadline=None)
@given(x=st.floats(-3, 3), y=st.floats(-3, 3))
def test_function_gradient_matches_closed_form(name, x, y):
    prob = wb.problems.make(name, x0=x, y0=y)
    model = prob.new_model().double()
    loss = prob.loss(model, (torch.zeros(1, 1, dtype=torch.float64), torch.zeros(1)))
    (g,) = torch.autograd.grad(loss, [model.theta])
    x, y = model.theta.tolist()          # the start point as stored (float32-rounded)
    ex = analytic_grad(name, x, y, prob.options)
    np.testing.assert_allclose(g.numpy(), ex, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("name", FUNCS)
def test_function_minima_are_stationary_and_lowest(name):
    prob = wb.problems.make(name)
    for m in prob.minima:
        p = torch.tensor(m, dtype=torch.float64, requires_grad=True)
        f = prob.function(p)
        (g,) = torch.autograd.grad(f, [p])
        assert g.norm() < 1e-3
        (x0, x1), (y0, y1) = prob.domain
        grid = torch.stack(torch.meshgrid(torch.linspace(x0, x1, 101, dtype=torch.float64),
                                          torch.linspace(y0, y1, 101, dtype=torch.float64), indexing="ij"), -1)
        assert float(f) <= float(prob.function(grid).min()) + 1e-6


def test_quadratic_hessian_has_chosen_eigenvalues():
    prob = wb.problems.make("quadratic", lambda1=2.0, lambda2=7.0, angle=30.0)
    H = torch.autograd.functional.hessian(prob.function, torch.zeros(2, dtype=torch.float64))
    np.testing.assert_allclose(sorted(torch.linalg.eigvalsh(H).tolist()), [2.0, 7.0], rtol=1e-12)


@pytest.mark.parametrize("name", [n for n in wb.problems.list() if n not in REAL_PROBLEMS])
def test_every_problem_builds_and_is_deterministic(name):
    # (the real-data problems default to whole datasets and big models: test_real_problems.py checks the same
    # properties on tiny options)
    a, b = wb.problems.make(name, seed=3), wb.problems.make(name, seed=3)
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    xa, ya = a.data()
    xb, yb = b.data()
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    loss = a.loss(a.model, (xa, ya))
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert name in a.describe()
    if a.kind != "function":
        c = wb.problems.make(name, seed=4)
        assert not torch.equal(c.data()[0], xa) or any(
            not torch.equal(p, q) for p, q in zip(c.model.parameters(), a.model.parameters()))


def test_make_does_not_touch_global_rng():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    wb.problems.make("digits-mlp", seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_digits_split_and_sizes():
    prob = wb.problems.make("digits-mlp", n_train=500, width=32, depth=1)
    x, y = prob.data()
    xt, yt = prob.data("test")
    assert x.shape == (500, 64) and xt.shape[0] == 359 and set(yt.tolist()) == set(range(10))
    assert 0 <= float(x.min()) and float(x.max()) <= 1
    assert prob.n_params == 64 * 32 + 32 + 32 * 10 + 10


def test_mse_loss_is_mean_squared_error_for_scalar_outputs():
    prob = wb.problems.make("teacher-student", depth=0, dim=5, n_train=64)
    x, y = prob.data()
    out = prob.model(x)
    assert torch.allclose(prob.loss(prob.model, (x, y)), ((out - y) ** 2).mean())


def test_gaussian_mixture_separation_controls_difficulty():
    easy = wb.problems.make("gaussian-mixture", separation=20.0, classes=3, dim=8)
    x, y = easy.data()
    means = torch.stack([x[y == c].mean(0) for c in range(3)])
    d = torch.cdist(means, means)
    assert float(d[d > 0].min()) > 15


@pytest.mark.parametrize("bad,field", [
    ({"width": -3}, "width"), ({"width": 2.5}, "width"), ({"activation": "swishy"}, "activation"),
    ({"loss": "hinge"}, "loss"), ({"n_train": 0}, "n_train"), ({"depth": "two"}, "depth"),
    ({"colour": 1}, "colour"),
])
def test_bad_options_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        wb.problems.make("digits-mlp", **bad)


def test_unknown_problem_lists_known():
    with pytest.raises(ValueError, match="known problems"):
        wb.problems.make("imagenet-on-a-toaster")


@settings(max_examples=40, deadline=None)
@given(seed=st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True), st.text(max_size=3), st.booleans()))
def test_bad_seed_rejected(seed):
    if isinstance(seed, float) and seed.is_integer() and seed >= 0:
        return
    with pytest.raises(ValueError, match="seed"):
        wb.problems.make("quadratic", seed=seed)
