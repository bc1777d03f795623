"""Problem registry: ``list()``, ``options(name)``, ``make(name, seed=0, **options)``, ``info(name, **options)``;
``custom(model, loss, train, ...)`` turns your own model and data into a Problem.

Add a problem with :func:`register`: a builder ``build(seed, **validated_options) -> Problem``, its option
specs (:class:`workbench.params.Param`) and optionally ``info(validated_options) -> dict`` that tells its size and
where its data is without loading it (see :func:`info`).
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any, Callable

import torch

from .._validate import check_int
from ..params import Param, validate_params
from .base import Problem, seeded
from .functions import FUNCTIONS, make_function_problem
from . import synthetic as _syn
from .subspace import subspace  # noqa: E402,F401 - θ = θ₀ + P z reparametrisation (Li et al. 2018)

__all__ = ["Problem", "list", "make", "options", "register", "describe", "seeded", "info", "custom"]


@dataclass
class ProblemSpec:
    name: str
    build: Callable[..., Problem]
    options: builtins.list[Param]
    doc: str
    kind: str
    info: Callable[[dict], dict] | None = None


_REGISTRY: dict[str, ProblemSpec] = {}


def register(name: str, build: Callable[..., Problem], options: builtins.list[Param], doc: str = "",
             kind: str = "classification", info: Callable[[dict], dict] | None = None) -> None:
    """Register problem ``name``. ``info(validated_options) -> dict`` (optional) returns, without loading the
    data, ``model`` (a zero-argument model factory, or None), ``n_train``, ``n_test``, ``data_available`` and
    ``data_note``; without it :func:`info` builds the problem (fine for generated or bundled data)."""
    if info is not None and not callable(info):
        raise TypeError(f"info must be callable(options) -> dict or None; got {type(info).__name__}")
    _REGISTRY[name] = ProblemSpec(name, build, builtins.list(options), doc, kind, info)


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


def make(name: str, seed: int = 0, init_seed: int | None = None, **opts) -> Problem:
    """Build problem ``name`` with ``seed`` and validated options.

    ``seed`` draws the data (and, by default, the initial model); ``init_seed`` (int in [0, 2**31 - 1], default
    None = ``seed``) draws the initial model alone, so the same data can be trained from different
    initialisations. ``problem.config()`` records ``init_seed`` when it differs from ``seed``, and
    ``make(name, seed=..., init_seed=..., **options)`` rebuilds the same problem.
    """
    spec = _spec(name)
    seed = check_int("seed", seed, 0, 2**31 - 1)
    init_seed = check_int("init_seed", init_seed, 0, 2**31 - 1, allow_none=True)
    values = validate_params(spec.options, opts, owner=f"problem {name!r}")
    prob = spec.build(seed, **values)
    if init_seed is not None and init_seed != prob.model_seed:
        prob.init_seed = init_seed
        prob.model = prob.new_model()
    return prob


def _count_params(factory: Callable[[], torch.nn.Module]) -> int:
    """Parameters of ``factory()``, built on the meta device (no memory, no initialisation cost) when possible."""
    try:
        with torch.device("meta"):
            model = seeded(0, factory)
    except (RuntimeError, NotImplementedError, TypeError):
        model = seeded(0, factory)
    return int(sum(p.numel() for p in model.parameters()))


def info(name: str, **opts) -> dict[str, Any]:
    """Size and data availability of problem ``name`` with ``opts`` (validated like :func:`make`).

    Returns ``{"name", "kind", "doc", "n_params", "n_train", "n_test", "data_available", "data_note"}``:
    ``n_params`` counts the model's parameters (built on the meta device), ``n_train`` / ``n_test`` the examples
    the problem would hold (None where unknown without the data), ``data_available`` whether its data is on
    this machine and ``data_note`` where it is or how to get it. Problems on files (Fashion-MNIST, CIFAR) do not
    read them; problems on generated data are built once to count.
    """
    spec = _spec(name)
    values = validate_params(spec.options, opts, owner=f"problem {name!r}")
    out: dict[str, Any] = {"name": name, "kind": spec.kind, "doc": spec.doc}
    if spec.info is not None:
        d = dict(spec.info(values))
        factory = d.pop("model", None)
        out["n_params"] = _count_params(factory) if factory is not None else None
        out.update({k: d.get(k) for k in ("n_train", "n_test", "data_available", "data_note")})
        out["data_available"] = bool(out["data_available"])
        return out
    prob = spec.build(0, **values)
    out["n_params"] = prob.n_params
    out["n_train"] = len(prob.train)
    out["n_test"] = len(prob.test) if prob.test is not None else 0
    out["data_available"] = True
    out["data_note"] = ("no data: a closed-form 2D test function" if spec.kind == "function"
                        else "in memory (generated from the seed, or bundled with a Python package); no files needed")
    return out


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
from . import real as _real  # noqa: E402  (Fashion-MNIST, CIFAR, MNIST-1D, text problems)
for _name, (_b, _specs, _doc, _info) in _real.PROBLEMS.items():
    register(_name, _b, _specs, _doc, info=_info)
from .custom import custom  # noqa: E402,F401  (your own model and data as a Problem)
from . import modular as _modular  # noqa: E402,F401  (registers modular-addition)
