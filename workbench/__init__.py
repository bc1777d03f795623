"""Optimization-dynamics workbench: the engine.

    import workbench as wb
    prob = wb.problems.make("digits-mlp", seed=0)
    run = wb.train(prob, optimizer="gd", lr=0.1, steps=200, probes=[wb.probes.Norms(every=10)])
    run.record  # xarray.Dataset
"""
import sys as _sys

__version__ = "0.1.0"

from . import optim, params, problems, probes, records  # noqa: E402
from . import curvature  # noqa: E402
from .problems import Problem  # noqa: E402
from .records import load, save  # noqa: E402
from .run import Run, RunCrashed, resume, train  # noqa: E402
from .sweep import sweep  # noqa: E402

optimizers = optim
_sys.modules[__name__ + ".optimizers"] = optim

__all__ = ["problems", "optimizers", "probes", "records", "params", "Problem", "Run", "RunCrashed", "train",
           "resume", "save", "load", "__version__", "curvature"]
