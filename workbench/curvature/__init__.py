"""Curvature of neural-network losses: Hessian / GGN / empirical-Fisher operators, Lanczos eigenvalues,
stochastic Lanczos quadrature spectral densities, Hutchinson / Hutch++ traces and diagonals.

    H = wb.curvature.hessian(model, prob.loss, prob.data())
    res = wb.curvature.eigs(H, k=5)                 # top-5, Ritz residuals, converged flag
    dens = wb.curvature.spectral_density(H)          # xarray.DataArray over "eigenvalue"
    tr = wb.curvature.trace(H)                       # .value, .stderr

At scale: ``hessian(model, loss, loader, max_memory="8GiB")`` streams microbatches sized to a memory budget,
``H.block("layer3")`` is a per-layer operator, ``block_spectra(H, blocks="layers", k=3)`` tabulates per-layer
spectra, and ``eigs(H, k=1, data_subsets=4)`` reports the spread of the estimate across disjoint data subsets.

Every analysis leaves the model exactly as it was (mode, BatchNorm statistics, parameters, .grad, RNG).
"""
from .operators import (DEFAULT_HVP_METHOD, HVP_METHODS, CurvatureOperator, LinearOperator, MemoryPlan,  # noqa
                        fisher, ggn, hessian, memory_plan)
from .lanczos import ConvergenceWarning, EigResult, SubsetSpread, eigs, eigs_spread  # noqa: F401
from .blocks import BLOCK_GROUPINGS, block_groups, block_spectra  # noqa: F401
from ._common import parse_memory  # noqa: F401
from .density import SLQResult, slq, spectral_density  # noqa: F401
from .estimators import (DiagonalResult, NegativeMass, TraceResult, condition_number, diagonal,  # noqa: F401
                         lambda_min, negative_mass, trace)
from .variance import VARIANCE_METHODS, hessian_variance  # noqa: F401

__all__ = ["LinearOperator", "CurvatureOperator", "hessian", "ggn", "fisher", "eigs", "EigResult",
           "ConvergenceWarning", "HVP_METHODS", "DEFAULT_HVP_METHOD", "spectral_density", "slq", "SLQResult",
           "trace", "TraceResult", "diagonal", "DiagonalResult", "lambda_min", "condition_number", "negative_mass",
           "NegativeMass", "hessian_variance", "VARIANCE_METHODS", "memory_plan", "MemoryPlan", "SubsetSpread",
           "eigs_spread", "block_spectra", "block_groups", "BLOCK_GROUPINGS", "parse_memory"]
