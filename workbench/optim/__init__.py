"""``wb.optimizers``: the optimizer registry (``list``, ``schema``, ``make``, ``spec``, ``register``) and the
learning-rate schedules."""
from .registry import OptimizerSpec, list, lr_param, make, register, schema, spec  # noqa: A004
from .schedules import SCHEDULE_PARAMS, SCHEDULES, lr_factor
from . import builtin as _builtin  # noqa: F401  (registers the torch.optim optimizers)

__all__ = ["OptimizerSpec", "list", "schema", "make", "spec", "register", "lr_param",
           "SCHEDULES", "SCHEDULE_PARAMS", "lr_factor"]
