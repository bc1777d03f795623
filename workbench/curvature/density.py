"""Stochastic Lanczos quadrature (SLQ): the spectral density of a symmetric operator.

For a unit probe ``v``, ``m`` Lanczos steps give a tridiagonal ``T`` whose eigenvalues ``theta_j`` (nodes) and squared
first eigenvector components ``tau_j^2`` (weights, summing to 1) form the Gauss quadrature rule of the spectral
measure ``v^T delta(lambda - A) v``; averaged over random probes it estimates the density of eigenvalues
``(1/n) sum_i delta(lambda - lambda_i)`` (Golub & Meurant; Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019;
Yao et al. 2020, PyHessian). All probes run together as one block (one ``matmat`` per step), each fully
reorthogonalized against its own Lanczos basis.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .._validate import check_float, check_int

__all__ = ["slq", "SLQResult", "spectral_density", "gaussian_density"]


@dataclass
class SLQResult:
    """Quadrature nodes and weights per probe: ``nodes``, ``weights`` of shape ``(probes, steps)`` (numpy, float64).

    Steps after a probe's Lanczos breakdown (an invariant subspace found early) carry weight 0.
    ``n_matvec`` counts operator products.
    """

    nodes: np.ndarray
    weights: np.ndarray
    n_matvec: int
    probes: int
    steps: int


def slq(op, probes: int = 4, steps: int = 50, seed: int = 0) -> SLQResult:
    """Run ``probes`` Lanczos processes of ``steps`` steps as one block; see module docstring."""
    n = op.size
    probes = check_int("probes", probes, low=1, high=10_000)
    steps = check_int("steps", steps, low=1, high=10_000)
    steps = min(steps, n)
    dev, dt = op.device, op.dtype
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    v = (torch.randint(0, 2, (n, probes), generator=gen, device=dev).to(dt) * 2 - 1)     # Rademacher probes
    v = v / v.norm(dim=0, keepdim=True)
    Qs = torch.zeros(probes, steps, n, device=dev, dtype=dt)        # per-probe Lanczos bases
    alpha = torch.zeros(probes, steps, dtype=torch.float64)
    beta = torch.zeros(probes, steps, dtype=torch.float64)
    active = torch.ones(probes, dtype=torch.bool)
    length = torch.full((probes,), steps, dtype=torch.long)
    q = v.T.contiguous()                                            # (probes, n)
    n_mv = 0
    for j in range(steps):
        Qs[:, j] = q
        w = op.matmat(q.T).T                                        # (probes, n); columns of q.T are rows of q
        n_mv += probes
        a = (w * q).sum(1)
        alpha[:, j] = a.double().cpu()
        # three-term recurrence, then one full reorthogonalization pass against each probe's own basis
        w = w - a[:, None] * q
        if j > 0:
            w = w - beta[:, j - 1].to(device=dev, dtype=dt)[:, None] * Qs[:, j - 1]
        basis = Qs[:, :j + 1]                                       # (probes, j+1, n)
        coef = torch.bmm(basis, w.unsqueeze(2))                     # (probes, j+1, 1)
        w = w - torch.bmm(coef.transpose(1, 2), basis).squeeze(1)
        b = w.norm(dim=1)
        if j + 1 < steps:
            scale = torch.clamp(alpha[:, :j + 1].abs().max(dim=1).values, min=1e-30).to(b.device, b.dtype)
            dead = (b <= 1e-6 * scale.to(b.dtype)).cpu() & active
            for p in dead.nonzero().flatten().tolist():
                active[p] = False
                length[p] = j + 1
            beta[:, j] = torch.where(active, b.double().cpu(), torch.zeros_like(beta[:, j]))
            q = torch.where(active.to(dev)[:, None], w / torch.clamp(b, min=1e-30)[:, None], torch.zeros_like(w))
            if not bool(active.any()):
                break
    nodes = np.zeros((probes, steps))
    weights = np.zeros((probes, steps))
    for p in range(probes):
        m = int(length[p])
        T = torch.diag(alpha[p, :m]) + torch.diag(beta[p, :m - 1], 1) + torch.diag(beta[p, :m - 1], -1)
        th, U = torch.linalg.eigh(T)
        nodes[p, :m] = th.numpy()
        weights[p, :m] = (U[0] ** 2).numpy()
        if m < steps:
            nodes[p, m:] = th.numpy()[-1]
    return SLQResult(nodes=nodes, weights=weights, n_matvec=n_mv, probes=probes, steps=steps)


def gaussian_density(nodes: np.ndarray, weights: np.ndarray, grid: np.ndarray, sigma: float) -> np.ndarray:
    """``sum_j w_j N(grid; node_j, sigma^2)`` averaged over probes (each probe's weights sum to 1)."""
    nodes = np.asarray(nodes).reshape(-1)
    weights = np.asarray(weights).reshape(-1) / np.asarray(weights).reshape(-1).sum()
    out = np.zeros_like(grid, dtype=np.float64)
    chunk = 256
    for i in range(0, nodes.size, chunk):
        d = (grid[:, None] - nodes[None, i:i + chunk]) / sigma
        out += (np.exp(-0.5 * d * d) * weights[None, i:i + chunk]).sum(1)
    return out / (sigma * math.sqrt(2 * math.pi))


def spectral_density(op, probes: int = 4, steps: int = 50, seed: int = 0, grid: int = 1000,
                     width: float = 0.01, sigma: float | None = None, name: str = "spectral_density"):
    """The eigenvalue density of ``op`` by SLQ, as an ``xarray.DataArray`` over ``eigenvalue``.

    ``probes`` Rademacher probes run as a block for ``steps`` Lanczos steps each (``probes * steps`` products).
    Every quadrature node is broadened by a Gaussian of standard deviation ``sigma``; by default
    ``sigma = width * (max node - min node)`` (1% of the spectral range; ``sigma=`` sets it absolutely). The grid
    spans ``[min node - 6 sigma, max node + 6 sigma]`` with ``grid`` points (at least 8 per ``sigma``), so the density
    integrates to 1 (trapezoid rule) up to ~1e-6. ``attrs`` carry ``sigma``, ``probes``, ``steps``, ``n_matvec`` and
    the raw quadrature ``nodes`` and ``weights`` (flattened, probe-major; each probe's weights sum to 1, so divide
    by ``probes`` for the mixture). The mass of ``op.size * weight`` near an eigenvalue estimates its multiplicity.
    """
    import xarray as xr

    grid = check_int("grid", grid, low=16, high=10_000_000)
    width = check_float("width", width, low=0.0, high=1.0, low_inclusive=False)
    sigma = check_float("sigma", sigma, low=0.0, low_inclusive=False, allow_none=True)
    res = slq(op, probes, steps, seed)
    lo, hi = float(res.nodes.min()), float(res.nodes.max())
    span = hi - lo
    if sigma is None:
        sigma = width * span if span > 0 else width * max(abs(lo), 1.0)
    npts = max(grid, int(math.ceil((span + 12 * sigma) / sigma * 8)) + 1)
    npts = min(npts, 200_000)
    x = np.linspace(lo - 6 * sigma, hi + 6 * sigma, npts)
    dens = gaussian_density(res.nodes, res.weights, x, sigma)
    return xr.DataArray(
        dens, dims=("eigenvalue",), coords={"eigenvalue": x}, name=name,
        attrs={"long_name": "spectral density", "units": "1 / eigenvalue",
               "description": f"SLQ estimate of the eigenvalue density ({res.probes} Rademacher probes x "
                              f"{res.steps} Lanczos steps), each node broadened by a Gaussian of std sigma",
               "sigma": float(sigma), "width": float(width), "probes": res.probes, "steps": res.steps,
               "n_matvec": res.n_matvec, "seed": int(seed), "size": int(op.size),
               "nodes": res.nodes.reshape(-1), "weights": res.weights.reshape(-1)})
