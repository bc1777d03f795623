"""2D test functions as problems: the parameter is a point in the plane, the loss is f(point).

Each entry gives the function on tensors of shape (..., 2), its domain for plotting, its global minima and a
classic starting point. Gradients are checked against closed forms in the tests.
"""
from __future__ import annotations

import math

import torch
from torch.utils.data import TensorDataset

from ..params import Param
from .base import Problem
from .losses import function_value
from .models import PointModel


def quadratic(p, lambda1=1.0, lambda2=10.0, angle=0.0):
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    u = c * p[..., 0] + s * p[..., 1]
    v = -s * p[..., 0] + c * p[..., 1]
    return 0.5 * (lambda1 * u ** 2 + lambda2 * v ** 2)


def rosenbrock(p, a=1.0, b=100.0):
    x, y = p[..., 0], p[..., 1]
    return (a - x) ** 2 + b * (y - x ** 2) ** 2


def himmelblau(p):
    x, y = p[..., 0], p[..., 1]
    return (x ** 2 + y - 11) ** 2 + (x + y ** 2 - 7) ** 2


def beale(p):
    x, y = p[..., 0], p[..., 1]
    return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y ** 2) ** 2 + (2.625 - x + x * y ** 3) ** 2


def saddle(p):
    x, y = p[..., 0], p[..., 1]
    return x ** 2 - y ** 2


def rastrigin(p, A=10.0):
    return 2 * A + (p ** 2 - A * torch.cos(2 * math.pi * p)).sum(-1)


# name -> (fn, extra option specs, domain, minima(opts), start, doc)
FUNCTIONS = {
    "quadratic": (quadratic,
                  [Param("lambda1", 1.0, low=-100.0, high=1000.0, doc="first Hessian eigenvalue"),
                   Param("lambda2", 10.0, low=-100.0, high=1000.0, doc="second Hessian eigenvalue"),
                   Param("angle", 0.0, low=-180.0, high=180.0, doc="rotation of the eigenbasis, degrees")],
                  ((-2.0, 2.0), (-2.0, 2.0)), lambda o: [(0.0, 0.0)], (-1.5, 1.0),
                  "f = (lambda1 u^2 + lambda2 v^2)/2 in a basis rotated by `angle`; Hessian eigenvalues lambda1, lambda2."),
    "rosenbrock": (rosenbrock,
                   [Param("a", 1.0, low=-10.0, high=10.0), Param("b", 100.0, low=0.0, high=1000.0)],
                   ((-2.0, 2.0), (-1.0, 3.0)), lambda o: [(o["a"], o["a"] ** 2)], (-1.2, 1.0),
                   "Rosenbrock's banana valley (a - x)^2 + b (y - x^2)^2."),
    "himmelblau": (himmelblau, [], ((-5.0, 5.0), (-5.0, 5.0)),
                   lambda o: [(3.0, 2.0), (-2.805118, 3.131312), (-3.779310, -3.283186), (3.584428, -1.848126)],
                   (0.0, 0.0), "Himmelblau's function: four equal global minima."),
    "beale": (beale, [], ((-4.5, 4.5), (-4.5, 4.5)), lambda o: [(3.0, 0.5)], (1.0, 1.5),
              "Beale's function: flat plateaus and steep ridges; minimum at (3, 0.5)."),
    "saddle": (saddle, [], ((-2.0, 2.0), (-2.0, 2.0)), lambda o: [], (-1.5, 1e-3),
               "x^2 - y^2: a strict saddle at the origin; unbounded below along y."),
    "rastrigin": (rastrigin, [Param("A", 10.0, low=0.0, high=100.0)], ((-5.12, 5.12), (-5.12, 5.12)),
                  lambda o: [(0.0, 0.0)], (3.5, -2.5),
                  "Rastrigin's function: a bowl covered in regularly spaced local minima."),
}


def make_function_problem(name: str):
    fn, extra, domain, minima, start, doc = FUNCTIONS[name]
    specs = [Param("x0", start[0], low=-1e3, high=1e3, doc="starting x"),
             Param("y0", start[1], low=-1e3, high=1e3, doc="starting y")] + list(extra)
    extra_names = [p.name for p in extra]

    def build(seed: int, **opts) -> Problem:
        kw = {k: opts[k] for k in extra_names}
        f = (lambda p: fn(p, **kw)) if kw else fn
        dummy = TensorDataset(torch.zeros(1, 1), torch.zeros(1))
        return Problem(name=name, kind="function", model_factory=lambda: PointModel(f, (opts["x0"], opts["y0"])),
                       loss_fn=function_value, train=dummy, test=None, options=dict(opts), seed=seed, doc=doc,
                       function=f, domain=domain, minima=[tuple(m) for m in minima(opts)])

    return build, specs, doc
