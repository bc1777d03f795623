"""Learning-rate schedules: a multiplier of the base learning rate as a function of the step.

``schedule`` is one of constant | cosine | linear | step; ``warmup`` steps ramp linearly from lr/warmup to lr
first (for any schedule); ``min_lr_ratio`` is where cosine/linear end (fraction of the base lr); ``step`` halves
the rate at 50% and 75% of training (multiplying by 0.1 each time, the classic ResNet schedule).
"""
from __future__ import annotations

import math

from ..params import Param

__all__ = ["SCHEDULES", "SCHEDULE_PARAMS", "lr_factor"]

SCHEDULES = ("constant", "cosine", "linear", "step")

SCHEDULE_PARAMS = [
    Param("schedule", "constant", kind="choice", choices=SCHEDULES, doc="learning-rate schedule"),
    Param("warmup", 0, kind="int", low=0, high=10_000_000, doc="linear warm-up steps"),
    Param("min_lr_ratio", 0.0, low=0.0, high=1.0, doc="final lr / base lr for cosine and linear"),
]


def lr_factor(step: int, total: int, schedule: str = "constant", warmup: int = 0, min_lr_ratio: float = 0.0) -> float:
    """Multiplier of the base learning rate at 0-based ``step`` of ``total`` steps."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(total - warmup, 1)
    progress = min(max(step - warmup, 0) / span, 1.0)
    if schedule == "cosine":
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    if schedule == "linear":
        return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
    if schedule == "step":
        return 0.1 ** ((progress >= 0.5) + (progress >= 0.75))
    raise ValueError(f"schedule={schedule!r} is not accepted: schedule must be one of {list(SCHEDULES)}")
