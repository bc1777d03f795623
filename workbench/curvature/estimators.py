"""Stochastic trace and diagonal estimates, and derived spectral quantities.

Hutchinson (1989): ``tr(A) ~ mean_i z_i^T A z_i`` with Rademacher ``z``; standard error from the sample spread.
Hutch++ (Meyer, Musco, Musco & Woodruff 2021): spend a third of the products on a sketch ``Q = orth(A S)``, take
``tr(Q^T A Q)`` exactly and Hutchinson on the deflated remainder ``(I - QQ^T) A (I - QQ^T)``; the standard error is
the remainder's (the exact part has none given ``Q``), typically far smaller for spectra with outliers.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validate import check_choice, check_float, check_int
from .lanczos import eigs, orthonormalize

__all__ = ["trace", "TraceResult", "diagonal", "DiagonalResult", "lambda_min", "condition_number",
           "negative_mass", "NegativeMass"]


@dataclass
class TraceResult:
    value: float
    stderr: float
    n_matvec: int
    method: str
    samples: int

    def __float__(self):
        return self.value


@dataclass
class DiagonalResult:
    """``value`` and ``stderr`` (n,) tensors; ``unflatten`` them with the operator's ``unflatten``."""

    value: torch.Tensor
    stderr: torch.Tensor
    n_matvec: int
    samples: int


def _rademacher(n, k, gen, dev, dt):
    return torch.randint(0, 2, (n, k), generator=gen, device=dev).to(dt) * 2 - 1


def _blocked(op, Z, block):
    return torch.cat([op.matmat(Z[:, i:i + block]) for i in range(0, Z.shape[1], block)], 1)


def trace(op, method: str = "hutch++", n: int = 99, seed: int = 0, block: int = 16) -> TraceResult:
    """Stochastic trace of ``op`` with ``n`` products (``method="hutchinson"`` or ``"hutch++"``), with standard error.

    ``block`` probes go through one batched ``matmat``. For Hutch++, ``n`` is split in three: sketch, exact part,
    remainder probes (the sketch dimension is ``n // 3``). ``n >= size`` for Hutch++ computes the trace exactly.
    """
    method = check_choice("method", method, ("hutchinson", "hutch++"))
    n = check_int("n", n, low=2 if method == "hutchinson" else 3)
    block = check_int("block", block, low=1)
    N, dev, dt = op.size, op.device, op.dtype
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    if method == "hutchinson":
        Z = _rademacher(N, n, gen, dev, dt)
        est = (Z * _blocked(op, Z, block)).sum(0).double()
        return TraceResult(float(est.mean()), float(est.std(unbiased=True) / math.sqrt(n)), n, method, n)
    s = n // 3
    if 2 * s >= N:                       # small operator: exact trace from the basis vectors
        I = torch.eye(N, device=dev, dtype=dt)
        val = float(torch.diagonal(_blocked(op, I, block)).double().sum())
        return TraceResult(val, 0.0, N, method, 0)
    m = n - 2 * s
    S = _rademacher(N, s, gen, dev, dt)
    Q = torch.linalg.qr(_blocked(op, S, block)).Q          # Householder QR: stable and fast for a sketch
    AQ = _blocked(op, Q, block)
    exact = float((Q * AQ).sum().double())
    G = _rademacher(N, m, gen, dev, dt)
    G = G - Q @ (Q.T @ G)
    AG = _blocked(op, G, block)
    AG = AG - Q @ (Q.T @ AG)
    est = (G * AG).sum(0).double()
    stderr = float(est.std(unbiased=True) / math.sqrt(m)) if m > 1 else float("nan")
    return TraceResult(exact + float(est.mean()), stderr, s + Q.shape[1] + m, method, m)


def diagonal(op, n: int = 100, seed: int = 0, block: int = 16) -> DiagonalResult:
    """Hutchinson diagonal ``mean_i z_i * (A z_i)`` (Rademacher ``z``) with per-entry standard errors (``n`` products)."""
    n = check_int("n", n, low=2)
    N, dev, dt = op.size, op.device, op.dtype
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    Z = _rademacher(N, n, gen, dev, dt)
    est = Z * _blocked(op, Z, block)
    return DiagonalResult(est.mean(1), est.std(1, unbiased=True) / math.sqrt(n), n, n)


def lambda_min(op, tol: float = 1e-3, **kwargs):
    """The smallest (most negative) eigenvalue, ``eigs(op, k=1, which="SA")``; returns ``(value, EigResult)``."""
    res = eigs(op, k=1, which="SA", tol=tol, **kwargs)
    return float(res.values[0]), res


def condition_number(op, k: int = 10, tol: float = 1e-3, **kwargs):
    """Condition number of the top-``k`` block, ``lambda_1 / lambda_k`` of the k largest eigenvalues.

    For curvature matrices whose bulk sits near zero the full condition number is meaningless (or infinite); the
    top block's ratio says how anisotropic the outlier subspace that dominates optimization is. Returns
    ``(value, EigResult)``; ``inf`` when ``lambda_k <= 0``.
    """
    res = eigs(op, k=k, which="LA", tol=tol, **kwargs)
    lk = float(res.values[-1])
    return (float(res.values[0]) / lk if lk > 0 else math.inf), res


@dataclass
class NegativeMass:
    """Spectral mass below zero from SLQ: ``fraction`` of eigenvalues (by density weight) below ``-threshold``,
    ``magnitude_ratio`` = sum|lambda_neg| / sum|lambda| (Ghorbani et al. 2019), each with a standard error over
    probes."""

    fraction: float
    fraction_stderr: float
    magnitude_ratio: float
    magnitude_ratio_stderr: float
    n_matvec: int


def negative_mass(op, probes: int = 8, steps: int = 50, seed: int = 0, threshold: float = 0.0) -> NegativeMass:
    """Negative-eigenvalue mass of ``op`` from SLQ quadrature (no broadening)."""
    from .density import slq

    threshold = check_float("threshold", threshold, low=0.0)
    r = slq(op, probes, steps, seed)
    neg = r.nodes < -threshold
    frac = (r.weights * neg).sum(1)
    absw = r.weights * np.abs(r.nodes)
    ratio = (absw * neg).sum(1) / np.maximum(absw.sum(1), 1e-300)
    se = lambda a: float(a.std(ddof=1) / math.sqrt(len(a))) if len(a) > 1 else float("nan")
    return NegativeMass(float(frac.mean()), se(frac), float(ratio.mean()), se(ratio), r.n_matvec)
