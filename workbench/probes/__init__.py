"""Probes: measurements taken during training on their own schedules (see :mod:`workbench.probes.base`)."""
from .base import Probe, ProbeContext, Var
from .basic import Eval, Norms, Trajectory, countsketch
from .curvature import (BatchSharpness, GradientSubspace, Sharpness, SpectralDensity, Trace,  # noqa: F401
                        preconditioner_vector, stability_threshold)

__all__ = ["Probe", "ProbeContext", "Var", "Norms", "Eval", "Trajectory", "countsketch"]
__all__ += ["Sharpness", "GradientSubspace", "Trace", "SpectralDensity", "BatchSharpness",
            "stability_threshold", "preconditioner_vector"]
from .optimizer import SAMProbe, ZerothOrderProbe  # noqa: E402

__all__ += ["SAMProbe", "ZerothOrderProbe"]
