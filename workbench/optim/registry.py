"""Optimizer registry: one hyperparameter schema for every optimizer, validated construction, and the metadata
the probes need (stability threshold rule, diagonal preconditioner).

Adding an optimizer takes a few lines::

    register(OptimizerSpec(
        name="mysgd", factory=lambda params, lr, momentum: MySGD(params, lr=lr, momentum=momentum),
        hparams=[lr_param(0.01), Param("momentum", 0.9, low=0.0, high=1.0, high_inclusive=False)],
        doc="...", threshold=lambda hp: (2 + 2 * hp["momentum"]) / hp["lr"]))
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch

from ..params import Param, validate_params

__all__ = ["OptimizerSpec", "register", "list", "schema", "make", "spec", "lr_param", "typical_lr", "TYPICAL_LR"]


def lr_param(default: float, low: float = 0.0, high: float = 100.0) -> Param:
    return Param("lr", default, low=low, high=high, log=True, low_inclusive=False, doc="learning rate")


@dataclass
class OptimizerSpec:
    """Everything the workbench knows about one optimizer.

    * ``factory(params, **hparams)`` builds the ``torch.optim.Optimizer`` from validated hyperparameters.
    * ``hparams``: the schema (name, default, bounds, log scale, choices) that drives validation and widgets.
    * ``check(hparams)``: optional cross-field validation (raise ``ValueError`` naming the field).
    * ``to_group(hparams)``: maps schema names to ``param_group`` keys for a live hyperparameter change
      (default: identity); ``None`` values mean "not settable live".
    * ``threshold(hparams)``: the stability threshold on (preconditioned, if ``preconditioned``) sharpness, e.g.
      2/lr for gradient descent; ``None`` when no such rule is known.
    * ``preconditioner(optimizer)``: list of per-parameter diagonal preconditioners P (update = P^-1 m), for
      adaptive methods.
    * ``needs_closure``: ``step(closure)`` must be given a closure that recomputes the loss (and gradients).
    """

    name: str
    factory: Callable[..., torch.optim.Optimizer]
    hparams: builtins.list[Param]
    doc: str = ""
    family: str = "first-order"
    source: str = "torch"
    reference: str = ""
    check: Callable[[dict], None] | None = None
    to_group: Callable[[dict], dict] | None = None
    threshold: Callable[[dict], float | None] | None = None
    preconditioned: bool = False
    preconditioner: Callable[[torch.optim.Optimizer], builtins.list[torch.Tensor] | None] | None = None
    needs_closure: bool = False
    extra: dict = field(default_factory=dict)

    def validate(self, hparams: dict) -> dict:
        values = validate_params(self.hparams, hparams, owner=f"optimizer {self.name!r}")
        if self.check is not None:
            self.check(values)
        return values

    def group_values(self, hparams: dict) -> dict:
        return self.to_group(hparams) if self.to_group is not None else dict(hparams)

    def stability_threshold(self, hparams: dict) -> float | None:
        return None if self.threshold is None else self.threshold(hparams)


_REGISTRY: dict[str, OptimizerSpec] = {}


def register(spec: OptimizerSpec) -> OptimizerSpec:
    names = [p.name for p in spec.hparams]
    if len(set(names)) != len(names):
        raise ValueError(f"optimizer {spec.name!r} declares a hyperparameter twice: {names}")
    _REGISTRY[spec.name] = spec
    return spec


def list(family: str | None = None) -> builtins.list[str]:  # noqa: A001 - the public name is `list`
    """Registered optimizer names (optionally one family)."""
    return [n for n, s in _REGISTRY.items() if family is None or s.family == family]


def spec(name: str) -> OptimizerSpec:
    if not isinstance(name, str) or name not in _REGISTRY:
        raise ValueError(f"optimizer={name!r} is not a known optimizer; known optimizers: {list()}")
    return _REGISTRY[name]


def schema(name: str) -> builtins.list[Param]:
    """The hyperparameter specs of optimizer ``name``: name, default, bounds, log scale, choices."""
    return builtins.list(spec(name).hparams)


def make(name: str, params: Iterable, **hparams: Any) -> torch.optim.Optimizer:
    """Build optimizer ``name`` over ``params`` with validated hyperparameters (defaults fill the rest)."""
    s = spec(name)
    values = s.validate(hparams)
    opt = s.factory(params, **values)
    opt.workbench_spec = s
    opt.workbench_hparams = values
    return opt


# -- typical learning rates (the dashboard warns when a hot swap carries an lr outside them) -------------------
#: (low, high) learning rates an optimizer is usually run with (rules of thumb from the papers and library
#: defaults, not hard bounds: the schema's bounds are what is *valid*). Adam family 1e-5..1e-2; plain/momentum SGD
#: 1e-4..1; sign methods (Lion, signSGD: a step of lr per coordinate) 1e-5..1e-2; learning-rate-free methods
#: (Prodigy, D-Adaptation, DoG) near 1.
TYPICAL_LR: dict[str, tuple[float, float]] = {
    **{n: (1e-5, 1e-2) for n in ("adam", "adamw", "radam", "nadam", "adamp", "adopt", "ademamix", "adabelief",
                                 "diffgrad", "adan", "lamb", "galore", "adafactor", "rmsprop", "soap", "shampoo",
                                 "schedulefree_adamw")},
    **{n: (1e-4, 1.0) for n in ("gd", "sgd", "sgdp", "lars", "ngd", "noisy", "zo_sgd", "lookahead", "sam", "asam",
                                "adagrad", "madgrad", "sophia", "adahessian", "muon")},
    **{n: (1e-5, 1e-2) for n in ("lion", "signsgd")},
    **{n: (0.1, 10.0) for n in ("prodigy", "dadapt_adam", "dadapt_sgd", "dog", "schedulefree_sgd", "lbfgs")},
}


def typical_lr(name: str) -> tuple[float, float] | None:
    """The (low, high) learning rates optimizer ``name`` is usually run with: ``spec.extra["typical_lr"]`` if
    declared, else :data:`TYPICAL_LR`, else two decades below to one above the schema's default lr (None when the
    optimizer has no lr). ValueError for an unknown optimizer."""
    s = spec(name)
    if "typical_lr" in s.extra:
        return tuple(s.extra["typical_lr"])
    if name in TYPICAL_LR:
        return TYPICAL_LR[name]
    lr = next((p for p in s.hparams if p.name == "lr"), None)
    if lr is None or not isinstance(lr.default, (int, float)) or lr.default <= 0:
        return None
    return (lr.default / 100.0, lr.default * 10.0)


# -- additive hooks used by the run loop (issue 7) -------------------------------------------------------------
def eval_params(optimizer: torch.optim.Optimizer):
    """Context in which the parameters hold the point to *evaluate* (Schedule-Free: the average x instead of the
    training point y); a no-op for every other optimizer. Use it around probes and evaluation."""
    import contextlib

    s = getattr(optimizer, "workbench_spec", None)
    hook = None if s is None else s.extra.get("eval_params")
    return hook(optimizer) if hook is not None else contextlib.nullcontext()


def state_compatible(old: str, new: str) -> bool:
    """Whether a hot swap from optimizer ``old`` to ``new`` can carry the per-parameter state (same layout and
    meaning, e.g. adam <-> adamw <-> radam moments); declared by ``extra["state_family"]``."""
    a, b = spec(old).extra.get("state_family"), spec(new).extra.get("state_family")
    return a is not None and a == b


def carry_state(old_opt: torch.optim.Optimizer, new_opt: torch.optim.Optimizer) -> int:
    """Copy per-parameter state tensors from ``old_opt`` to ``new_opt`` (same parameters); returns how many
    parameters had state carried."""
    n = 0
    for p, st in old_opt.state.items():
        if isinstance(p, torch.Tensor) and st:
            new_opt.state[p] = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in st.items()}
            n += 1
    return n


def call_closure(closure: Callable, **kw):
    """Call a run-loop closure with keyword options (``backward=False``, ``create_graph=True``, ...); a plain user
    closure that takes no keywords is called bare."""
    try:
        return closure(**kw)
    except TypeError as exc:
        if "unexpected keyword" not in str(exc):
            raise
        return closure()
