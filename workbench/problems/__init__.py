"""Problem registry: ``list()``, ``options(name)``, ``make(name, seed=0, **options)``.

Add a problem with :func:`register`: a builder ``build(seed, **validated_options) -> Problem`` and its option
specs (:class:`workbench.params.Param`).
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Callable

from .._validate import check_int
from ..params import Param, validate_params
from .base import Problem, seeded
from .functions import FUNCTIONS, make_function_problem
from . import synthetic as _syn
from .subspace import subspace  # noqa: E402,F401 - θ = θ₀ + P z reparametrisation (Li et al. 2018)

__all__ = ["Problem", "list", "make", "options", "register", "describe", "seeded"]


@dataclass
class ProblemSpec:
    name: str
    build: Callable[..., Problem]
    options: builtins.list[Param]
    doc: str
    kind: str


_REGISTRY: dict[str, ProblemSpec] = {}


def register(name: str, build: Callable[..., Problem], options: builtins.list[Param], doc: str = "",
             kind: str = "classification") -> None:
    _REGISTRY[name] = ProblemSpec(name, build, builtins.list(options), doc, kind)


def list(kind: str | None = None) -> builtins.list[str]:  # noqa: A001 - the public name is `list`
    """Registered problem names (optionally only one kind: function, classification, regression)."""
    return [n for n, s in _REGISTRY.items() if kind is None or s.kind == kind]


def _spec(name) -> ProblemSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"problem={name!r} is not a known problem; known problems: {list()}")
    return _REGISTRY[name]


def options(name: str) -> builtins.list[Param]:
    """The option specs of a problem (name, default, bounds, log scale, choices)."""
    return builtins.list(_spec(name).options)


def describe(name: str) -> str:
    return _spec(name).doc


def make(name: str, seed: int = 0, **opts) -> Problem:
    """Build problem ``name`` with ``seed`` (data and initial model) and validated options."""
    spec = _spec(name)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    values = validate_params(spec.options, opts, owner=f"problem {name!r}")
    return spec.build(seed, **values)


for _name in FUNCTIONS:
    _b, _specs, _doc = make_function_problem(_name)
    register(_name, _b, _specs, _doc, kind="function")

register("gaussian-mixture", _syn.gaussian_mixture, _syn.GMM_PARAMS,
         "C-class isotropic Gaussian mixture classified by an MLP.")
register("teacher-student", _syn.teacher_student, _syn.TS_PARAMS,
         "Regression of a random teacher network by a student MLP.", kind="regression")
for _k in ("spirals", "circles", "xor", "gauss"):
    register(_k, _syn.make_playground(_k), _syn.PLAYGROUND_PARAMS,
             f"TensorFlow-Playground '{_k}' set with a small MLP.")
register("digits-mlp", _syn.digits_mlp, _syn.DIGITS_PARAMS, "sklearn handwritten digits with an MLP.")
