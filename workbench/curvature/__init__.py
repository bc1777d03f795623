"""Curvature of neural-network losses: Hessian / GGN / empirical-Fisher operators, Lanczos eigenvalues,
stochastic Lanczos quadrature spectral densities, Hutchinson / Hutch++ traces and diagonals.

    H = wb.curvature.hessian(model, prob.loss, prob.data())
    res = wb.curvature.eigs(H, k=5)                 # top-5, Ritz residuals, converged flag
    dens = wb.curvature.spectral_density(H)          # xarray.DataArray over "eigenvalue"
    tr = wb.curvature.trace(H)                       # .value, .stderr

Every analysis leaves the model exactly as it was (mode, BatchNorm statistics, parameters, .grad, RNG).
"""
from .operators import (DEFAULT_HVP_METHOD, HVP_METHODS, CurvatureOperator, LinearOperator, fisher, ggn,  # noqa
                        hessian)
from .lanczos import ConvergenceWarning, EigResult, eigs  # noqa: F401
from .density import SLQResult, slq, spectral_density  # noqa: F401
from .estimators import (DiagonalResult, NegativeMass, TraceResult, condition_number, diagonal,  # noqa: F401
                         lambda_min, negative_mass, trace)
from .variance import VARIANCE_METHODS, hessian_variance  # noqa: F401

__all__ = ["LinearOperator", "CurvatureOperator", "hessian", "ggn", "fisher", "eigs", "EigResult",
           "ConvergenceWarning", "HVP_METHODS", "DEFAULT_HVP_METHOD", "spectral_density", "slq", "SLQResult",
           "trace", "TraceResult", "diagonal", "DiagonalResult", "lambda_min", "condition_number", "negative_mass",
           "NegativeMass", "hessian_variance", "VARIANCE_METHODS"]
