"""``wb.optimizers``: the optimizer registry (``list``, ``schema``, ``make``, ``spec``, ``register``) and the
learning-rate schedules."""
from .registry import (OptimizerSpec, carry_state, eval_params, list, lr_param, make, register, schema,  # noqa: A004
                       spec, state_compatible)
from .schedules import SCHEDULE_PARAMS, SCHEDULES, lr_factor
from . import builtin as _builtin  # noqa: F401  (registers the torch.optim optimizers)
from . import zoo as _zoo  # noqa: F401  (pytorch_optimizer and extra torch.optim optimizers)
from . import instrumented as _instrumented  # noqa: F401  (SAM, zeroth-order SGD, DoG, normalized GD, noise)

__all__ = ["OptimizerSpec", "list", "schema", "make", "spec", "register", "lr_param",
           "SCHEDULES", "SCHEDULE_PARAMS", "lr_factor", "eval_params", "state_compatible",
           "carry_state"]
