"""Probes: measurements taken during training on their own schedules (see :mod:`workbench.probes.base`)."""
from .base import Probe, ProbeContext, Var
from .basic import Eval, Norms, Trajectory, countsketch

__all__ = ["Probe", "ProbeContext", "Var", "Norms", "Eval", "Trajectory", "countsketch"]
