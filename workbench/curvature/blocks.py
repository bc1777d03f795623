"""Per-block (per-layer, or any parameter subset) spectra of a curvature operator.

    H = wb.curvature.hessian(model, prob.loss, data, max_memory="2GiB")
    ds = wb.curvature.block_spectra(H, blocks="layers", k=3, density=True)   # xarray.Dataset over (block, eig)
    ds.eigenvalue.sel(block="layer3.0.conv1")                                   # top-3 of that block

Each block's operator is ``H.block(selection)``: the diagonal block ``H[S, S]`` of the parameters ``S`` (the
curvature of the loss as a function of those parameters alone, the others held fixed), on the same data, mode and
microbatches. Its eigenvalues are not eigenvalues of ``H``; by Cauchy interlacing the top eigenvalue of every block
is at most ``lambda_max(H)``.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .._validate import check_float, check_int
from .density import gaussian_density, slq
from .lanczos import eigs

__all__ = ["block_spectra", "block_groups", "BLOCK_GROUPINGS"]

BLOCK_GROUPINGS = ("layers", "top", "params")


def block_groups(names: list[str], blocks: Any = "layers") -> dict[str, Any]:
    """``{label: selection}`` for :func:`block_spectra`.

    ``"layers"``: one block per module that owns parameters (``layer1.0.conv1`` holds ``layer1.0.conv1.weight``),
    ``"top"``: one per top-level child (``layer1``, ``fc``...), ``"params"``: one per parameter tensor; a list of
    selections (module prefixes, names, glob patterns, lists of them, or predicates ``name -> bool``); or a dict
    ``{label: selection}``.
    """
    if isinstance(blocks, str):
        if blocks not in BLOCK_GROUPINGS:
            raise ValueError(f"blocks={blocks!r} is not accepted: blocks must be one of {list(BLOCK_GROUPINGS)}, a "
                             "list of selections (prefixes, names, patterns or predicates) or a dict label -> "
                             "selection")
        out: dict[str, list[str]] = {}
        for n in names:
            if blocks == "params":
                key = n
            elif blocks == "top":
                key = n.split(".", 1)[0]
            else:
                key = n.rsplit(".", 1)[0] if "." in n else n
            out.setdefault(key, []).append(n)
        return dict(out)
    if isinstance(blocks, dict):
        if not blocks:
            raise ValueError("blocks: the dict is empty; give at least one label -> selection")
        return {str(k): v for k, v in blocks.items()}
    try:
        items = list(blocks)
    except TypeError as exc:
        raise ValueError(f"blocks must be one of {list(BLOCK_GROUPINGS)}, a list of selections or a dict; got "
                         f"{type(blocks).__name__}") from exc
    if not items:
        raise ValueError("blocks: the list is empty; give at least one selection")
    out2 = {}
    for i, sel in enumerate(items):
        label = sel if isinstance(sel, str) else (getattr(sel, "__name__", None) if callable(sel) else None)
        if not label or label == "<lambda>" or label in out2:
            label = f"block{i}"
        out2[label] = sel
    return out2


def block_spectra(op_or_factory: Any, blocks: Any = "layers", k: int = 1, tol: float = 1e-3, density: bool = False,
                  probes: int = 4, steps: int = 40, grid: int = 400, width: float = 0.01, seed: int = 0,
                  which: str = "LA", progress: bool = False) -> xr.Dataset:
    """Top-``k`` eigenvalues (and optionally SLQ densities) of the diagonal blocks of a curvature operator.

    Parameters
    ----------
    op_or_factory: a :class:`~workbench.curvature.CurvatureOperator` (from ``hessian``/``ggn``/``fisher``; blocks
        are ``op.block(selection)``) or a factory ``params -> operator`` called with ``None`` (the full parameter
        set, for the names) and then with each block's list of parameter names.
    blocks: ``"layers"`` (default; one block per module owning parameters), ``"top"`` (per top-level child),
        ``"params"`` (per tensor), a list of selections or a dict ``{label: selection}`` (see :func:`block_groups`).
    k: eigenvalues per block (blocks smaller than ``k`` give all theirs; the rest is NaN). tol, which, seed: as
        :func:`eigs`.
    density: also estimate each block's spectral density by SLQ (``probes`` x ``steps`` products per block),
        broadened by a Gaussian of std ``width`` x the range of all blocks' nodes on a common grid of ``grid``
        points.
    progress: show a tqdm bar over blocks.

    Returns an ``xarray.Dataset`` with coordinates ``block`` (labels) and ``eig`` (1..k) and variables
    ``eigenvalue`` and ``residual`` ``(block, eig)``, ``converged``, ``n_params``, ``n_matvec`` and ``params``
    (comma-joined names) ``(block,)``, and with ``density=True`` ``density`` ``(block, eigenvalue_grid)``; the attrs
    say the operator kind, mode (and what it means for BatchNorm) and how many examples every estimate used.
    """
    k = check_int("k", k, low=1)
    tol = check_float("tol", tol, low=0.0, high=1.0, low_inclusive=False)
    probes = check_int("probes", probes, low=1, high=10_000)
    steps = check_int("steps", steps, low=1, high=10_000)
    grid = check_int("grid", grid, low=10, high=100_000)
    width = check_float("width", width, low=0.0, low_inclusive=False)
    if hasattr(op_or_factory, "block") and hasattr(op_or_factory, "param_names"):
        full = op_or_factory
        make = full.block
    elif callable(op_or_factory):
        full = op_or_factory(None)
        if not hasattr(full, "block_names"):
            raise TypeError("block_spectra: the factory must return a CurvatureOperator (hessian/ggn/fisher); got "
                            f"{type(full).__name__}")

        def make(sel):
            return op_or_factory(full.block_names(sel))
    else:
        raise TypeError("block_spectra needs a CurvatureOperator or a factory params -> operator; got "
                        f"{type(op_or_factory).__name__}")
    groups = block_groups(full.param_names, blocks)
    labels = list(groups)
    vals = np.full((len(labels), k), np.nan)
    res = np.full((len(labels), k), np.nan)
    conv = np.zeros(len(labels), dtype=bool)
    sizes = np.zeros(len(labels), dtype=np.int64)
    nmv = np.zeros(len(labels), dtype=np.int64)
    pnames = []
    slqs = []
    it = labels
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(labels, desc="block spectra")
    for b, label in enumerate(it):
        op = make(groups[label])
        kb = min(k, op.size)
        r = eigs(op, k=kb, which=which, tol=tol, seed=seed)
        vals[b, :kb] = r.values.double().cpu().numpy()
        res[b, :kb] = r.residuals.double().cpu().numpy()
        conv[b] = r.converged
        sizes[b] = op.size
        nmv[b] = r.n_matvec
        pnames.append(",".join(op.param_names))
        if density:
            sr = slq(op, probes=probes, steps=steps, seed=seed)
            slqs.append(sr)
            nmv[b] += sr.n_matvec
    data_vars = {
        "eigenvalue": (("block", "eig"), vals, {"long_name": "block eigenvalue",
                                                "description": f"top-{k} ({which}) eigenvalues of each diagonal block "
                                                               "of the operator (NaN past the block's size)"}),
        "residual": (("block", "eig"), res, {"long_name": "Ritz residual ||A y - theta y||"}),
        "converged": (("block",), conv, {"long_name": "every requested pair met the tolerance"}),
        "n_params": (("block",), sizes, {"long_name": "parameters in the block"}),
        "n_matvec": (("block",), nmv, {"long_name": "operator products spent on the block"}),
        "params": (("block",), np.array(pnames, dtype=object), {"long_name": "parameter names in the block"}),
    }
    coords = {"block": labels, "eig": np.arange(1, k + 1)}
    if density:
        lo = min(float(s.nodes.min()) for s in slqs)
        hi = max(float(s.nodes.max()) for s in slqs)
        span = hi - lo
        sigma = width * span if span > 0 else width * max(abs(lo), 1.0)
        x = np.linspace(lo - 6 * sigma, hi + 6 * sigma, grid)
        dens = np.stack([gaussian_density(s.nodes, s.weights, x, sigma) for s in slqs])
        data_vars["density"] = (("block", "eigenvalue_grid"), dens,
                                {"long_name": "spectral density", "units": "1 / eigenvalue",
                                 "description": f"SLQ density of each block ({probes} probes x {steps} steps), "
                                                f"Gaussian broadening sigma={sigma:.3g}", "sigma": float(sigma)})
        coords["eigenvalue_grid"] = x
    attrs = {"kind": full.kind, "mode": str(full.mode), "mode_note": full.attrs.get("mode_note", ""),
             "n_examples": int(full.n_examples), "microbatch_size": str(full.attrs.get("microbatch_size")),
             "k": k, "tol": tol, "which": which, "blocks": blocks if isinstance(blocks, str) else "custom",
             "size": int(full.size),
             "description": f"top-{k} eigenvalues of the diagonal blocks of the {full.kind} "
                            f"({full.n_examples} examples, mode {full.mode!r})"}
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)
